-- The relay's last acknowledged position per stream (informative: the stream itself is
-- the authority on what was published).
CREATE TABLE relay_checkpoints (
    stream          text        PRIMARY KEY,
    tx_id           bigint      NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Each projection's position: the last event applied, written in the same transaction
-- as the read-model rows it produced.
CREATE TABLE projection_checkpoints (
    projection      text        PRIMARY KEY,
    tx_id           bigint      NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
