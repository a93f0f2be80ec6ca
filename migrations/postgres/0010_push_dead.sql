-- Entries of a push the receiver refused permanently (a 4xx other than 408 and 429) as many times
-- as [platform] refused_tries allows: set aside here, with the receiver's answer, so that the
-- push moves on (src/feed.rs). The entry stays in the feed; an operator reads it from here.
CREATE TABLE push_dead (
    name        TEXT NOT NULL,
    position    BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    status      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    tries       INTEGER NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (name, position)
);
