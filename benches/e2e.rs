//! End to end: cases through the real binaries, from the window's `Submit` to the last result
//! visible in the window's feed, against the raw hops they cross, in one run.
//!
//! The flow is what `scripts/demo.sh` starts, with the bench's own prefix and store:
//! `yichuang serve` (gRPC over TLS with client certificates of the test kit's CA, SQLite — or
//! PostgreSQL with `YICHUANG_BENCH_STORE=postgres`, in a schema of the run's own, with
//! `YICHUANG_BENCH_REPLICAS` gateways on it), its outbox relay publishing to quorum queues under a
//! prefix of the run's own, one `yichuang-adapter` process for four departments and their
//! simulated systems (`yichuang-sim`: scjg HTTP/JSON, sw form-POST XML, ga and xf SOAP) deciding
//! at once (`decision_delay_ms: 0`, never refusing, never asking for materials), results back to
//! the gateway, and `WindowFeed` showing each case's `case-ready-for-delivery`. The 前置库
//! departments (rs, zrzy) and the clerk's worklist (gjj) are left out: their pace is a table
//! scan's tick and a person's, not the gateway's.
//!
//! The cases are a mix of the examples: 企业设立登记 alone (1 task), 开餐馆 (2 tasks, in
//! parallel), and 企业开办 with 设立, 刻章 and 税务 (3 tasks, two after the first), each a
//! distinct application. The load is open loop: cases are offered at a fixed rate whatever the
//! answers, and each case's latency is counted from when it was due (not when it was sent), so
//! a late send counts against it (coordinated omission).
//!
//! 1. Raw hops: a lapin publish (with confirm) and consume on a quorum queue, messages of the
//!    sizes the flow sends, for messages/s and one at a time for latency; the empty gRPC handler
//!    (`support/empty.rs`) over the same mTLS, one call at a time.
//! 2. The ramp: the rate doubles from `YICHUANG_BENCH_RATE` (default 8 cases/s) until a step no
//!    longer keeps up (a call shed or failed, its cases not all done within 3 s of the step's
//!    end, or p99 above 5× the first step's), then once at 1.5× the last that did; max is the
//!    highest offered rate that kept up.
//! 3. Half of max (latency), then twice max (goodput, the gateway's and adapter's RSS).
//!
//! It prints the ratios against their goals (issue 17), the CPU per case of each component from
//! /proc (gateway, adapter, the broker's `beam.smp`, PostgreSQL's processes) and its split into
//! a fixed part and a marginal one per case (from the two phases), and writes
//! `target/bench/e2e.svg` (latency against load). `YICHUANG_BENCH_SECS` is the length of the
//! measured phases (default 12 s; ramp steps are half that). Needs RabbitMQ and PostgreSQL
//! (`make bench-e2e`), and the `yichuang-adapter` and `yichuang-sim` binaries next to
//! `yichuang` (the make target builds them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use prost::Message;
use testkit::broker::Broker;
use testkit::db::Schema;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use yichuang::config::BusConfig;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::submit_response::Outcome;
use yichuang::proto::v1::{
    PreCheckRequest, ResultDocument, ResultKind, ResultMessage, Submission, SubmitRequest,
    WindowFeedRequest,
};

#[path = "support/empty.rs"]
mod empty;
#[path = "support/procfs.rs"]
mod procfs;
use procfs::{cpu_secs, reset_peak, status_kb};

/// The departments the flow runs, each with its simulator's kind.
const DEPARTMENTS: [(&str, &str); 4] = [
    ("scjg", "http-json"),
    ("sw", "form-xml"),
    ("ga", "soap"),
    ("xf", "soap"),
];

/// The hall of the examples (the client certificate's).
const HALL: &str = "640100-DT01";

/// One kind of case of the mix.
struct Template {
    name: &'static str,
    submission: Submission,
    tasks: u32,
    /// Tasks one after the other on the way to the last result (bus round trips: 2 each).
    stages: u32,
}

fn mix() -> Vec<Template> {
    let qiye = testkit::example("qiye-kaiban");
    let with_items = |codes: &[&str]| {
        let mut s = qiye.clone();
        s.items.retain(|i| codes.contains(&i.item_code.as_str()));
        s
    };
    vec![
        Template {
            name: "企业设立登记 (QY-SL)",
            submission: with_items(&["QY-SL"]),
            tasks: 1,
            stages: 1,
        },
        Template {
            name: "开餐馆 (SP-JY, XF-JC)",
            submission: testkit::example("kai-canguan"),
            tasks: 2,
            stages: 1,
        },
        Template {
            name: "企业开办 (QY-SL, then GZ-KZ and SW-XB)",
            submission: with_items(&["QY-SL", "GZ-KZ", "SW-XB"]),
            tasks: 3,
            stages: 2,
        },
    ]
}

/// The n-th case of the run: the mix in turn, a distinct id, submitted now (a day earlier every
/// 4,000 cases, so the daily sequence of case numbers never runs out).
fn nth(mix: &[Template], run: &str, n: u64) -> Submission {
    let mut s = mix[n as usize % mix.len()].submission.clone();
    s.submission_id = format!("{run}-{n}");
    let now = chrono::Utc::now().timestamp() - 60;
    s.submitted_at = Some(pbjson_types::Timestamp {
        seconds: now - (n / 4000) as i64 * 86_400,
        nanos: 0,
    });
    s
}

