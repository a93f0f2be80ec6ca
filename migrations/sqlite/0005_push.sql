-- Where each HTTP push (the one-network platform's) has got to in the feed, and which gateway
-- replica holds it: one pusher at a time, resuming after a restart.
CREATE TABLE push_cursors (
    name           TEXT PRIMARY KEY,
    position       BIGINT NOT NULL DEFAULT 0,
    owner          TEXT NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);
