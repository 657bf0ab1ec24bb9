-- The database side of one create command, statement for statement as the executor
-- sends it: load the aggregate's events, then in one transaction append the event (hash
-- trigger included) and take the title claim. Run against a migrated database:
--   pgbench -n -c 32 -j 2 -T 10 -f bench/pgbench/command_path.sql <database>
-- It bounds what POST /api/v1/technologies can reach with this write path.
\set n random(1, 1000000000)
SELECT sequence, event_type, event_version, payload, metadata, tx_id::text, global_position
  FROM events WHERE aggregate_type = 'technology' AND aggregate_id = 'pgbench-' || :client_id || '-' || :n
   AND sequence > 0 ORDER BY sequence;
BEGIN;
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ('technology', 'pgbench-' || :client_id || '-' || :n || '-' || txid_current(), 1, 'TechnologyCreated', '1.1',
        '{"TechnologyCreated": {"title": "bench", "domain": "audio-dsp", "tags": ["bench"], "priority": 3, "relevance_score": 50}}',
        '{"actor": "anonymous", "request_id": "x", "correlation_id": "x", "project_id": "1"}');
INSERT INTO unique_claims (scope, key, owner_id)
VALUES ('title:technology:1', 'pgbench ' || :client_id || ' ' || :n || ' ' || txid_current(), 'x')
    ON CONFLICT (scope, key) DO UPDATE SET owner_id = EXCLUDED.owner_id
 WHERE unique_claims.owner_id = EXCLUDED.owner_id;
COMMIT;
