#!/usr/bin/env bash
# Every performance goal of CommandCenter in one run, each next to a ceiling measured in
# the same run on the same machine, so results are ratios that survive a noisy machine.
#
#   bench/run.sh --quick   small data, under 5 minutes
#   bench/run.sh --full    500,000+ jobs (about 2.9 M events), 10,000 and 18,000 sockets
#
# Finds or starts PostgreSQL and NATS (like scripts/run.sh), builds the release binaries,
# uses fresh databases and subject prefixes and removes them afterwards. Writes
# bench/results/<date>-<commit>-<mode>.md and prints it.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/services.sh"

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
MODE=quick
case "${1:-}" in
    "" | --quick) MODE=quick ;;
    --full) MODE=full ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (use --quick or --full; --help explains)" ;;
esac
if [ "$MODE" = quick ]; then
    TECHS=5000; JOBS=60000; DEPTH=25000; SECS=6; WARMUP=1; NOOP_JOBS=20000
    SOCKETS="2000 5000"; WS_SAMPLES=1000; IDLE_SECS=5
else
    TECHS=50000; JOBS=520000; DEPTH=500000; SECS=15; WARMUP=3; NOOP_JOBS=100000
    SOCKETS="10000 18000"; WS_SAMPLES=3000; IDLE_SECS=20
fi

ensure_rust
ensure_postgres
ensure_nats
cd "$CC_ROOT"
say "building (release)"
cargo build --release --quiet -p commandcenter -p commandcenter-bench
BIN="${CARGO_TARGET_DIR:-$CC_ROOT/target}/release"
command -v pgbench >/dev/null || PATH="$(pg_bindir):$PATH"
command -v pgbench >/dev/null || die "pgbench not found (it comes with PostgreSQL's client tools)"

RUN="ccbench$$"
WORK="$(mktemp -d)"
RESULTS="$WORK/results.txt"
: >"$RESULTS"
export NATS_URL
pids=()
databases=()
prefixes=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for db in "${databases[@]}"; do
        psql "$PG_SERVER_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
    for prefix in "${prefixes[@]}"; do
        "$BIN/cc-bench" drop-stream --nats-url "$NATS_URL" --nats-prefix "$prefix" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

record() { tee -a "$WORK/log.txt" | grep '^result ' >>"$RESULTS" || true; }
# val NAME KEY: a value from the collected result lines.
val() {
    awk -v n="$1" -v k="$2" '$1 == "result" && $2 == n {
        for (i = 3; i <= NF; i++) { split($i, a, "="); if (a[1] == k) v = a[2] } }
        END { print v }' "$RESULTS"
}
put() { echo "result $*" >>"$RESULTS"; }
# new_db NAME VAR: registers database <run>_NAME for clean-up and sets VAR to its URL
# (not through $(...): a subshell's registration would be lost).
new_db() { databases+=("${RUN}_$1"); printf -v "$2" '%s' "$PG_SERVER_URL/${RUN}_$1"; }

