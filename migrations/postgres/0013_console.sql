-- The operations console: history entries by time (the flows of the last half hour, without a
-- scan of the whole history), and the reason an operator gives when purging dead letters.
CREATE INDEX case_events_at ON case_events (at_ms);
ALTER TABLE operator_actions ADD COLUMN note TEXT NOT NULL DEFAULT '';
