//! Test harness: starts the real gateway (real gRPC server on `127.0.0.1:0`, real SQLite file
//! or real PostgreSQL schema of its own) and hands out a client.
//!
//! Every test process logs to the suite's log directory (`testkit::logfile`), which `make
//! test` scans for personal data: the harness's entry points ([`repo`], [`config`],
//! [`TestGateway::start_with`], [`connect`]) install the subscriber on their first call, and
//! child processes write to `testkit::child_log` or have their stderr kept with
//! `testkit::keep_stderr`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::Channel;
use yichuang::app::{Gateway, serve};
use yichuang::config::{GatewayConfig, StoreConfig};
use yichuang::proto::v1::Submission;
use yichuang::proto::v1::case_service_client::CaseServiceClient;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running gateway.
pub struct TestGateway {
    pub addr: std::net::SocketAddr,
    pub gateway: Arc<Gateway>,
    pub client: CaseServiceClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// The PostgreSQL schema of this gateway, dropped when it stops.
    schema: Option<String>,
    _dir: tempfile::TempDir,
}

pub use testkit::repo;
use testkit::{keep_stderr, logs};

/// Runs the `yichuang` binary from the repository root; its stderr is kept in the suite's log
/// directory.
pub fn yichuang(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yichuang"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("runs yichuang");
    keep_stderr("yichuang", &out);
    out
}

/// A child's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The PostgreSQL URL that `make test` provides.
pub fn pg_url() -> String {
    std::env::var("YICHUANG_TEST_PG_URL").expect(
        "YICHUANG_TEST_PG_URL is not set: run the suite with `make test`, which starts PostgreSQL and sets it",
    )
}

/// A schema name no other test uses.
pub fn unique_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A configuration for `backend` with its own database file or schema under `dir`.
pub fn config(backend: Backend, dir: &Path) -> GatewayConfig {
    let mut config = GatewayConfig {
        catalog_dir: repo().join("config/catalog"),
        calendar_dir: repo().join("config/calendar"),
        ..GatewayConfig::default()
    };
    config.server.max_message_bytes = 256 * 1024;
    // Intake tests need no broker; tests of the relay turn it on with their own prefix.
    config.bus.relay = false;
    // No SLA sweeper: these tests compare histories with exactly what they did. The legal
    // clock's alerts have tests of their own (src/clock.rs, adapters/tests/sla.rs).
    config.sla.sweep_secs = 0;
    config.store = match backend {
        Backend::Sqlite => StoreConfig::Sqlite {
            path: dir.join("yichuang.db"),
        },
        Backend::Postgres => StoreConfig::Postgres {
            url: pg_url(),
            schema: unique_schema("t"),
            pool_size: 8,
        },
    };
    config
}

impl TestGateway {
    pub async fn start(backend: Backend) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_with(config(backend, dir.path()), dir).await
    }

    pub async fn start_with(config: GatewayConfig, dir: tempfile::TempDir) -> TestGateway {
        Self::start_with_clock(config, dir, yichuang::clock::system_now()).await
    }

    /// [`TestGateway::start_with`] with the whole gateway on the clock `now`.
    pub async fn start_with_clock(
        config: GatewayConfig,
        dir: tempfile::TempDir,
        now: yichuang::clock::Now,
    ) -> TestGateway {
        logs();
        let schema = match &config.store {
            StoreConfig::Postgres { schema, .. } => Some(schema.clone()),
            StoreConfig::Sqlite { .. } => None,
        };
        let gateway = Arc::new(
            Gateway::with_clock(&config, now)
                .await
                .expect("gateway starts"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let gateway = gateway.clone();
            async move {
                serve(gateway, listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
            }
        });
        let client = connect(addr).await;
        TestGateway {
            addr,
            gateway,
            client,
            shutdown: Some(tx),
            server: Some(server),
            schema,
            _dir: dir,
        }
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        if let Some(schema) = self.schema.take() {
            drop_schema(&schema).await;
        }
    }
}

/// Drops a test's PostgreSQL schema.
pub async fn drop_schema(schema: &str) {
    let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop the test schema");
}

/// Connects to a gateway, retrying until a deadline.
pub async fn connect(addr: std::net::SocketAddr) -> CaseServiceClient<Channel> {
    logs();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match CaseServiceClient::connect(format!("http://{addr}")).await {
            Ok(c) => return c.max_decoding_message_size(64 * 1024 * 1024),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("cannot connect to {addr}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// One of the example submissions in `examples/cases/`, parsed from its canonical JSON.
pub fn example(name: &str) -> Submission {
    let path = repo().join("examples/cases").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a scenario on SQLite and on PostgreSQL, as two tests.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(super::common::Backend::Postgres).await
                }
            }
        )*
    };
}
