-- Read models: plain denormalized tables that a list query serves with one indexed
-- read, with precomputed counts. Kept by the projectors (projections/).

-- array_to_string is only STABLE in general; for text[] it is immutable, which a
-- generated column needs.
CREATE FUNCTION cc_text_array_to_text(text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string($1, ' ') $$;

CREATE TABLE technology_view (
    id                             text PRIMARY KEY,
    project_id                     bigint NOT NULL,
    title                          text NOT NULL,
    vendor                         text,
    domain                         text NOT NULL,
    status                         text NOT NULL,
    relevance_score                smallint NOT NULL,
    priority                       smallint NOT NULL,
    description                    text,
    notes                          text,
    use_cases                      text,
    documentation_url              text,
    repository_url                 text,
    website_url                    text,
    tags                           text[] NOT NULL DEFAULT '{}',
    latency_ms                     double precision,
    throughput_qps                 double precision,
    integration_difficulty         text,
    integration_time_estimate_days integer,
    maturity_level                 text,
    stability_score                smallint,
    cost_tier                      text,
    cost_monthly_usd               double precision,
    dependencies                   jsonb NOT NULL DEFAULT '{}',
    alternatives                   text[] NOT NULL DEFAULT '{}',
    created_at                     timestamptz NOT NULL,
    updated_at                     timestamptz NOT NULL,
    -- The aggregate's version and the position of its last applied event.
    version                        bigint NOT NULL,
    position                       text COLLATE "C" NOT NULL,
    -- Full-text search over title, vendor, tags, description, use cases and notes.
    search                         tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
        setweight(to_tsvector('english', coalesce(vendor, '') || ' ' || cc_text_array_to_text(tags)), 'B') ||
        setweight(to_tsvector('english', coalesce(description, '') || ' ' || coalesce(use_cases, '')), 'C') ||
        setweight(to_tsvector('english', coalesce(notes, '')), 'D')
    ) STORED
);

CREATE INDEX technology_view_filter_idx ON technology_view (project_id, domain, status);
CREATE INDEX technology_view_search_idx ON technology_view USING gin (search);
-- Cursor keys, one per supported sort, each as (sort value, id).
CREATE INDEX technology_view_updated_at_idx ON technology_view (updated_at, id);
CREATE INDEX technology_view_created_at_idx ON technology_view (created_at, id);
CREATE INDEX technology_view_priority_idx ON technology_view (priority, id);
CREATE INDEX technology_view_relevance_idx ON technology_view (relevance_score, id);
CREATE INDEX technology_view_title_idx ON technology_view (lower(title), id);

-- Technologies per (project, domain, status): the total of any domain/status filter is
-- a sum over this tiny table. Rows that reach zero are deleted. (No CHECK (n >= 0): an
-- upsert's CHECK applies to the proposed row, which carries a negative delta.)
CREATE TABLE technology_counts (
    project_id bigint NOT NULL,
    domain     text   NOT NULL,
    status     text   NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (project_id, domain, status)
);

CREATE TABLE job_view (
    id               text PRIMARY KEY,
    project_id       bigint NOT NULL,
    job_type         text NOT NULL,
    status           text NOT NULL,
    progress         smallint NOT NULL,
    current_step     text,
    parameters       jsonb NOT NULL,
    result           jsonb,
    error            text,
    traceback        text,
    tags             text[] NOT NULL DEFAULT '{}',
    created_by       text,
    attempts         integer NOT NULL,
    max_attempts     integer NOT NULL,
    scheduled_for    timestamptz,
    dispatched_at    timestamptz,
    worker_id        text,
    lease_until      timestamptz,
    cancel_requested boolean NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL,
    -- completed_at - started_at of a finished job.
    duration_seconds double precision,
    is_terminal      boolean NOT NULL,
    version          bigint NOT NULL,
    position         text COLLATE "C" NOT NULL,
    -- The position of the job's creation event: unique and monotonic, the cursor key.
    created_position text COLLATE "C" NOT NULL UNIQUE
);

CREATE INDEX job_view_status_idx ON job_view (project_id, status, created_position);
CREATE INDEX job_view_type_status_idx ON job_view (project_id, job_type, status, created_position);
CREATE INDEX job_view_project_idx ON job_view (project_id, created_position);

-- Jobs per (project, type, status), with the sum (in microseconds, exact) and count of
-- the durations of the jobs in the group: totals, success rate and average duration
-- without scanning job_view.
CREATE TABLE job_counts (
    project_id      bigint NOT NULL,
    job_type        text   NOT NULL,
    status          text   NOT NULL,
    n               bigint NOT NULL,
    duration_sum_us bigint NOT NULL DEFAULT 0,
    duration_n      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, job_type, status)
);
