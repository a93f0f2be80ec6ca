-- Who called for what (docs/security.md, "Audit"): every read of a case's personal data
-- (who read which case, when, by which call) and every refused call, with the caller's
-- authenticated identity. Append-only; it holds case numbers and codes, never personal data.
CREATE TABLE access_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    caller TEXT NOT NULL,
    role TEXT NOT NULL,
    hall TEXT NOT NULL,
    method TEXT NOT NULL,
    outcome TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX access_log_at ON access_log (at_ms);
