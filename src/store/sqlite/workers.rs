//! What the gateway's background workers ask of the SQLite engine: the outbox relay's claims
//! and dispatch marks, the event publisher's claims and marks, the clock sweeper's candidates
//! and on-time and SLA counts, stalled-task repair, the ordered feed and its push cursors, and
//! the backlog gauges.
//!
//! Every write here goes through the writer thread between group commits. It never publishes
//! anything itself (the workers do, after a claim) and never changes a case's record: a
//! dispatch mark writes the task rows, the case's status column and its history entries, and
//! readers of the record apply the rows' marks (`cases::dispatch_marks`).

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::cases::{dispatch_marks, last_seq};
use crate::proto::v1::{Case, CaseEvent, CaseStatus, TaskStatus};
use crate::store::{
    EventItem, FLAG_REPAIR_SQLITE, FeedItem, FeedQuery, ON_TIME_SQLITE, OnTimeRow, OutboxItem,
    PushDead, SLA_COUNTS, STALL_CANDIDATES_SQLITE, Silent, StoreError, apply_dispatch_marks,
    decode_case, dispatched_event, ms_to_timestamp,
};

/// A task row marked dispatched: its rowid (the record's order of tasks), id, item and
/// department.
type Marked = (i64, String, String, String);

/// The relay's claim of the oldest unpublished history entries not leased to another relay:
/// ?1 the new lease's end, ?2 now, ?3 how many. Read through `case_events_unpublished_order`
/// (migration 0013), which holds the unpublished entries alone, in rowid order.
pub(super) const CLAIM_EVENTS: &str = "UPDATE case_events SET lease_until_ms = ?1 WHERE rowid IN (
       SELECT rowid FROM case_events INDEXED BY case_events_unpublished_order
       WHERE published_at_ms IS NULL AND (lease_until_ms IS NULL OR lease_until_ms < ?2)
       ORDER BY rowid LIMIT ?3)
     RETURNING case_number, seq, at_ms, kind, task_id, detail";

impl SqliteStore {
    pub(in crate::store) async fn claim_ready(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            // Read, then leased, in one write transaction (SQLite has one writer; its RETURNING
            // cannot show the lease a row had before).
            let claimed: Vec<(String, String, String, i64, bool)> = tx
                .prepare_cached(
                    "SELECT task_id, case_number, department, CASE WHEN repair_due = 1 THEN repairs ELSE 0 END, lease_until_ms IS NOT NULL
                     FROM tasks WHERE (status = ?1 OR repair_due = 1) AND (lease_until_ms IS NULL OR lease_until_ms < ?2)
                     ORDER BY rowid LIMIT ?3",
                )?
                .query_map(params![TaskStatus::Ready as i32, now_ms, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<Result<_, _>>()?;
            let mut lease = tx.prepare_cached("UPDATE tasks SET lease_until_ms = ?1 WHERE task_id = ?2")?;
            for (task_id, ..) in &claimed {
                lease.execute(params![now_ms + lease_ms, task_id])?;
            }
            drop(lease);
            let mut items = Vec::with_capacity(claimed.len());
            let mut cases: HashMap<String, std::sync::Arc<Case>> = HashMap::new();
            for (task_id, case_number, department, repair, reclaimed) in claimed {
                let mut case = match cases.get(&case_number) {
                    Some(case) => case.clone(),
                    None => {
                        let body: Vec<u8> = tx.prepare_cached("SELECT body FROM cases WHERE case_number = ?1")?.query_row([&case_number], |r| r.get(0))?;
                        let case = std::sync::Arc::new(decode_case(&body)?);
                        cases.insert(case_number.clone(), case.clone());
                        case
                    }
                };
                // A stalled task published again is dispatched in its row, perhaps not yet in
                // the record: its message says so, as it did when the record was rewritten.
                if repair > 0 {
                    apply_dispatch_marks(std::sync::Arc::make_mut(&mut case), &dispatch_marks(&tx, &case_number)?);
                }
                items.push(OutboxItem { task_id, department, case, repair, reclaimed });
            }
            tx.commit()?;
            Ok(items)
        })
        .await
    }

