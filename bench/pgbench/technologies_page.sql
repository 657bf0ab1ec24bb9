-- The ceiling of scenarios 1b and 1c: the cheapest statement returning the 50 stored
-- documents of GET /api/v1/technologies?project_id=1&limit=50 (default order,
-- -importance) by the same index, without the total and checkpoint the endpoint adds.
--   pgbench -n -c 64 -j 2 -T 10 -f bench/pgbench/technologies_page.sql <seeded database>
SELECT doc FROM technology_view
 WHERE project_id = 1
 ORDER BY cc_importance(priority, relevance_score, updated_at) DESC, id DESC
 LIMIT 50;
