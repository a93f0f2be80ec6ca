//! Throughput of `PreCheck` and `Submit` through the real gRPC server, on SQLite and on
//! PostgreSQL, against an empty tonic handler measured the same way in the same run (these
//! machines are shared and noisy, so only ratios mean something).
//!
//! Each scenario runs `YICHUANG_BENCH_SECS` seconds (default 3) with `YICHUANG_BENCH_CONCURRENCY`
//! requests in flight (default 128) over 4 HTTP/2 connections. `Submit` sends a distinct
//! submission each time (the kai-canguan example under a new id and date), so every request
//! creates and durably commits a case.
//!
//! Tracing overhead: the SQLite `Submit` scenario again in child processes of this binary, each
//! with the gateway's real log and span setup (`telemetry::init`, JSON logs at `info`): spans
//! off (no endpoint, the default) and spans at 100% sampling exported over OTLP/gRPC to a
//! collector in this process, alternated off/on/off/on; the ratio of the means is printed.

#[path = "support/pgbench.rs"]
mod pgbench;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use testkit::gateway::Server;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use yichuang::app::Gateway;
use yichuang::config::{GatewayConfig, StoreConfig};
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::*;

#[path = "support/empty.rs"]
mod empty;
use empty::start_empty;

#[derive(Clone, Copy, PartialEq)]
enum Call {
    PreCheck,
    Submit,
}

struct Outcome {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn load(addr: std::net::SocketAddr, call: Call, run: &str) -> Outcome {
    let secs = testkit::env_or("YICHUANG_BENCH_SECS", 3);
    let concurrency = testkit::env_or("YICHUANG_BENCH_CONCURRENCY", 128);
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .expect("connect"),
        );
    }
    let base = Arc::new(testkit::example("kai-canguan"));
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = CaseServiceClient::new(channels[i as usize % channels.len()].clone());
        let (base, counter, run) = (base.clone(), counter.clone(), format!("bench-{run}"));
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            while Instant::now() < stop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let s = testkit::nth(&base, &run, n);
                let t = Instant::now();
                match call {
                    Call::PreCheck => {
                        client
                            .pre_check(PreCheckRequest {
                                submission: Some(s),
                            })
                            .await
                            .expect("precheck");
                    }
                    Call::Submit => {
                        client
                            .submit(SubmitRequest {
                                submission: Some(s),
                            })
                            .await
                            .expect("submit");
                    }
                }
                hist.record(t.elapsed().as_micros() as u64).unwrap();
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        hist.add(t.await.unwrap()).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    Outcome {
        rps: hist.len() as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// A gateway on `store`, serving on a free port until the [`Server`] is stopped or dropped.
async fn start_gateway(store: StoreConfig) -> Server {
    let root = testkit::root();
    let config = GatewayConfig {
        catalog_dir: root.join("config/catalog"),
        calendar_dir: root.join("config/calendar"),
        store,
        bus: yichuang::config::BusConfig {
            relay: false,
            ..Default::default()
        },
        // What is measured here is intake and the store, against an empty handler on the same
        // plaintext transport; TLS against plaintext is benches/overload.rs's comparison.
        development: yichuang::config::DevelopmentConfig {
            plaintext: true,
            ..Default::default()
        },
        ..GatewayConfig::default()
    };
    // One client drives the gateway as hard as it goes: no call rates; the internal listener on
    // a free port: several gateways run in this process.
    let mut config = GatewayConfig {
        limits: config.limits.clone().without_rates(),
        ..config
    };
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    let gateway = Arc::new(Gateway::from_config(&config).await.expect("gateway"));
    Server::start(gateway).await
}

fn report(name: &str, o: &Outcome, baseline: f64) {
    println!(
        "{name:<32} {:>9.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ratio to empty handler {:.2}",
        o.rps,
        o.p50_ms,
        o.p99_ms,
        o.rps / baseline
    );
}

/// Counts the spans it receives and drops them.
#[derive(Clone, Default)]
struct Collector(Arc<AtomicU64>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        Status,
    > {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(Response::new(Default::default()))
    }
}

/// A child run: the SQLite gateway with the real telemetry setup, spans exported to
/// `YICHUANG_BENCH_OTLP` when set; prints `rps p50 p99`.
fn child() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tracing = yichuang::config::TracingConfig {
            otlp_endpoint: std::env::var("YICHUANG_BENCH_OTLP").unwrap_or_default(),
            ..Default::default()
        };
        let telemetry =
            yichuang::telemetry::init(&Default::default(), &tracing, "yichuang-bench").unwrap();
        // The warm-up writes to a database of its own: its cases would share the measured
        // run's days, and a day holds 9,999 case numbers.
        let dir = tempfile::tempdir().unwrap();
        let warm = start_gateway(StoreConfig::Sqlite {
            path: dir.path().join("warm.db"),
        })
        .await;
        let _ = load(warm.addr, Call::Submit, "warm").await;
        let measured = start_gateway(StoreConfig::Sqlite {
            path: dir.path().join("bench.db"),
        })
        .await;
        let o = load(measured.addr, Call::Submit, "measured").await;
        telemetry.flush();
        println!("{} {} {}", o.rps, o.p50_ms, o.p99_ms);
    });
}