# start_service NAME PORT DB_URL [serve flags...]: starts `serve` in the background.
start_service() {
    local name="$1" port="$2" url="$3"
    shift 3
    prefixes+=("${RUN}$name")
    # One key drives every client of a scenario, so its per-key limits are lifted; the
    # connection cap (10,000 by default, WebSockets included) is raised for the 18,000
    # idle sockets of the full run (the open-file limit here is 20,000).
    DATABASE_URL="$url" CC_NATS_PREFIX="${RUN}$name" CC_DATA_DIR="$WORK/data-$name" \
        CC_LOG_FORMAT=json RUST_LOG=warn CC_LISTEN_ADDR="127.0.0.1:$port" \
        CC_RATE_LIMIT_PER_SECOND=0 CC_MAX_SOCKETS_PER_KEY=1000000 CC_MAX_CONNECTIONS=19500 \
        CC_MAX_SUBSCRIPTIONS_PER_KEY=10000000 \
        "$BIN/commandcenter" serve "$@" >"$WORK/$name.log" 2>&1 &
    SERVICE_PID=$!
    pids+=("$SERVICE_PID")
    for _ in $(seq 1 150); do
        if curl -fs "http://127.0.0.1:$port/health/live" >/dev/null 2>&1; then
            # A deployment-wide admin key for cc-bench (CC_API_KEY).
            CC_API_KEY=$(DATABASE_URL="$url" "$BIN/commandcenter" keys create --role admin --name bench) ||
                die "cannot create a key for $name"
            export CC_API_KEY
            return 0
        fi
        sleep 0.2
    done
    die "service $name did not start (see $WORK/$name.log)"
}
# register_project DB_URL: project 1 on a fresh store, where the write scenarios work.
register_project() {
    local id
    id=$(DATABASE_URL="$1" "$BIN/commandcenter" projects create bench) || die "cannot register a project"
    [ "$id" = 1 ] || die "the fresh store's first project is $id, not 1"
}
stop_service() { kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; }
wait_caught_up() {
    for _ in $(seq 1 1500); do
        local behind
        behind=$(DATABASE_URL="$1" "$BIN/commandcenter" projections status --nats-prefix "$2" --json |
            awk -F: '/lag_events/ { gsub(/[ ,]/, "", $2); s += $2 } END { print s + 0 }')
        [ "$behind" = 0 ] && return 0
        sleep 0.2
    done
    die "the projections did not catch up"
}

# --- ceilings ----------------------------------------------------------------------
say "ceiling: HTTP (fixed 20-item JSON page, 64 clients)"
"$BIN/cc-bench" fixed-server --listen 127.0.0.1:18100 &
pids+=($!)
sleep 0.5
"$BIN/cc-bench" http-load --url http://127.0.0.1:18100 --path /page --clients 64 \
    --seconds "$SECS" --warmup "$WARMUP" --name ceiling_http | record

say "ceiling: append (pgbench single-row INSERT into an events-shaped table, 32 clients)"
new_db ceiling CEILING_DB
psql "$PG_SERVER_URL/postgres" -qc "CREATE DATABASE \"${RUN}_ceiling\"" >/dev/null
psql "$CEILING_DB" -q -f bench/pgbench/events_shape.sql >/dev/null
tps=$(pgbench -n -c 32 -j 2 -T "$SECS" -f bench/pgbench/insert_event.sql "$CEILING_DB" 2>/dev/null |
    awk '/^tps = / { print $3 }')
put ceiling_append "tps=$tps"

say "ceiling (a) of the write scenarios: the bare library (cqrs-es + postgres-es) creating technologies, 32 tasks"
new_db cqrs CQRS_DB
psql "$PG_SERVER_URL/postgres" -qc "CREATE DATABASE \"${RUN}_cqrs\"" >/dev/null
"$BIN/cc-bench" cqrs-ceiling --database-url "$CQRS_DB" --tasks 32 --seconds "$SECS" \
    --warmup "$WARMUP" | record

say "ceiling: push (core NATS publish -> subscribe round trip)"
"$BIN/cc-bench" nats-rtt --nats-url "$NATS_URL" --samples 5000 | record

# --- read scenarios on a seeded store -------------------------------------------------
new_db read READ_DB
say "seeding $TECHS technologies and $JOBS jobs"
DATABASE_URL="$READ_DB" "$BIN/commandcenter" demo seed --projects 1 \
    --technologies "$TECHS" --jobs "$JOBS" | tee -a "$WORK/log.txt"
say "scenario 6: projections rebuild over the seeded store"
for view in technology_view job_view; do
    DATABASE_URL="$READ_DB" "$BIN/commandcenter" projections rebuild "$view" 2>/dev/null |
        tee -a "$WORK/log.txt" |
        awk -v v="$view" '{ print "result rebuild_" v " events=" $2 " seconds=" $5 }' >>"$RESULTS"
done

say "ceiling: read (pgbench: the 100 stored documents of the jobs page by the same index, 64 clients)"
# Each transaction's latency is logged (-l: its third field, in µs) for the p99 row 1 is
# held to, after a warm-up as long as the HTTP scenarios' (not logged).
pgbench -n -c 64 -j 2 -T "$WARMUP" -f bench/pgbench/jobs_page.sql "$READ_DB" >/dev/null 2>&1 ||
    die "the read ceiling's warm-up failed"
