-- Case history entries are also an outbox: the relay publishes each to the events exchange once.
ALTER TABLE case_events ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE case_events ADD COLUMN published_at_ms INTEGER;
CREATE INDEX case_events_unpublished ON case_events (case_number, seq) WHERE published_at_ms IS NULL;
-- The W3C trace id of the request that accepted the case, for the `traceparent` of its events.
ALTER TABLE cases ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
