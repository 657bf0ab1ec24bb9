-- Issue 14: one event store, one stream; gaps in a projection are recorded, never folded over.

-- The identity of this event store. Every JetStream stream and every core NATS subject of
-- the deployment carries it, so two deployments that share a NATS server and a subject
-- prefix can never consume each other's events (the second one is refused at start).
CREATE TABLE deployment (
    id         uuid        PRIMARY KEY,
    singleton  boolean     NOT NULL DEFAULT true UNIQUE CHECK (singleton),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO deployment (id) VALUES (gen_random_uuid());

-- Every gap a projector met: events of the read model's aggregate type that the stream
-- did not deliver between the checkpoint and a batch ('feed'), or an aggregate whose
-- versions did not continue its row ('aggregate'). A gap that was filled from the event
-- store in the same transaction is recorded resolved; one that could not be filled stays
-- open (resolved_at NULL) until the read model applies a batch again. `projections
-- status`, `/health/ready` and the metrics read this table.
CREATE TABLE projection_gaps (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection    text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('feed', 'aggregate', 'unfillable')),
    detail        text        NOT NULL,
    events_filled bigint      NOT NULL DEFAULT 0,
    detected_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);
CREATE INDEX projection_gaps_open_idx ON projection_gaps (projection) WHERE resolved_at IS NULL;
