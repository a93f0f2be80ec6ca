//! The reporter's ledger: every stage record it derived, where it stands with the platform
//! (pending, sent and awaiting the exchange's flag, confirmed, refused with the platform's
//! words), the cases whose history changed and must be read again, and each reconciliation's
//! result. An embedded SQLite file (WAL, synchronous FULL): the reporter is one process, and
//! `report reconcile`/`refused`/`resend` open the same file beside it.
//!
//! This module owns the file and its queries; it never talks to the gateway or the platform.

use rusqlite::{OptionalExtension, params};
use std::path::Path;

use super::derive::Record;

/// Where a record stands.
pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const CONFIRMED: &str = "confirmed";
pub const REFUSED: &str = "refused";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    sblsh        TEXT NOT NULL,
    tbl          TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    case_number  TEXT NOT NULL,
    learnt_ms    INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    message      TEXT,
    next_ms      INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL,
    confirmed_ms INTEGER,
    PRIMARY KEY (sblsh, tbl, seq)
);
CREATE INDEX IF NOT EXISTS records_state ON records (state, sblsh, position);
CREATE INDEX IF NOT EXISTS records_case ON records (case_number);
CREATE INDEX IF NOT EXISTS records_learnt ON records (learnt_ms);
CREATE TABLE IF NOT EXISTS cursors (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reconciliations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    date             TEXT NOT NULL,
    at_ms            INTEGER NOT NULL,
    cases            INTEGER NOT NULL,
    not_accepted     INTEGER NOT NULL,
    records          INTEGER NOT NULL,
    confirmed        INTEGER NOT NULL,
    on_time          INTEGER NOT NULL,
    missing_ledger   INTEGER NOT NULL,
    missing_platform INTEGER NOT NULL,
    mismatched       INTEGER NOT NULL,
    refused          INTEGER NOT NULL,
    detail           TEXT NOT NULL
);
";

/// A stored record, as the sender and the operators see it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sblsh: String,
    pub table: String,
    pub seq: i64,
    pub case_number: String,
    pub learnt_ms: i64,
    pub body: String,
    pub state: String,
    pub attempts: i64,
    pub message: Option<String>,
    pub confirmed_ms: Option<i64>,
}

/// What storing a derived record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New: to be sent.
    New,
    /// Known and the same.
    Same,
    /// Not yet confirmed (or refused) and now different: corrected, to be sent again.
    Corrected,
    /// Already sent or confirmed, and now different: a mismatch for the operators.
    Differs,
}

/// One reconciliation's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reconciliation {
    pub date: String,
    pub at_ms: i64,
    pub cases: i64,
    /// Submissions not accepted that day.
    pub not_accepted: i64,
    pub records: i64,
    pub confirmed: i64,
    pub on_time: i64,
    pub missing_ledger: i64,
    pub missing_platform: i64,
    pub mismatched: i64,
    pub refused: i64,
    pub detail: Vec<String>,
}

impl Reconciliation {
    /// Share of the day's records the platform holds as we do (1 when there were none).
    pub fn completeness(&self) -> f64 {
        if self.records == 0 {
            1.0
        } else {
            self.confirmed as f64 / self.records as f64
        }
    }
    /// Share confirmed within one working day of the fact.
    pub fn on_time_share(&self) -> f64 {
        if self.records == 0 {
            1.0
        } else {
            self.on_time as f64 / self.records as f64
        }
    }
}

/// The file; the cases noted changed are [`crate::cases::CaseLedger`]'s.
pub struct Ledger(crate::cases::CaseLedger);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl std::ops::Deref for Ledger {
    type Target = crate::cases::CaseLedger;
    fn deref(&self) -> &crate::cases::CaseLedger {
        &self.0
    }
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Ledger, String> {
        crate::cases::CaseLedger::open(path, SCHEMA, "reporter ledger").map(Ledger)
    }

