-- The GIN index on `technology_view.search` (the tsvector) serves `@@` matches, and no
-- query has made one since searches became substrings (0010): a search filters by the
-- trigram index on `search_text`, and `sort=rank` computes `ts_rank` on the rows it
-- found. The index only cost every technology write (an upsert of 200 new rows: 11.9 ms
-- with it, 11.35 without, plus the flushes of its pending list into the index now and
-- then) and every rebuild (0.17 s of 5.9 s over the benchmark's 50,000 technologies).
-- The column stays: `ts_rank` reads it.
--
-- An exception to the rule that a release drops nothing (DEPLOY.md): no release reads
-- the index, so the previous one runs the same without it.

-- Found by its definition (a view rebuilt by `projections rebuild` carries the names
-- PostgreSQL gave the shadow table's copies).
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT cc_indexes_defined_like('technology_view', '%USING gin (search)')
    LOOP
        EXECUTE format('DROP INDEX %s', name);
    END LOOP;
END
$$;
