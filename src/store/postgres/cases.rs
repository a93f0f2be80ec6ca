//! A case and its history in the PostgreSQL engine: `edit_case` (the one path by which a stored
//! case changes: lock the case row, edit in memory, write the record, its task rows and new
//! history in one transaction), feed positions for new history, the reads of cases, tasks and
//! attempts, and the operator's audit log. `last_seq`, `save_case` and `assign_feed_positions`
//! are shared with `intake` and the outbox's dispatch marks in `workers`.
//!
//! It never decides what a change is (the caller's `edit` does, with `lifecycle`'s rules) and
//! never writes a submission or allocates a case number (that is `intake`).

use deadpool_postgres::Transaction;

use super::{PgStore, pool_err};
use crate::proto::v1::{Case, CaseEvent, CaseSummary};
use crate::store::{
    AccessRecord, CaseChange, ListQuery, OperatorAction, StoreError, decode_case, ms_to_timestamp,
    summary,
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
        let Some(row) = tx
            .query_opt(
                "SELECT body FROM cases WHERE case_number = $1 FOR UPDATE",
                &[&case_number],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut case = decode_case(row.get::<_, &[u8]>(0))?;
        let last_seq = last_seq(&tx, case_number).await?;
        let at = ms_to_timestamp(now_ms).unwrap_or_default();
        let (change, answer) = edit(&mut case, last_seq, at);
        let Some(change) = change else {
            return Ok(Some((decode_case(row.get::<_, &[u8]>(0))?, answer)));
        };
        for (task_id, status) in &change.tasks {
            tx.execute(
                "UPDATE tasks SET status = $1, lease_until_ms = NULL, clock_dirty = 1 WHERE task_id = $2 AND case_number = $3",
                &[&(*status as i32), task_id, &case_number],
            )
            .await?;
        }
        for c in &change.clocks {
            tx.execute(
                "UPDATE tasks SET clock_dirty = 0, next_check_ms = $1, due_ms = $2, decided_ms = $3, deadline_provisional = $4 WHERE task_id = $5 AND case_number = $6",
                &[&c.next_check_ms, &c.due_ms, &c.decided_ms, &i16::from(c.provisional), &c.task_id, &case_number],
            )
            .await?;
        }
        save_case(&tx, &case, &change.events, now_ms).await?;
        // No history entry, no feed position to assign: the feed lock is not taken.
        if !change.events.is_empty() {
            assign_feed_positions(&tx).await?;
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
                "INSERT INTO operator_actions (at_ms, operator, origin, action, target, count, message_ids) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&a.at_ms, &a.operator, &a.origin, &a.action, &a.target, &(a.message_ids.len() as i32), &a.message_ids.join(" ")],
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
        limit: i64,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT at_ms, caller, role, hall, method, outcome, target, reason FROM access_log ORDER BY id DESC LIMIT $1",
                &[&limit],
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
                "SELECT at_ms, operator, origin, action, target, message_ids FROM operator_actions ORDER BY id DESC LIMIT $1",
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
            })
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

/// Gives the history entries this transaction wrote their feed positions, just before commit,
/// under a transaction-wide advisory lock: positions grow in commit order, so a feed reader that
/// has seen position N never later finds a committed entry below N.
pub(super) async fn assign_feed_positions(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FEED_LOCK])
        .await?;
    tx.execute(
        "UPDATE case_events e SET feed_pos = b.base + t.n
         FROM (SELECT coalesce(max(feed_pos), 0) AS base FROM case_events) b,
              (SELECT case_number, seq, row_number() OVER (ORDER BY case_number, seq) AS n
               FROM case_events WHERE feed_pos IS NULL) t
         WHERE e.case_number = t.case_number AND e.seq = t.seq",
        &[],
    )
    .await?;
    Ok(())
}

/// The advisory lock key that orders feed positions (any constant no other lock uses).
const FEED_LOCK: i64 = 0x7969_6368_6665_6564; // "yichfeed"

/// The number of a case's last history entry.
pub(super) async fn last_seq(tx: &Transaction<'_>, case_number: &str) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM case_events WHERE case_number = $1",
            &[&case_number],
        )
        .await?
        .get(0))
}

/// Writes a changed case record and appends the history entries the change made.
pub(super) async fn save_case(
    tx: &Transaction<'_>,
    case: &Case,
    events: &[CaseEvent],
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE cases SET status = $1, body = $2 WHERE case_number = $3",
        &[
            &case.status,
            &prost::Message::encode_to_vec(case),
            &case.case_number,
        ],
    )
    .await?;
    let insert = tx
        .prepare_cached("INSERT INTO case_events (case_number, seq, at_ms, kind, task_id, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .await?;
    for e in events {
        tx.execute(
            &insert,
            &[
                &case.case_number,
                &e.seq,
                &now_ms,
                &e.kind,
                &e.task_id,
                &e.detail,
            ],
        )
        .await?;
    }
    Ok(())
}
