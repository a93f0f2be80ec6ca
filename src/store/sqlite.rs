//! The embedded SQLite engine, for one gateway node. One writer thread owns the write
//! connection and commits submissions in groups: every request waiting when a transaction
//! starts joins it, and all of them are answered after one durable commit (WAL,
//! `synchronous = FULL`, so an answered case survives power loss). If one submission of a
//! group fails, the group is retried one submission per transaction, so one failure never
//! takes its neighbours down.
//!
//! The writer is the only serial part, so everything else happens before it, in parallel:
//! the repeat check, the case number (allocated in memory from the stored last sequence; a
//! lock file keeps a second process off the database) and the encoded rows. Checkpoints run
//! on their own thread. Reads use separate connections, which WAL lets run alongside.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    Attempt, CaseRows, Decision, Evaluated, Existing, ListQuery, OperatorAction, OutboxItem,
    StoreError, SubmitCommand, SubmitResult, attempt_detail, case_rows, decide, decode_case,
    dispatch_in_case, migrate, ms_to_timestamp, summary,
};
use crate::case::{self, MAX_DAILY_SEQUENCE};
use crate::proto::v1::{Case, CaseEvent, CaseSummary, TaskStatus};

/// Largest number of submissions committed in one transaction.
const MAX_GROUP: usize = 512;

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The writer's answer to a job: `None` when an audit-only job found nothing to replay.
type Reply = oneshot::Sender<Result<Option<SubmitResult>, StoreError>>;

/// A question for the preparer thread: is this a repeat? If not, and `prefix` is given,
/// the next sequence of `prefix`.
struct Prepare {
    submission_id: String,
    content_hash: [u8; 32],
    prefix: Option<String>,
    reply: oneshot::Sender<Result<Prepared, StoreError>>,
}

/// The preparer's answer.
enum Prepared {
    /// A repeat or a conflict: answered (with its audit record) without recording anything new.
    Early,
    /// New: the allocated sequence, if one was asked for.
    Fresh(Option<u32>),
}

/// A submission on its way to the writer, with the work that could be done before.
struct Job {
    attempt: Attempt,
    /// Intake's verdict; `None` for a repeat that only needs its audit record.
    evaluated: Option<Evaluated>,
    /// For an acceptance: the allocated number's prefix and sequence, and the encoded rows.
    case: Option<(String, u32, CaseRows)>,
}

