-- wrk script: POST /api/v1/technologies with a title unique per run, thread and request.
-- wrk -t2 -c32 -d20s --latency -s bench/wrk/post_technology.lua http://127.0.0.1:8080 -- <run-name>
local tid = 0
function setup(thread)
  tid = tid + 1
  thread:set("id", tid)
end
function init(args)
  run = args[1] or "r"
  counter = 0
end
request = function()
  counter = counter + 1
  local body = string.format('{"project_id": 1, "title": "bench-%s-%d-%d", "domain": "audio-dsp", "tags": ["bench"]}', run, id, counter)
  return wrk.format("POST", "/api/v1/technologies", {["Content-Type"] = "application/json"}, body)
end
