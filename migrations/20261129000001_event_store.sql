-- The event store: one append-only table for every aggregate.
--
-- Columns follow postgres-es's `events` table, plus:
--   global_position  identity, assigned at insert (NOT at commit: see the feed's ordering rule)
--   tx_id            the writing transaction's id; every row below pg_snapshot_xmin is final
--   recorded_at      server time of the append
--   hash             sha256(previous event's hash || canonical form of this event), per aggregate
-- Payload and metadata are jsonb so that their text form, and so the hash, is canonical.

CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 1),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    hash            bytea       NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position_key ON events (global_position);
-- The feed reads in (tx_id, global_position) order: see event-store/src/feed.rs.
CREATE INDEX events_tx_position_idx ON events (tx_id, global_position);

-- The canonical bytes an event's hash covers. Excludes global_position and tx_id, which a
-- restore into another database may assign anew; includes everything a reader relies on.
CREATE FUNCTION cc_event_canonical(
    aggregate_type text, aggregate_id text, sequence bigint, event_type text,
    event_version text, payload jsonb, metadata jsonb, recorded_at timestamptz
) RETURNS bytea LANGUAGE sql STABLE AS $$
    SELECT convert_to(jsonb_build_array(
        aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
        to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    )::text, 'UTF8')
$$;

-- The hash of "no predecessor".
CREATE FUNCTION cc_genesis_hash() RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT decode(repeat('00', 32), 'hex')
$$;

-- Computes every appended event's hash in the database, so no writer can skip or forge it,
-- refuses gaps in an aggregate's sequence, and pins tx_id to the inserting transaction.
CREATE FUNCTION cc_events_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    NEW.tx_id := pg_current_xact_id();
    IF NEW.sequence = 1 THEN
        prev := cc_genesis_hash();
    ELSE
        SELECT e.hash INTO prev FROM events e
         WHERE e.aggregate_type = NEW.aggregate_type
           AND e.aggregate_id = NEW.aggregate_id
           AND e.sequence = NEW.sequence - 1;
        IF prev IS NULL THEN
            RAISE EXCEPTION 'event % of %/% has no predecessor',
                NEW.sequence, NEW.aggregate_type, NEW.aggregate_id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    NEW.hash := sha256(prev || cc_event_canonical(
        NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, NEW.event_type,
        NEW.event_version, NEW.payload, NEW.metadata, NEW.recorded_at));
    RETURN NEW;
END
$$;

CREATE TRIGGER events_before_insert BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION cc_events_before_insert();

-- History is append-only: updates and deletes are refused (an operator who bypasses this
-- with superuser rights is caught by `events verify`).
CREATE FUNCTION cc_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION cc_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION cc_events_append_only();

-- Uniqueness that spans aggregates (e.g. a technology title per project), claimed and
-- released in the same transaction as the events that need it.
CREATE TABLE unique_claims (
    scope      text        NOT NULL,
    key        text        NOT NULL,
    owner_id   text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT unique_claims_pkey PRIMARY KEY (scope, key)
);

-- Saved responses of commands sent with an Idempotency-Key, written in the same
-- transaction as the command's events.
CREATE TABLE idempotency_keys (
    scope            text        NOT NULL,
    key              text        NOT NULL,
    request_hash     bytea       NOT NULL,
    response_status  smallint,
    response_headers jsonb,
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
