-- Submissions the window did not accept (一次性告知), kept so that the reporter can report each
-- upward as 申办 + 受理 with 受理状态 "3 补齐补正材料" (issue 19). One row per fresh deficient
-- outcome, written in the transaction that records its `submissions` row; a replay writes
-- none. Holds the applicant's personal data (the submission): read only through
-- `ListNotAccepted`, each read audited in `access_log`.
--
-- `id` is the listing position, written like a feed position (docs/storage.md, "Feed
-- positions"): the writing transaction's id in the high bits (`pg_current_xact_id() << 20`;
-- a transaction records one submission, so one row). A sequence would hand out ids in one
-- order and commit them in another, and a reader that had seen id N could later find a
-- committed N - 1; readers read only below the oldest transaction still running instead.
CREATE TABLE not_accepted (
    id BIGINT PRIMARY KEY DEFAULT (pg_current_xact_id()::text::bigint << 20),
    submission_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    hall_code TEXT NOT NULL,
    window_code TEXT NOT NULL,
    clerk_staff_no TEXT NOT NULL,
    -- The submission as intake left it (normalised), protobuf `Submission`.
    submission BYTEA NOT NULL,
    -- The one-time notice, protobuf `DeficiencyNotice`.
    notice BYTEA NOT NULL,
    -- The items applied for that the acceptance list knows, JSON array of `NotAcceptedItem`
    -- (proto3 JSON mapping).
    items TEXT NOT NULL
);
CREATE INDEX not_accepted_at ON not_accepted (at_ms);
