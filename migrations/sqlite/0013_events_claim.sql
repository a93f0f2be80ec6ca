-- The relay's claim of unpublished history entries takes the oldest first (ORDER BY rowid).
-- The index of 0003 sorts them by case and sequence, so SQLite walked the whole table in rowid
-- order, published entries and all, to find the first unpublished ones: the longer the history,
-- the dearer every claim. A partial index on a column that is NULL in every entry it holds
-- keeps its entries in rowid order, so the claim reads only unpublished entries, oldest first.
CREATE INDEX case_events_unpublished_order ON case_events (published_at_ms) WHERE published_at_ms IS NULL;