tps=$(cd "$WORK" && pgbench -n -c 64 -j 2 -T "$SECS" -l --log-prefix=read_latency \
    -f "$CC_ROOT/bench/pgbench/jobs_page.sql" "$READ_DB" 2>/dev/null | awk '/^tps = / { print $3 }')
p99=$(cat "$WORK"/read_latency.* | awk '{ print $3 }' | sort -n |
    awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 }')
put ceiling_read "tps=$tps p99_ms=$p99"

say "ceiling: technologies page (pgbench: the 50 stored documents of page 1 by the same index, 64 clients)"
tps=$(pgbench -n -c 64 -j 2 -T "$SECS" -f bench/pgbench/technologies_page.sql "$READ_DB" 2>/dev/null |
    awk '/^tps = / { print $3 }')
put ceiling_tech_page "tps=$tps"

JOBS_PATH="/api/v1/jobs?project_id=1&status_filter=completed"
TECH_PATH="/api/v1/technologies?project_id=1&limit=50"
say "scenarios 1-2: jobs list, page 1 and $DEPTH rows deep, uncached, 64 clients"
start_service read 18101 "$READ_DB" --no-relay --no-projectors --no-workers --cache-entries 0
"$BIN/cc-bench" http-load --url http://127.0.0.1:18101 --path "$JOBS_PATH" --clients 64 \
    --seconds "$SECS" --warmup "$WARMUP" --name jobs_page1 | record
cursor=$("$BIN/cc-bench" deep-cursor --url http://127.0.0.1:18101 --path "$JOBS_PATH" \
    --depth "$DEPTH" | awk '{ for (i = 3; i <= NF; i++) if ($i ~ /^cursor=/) print substr($i, 8) }')
"$BIN/cc-bench" http-load --url http://127.0.0.1:18101 --path "$JOBS_PATH&cursor=$cursor" \
    --clients 64 --seconds "$SECS" --warmup "$WARMUP" --name jobs_deep | record
say "scenarios 1b-1c: technologies page 1 (default order, limit 50) and searches, uncached, 64 clients"
"$BIN/cc-bench" http-load --url http://127.0.0.1:18101 --path "$TECH_PATH" --clients 64 \
    --seconds "$SECS" --warmup "$WARMUP" --name tech_page1 | record
# "seeded" is in every seeded technology's description; "number 4242" in a handful.
"$BIN/cc-bench" http-load --url http://127.0.0.1:18101 --path "$TECH_PATH&search=seeded" \
    --clients 64 --seconds "$SECS" --warmup "$WARMUP" --name tech_search_common | record
"$BIN/cc-bench" http-load --url http://127.0.0.1:18101 --path "$TECH_PATH&search=number%204242" \
    --clients 64 --seconds "$SECS" --warmup "$WARMUP" --name tech_search_rare | record
stop_service

say "scenario 1b': technologies page right after a bulk load projected live (no manual ANALYZE)"
# The same technologies written to a fresh store while serve's relay and projectors run;
# the page is measured as soon as the view holds them all.
new_db bulk BULK_DB
start_service bulk 18106 "$BULK_DB" --no-workers --cache-entries 0
DATABASE_URL="$BULK_DB" "$BIN/commandcenter" demo seed --projects 1 \
    --technologies "$TECHS" --jobs 0 | tee -a "$WORK/log.txt"
wait_caught_up "$BULK_DB" "${RUN}bulk"
"$BIN/cc-bench" http-load --url http://127.0.0.1:18106 --path "$TECH_PATH" --clients 64 \
    --seconds "$SECS" --warmup "$WARMUP" --name tech_page1_after_bulk | record
stop_service

say "scenarios 3 and 7: cached dashboard, 64 clients; idle WebSocket clients"
start_service cached 18102 "$READ_DB" --no-relay --no-projectors --no-workers
"$BIN/cc-bench" http-load --url http://127.0.0.1:18102 --path "/api/v1/dashboard/stats?project_id=1" \
    --clients 64 --seconds "$SECS" --warmup "$WARMUP" --name dashboard_cached | record
