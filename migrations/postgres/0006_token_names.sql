-- The name typed with each subscribe request. A request never renames anyone: the name
-- reaches the subscriber row only when that request's own link is confirmed.
ALTER TABLE tokens ADD COLUMN name TEXT;
