//! The PostgreSQL engine, for several gateway replicas sharing one database. Each submission
//! is one transaction; a transaction-scoped advisory lock on the submission id serialises
//! concurrent repeats of the same submission across replicas, and the daily sequence row is
//! incremented under its row lock, so case numbers never repeat.

use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::{
    Attempt, CaseRows, Decision, Evaluated, Existing, ListQuery, OperatorAction, OutboxItem,
    StoreError, SubmitCommand, SubmitResult, attempt_detail, case_rows, decide, decode_case,
    dispatch_in_case, migrate, ms_to_timestamp, summary,
};
use crate::case::{self, MAX_DAILY_SEQUENCE};
use crate::proto::v1::{Case, CaseEvent, CaseSummary, TaskStatus};

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

/// Executes `sql` with a statement prepared once per connection (deadpool's cache), so a
/// submission costs one round trip per statement instead of two.
async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

const INSERT_ATTEMPT: &str = "INSERT INTO attempts (submission_id, at_ms, hall_code, window_code, clerk_staff_no, outcome, case_number, detail)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// True for a PostgreSQL name that can be used unquoted (a schema here, the exchange tables and
/// columns of the adapters' 前置库 kind): lower-case letters, digits and `_`, not starting with a
/// digit, at most 63 bytes.
pub fn plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

impl PgStore {
    /// Connects, creates `schema` if needed, and migrates it.
    pub async fn open(url: &str, schema: &str, pool_size: usize) -> Result<PgStore, StoreError> {
        if !plain_identifier(schema) {
            return Err(StoreError::Open(format!(
                "schema {schema:?} must be lower-case letters, digits and _ (at most 63)"
            )));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Open(format!("bad url: {e}")))?;
        config.options(format!("-c search_path={schema}"));
        config.application_name("yichuang");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(pool_err)?;
        let store = PgStore { pool };
        store.migrate(schema).await?;
        Ok(store)
    }