stop_service
# A fresh process per count: memory freed by earlier clients stays with the process and
# would hide the cost of the next ones.
for n in $SOCKETS; do
    start_service "sockets$n" 18102 "$READ_DB" --no-relay --no-projectors --no-workers
    # A failure here is recorded (the table shows it) rather than ending the whole run.
    if ! "$BIN/cc-bench" idle-sockets --url http://127.0.0.1:18102 --pid "$SERVICE_PID" \
        --clients "$n" 2>"$WORK/sockets$n.err" | record; then
        put "idle_ws_$n per_client_kib=failed"
        tail -n 3 "$WORK/sockets$n.err" >&2
        cp "$WORK/sockets$n.log" "$CC_ROOT/bench/results/sockets$n-failure.log" 2>/dev/null || true
    fi
    stop_service
done

say "scenario 9: CPU of an idle serve over the seeded store (service and its database sessions)"
# Projectors and a worker run; the relay does not: on a fresh subject prefix it would
# first publish the whole store. The relay's idle cost is measured on the write store
# below, where it has published everything.
start_service idle 18105 "$READ_DB" --no-relay
sleep 3
bench/idle_cpu.sh idle_serve "$SERVICE_PID" "$READ_DB" "$IDLE_SECS" | record
stop_service

# --- write scenarios on a fresh store -------------------------------------------------
new_db write WRITE_DB
say "scenarios 4-5: commands (32 clients) and command -> WebSocket latency"
start_service write 18103 "$WRITE_DB" --no-workers
register_project "$WRITE_DB"
"$BIN/cc-bench" write-load --url http://127.0.0.1:18103 --kind technologies --clients 32 \
    --seconds "$SECS" --warmup "$WARMUP" | record
"$BIN/cc-bench" write-load --url http://127.0.0.1:18103 --kind progress --clients 32 \
    --seconds "$SECS" --warmup "$WARMUP" | record
wait_caught_up "$WRITE_DB" "${RUN}write"
"$BIN/cc-bench" ws-latency --url http://127.0.0.1:18103 --samples "$WS_SAMPLES" | record
# Past the projector's last statistics check (11 s after its last batch), so no ANALYZE
# falls inside the idle window.
sleep 12
bench/idle_cpu.sh idle_serve_relay "$SERVICE_PID" "$WRITE_DB" "$IDLE_SECS" | record
stop_service

say "ceiling of our write path: pgbench sending the executor's statements for a create, 32 clients"
new_db path PATH_DB
DATABASE_URL="$PATH_DB" "$BIN/commandcenter" migrate >/dev/null 2>&1
tps=$(pgbench -n -c 32 -j 2 -T "$SECS" -f bench/pgbench/command_path.sql "$PATH_DB" 2>/dev/null |
    awk '/^tps = / { print $3 }')
put ceiling_command_path "tps=$tps"

say "scenario 8: $NOOP_JOBS noop jobs through one worker process"
new_db jobs JOBS_DB
start_service jobs 18104 "$JOBS_DB" --no-workers
register_project "$JOBS_DB"
"$BIN/cc-bench" submit-jobs --url http://127.0.0.1:18104 --jobs "$NOOP_JOBS" | tee -a "$WORK/log.txt"
DATABASE_URL="$JOBS_DB" CC_NATS_PREFIX="${RUN}jobs" CC_DATA_DIR="$WORK/data-jobs" RUST_LOG=warn \
    "$BIN/commandcenter" worker >"$WORK/worker.log" 2>&1 &
pids+=($!)
"$BIN/cc-bench" wait-jobs --url http://127.0.0.1:18104 --jobs "$NOOP_JOBS" | record
stop_service

# --- the table ------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "-" }'; }
times() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }'; }
check() { awk "BEGIN { exit !($1) }" && echo yes || echo no; }