    /// Stores a derived record (idempotent on 申办流水号, table and sequence).
    pub fn store(&self, r: &Record) -> Result<Change, String> {
        let body = r.body();
        self.with(|c| {
            let known: Option<(String, String, i64)> = c
                .query_row(
                    "SELECT body, state, attempts FROM records WHERE sblsh = ?1 AND tbl = ?2 AND seq = ?3",
                    params![r.sblsh, r.table, r.seq],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            Ok(match known {
                None => {
                    c.execute(
                        "INSERT INTO records (sblsh, tbl, seq, case_number, learnt_ms, position, body, state, created_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
                        params![r.sblsh, r.table, r.seq, r.case_number, r.learnt_ms, r.position, body, now_ms()],
                    )?;
                    Change::New
                }
                Some((b, _, _)) if b == body => {
                    c.execute(
                        "UPDATE records SET position = ?4 WHERE sblsh = ?1 AND tbl = ?2 AND seq = ?3",
                        params![r.sblsh, r.table, r.seq, r.position],
                    )?;
                    Change::Same
                }
                // Only what the platform cannot hold is corrected: a refused record, or one
                // never tried. One tried without an answer may be held already; sent again
                // with another body it would be refused as a conflict.
                Some((_, state, attempts))
                    if state == REFUSED || (state == PENDING && attempts == 0) =>
                {
                    c.execute(
                        "UPDATE records SET body = ?4, position = ?5, state = 'pending', next_ms = 0
                         WHERE sblsh = ?1 AND tbl = ?2 AND seq = ?3",
                        params![r.sblsh, r.table, r.seq, body, r.position],
                    )?;
                    Change::Corrected
                }
                Some(_) => Change::Differs,
            })
        })
    }

    /// Up to `n` records that may be sent now: pending, due, and with every earlier record of
    /// their 申办流水号 confirmed (a later stage waits for its earlier one's confirmation).
    pub fn sendable(&self, n: i64) -> Result<Vec<Stored>, String> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT r.sblsh, r.tbl, r.seq, r.case_number, r.learnt_ms, r.body, r.state, r.attempts, r.message, r.confirmed_ms
                 FROM records r
                 WHERE r.state = 'pending' AND r.next_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM records p
                                   WHERE p.sblsh = r.sblsh AND p.state != 'confirmed' AND p.position < r.position)
                 ORDER BY r.learnt_ms LIMIT ?2",
            )?;
            s.query_map(params![now_ms(), n], stored)?.collect()
        })
    }

    /// Records sent and awaiting the exchange's flag, due to be looked at.
    pub fn awaiting(&self, n: i64) -> Result<Vec<Stored>, String> {
        self.select(
            "WHERE state = 'sent' AND next_ms <= ?2 ORDER BY learnt_ms LIMIT ?1",
            params![n, now_ms()],
        )
    }

    /// A written row whose flag is not set yet: looked at again after `delay_ms` (not an
    /// attempt).
    pub fn look_later(&self, r: &Stored, delay_ms: i64) -> Result<(), String> {
        self.with(|c| {
            c.execute(
                "UPDATE records SET next_ms = ?4 WHERE sblsh = ?1 AND tbl = ?2 AND seq = ?3",
                params![r.sblsh, r.table, r.seq, now_ms() + delay_ms],
            )
            .map(drop)
        })
    }

    /// The platform answers again: the records waiting out their backoff are tried now.
    pub fn wake(&self) -> Result<usize, String> {
        self.with(|c| {
            c.execute(
                "UPDATE records SET next_ms = 0 WHERE state IN ('pending', 'sent') AND next_ms > ?1",
                params![now_ms()],
            )
        })
    }

    /// Forgets confirmed records learnt before `before_ms` (their personal data is kept no
    /// longer than reconciliation needs it); how many.
    pub fn prune(&self, before_ms: i64) -> Result<usize, String> {
        self.with(|c| {
            c.execute(
                "DELETE FROM records WHERE state = 'confirmed' AND learnt_ms < ?1",
                params![before_ms],
            )
        })
    }

    pub fn refused(&self) -> Result<Vec<Stored>, String> {
        self.select("WHERE state = 'refused' ORDER BY learnt_ms", params![])
    }

    /// Every record of the given cases.
    pub fn of_case(&self, case_number: &str) -> Result<Vec<Stored>, String> {
        self.select(
            "WHERE case_number = ?1 ORDER BY sblsh, position",
            params![case_number],
        )
    }

    /// Cases with a record learnt in [from, to).
    pub fn cases_learnt(&self, from_ms: i64, to_ms: i64) -> Result<Vec<String>, String> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT DISTINCT case_number FROM records WHERE learnt_ms >= ?1 AND learnt_ms < ?2",
            )?;
            s.query_map(params![from_ms, to_ms], |r| r.get(0))?
                .collect()
        })
    }

    fn select(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<Stored>, String> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT sblsh, tbl, seq, case_number, learnt_ms, body, state, attempts, message, confirmed_ms FROM records {tail}"
            ))?;
            s.query_map(p, stored)?.collect()
        })
    }

    /// Sets where a record stands after an attempt.
    pub fn set(
        &self,
        r: &Stored,
        state: &str,
        message: Option<&str>,
        retry_in_ms: i64,
    ) -> Result<(), String> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "UPDATE records SET state = ?4, message = ?5, attempts = attempts + ?6, next_ms = ?7,
                        confirmed_ms = CASE WHEN ?4 = 'confirmed' THEN ?8 ELSE confirmed_ms END
                 WHERE sblsh = ?1 AND tbl = ?2 AND seq = ?3",
                params![
                    r.sblsh,
                    r.table,
                    r.seq,
                    state,
                    message,
                    i64::from(state != CONFIRMED),
                    now + retry_in_ms,
                    now
                ],
            )
            .map(drop)
        })
    }

    /// Sends the given refused records again (after the cause was corrected); how many. Their
    /// cases are read again first, so a corrected specification gives them their new body.
    pub fn resend(&self, sblsh: Option<&str>) -> Result<usize, String> {
        let now = now_ms();
        self.with(|c| {
            let filter = "state = 'refused' AND (?1 IS NULL OR sblsh = ?1)";
            c.execute(
                &format!(
                    "INSERT INTO dirty (case_number, since_ms, next_ms)
                     SELECT DISTINCT case_number, ?2, 0 FROM records WHERE {filter}
                       AND case_number NOT LIKE 'submission:%'
                     ON CONFLICT (case_number) DO UPDATE SET since_ms = excluded.since_ms, next_ms = 0"
                ),
                params![sblsh, now],
            )?;
            c.execute(
                &format!("UPDATE records SET state = 'pending', next_ms = 0 WHERE {filter}"),
                params![sblsh],
            )
        })
    }

    /// Marks every case with a record not confirmed yet as changed: at start, so a corrected
    /// specification reaches the records still waiting; how many.
    pub fn dirty_unconfirmed(&self) -> Result<usize, String> {
        let now = now_ms();
        self.with(|c| {
            c.execute(
                "INSERT INTO dirty (case_number, since_ms, next_ms)
                 SELECT DISTINCT case_number, ?1, 0 FROM records
                 WHERE state IN ('pending', 'refused') AND case_number NOT LIKE 'submission:%'
                 ON CONFLICT (case_number) DO NOTHING",
                params![now],
            )
        })
    }

    /// A confirmed record the platform turns out not to hold: report it again.
    pub fn rereport(&self, r: &Stored) -> Result<(), String> {
        self.with(|c| {
            c.execute(
                "UPDATE records SET state = 'pending', next_ms = 0, confirmed_ms = NULL,
                        message = 'not held by the platform at reconciliation; reported again'
                 WHERE sblsh = ?1 AND tbl = ?2 AND seq = ?3",
                params![r.sblsh, r.table, r.seq],
            )
            .map(drop)
        })
    }

    /// Counts by state.
    pub fn counts(&self) -> Result<Vec<(String, i64)>, String> {
        self.with(|c| {
            let mut s = c.prepare("SELECT state, count(*) FROM records GROUP BY state")?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
    }

    /// Where the listing `name` was read up to (0: nowhere yet).
    pub fn cursor(&self, name: &str) -> Result<i64, String> {
        self.with(|c| {
            c.query_row(
                "SELECT position FROM cursors WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map(|p| p.unwrap_or(0))
        })
    }

    pub fn set_cursor(&self, name: &str, position: i64) -> Result<(), String> {
        self.with(|c| {
            c.execute(
                "INSERT INTO cursors (name, position) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                params![name, position],
            )
            .map(drop)
        })
    }

    pub fn record_reconciliation(&self, r: &Reconciliation) -> Result<(), String> {
        let detail = serde_json::to_string(&r.detail).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO reconciliations (date, at_ms, cases, not_accepted, records, confirmed, on_time, missing_ledger, missing_platform, mismatched, refused, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![r.date, r.at_ms, r.cases, r.not_accepted, r.records, r.confirmed, r.on_time, r.missing_ledger, r.missing_platform, r.mismatched, r.refused, detail],
            )
            .map(drop)
        })
    }

    /// The last reconciliation recorded, if any.
    pub fn last_reconciliation(&self) -> Result<Option<Reconciliation>, String> {
        self.with(|c| {
            c.query_row(
                "SELECT date, at_ms, cases, not_accepted, records, confirmed, on_time, missing_ledger, missing_platform, mismatched, refused, detail
                 FROM reconciliations ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    let detail: String = r.get(11)?;
                    Ok(Reconciliation {
                        date: r.get(0)?,
                        at_ms: r.get(1)?,
                        cases: r.get(2)?,
                        not_accepted: r.get(3)?,
                        records: r.get(4)?,
                        confirmed: r.get(5)?,
                        on_time: r.get(6)?,
                        missing_ledger: r.get(7)?,
                        missing_platform: r.get(8)?,
                        mismatched: r.get(9)?,
                        refused: r.get(10)?,
                        detail: serde_json::from_str(&detail).unwrap_or_default(),
                    })
                },
            )
            .optional()
        })
    }
}

fn stored(r: &rusqlite::Row) -> rusqlite::Result<Stored> {
    Ok(Stored {
        sblsh: r.get(0)?,
        table: r.get(1)?,
        seq: r.get(2)?,
        case_number: r.get(3)?,
        learnt_ms: r.get(4)?,
        body: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        message: r.get(8)?,
        confirmed_ms: r.get(9)?,
    })
}
