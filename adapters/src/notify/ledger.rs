//! The notifier's ledger: every notice a case's history made due, once per (case number,
//! event), and where it stands (pending, sent, skipped for want of consent, refused with the
//! SMS platform's words), and the cases whose history changed and must be read again. An
//! embedded SQLite file (WAL, synchronous FULL): a changed case is noted here before its entry
//! is acknowledged, and a notice is stored once, so a redelivered entry or a restarted
//! notifier sends nothing twice.
//!
//! This module owns the file and its queries; it never talks to the gateway or the platform.

use rusqlite::params;
use std::path::Path;

/// Where a notice stands.
pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const SKIPPED: &str = "skipped";
pub const REFUSED: &str = "refused";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notices (
    case_number TEXT NOT NULL,
    event       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    position    INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    mobile      TEXT NOT NULL,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    message     TEXT,
    next_ms     INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    sent_ms     INTEGER,
    PRIMARY KEY (case_number, event)
);
CREATE INDEX IF NOT EXISTS notices_state ON notices (state, case_number, position);
";

/// A notice a case's history made due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub case_number: String,
    /// What it is about, unique in its case: the kind, and for a kind that can happen more than
    /// once (materials asked for), the history entry's sequence (`supplement_asked#7`).
    pub event: String,
    pub kind: String,
    /// The order in the case (the history entry's sequence).
    pub position: i64,
    /// The id the SMS platform deduplicates on: the same for the same (case, event), always.
    pub message_id: String,
    /// Where it goes; empty when the applicant gave none.
    pub mobile: String,
    pub body: String,
    /// The applicant consented to SMS notices.
    pub consent: bool,
    /// When its history entry was written (ms since the epoch).
    pub at_ms: i64,
    /// The entry was older than `stale_after_hours` when the notice was first derived (the
    /// notifier deployed over cases already under way, a template added, a ledger lost): stored
    /// skipped, as what the applicant would take for news is long past.
    pub stale: bool,
}

/// A stored notice, as the sender and the operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub case_number: String,
    pub event: String,
    pub kind: String,
    pub position: i64,
    pub message_id: String,
    #[serde(skip)]
    pub mobile: String,
    #[serde(skip)]
    pub body: String,
    pub state: String,
    pub attempts: i64,
    pub message: Option<String>,
}

/// The file; the cases noted changed are [`crate::cases::CaseLedger`]'s.
pub struct Ledger(crate::cases::CaseLedger);