s1=$(val jobs_page1 rps); s1p50=$(val jobs_page1 p50_ms); s1p99=$(val jobs_page1 p99_ms)
s2=$(val jobs_deep rps); s2p50=$(val jobs_deep p50_ms); s2p99=$(val jobs_deep p99_ms)
s3=$(val dashboard_cached rps); s3p99=$(val dashboard_cached p99_ms)
s4=$(val post_technologies rps); s4p99=$(val post_technologies p99_ms)
s4b=$(val job_progress rps); s4bp99=$(val job_progress p99_ms)
path=$(val ceiling_command_path tps)
s5p50=$(val progress_2xx_websocket_message p50_ms); s5p99=$(val progress_2xx_websocket_message p99_ms)
s5max=$(val progress_2xx_websocket_message max_ms)
http=$(val ceiling_http rps); append=$(val ceiling_append tps); read=$(val ceiling_read tps); readp99=$(val ceiling_read p99_ms)
cqrs=$(val ceiling_cqrs_es rps); cqrsp99=$(val ceiling_cqrs_es p99_ms)
s1bb=$(val tech_page1_after_bulk rps); s1bbp99=$(val tech_page1_after_bulk p99_ms)
tech_ceiling=$(val ceiling_tech_page tps)
s1b=$(val tech_page1 rps); s1bp99=$(val tech_page1 p99_ms)
s1c=$(val tech_search_common rps); s1cp99=$(val tech_search_common p99_ms)
s1r=$(val tech_search_rare rps); s1rp99=$(val tech_search_rare p99_ms)
natsp99=$(val nats_rtt p99_ms)
rebuild=$(awk '$1 == "result" && $2 ~ /^rebuild_/ { for (i = 3; i <= NF; i++) { split($i, a, "=");
    if (a[1] == "events") e += a[2]; if (a[1] == "seconds") s += a[2] } } END { if (s > 0) printf "%.0f", e / s }' "$RESULTS")
