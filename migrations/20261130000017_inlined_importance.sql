-- `cc_importance` computed the same text through `extract(epoch FROM updated_at)`, which
-- PostgreSQL marks STABLE (other fields of a timestamptz depend on the time zone), so the
-- IMMUTABLE function could not be inlined: every page of the default order called it
-- through the SQL-function executor for each row it returned (its cursor value), and the
-- projector for each index entry it wrote. The epoch of the difference from the epoch is
-- the same number from IMMUTABLE operators only, so the function is now inlined wherever
-- it is used. Same value for every timestamp on PostgreSQL 14 or later, where `extract`
-- is exact (checked on 50,000 rows and at the edges). The REINDEX is needed all the same:
-- it is what makes every open session reload the indexes' expressions, which it keeps
-- cached in the form before inlining; without it, pooled connections would no longer
-- match the indexes to the inlined queries and would sort every default-order page until
-- they reconnect. Indexes are found by their definition (`cc_indexes_defined_like`,
-- migration 0016).
CREATE OR REPLACE FUNCTION cc_importance(priority smallint, relevance_score smallint, updated_at timestamptz)
    RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT priority::text || lpad(relevance_score::text, 3, '0')
                 || lpad(floor(extract(epoch FROM updated_at - '1970-01-01 00:00:00+00'::timestamptz)
                               * 1000000)::bigint::text, 17, '0') $$;

DO $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT cc_indexes_defined_like('technology_view', '%cc_importance(%')
    LOOP
        EXECUTE format('REINDEX INDEX %s', name);
    END LOOP;
END
$$;
