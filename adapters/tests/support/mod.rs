//! Shared by the adapter tests: a broker harness that publishes tasks as the gateway does and
//! reads what the adapters publish, the shipped department files with test timings, and an
//! adapter runtime started in-process.
//!
//! Every test process logs to the suite's log directory (`testkit::logfile`), which `make
//! test` scans for personal data: [`repo`], [`bus`], [`Harness::open`] and [`Adapter::start`]
//! install the subscriber on their first call, and child processes write to
//! `testkit::child_log` or have their stderr kept with `testkit::keep_stderr`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use prost::Message;
use yichuang::bus::{Names, Topology};
use yichuang::config::BusConfig;
use yichuang::proto::v1::{
    FileRef, Material, MaterialForm, ResultKind, ResultMessage, Submission, SupplementDelivery,
    Task, TaskMessage, TaskStatus,
};
use yichuang_adapters::config::{DepartmentConfig, SecretRef};
use yichuang_adapters::runtime::{self, Callbacks, Department, Readiness};

use testkit::logs;
pub use testkit::repo;

pub fn amqp_url() -> String {
    std::env::var("YICHUANG_TEST_AMQP_URL").expect(
        "YICHUANG_TEST_AMQP_URL is not set: run the suite with `make test`, which starts RabbitMQ and sets it",
    )
}

/// A bus of its own for one test: a fresh prefix and short delay queues (1, 2, 4 s).
pub fn bus() -> BusConfig {
    logs();
    let mut bus: BusConfig = toml::from_str("").unwrap();
    bus.url = amqp_url();
    bus.prefix = format!("a{}", uuid::Uuid::new_v4().simple());
    bus.retry_delays_secs = vec![1, 2, 4];
    bus.timeout_secs = 5;
    bus
}

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
    let mut c = DepartmentConfig::load(
        &repo().join("config/departments"),
        code,
        &yichuang_adapters::kinds::names(),
    )
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

/// A listener on a free local port and its `http://` address.
pub async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    (l, endpoint)
}

/// Writes a secret to a file of its own and refers to it (tests cannot set environment
/// variables safely while other tests run).
pub fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretRef {
    let path = dir.path().join(name);
    std::fs::write(&path, value).unwrap();
    SecretRef::File(path)
}

/// An adapter runtime in this process, with its HTTP endpoint.
pub struct Adapter {
    pub task: tokio::task::JoinHandle<()>,
    pub http: std::net::SocketAddr,
    pub readiness: Arc<Readiness>,
}

