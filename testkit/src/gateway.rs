//! The real gateway in the test's process: a real gRPC server on `127.0.0.1:0`, over TLS with
//! client certificates of the kit's CA ([`crate::pki`]), on a real SQLite file or a PostgreSQL
//! schema of its own, with a client connected as the examples' hall.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic::transport::Channel;
use yichuang::app::{Gateway, serve};
use yichuang::config::{BusConfig, GatewayConfig, StoreConfig};
use yichuang::proto::v1::admin_service_client::AdminServiceClient;
use yichuang::proto::v1::case_service_client::CaseServiceClient;

use crate::db::{Schema, pg_url, unique_schema};
use crate::pki::Who;
use crate::{logs, repo, root};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A configuration for `backend` with its own database file or schema under `dir`: the shipped
/// acceptance list and calendar, no relay and no SLA sweeper.
pub fn config(backend: Backend, dir: &Path) -> GatewayConfig {
    let mut config = GatewayConfig {
        catalog_dir: repo().join("config/catalog"),
        calendar_dir: repo().join("config/calendar"),
        ..GatewayConfig::default()
    };
    config.hotline.classification = repo().join("config/hotline/classification.toml");
    secure(&mut config);
    config.server.max_message_bytes = 256 * 1024;
    // Intake tests need no broker; tests of the relay turn it on with their own prefix.
    config.bus.relay = false;
    // No SLA sweeper: these tests compare histories with exactly what they did. The legal
    // clock's alerts have tests of their own (src/clock.rs, adapters/tests/sla.rs).
    config.sla.sweep_secs = 0;
    // Suites drive one connection faster than a window would; tests/overload.rs sets rates.
    config.limits = config.limits.without_rates();
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

/// A gateway's settings as the adapter tests run it: the shipped acceptance list and calendar,
/// SQLite in `dir`, the relay and results consumer on `bus`.
pub fn with_bus(dir: &Path, bus: &BusConfig) -> GatewayConfig {
    on_store(
        StoreConfig::Sqlite {
            path: dir.join("gateway.db"),
        },
        bus,
    )
}

/// The settings of one of several gateway replicas on one PostgreSQL `schema` (a pool of 4
/// each): as [`with_bus`], each sweeping every second.
pub fn replica(schema: &Schema, bus: &BusConfig) -> GatewayConfig {
    let mut config = on_store(
        StoreConfig::Postgres {
            url: pg_url(),
            schema: schema.name.clone(),
            pool_size: 4,
        },
        bus,
    );
    config.sla.sweep_secs = 1;
    config
}

fn on_store(store: StoreConfig, bus: &BusConfig) -> GatewayConfig {
    let mut config = GatewayConfig {
        catalog_dir: root().join("config/catalog"),
        calendar_dir: root().join("config/calendar"),
        store,
        bus: bus.clone(),
        ..Default::default()
    };
    config.hotline.classification = root().join("config/hotline/classification.toml");
    config.bus.relay = true;
    secure(&mut config);
    config.limits = config.limits.without_rates();
    config
}

/// Makes `config` serve as a deployed gateway does, with the kit's certificates: TLS with
/// client certificates of the kit's CA, and the internal listener on a free port.
pub fn secure(config: &mut GatewayConfig) {
    let (cert, key) = crate::pki::server_files();
    config.server.tls = yichuang::config::TlsConfig {
        cert,
        key,
        client_ca: crate::pki::ca_file(),
    };
    config.server.admin_listen = "127.0.0.1:0".parse().expect("literal address");
    config.development.plaintext = false;
}

/// A gateway's gRPC server on a free local port, serving until it is stopped or dropped.
/// Installs no log subscriber: benchmarks use it.
pub struct Server {
    pub addr: SocketAddr,
    /// The internal listener (AdminService, reflection).
    pub admin_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(gateway: Arc<Gateway>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let admin_addr = gateway.admin_addr;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(gateway, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Server {
            addr,
            admin_addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server, waiting up to 10 s for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// A running gateway.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// `https://<addr>` (the certificate names `localhost` and `127.0.0.1`).
    pub endpoint: String,
    /// The internal listener (AdminService, reflection).
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub client: CaseServiceClient<Channel>,
    server: Server,
    /// The PostgreSQL schema of a gateway started with [`TestGateway::start_with`], dropped
    /// when it stops (or when the test fails).
    schema: Option<Schema>,
    _dir: Option<tempfile::TempDir>,
}

impl TestGateway {
    /// A gateway on `backend`, in a directory of its own.
    pub async fn start(backend: Backend) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_with(config(backend, dir.path()), dir).await
    }

    /// A gateway on `config`, whose files are in `dir`; it owns its PostgreSQL schema, if any.
    pub async fn start_with(config: GatewayConfig, dir: tempfile::TempDir) -> TestGateway {
        Self::start_with_clock(config, dir, yichuang::clock::system_now()).await
    }

    /// [`TestGateway::start_with`] with the whole gateway on the clock `now`.
    pub async fn start_with_clock(
        config: GatewayConfig,
        dir: tempfile::TempDir,
        now: yichuang::clock::Now,
    ) -> TestGateway {
        let schema = match &config.store {
            StoreConfig::Postgres { schema, .. } => Some(Schema::named(schema.clone())),
            StoreConfig::Sqlite { .. } => None,
        };
        let mut gw = Self::launch(&config, now).await;
        gw.schema = schema;
        gw._dir = Some(dir);
        gw
    }

    /// A gateway on `backend` whose relay publishes to `url` under a prefix of its own, and
    /// that bus.
    pub async fn relaying(backend: Backend, url: String) -> (TestGateway, BusConfig) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(backend, dir.path());
        config.bus = BusConfig {
            url,
            prefix: crate::broker::prefix(),
            relay: true,
            timeout_secs: 5,
            ..BusConfig::default()
        };
        let bus = config.bus.clone();
        (TestGateway::start_with(config, dir).await, bus)
    }

    /// A gateway (one replica of several, perhaps) on `config`, whose store the test owns.
    pub async fn serve(config: &GatewayConfig) -> TestGateway {
        Self::launch(config, yichuang::clock::system_now()).await
    }

    /// [`TestGateway::serve`] with the whole gateway on the clock `now`.
    pub async fn serve_with_clock(
        config: &GatewayConfig,
        now: yichuang::clock::Now,
    ) -> TestGateway {
        Self::launch(config, now).await
    }

    async fn launch(config: &GatewayConfig, now: yichuang::clock::Now) -> TestGateway {
        logs();
        let config = &with_department_users(config);
        let gateway = Arc::new(
            Gateway::with_clock(config, now)
                .await
                .expect("gateway starts"),
        );
        let server = Server::start(gateway.clone()).await;
        let addr = server.addr;
        let client = connect(addr).await;
        TestGateway {
            addr,
            endpoint: format!("https://{addr}"),
            admin_addr: server.admin_addr,
            gateway,
            client,
            server,
            schema: None,
            _dir: None,
        }
    }

    /// Stops the server, waiting up to 10 s for it, and drops the schema it owns.
    pub async fn stop(self) {
        self.server.stop().await;
        if let Some(schema) = self.schema {
            schema.drop_now().await;
        }
    }
}

/// A relaying gateway takes results only from the users `[bus.department_users]` lists. A test
/// that lists none (and does not turn the check off) gets every department of its catalog
/// mapped to the user of its bus URL: the user its adapters and harness publish as, so the check
/// stays on and passes for them. Tests of the check list their own users.
pub fn with_department_users(config: &GatewayConfig) -> GatewayConfig {
    let mut config = config.clone();
    if config.bus.relay
        && config.bus.department_users.is_empty()
        && !config.development.unchecked_results
        && let Ok(catalog) = yichuang::catalog::Catalog::load(&config.catalog_dir)
    {
        let user = yichuang::bus::user(&config.bus.url);
        config.bus.department_users = catalog
            .departments
            .keys()
            .map(|d| (d.clone(), user.clone()))
            .collect();
    }
    config
}

/// Connects to a gateway as the window system of the examples' hall, retrying until a
/// deadline.
pub async fn connect(addr: SocketAddr) -> CaseServiceClient<Channel> {
    CaseServiceClient::new(channel(addr, Some(&Who::examples_hall())).await)
        .max_decoding_message_size(64 * 1024 * 1024)
}

/// Connects to a gateway as `who` (`None`: with no client certificate).
pub async fn connect_as(addr: SocketAddr, who: Option<&Who>) -> CaseServiceClient<Channel> {
    CaseServiceClient::new(channel(addr, who).await).max_decoding_message_size(64 * 1024 * 1024)
}

/// The AdminService of a gateway (its internal listener), as an operator.
pub async fn admin(admin_addr: SocketAddr) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel(admin_addr, Some(&Who::Operator)).await)
}

/// A TLS channel to `addr` as `who`, retrying until a deadline.
pub async fn channel(addr: SocketAddr, who: Option<&Who>) -> Channel {
    logs();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .expect("an endpoint")
        .tls_config(crate::pki::client_tls(who))
        .expect("TLS settings");
    loop {
        match endpoint.connect().await {
            Ok(c) => return c,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("cannot connect to {addr}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Runs a scenario `async fn name(backend: Backend)` on SQLite and on PostgreSQL, as two tests
/// (`name::sqlite`, `name::postgres`).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::gateway::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::gateway::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Submits `submission` and returns its case number; panics when it is not accepted.
pub async fn accept(
    client: &mut CaseServiceClient<Channel>,
    submission: yichuang::proto::v1::Submission,
) -> String {
    use yichuang::proto::v1::{SubmitRequest, submit_response::Outcome};
    let answer = client
        .submit(SubmitRequest {
            submission: Some(submission),
        })
        .await
        .expect("Submit answers")
        .into_inner();
    match answer.outcome {
        Some(Outcome::Receipt(r)) => r.case_number,
        _ => panic!("not accepted: {answer:?}"),
    }
}
