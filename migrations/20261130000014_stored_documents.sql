-- Each read-model row keeps the JSON document the API serves for it (`doc`), rendered
-- once by the projector when it writes the row (projections/src/documents.rs): a page is
-- an index range scan handing stored documents over as they are. Rows written before
-- this are rendered by the projector when it starts (`documents::render_missing`); until
-- then the queries render them per request.
ALTER TABLE technology_view ADD COLUMN doc text;
ALTER TABLE job_view ADD COLUMN doc text;
