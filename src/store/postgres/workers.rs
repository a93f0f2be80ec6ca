//! What the gateway's background workers ask of the PostgreSQL engine: the outbox relay's claims
//! and dispatch marks, the event publisher's claims and marks, the clock sweeper's candidates
//! and on-time and SLA counts, stalled-task repair, the ordered feed and its push cursors, and
//! the backlog gauges.
//!
//! Claims take disjoint rows on every replica (`FOR UPDATE SKIP LOCKED`). It never publishes
//! anything itself (the workers do, after a claim) and never changes a case's record except
//! through the dispatch marks, with the history entries `dispatch_in_case` made.

use super::cases::insert_events;
use super::{PgStore, pool_err};
use crate::proto::v1::{Case, CaseEvent, TaskStatus};
use crate::store::{
    EventItem, FLAG_REPAIR_POSTGRES, FeedItem, FeedQuery, ON_TIME_POSTGRES, OnTimeRow, OutboxItem,
    PushDead, SLA_COUNTS, STALL_CANDIDATES_POSTGRES, Silent, StoreError, decode_case,
    dispatch_in_case, ms_to_timestamp,
};

impl PgStore {
    pub(in crate::store) async fn claim_ready(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        // SKIP LOCKED: replicas claiming at once take disjoint rows and both make progress.
        let statement = client
            .prepare_cached(
                "WITH ready AS (
                   SELECT task_id, lease_until_ms IS NOT NULL AS reclaimed FROM tasks
                   WHERE (status = $2 OR repair_due = 1) AND (lease_until_ms IS NULL OR lease_until_ms < $3)
                   ORDER BY task_id LIMIT $4 FOR UPDATE SKIP LOCKED)
                 UPDATE tasks t SET lease_until_ms = $1 FROM ready WHERE t.task_id = ready.task_id
                 RETURNING t.task_id, t.department, t.case_number, (SELECT body FROM cases c WHERE c.case_number = t.case_number),
                   CASE WHEN t.repair_due = 1 THEN t.repairs::BIGINT ELSE 0 END, ready.reclaimed",
            )
            .await?;
        let ready = TaskStatus::Ready as i32;
        let rows = client
            .query(
                &statement,
                &[&(now_ms + lease_ms), &ready, &now_ms, &(limit as i64)],
            )
            .await?;
        let mut cases: std::collections::HashMap<String, std::sync::Arc<Case>> = Default::default();
        rows.iter()
            .map(|r| {
                let case_number: String = r.get(2);
                let case = match cases.get(&case_number) {
                    Some(case) => case.clone(),
                    None => {
                        let case = std::sync::Arc::new(decode_case(r.get::<_, &[u8]>(3))?);
                        cases.insert(case_number, case.clone());
                        case
                    }
                };
                Ok(OutboxItem {
                    task_id: r.get(0),
                    department: r.get(1),
                    case,
                    repair: r.get(4),
                    reclaimed: r.get(5),
                })
            })
            .collect()
    }

    pub(in crate::store) async fn mark_dispatched(
        &self,
        task_ids: Vec<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await?;
        // Cases first, in order, then their task rows: the order every writer of a case takes
        // (a result recorded at the same moment locks the case, then the task), so the two
        // never deadlock. Then the locked records with their last history numbers. The three
        // are sent together and run in this order.
        let lock = tx
            .prepare_cached(
                "SELECT 1 FROM cases WHERE case_number IN
                   (SELECT case_number FROM tasks WHERE task_id = ANY($1))
                 ORDER BY case_number FOR UPDATE",
            )
            .await?;
        let mark = tx
            .prepare_cached(
                "UPDATE tasks SET status = $1, dispatched_at_ms = $2, progress_ms = $2, lease_until_ms = NULL, clock_dirty = 1
                 WHERE task_id = ANY($3) AND status = $4 RETURNING case_number, task_id",
            )
            .await?;
        let read = tx
            .prepare_cached(
                "SELECT c.case_number, c.body,
                   (SELECT coalesce(max(e.seq), 0) FROM case_events e WHERE e.case_number = c.case_number)
                 FROM cases c WHERE c.case_number IN (SELECT case_number FROM tasks WHERE task_id = ANY($1))",
            )
            .await?;
        let (dispatched, ready) = (TaskStatus::Dispatched as i32, TaskStatus::Ready as i32);
        let ids: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&task_ids];
        let marks: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&dispatched, &now_ms, &task_ids, &ready];
        let (_, marked, records) = tokio::try_join!(
            tx.execute(&lock, &ids),
            tx.query(&mark, &marks),
            tx.query(&read, &ids),
        )?;
        let mut by_case: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in &marked {
            by_case.entry(r.get(0)).or_default().push(r.get(1));
        }
        // Each case's record with the marks applied, and its new history entries.
        let mut changed: Vec<(String, i32, Vec<u8>)> = Vec::new();
        let mut events: Vec<(String, CaseEvent)> = Vec::new();
        for r in &records {
            let number: String = r.get(0);
            let Some(ids) = by_case.get(&number) else {
                continue;
            };
            let stored: &[u8] = r.get(1);
            let mut case = decode_case(stored)?;
            let new = dispatch_in_case(&mut case, ids, r.get(2), now_ms);
            let body = prost::Message::encode_to_vec(&case);
            if body != stored {
                changed.push((number.clone(), case.status, body));
            }
            events.extend(new.into_iter().map(|e| (number.clone(), e)));
        }
        let update = tx
            .prepare_cached(
                "UPDATE cases c SET status = u.status, body = u.body
                 FROM unnest($1::text[], $2::int[], $3::bytea[]) AS u(case_number, status, body)
                 WHERE c.case_number = u.case_number",
            )
            .await?;
        let numbers: Vec<&str> = changed.iter().map(|(n, _, _)| n.as_str()).collect();
        let statuses: Vec<i32> = changed.iter().map(|(_, s, _)| *s).collect();
        let bodies: Vec<&[u8]> = changed.iter().map(|(_, _, b)| b.as_slice()).collect();
        let entries: Vec<(&str, &CaseEvent)> =
            events.iter().map(|(n, e)| (n.as_str(), e)).collect();
        let mut ordinal = 0;
        tokio::try_join!(
            async {
                if !numbers.is_empty() {
                    tx.execute(&update, &[&numbers, &statuses, &bodies]).await?;
                }
                Ok::<_, StoreError>(())
            },
            insert_events(&tx, &entries, now_ms, &mut ordinal),
        )?;
        tx.commit().await?;
        Ok(())
    }
    pub(in crate::store) async fn claim_events(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<EventItem>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let statement = client
            .prepare_cached(
                "WITH pending AS (
                   SELECT case_number, seq FROM case_events
                   WHERE published_at_ms IS NULL AND (lease_until_ms IS NULL OR lease_until_ms < $2)
                   ORDER BY case_number, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
                 UPDATE case_events e SET lease_until_ms = $1 FROM pending
                 WHERE e.case_number = pending.case_number AND e.seq = pending.seq
                 RETURNING e.case_number, e.seq, e.at_ms, e.kind, e.task_id, e.detail,
                   (SELECT hall_code FROM cases c WHERE c.case_number = e.case_number),
                   (SELECT window_code FROM cases c WHERE c.case_number = e.case_number),
                   (SELECT trace_id FROM cases c WHERE c.case_number = e.case_number)",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[&(now_ms + lease_ms), &now_ms, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| EventItem {
                case_number: r.get(0),
                event: CaseEvent {
                    seq: r.get(1),
                    at: ms_to_timestamp(r.get(2)),
                    kind: r.get(3),
                    task_id: r.get(4),
                    detail: r.get(5),
                },
                hall_code: r.get(6),
                window_code: r.get(7),
                trace_id: r.get(8),
            })
            .collect())
    }

    pub(in crate::store) async fn mark_events_published(
        &self,
        keys: Vec<(String, i64)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let (cases, seqs): (Vec<String>, Vec<i64>) = keys.into_iter().unzip();
        client
            .execute(
                "UPDATE case_events e SET published_at_ms = $1, lease_until_ms = NULL
                 FROM unnest($2::text[], $3::bigint[]) AS k(case_number, seq)
                 WHERE e.case_number = k.case_number AND e.seq = k.seq",
                &[&now_ms, &cases, &seqs],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn clock_candidates(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(
                "SELECT case_number, task_id FROM tasks WHERE clock_dirty = 1
                 UNION SELECT case_number, task_id FROM tasks WHERE next_check_ms <= $1
                 LIMIT $2",
                &[&now_ms, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    pub(in crate::store) async fn on_time(
        &self,
        department: &str,
        item_code: &str,
        now_ms: i64,
    ) -> Result<Vec<OnTimeRow>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(ON_TIME_POSTGRES, &[&now_ms, &department, &item_code])
            .await?
            .iter()
            .map(|r| OnTimeRow {
                department: r.get(0),
                item_code: r.get(1),
                decided: r.get(2),
                on_time: r.get(3),
                open_overdue: r.get(4),
            })
            .collect())
    }

    pub(in crate::store) async fn sla_counts(
        &self,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(SLA_COUNTS, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    pub(in crate::store) async fn touch_progress(
        &self,
        task_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "UPDATE tasks SET progress_ms = $1 WHERE task_id = $2 AND (progress_ms IS NULL OR progress_ms < $1)",
                &[&at_ms, &task_id],
            )
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn stall_candidates(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<Silent>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(STALL_CANDIDATES_POSTGRES, &[&before_ms, &(limit as i64)])
            .await?
            .iter()
            .map(|r| Silent {
                case_number: r.get(0),
                task_id: r.get(1),
                department: r.get(2),
                since_ms: r.get(3),
            })
            .collect())
    }

    pub(in crate::store) async fn flag_repair(
        &self,
        task_id: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_opt(FLAG_REPAIR_POSTGRES, &[&task_id, &since_ms])
            .await?
            .map(|r| i64::from(r.get::<_, i32>(0))))
    }

    pub(in crate::store) async fn finish_repair(
        &self,
        task_id: &str,
        at_ms: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_opt(
                "UPDATE tasks SET repair_due = 0, progress_ms = $1, lease_until_ms = NULL WHERE task_id = $2 AND repair_due = 1 RETURNING case_number, repairs",
                &[&at_ms, &task_id],
            )
            .await?
            .map(|r| (r.get(0), i64::from(r.get::<_, i32>(1)))))
    }

    pub(in crate::store) async fn mark_open_clocks(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .execute(
                "UPDATE tasks SET clock_dirty = 1 WHERE clock_dirty = 0 AND (decided_ms IS NULL OR deadline_provisional = 1)",
                &[],
            )
            .await?)
    }

    pub(in crate::store) async fn provisional_open(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM tasks WHERE deadline_provisional = 1 AND decided_ms IS NULL",
                &[],
            )
            .await?
            .get(0))
    }

    pub(in crate::store) async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM tasks WHERE status = $1",
                &[&(TaskStatus::Ready as i32)],
            )
            .await?
            .get(0))
    }

    /// History after position `q.after`, in position order. Only entries below the oldest
    /// transaction still running are read: every entry that could ever be positioned before
    /// them has committed or rolled back, so the next read after the last position returned
    /// misses nothing (docs/storage.md, "Feed positions").
    pub(in crate::store) async fn feed(&self, q: FeedQuery) -> Result<Vec<FeedItem>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let statement = client
            .prepare_cached(
                "SELECT e.feed_pos, e.case_number, c.hall_code, c.window_code, e.seq, e.at_ms, e.kind, e.task_id, e.detail
                 FROM case_events e JOIN cases c ON c.case_number = e.case_number
                 WHERE e.feed_pos > $1
                   AND e.feed_pos < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)
                   AND ($2 = '' OR c.hall_code = $2) AND ($3 = '' OR c.window_code = $3)
                   AND ($4 = '' OR e.case_number = $4)
                 ORDER BY e.feed_pos LIMIT $5",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &q.after,
                    &q.hall_code,
                    &q.window_code,
                    &q.case_number,
                    &(q.limit as i64),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| FeedItem {
                position: r.get(0),
                case_number: r.get(1),
                hall_code: r.get(2),
                window_code: r.get(3),
                event: CaseEvent {
                    seq: r.get(4),
                    at: ms_to_timestamp(r.get(5)),
                    kind: r.get(6),
                    task_id: r.get(7),
                    detail: r.get(8),
                },
            })
            .collect())
    }

    pub(in crate::store) async fn lease_push(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO push_cursors (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&name],
            )
            .await?;
        Ok(client
            .query_opt(
                "UPDATE push_cursors SET owner = $2, lease_until_ms = $3
                 WHERE name = $1 AND (owner = $2 OR lease_until_ms < $4) RETURNING position",
                &[&name, &owner, &(now_ms + lease_ms), &now_ms],
            )
            .await?
            .map(|r| r.get(0)))
    }

    pub(in crate::store) async fn advance_push(
        &self,
        name: &str,
        owner: &str,
        position: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .execute(
                "UPDATE push_cursors SET position = $3, lease_until_ms = $4
                 WHERE name = $1 AND owner = $2 AND position < $3",
                &[&name, &owner, &position, &until_ms],
            )
            .await?
            == 1)
    }

    pub(in crate::store) async fn set_aside_push(
        &self,
        name: &str,
        owner: &str,
        dead: PushDead,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await?;
        let moved = tx
            .execute(
                "UPDATE push_cursors SET position = $3, lease_until_ms = $4
                 WHERE name = $1 AND owner = $2 AND position < $3",
                &[&name, &owner, &dead.position, &until_ms],
            )
            .await?
            == 1;
        if moved {
            tx.execute(
                "INSERT INTO push_dead (name, position, event_id, status, reason, tries, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &name,
                    &dead.position,
                    &dead.event_id,
                    &dead.status,
                    &dead.reason,
                    &dead.tries,
                    &dead.at_ms,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    pub(in crate::store) async fn push_dead(
        &self,
        name: &str,
    ) -> Result<Vec<PushDead>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(
                "SELECT position, event_id, status, reason, tries, at_ms FROM push_dead
                 WHERE name = $1 ORDER BY position",
                &[&name],
            )
            .await?
            .iter()
            .map(|r| PushDead {
                position: r.get(0),
                event_id: r.get(1),
                status: r.get(2),
                reason: r.get(3),
                tries: r.get(4),
                at_ms: r.get(5),
            })
            .collect())
    }

    pub(in crate::store) async fn events_backlog(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM case_events WHERE published_at_ms IS NULL",
                &[],
            )
            .await?
            .get(0))
    }
}
