-- The append ceiling's table: the events table's columns and indexes, without the hash
-- trigger. Used with insert_event.sql:
--   pgbench -n -c 32 -j 2 -T 20 -f bench/pgbench/insert_event.sql <database>
CREATE TABLE events_shape (
    aggregate_type text NOT NULL, aggregate_id text NOT NULL, sequence bigint NOT NULL,
    event_type text NOT NULL, event_version text NOT NULL, payload jsonb NOT NULL,
    metadata jsonb NOT NULL, global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(), recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX ON events_shape (global_position);
CREATE INDEX ON events_shape (tx_id, global_position);
