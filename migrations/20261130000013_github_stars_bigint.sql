-- GitHub stars go up to 4294967295 (what the write side accepts and the document says);
-- `integer` stopped the projector at 2147483648.
ALTER TABLE technology_view ALTER COLUMN github_stars TYPE bigint;
