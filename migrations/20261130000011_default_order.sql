-- The previous API's default order of technologies: priority, then relevance score, then
-- updated_at (all descending), as one sortable text so that keyset cursors work as for
-- the other sorts: 1 digit of priority, 3 of relevance, 17 of microseconds since 1970.
-- `extract(epoch …)` of a timestamptz does not depend on the time zone, so the function
-- is IMMUTABLE, as an index expression must be.
CREATE FUNCTION cc_importance(priority smallint, relevance_score smallint, updated_at timestamptz)
    RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT priority::text || lpad(relevance_score::text, 3, '0')
                 || lpad(floor(extract(epoch FROM updated_at) * 1000000)::bigint::text, 17, '0') $$;

CREATE INDEX technology_view_importance_idx ON technology_view
    (cc_importance(priority, relevance_score, updated_at), id);
CREATE INDEX technology_view_project_importance_idx ON technology_view
    (project_id, cc_importance(priority, relevance_score, updated_at), id);
