//! The PostgreSQL engine, for several gateway replicas sharing one database. Each submission
//! is one transaction. A new acceptance inserts its idempotency record with its rows, so the
//! unique key serialises concurrent repeats of the same submission across replicas; a repeat,
//! a conflict or a corrected deficient attempt takes a transaction-scoped advisory lock on the
//! submission id instead. The daily sequence row is incremented under its row lock, so case
//! numbers never repeat. History entries carry feed positions that need no lock shared by
//! writers (docs/storage.md, "Feed positions").
//!
//! This file owns the handle, connecting (the pool, the schema's name) and migrations, and
//! `plain_identifier`, which the adapters use too. The rest is by concern, with the same
//! names in the SQLite engine:
//! - `intake`: submissions (a new acceptance in one round trip, repeat checks under the
//!   advisory lock, case numbers, the transaction that records what intake decided);
//! - `cases`: a case and its history (the one edit path, feed positions, reads, attempts,
//!   operator actions);
//! - `workers`: what the background workers ask (outbox and event claims, clocks, stalled tasks,
//!   the feed and its push cursors, backlogs).
//!
//! It never holds state of its own between calls (every replica sees the same rows) and never
//! decides anything about a case: the rules run in `lifecycle` and `intake`, the SQL here only
//! stores their outcome.

mod board;
mod cases;
mod hotline;
mod intake;
mod workers;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::{StoreError, migrate};

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Sent after each commit of this process that wrote history (see
    /// [`crate::store::HistorySignal`]); other replicas' commits are not seen by it.
    pub(in crate::store) history: super::HistorySignal,
}

/// With the causes: a connection the pool could not make says why (a TLS handshake's reason is
/// in the error's source).
fn pool_err(e: impl std::error::Error + 'static) -> StoreError {
    StoreError::Pool(crate::tls::with_causes(&e))
}

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
        // `sslmode` and `sslrootcert` as libpq reads them (`crate::tls::postgres`).
        let target = crate::tls::postgres(url).map_err(|e| StoreError::Open(e.to_string()))?;
        let mut config = target.config;
        config.options(format!("-c search_path={schema}"));
        config.application_name("yichuang");
        let manager = Manager::from_config(
            config,
            target.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(pool_err)?;
        let store = PgStore {
            pool,
            history: Default::default(),
        };
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
}
