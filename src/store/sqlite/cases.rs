//! A case and its history in the SQLite engine: `edit_case` (the one path by which a stored
//! case changes: read, edit in memory, write the record, its task rows and new history in one
//! transaction), the reads of cases, tasks and attempts, and the operator's audit log.
//! Every read of a record applies the dispatch marks its task rows hold (`dispatch_marks`): the
//! relay's marks (`workers`) write the rows and history, not the record.
//!
//! It never decides what a change is (the caller's `edit` does, with `lifecycle`'s rules) and
//! never writes a submission or allocates a case number (that is `intake`).

use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use crate::proto::v1::{Case, CaseEvent, CaseSummary};
use crate::store::{
    AccessQuery, AccessRecord, CaseChange, ListQuery, OperatorAction, StoreError,
    apply_dispatch_marks, decode_case, ms_to_timestamp, summary,
};

impl SqliteStore {
    pub(in crate::store) async fn edit_case<T: Send + 'static>(
        &self,
        case_number: &str,
        now_ms: i64,
        edit: impl FnOnce(&mut Case, i64, pbjson_types::Timestamp) -> (Option<CaseChange>, T)
        + Send
        + 'static,
    ) -> Result<Option<(Case, T)>, StoreError> {
        let case_number = case_number.to_string();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let body: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT body FROM cases WHERE case_number = ?1",
                    [&case_number],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(body) = body else { return Ok(None) };
            let marks = dispatch_marks(&tx, &case_number)?;
            let mut case = decode_case(&body)?;
            apply_dispatch_marks(&mut case, &marks);
            let last_seq = last_seq(&tx, &case_number)?;
            let at = ms_to_timestamp(now_ms).unwrap_or_default();
            let (change, answer) = edit(&mut case, last_seq, at);
            let Some(change) = change else {
                let mut case = decode_case(&body)?;
                apply_dispatch_marks(&mut case, &marks);
                return Ok(Some((case, answer)));
            };
            for (task_id, status) in &change.tasks {
                tx.execute(
                    "UPDATE tasks SET status = ?1, lease_until_ms = NULL, clock_dirty = 1 WHERE task_id = ?2 AND case_number = ?3",
                    params![*status as i32, task_id, case_number],
                )?;
            }
            for c in &change.clocks {
                tx.execute(
                    "UPDATE tasks SET clock_dirty = 0, next_check_ms = ?1, due_ms = ?2, decided_ms = ?3, deadline_provisional = ?4 WHERE task_id = ?5 AND case_number = ?6",
                    params![c.next_check_ms, c.due_ms, c.decided_ms, i32::from(c.provisional), c.task_id, case_number],
                )?;
            }
            for (order_no, reply) in &change.hotline_replies {
                tx.execute(
                    "INSERT INTO hotline_replies (order_no, case_number, body, created_ms, next_try_ms) VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (order_no) DO NOTHING",
                    params![order_no, case_number, reply, now_ms],
                )?;
            }
            save_case(&tx, &case, &body, &change.events, now_ms)?;
            tx.commit()?;
            Ok(Some((case, answer)))
        })
        .await
    }
    pub(in crate::store) async fn get_case(
        &self,
        case_number: &str,
    ) -> Result<Option<(Case, Vec<CaseEvent>)>, StoreError> {
        let number = case_number.to_string();
        self.read(move |conn| {
            let body: Option<Vec<u8>> = conn
                .prepare_cached("SELECT body FROM cases WHERE case_number = ?1")?
                .query_row([&number], |r| r.get(0))
                .optional()?;
            let Some(body) = body else { return Ok(None) };
            let mut case = decode_case(&body)?;
            apply_dispatch_marks(&mut case, &dispatch_marks(conn, &number)?);
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at_ms, kind, task_id, detail FROM case_events WHERE case_number = ?1 ORDER BY seq",
            )?;
            let events = stmt
                .query_map([&number], |r| {
                    Ok(CaseEvent {
                        seq: r.get(0)?,
                        at: ms_to_timestamp(r.get(1)?),
                        kind: r.get(2)?,
                        task_id: r.get(3)?,
                        detail: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((case, events)))
        })
        .await
    }

    pub(in crate::store) async fn list_cases(
        &self,
        q: ListQuery,
    ) -> Result<Vec<(i64, CaseSummary)>, StoreError> {
        self.read(move |conn| {
            let (after_ms, after_number) = q.after.clone().unwrap_or((i64::MAX, String::new()));
            let mut stmt = conn.prepare_cached(
                "SELECT accepted_at_ms, body, status FROM cases
                 WHERE (?1 IS NULL OR hall_code = ?1) AND (?2 IS NULL OR window_code = ?2)
                   AND (?3 IS NULL OR status = ?3)
                   AND (?4 IS NULL OR accepted_at_ms >= ?4) AND (?5 IS NULL OR accepted_at_ms < ?5)
                   AND (accepted_at_ms < ?6 OR (accepted_at_ms = ?6 AND (?7 = '' OR case_number < ?7)))
                 ORDER BY accepted_at_ms DESC, case_number DESC LIMIT ?8",
            )?;
            let rows = stmt.query_map(
                params![q.hall_code, q.window_code, q.status.map(|s| s as i32), q.from_ms, q.to_ms, after_ms, after_number, q.limit as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i32>(2)?)),
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (ms, body, status) = row?;
                // The status column is ahead of the record once a task is dispatched.
                let mut summary = summary(&decode_case(&body)?);
                summary.status = status;
                out.push((ms, summary));
            }
            Ok(out)
        })
        .await
    }

    pub(in crate::store) async fn case_of_task(
        &self,
        task_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let id = task_id.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT case_number FROM tasks WHERE task_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn attempt_count(
        &self,
        submission_id: &str,
    ) -> Result<i64, StoreError> {
        let id = submission_id.to_string();
        self.read(move |conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM attempts WHERE submission_id = ?1",
                [id],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(in crate::store) async fn record_operator_action(
        &self,
        a: OperatorAction,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO operator_actions (at_ms, operator, origin, action, target, count, message_ids, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![a.at_ms, a.operator, a.origin, a.action, a.target, a.message_ids.len() as i64, a.message_ids.join(" "), a.note])?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn record_access(&self, a: AccessRecord) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO access_log (at_ms, caller, role, hall, method, outcome, target, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![a.at_ms, a.caller, a.role, a.hall, a.method, a.outcome, a.target, a.reason])?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn access_log(
        &self,
        query: AccessQuery,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached("SELECT at_ms, caller, role, hall, method, outcome, target, reason FROM access_log WHERE (?1 = '' OR target = ?1) AND (?2 = '' OR caller = ?2) ORDER BY id DESC LIMIT ?3")?
                .query_map(params![query.target, query.caller, query.limit], |r| {
                    Ok(AccessRecord {
                        at_ms: r.get(0)?,
                        caller: r.get(1)?,
                        role: r.get(2)?,
                        hall: r.get(3)?,
                        method: r.get(4)?,
                        outcome: r.get(5)?,
                        target: r.get(6)?,
                        reason: r.get(7)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn operator_actions(
        &self,
        limit: i64,
    ) -> Result<Vec<OperatorAction>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached("SELECT at_ms, operator, origin, action, target, message_ids, note FROM operator_actions ORDER BY id DESC LIMIT ?1")?
                .query_map([limit], |r| {
                    let ids: String = r.get(5)?;
                    Ok(OperatorAction {
                        at_ms: r.get(0)?,
                        operator: r.get(1)?,
                        origin: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        message_ids: ids.split_whitespace().map(str::to_string).collect(),
                        note: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn rectification_candidates(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT case_number FROM cases WHERE rectification_check_ms <= ?1
                     ORDER BY rectification_check_ms LIMIT ?2",
                )?
                .query_map(params![now_ms, limit as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn case_count(&self) -> Result<i64, StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT count(*) FROM cases", [], |r| r.get(0))?))
            .await
    }
}

/// The number of a case's last history entry.
/// `(task id, dispatched_at_ms)` of a case's DISPATCHED task rows: the dispatch marks its
/// record may not show yet (see `apply_dispatch_marks`).
pub(super) fn dispatch_marks(
    db: &Connection,
    case_number: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(db
        .prepare_cached(
            "SELECT task_id, coalesce(dispatched_at_ms, 0) FROM tasks WHERE case_number = ?1 AND status = ?2",
        )?
        .query_map(
            params![case_number, crate::proto::v1::TaskStatus::Dispatched as i32],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?)
}

pub(super) fn last_seq(db: &Connection, case_number: &str) -> Result<i64, StoreError> {
    Ok(db
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM case_events WHERE case_number = ?1")?
        .query_row([case_number], |r| r.get(0))?)
}

/// Writes a changed case record and appends the history entries the change made. The record
/// is written only when its encoding differs from `stored`, the bytes read in the same
/// transaction: a sweep that only moved a task's clock rows leaves the case row alone.
pub(super) fn save_case(
    db: &Connection,
    case: &Case,
    stored: &[u8],
    events: &[CaseEvent],
    now_ms: i64,
) -> Result<(), StoreError> {
    let body = prost::Message::encode_to_vec(case);
    if body != stored {
        // The rectification's next check goes with the record it is derived from.
        db.prepare_cached(
            "UPDATE cases SET status = ?1, body = ?2, rectification_check_ms = ?3 WHERE case_number = ?4",
        )?
        .execute(params![
            case.status,
            body,
            crate::evaluation::next_check_ms(case),
            case.case_number
        ])?;
    }
    let mut insert = db.prepare_cached(
        "INSERT INTO case_events (case_number, seq, at_ms, kind, task_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for e in events {
        insert.execute(params![
            case.case_number,
            e.seq,
            now_ms,
            e.kind,
            e.task_id,
            e.detail
        ])?;
    }
    Ok(())
}
