-- Substring search, as the previous API's (a case-insensitive ILIKE over title,
-- description and tags: "Newc" finds "Newcomer", "uce" finds "JUCE"), backed by a
-- trigram index over one lower-cased text. `array_to_string` is only STABLE, so the text
-- is built by an IMMUTABLE function the index and the query share.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE FUNCTION cc_search_text(title text, description text, tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(title || ' ' || coalesce(description, '') || ' ' || array_to_string(tags, ' ')) $$;

CREATE INDEX technology_view_substring_idx ON technology_view
    USING gin (cc_search_text(title, description, tags) gin_trgm_ops);