impl Adapter {
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
        let app = yichuang_adapters::http::router(
            departments.clone(),
            readiness.clone(),
            callbacks.clone(),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let task = tokio::spawn(runtime::run(
            bus.clone(),
            departments,
            readiness.clone(),
            callbacks,
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !readiness.get() {
            assert!(Instant::now() < deadline, "the adapter connects");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Adapter {
            task,
            http,
            readiness,
        }
    }
}

/// A task message as the gateway's relay sends it: item `item` of department `department`,
/// for the kai-canguan applicant, task id `<case>-NN`.
pub fn task(department: &str, item: &str, n: usize) -> TaskMessage {
    let submission: Submission = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/cases/kai-canguan.json")).unwrap(),
    )
    .unwrap();
    let case_number = format!("1164010001013301854{:012}{:010}", 0, n);
    TaskMessage {
        task: Some(Task {
            task_id: format!("{case_number}-01"),
            item_code: item.into(),
            item_name: format!("{item} 事项"),
            department: department.into(),
            implementation_code: "11640100010133018540011A000012".into(),
            status: TaskStatus::Dispatched as i32,
            ..Default::default()
        }),
        case_number,
        accepted_at: Some(pbjson_types::Timestamp {
            seconds: 1_571_625_000,
            nanos: 0,
        }),
        hall_code: submission.hall_code.clone(),
        window_code: submission.window_code.clone(),
        submission: Some(submission),
        prerequisites: Vec::new(),
        supplement: None,
    }
}

/// What the simulators ask for in a supplement request: exact names of the catalog's PMT and
/// ZSZM, in the order they give them.
pub const REQUESTED: [&str; 2] = ["经营场所平面图及设备布局图", "住所（经营场所）使用证明"];

/// The task message the gateway publishes when `task` resumes after its first supplement: the
/// department's case number from `ACCEPTED`, `supplement_round = 1`, and the supplement — the
/// floor plan the applicant brought at intake and the lease handed in now, for `requested`.
pub fn resumed(
    task: &TaskMessage,
    department_case_number: &str,
    requested: &[String],
) -> TaskMessage {
    let mut m = task.clone();
    let lease = Material {
        material_code: "ZSZM".into(),
        form: MaterialForm::Electronic as i32,
        copies: 1,
        file: Some(FileRef {
            uri: "s3://yichuang-materials/2019/10/28/zszm-8.pdf".into(),
            sha256: "9f".repeat(32),
            size_bytes: 48_213,
            media_type: "application/pdf".into(),
        }),
    };
    let submission = m.submission.as_mut().expect("a submission");
    submission.materials.push(lease);
    let materials: Vec<Material> = ["PMT", "ZSZM"]
        .iter()
        .map(|code| {
            submission
                .materials
                .iter()
                .find(|x| x.material_code == *code)
                .expect("the material in the submission")
                .clone()
        })
        .collect();
    let t = m.task.as_mut().unwrap();
    t.department_case_number = department_case_number.to_string();
    t.supplement_round = 1;
    t.materials_requested = requested.to_vec();
    t.status = TaskStatus::Dispatched as i32;
    m.supplement = Some(SupplementDelivery {
        round: 1,
        materials,
        requested: requested.to_vec(),
    });
    m
}

/// One task through a supplement round trip at a department whose system asks for a
/// supplement first: publishes it, waits for the request, and publishes the round-1 message
/// the gateway would — twice, as a copy may come. Returns what was read before and after the
/// round-1 message (until its outcome, and a little more), and that message.
pub async fn supplement_round_trip(
    harness: &Harness,
    task: &TaskMessage,
    within: Duration,
) -> (Vec<Got>, Vec<Got>, TaskMessage) {
    let id = task.task.as_ref().unwrap().task_id.clone();
    harness.publish(task).await;
    let first = harness
        .results_until(within, Duration::from_millis(300), |g| {
            g.result.task_id == id && g.kind() == ResultKind::Supplement
        })
        .await;
    let accepted = first
        .iter()
        .find(|g| g.kind() == ResultKind::Accepted)
        .expect("accepted before the supplement request");
    let asked = first
        .iter()
        .find(|g| g.kind() == ResultKind::Supplement)
        .unwrap();
    let again = resumed(
        task,
        &accepted.result.department_case_number,
        &asked.result.materials,
    );
    harness.publish(&again).await;
    harness.publish(&again).await;
    let second = harness
        .results_until(within, Duration::from_millis(1500), |g| {
            g.result.task_id == id && g.result.round == 1 && g.is_final()
        })
        .await;
    (first, second, again)
}

/// Checks a supplement round trip of one task: `first` (round 0) was accepted once and asked
/// for a supplement; `second` (everything read after the round-1 message) ends with one
/// approval of round 1 with the same case number, carries no second `ACCEPTED`, and every
/// result of round 1 has `round = 1` and a `message_id` ending in `:s1`. Returns the approval.
pub fn assert_supplement_round_trip(id: &str, first: &[Got], second: &[Got]) -> Got {
    let mine = |g: &&Got| g.result.task_id == id;
    let accepted: Vec<&Got> = first
        .iter()
        .filter(mine)
        .filter(|g| g.kind() == ResultKind::Accepted)
        .collect();
    assert!(
        !accepted.is_empty(),
        "{id}: accepted in round 0: {first:#?}"
    );
    let asked = first
        .iter()
        .filter(mine)
        .find(|g| g.kind() == ResultKind::Supplement)
        .expect("a supplement request in round 0");
    assert_eq!(asked.result.round, 0);
    assert_eq!(asked.message_id, format!("{id}:supplement"));
    let number = accepted[0].result.department_case_number.clone();
    let earlier: std::collections::HashSet<&str> =
        first.iter().map(|g| g.message_id.as_str()).collect();
    for g in second.iter().filter(mine) {
        if g.result.round == 0 {
            // Only a late copy of something round 0 published already.
            assert!(
                earlier.contains(g.message_id.as_str()),
                "{id}: a round-0 result after the supplement: {g:#?}"
            );
            continue;
        }
        assert_eq!(g.result.round, 1, "{g:#?}");
        assert!(g.message_id.ends_with(":s1"), "{g:#?}");
        assert_ne!(
            g.kind(),
            ResultKind::Accepted,
            "{id}: accepted again: {g:#?}"
        );
        assert_ne!(g.kind(), ResultKind::Failed, "{id}: {g:#?}");
    }
    let finals: std::collections::HashSet<&str> = second
        .iter()
        .filter(mine)
        .filter(|g| g.result.round == 1 && g.is_final())
        .map(|g| g.message_id.as_str())
        .collect();
    assert_eq!(
        finals,
        [format!("{id}:approved:s1").as_str()].into(),
        "{id}: one outcome of round 1: {second:#?}"
    );
    let approved = second
        .iter()
        .find(|g| g.message_id == format!("{id}:approved:s1"))
        .unwrap()
        .clone();
    assert_eq!(approved.result.department_case_number, number);
    assert_eq!(
        approved.routing_key,
        format!("{}.approved", approved.result.department)
    );
    approved
}

/// The task ids of task messages.
pub fn task_ids(tasks: &[TaskMessage]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t.task.as_ref().unwrap().task_id.clone())
        .collect()
}

/// A result read from the gateway's results queue.
#[derive(Debug, Clone)]
pub struct Got {
    pub message_id: String,
    /// The publisher's RabbitMQ user, validated by the broker.
    pub user_id: String,
    pub routing_key: String,
    pub result: ResultMessage,
}

impl Got {
    pub fn kind(&self) -> ResultKind {
        ResultKind::try_from(self.result.kind).unwrap()
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self.kind(),
            ResultKind::Approved
                | ResultKind::Rejected
                | ResultKind::Supplement
                | ResultKind::Failed
        )
    }
}

