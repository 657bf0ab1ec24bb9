-- A projector of the previous release rewrites rows without writing `doc`: the row would
-- keep a document of an older version. Such a write forgets the document instead (a new
-- release's write always changes it, since it holds the version), to be rendered again by
-- the next active projector (`documents::render_missing`) and, meanwhile, per request.
CREATE FUNCTION cc_forget_outgrown_doc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.doc := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER technology_view_outgrown_doc BEFORE UPDATE ON technology_view FOR EACH ROW
    WHEN (NEW.doc IS NOT DISTINCT FROM OLD.doc AND NEW.version IS DISTINCT FROM OLD.version)
    EXECUTE FUNCTION cc_forget_outgrown_doc();
CREATE TRIGGER job_view_outgrown_doc BEFORE UPDATE ON job_view FOR EACH ROW
    WHEN (NEW.doc IS NOT DISTINCT FROM OLD.doc AND NEW.version IS DISTINCT FROM OLD.version)
    EXECUTE FUNCTION cc_forget_outgrown_doc();

-- The rows still without a document, for the rendering pass.
CREATE INDEX technology_view_doc_missing ON technology_view (id) WHERE doc IS NULL;
CREATE INDEX job_view_doc_missing ON job_view (id) WHERE doc IS NULL;