jobs_hour=$(val noop_jobs jobs_per_hour)
idle=$(val idle_serve cpu_pct); idle_serve=$(val idle_serve serve_pct); idle_pg=$(val idle_serve postgres_pct)
idle_relay=$(val idle_serve_relay cpu_pct)
last_ws=${SOCKETS##* }
ws_kib=$(val "idle_ws_$last_ws" per_client_kib)
ws_all=""
for n in $SOCKETS; do ws_all="$ws_all $n: $(val "idle_ws_$n" per_client_kib) KiB;"; done

commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo -dirty)"
mkdir -p bench/results
OUT="bench/results/$(date -u +%Y-%m-%d)-$commit-$MODE.md"
{
    echo "# Benchmark results: $MODE run, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)."
    echo "Data: $TECHS technologies and $JOBS jobs in one project (read scenarios); fresh stores for the write scenarios. Load: closed-loop clients, ${SECS} s measured after ${WARMUP} s of warm-up. Command: \`bench/run.sh --$MODE\`."
    echo
    echo "| # | Scenario | Figure | Ceiling (same run) | Ratio | Target | Met |"
    echo "|---|---|---|---|---|---|---|"
    echo "| 1 | \`GET $JOBS_PATH\` page 1, uncached, 64 clients | $s1 req/s, p50 $s1p50 ms, p99 $s1p99 ms | pgbench, the 100 stored documents by the same index: $read tps, p99 $readp99 ms | $(ratio "$s1" "$read"); p99 $(times "$s1p99" "$readp99") | ≥ 70%, p99 ≤ 2 × the ceiling's | $(check "$s1 >= 0.7 * $read && $s1p99 <= 2 * $readp99") |"
    echo "| 2 | same, cursor $DEPTH rows deep | $s2 req/s, p50 $s2p50 ms, p99 $s2p99 ms | scenario 1 | p50 $(times "$s2p50" "$s1p50"), p99 $(times "$s2p99" "$s1p99") | ≤ 1.2 × scenario 1 | $(check "$s2p50 <= 1.2 * $s1p50 && $s2p99 <= 1.2 * $s1p99") |"
    echo "| 1b | \`GET $TECH_PATH\` (default order), uncached, 64 clients | $s1b req/s, p99 $s1bp99 ms | pgbench, the 50 stored documents by the same index: $tech_ceiling tps | $(ratio "$s1b" "$tech_ceiling") | ≥ 70% | $(check "$s1b >= 0.7 * $tech_ceiling") |"
    echo "| 1b′ | same, on a fresh store right after $TECHS technologies were written and projected live (no manual \`ANALYZE\`) | $s1bb req/s, p99 $s1bbp99 ms | scenario 1b | $(ratio "$s1bb" "$s1b") | ≥ 70% of 1b | $(check "$s1bb >= 0.7 * $s1b") |"
    echo "| 1c | same with \`search=seeded\` (every row matches) / \`search=number 4242\` (a few) | $s1c req/s, p99 $s1cp99 ms / $s1r req/s, p99 $s1rp99 ms | scenario 1b | $(ratio "$s1c" "$s1b") / $(ratio "$s1r" "$s1b") | ≥ 50% of 1b | $(check "$s1c >= 0.5 * $s1b && $s1r >= 0.5 * $s1b") |"
    echo "| 3 | \`GET /api/v1/dashboard/stats?project_id=1\` from the cache, 64 clients | $s3 req/s, p99 $s3p99 ms | axum fixed 20-item page: $http req/s | $(ratio "$s3" "$http") | ≥ 40% | $(check "$s3 >= 0.4 * $http") |"
    echo "| 4 | \`POST /api/v1/technologies\`, 32 clients | $s4 commands/s, p99 $s4p99 ms | (a) the bare library, cqrs-es + postgres-es creating one aggregate per command, 32 tasks, no HTTP: $cqrs commands/s, p99 $cqrsp99 ms; (b) pgbench events-shaped INSERT: $append tps | (a) $(times "$s4" "$cqrs"); (b) $(ratio "$s4" "$append") | ≥ 1.5× (a), ≥ 50% of (b), p99 ≤ 10 ms | $(check "$s4 >= 1.5 * $cqrs && $s4 >= 0.5 * $append && $s4p99 <= 10") |"
    echo "| 4b | job progress \`PATCH\`, 32 clients | $s4b commands/s, p99 $s4bp99 ms | same | (a) $(times "$s4b" "$cqrs"); (b) $(ratio "$s4b" "$append") | same | $(check "$s4b >= 1.5 * $cqrs && $s4b >= 0.5 * $append && $s4bp99 <= 10") |"
    echo "| 4c | our write path alone: pgbench sending the executor's statements for a create (load, BEGIN, INSERT with hash trigger, claim, COMMIT), 32 clients | $path tps | pgbench events-shaped INSERT | $(ratio "$path" "$append") | (diagnostic: bounds 4) | - |"
    echo "| 5 | command 2xx → job WebSocket message | p50 $s5p50 ms, p99 $s5p99 ms, max $s5max ms | NATS round trip p99 $natsp99 ms | - | p99 ≤ 20 ms | $(check "$s5p99 <= 20") |"
    echo "| 6 | \`projections rebuild\` (both views) over the seeded store | $rebuild events/s | - | - | ≥ 100,000 events/s | $(check "$rebuild >= 100000") |"
    ws_met=no
    [[ "${ws_kib:-failed}" =~ ^[0-9.]+$ ]] && ws_met=$(check "$ws_kib <= 30")
    echo "| 7 | idle WebSocket clients, server RSS per client | $ws_all | - | - | ≤ 30 KiB at 20,000 | $ws_met (at $last_ws) |"
    echo "| 8 | \`noop\` jobs through one worker process | $jobs_hour jobs/hour | - | - | ≥ 500,000 jobs/hour | $(check "${jobs_hour:-0} >= 500000") |"
    echo "| 9 | idle \`serve\` (projectors, worker; no relay) over the seeded store, ${IDLE_SECS} s: CPU of the process and its database sessions | $idle% of a core (service $idle_serve%, PostgreSQL $idle_pg%); with the relay, on the write store: $idle_relay% | - | - | < 1% of a core | $(check "${idle:-100} < 1") |"
    echo
    echo "Raw result lines:"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
} >"$OUT"
if [ "$MODE" = full ]; then
    cp "$OUT" bench/results/LATEST.md
fi
cat "$OUT"
say "written to $OUT"