/// Runs [`child`] in a process of its own.
fn run_child(otlp: Option<&str>) -> Outcome {
    // The child's log lines go to a file, as a deployment's go to its collector.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .arg("--bench")
        .env("YICHUANG_BENCH_CHILD", "1")
        .stderr(log.reopen().unwrap());
    if let Some(endpoint) = otlp {
        command.env("YICHUANG_BENCH_OTLP", endpoint);
    }
    let out = command.output().expect("the bench runs itself");
    if !out.status.success() {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        panic!("child run failed: {}", tail.join("\n"));
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Outcome {
        rps: v[0],
        p50_ms: v[1],
        p99_ms: v[2],
    }
}

/// Tracing at 100% against tracing off, alternated, in child processes.
async fn tracing_overhead() {
    let collector = Collector::default();
    let (listener, endpoint) = testkit::server::listener().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                    collector.clone(),
                ),
            )
            .serve_with_incoming(yichuang::api::incoming(listener)),
    );
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        off.push(
            tokio::task::spawn_blocking(|| run_child(None))
                .await
                .unwrap(),
        );
        let e = endpoint.clone();
        on.push(
            tokio::task::spawn_blocking(move || run_child(Some(&e)))
                .await
                .unwrap(),
        );
    }
    let mean = |v: &[Outcome]| v.iter().map(|o| o.rps).sum::<f64>() / v.len() as f64;
    let (off_rps, on_rps) = (mean(&off), mean(&on));
    println!("tracing overhead (Submit, SQLite, JSON logs at info, alternated off/on twice):");
    for (name, v) in [("spans off", &off), ("spans 100% over OTLP", &on)] {
        for o in v {
            report(name, o, off_rps);
        }
    }
    let ratio = on_rps / off_rps;
    println!(
        "spans received by the collector: {}",
        collector.0.load(Ordering::Relaxed)
    );
    println!(
        "goal: Submit with spans at 100% >= 0.90 of spans off: {ratio:.2} ({})",
        if ratio >= 0.9 { "met" } else { "not met" }
    );
}

fn main() {
    if std::env::var_os("YICHUANG_BENCH_CHILD").is_some() {
        child();
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a quick smoke test.
    if !std::env::args().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let empty = start_empty(None).await;
        let sqlite_server = start_gateway(StoreConfig::Sqlite { path: dir.path().join("bench.db") }).await;
        let sqlite = sqlite_server.addr;
        println!("intake throughput ({} s per scenario)", testkit::env_or("YICHUANG_BENCH_SECS", 3));
        // Warm up connections and code paths, then measure the baseline first and last.
        let _ = load(empty, Call::Submit, "warm").await;
        let base1 = load(empty, Call::Submit, "empty1").await;
        report("empty handler", &base1, base1.rps);
        let pre = load(sqlite, Call::PreCheck, "pre").await;
        let sub = load(sqlite, Call::Submit, "sqlite").await;
        let pg = match std::env::var("YICHUANG_TEST_PG_URL") {
            Ok(url) => {
                // A schema of the run's own, dropped once it is measured.
                let schema = testkit::db::Schema::new("bench");
                let store = StoreConfig::Postgres { url: url.clone(), schema: schema.name.clone(), pool_size: 16 };
                let server = start_gateway(store).await;
                let pre = load(server.addr, Call::PreCheck, "pgpre").await;
                let sub = load(server.addr, Call::Submit, "pg").await;
                server.stop().await;
                let secs = testkit::env_or("YICHUANG_BENCH_SECS", 3);
                let same = pgbench::same_work(&url, &schema.name, 16, secs).await;
                schema.drop_now().await;
                Some((pre, sub, same))
            }
            Err(_) => None,
        };
        let base2 = load(empty, Call::Submit, "empty2").await;
        let baseline = (base1.rps + base2.rps) / 2.0;
        println!("baseline (mean of two empty-handler runs): {baseline:.0} req/s");
        report("PreCheck (no store)", &pre, baseline);
        report("Submit, SQLite (durable commit)", &sub, baseline);
        match pg {
            Some((pre, sub, same)) => {
                report("PreCheck, PostgreSQL gateway", &pre, baseline);
                report("Submit, PostgreSQL", &sub, baseline);
                match same {
                    Some(tps) => {
                        let ratio = sub.rps / tps;
                        println!(
                            "goal: Submit on PostgreSQL / pgbench same work >= 0.70: {ratio:.2} ({:.0} / {tps:.0}) ({})",
                            sub.rps,
                            if ratio >= 0.7 { "met" } else { "not met" }
                        );
                    }
                    None => println!("goal: Submit on PostgreSQL / pgbench same work >= 0.70: not measured"),
                }
            }
            None => println!("Submit, PostgreSQL: not measured (YICHUANG_TEST_PG_URL unset; `make bench` sets it)"),
        }
        let ratio = sub.rps / baseline;
        println!(
            "goal: Submit on SQLite >= 0.50 of the empty handler: {ratio:.2} ({})",
            if ratio >= 0.5 { "met" } else { "not met" }
        );
        if std::env::var_os("YICHUANG_BENCH_SKIP_TRACING").is_none() {
            tracing_overhead().await;
        }
    });
}

/// Under `cargo test --benches`: one request of each kind, so the bench cannot rot.
fn smoke() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let server = start_gateway(StoreConfig::Sqlite {
            path: dir.path().join("smoke.db"),
        })
        .await;
        let mut client = CaseServiceClient::connect(format!("http://{}", server.addr))
            .await
            .unwrap();
        let r = client
            .submit(SubmitRequest {
                submission: Some(testkit::nth(
                    &testkit::example("kai-canguan"),
                    "bench-smoke",
                    7,
                )),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            matches!(r.outcome, Some(submit_response::Outcome::Receipt(_))),
            "{r:?}"
        );
        println!("bench smoke test: ok");
    });
}
