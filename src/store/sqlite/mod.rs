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
//!
//! This file owns the handle, opening (the lock file, migrations, the lease reset), the
//! writer thread and its queue, the checkpointer, and the `read`/`write` helpers the other
//! files run their statements with. The rest is by concern, with the same names in the PostgreSQL engine:
//! - `intake`: submissions (repeat checks, case numbers, the group commit of what intake decided);
//! - `cases`: a case and its history (the one edit path, reads, attempts, operator actions);
//! - `workers`: what the background workers ask (outbox and event claims, clocks, stalled tasks,
//!   the feed and its push cursors, backlogs).
//!
//! It never writes on a connection other than the writer's, and never decides anything about a
//! case: the rules run in `lifecycle` and `intake`, the SQL here only stores their outcome.

mod board;
mod cases;
mod hotline;
mod intake;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, migrate};
use intake::{Job, Prepare, Reply, commit_group, preparer_loop};

/// Largest number of submissions committed in one transaction.
const MAX_GROUP: usize = 512;

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

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
    /// Sent after each commit that wrote history (see [`crate::store::HistorySignal`]).
    pub(in crate::store) history: super::HistorySignal,
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
            history: Default::default(),
        })
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