/// The broker as the gateway sees it.
pub struct Harness {
    pub bus: BusConfig,
    pub names: Names,
    pub connection: Connection,
    pub channel: Channel,
    pub topology: Topology,
}

impl Harness {
    pub async fn open(bus: &BusConfig, departments: &[&str]) -> Harness {
        logs();
        let connection = yichuang::bus::connect(bus).await.expect("RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        let codes: Vec<String> = departments.iter().map(|d| d.to_string()).collect();
        let topology = Topology::for_departments(&codes, bus);
        topology
            .declare(&channel, Duration::from_secs(10))
            .await
            .unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Harness {
            bus: bus.clone(),
            names: Names::new(&bus.prefix),
            connection,
            channel,
            topology,
        }
    }

    /// Publishes a task as the gateway's relay does.
    pub async fn publish(&self, task: &TaskMessage) {
        let t = task.task.as_ref().unwrap();
        let mut headers = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(v.into());
        headers.insert(ShortString::from("case-id"), text(&task.case_number));
        headers.insert(ShortString::from("task-id"), text(&t.task_id));
        headers.insert(ShortString::from("department"), text(&t.department));
        headers.insert(ShortString::from("attempt"), AMQPValue::LongInt(1));
        headers.insert(
            ShortString::from("traceparent"),
            text(&yichuang::trace::traceparent("")),
        );
        // As the gateway names it: `:s<round>` once a supplement resumed the task.
        let message_id = if t.supplement_round > 0 {
            format!("{}:s{}", t.task_id, t.supplement_round)
        } else {
            t.task_id.clone()
        };
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_content_type(yichuang::outbox::TASK_CONTENT_TYPE.into())
            .with_headers(headers);
        self.raw(&t.department, &task.encode_to_vec(), properties)
            .await;
    }

    /// Publishes any body to a department's queue.
    pub async fn raw(&self, department: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                self.names.tasks_exchange().as_str().into(),
                department.into(),
                Default::default(),
                body,
                properties,
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack());
    }