impl std::ops::Deref for Ledger {
    type Target = crate::cases::CaseLedger;
    fn deref(&self) -> &crate::cases::CaseLedger {
        &self.0
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

const COLUMNS: &str =
    "case_number, event, kind, position, message_id, mobile, body, state, attempts, message";

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        case_number: r.get(0)?,
        event: r.get(1)?,
        kind: r.get(2)?,
        position: r.get(3)?,
        message_id: r.get(4)?,
        mobile: r.get(5)?,
        body: r.get(6)?,
        state: r.get(7)?,
        attempts: r.get(8)?,
        message: r.get(9)?,
    })
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Ledger, String> {
        crate::cases::CaseLedger::open(path, SCHEMA, "notifier ledger").map(Ledger)
    }

    /// Stores a notice once per (case, event); whether it was new. One without consent (or
    /// without a mobile number) is stored skipped, never to be sent.
    pub fn store(&self, n: &Notice) -> Result<bool, String> {
        let (state, message) = if !n.consent {
            (
                SKIPPED,
                Some("the applicant did not consent to SMS notices"),
            )
        } else if n.mobile.is_empty() {
            (SKIPPED, Some("the applicant gave no mobile number"))
        } else if n.stale {
            (
                SKIPPED,
                Some("its event was older than stale_after_hours when first seen"),
            )
        } else {
            (PENDING, None)
        };
        self.with(|c| {
            c.execute(
                "INSERT INTO notices (case_number, event, kind, position, message_id, mobile, body, state, message, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (case_number, event) DO NOTHING",
                params![
                    n.case_number,
                    n.event,
                    n.kind,
                    n.position,
                    n.message_id,
                    if state == PENDING { n.mobile.as_str() } else { "" },
                    n.body,
                    state,
                    message,
                    now_ms()
                ],
            )
            .map(|changed| changed == 1)
        })
    }

    /// Up to `n` notices that may go now: of each case, its first one not yet settled, when its
    /// backoff is over (a case's notices go in order, one at a time).
    pub fn sendable(&self, n: i64) -> Result<Vec<Stored>, String> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {COLUMNS} FROM notices o WHERE state = 'pending' AND next_ms <= ?1
                   AND position = (SELECT MIN(position) FROM notices i
                                   WHERE i.case_number = o.case_number AND i.state = 'pending')
                 ORDER BY created_ms, position LIMIT ?2"
            ))?;
            s.query_map(params![now_ms(), n], stored)?.collect()
        })
    }

    /// Sets where a notice stands; `delay_ms` before it is tried again (pending only). A sent
    /// notice forgets its mobile number; a refused one keeps it, so that it can be sent again
    /// once the cause is mended ([`Ledger::resend`]), and forgets it when sent.
    pub fn set(
        &self,
        s: &Stored,
        state: &str,
        message: Option<&str>,
        delay_ms: i64,
    ) -> Result<(), String> {
        let attempts = if state == PENDING {
            s.attempts + 1
        } else {
            s.attempts
        };
        self.with(|c| {
            c.execute(
                "UPDATE notices SET state = ?3, message = ?4, attempts = ?5, next_ms = ?6,
                        sent_ms = CASE WHEN ?3 = 'sent' THEN ?7 ELSE sent_ms END,
                        mobile = CASE WHEN ?3 IN ('pending', 'refused') THEN mobile ELSE '' END
                 WHERE case_number = ?1 AND event = ?2",
                params![
                    s.case_number,
                    s.event,
                    state,
                    message,
                    attempts,
                    now_ms() + delay_ms,
                    now_ms()
                ],
            )
            .map(drop)
        })
    }

    /// Refused notices made due again, as new (the platform's account, signature or template
    /// mended: `yichuang-adapter notify resend`): those of `case_number`, or all of them with
    /// `None`. How many.
    pub fn resend(&self, case_number: Option<&str>) -> Result<usize, String> {
        self.with(|c| {
            c.execute(
                "UPDATE notices SET state = 'pending', next_ms = 0, attempts = 0, message = NULL
                 WHERE state = 'refused' AND mobile != '' AND (?1 IS NULL OR case_number = ?1)",
                params![case_number],
            )
        })
    }

    /// Every notice waiting out a backoff is due now (a process that is gone set the backoff).
    pub fn wake(&self) -> Result<usize, String> {
        self.with(|c| c.execute("UPDATE notices SET next_ms = 0 WHERE state = 'pending'", []))
    }

    /// The notices of a case, in order.
    pub fn of_case(&self, case_number: &str) -> Result<Vec<Stored>, String> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {COLUMNS} FROM notices WHERE case_number = ?1 ORDER BY position"
            ))?;
            s.query_map(params![case_number], stored)?.collect()
        })
    }

    /// The refused notices, oldest first.
    pub fn refused(&self) -> Result<Vec<Stored>, String> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {COLUMNS} FROM notices WHERE state = 'refused' ORDER BY created_ms"
            ))?;
            s.query_map([], stored)?.collect()
        })
    }

    /// How many notices stand in each state.
    pub fn counts(&self) -> Result<Vec<(String, i64)>, String> {
        self.with(|c| {
            let mut s = c.prepare("SELECT state, COUNT(*) FROM notices GROUP BY state")?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: &str, position: i64, consent: bool) -> Notice {
        Notice {
            case_number: "C1".into(),
            event: event.into(),
            kind: event.into(),
            position,
            message_id: format!("m-{event}"),
            mobile: "13812345678".into(),
            body: "x".into(),
            consent,
            at_ms: 0,
            stale: false,
        }
    }

    #[test]
    fn a_notice_is_stored_once_and_a_case_goes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("n.db")).unwrap();
        assert!(l.store(&notice("accepted", 1, true)).unwrap());
        assert!(!l.store(&notice("accepted", 1, true)).unwrap(), "once");
        assert!(l.store(&notice("ready", 5, true)).unwrap());
        let due = l.sendable(10).unwrap();
        assert_eq!(due.len(), 1, "one of a case at a time");
        assert_eq!(due[0].event, "accepted");
        l.set(&due[0], SENT, None, 0).unwrap();
        let due = l.sendable(10).unwrap();
        assert_eq!(due[0].event, "ready");
        l.set(&due[0], PENDING, Some("busy"), 60_000).unwrap();
        assert!(l.sendable(10).unwrap().is_empty(), "waits out its backoff");
        assert_eq!(l.wake().unwrap(), 1);
        assert_eq!(l.sendable(10).unwrap().len(), 1);
        let sent = &l.of_case("C1").unwrap()[0];
        assert_eq!(
            (sent.state.as_str(), sent.mobile.as_str()),
            (SENT, ""),
            "a sent notice forgets the number"
        );
    }

    #[test]
    fn a_refused_notice_keeps_its_number_until_it_is_resent_and_sent() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("n.db")).unwrap();
        assert!(l.store(&notice("accepted", 1, true)).unwrap());
        let due = l.sendable(10).unwrap();
        l.set(&due[0], REFUSED, Some("101 账号不存在"), 0).unwrap();
        assert!(
            l.sendable(10).unwrap().is_empty(),
            "a refusal is not tried again"
        );
        assert_eq!(l.resend(Some("C2")).unwrap(), 0, "another case's");
        assert_eq!(l.resend(Some("C1")).unwrap(), 1);
        let due = l.sendable(10).unwrap();
        assert_eq!(
            (
                due[0].state.as_str(),
                due[0].mobile.as_str(),
                due[0].attempts
            ),
            (PENDING, "13812345678", 0),
            "due again as new, with its number"
        );
        l.set(&due[0], SENT, None, 0).unwrap();
        assert_eq!(l.resend(None).unwrap(), 0, "nothing refused is left");
        assert!(l.of_case("C1").unwrap()[0].mobile.is_empty());
    }

    #[test]
    fn a_notice_of_an_old_event_is_skipped_and_keeps_no_number() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("n.db")).unwrap();
        let old = Notice {
            stale: true,
            ..notice("accepted", 1, true)
        };
        assert!(l.store(&old).unwrap());
        assert!(l.sendable(10).unwrap().is_empty());
        let s = &l.of_case("C1").unwrap()[0];
        assert_eq!((s.state.as_str(), s.mobile.as_str()), (SKIPPED, ""));
    }

    #[test]
    fn without_consent_a_notice_is_skipped_and_never_sendable() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(&dir.path().join("n.db")).unwrap();
        assert!(l.store(&notice("accepted", 1, false)).unwrap());
        assert!(l.sendable(10).unwrap().is_empty());
        let s = &l.of_case("C1").unwrap()[0];
        assert_eq!(s.state, SKIPPED);
        assert!(s.mobile.is_empty(), "no number kept without consent");
    }
}
