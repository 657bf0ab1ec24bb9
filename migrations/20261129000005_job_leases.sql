-- The lease sweeper looks for running jobs whose lease lapsed; few jobs run at a time,
-- so a partial index keeps that lookup small whatever the size of job_view.
CREATE INDEX job_view_lease_idx ON job_view (lease_until) WHERE status = 'running';