    async fn migrate(&self, schema: &str) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await?;
        // Replicas starting together migrate one at a time.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('yichuang-migrations', 0))",
            &[],
        )
        .await?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await?;
        tx.batch_execute(migrate::LEDGER).await?;
        for (version, sql) in migrate::POSTGRES {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await?;
            if done.is_some() {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| StoreError::Migration {
                    version: version.to_string(),
                    message: e.to_string(),
                })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now()::text)",
                &[version],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn replay(&self, a: &Attempt) -> Result<Option<SubmitResult>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let statement = client
            .prepare_cached("SELECT content_hash, outcome, case_number, response FROM submissions WHERE submission_id = $1")
            .await?;
        let existing = client
            .query_opt(&statement, &[&a.submission_id])
            .await?
            .map(existing_from);
        let (result, outcome, case_number) = match decide(existing, &a.content_hash)? {
            Decision::Fresh => return Ok(None),
            Decision::Replay(response) => (SubmitResult::Answer(response), "replayed", None),
            Decision::Conflict(number) => (
                SubmitResult::Conflict {
                    case_number: number.clone(),
                },
                "conflict",
                Some(number),
            ),
        };
        let statement = client.prepare_cached(INSERT_ATTEMPT).await?;
        client
            .execute(
                &statement,
                &[
                    &a.submission_id,
                    &a.at.timestamp_millis(),
                    &a.hall_code,
                    &a.window_code,
                    &a.clerk_staff_no,
                    &outcome,
                    &case_number,
                    &"",
                ],
            )
            .await?;
        Ok(Some(result))
    }

    pub(super) async fn submit(&self, c: SubmitCommand) -> Result<SubmitResult, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let mut rows = None;
        if let Evaluated::Accept(plan) = &c.evaluated {
            // The API asked `replay` first; a concurrent repeat found under the lock below
            // leaves this number unused.
            let prefix = case::number_prefix(
                &plan.lead_implementation_code,
                plan.accepted_at.date_naive(),
            );
            let seq = allocate(&mut client, &prefix).await?;
            if seq > i64::from(MAX_DAILY_SEQUENCE) {
                return Err(StoreError::SequenceExhausted {
                    prefix,
                    max: MAX_DAILY_SEQUENCE,
                });
            }
            rows = Some(case_rows(
                plan,
                &case::case_number(&prefix, seq as u32),
                &c.attempt,
            ));
        }
        let tx = client.transaction().await?;
        let result = record(&tx, &c, rows.as_ref()).await?;
        if rows.is_some() {
            assign_feed_positions(&tx).await?;
        }
        tx.commit().await?;
        Ok(result)
    }

    pub(super) async fn claim_ready(
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

    pub(super) async fn mark_dispatched(
        &self,
        task_ids: Vec<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await?;
        // Cases first, in order, then their task rows: the order every writer of a case takes
        // (a result recorded at the same moment locks the case, then the task), so the two
        // never deadlock.
        tx.execute(
            "SELECT 1 FROM cases WHERE case_number IN
               (SELECT case_number FROM tasks WHERE task_id = ANY($1))
             ORDER BY case_number FOR UPDATE",
            &[&task_ids],
        )
        .await?;
        let rows = tx
            .query(
                "UPDATE tasks SET status = $1, dispatched_at_ms = $2, progress_ms = $2, lease_until_ms = NULL, clock_dirty = 1
                 WHERE task_id = ANY($3) AND status = $4 RETURNING case_number, task_id",
                &[
                    &(TaskStatus::Dispatched as i32),
                    &now_ms,
                    &task_ids,
                    &(TaskStatus::Ready as i32),
                ],
            )
            .await?;
        let mut by_case: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in &rows {
            by_case.entry(r.get(0)).or_default().push(r.get(1));
        }
        for (case_number, ids) in by_case {
            // The case row is locked while its record and history change.
            let row = tx
                .query_one(
                    "SELECT body FROM cases WHERE case_number = $1 FOR UPDATE",
                    &[&case_number],
                )
                .await?;
            let mut case = decode_case(row.get::<_, &[u8]>(0))?;
            let last_seq = last_seq(&tx, &case_number).await?;
            let events = dispatch_in_case(&mut case, &ids, last_seq, now_ms);
            save_case(&tx, &case, &events, now_ms).await?;
        }
        assign_feed_positions(&tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn edit_case<T: Send + 'static>(
        &self,
        case_number: &str,
        now_ms: i64,
        edit: impl FnOnce(&mut Case, i64, pbjson_types::Timestamp) -> (Option<super::CaseChange>, T)
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

    pub(super) async fn claim_events(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<super::EventItem>, StoreError> {
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
            .map(|r| super::EventItem {
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

    pub(super) async fn mark_events_published(
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

    pub(super) async fn clock_candidates(
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

    pub(super) async fn on_time(
        &self,
        department: &str,
        item_code: &str,
        now_ms: i64,
    ) -> Result<Vec<super::OnTimeRow>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(super::ON_TIME_POSTGRES, &[&now_ms, &department, &item_code])
            .await?
            .iter()
            .map(|r| super::OnTimeRow {
                department: r.get(0),
                item_code: r.get(1),
                decided: r.get(2),
                on_time: r.get(3),
                open_overdue: r.get(4),
            })
            .collect())
    }

    pub(super) async fn sla_counts(
        &self,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(super::SLA_COUNTS, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    pub(super) async fn touch_progress(&self, task_id: &str, at_ms: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "UPDATE tasks SET progress_ms = $1 WHERE task_id = $2 AND (progress_ms IS NULL OR progress_ms < $1)",
                &[&at_ms, &task_id],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn stall_candidates(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::Silent>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query(
                super::STALL_CANDIDATES_POSTGRES,
                &[&before_ms, &(limit as i64)],
            )
            .await?
            .iter()
            .map(|r| super::Silent {
                case_number: r.get(0),
                task_id: r.get(1),
                department: r.get(2),
                since_ms: r.get(3),
            })
            .collect())
    }

    pub(super) async fn flag_repair(
        &self,
        task_id: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_opt(super::FLAG_REPAIR_POSTGRES, &[&task_id, &since_ms])
            .await?
            .map(|r| i64::from(r.get::<_, i32>(0))))
    }

    pub(super) async fn finish_repair(
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

    pub(super) async fn mark_open_clocks(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .execute(
                "UPDATE tasks SET clock_dirty = 1 WHERE clock_dirty = 0 AND (decided_ms IS NULL OR deadline_provisional = 1)",
                &[],
            )
            .await?)
    }

    pub(super) async fn provisional_open(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM tasks WHERE deadline_provisional = 1 AND decided_ms IS NULL",
                &[],
            )
            .await?
            .get(0))
    }

    pub(super) async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM tasks WHERE status = $1",
                &[&(TaskStatus::Ready as i32)],
            )
            .await?
            .get(0))
    }

    pub(super) async fn feed(
        &self,
        q: super::FeedQuery,
    ) -> Result<Vec<super::FeedItem>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let statement = client
            .prepare_cached(
                "SELECT e.feed_pos, e.case_number, c.hall_code, c.window_code, e.seq, e.at_ms, e.kind, e.task_id, e.detail
                 FROM case_events e JOIN cases c ON c.case_number = e.case_number
                 WHERE e.feed_pos > $1 AND ($2 = '' OR c.hall_code = $2) AND ($3 = '' OR c.window_code = $3)
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
            .map(|r| super::FeedItem {
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

    pub(super) async fn lease_push(
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

    pub(super) async fn advance_push(
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

    pub(super) async fn events_backlog(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM case_events WHERE published_at_ms IS NULL",
                &[],
            )
            .await?
            .get(0))
    }

    pub(super) async fn get_case(
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

    pub(super) async fn list_cases(
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

    pub(super) async fn case_of_task(&self, task_id: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_opt(
                "SELECT case_number FROM tasks WHERE task_id = $1",
                &[&task_id],
            )
            .await?
            .map(|r| r.get(0)))
    }

    pub(super) async fn attempt_count(&self, submission_id: &str) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM attempts WHERE submission_id = $1",
                &[&submission_id],
            )
            .await?
            .get(0))
    }

    pub(super) async fn record_operator_action(&self, a: OperatorAction) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "INSERT INTO operator_actions (at_ms, operator, origin, action, target, count, message_ids) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&a.at_ms, &a.operator, &a.origin, &a.action, &a.target, &(a.message_ids.len() as i32), &a.message_ids.join(" ")],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn operator_actions(
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

    pub(super) async fn case_count(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one("SELECT count(*) FROM cases", &[])
            .await?
            .get(0))
    }
}

/// Hands out the next daily sequence of `prefix` in a transaction of its own, so the row lock
/// is held for one statement rather than for a whole acceptance: concurrent acceptances of the
/// same item on the same day would otherwise queue behind each other's commits. Its commit
/// need not wait for the disk: a case that uses the number commits later in the same WAL, so
/// the number is durable whenever a case that carries it is; a number lost in a crash was
/// never given out.
async fn allocate(client: &mut deadpool_postgres::Object, prefix: &str) -> Result<i64, StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
        .await?;
    let seq = tx
        .query_one(
            "INSERT INTO case_numbers (prefix, last_seq) VALUES ($1, 1)
             ON CONFLICT (prefix) DO UPDATE SET last_seq = case_numbers.last_seq + 1 RETURNING last_seq",
            &[&prefix],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(seq)
}

fn existing_from(r: tokio_postgres::Row) -> Existing {
    Existing {
        content_hash: r.get(0),
        outcome: r.get(1),
        case_number: r.get(2),
        response: r.get(3),
    }
}

/// Records a submission in `tx`. `rows` are the case's rows when it is accepted (built with
/// its number before the transaction); a repeat found here leaves that number unused.
async fn record(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    rows: Option<&CaseRows>,
) -> Result<SubmitResult, StoreError> {
    exec(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&c.attempt.submission_id],
    )
    .await?;
    let existing = tx
        .query_opt(
            &tx.prepare_cached("SELECT content_hash, outcome, case_number, response FROM submissions WHERE submission_id = $1").await?,
            &[&c.attempt.submission_id],
        )
        .await?
        .map(existing_from);
    let at_ms = c.attempt.at.timestamp_millis();
    let audit = |outcome: &'static str, case_number: Option<String>, detail: String| async move {
        exec(
            tx,
            INSERT_ATTEMPT,
            &[
                &c.attempt.submission_id,
                &at_ms,
                &c.attempt.hall_code,
                &c.attempt.window_code,
                &c.attempt.clerk_staff_no,
                &outcome,
                &case_number,
                &detail,
            ],
        )
        .await
    };
    match decide(existing, &c.attempt.content_hash)? {
        Decision::Replay(response) => {
            audit("replayed", None, String::new()).await?;
            Ok(SubmitResult::Answer(response))
        }
        Decision::Conflict(case_number) => {
            audit("conflict", Some(case_number.clone()), String::new()).await?;
            Ok(SubmitResult::Conflict { case_number })
        }
        Decision::Fresh => match &c.evaluated {
            Evaluated::Deficient(notice) => {
                let response = case::notice_response(notice.clone());
                let bytes = prost::Message::encode_to_vec(&response);
                upsert_submission(tx, c, "deficient", None, &bytes).await?;
                audit("deficient", None, attempt_detail(notice)).await?;
                Ok(SubmitResult::Answer(response.into()))
            }
            Evaluated::Accept(_) => {
                let Some(rows) = rows else {
                    return Err(StoreError::Corrupt(
                        "an acceptance reached its transaction without its rows".into(),
                    ));
                };
                let number = &rows.accepted.case.case_number;
                insert_case(tx, c, number, rows).await?;
                upsert_submission(tx, c, "accepted", Some(number), &rows.response).await?;
                audit("accepted", Some(number.clone()), String::new()).await?;
                Ok(SubmitResult::Answer(Box::new(case::receipt_response(
                    rows.accepted.receipt.clone(),
                ))))
            }
        },
    }
}