/// A child process of the bench (a gateway, the adapter, a simulator), its output in a file;
/// killed when dropped.
struct Proc {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, command: &mut std::process::Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starts {name}: {e}"));
        Proc {
            name: name.into(),
            child,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the end of its log if it has exited.
    fn alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{} exited ({status}):\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binaries of the workspace, next to `yichuang` (the bench profile's directory).
fn binary(name: &str) -> PathBuf {
    let yichuang = PathBuf::from(env!("CARGO_BIN_EXE_yichuang"));
    if name == "yichuang" {
        return yichuang;
    }
    let path = yichuang.parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --release -p yichuang-adapters -p yichuang-sim --bins`; `make bench-e2e` does)",
        path.display()
    );
    path
}

/// A department file as shipped, with the bench's pace: polls every second, no maintenance
/// window, and no request-rate limit worth the name (the legacy systems' limits are theirs, not
/// the gateway's: 3–5 requests a second would be the whole measurement).
fn department_file(code: &str) -> String {
    let text = std::fs::read_to_string(
        testkit::root()
            .join("config/departments")
            .join(format!("{code}.yaml")),
    )
    .unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let line = if trimmed.starts_with("interval_secs:") {
            format!("{indent}interval_secs: 1")
        } else if trimmed.starts_with("requests_per_second:") {
            format!("{indent}requests_per_second: 100000")
        } else if trimmed.starts_with("concurrency:") {
            format!("{indent}concurrency: 64")
        } else if trimmed.starts_with("- { from:") {
            continue;
        } else if line == "maintenance:" {
            "maintenance: []".into()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", testkit::server::free_port())
}

/// Waits until `url` answers 2xx, or panics after `within`.
async fn http_ready(what: &str, url: &str, within: Duration, proc_: &mut Proc) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        proc_.alive();
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} ready within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the store is.
#[derive(Clone, Copy, PartialEq)]
enum StoreKind {
    Sqlite,
    Postgres,
}

/// The whole flow, running. Fields drop in order: processes first, then the bus prefix and the
/// schema are removed, then the directory.
struct Flow {
    gateways: Vec<Proc>,
    adapter: Proc,
    sims: Vec<Proc>,
    clients: Vec<CaseServiceClient<Channel>>,
    tracker: Arc<Mutex<Tracker>>,
    broker: Option<Broker>,
    schema: Option<Schema>,
    bus: BusConfig,
    /// The run's files (configuration, logs, SQLite), removed last.
    _dir: tempfile::TempDir,
}

impl Flow {
    async fn start(store: StoreKind, replicas: usize) -> Flow {
        let dir = tempfile::tempdir().unwrap();
        let root = testkit::root();
        let bus = BusConfig {
            url: testkit::broker::amqp_url(),
            prefix: format!("e2e{}", uuid::Uuid::new_v4().simple()),
            ..BusConfig::default()
        };
        // The whole topology under the run's prefix, removed at the end even on failure.
        let broker = Broker::open(&bus).await;
        let schema = (store == StoreKind::Postgres).then(|| Schema::new("e2e"));

        let mut sims = Vec::new();
        let mut endpoints = Vec::new();
        for (code, kind) in DEPARTMENTS {
            let behaviour = serde_json::json!({
                "department": code, "decision_delay_ms": 0, "reject": 0.0, "supplement": 0.0,
            });
            let settings = match code {
                "sw" => serde_json::json!({"behaviour": behaviour, "sign_key": "e2e-sign-key"}),
                "xf" => serde_json::json!({"behaviour": behaviour,
                    "namespace": "http://xf.yinchuan.gov.cn/approval",
                    "document_name": "消防安全检查合格证"}),
                _ => serde_json::json!({ "behaviour": behaviour }),
            };
            let file = dir.path().join(format!("sim-{code}.json"));
            std::fs::write(&file, settings.to_string()).unwrap();
            let listen = free_addr();
            let mut sim = Proc::spawn(
                &format!("sim-{code}"),
                dir.path(),
                std::process::Command::new(binary("yichuang-sim"))
                    .arg(kind)
                    .arg("--listen")
                    .arg(&listen)
                    .arg("--settings")
                    .arg(&file),
            );
            http_ready(
                &format!("the {code} simulator"),
                &format!("http://{listen}/_sim/stats"),
                Duration::from_secs(30),
                &mut sim,
            )
            .await;
            sims.push(sim);
            endpoints.push((code, format!("http://{listen}")));
        }

        let (cert, key) = testkit::pki::server_files();
        let store_toml = match (&schema, store) {
            (Some(schema), StoreKind::Postgres) => format!(
                "kind = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\npool_size = {}",
                testkit::db::pg_url(),
                schema.name,
                (16 / replicas).max(4)
            ),
            _ => format!(
                "kind = \"sqlite\"\npath = \"{}\"",
                dir.path().join("yichuang.db").display()
            ),
        };
        let user = yichuang::bus::user(&bus.url);
        let users: String = ["scjg", "sw", "ga", "xf", "rs", "zrzy", "gjj"]
            .iter()
            .map(|d| format!("{d} = \"{user}\"\n"))
            .collect();
        let mut gateways = Vec::new();
        let mut addrs = Vec::new();
        for r in 0..replicas {
            let listen = free_addr();
            let config = format!(
                r#"catalog_dir = "{root}/config/catalog"
calendar_dir = "{root}/config/calendar"
[server]
listen = "{listen}"
admin_listen = "127.0.0.1:0"
[server.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
[limits]
per_caller = {{ per_second = 0, burst = 0 }}
per_hall = {{ per_second = 0, burst = 0 }}
[store]
{store_toml}
[log]
format = "text"
level = "warn"
[metrics]
listen = "{metrics}"
[bus]
url = "{url}"
prefix = "{prefix}"
[bus.department_users]
{users}"#,
                root = root.display(),
                cert = cert.display(),
                key = key.display(),
                ca = testkit::pki::ca_file().display(),
                metrics = free_addr(),
                url = bus.url,
                prefix = bus.prefix,
            );
            let file = dir.path().join(format!("gateway-{r}.toml"));
            std::fs::write(&file, config).unwrap();
            gateways.push(Proc::spawn(
                &format!("gateway-{r}"),
                dir.path(),
                std::process::Command::new(binary("yichuang"))
                    .arg("serve")
                    .arg("--config")
                    .arg(&file),
            ));
            addrs.push(listen.parse::<std::net::SocketAddr>().unwrap());
        }
        // Four HTTP/2 connections to each gateway, as the examples' hall.
        let mut clients = Vec::new();
        for (gateway, addr) in gateways.iter_mut().zip(&addrs) {
            for _ in 0..4 {
                gateway.alive();
                clients.push(testkit::gateway::connect(*addr).await);
            }
        }

        std::fs::create_dir(dir.path().join("departments")).unwrap();
        for (code, _) in DEPARTMENTS {
            std::fs::write(
                dir.path().join(format!("departments/{code}.yaml")),
                department_file(code),
            )
            .unwrap();
        }
        let adapter_http = free_addr();
        let adapter_toml = format!(
            r#"departments_dir = "departments"
catalog_dir = "{root}/config/catalog"
[http]
listen = "{adapter_http}"
[bus]
url = "{url}"
prefix = "{prefix}"
[log]
format = "text"
level = "warn"
"#,
            root = root.display(),
            url = bus.url,
            prefix = bus.prefix,
        );
        std::fs::write(dir.path().join("adapter.toml"), adapter_toml).unwrap();
        let mut command = std::process::Command::new(binary("yichuang-adapter"));
        command.arg("--config").arg(dir.path().join("adapter.toml"));
        for (code, _) in DEPARTMENTS {
            command.arg("--department").arg(code);
        }
        for (code, endpoint) in &endpoints {
            command.env(format!("{}_ENDPOINT", code.to_uppercase()), endpoint);
        }
        command
            .env("SCJG_CLIENT_ID", "yichuang")
            .env("SCJG_CLIENT_SECRET", "sim-secret")
            .env("SW_APP_ID", "yichuang")
            .env("SW_APP_SECRET", "sim-secret")
            .env("SW_SIGN_KEY", "e2e-sign-key");
        let mut adapter = Proc::spawn("adapter", dir.path(), &mut command);
        http_ready(
            "the adapter",
            &format!("http://{adapter_http}/readyz"),
            Duration::from_secs(60),
            &mut adapter,
        )
        .await;

        let tracker = Arc::new(Mutex::new(Tracker::default()));
        // The window's feed, from the first gateway (every replica's cases are in the store).
        let mut feed = clients[0]
            .window_feed(WindowFeedRequest {
                hall_code: HALL.into(),
                ..Default::default()
            })
            .await
            .expect("WindowFeed")
            .into_inner();
        let t = tracker.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = feed.next().await {
                let kind = event.event.map(|e| e.kind).unwrap_or_default();
                if kind == "case-ready-for-delivery" || kind == "case-closed-rejected" {
                    t.lock()
                        .unwrap()
                        .finished(event.case_number, Instant::now());
                }
            }
        });
        Flow {
            gateways,
            adapter,
            sims,
            clients,
            tracker,
            broker: Some(broker),
            schema,
            bus,
            _dir: dir,
        }
    }

    /// Every template is acceptable as it stands (PreCheck), or the bench stops saying why.
    async fn check(&mut self, mix: &[Template]) {
        for (n, t) in mix.iter().enumerate() {
            let answer = self.clients[0]
                .pre_check(PreCheckRequest {
                    submission: Some(nth(mix, "e2e-check", n as u64)),
                })
                .await
                .expect("PreCheck")
                .into_inner();
            assert!(
                answer.acceptable,
                "{} is not acceptable: {:?}",
                t.name, answer.deficiencies
            );
        }
    }

    /// Offers `rate` cases a second for `secs`, then waits up to `drain` for their last results.
    async fn phase(
        &mut self,
        label: &str,
        mix: &Arc<Vec<Template>>,
        rate: f64,
        secs: f64,
        drain: Duration,
    ) -> PhaseResult {
        for p in self.gateways.iter_mut().chain([&mut self.adapter]) {
            p.alive();
        }
        let run = format!("{}-{label}", &self.bus.prefix[..11]);
        let index = self.tracker.lock().unwrap().new_phase();
        let cpu_before = self.cpu();
        let rss_start = self.memory("VmRSS");
        self.reset_peaks();
        let (shed, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let start = Instant::now();
        let span = Duration::from_secs_f64(secs);
        let mut sent = 0u64;
        let mut tasks = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while start.elapsed() < span {
            tick.tick().await;
            // Case k is due at k / rate: every case whose time has come (k = 0 at once).
            let due_now = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
            while sent < due_now {
                let due = start + Duration::from_secs_f64(sent as f64 / rate);
                let mut client = self.clients[sent as usize % self.clients.len()].clone();
                let request = SubmitRequest {
                    submission: Some(nth(mix, &run, sent)),
                };
                let (shed, failed, tracker) = (shed.clone(), failed.clone(), self.tracker.clone());
                tasks.push(tokio::spawn(async move {
                    match client.submit(request).await {
                        Ok(r) => match r.into_inner().outcome {
                            Some(Outcome::Receipt(r)) => {
                                tracker.lock().unwrap().accepted(r.case_number, due, index);
                            }
                            other => {
                                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("  first case not accepted: {other:?}");
                                }
                            }
                        },
                        Err(s)
                            if matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                            ) =>
                        {
                            shed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("  first failed Submit: {:?}: {}", s.code(), s.message());
                            }
                        }
                    }
                }));
                sent += 1;
            }
        }
        let window_end = Instant::now();
        let offered_for = start.elapsed().as_secs_f64();
        for t in tasks {
            t.await.unwrap();
        }
        self.tracker.lock().unwrap().phases[index].window_end = Some(window_end);
        // Until the phase's cases are done, or the drain deadline.
        let deadline = window_end + drain;
        loop {
            let pending = self.tracker.lock().unwrap().pending_in(index);
            if pending == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained_in = window_end.elapsed();
        let wall = start.elapsed().as_secs_f64();
        let cpu_after = self.cpu();
        let rss_end = self.memory("VmRSS");
        let peak = self.memory("VmHWM");
        let tracker = self.tracker.lock().unwrap();
        let p = &tracker.phases[index];
        let accepted = p.accepted;
        let completed = p.hist.len();
        PhaseResult {
            label: label.into(),
            offered: sent as f64 / offered_for,
            accepted,
            completed,
            completed_in_window: p.in_window,
            goodput: p.in_window as f64 / offered_for,
            shed: shed.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
            pending: accepted - completed,
            drained_in,
            wall,
            p50_ms: p.hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: p.hist.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: p.hist.max() as f64 / 1000.0,
            // CPU used between the readings by the processes alive at the second; one that
            // started meanwhile counts whole.
            cpu: cpu_before
                .iter()
                .zip(&cpu_after)
                .map(|((name, a), (_, b))| {
                    let used = b
                        .iter()
                        .map(|(pid, after)| after - a.get(pid).copied().unwrap_or(0.0))
                        .sum();
                    (name.clone(), used)
                })
                .collect(),
            rss_start,
            rss_end,
            peak,
        }
    }

    /// CPU seconds so far: the gateways, the adapter, the broker, PostgreSQL, the simulators and
    /// this process (the load and the feed).
    /// Per process, so a process that starts or ends between two readings (a PostgreSQL
    /// backend of someone else's connection) cannot make a difference negative.
    fn cpu(&self) -> Vec<(String, HashMap<u32, f64>)> {
        let each = |pids: Vec<u32>| pids.into_iter().map(|p| (p, cpu_secs(p))).collect();
        vec![
            (
                "gateway".into(),
                each(self.gateways.iter().map(Proc::pid).collect()),
            ),
            ("adapter".into(), each(vec![self.adapter.pid()])),
            ("broker".into(), each(processes("beam.smp"))),
            ("database".into(), each(processes("postgres"))),
            (
                "simulators".into(),
                each(self.sims.iter().map(Proc::pid).collect()),
            ),
            ("bench (load, feed)".into(), each(vec![std::process::id()])),
        ]
    }

    /// `field` (VmRSS, VmHWM; kB) of the gateways (summed) and the adapter.
    fn memory(&self, field: &str) -> (u64, u64) {
        (
            self.gateways
                .iter()
                .map(|g| status_kb(g.pid(), field))
                .sum(),
            status_kb(self.adapter.pid(), field),
        )
    }

    /// Resets the gateways' and the adapter's VmHWM, so the next reading is a phase's peak.
    fn reset_peaks(&self) {
        for pid in self.gateways.iter().chain([&self.adapter]).map(Proc::pid) {
            reset_peak(pid);
        }
    }

    /// Messages that went through a queue of the run's prefix (RabbitMQ's management API).
    async fn bus_messages(&self) -> Option<u64> {
        let url = format!(
            "{}/api/queues/{}?columns=name,message_stats",
            management_base(&self.bus.url),
            vhost(&self.bus.url)
        );
        let (user, password) = credentials(&self.bus.url);
        let answer: serde_json::Value = reqwest::Client::new()
            .get(url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())?;
        let total = answer
            .as_array()?
            .iter()
            .filter(|q| {
                q["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&self.bus.prefix))
            })
            .filter_map(|q| q["message_stats"]["publish"].as_u64())
            .sum();
        Some(total)
    }

    /// Stops the processes, then removes the run's prefix and schema.
    async fn stop(self) {
        let Flow {
            gateways,
            adapter,
            sims,
            broker,
            schema,
            ..
        } = self;
        drop((gateways, adapter, sims));
        if let Some(b) = broker {
            b.remove().await;
        }
        if let Some(s) = schema {
            s.drop_now().await;
        }
    }
}

/// pids of the processes whose command is `name` (the broker's `beam.smp`, PostgreSQL's
/// `postgres` processes: every one of them, whoever else uses them).
fn processes(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

fn management_base(amqp: &str) -> String {
    let host = amqp.split_once('@').map_or("127.0.0.1", |(_, r)| {
        r.split([':', '/']).next().unwrap_or("127.0.0.1")
    });
    format!("http://{host}:15672")
}

fn vhost(amqp: &str) -> String {
    amqp.rsplit_once('/').map_or("%2f".into(), |(_, v)| {
        if v.is_empty() { "%2f".into() } else { v.into() }
    })
}

fn credentials(amqp: &str) -> (String, String) {
    let userinfo = amqp
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .map_or("guest:guest", |(u, _)| u);
    let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (u.into(), p.into())
}

/// Cases in flight and what each phase saw.
#[derive(Default)]
struct Tracker {
    /// Case number → when it was due, and its phase.
    pending: HashMap<String, (Instant, usize)>,
    /// Final events seen before the receipt came back.
    early: HashMap<String, Instant>,
    phases: Vec<PhaseStats>,
}

struct PhaseStats {
    hist: Histogram<u64>,
    accepted: u64,
    in_window: u64,
    window_end: Option<Instant>,
}

impl Tracker {
    fn new_phase(&mut self) -> usize {
        self.phases.push(PhaseStats {
            hist: Histogram::new(3).unwrap(),
            accepted: 0,
            in_window: 0,
            window_end: None,
        });
        self.phases.len() - 1
    }

    fn accepted(&mut self, number: String, due: Instant, phase: usize) {
        self.phases[phase].accepted += 1;
        match self.early.remove(&number) {
            Some(at) => self.record(due, phase, at),
            None => {
                self.pending.insert(number, (due, phase));
            }
        }
    }

    fn finished(&mut self, number: String, at: Instant) {
        match self.pending.remove(&number) {
            Some((due, phase)) => self.record(due, phase, at),
            None => {
                self.early.insert(number, at);
            }
        }
    }

    fn record(&mut self, due: Instant, phase: usize, at: Instant) {
        let p = &mut self.phases[phase];
        let us = at.saturating_duration_since(due).as_micros() as u64;
        p.hist.record(us.max(1)).unwrap();
        if p.window_end.is_none_or(|end| at <= end) {
            p.in_window += 1;
        }
    }

    fn pending_in(&self, phase: usize) -> usize {
        self.pending.values().filter(|(_, p)| *p == phase).count()
    }
}

struct PhaseResult {
    label: String,
    offered: f64,
    accepted: u64,
    completed: u64,
    completed_in_window: u64,
    /// Cases whose last result was visible within the offering window, per second of it.
    goodput: f64,
    shed: u64,
    failed: u64,
    pending: u64,
    drained_in: Duration,
    /// Seconds from the phase's start to the end of its drain (the CPU figures' span).
    wall: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu: Vec<(String, f64)>,
    rss_start: (u64, u64),
    rss_end: (u64, u64),
    /// Peak RSS during the phase and its drain.
    peak: (u64, u64),
}

impl PhaseResult {
    fn print(&self) {
        println!(
            "{:<14} offered {:>6.1}/s  accepted {:>6}  done {:>6} ({:>6} in window)  goodput {:>6.1}/s  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  drained in {:>5.1} s{}{}",
            self.label,
            self.offered,
            self.accepted,
            self.completed,
            self.completed_in_window,
            self.goodput,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.drained_in.as_secs_f64(),
            if self.pending > 0 {
                format!("  {} NOT DONE", self.pending)
            } else {
                String::new()
            },
            if self.shed + self.failed > 0 {
                format!("  shed {} failed {}", self.shed, self.failed)
            } else {
                String::new()
            }
        );
    }

    /// CPU µs per case done, per component.
    fn cpu_per_case(&self) -> Vec<(String, f64)> {
        self.cpu
            .iter()
            .map(|(n, s)| (n.clone(), s * 1e6 / self.completed.max(1) as f64))
            .collect()
    }
}

/// The raw hops' figures.
struct Raw {
    bus_msgs_per_sec: f64,
    bus_p50_ms: f64,
    bus_p99_ms: f64,
    grpc_p50_ms: f64,
    grpc_p99_ms: f64,
}

/// The sizes of the messages the flow sends: each template's task messages as the relay
/// encodes them (read off the department queues before the adapter takes them would disturb the
/// flow, so they are encoded here from a case accepted by an in-process intake and store), and a
/// result as the adapter sends it (accepted, progress, approved with a document).
async fn message_sizes(mix: &[Template]) -> Vec<usize> {
    use yichuang::intake::{Intake, Outcome, content_hash};
    use yichuang::store::{Attempt, Evaluated, Store, SubmitCommand};
    let root = testkit::root();
    let catalog = Arc::new(yichuang::catalog::Catalog::load(&root.join("config/catalog")).unwrap());
    let calendar =
        Arc::new(yichuang::calendar::Calendar::load(&root.join("config/calendar")).unwrap());
    let intake = Intake::new(catalog, calendar, Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&yichuang::config::StoreConfig::Sqlite {
        path: dir.path().join("sizes.db"),
    })
    .await
    .unwrap();
    let mut sizes = Vec::new();
    for (n, _) in mix.iter().enumerate() {
        let s = nth(mix, "sizes", n as u64);
        let hash = content_hash(&s);
        let Ok(Outcome::Acceptable(plan)) = intake.evaluate(s.clone(), chrono::Utc::now()) else {
            panic!("acceptable")
        };
        store
            .submit(SubmitCommand {
                attempt: Attempt {
                    submission_id: s.submission_id.clone(),
                    content_hash: hash,
                    hall_code: HALL.into(),
                    window_code: s.window_code.clone(),
                    clerk_staff_no: "0342".into(),
                    trace_id: yichuang::trace::new_trace_id(),
                    trace_span_id: String::new(),
                    at: chrono::Utc::now(),
                },
                evaluated: Evaluated::Accept(plan),
            })
            .await
            .unwrap();
    }
    for task in store.claim_ready(64, 60_000).await.unwrap() {
        sizes.push(
            yichuang::outbox::task_message(&task)
                .unwrap()
                .encode_to_vec()
                .len(),
        );
    }
    let result = ResultMessage {
        task_id: uuid::Uuid::new_v4().to_string(),
        case_number: "640100-20261206-QY-SL-1000112001000-0001".into(),
        department: "scjg".into(),
        kind: ResultKind::Approved as i32,
        department_case_number: "SCJG2026000001".into(),
        step: "办结".into(),
        documents: vec![ResultDocument {
            material_code: "YYZZ".into(),
            name: "营业执照".into(),
            number: "ZZ26000001".into(),
            file: None,
        }],
        at: Some(pbjson_types::Timestamp {
            seconds: chrono::Utc::now().timestamp(),
            nanos: 0,
        }),
        ..Default::default()
    };
    // Three results per task (accepted, progress, the decision).
    let per_task = sizes.len();
    for _ in 0..3 * per_task {
        sizes.push(result.encoded_len());
    }
    sizes
}

/// A raw lapin publish (confirmed) and consume on a quorum queue of the run's prefix: first
/// `count` messages in windows of 256, for messages/s from the first publish to the last
/// delivery; then 500 one at a time, for the latency of one hop.
async fn raw_bus(bus: &BusConfig, sizes: &[usize], count: usize) -> (f64, Histogram<u64>) {
    let connection = yichuang::bus::connect(bus).await.expect("RabbitMQ");
    let publisher = connection.create_channel().await.unwrap();
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let consumer_channel = connection.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(256, Default::default())
        .await
        .unwrap();
    let queue = format!("{}.raw", bus.prefix);
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    publisher
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let _ = tx.send(Instant::now());
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    });
    let bodies: Vec<Vec<u8>> = sizes.iter().map(|s| vec![b'x'; *s]).collect();
    let publish = |n: usize| {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(format!("raw-{n}").into());
        publisher.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &bodies[n % bodies.len()],
            props,
        )
    };
    let start = Instant::now();
    let mut sent = 0;
    let mut received = 0;
    while sent < count {
        let mut confirms = Vec::new();
        for _ in 0..256.min(count - sent) {
            confirms.push(publish(sent).await.unwrap());
            sent += 1;
        }
        for c in confirms {
            c.await.unwrap();
        }
        while let Ok(_at) = rx.try_recv() {
            received += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while received < count {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(_)) => received += 1,
            _ => panic!("raw round trip: {received} of {count} consumed within 60 s"),
        }
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for n in 0..500 {
        let t0 = Instant::now();
        publish(n).await.unwrap().await.unwrap();
        let at = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a delivery within 10 s")
            .unwrap();
        hist.record((at - t0).as_micros().max(1) as u64).unwrap();
    }
    consuming.abort();
    let _ = publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "done".into()).await;
    (rate, hist)
}

/// The empty handler over mTLS, one `Submit` at a time (the same requests): one gRPC hop.
async fn raw_grpc(mix: &[Template], calls: u64) -> Histogram<u64> {
    let (cert, key) = testkit::pki::server_files();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(
            testkit::pki::ca_pem(),
        ));
    let addr = empty::start_empty(Some(tls)).await;
    let mut client = testkit::gateway::connect(addr).await;
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for n in 0..calls + 100 {
        let request = SubmitRequest {
            submission: Some(nth(mix, "raw", n)),
        };
        let t0 = Instant::now();
        client.submit(request).await.expect("the empty handler");
        if n >= 100 {
            hist.record(t0.elapsed().as_micros().max(1) as u64).unwrap();
        }
    }
    hist
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// Latency against load: p50 and p99 of each phase against its offered rate, to `path`.
fn plot(
    path: &Path,
    points: &[(f64, f64, f64)],
    max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    std::fs::create_dir_all(path.parent().unwrap())?;
    let mut points = points.to_vec();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let y_max = points.iter().map(|p| p.2).fold(1.0, f64::max) * 1.2;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("yichuang end to end: latency against load (max {max:.0} cases/s)"),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("offered load (cases/s)")
        .y_desc("Submit → last result in the feed (ms)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), &BLUE))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), &RED))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "e2e bench: run with `make bench-e2e` (needs RabbitMQ, PostgreSQL and the binaries)"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let secs = testkit::env_or("YICHUANG_BENCH_SECS", 12) as f64;
    let first_rate = testkit::env_or("YICHUANG_BENCH_RATE", 8) as f64;
    let replicas = testkit::env_or("YICHUANG_BENCH_REPLICAS", 1).max(1) as usize;
    let store = match std::env::var("YICHUANG_BENCH_STORE").as_deref() {
        Ok("postgres") => StoreKind::Postgres,
        _ => StoreKind::Sqlite,
    };
    let store_name = match store {
        StoreKind::Sqlite => "SQLite",
        StoreKind::Postgres => "PostgreSQL",
    };
    let mix = Arc::new(mix());
    println!(
        "e2e: {replicas} gateway(s) on {store_name}, one adapter, four simulated departments deciding at once; mix: {}",
        mix.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
    );
    let started = Instant::now();

    // 1. The raw hops.
    let sizes = message_sizes(&mix).await;
    let mut flow = Flow::start(store, replicas).await;
    flow.check(&mix).await;
    let (bus_rate, bus_hist) = raw_bus(&flow.bus, &sizes, 5000).await;
    let grpc = raw_grpc(&mix, 1000).await;
    let raw = Raw {
        bus_msgs_per_sec: bus_rate,
        bus_p50_ms: bus_hist.value_at_quantile(0.5) as f64 / 1000.0,
        bus_p99_ms: bus_hist.value_at_quantile(0.99) as f64 / 1000.0,
        grpc_p50_ms: grpc.value_at_quantile(0.5) as f64 / 1000.0,
        grpc_p99_ms: grpc.value_at_quantile(0.99) as f64 / 1000.0,
    };
    println!(
        "raw lapin round trip (quorum, {} sizes {}–{} bytes)  {:>7.0} msg/s   one at a time p50 {:.2} ms  p99 {:.2} ms",
        sizes.len(),
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap(),
        raw.bus_msgs_per_sec,
        raw.bus_p50_ms,
        raw.bus_p99_ms
    );
    println!(
        "raw gRPC (empty handler, mTLS, Submit one at a time)  p50 {:.2} ms  p99 {:.2} ms",
        raw.grpc_p50_ms, raw.grpc_p99_ms
    );

    // Warm-up: every path taken once (tokens, connections, statement caches).
    let warm = flow
        .phase("warm", &mix, first_rate / 2.0, 2.0, Duration::from_secs(30))
        .await;
    warm.print();
    assert!(
        warm.pending == 0,
        "the warm-up cases did not all finish: see the logs"
    );
    let bus_before = flow.bus_messages().await;

    // 2. The ramp.
    let mut points = Vec::new();
    let mut rate = first_rate;
    let mut max = 0.0f64;
    let mut base_p99: Option<f64> = None;
    let mut max_phase: Option<PhaseResult> = None;
    let mut completed_total = 0;
    let mut refined = false;
    loop {
        let step = flow
            .phase(
                &format!("ramp {rate:.0}/s"),
                &mix,
                rate,
                secs / 2.0,
                Duration::from_secs(30),
            )
            .await;
        step.print();
        completed_total += step.completed;
        points.push((step.offered, step.p50_ms, step.p99_ms));
        let base = *base_p99.get_or_insert(step.p99_ms.max(50.0));
        // Kept up: nothing shed or failed, every case done within 3 s of the step's end, and
        // the p99 not exploded.
        let kept_up = step.pending == 0
            && step.shed + step.failed == 0
            && step.drained_in <= Duration::from_secs(3)
            && step.p99_ms <= 5.0 * base;
        if kept_up && step.offered > max {
            max = step.offered;
            max_phase = Some(step);
        }
        if kept_up && rate < 4096.0 && !refined {
            rate *= 2.0;
        } else if !refined && max > 0.0 {
            // Once between the last step that kept up and the first that did not.
            refined = true;
            rate = max * 1.5;
        } else {
            break;
        }
    }
    assert!(
        max > 0.0,
        "not even the first step ({first_rate}/s) kept up"
    );
    let max_phase = max_phase.unwrap();
    println!("max load: {max:.1} cases/s (the highest offered rate that kept up)");

    // 3. Half of max, then twice.
    let half = flow
        .phase("50% of max", &mix, max / 2.0, secs, Duration::from_secs(30))
        .await;
    half.print();
    completed_total += half.completed;
    points.push((half.offered, half.p50_ms, half.p99_ms));
    let twice = flow
        .phase(
            "2x max",
            &mix,
            max * 2.0,
            secs,
            Duration::from_secs((secs * 3.0) as u64 + 30),
        )
        .await;
    twice.print();
    completed_total += twice.completed;
    let bus_after = flow.bus_messages().await;

    // The ratios.
    let tasks_per_case = mix.iter().map(|t| t.tasks as f64).sum::<f64>() / mix.len() as f64;
    let hops_per_case = mix.iter().map(|t| 2.0 * t.stages as f64).sum::<f64>() / mix.len() as f64;
    let msgs_per_case = match (bus_before, bus_after) {
        (Some(a), Some(b)) if b > a && completed_total > 0 => {
            (b - a) as f64 / completed_total as f64
        }
        _ => 4.0 * tasks_per_case,
    };
    println!();
    println!(
        "per case: {tasks_per_case:.2} tasks, {msgs_per_case:.1} messages through the run's queues (RabbitMQ's counts{}), {hops_per_case:.2} bus hops on the way to the last result",
        if bus_before.is_some() {
            ""
        } else {
            ": unavailable, 4 a task assumed"
        }
    );
    let bus_e2e = max * msgs_per_case;
    let bus_ratio = bus_e2e / raw.bus_msgs_per_sec;
    let raw_p50 = raw.grpc_p50_ms + hops_per_case * raw.bus_p50_ms;
    let raw_p99 = raw.grpc_p99_ms + hops_per_case * raw.bus_p99_ms;
    let added_p50 = half.p50_ms - raw_p50;
    let p99_ratio = half.p99_ms / raw_p99;
    // Like for like: both counted as cases done within their offering window, per second of
    // it (a case still on its way at the window's end does not count, at either rate).
    let goodput_ratio = twice.goodput / max_phase.goodput;
    println!("| ratio | figure | goal | |");
    println!("|---|---|---|---|");
    println!(
        "| bus messages/s end to end ÷ raw round trip | {bus_e2e:.0} ÷ {:.0} = {bus_ratio:.2} | ≥ 0.6 | {} |",
        raw.bus_msgs_per_sec,
        met(bus_ratio >= 0.6)
    );
    println!(
        "| p50 added over the raw hops at 50% of max | {:.1} − {raw_p50:.1} = {added_p50:.1} ms | ≤ 5 ms | {} |",
        half.p50_ms,
        met(added_p50 <= 5.0)
    );
    println!(
        "| p99 at 50% of max ÷ raw hops' p99 | {:.1} ÷ {raw_p99:.1} = {p99_ratio:.1}× | ≤ 1.25× | {} |",
        half.p99_ms,
        met(p99_ratio <= 1.25)
    );
    println!(
        "| goodput at 2× max ÷ goodput at max (done within the offering window, per s) | {:.1} ÷ {:.1} = {goodput_ratio:.2} | ≥ 0.9 | {} |",
        twice.goodput,
        max_phase.goodput,
        met(goodput_ratio >= 0.9)
    );
    let (g0, a0) = twice.rss_start;
    let (g1, a1) = twice.rss_end;
    let flat = g1 as f64 <= 1.25 * g0 as f64 && a1 as f64 <= 1.25 * a0 as f64;
    println!(
        "| RSS over the 2× phase (gateway{}; adapter): start → end (peak) | {} → {} ({}) MiB; {} → {} ({}) MiB | flat (≤ 1.25×) | {} |",
        if replicas > 1 { "s" } else { "" },
        g0 / 1024,
        g1 / 1024,
        twice.peak.0 / 1024,
        a0 / 1024,
        a1 / 1024,
        twice.peak.1 / 1024,
        met(flat)
    );
    println!();
    println!(
        "CPU µs per case (the 50% phase, {} cases; at max, {} cases):",
        half.completed, max_phase.completed
    );
    for ((name, at_half), (_, at_max)) in half.cpu_per_case().iter().zip(max_phase.cpu_per_case()) {
        let note = match name.as_str() {
            "database" if store == StoreKind::Sqlite => {
                " (SQLite: in the gateway; PostgreSQL's processes idle or others')"
            }
            "broker" | "database" => {
                " (every process of that name on the machine: others' load counts)"
            }
            _ => "",
        };
        println!("  {name:<20} {at_half:>8.0}   {at_max:>8.0}{note}");
    }
    // CPU a second = fixed + marginal × cases a second: the two phases give both (the fixed part
    // is what the component spends whatever the load: pollers, timers, sweeps).
    let (r1, r2) = (
        half.completed as f64 / half.wall,
        max_phase.completed as f64 / max_phase.wall,
    );
    if r2 > r1 * 1.2 {
        println!(
            "CPU split from the two phases ({r1:.1} and {r2:.1} cases/s): fixed cores whatever the load, marginal µs per case:"
        );
        for ((name, c1), (_, c2)) in half.cpu.iter().zip(&max_phase.cpu) {
            let (k1, k2) = (c1 / half.wall, c2 / max_phase.wall);
            let marginal = (k2 - k1) / (r2 - r1);
            let fixed = k1 - marginal * r1;
            println!(
                "  {name:<20} fixed {fixed:>6.3} cores   marginal {:>8.0} µs/case",
                marginal * 1e6
            );
        }
    }
    let out = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| testkit::root().join("target").display().to_string()),
    )
    .join("bench/e2e.svg");
    match plot(&out, &points, max) {
        Ok(()) => println!("latency against load: {}", out.display()),
        Err(e) => println!("the plot was not written: {e}"),
    }
    println!("e2e: {:.0} s in all", started.elapsed().as_secs_f64());
    flow.stop().await;
}
