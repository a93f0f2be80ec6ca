-- What operators did to the flow (docs/bus.md, "Dead letters"): each
-- dead-letter replay or purge, by whom, from where, on which queue, to which messages (their
-- ids, never their contents). Append-only.
CREATE TABLE operator_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    operator TEXT NOT NULL,
    origin TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    count INTEGER NOT NULL,
    message_ids TEXT NOT NULL
);