async fn upsert_submission(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    outcome: &str,
    case_number: Option<&str>,
    response: &[u8],
) -> Result<(), StoreError> {
    let at_ms = c.attempt.at.timestamp_millis();
    exec(
        tx,
        "INSERT INTO submissions (submission_id, content_hash, outcome, case_number, response, first_at_ms, last_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (submission_id) DO UPDATE SET content_hash = excluded.content_hash, outcome = excluded.outcome,
           case_number = excluded.case_number, response = excluded.response, last_at_ms = excluded.last_at_ms",
        &[&c.attempt.submission_id, &&c.attempt.content_hash[..], &outcome, &case_number, &response, &at_ms],
    )
    .await?;
    Ok(())
}

async fn insert_case(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    number: &str,
    rows: &CaseRows,
) -> Result<(), StoreError> {
    let case = &rows.accepted.case;
    exec(
        tx,
        "INSERT INTO cases (case_number, submission_id, hall_code, window_code, status, accepted_at_ms, promised_deadline, item_codes, body, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[&number, &c.attempt.submission_id, &c.attempt.hall_code, &c.attempt.window_code, &case.status, &rows.accepted_at_ms,
          &case.promised_deadline, &rows.item_codes, &rows.body, &c.attempt.trace_id],
    )
    .await?;
    let task_stmt = tx
        .prepare_cached("INSERT INTO tasks (task_id, case_number, department, item_code, status, depends_on, body) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .await?;
    for t in &case.tasks {
        let body = prost::Message::encode_to_vec(t);
        tx.execute(
            &task_stmt,
            &[
                &t.task_id,
                &number,
                &t.department,
                &t.item_code,
                &t.status,
                &t.depends_on.join(","),
                &body,
            ],
        )
        .await?;
    }
    let event_stmt = tx
        .prepare_cached("INSERT INTO case_events (case_number, seq, at_ms, kind, task_id, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .await?;
    for e in &rows.accepted.events {
        tx.execute(
            &event_stmt,
            &[
                &number,
                &e.seq,
                &rows.accepted_at_ms,
                &e.kind,
                &e.task_id,
                &e.detail,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Gives the history entries this transaction wrote their feed positions, just before commit,
/// under a transaction-wide advisory lock: positions grow in commit order, so a feed reader that
/// has seen position N never later finds a committed entry below N.
async fn assign_feed_positions(tx: &Transaction<'_>) -> Result<(), StoreError> {
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
async fn last_seq(tx: &Transaction<'_>, case_number: &str) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM case_events WHERE case_number = $1",
            &[&case_number],
        )
        .await?
        .get(0))
}

/// Writes a changed case record and appends the history entries the change made.
async fn save_case(
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
