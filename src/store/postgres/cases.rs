//! A case and its history in the PostgreSQL engine: `edit_case` (the one path by which a stored
//! case changes: lock the case row, edit in memory, write the record, its task rows and new
//! history in one transaction), feed positions for new history, the reads of cases, tasks and
//! attempts, and the operator's audit log. `insert_events` is shared with `intake` and the
//! outbox's dispatch marks in `workers`.
//!
//! It never decides what a change is (the caller's `edit` does, with `lifecycle`'s rules) and
//! never writes a submission or allocates a case number (that is `intake`).

use deadpool_postgres::Transaction;

use super::{PgStore, pool_err};
use crate::proto::v1::{Case, CaseEvent, CaseSummary};
use crate::store::{
    AccessQuery, AccessRecord, CaseChange, ListQuery, OperatorAction, StoreError, decode_case,
    ms_to_timestamp, summary,
};

impl PgStore {
    pub(in crate::store) async fn edit_case<T: Send + 'static>(
        &self,
        case_number: &str,
        now_ms: i64,
        edit: impl FnOnce(&mut Case, i64, pbjson_types::Timestamp) -> (Option<CaseChange>, T)
        + Send
        + 'static,
    ) -> Result<Option<(Case, T)>, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await?;
        // The row lock and the last history number in one round trip: the server runs them in
        // order, so the number is read under the lock.
        let lock = tx
            .prepare_cached("SELECT body FROM cases WHERE case_number = $1 FOR UPDATE")
            .await?;
        let last = tx.prepare_cached(LAST_SEQ).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&case_number];
        let (row, last_seq) =
            tokio::try_join!(tx.query_opt(&lock, &params), tx.query_one(&last, &params))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: &[u8] = row.get(0);
        let mut case = decode_case(stored)?;
        let at = ms_to_timestamp(now_ms).unwrap_or_default();
        let (change, answer) = edit(&mut case, last_seq.get(0), at);
        let Some(change) = change else {
            return Ok(Some((decode_case(stored)?, answer)));
        };
        // Task statuses, then clocks (a task in both ends with its clock clean), then the record
        // and history: prepared first, then sent together, run by the server in this order.
        let statuses = tx
            .prepare_cached(
                "UPDATE tasks t SET status = u.status, lease_until_ms = NULL, clock_dirty = 1
                 FROM unnest($1::text[], $2::int[]) AS u(task_id, status)
                 WHERE t.task_id = u.task_id AND t.case_number = $3",
            )
            .await?;
        let clocks = tx
            .prepare_cached(
                "UPDATE tasks t SET clock_dirty = 0, next_check_ms = u.next_check_ms, due_ms = u.due_ms,
                   decided_ms = u.decided_ms, deadline_provisional = u.provisional
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::smallint[])
                   AS u(task_id, next_check_ms, due_ms, decided_ms, provisional)
                 WHERE t.task_id = u.task_id AND t.case_number = $6",
            )
            .await?;
        let task_ids: Vec<&str> = change.tasks.iter().map(|(id, _)| id.as_str()).collect();
        let task_statuses: Vec<i32> = change.tasks.iter().map(|(_, s)| *s as i32).collect();
        let clock_ids: Vec<&str> = change.clocks.iter().map(|c| c.task_id.as_str()).collect();
        let next: Vec<Option<i64>> = change.clocks.iter().map(|c| c.next_check_ms).collect();
        let due: Vec<Option<i64>> = change.clocks.iter().map(|c| c.due_ms).collect();
        let decided: Vec<Option<i64>> = change.clocks.iter().map(|c| c.decided_ms).collect();
        let provisional: Vec<i16> = change
            .clocks
            .iter()
            .map(|c| i16::from(c.provisional))
            .collect();
        let mut ordinal = 0;
        tokio::try_join!(
            async {
                if !task_ids.is_empty() {
                    tx.execute(&statuses, &[&task_ids, &task_statuses, &case_number])
                        .await?;
                }
                Ok::<_, StoreError>(())
            },
            async {
                if !clock_ids.is_empty() {
                    tx.execute(
                        &clocks,
                        &[
                            &clock_ids,
                            &next,
                            &due,
                            &decided,
                            &provisional,
                            &case_number,
                        ],
                    )
                    .await?;
                }
                Ok(())
            },
            save_case(&tx, &case, stored, &change.events, now_ms, &mut ordinal),
        )?;
        for (order_no, reply) in &change.hotline_replies {
            tx.execute(
                "INSERT INTO hotline_replies (order_no, case_number, body, created_ms, next_try_ms) VALUES ($1, $2, $3, $4, $4) ON CONFLICT (order_no) DO NOTHING",
                &[order_no, &case_number, reply, &now_ms],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some((case, answer)))
    }
    pub(in crate::store) async fn get_case(
        &self,
        case_number: &str,
    ) -> Result<Option<(Case, Vec<CaseEvent>)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let Some(row) = client
            .query_opt(
                "SELECT body FROM cases WHERE case_number = $1",
                &[&case_number],
            )
            .await?
        else {
            return Ok(None);
        };
        let case = decode_case(row.get::<_, &[u8]>(0))?;
        let events = client
            .query(
                "SELECT seq, at_ms, kind, task_id, detail FROM case_events WHERE case_number = $1 ORDER BY seq",
                &[&case_number],
            )
            .await?
            .iter()
            .map(|r| CaseEvent {
                seq: r.get(0),
                at: ms_to_timestamp(r.get(1)),
                kind: r.get(2),
                task_id: r.get(3),
                detail: r.get(4),
            })
            .collect();
        Ok(Some((case, events)))
    }

    pub(in crate::store) async fn list_cases(
        &self,
        q: ListQuery,
    ) -> Result<Vec<(i64, CaseSummary)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let (after_ms, after_number) = q.after.clone().unwrap_or((i64::MAX, String::new()));
        let status = q.status.map(|s| s as i32);
        let rows = client
            .query(
                "SELECT accepted_at_ms, body FROM cases
                 WHERE ($1::text IS NULL OR hall_code = $1) AND ($2::text IS NULL OR window_code = $2)
                   AND ($3::int IS NULL OR status = $3)
                   AND ($4::bigint IS NULL OR accepted_at_ms >= $4) AND ($5::bigint IS NULL OR accepted_at_ms < $5)
                   AND (accepted_at_ms < $6 OR (accepted_at_ms = $6 AND ($7 = '' OR case_number < $7)))
                 ORDER BY accepted_at_ms DESC, case_number DESC LIMIT $8",
                &[&q.hall_code, &q.window_code, &status, &q.from_ms, &q.to_ms, &after_ms, &after_number, &(q.limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), summary(&decode_case(r.get::<_, &[u8]>(1))?))))
            .collect()
    }

    pub(in crate::store) async fn case_of_task(
        &self,
        task_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_opt(
                "SELECT case_number FROM tasks WHERE task_id = $1",
                &[&task_id],
            )
            .await?
            .map(|r| r.get(0)))
    }

    pub(in crate::store) async fn attempt_count(
        &self,
        submission_id: &str,
    ) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM attempts WHERE submission_id = $1",
                &[&submission_id],
            )
            .await?
            .get(0))
    }

    pub(in crate::store) async fn record_operator_action(
        &self,
        a: OperatorAction,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO operator_actions (at_ms, operator, origin, action, target, count, message_ids, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&a.at_ms, &a.operator, &a.origin, &a.action, &a.target, &(a.message_ids.len() as i32), &a.message_ids.join(" "), &a.note],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn record_access(&self, a: AccessRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO access_log (at_ms, caller, role, hall, method, outcome, target, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&a.at_ms, &a.caller, &a.role, &a.hall, &a.method, &a.outcome, &a.target, &a.reason],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn access_log(
        &self,
        query: AccessQuery,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT at_ms, caller, role, hall, method, outcome, target, reason FROM access_log WHERE ($1 = '' OR target = $1) AND ($2 = '' OR caller = $2) ORDER BY id DESC LIMIT $3",
                &[&query.target, &query.caller, &query.limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AccessRecord {
                at_ms: r.get(0),
                caller: r.get(1),
                role: r.get(2),
                hall: r.get(3),
                method: r.get(4),
                outcome: r.get(5),
                target: r.get(6),
                reason: r.get(7),
            })
            .collect())
    }

    pub(in crate::store) async fn operator_actions(
        &self,
        limit: i64,
    ) -> Result<Vec<OperatorAction>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT at_ms, operator, origin, action, target, message_ids, note FROM operator_actions ORDER BY id DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| OperatorAction {
                at_ms: r.get(0),
                operator: r.get(1),
                origin: r.get(2),
                action: r.get(3),
                target: r.get(4),
                message_ids: r
                    .get::<_, String>(5)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                note: r.get(6),
            })
            .collect())
    }

    pub(in crate::store) async fn rectification_candidates(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(
                "SELECT case_number FROM cases WHERE rectification_check_ms <= $1
                 ORDER BY rectification_check_ms LIMIT $2",
                &[&now_ms, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub(in crate::store) async fn case_count(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one("SELECT count(*) FROM cases", &[])
            .await?
            .get(0))
    }
}

/// How many history entries one transaction may write: the low bits of a feed position (see
/// [`insert_events`]). The relay's dispatch marks (at most a lease of tasks, one entry each) and
/// a case's edits stay far below it.
const FEED_ENTRIES_PER_TRANSACTION: i64 = 1 << 20;

/// Appends history entries (each with its case) in one statement, each with its feed position: the
/// writing transaction's id in the high bits and `*ordinal` (the entry's order among those the
/// transaction writes, advanced here) in the low 20. Positions are unique and never reused;
/// readers take only positions below the oldest transaction still running
/// (`PgStore::feed`), so a reader that has seen position N never later finds a committed entry
/// below N — without a lock shared by every writer (docs/storage.md, "Feed positions").
pub(super) async fn insert_events(
    tx: &Transaction<'_>,
    events: &[(&str, &CaseEvent)],
    at_ms: i64,
    ordinal: &mut i64,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    if *ordinal + events.len() as i64 > FEED_ENTRIES_PER_TRANSACTION {
        return Err(StoreError::Corrupt(format!(
            "one transaction may write at most {FEED_ENTRIES_PER_TRANSACTION} history entries"
        )));
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO case_events (case_number, seq, at_ms, kind, task_id, detail, feed_pos)
             SELECT u.case_number, u.seq, $1, u.kind, u.task_id, u.detail, (pg_current_xact_id()::text::bigint << 20) | u.ordinal
             FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])
               AS u(case_number, seq, kind, task_id, detail, ordinal)",
        )
        .await?;
    let cases: Vec<&str> = events.iter().map(|(c, _)| *c).collect();
    let seqs: Vec<i64> = events.iter().map(|(_, e)| e.seq).collect();
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind.as_str()).collect();
    let tasks: Vec<&str> = events.iter().map(|(_, e)| e.task_id.as_str()).collect();
    let details: Vec<&str> = events.iter().map(|(_, e)| e.detail.as_str()).collect();
    let ordinals: Vec<i64> = (*ordinal..*ordinal + events.len() as i64).collect();
    *ordinal += events.len() as i64;
    tx.execute(
        &statement,
        &[&at_ms, &cases, &seqs, &kinds, &tasks, &details, &ordinals],
    )
    .await?;
    Ok(())
}

