-- Snapshots of long-lived aggregates: the state after `version`, serialized by the
-- aggregate (`state_schema` names the state's shape; a snapshot of another shape is
-- ignored). A cache of the events, never a source of truth: deleting every row loses
-- nothing.
CREATE TABLE snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    -- The position of the event at `version`.
    position       text COLLATE "C" NOT NULL,
    state_schema   text        NOT NULL,
    state          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, version)
);

-- Audit checkpoints: the head of the event store at a moment, and a hash over every
-- aggregate's chain head up to it, signed (HMAC-SHA256) with the deployment's audit key.
-- A later `events verify` proves the events up to the head are all still there.
CREATE TABLE audit_checkpoints (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    head         text COLLATE "C" NOT NULL,
    events       bigint      NOT NULL,
    aggregates   bigint      NOT NULL,
    heads_hash   bytea       NOT NULL,
    signature    bytea       NOT NULL,
    created_at   timestamptz NOT NULL
);
