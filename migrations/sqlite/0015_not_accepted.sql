-- Submissions the window did not accept (一次性告知), kept so that the reporter can report each
-- upward as 申办 + 受理 with 受理状态 "3 补齐补正材料" (issue 19). One row per fresh deficient
-- outcome, written in the transaction that records its `submissions` row; a replay writes
-- none. Holds the applicant's personal data (the submission): read only through
-- `ListNotAccepted`, each read audited in `access_log`.
--
-- `id` is the listing position. The one writer commits in id order, so a reader that has seen
-- an id never later finds a smaller one.
CREATE TABLE not_accepted (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    hall_code TEXT NOT NULL,
    window_code TEXT NOT NULL,
    clerk_staff_no TEXT NOT NULL,
    -- The submission as intake left it (normalised), protobuf `Submission`.
    submission BLOB NOT NULL,
    -- The one-time notice, protobuf `DeficiencyNotice`.
    notice BLOB NOT NULL,
    -- The items applied for that the acceptance list knows, JSON array of `NotAcceptedItem`
    -- (proto3 JSON mapping).
    items TEXT NOT NULL
);
CREATE INDEX not_accepted_at ON not_accepted (at_ms);
