-- The four technology fields the previous API had and clients still send and read.
ALTER TABLE technology_view
    ADD COLUMN last_hn_mention    timestamptz,
    ADD COLUMN hn_score_avg       double precision,
    ADD COLUMN github_stars       integer,
    ADD COLUMN github_last_commit timestamptz;