    /// Reads results until every one of `task_ids` has a final result, or the deadline.
    pub async fn results_for(
        &self,
        task_ids: &[String],
        within: Duration,
    ) -> HashMap<String, Vec<Got>> {
        let mut got: HashMap<String, Vec<Got>> = HashMap::new();
        let deadline = Instant::now() + within;
        loop {
            let finished = task_ids
                .iter()
                .filter(|id| got.get(*id).is_some_and(|g| g.iter().any(Got::is_final)))
                .count();
            if finished == task_ids.len() {
                // Anything already queued behind (a duplicate) is read too.
                while let Some(g) = self.next_result().await {
                    got.entry(g.result.task_id.clone()).or_default().push(g);
                }
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {finished} of {} tasks have a final result within {within:?}",
                task_ids.len()
            );
            match self.next_result().await {
                Some(g) => got.entry(g.result.task_id.clone()).or_default().push(g),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Reads results until one satisfies `done`, or the deadline; then whatever arrives in
    /// the next `settle` too (copies, stragglers).
    pub async fn results_until(
        &self,
        within: Duration,
        settle: Duration,
        done: impl Fn(&Got) -> bool,
    ) -> Vec<Got> {
        let mut got = Vec::new();
        let deadline = Instant::now() + within;
        while !got.iter().any(&done) {
            assert!(
                Instant::now() < deadline,
                "no awaited result within {within:?}; got {got:#?}"
            );
            match self.next_result().await {
                Some(g) => got.push(g),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let until = Instant::now() + settle;
        while Instant::now() < until {
            match self.next_result().await {
                Some(g) => got.push(g),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        got
    }

    async fn next_result(&self) -> Option<Got> {
        let m = self
            .channel
            .basic_get(
                self.names.results_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()?;
        Some(Got {
            message_id: m
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            routing_key: m.delivery.routing_key.to_string(),
            user_id: m
                .delivery
                .properties
                .user_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            result: ResultMessage::decode(m.delivery.data.as_slice()).expect("a ResultMessage"),
        })
    }

    /// The next dead letter of a department, with its headers, waiting up to `within`.
    pub async fn dead_letter(
        &self,
        department: &str,
        within: Duration,
    ) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
        let deadline = Instant::now() + within;
        loop {
            let got = self
                .channel
                .basic_get(
                    self.names.dead_queue(department).as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap();
            if let Some(m) = got {
                let headers = m
                    .delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(|h| {
                        h.inner()
                            .iter()
                            .filter_map(|(k, v)| match v {
                                AMQPValue::LongString(s) => Some((k.to_string(), s.to_string())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                return Some((headers, m.delivery.data.to_vec()));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn remove(self) {
        // A gateway's relay under this prefix applied its policies; they go with the queues.
        let _ = yichuang::bus::policy::remove(&self.bus).await;
        // A gateway's relay under this prefix declared every department of the acceptance list,
        // not only this harness's: those go too, so no test leaves queues on the broker.
        let catalog = yichuang::catalog::Catalog::load(&repo().join("config/catalog"))
            .expect("the shipped catalog");
        let everything = Topology::for_catalog(&catalog, &self.bus);
        for q in self.topology.queues.iter().chain(&everything.queues) {
            let _ = self
                .channel
                .queue_delete(q.name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for e in &self.topology.exchanges {
            let _ = self
                .channel
                .exchange_delete(e.name.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Checks the results of tasks: each has exactly one final outcome (copies share one
/// `message_id`), an `ACCEPTED` before it unless the department refused the task, and the
/// department's case number on its outcome.
pub fn assert_one_outcome_each(results: &HashMap<String, Vec<Got>>, task_ids: &[String]) {
    for id in task_ids {
        let got = &results[id];
        let finals: std::collections::HashSet<&str> = got
            .iter()
            .filter(|g| g.is_final())
            .map(|g| g.message_id.as_str())
            .collect();
        assert_eq!(finals.len(), 1, "{id}: one outcome, got {got:#?}");
        let outcome = got.iter().find(|g| g.is_final()).unwrap();
        assert_eq!(
            outcome.user_id,
            yichuang::bus::user(&amqp_url()),
            "{id}: results carry the adapter's validated RabbitMQ user"
        );
        if outcome.kind() != ResultKind::Failed {
            assert!(
                got.iter().any(|g| g.kind() == ResultKind::Accepted),
                "{id}: accepted first: {got:#?}"
            );
            assert!(
                !outcome.result.department_case_number.is_empty(),
                "{id}: the department's case number: {outcome:#?}"
            );
        }
    }
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

/// A gateway's settings for a test: the shipped acceptance list and calendar, SQLite in `dir`,
/// the relay and results consumer on `bus`.
pub fn gateway_config(dir: &std::path::Path, bus: &BusConfig) -> yichuang::config::GatewayConfig {
    let root = repo();
    let mut config = yichuang::config::GatewayConfig {
        catalog_dir: root.join("config/catalog"),
        calendar_dir: root.join("config/calendar"),
        store: yichuang::config::StoreConfig::Sqlite {
            path: dir.join("gateway.db"),
        },
        bus: bus.clone(),
        ..Default::default()
    };
    config.bus.relay = true;
    config
}

/// A gateway serving gRPC on a free port, with a connected client.
pub struct Serving {
    pub gateway: Arc<yichuang::app::Gateway>,
    pub endpoint: String,
    pub client:
        yichuang::proto::v1::case_service_client::CaseServiceClient<tonic::transport::Channel>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Serving {
    pub async fn start(config: &yichuang::config::GatewayConfig) -> Serving {
        let gateway = Arc::new(yichuang::app::Gateway::from_config(config).await.unwrap());
        let (l, endpoint) = listener().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(yichuang::app::serve(gateway.clone(), l, async {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            if let Ok(c) = yichuang::proto::v1::case_service_client::CaseServiceClient::connect(
                endpoint.clone(),
            )
            .await
            {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway answers at {endpoint}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Serving {
            gateway,
            endpoint,
            client,
            stop,
            server,
        }
    }

    /// Stops the server, waiting up to 10 s for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }
}
