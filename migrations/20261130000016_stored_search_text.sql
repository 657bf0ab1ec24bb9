-- A substring search read `cc_search_text(title, description, tags)` per row it looked
-- at: PostgreSQL cannot inline the function (its `array_to_string` is only STABLE), so
-- every call went through the SQL-function executor, about 7 µs, which was most of a
-- common word's search (the first 1,001 matches are counted). The text is now computed
-- once per row write and stored; the trigram index and the searches use the column, and
-- its statistics give the planner each word's frequency.
--
-- An exception to the rule that a release drops nothing (DEPLOY.md): keeping the old
-- index would cost every technology write a second trigram index. DEPLOY.md says what a
-- previous release does without it, and the one statement that restores it for a
-- rollback.

-- Indexes are found by what they are on, not by name: a view rebuilt by `projections
-- rebuild` carries the names PostgreSQL gave the shadow table's copies. Migrations that
-- change an index call this (0017 too).
CREATE FUNCTION cc_indexes_defined_like(tbl regclass, pattern text) RETURNS SETOF text
    LANGUAGE sql STABLE
    AS $$ SELECT i.indexrelid::regclass::text FROM pg_index i
           WHERE i.indrelid = tbl AND pg_get_indexdef(i.indexrelid) LIKE pattern $$;

-- First the index on the expression (dropped before the table is rewritten, so the
-- rewrite does not rebuild it).
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT cc_indexes_defined_like('technology_view', '%cc_search_text(%gin_trgm_ops%')
    LOOP
        EXECUTE format('DROP INDEX %s', name);
    END LOOP;
END
$$;
ALTER TABLE technology_view ADD COLUMN search_text text
    GENERATED ALWAYS AS (cc_search_text(title, description, tags)) STORED;
CREATE INDEX technology_view_search_text_idx ON technology_view
    USING gin (search_text gin_trgm_ops);
ANALYZE technology_view;
