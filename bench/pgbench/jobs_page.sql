-- The read ceiling of scenario 1 (and so of 2): the cheapest statement returning the
-- 100 stored documents of GET /api/v1/jobs?project_id=1&status_filter=completed (page 1)
-- by the index the endpoint's statement walks, without the total, the checkpoint and the
-- row keys the endpoint adds.
--   pgbench -n -c 64 -j 2 -T 10 -f bench/pgbench/jobs_page.sql <seeded database>
SELECT doc FROM job_view
 WHERE project_id = 1 AND status = 'completed'
 ORDER BY created_position DESC
 LIMIT 100;
