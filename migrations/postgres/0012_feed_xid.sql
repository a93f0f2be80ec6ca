-- Feed positions without a global lock. A history entry's position is written with the entry:
-- the writing transaction's id in the high bits, the entry's order within that transaction in
-- the low 20 (`(pg_current_xact_id() << 20) | n`). Feed readers take only entries below the
-- oldest transaction still running (`pg_snapshot_xmin(pg_current_snapshot()) << 20`), so an
-- entry appears in the feed only when every entry that could ever sort before it has committed
-- or rolled back (docs/storage.md, "Feed positions").
--
-- Positions written before this migration are smaller than any written after it (a transaction
-- wrote fewer than 2^20 entries, and each took an id of its own), so cursors keep their place.
-- The entries still waiting for a position (none once every writer commits) and the index that
-- found them are gone.
DROP INDEX IF EXISTS case_events_unpositioned;
ALTER TABLE case_events ALTER COLUMN feed_pos SET NOT NULL;
