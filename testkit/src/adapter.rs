//! An adapter runtime in the test's process, and the shipped department files with timings
//! for tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use yichuang::config::BusConfig;
use yichuang_adapters::config::{DepartmentConfig, SecretRef};
use yichuang_adapters::runtime::{self, Callbacks, Department, Readiness};

use crate::server::listener;
use crate::{logs, repo};

/// Material code → name from the shipped acceptance list, as the shipped `adapter.toml` gives
/// every department.
pub fn material_names() -> BTreeMap<String, String> {
    let config =
        yichuang_adapters::config::AdapterConfig::load(&repo().join("config/adapter.toml"))
            .expect("shipped adapter.toml");
    config.material_names().expect("the shipped catalog")
}

/// The shipped department file, with timings for tests (1 s polls and backoff, 1 s call
/// timeout), `endpoint`, and the catalog's material names.
pub fn department(code: &str, endpoint: &str) -> DepartmentConfig {
    department_in("config/departments", code, endpoint)
}

/// An example department file of `config/examples` (a system outside the acceptance list, such
/// as the simulators `json-header` and `sm4-gateway`), with the test timings of [`department`].
pub fn example(code: &str, endpoint: &str) -> DepartmentConfig {
    department_in("config/examples", code, endpoint)
}

fn department_in(dir: &str, code: &str, endpoint: &str) -> DepartmentConfig {
    let mut c = DepartmentConfig::load(&repo().join(dir), code, &yichuang_adapters::kinds::names())
        .expect("shipped file");
    c.material_names = material_names();
    c.endpoint = endpoint.to_string();
    c.limits.timeout_secs = 1;
    c.limits.requests_per_second = 50;
    c.limits.concurrency = 8;
    c.retry.initial_backoff_secs = 1;
    c.retry.max_backoff_secs = 4;
    c.retry.max_attempts = 30;
    // A breaker that opens in a test (a burst of timeouts on a loaded machine) waits seconds,
    // not the shipped 30 s and more: the tests' deadlines are for the work, not the breaker.
    c.breaker.open_secs = 1;
    c.breaker.max_open_secs = 2;
    c.polling.interval_secs = 1;
    c.maintenance.clear();
    c
}

/// 市场监管's department file pointed at a simulated HTTP/JSON system at `endpoint`, with the
/// simulator's client credentials in files under `dir`.
pub fn scjg(dir: &tempfile::TempDir, endpoint: &str) -> DepartmentConfig {
    let mut c = department("scjg", endpoint);
    c.credentials
        .insert("client_id".into(), secret_file(dir, "scjg-id", "yichuang"));
    c.credentials.insert(
        "client_secret".into(),
        secret_file(dir, "scjg-secret", "sim-secret"),
    );
    c
}

/// Writes a secret to a file of its own and refers to it (tests cannot set environment
/// variables safely while other tests run).
pub fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretRef {
    let path = dir.path().join(name);
    std::fs::write(&path, value).unwrap();
    SecretRef::File(path)
}

/// 市场监管's simulated HTTP/JSON system on a free port, deciding `decision_delay_ms` after a
/// submission, never refusing and never asking for materials; its address.
pub async fn scjg_sim(decision_delay_ms: u64) -> String {
    let (l, endpoint) = listener().await;
    let sim = yichuang_sim::http_json::HttpJsonSim::new(yichuang_sim::http_json::Settings {
        behaviour: yichuang_sim::core::Behaviour {
            department: "scjg".into(),
            decision_delay_ms,
            reject: 0.0,
            supplement: 0.0,
            ..Default::default()
        },
        ..Default::default()
    });
    tokio::spawn(sim.serve(l));
    endpoint
}

/// An adapter runtime in this process, with its HTTP endpoint.
pub struct Adapter {
    pub task: tokio::task::JoinHandle<()>,
    pub http: std::net::SocketAddr,
    /// The callbacks listener (`POST /callback/<department>`).
    pub callbacks: std::net::SocketAddr,
    pub readiness: Arc<Readiness>,
}

impl Adapter {
    /// Starts the runtime for `departments` on `bus`, and waits until it is connected.
    pub async fn start(bus: &BusConfig, departments: Vec<DepartmentConfig>) -> Adapter {
        logs();
        let departments: Vec<Arc<Department>> = departments
            .into_iter()
            .map(|c| Arc::new(yichuang_adapters::kinds::department(c).expect("builds")))
            .collect();
        let readiness = Arc::new(Readiness::default());
        let callbacks = Callbacks::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let app = yichuang_adapters::http::router(departments.clone(), readiness.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callbacks_addr = listener.local_addr().unwrap();
        let app = yichuang_adapters::http::callbacks_router(departments.clone(), callbacks.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let task = tokio::spawn(runtime::run(
            bus.clone(),
            departments,
            readiness.clone(),
            callbacks,
        ));
        crate::until("the adapter connects", Duration::from_secs(20), || {
            let ready = readiness.get();
            async move { ready }
        })
        .await;
        Adapter {
            task,
            http,
            callbacks: callbacks_addr,
            readiness,
        }
    }
}
