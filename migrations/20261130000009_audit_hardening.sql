-- Issue 20: tamper evidence without holes.

-- recorded_at is pinned by the database: a writer cannot choose the time of an event.
-- The one exception is a restore (`events import`, which sets `cc.restoring`): it keeps
-- the exported times, and only into a store that holds no event of another transaction,
-- so it cannot backdate events of a live store. The import checks every recomputed hash
-- against the file's, so restored times are exactly those the chain was built with.
CREATE OR REPLACE FUNCTION cc_events_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    NEW.tx_id := pg_current_xact_id();
    IF coalesce(current_setting('cc.restoring', true), '') = 'on' THEN
        IF EXISTS (SELECT 1 FROM events WHERE tx_id < pg_current_xact_id())
           OR EXISTS (SELECT 1 FROM events WHERE tx_id > pg_current_xact_id()) THEN
            RAISE EXCEPTION 'a restore keeps recorded times only into an empty event store'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSE
        NEW.recorded_at := now();
    END IF;
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

-- Checkpoints form a chain of their own: each records the hash of the one before it and
-- is hashed over that and its own fields (signature included), in the database. Format 2
-- checkpoints are signed over the previous hash too; format 1 ones (taken before this
-- migration) keep their signature and are linked into the chain here.
ALTER TABLE audit_checkpoints
    ADD COLUMN previous_hash bytea,
    ADD COLUMN hash bytea,
    ADD COLUMN format smallint NOT NULL DEFAULT 1,
    ADD COLUMN every_seconds integer CHECK (every_seconds > 0);

CREATE FUNCTION cc_checkpoint_canonical(
    id bigint, head text, events bigint, aggregates bigint, heads_hash bytea,
    signature bytea, created_at timestamptz, format smallint, every_seconds integer
) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_to(jsonb_build_array(
        id, head, events, aggregates, encode(heads_hash, 'hex'), encode(signature, 'hex'),
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        format, every_seconds
    )::text, 'UTF8')
$$;

DO $$
DECLARE
    c record;
    prev bytea := cc_genesis_hash();
BEGIN
    FOR c IN SELECT * FROM audit_checkpoints ORDER BY id LOOP
        UPDATE audit_checkpoints
           SET previous_hash = prev,
               hash = sha256(prev || cc_checkpoint_canonical(c.id, c.head, c.events,
                   c.aggregates, c.heads_hash, c.signature, c.created_at, c.format,
                   c.every_seconds))
         WHERE id = c.id
        RETURNING hash INTO prev;
    END LOOP;
END
$$;

ALTER TABLE audit_checkpoints
    ALTER COLUMN previous_hash SET NOT NULL,
    ALTER COLUMN hash SET NOT NULL,
    ALTER COLUMN format DROP DEFAULT;

-- A checkpoint must follow the latest one; its hash is computed here.
CREATE FUNCTION cc_checkpoints_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('cc_audit_checkpoint_chain'));
    SELECT c.hash INTO prev FROM audit_checkpoints c ORDER BY c.id DESC LIMIT 1;
    prev := coalesce(prev, cc_genesis_hash());
    IF NEW.previous_hash IS DISTINCT FROM prev THEN
        RAISE EXCEPTION 'a checkpoint must follow the latest one'
            USING ERRCODE = 'serialization_failure';
    END IF;
    NEW.hash := sha256(prev || cc_checkpoint_canonical(NEW.id, NEW.head, NEW.events,
        NEW.aggregates, NEW.heads_hash, NEW.signature, NEW.created_at, NEW.format,
        NEW.every_seconds));
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_checkpoints_before_insert BEFORE INSERT ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION cc_checkpoints_before_insert();

-- Checkpoints are append-only, like the events they cover.
CREATE FUNCTION cc_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit checkpoints are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION cc_checkpoints_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION cc_checkpoints_append_only();