/// The number of a case's last history entry.
const LAST_SEQ: &str = "SELECT coalesce(max(seq), 0) FROM case_events WHERE case_number = $1";

/// Writes a changed case record and appends the history entries the change made (feed
/// positions from `*ordinal`, see [`insert_events`]). The record is written only when its
/// encoding differs from `stored`, the bytes read under the row lock: a sweep that only moved a
/// task's clock rows leaves the case row alone.
async fn save_case(
    tx: &Transaction<'_>,
    case: &Case,
    stored: &[u8],
    events: &[CaseEvent],
    now_ms: i64,
    ordinal: &mut i64,
) -> Result<(), StoreError> {
    let body = prost::Message::encode_to_vec(case);
    if body != stored {
        let update = tx
            .prepare_cached(
                "UPDATE cases SET status = $1, body = $2, rectification_check_ms = $3 WHERE case_number = $4",
            )
            .await?;
        // The rectification's next check goes with the record it is derived from.
        let check = crate::evaluation::next_check_ms(case);
        tx.execute(&update, &[&case.status, &body, &check, &case.case_number])
            .await?;
    }
    let events: Vec<(&str, &CaseEvent)> = events
        .iter()
        .map(|e| (case.case_number.as_str(), e))
        .collect();
    insert_events(tx, &events, now_ms, ordinal).await
}