    /// Marks tasks dispatched in their rows and appends their `task-dispatched` entries; the
    /// case record is not rewritten (its readers apply the rows' marks with
    /// `apply_dispatch_marks`), only the case's status column moves to in-progress.
    pub(in crate::store) async fn mark_dispatched(
        &self,
        task_ids: Vec<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            // Per case, in the order of the first of its tasks.
            let mut by_case: Vec<(String, Vec<Marked>)> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut mark = tx.prepare_cached(
                "UPDATE tasks SET status = ?1, dispatched_at_ms = ?2, progress_ms = ?2, lease_until_ms = NULL, clock_dirty = 1
                 WHERE task_id = ?3 AND status = ?4 RETURNING case_number, rowid, item_code, department",
            )?;
            for id in task_ids {
                let marked: Option<(String, i64, String, String)> = mark
                    .query_row(params![TaskStatus::Dispatched as i32, now_ms, id, TaskStatus::Ready as i32], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                if let Some((case_number, rowid, item, department)) = marked {
                    let i = *index.entry(case_number.clone()).or_insert_with(|| {
                        by_case.push((case_number, Vec::new()));
                        by_case.len() - 1
                    });
                    by_case[i].1.push((rowid, id, item, department));
                }
            }
            drop(mark);
            let mut in_progress = tx.prepare_cached("UPDATE cases SET status = ?1 WHERE case_number = ?2 AND status = ?3")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO case_events (case_number, seq, at_ms, kind, task_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (case_number, mut tasks) in by_case {
                // The record's order of tasks (the rows were written in it).
                tasks.sort_unstable_by_key(|t| t.0);
                in_progress.execute(params![CaseStatus::InProgress as i32, case_number, CaseStatus::Accepted as i32])?;
                let last_seq = last_seq(&tx, &case_number)?;
                for (n, (_, task_id, item, department)) in tasks.iter().enumerate() {
                    let e = dispatched_event(last_seq + n as i64 + 1, now_ms, task_id, item, department);
                    insert.execute(params![case_number, e.seq, now_ms, e.kind, e.task_id, e.detail])?;
                }
            }
            drop((in_progress, insert));
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn claim_events(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<EventItem>, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let rows: Vec<(String, i64, i64, String, String, String)> = tx
                .prepare_cached(CLAIM_EVENTS)?
                .query_map(params![now_ms + lease_ms, now_ms, limit as i64], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            let mut items = Vec::with_capacity(rows.len());
            for (case_number, seq, at_ms, kind, task_id, detail) in rows {
                let (hall_code, window_code, trace_id): (String, String, String) = tx
                    .prepare_cached(
                        "SELECT hall_code, window_code, trace_id FROM cases WHERE case_number = ?1",
                    )?
                    .query_row([&case_number], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                let event = CaseEvent {
                    seq,
                    at: ms_to_timestamp(at_ms),
                    kind,
                    task_id,
                    detail,
                };
                items.push(EventItem {
                    case_number,
                    hall_code,
                    window_code,
                    trace_id,
                    event,
                });
            }
            tx.commit()?;
            Ok(items)
        })
        .await
    }

    pub(in crate::store) async fn mark_events_published(
        &self,
        keys: Vec<(String, i64)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            for (case_number, seq) in keys {
                tx.prepare_cached("UPDATE case_events SET published_at_ms = ?1, lease_until_ms = NULL WHERE case_number = ?2 AND seq = ?3")?
                    .execute(params![now_ms, case_number, seq])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn clock_candidates(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT case_number, task_id FROM tasks WHERE clock_dirty = 1
                     UNION SELECT case_number, task_id FROM tasks WHERE next_check_ms <= ?1
                     LIMIT ?2",
                )?
                .query_map(params![now_ms, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn on_time(
        &self,
        department: &str,
        item_code: &str,
        now_ms: i64,
    ) -> Result<Vec<OnTimeRow>, StoreError> {
        let (department, item_code) = (department.to_string(), item_code.to_string());
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(ON_TIME_SQLITE)?
                .query_map(params![now_ms, department, item_code], |r| {
                    Ok(OnTimeRow {
                        department: r.get(0)?,
                        item_code: r.get(1)?,
                        decided: r.get(2)?,
                        on_time: r.get(3)?,
                        open_overdue: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn sla_counts(
        &self,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached(SLA_COUNTS)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn touch_progress(
        &self,
        task_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let task_id = task_id.to_string();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE tasks SET progress_ms = ?1 WHERE task_id = ?2 AND (progress_ms IS NULL OR progress_ms < ?1)")?
                .execute(params![at_ms, task_id])?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn stall_candidates(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<Silent>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(STALL_CANDIDATES_SQLITE)?
                .query_map(params![before_ms, limit as i64], |r| {
                    Ok(Silent {
                        case_number: r.get(0)?,
                        task_id: r.get(1)?,
                        department: r.get(2)?,
                        since_ms: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn flag_repair(
        &self,
        task_id: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let task_id = task_id.to_string();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(FLAG_REPAIR_SQLITE)?
                .query_row(params![task_id, since_ms], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn finish_repair(
        &self,
        task_id: &str,
        at_ms: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let task_id = task_id.to_string();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached("UPDATE tasks SET repair_due = 0, progress_ms = ?1, lease_until_ms = NULL WHERE task_id = ?2 AND repair_due = 1 RETURNING case_number, repairs")?
                .query_row(params![at_ms, task_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn mark_open_clocks(&self) -> Result<u64, StoreError> {
        self.write(|conn| {
            Ok(conn.execute(
                "UPDATE tasks SET clock_dirty = 1 WHERE clock_dirty = 0 AND (decided_ms IS NULL OR deadline_provisional = 1)",
                [],
            )? as u64)
        })
        .await
    }

    pub(in crate::store) async fn provisional_open(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM tasks WHERE deadline_provisional = 1 AND decided_ms IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(in crate::store) async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM tasks WHERE status = ?1",
                [TaskStatus::Ready as i32],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(in crate::store) async fn feed(&self, q: FeedQuery) -> Result<Vec<FeedItem>, StoreError> {
        // The rowid is the position: the single writer appends in commit order.
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT e.rowid, e.case_number, c.hall_code, c.window_code, e.seq, e.at_ms, e.kind, e.task_id, e.detail
                 FROM case_events e JOIN cases c ON c.case_number = e.case_number
                 WHERE e.rowid > ?1 AND (?2 = '' OR c.hall_code = ?2) AND (?3 = '' OR c.window_code = ?3)
                   AND (?4 = '' OR e.case_number = ?4)
                 ORDER BY e.rowid LIMIT ?5",
            )?;
            let rows = statement
                .query_map(
                    params![q.after, q.hall_code, q.window_code, q.case_number, q.limit as i64],
                    |r| {
                        Ok(FeedItem {
                            position: r.get(0)?,
                            case_number: r.get(1)?,
                            hall_code: r.get(2)?,
                            window_code: r.get(3)?,
                            event: CaseEvent {
                                seq: r.get(4)?,
                                at: ms_to_timestamp(r.get(5)?),
                                kind: r.get(6)?,
                                task_id: r.get(7)?,
                                detail: r.get(8)?,
                            },
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn lease_push(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO push_cursors (name) VALUES (?1) ON CONFLICT DO NOTHING",
                [&name],
            )?;
            let position: Option<i64> = tx
                .query_row(
                    "UPDATE push_cursors SET owner = ?2, lease_until_ms = ?3
                     WHERE name = ?1 AND (owner = ?2 OR lease_until_ms < ?4) RETURNING position",
                    params![name, owner, now_ms + lease_ms, now_ms],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            Ok(position)
        })
        .await
    }

    pub(in crate::store) async fn advance_push(
        &self,
        name: &str,
        owner: &str,
        position: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE push_cursors SET position = ?3, lease_until_ms = ?4
                 WHERE name = ?1 AND owner = ?2 AND position < ?3",
                params![name, owner, position, until_ms],
            )? == 1)
        })
        .await
    }

    pub(in crate::store) async fn set_aside_push(
        &self,
        name: &str,
        owner: &str,
        dead: PushDead,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let moved = tx.execute(
                "UPDATE push_cursors SET position = ?3, lease_until_ms = ?4
                 WHERE name = ?1 AND owner = ?2 AND position < ?3",
                params![name, owner, dead.position, until_ms],
            )? == 1;
            if moved {
                tx.execute(
                    "INSERT INTO push_dead (name, position, event_id, status, reason, tries, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    params![
                        name,
                        dead.position,
                        dead.event_id,
                        dead.status,
                        dead.reason,
                        dead.tries,
                        dead.at_ms
                    ],
                )?;
            }
            tx.commit()?;
            Ok(moved)
        })
        .await
    }

    pub(in crate::store) async fn push_dead(
        &self,
        name: &str,
    ) -> Result<Vec<PushDead>, StoreError> {
        let name = name.to_string();
        self.read(move |conn| {
            let mut statement = conn.prepare(
                "SELECT position, event_id, status, reason, tries, at_ms FROM push_dead
                 WHERE name = ?1 ORDER BY position",
            )?;
            let rows = statement
                .query_map([&name], |r| {
                    Ok(PushDead {
                        position: r.get(0)?,
                        event_id: r.get(1)?,
                        status: r.get(2)?,
                        reason: r.get(3)?,
                        tries: r.get(4)?,
                        at_ms: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn events_backlog(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM case_events WHERE published_at_ms IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim reads the unpublished entries alone, in their order: through the partial index,
    /// with no sort and no walk over the published history (which made each claim's cost grow
    /// with the history: 60% of the gateway's CPU in the end-to-end benchmark).
    #[tokio::test]
    async fn the_events_claim_reads_only_unpublished_entries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let _store = SqliteStore::open(&path).await.unwrap();
        let conn = super::super::open_connection(&path).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CLAIM_EVENTS}"))
            .unwrap()
            .query_map(params![1, 1, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("USING INDEX case_events_unpublished_order")
                || plan.contains("USING COVERING INDEX case_events_unpublished_order"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
    }
}
