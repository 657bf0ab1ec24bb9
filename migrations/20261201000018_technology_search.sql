-- A search's total is counted exactly up to its first 1,001 matches. For a common word
-- that count read 1,001 rows of `technology_view`, about 1.4 KB each with their stored
-- documents (five to a page): 200 pages, most of a search's cost. `technology_search`
-- holds what the count reads and nothing more (the project, domain and status it filters
-- by, and the search text; about fifty rows to a page). (A covering index could not hold
-- it: a B-tree entry is limited to 2,704 bytes, a search text is not.)
--
-- Triggers on `technology_view` keep it, one statement per statement: whoever writes the
-- view (a projector of this release or of the one before, during a rolling upgrade, a
-- rebuild, `projections verify`'s fold) writes it too, in the same transaction. They
-- write the `technology_search` of the view's own schema: a rebuild's or a verification's
-- copy of the view (in a schema of its own, `LIKE` the live one, with these triggers
-- copied) keeps its own copy, never the live table. `projections verify` compares it with
-- the store's fold like every table of the read model.
--
-- The count reads it only for a word the statistics call common; a rarer one is found
-- through `technology_view`'s trigram index, which this table does not repeat (every
-- technology write would maintain a second one).
CREATE TABLE technology_search (
    id          text PRIMARY KEY,
    project_id  bigint NOT NULL,
    domain      text NOT NULL,
    status      text NOT NULL,
    search_text text
);
CREATE INDEX technology_search_filters_idx ON technology_search (project_id, domain, status);

-- Rows inserted or updated (an upsert's rows are in the INSERT's or the UPDATE's
-- transition table). A row whose search columns did not change keeps its version (the
-- conflict still locks it). `ReadModel::TRIGGERS` of `technology_view` repeats the three
-- triggers below: every copy of the view a rebuild or a verification makes gets them.
CREATE FUNCTION cc_technology_search_upsert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO %I.technology_search AS s (id, project_id, domain, status, search_text) '
        || 'SELECT id, project_id, domain, status, search_text FROM changed '
        || 'ON CONFLICT (id) DO UPDATE SET project_id = EXCLUDED.project_id, '
        || 'domain = EXCLUDED.domain, status = EXCLUDED.status, search_text = EXCLUDED.search_text '
        || 'WHERE (s.project_id, s.domain, s.status, s.search_text) IS DISTINCT FROM '
        || '(EXCLUDED.project_id, EXCLUDED.domain, EXCLUDED.status, EXCLUDED.search_text)',
        TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE FUNCTION cc_technology_search_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I.technology_search s USING gone WHERE s.id = gone.id',
                   TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE TRIGGER technology_search_inserted AFTER INSERT ON technology_view
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cc_technology_search_upsert();
CREATE TRIGGER technology_search_updated AFTER UPDATE ON technology_view
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION cc_technology_search_upsert();
CREATE TRIGGER technology_search_deleted AFTER DELETE ON technology_view
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION cc_technology_search_delete();

INSERT INTO technology_search (id, project_id, domain, status, search_text)
SELECT id, project_id, domain, status, search_text FROM technology_view;
ANALYZE technology_search;
