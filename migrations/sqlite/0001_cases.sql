-- Cases, their tasks and append-only history, idempotency records and the audit of attempts.
CREATE TABLE submissions (
    submission_id TEXT PRIMARY KEY,
    content_hash  BLOB NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('accepted', 'deficient')),
    case_number   TEXT,
    response      BLOB NOT NULL,
    first_at_ms   INTEGER NOT NULL,
    last_at_ms    INTEGER NOT NULL
);

CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id  TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    hall_code      TEXT NOT NULL,
    window_code    TEXT NOT NULL,
    clerk_staff_no TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    case_number    TEXT,
    detail         TEXT NOT NULL
);
CREATE INDEX attempts_submission ON attempts (submission_id);

CREATE TABLE case_numbers (
    prefix   TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

CREATE TABLE cases (
    case_number       TEXT PRIMARY KEY,
    submission_id     TEXT NOT NULL UNIQUE,
    hall_code         TEXT NOT NULL,
    window_code       TEXT NOT NULL,
    status            INTEGER NOT NULL,
    accepted_at_ms    INTEGER NOT NULL,
    promised_deadline TEXT NOT NULL,
    item_codes        TEXT NOT NULL,
    body              BLOB NOT NULL
);
CREATE INDEX cases_window ON cases (hall_code, window_code, accepted_at_ms DESC, case_number DESC);
CREATE INDEX cases_accepted ON cases (accepted_at_ms DESC, case_number DESC);

CREATE TABLE tasks (
    task_id     TEXT PRIMARY KEY,
    case_number TEXT NOT NULL REFERENCES cases (case_number),
    department  TEXT NOT NULL,
    item_code   TEXT NOT NULL,
    status      INTEGER NOT NULL,
    depends_on  TEXT NOT NULL,
    body        BLOB NOT NULL
);
CREATE INDEX tasks_case ON tasks (case_number);
CREATE INDEX tasks_status ON tasks (status);

CREATE TABLE case_events (
    case_number TEXT NOT NULL REFERENCES cases (case_number),
    seq         INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (case_number, seq)
);
