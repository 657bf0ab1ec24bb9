-- Support for the query API.

-- Failed jobs per (project, hour of failure): the dashboard's "failures in the last
-- 24 h" is a sum over at most 25 rows. Kept by the job_view projector with job_counts.
CREATE TABLE job_failures_by_hour (
    project_id bigint      NOT NULL,
    hour       timestamptz NOT NULL,
    n          bigint      NOT NULL,
    PRIMARY KEY (project_id, hour)
);

-- WebSocket clients resume from a position: rows changed after it, per project.
CREATE INDEX technology_view_project_position_idx ON technology_view (project_id, position);
CREATE INDEX job_view_project_position_idx ON job_view (project_id, position);
-- Keyset pages over every project (no project filter), newest first.
CREATE INDEX job_view_status_created_idx ON job_view (status, created_position);
