-- The read ceiling: the very statement GET /api/v1/jobs?project_id=1&status_filter=completed
-- runs for page 1 (limit 100): the page by the (project_id, status, created_position)
-- index (each row's stored document), the total from job_counts and the read model's
-- checkpoint, in one statement.
--   pgbench -n -c 64 -j 2 -T 10 -f bench/pgbench/jobs_keyset.sql <seeded database>
WITH page AS (SELECT coalesce(j.doc, (to_jsonb(j) - 'doc')::text) AS row, j.id, j.created_position FROM job_view j
               WHERE true AND project_id = 1 AND status = 'completed'
               ORDER BY created_position DESC LIMIT 101 OFFSET 0),
     total AS (SELECT coalesce(sum(n), 0)::bigint AS n FROM job_counts
                WHERE true AND project_id = 1 AND status = 'completed')
SELECT (SELECT n FROM total) AS total,
       (SELECT tx_id FROM projection_checkpoints WHERE projection = 'job_view') AS cp_tx,
       (SELECT global_position FROM projection_checkpoints WHERE projection = 'job_view') AS cp_pos,
       page.row, page.id, page.created_position
  FROM (SELECT 1) one LEFT JOIN page ON true ORDER BY page.created_position DESC;