/// Handle to the SQLite store; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<WriterMsg>,
    /// The preparer thread: answers repeat checks and hands out case numbers from committed
    /// state while the writer is busy committing.
    preparer: mpsc::Sender<Prepare>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Held while the store is open: keeps a second process off the database.
    _lock: Arc<std::fs::File>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint journals stay in memory; a group's pages stay in cache until its commit.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(migrate::LEDGER)?;
    for (version, sql) in migrate::SQLITE {
        let done: Option<String> = conn
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| StoreError::Migration {
            version: version.to_string(),
            message: e.to_string(),
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, chrono::Utc::now().to_rfc3339()],
        )?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, migrates it and starts the writer thread.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Open(format!(
                "{} is in use by another gateway process (lock {}); SQLite serves one node, use PostgreSQL for several",
                path.display(),
                lock_path.display()
            )));
        }
        let path = path.to_path_buf();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = open_connection(&p)?;
            migrate(&mut conn)?;
            // Checkpoints run on their own thread, off the writer's path.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            // The lock file makes this the only process on the database: a lease still held
            // belongs to a relay that died, so its tasks are published again at once. The lease
            // runs out (0) rather than vanishing: that relay may have published them, so the new
            // publish is marked a copy (see `claim_ready`).
            conn.execute(
                "UPDATE tasks SET lease_until_ms = 0 WHERE lease_until_ms IS NOT NULL",
                [],
            )?;
            conn.execute(
                "UPDATE case_events SET lease_until_ms = NULL WHERE lease_until_ms IS NOT NULL",
                [],
            )?;
            conn.execute("UPDATE push_cursors SET lease_until_ms = 0", [])?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Open(e.to_string()))??;
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Open(e.to_string()))?;
        let (preparer, prepare_rx) = mpsc::channel(4 * MAX_GROUP);
        let prepare_conn = open_connection(&path)?;
        std::thread::Builder::new()
            .name("sqlite-prepare".into())
            .spawn(move || preparer_loop(prepare_conn, prepare_rx))
            .map_err(|e| StoreError::Open(e.to_string()))?;
        let lock = Arc::new(lock);
        let checkpoint_conn = open_connection(&path)?;
        let alive = Arc::downgrade(&lock);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, alive))
            .map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(SqliteStore {
            path,
            writer: tx,
            preparer,
            readers: Arc::new(Mutex::new(Vec::new())),
            _lock: lock,
        })
    }

    /// Asks the preparer, without waiting for a commit, whether `attempt` repeats an earlier one.
    async fn prepare(
        &self,
        attempt: &Attempt,
        prefix: Option<String>,
    ) -> Result<Prepared, StoreError> {
        let (reply, answer) = oneshot::channel();
        let msg = Prepare {
            submission_id: attempt.submission_id.clone(),
            content_hash: attempt.content_hash,
            prefix,
            reply,
        };
        self.preparer
            .send(msg)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a job in the next group commit.
    async fn record(&self, job: Job) -> Result<Option<SubmitResult>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriterMsg::Record(Box::new(job), reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn replay(
        &self,
        attempt: &Attempt,
    ) -> Result<Option<SubmitResult>, StoreError> {
        match self.prepare(attempt, None).await? {
            // The repeat's audit record is written with the next group.
            Prepared::Early => {
                self.record(Job {
                    attempt: attempt.clone(),
                    evaluated: None,
                    case: None,
                })
                .await
            }
            Prepared::Fresh(_) => Ok(None),
        }
    }

    pub(super) async fn submit(&self, command: SubmitCommand) -> Result<SubmitResult, StoreError> {
        let SubmitCommand { attempt, evaluated } = command;
        let mut case = None;
        if let Evaluated::Accept(plan) = &evaluated {
            // A repeat is answered before a number is spent on it; the rows are built here,
            // in parallel, so the writer only writes.
            let prefix = case::number_prefix(
                &plan.lead_implementation_code,
                plan.accepted_at.date_naive(),
            );
            let seq = match self.prepare(&attempt, Some(prefix.clone())).await? {
                Prepared::Early => {
                    let job = Job {
                        attempt,
                        evaluated: None,
                        case: None,
                    };
                    return self
                        .record(job)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("a repeat vanished".into()));
                }
                Prepared::Fresh(seq) => seq.unwrap_or_default(),
            };
            if seq > MAX_DAILY_SEQUENCE {
                return Err(StoreError::SequenceExhausted {
                    prefix,
                    max: MAX_DAILY_SEQUENCE,
                });
            }
            let rows = case_rows(plan, &case::case_number(&prefix, seq), &attempt);
            case = Some((prefix, seq, rows));
        }
        self.record(Job {
            attempt,
            evaluated: Some(evaluated),
            case,
        })
        .await?
        .ok_or_else(|| StoreError::Corrupt("a submission was not recorded".into()))
    }

    /// Runs `f` on the write connection, between group commits.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let work = Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        });
        self.writer
            .send(WriterMsg::Run(work))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn claim_ready(
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
                let case = match cases.get(&case_number) {
                    Some(case) => case.clone(),
                    None => {
                        let body: Vec<u8> = tx.prepare_cached("SELECT body FROM cases WHERE case_number = ?1")?.query_row([&case_number], |r| r.get(0))?;
                        let case = std::sync::Arc::new(decode_case(&body)?);
                        cases.insert(case_number, case.clone());
                        case
                    }
                };
                items.push(OutboxItem { task_id, department, case, repair, reclaimed });
            }
            tx.commit()?;
            Ok(items)
        })
        .await
    }

    pub(super) async fn mark_dispatched(
        &self,
        task_ids: Vec<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let mut by_case: HashMap<String, Vec<String>> = HashMap::new();
            for id in task_ids {
                let case_number: Option<String> = tx
                    .prepare_cached("UPDATE tasks SET status = ?1, dispatched_at_ms = ?2, progress_ms = ?2, lease_until_ms = NULL, clock_dirty = 1 WHERE task_id = ?3 AND status = ?4 RETURNING case_number")?
                    .query_row(params![TaskStatus::Dispatched as i32, now_ms, id, TaskStatus::Ready as i32], |r| r.get(0))
                    .optional()?;
                if let Some(case_number) = case_number {
                    by_case.entry(case_number).or_default().push(id);
                }
            }
            for (case_number, ids) in by_case {
                let body: Vec<u8> = tx.prepare_cached("SELECT body FROM cases WHERE case_number = ?1")?.query_row([&case_number], |r| r.get(0))?;
                let mut case = decode_case(&body)?;
                let last_seq = last_seq(&tx, &case_number)?;
                let events = dispatch_in_case(&mut case, &ids, last_seq, now_ms);
                save_case(&tx, &case, &events, now_ms)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(super) async fn edit_case<T: Send + 'static>(
        &self,
        case_number: &str,
        now_ms: i64,
        edit: impl FnOnce(&mut Case, i64, pbjson_types::Timestamp) -> (Option<super::CaseChange>, T)
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
            let mut case = decode_case(&body)?;
            let last_seq = last_seq(&tx, &case_number)?;
            let at = ms_to_timestamp(now_ms).unwrap_or_default();
            let (change, answer) = edit(&mut case, last_seq, at);
            let Some(change) = change else {
                return Ok(Some((decode_case(&body)?, answer)));
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
            save_case(&tx, &case, &change.events, now_ms)?;
            tx.commit()?;
            Ok(Some((case, answer)))
        })
        .await
    }

    pub(super) async fn claim_events(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<super::EventItem>, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let rows: Vec<(String, i64, i64, String, String, String)> = tx
                .prepare_cached(
                    "UPDATE case_events SET lease_until_ms = ?1 WHERE rowid IN (
                       SELECT rowid FROM case_events WHERE published_at_ms IS NULL AND (lease_until_ms IS NULL OR lease_until_ms < ?2)
                       ORDER BY rowid LIMIT ?3)
                     RETURNING case_number, seq, at_ms, kind, task_id, detail",
                )?
                .query_map(params![now_ms + lease_ms, now_ms, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut items = Vec::with_capacity(rows.len());
            for (case_number, seq, at_ms, kind, task_id, detail) in rows {
                let (hall_code, window_code, trace_id): (String, String, String) = tx
                    .prepare_cached("SELECT hall_code, window_code, trace_id FROM cases WHERE case_number = ?1")?
                    .query_row([&case_number], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                let event = CaseEvent { seq, at: ms_to_timestamp(at_ms), kind, task_id, detail };
                items.push(super::EventItem { case_number, hall_code, window_code, trace_id, event });
            }
            tx.commit()?;
            Ok(items)
        })
        .await
    }

    pub(super) async fn mark_events_published(
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

    pub(super) async fn clock_candidates(
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

    pub(super) async fn on_time(
        &self,
        department: &str,
        item_code: &str,
        now_ms: i64,
    ) -> Result<Vec<super::OnTimeRow>, StoreError> {
        let (department, item_code) = (department.to_string(), item_code.to_string());
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(super::ON_TIME_SQLITE)?
                .query_map(params![now_ms, department, item_code], |r| {
                    Ok(super::OnTimeRow {
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

    pub(super) async fn sla_counts(
        &self,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached(super::SLA_COUNTS)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(super) async fn touch_progress(&self, task_id: &str, at_ms: i64) -> Result<(), StoreError> {
        let task_id = task_id.to_string();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE tasks SET progress_ms = ?1 WHERE task_id = ?2 AND (progress_ms IS NULL OR progress_ms < ?1)")?
                .execute(params![at_ms, task_id])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn stall_candidates(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::Silent>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(super::STALL_CANDIDATES_SQLITE)?
                .query_map(params![before_ms, limit as i64], |r| {
                    Ok(super::Silent {
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

    pub(super) async fn flag_repair(
        &self,
        task_id: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let task_id = task_id.to_string();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(super::FLAG_REPAIR_SQLITE)?
                .query_row(params![task_id, since_ms], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    pub(super) async fn finish_repair(
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

    pub(super) async fn mark_open_clocks(&self) -> Result<u64, StoreError> {
        self.write(|conn| {
            Ok(conn.execute(
                "UPDATE tasks SET clock_dirty = 1 WHERE clock_dirty = 0 AND (decided_ms IS NULL OR deadline_provisional = 1)",
                [],
            )? as u64)
        })
        .await
    }

    pub(super) async fn provisional_open(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM tasks WHERE deadline_provisional = 1 AND decided_ms IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(super) async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM tasks WHERE status = ?1",
                [TaskStatus::Ready as i32],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub(super) async fn feed(
        &self,
        q: super::FeedQuery,
    ) -> Result<Vec<super::FeedItem>, StoreError> {
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
                        Ok(super::FeedItem {
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

    pub(super) async fn lease_push(
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

    pub(super) async fn advance_push(
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

    pub(super) async fn events_backlog(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM case_events WHERE published_at_ms IS NULL",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Runs `f` on a read connection in the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().expect("reader pool lock").pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&path)?,
            };
            let result = f(&conn);
            readers.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Open(e.to_string()))?
    }

    pub(super) async fn get_case(
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
            let case = decode_case(&body)?;
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

    pub(super) async fn list_cases(
        &self,
        q: ListQuery,
    ) -> Result<Vec<(i64, CaseSummary)>, StoreError> {
        self.read(move |conn| {
            let (after_ms, after_number) = q.after.clone().unwrap_or((i64::MAX, String::new()));
            let mut stmt = conn.prepare_cached(
                "SELECT accepted_at_ms, body FROM cases
                 WHERE (?1 IS NULL OR hall_code = ?1) AND (?2 IS NULL OR window_code = ?2)
                   AND (?3 IS NULL OR status = ?3)
                   AND (?4 IS NULL OR accepted_at_ms >= ?4) AND (?5 IS NULL OR accepted_at_ms < ?5)
                   AND (accepted_at_ms < ?6 OR (accepted_at_ms = ?6 AND (?7 = '' OR case_number < ?7)))
                 ORDER BY accepted_at_ms DESC, case_number DESC LIMIT ?8",
            )?;
            let rows = stmt.query_map(
                params![q.hall_code, q.window_code, q.status.map(|s| s as i32), q.from_ms, q.to_ms, after_ms, after_number, q.limit as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (ms, body) = row?;
                out.push((ms, summary(&decode_case(&body)?)));
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn case_of_task(&self, task_id: &str) -> Result<Option<String>, StoreError> {
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

    pub(super) async fn attempt_count(&self, submission_id: &str) -> Result<i64, StoreError> {
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

    pub(super) async fn record_operator_action(&self, a: OperatorAction) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO operator_actions (at_ms, operator, origin, action, target, count, message_ids) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![a.at_ms, a.operator, a.origin, a.action, a.target, a.message_ids.len() as i64, a.message_ids.join(" ")])?;
            Ok(())
        })
        .await
    }

    pub(super) async fn operator_actions(
        &self,
        limit: i64,
    ) -> Result<Vec<OperatorAction>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached("SELECT at_ms, operator, origin, action, target, message_ids FROM operator_actions ORDER BY id DESC LIMIT ?1")?
                .query_map([limit], |r| {
                    let ids: String = r.get(5)?;
                    Ok(OperatorAction {
                        at_ms: r.get(0)?,
                        operator: r.get(1)?,
                        origin: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        message_ids: ids.split_whitespace().map(str::to_string).collect(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(super) async fn case_count(&self) -> Result<i64, StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT count(*) FROM cases", [], |r| r.get(0))?))
            .await
    }
}

/// Hands out the next sequence of `prefix`, reading the stored last one the first time.
fn allocate(
    conn: &Connection,
    sequences: &mut HashMap<String, u32>,
    prefix: &str,
) -> Result<u32, StoreError> {
    let last = match sequences.get(prefix) {
        Some(last) => *last,
        None => conn
            .prepare_cached("SELECT last_seq FROM case_numbers WHERE prefix = ?1")?
            .query_row([prefix], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    };
    sequences.insert(prefix.to_string(), last + 1);
    Ok(last + 1)
}

fn prepare(
    conn: &Connection,
    sequences: &mut HashMap<String, u32>,
    id: &str,
    hash: &[u8; 32],
    prefix: Option<&str>,
) -> Result<Prepared, StoreError> {
    Ok(match decide(read_existing(conn, id)?, hash)? {
        Decision::Replay(_) | Decision::Conflict(_) => Prepared::Early,
        Decision::Fresh => {
            Prepared::Fresh(prefix.map(|p| allocate(conn, sequences, p)).transpose()?)
        }
    })
}

fn read_existing(db: &Connection, submission_id: &str) -> Result<Option<Existing>, StoreError> {
    Ok(db
        .prepare_cached("SELECT content_hash, outcome, case_number, response FROM submissions WHERE submission_id = ?1")?
        .query_row([submission_id], |r| {
            Ok(Existing { content_hash: r.get(0)?, outcome: r.get(1)?, case_number: r.get(2)?, response: r.get(3)? })
        })
        .optional()?)
}

/// Copies the WAL back into the database file while the store is open.
fn checkpoint_loop(conn: Connection, alive: Weak<std::fs::File>) {
    while alive.upgrade().is_some() {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "sqlite checkpoint failed");
        }
    }
}

/// Answers repeat checks and allocates case numbers on its own connection, from committed
/// state. A repeat whose first attempt is still in an uncommitted group is caught again by the
/// writer (its number is then left unused).
fn preparer_loop(conn: Connection, mut rx: mpsc::Receiver<Prepare>) {
    let mut sequences: HashMap<String, u32> = HashMap::new();
    while let Some(p) = rx.blocking_recv() {
        let answer = prepare(
            &conn,
            &mut sequences,
            &p.submission_id,
            &p.content_hash,
            p.prefix.as_deref(),
        );
        let _ = p.reply.send(answer);
    }
}

/// What the writer thread is asked to do.
enum WriterMsg {
    /// Record a submission in the next group commit.
    Record(Box<Job>, Reply),
    /// Run other work on the write connection (the outbox relay's claims and marks), between groups.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Owns the write connection: takes every queued submission, records them in one
/// transaction, commits once, then answers all of them.
fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriterMsg>) {
    let mut group: Vec<(Job, Reply)> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Record(job, reply) => group.push((*job, reply)),
                WriterMsg::Run(work) => work(&mut conn),
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if group.is_empty() {
            continue;
        }
        let results = commit_group(&mut conn, &group);
        for ((_, reply), result) in group.drain(..).zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// Records a group in one transaction. The fast path has no savepoints; if any submission
/// fails, the transaction is rolled back and each submission is recorded in its own
/// transaction, so one bad submission never takes its neighbours down.
fn commit_group(
    conn: &mut Connection,
    group: &[(Job, Reply)],
) -> Vec<Result<Option<SubmitResult>, StoreError>> {
    match record_all(conn, group.iter().map(|(job, _)| job)) {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(_) if group.len() > 1 => group
            .iter()
            .map(|(job, _)| record_all(conn, std::iter::once(job)).map(|mut r| r.remove(0)))
            .collect(),
        Err(e) => vec![Err(e)],
    }
}

/// Records submissions in one transaction, or none of them.
fn record_all<'a>(
    conn: &mut Connection,
    jobs: impl Iterator<Item = &'a Job>,
) -> Result<Vec<Option<SubmitResult>>, StoreError> {
    let tx = conn.transaction()?;
    // The highest sequence used per prefix, stored once per group.
    let mut last: HashMap<&str, u32> = HashMap::new();
    let mut results = Vec::new();
    for job in jobs {
        results.push(record(&tx, job)?);
        if let Some((prefix, seq, _)) = &job.case {
            let entry = last.entry(prefix.as_str()).or_default();
            *entry = (*entry).max(*seq);
        }
    }
    for (prefix, seq) in last {
        tx.prepare_cached(
            "INSERT INTO case_numbers (prefix, last_seq) VALUES (?1, ?2)
             ON CONFLICT (prefix) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        )?
        .execute(params![prefix, seq])?;
    }
    tx.commit()?;
    Ok(results)
}

/// Records one job. `None` when an audit-only job finds nothing to replay any more.
fn record(db: &Connection, job: &Job) -> Result<Option<SubmitResult>, StoreError> {
    let c = job;
    // Checked again here: a concurrent repeat may have been recorded since the early check
    // (its allocated number is then left unused).
    let existing = read_existing(db, &c.attempt.submission_id)?;
    let at_ms = c.attempt.at.timestamp_millis();
    let audit = |outcome: &str,
                 case_number: Option<&str>,
                 detail: &str|
     -> Result<(), StoreError> {
        db.prepare_cached(
            "INSERT INTO attempts (submission_id, at_ms, hall_code, window_code, clerk_staff_no, outcome, case_number, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![c.attempt.submission_id, at_ms, c.attempt.hall_code, c.attempt.window_code, c.attempt.clerk_staff_no, outcome, case_number, detail])?;
        Ok(())
    };
    match decide(existing, &c.attempt.content_hash)? {
        Decision::Replay(response) => {
            audit("replayed", None, "")?;
            Ok(Some(SubmitResult::Answer(response)))
        }
        Decision::Conflict(case_number) => {
            audit("conflict", Some(&case_number), "")?;
            Ok(Some(SubmitResult::Conflict { case_number }))
        }
        Decision::Fresh => match &c.evaluated {
            None => Ok(None),
            Some(Evaluated::Deficient(notice)) => {
                let response = case::notice_response(notice.clone());
                let bytes = prost::Message::encode_to_vec(&response);
                upsert_submission(db, c, "deficient", None, &bytes)?;
                audit("deficient", None, &attempt_detail(notice))?;
                Ok(Some(SubmitResult::Answer(response.into())))
            }
            Some(Evaluated::Accept(_)) => {
                let Some((_, _, rows)) = &job.case else {
                    return Err(StoreError::Corrupt(
                        "an acceptance reached the writer without its rows".into(),
                    ));
                };
                let number = &rows.accepted.case.case_number;
                insert_case(db, c, number, rows)?;
                upsert_submission(db, c, "accepted", Some(number), &rows.response)?;
                audit("accepted", Some(number), "")?;
                Ok(Some(SubmitResult::Answer(Box::new(
                    case::receipt_response(rows.accepted.receipt.clone()),
                ))))
            }
        },
    }
}

fn upsert_submission(
    db: &Connection,
    c: &Job,
    outcome: &str,
    case_number: Option<&str>,
    response: &[u8],
) -> Result<(), StoreError> {
    let at_ms = c.attempt.at.timestamp_millis();
    db.prepare_cached(
        "INSERT INTO submissions (submission_id, content_hash, outcome, case_number, response, first_at_ms, last_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (submission_id) DO UPDATE SET content_hash = excluded.content_hash, outcome = excluded.outcome,
           case_number = excluded.case_number, response = excluded.response, last_at_ms = excluded.last_at_ms",
    )?
    .execute(params![c.attempt.submission_id, &c.attempt.content_hash[..], outcome, case_number, response, at_ms])?;
    Ok(())
}

fn insert_case(db: &Connection, c: &Job, number: &str, rows: &CaseRows) -> Result<(), StoreError> {
    let case = &rows.accepted.case;
    db.prepare_cached(
        "INSERT INTO cases (case_number, submission_id, hall_code, window_code, status, accepted_at_ms, promised_deadline, item_codes, body, trace_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        number, c.attempt.submission_id, c.attempt.hall_code, c.attempt.window_code, case.status, rows.accepted_at_ms,
        case.promised_deadline, rows.item_codes, rows.body, c.attempt.trace_id
    ])?;
    let mut task_stmt = db.prepare_cached(
        "INSERT INTO tasks (task_id, case_number, department, item_code, status, depends_on, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for t in &case.tasks {
        task_stmt.execute(params![
            t.task_id,
            number,
            t.department,
            t.item_code,
            t.status,
            t.depends_on.join(","),
            prost::Message::encode_to_vec(t)
        ])?;
    }
    let mut event_stmt = db.prepare_cached(
        "INSERT INTO case_events (case_number, seq, at_ms, kind, task_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for e in &rows.accepted.events {
        event_stmt.execute(params![
            number,
            e.seq,
            rows.accepted_at_ms,
            e.kind,
            e.task_id,
            e.detail
        ])?;
    }
    Ok(())
}

/// The number of a case's last history entry.
fn last_seq(db: &Connection, case_number: &str) -> Result<i64, StoreError> {
    Ok(db
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM case_events WHERE case_number = ?1")?
        .query_row([case_number], |r| r.get(0))?)
}

/// Writes a changed case record and appends the history entries the change made.
fn save_case(
    db: &Connection,
    case: &Case,
    events: &[CaseEvent],
    now_ms: i64,
) -> Result<(), StoreError> {
    db.prepare_cached("UPDATE cases SET status = ?1, body = ?2 WHERE case_number = ?3")?
        .execute(params![
            case.status,
            prost::Message::encode_to_vec(case),
            case.case_number
        ])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_commit_durably_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("d.db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(
            sync, 2,
            "synchronous = FULL: a commit is on disk before its answer"
        );
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let _first = SqliteStore::open(&path).await.unwrap();
        let err = SqliteStore::open(&path)
            .await
            .err()
            .expect("the lock refuses a second opener");
        assert!(
            err.to_string()
                .contains("in use by another gateway process"),
            "{err}"
        );
    }
}
