-- Position of a history entry in the feeds (window, platform), assigned under a transaction-wide
-- advisory lock just before commit, so positions grow in commit order and a reader that has
-- seen position N never later finds a committed entry below N.
ALTER TABLE case_events ADD COLUMN feed_pos BIGINT;
CREATE UNIQUE INDEX case_events_feed ON case_events (feed_pos);
CREATE INDEX case_events_unpositioned ON case_events (case_number, seq) WHERE feed_pos IS NULL;
-- Entries written before this migration take positions in case order.
UPDATE case_events e SET feed_pos = t.n
  FROM (SELECT case_number, seq, row_number() OVER (ORDER BY at_ms, case_number, seq) AS n FROM case_events) t
  WHERE e.case_number = t.case_number AND e.seq = t.seq;
