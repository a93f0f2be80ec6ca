//! Throughput of `PreCheck` and `Submit` through the real gRPC server, on SQLite and on
//! PostgreSQL, against an empty tonic handler measured the same way in the same run (these
//! machines are shared and noisy, so only ratios mean something). This file owns the intake
//! bench: the servers it measures, its load generator, and the child processes it runs them in.
//!
//! The load generator (tonic client, hdrhistogram) runs in this process; every server runs in a
//! child process of this bench (the same binary run again with `YICHUANG_BENCH_ROLE` set, see
//! [`Role`]), so client and server costs are apart: the empty handler, the SQLite gateway
//! (`PreCheck`, then `Submit`) and the PostgreSQL gateway (`PreCheck`, then `Submit`, when
//! `YICHUANG_TEST_PG_URL` is set). The earlier figure, server and client in this process, is
//! measured after them for comparison (empty handler and `Submit` on SQLite).
//!
//! Each scenario runs `YICHUANG_BENCH_SECS` seconds (default 3) after a warm-up of
//! `YICHUANG_BENCH_WARM_SECS` (default 1) with `YICHUANG_BENCH_CONCURRENCY` requests in flight
//! (default 128) over 4 HTTP/2 connections. `Submit` sends a distinct submission each time (the
//! kai-canguan example under a new id and date), so every request creates and durably commits a
//! case. Goal (issue 17): `Submit` on SQLite, server out of process, >= 0.50 of the empty handler.
//!
//! Tracing overhead (last part; `YICHUANG_BENCH_SKIP_TRACING` skips it, and
//! `YICHUANG_BENCH_SKIP_THROUGHPUT` everything before it): the SQLite `Submit`
//! scenario against gateway children with the gateway's real log and span setup
//! (`telemetry::init`, JSON logs at `info` to a file): spans off (no endpoint, the default)
//! and spans at 100% sampling exported over OTLP/gRPC to a collector in a child process of its
//! own, alternated off/on three times, `YICHUANG_BENCH_TRACING_SECS` (default 10) each. Goal:
//! spans at 100% >= 0.90 of spans off (ratio of the means).

#[path = "support/pgbench.rs"]
mod pgbench;
#[allow(dead_code)] // the memory readings are the other benches'
#[path = "support/procfs.rs"]
mod procfs;
use procfs::cpu_secs;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use opentelemetry_proto::tonic::collector::trace::v1 as otlp;
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
    /// Cores the server's process used while measured, when it ran in a child.
    server_cores: Option<f64>,
    /// Cores this process used while measured: the load generator's, and the server's too
    /// when it ran in this process.
    client_cores: f64,
}

/// Drives `addr` with `call` for `secs` after a warm-up of `YICHUANG_BENCH_WARM_SECS`; requests
/// begun during the warm-up are neither timed nor counted. `server` is the server's process
/// when it runs in a child, for its CPU time.
async fn load(addr: SocketAddr, call: Call, run: &str, secs: u64, server: Option<u32>) -> Outcome {
    let warm = testkit::env_or("YICHUANG_BENCH_WARM_SECS", 1);
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
    let from = Instant::now() + Duration::from_secs(warm);
    let stop = from + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = CaseServiceClient::new(channels[i as usize % channels.len()].clone());
        let (base, counter, run) = (base.clone(), counter.clone(), format!("bench-{run}"));
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            loop {
                let t = Instant::now();
                if t >= stop {
                    break;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let s = testkit::nth(&base, &run, n);
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
                if t >= from {
                    hist.record(t.elapsed().as_micros() as u64).unwrap();
                }
            }
            hist
        }));
    }
    tokio::time::sleep_until(from.into()).await;
    let (server_cpu, client_cpu) = (server.map(cpu_secs), cpu_secs("self"));
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        hist.add(t.await.unwrap()).unwrap();
    }
    let elapsed = from.elapsed().as_secs_f64();
    Outcome {
        rps: hist.len() as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        server_cores: server
            .zip(server_cpu)
            .map(|(p, before)| (cpu_secs(p) - before) / elapsed),
        client_cores: (cpu_secs("self") - client_cpu) / elapsed,
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
    // a free port: the in-process comparison runs a gateway in this process.
    let mut config = GatewayConfig {
        limits: config.limits.clone().without_rates(),
        ..config
    };
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    let gateway = Arc::new(Gateway::from_config(&config).await.expect("gateway"));
    Server::start(gateway).await
}

fn report(name: &str, o: &Outcome, baseline: f64) {
    // The server's CPU per request speaks for it even when other work takes the cores.
    // In process, this process's CPU is the server's and the load generator's together.
    let (server, here) = match o.server_cores {
        Some(c) => (
            format!("   server {c:.2} cores, {:.0} us CPU/req", c * 1e6 / o.rps),
            "load generator",
        ),
        None => (String::new(), "server and load generator"),
    };
    println!(
        "{name:<36} {:>7.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ratio {:.2}{server}   {here} {:.2} cores",
        o.rps,
        o.p50_ms,
        o.p99_ms,
        o.rps / baseline,
        o.client_cores
    );
}

fn met(ratio: f64, goal: f64) -> &'static str {
    if ratio >= goal { "met" } else { "not met" }
}

/// Counts the spans it receives and drops them.
#[derive(Clone, Default)]
struct Collector(Arc<AtomicU64>);

#[tonic::async_trait]
impl otlp::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: Request<otlp::ExportTraceServiceRequest>,
    ) -> Result<Response<otlp::ExportTraceServiceResponse>, Status> {
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

/// What a child process of this bench is, from `YICHUANG_BENCH_ROLE`. A child prints the
/// address it serves on as its first line of stdout and serves until its stdin closes.
///
/// - `empty`: the empty handler.
/// - `sqlite`: the gateway on a new SQLite file in a temporary directory.
/// - `postgres`: the gateway on `YICHUANG_TEST_PG_URL`, in schema `YICHUANG_BENCH_PG_SCHEMA`
///   (the parent names the schema and drops it after the child has stopped).
/// - `collector`: an OTLP/gRPC trace collector; prints `http://<addr>`, and when its stdin
///   closes, the number of spans it received.
///
/// The gateway roles install the gateway's log and span setup (`telemetry::init`, JSON logs at
/// `info` on stderr) when `YICHUANG_BENCH_TELEMETRY` is set, exporting spans to
/// `YICHUANG_BENCH_OTLP` when that is set too; otherwise no subscriber, as in process.
#[derive(Clone, Copy)]
enum Role {
    Empty,
    Sqlite,
    Postgres,
    Collector,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Empty => "empty",
            Role::Sqlite => "sqlite",
            Role::Postgres => "postgres",
            Role::Collector => "collector",
        }
    }

    fn from_name(name: &str) -> Role {
        match name {
            "empty" => Role::Empty,
            "sqlite" => Role::Sqlite,
            "postgres" => Role::Postgres,
            "collector" => Role::Collector,
            other => panic!("YICHUANG_BENCH_ROLE={other}: not a role of this bench"),
        }
    }
}

/// Waits until stdin closes (the parent is done with this child).
async fn until_stdin_closes() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await;
}

/// The body of a child process (see [`Role`]).
fn child(role: Role) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let telemetry = std::env::var_os("YICHUANG_BENCH_TELEMETRY").map(|_| {
            let tracing = yichuang::config::TracingConfig {
                otlp_endpoint: std::env::var("YICHUANG_BENCH_OTLP").unwrap_or_default(),
                ..Default::default()
            };
            yichuang::telemetry::init(&Default::default(), &tracing, "yichuang-bench").unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        match role {
            Role::Empty => {
                println!("{}", start_empty(None).await);
                until_stdin_closes().await;
            }
            Role::Sqlite | Role::Postgres => {
                let store = match role {
                    Role::Sqlite => StoreConfig::Sqlite {
                        path: dir.path().join("bench.db"),
                    },
                    _ => StoreConfig::Postgres {
                        url: testkit::db::pg_url(),
                        schema: std::env::var("YICHUANG_BENCH_PG_SCHEMA")
                            .expect("YICHUANG_BENCH_PG_SCHEMA"),
                        pool_size: 16,
                    },
                };
                let server = start_gateway(store).await;
                println!("{}", server.addr);
                until_stdin_closes().await;
                server.stop().await;
            }
            Role::Collector => {
                let collector = Collector::default();
                let (listener, endpoint) = testkit::server::listener().await;
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(otlp::trace_service_server::TraceServiceServer::new(
                            collector.clone(),
                        ))
                        .serve_with_incoming(yichuang::api::incoming(listener)),
                );
                println!("{endpoint}");
                until_stdin_closes().await;
                println!("{}", collector.0.load(Ordering::Relaxed));
            }
        }
        if let Some(t) = telemetry {
            t.flush();
        }
    });
}

/// A child process of this bench in `role`, with `env` added and its stderr to `stderr`;
/// stopped (stdin closed, then killed after 10 s) by [`Child::finish`] or when dropped.
struct Child {
    process: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
    /// The first line it printed: the address it serves on.
    addr: String,
}

impl Child {
    fn start(role: Role, env: &[(&str, &str)], stderr: Stdio) -> Child {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .env("YICHUANG_BENCH_ROLE", role.name())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut process = command.spawn().expect("the bench runs itself");
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let mut addr = String::new();
        stdout.read_line(&mut addr).expect("the child's address");
        assert!(
            !addr.is_empty(),
            "the {} child stopped before serving",
            role.name()
        );
        Child {
            process,
            stdout,
            addr: addr.trim().to_string(),
        }
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn socket(&self) -> SocketAddr {
        self.addr.parse().expect("an address")
    }

    /// [`load`] against this child, its CPU time read from its process.
    async fn load(&self, call: Call, run: &str, secs: u64) -> Outcome {
        load(self.socket(), call, run, secs, Some(self.pid())).await
    }

    /// Closes its stdin and returns what it printed after its address once it has stopped.
    fn finish(mut self) -> String {
        drop(self.process.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        self.stop();
        rest
    }

    fn stop(&mut self) {
        drop(self.process.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Out of process: the servers in child processes, the load generator here; prints the
/// `Submit` on SQLite ratio against its goal.
async fn out_of_process(secs: u64) {
    println!(
        "out of process: each server in a child process, the load generator in this one ({secs} s per scenario)"
    );
    let empty = Child::start(Role::Empty, &[], Stdio::inherit());
    let base1 = empty.load(Call::Submit, "empty1", secs).await;
    report("empty handler (first)", &base1, base1.rps);
    let sqlite = Child::start(Role::Sqlite, &[], Stdio::inherit());
    let pre = sqlite.load(Call::PreCheck, "pre", secs).await;
    let sub = sqlite.load(Call::Submit, "sqlite", secs).await;
    sqlite.finish();
    let pg = match std::env::var("YICHUANG_TEST_PG_URL") {
        Ok(_) => Some(postgres(secs).await),
        Err(_) => None,
    };
    let base2 = empty.load(Call::Submit, "empty2", secs).await;
    empty.finish();
    let baseline = (base1.rps + base2.rps) / 2.0;
    report("empty handler (last)", &base2, base1.rps);
    println!("baseline (mean of the two empty-handler runs): {baseline:.0} req/s");
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
                None => {
                    println!("goal: Submit on PostgreSQL / pgbench same work >= 0.70: not measured")
                }
            }
        }
        None => println!(
            "Submit, PostgreSQL: not measured (YICHUANG_TEST_PG_URL unset; `make bench` sets it)"
        ),
    }
    let ratio = sub.rps / baseline;
    println!(
        "goal: Submit on SQLite (server out of process) >= 0.50 of the empty handler: {ratio:.2} ({})",
        met(ratio, 0.5)
    );
}

/// The PostgreSQL gateway in a child process on a schema of the run's own (dropped once
/// measured): `PreCheck`, then `Submit`.
async fn postgres(secs: u64) -> (Outcome, Outcome, Option<f64>) {
    let schema = testkit::db::Schema::new("bench");
    let child = Child::start(
        Role::Postgres,
        &[("YICHUANG_BENCH_PG_SCHEMA", &schema.name)],
        Stdio::inherit(),
    );
    let pre = child.load(Call::PreCheck, "pgpre", secs).await;
    let sub = child.load(Call::Submit, "pg", secs).await;
    child.finish();
    // PostgreSQL's own rate for the same inserts, in the same schema, at the same concurrency
    // (the gateway's pool of 16), the gateway stopped.
    let same = pgbench::same_work(&testkit::db::pg_url(), &schema.name, 16, secs).await;
    schema.drop_now().await;
    (pre, sub, same)
}

/// In process, as the bench measured before: server and load generator in this process.
async fn in_process(secs: u64) {
    println!(
        "in process (server and load generator in this process, for comparison; {secs} s per scenario):"
    );
    let empty = start_empty(None).await;
    let base = load(empty, Call::Submit, "inproc-empty", secs, None).await;
    report("empty handler, in process", &base, base.rps);
    let dir = tempfile::tempdir().unwrap();
    let server = start_gateway(StoreConfig::Sqlite {
        path: dir.path().join("inproc.db"),
    })
    .await;
    let sub = load(server.addr, Call::Submit, "inproc-sqlite", secs, None).await;
    server.stop().await;
    report("Submit, SQLite, in process", &sub, base.rps);
}

/// Tracing at 100% against tracing off, alternated three times, each run against a gateway
/// child of its own, the collector in a child of its own.
async fn tracing_overhead() {
    let secs = testkit::env_or("YICHUANG_BENCH_TRACING_SECS", 10);
    let collector = Child::start(Role::Collector, &[], Stdio::inherit());
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..3 {
        for traced in [false, true] {
            // The gateway's log lines go to a file, as a deployment's go to its collector.
            let log = tempfile::NamedTempFile::new().unwrap();
            let mut env = vec![("YICHUANG_BENCH_TELEMETRY", "1")];
            if traced {
                env.push(("YICHUANG_BENCH_OTLP", collector.addr.as_str()));
            }
            let gateway = Child::start(Role::Sqlite, &env, Stdio::from(log.reopen().unwrap()));
            let run = format!("tracing-{round}-{traced}");
            let o = gateway.load(Call::Submit, &run, secs).await;
            gateway.finish();
            if traced { &mut on } else { &mut off }.push(o);
        }
    }
    let spans = collector.finish();
    let mean = |v: &[Outcome]| v.iter().map(|o| o.rps).sum::<f64>() / v.len() as f64;
    let (off_rps, on_rps) = (mean(&off), mean(&on));
    println!(
        "tracing overhead (Submit, SQLite, gateway in a child with JSON logs at info to a file, collector in a child of its own; {secs} s per run, off/on alternated three times):"
    );
    for (name, v, mean) in [
        ("spans off", &off, off_rps),
        ("spans 100% over OTLP", &on, on_rps),
    ] {
        for o in v {
            report(name, o, off_rps);
        }
        let (min, max) = v
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), o| (a.min(o.rps), b.max(o.rps)));
        println!("{name}: mean {mean:.0} req/s, spread {min:.0}–{max:.0}");
    }
    println!("spans received by the collector: {}", spans.trim());
    let ratio = on_rps / off_rps;
    println!(
        "goal: Submit with spans at 100% >= 0.90 of spans off: {ratio:.2} ({})",
        met(ratio, 0.9)
    );
}

fn main() {
    if let Ok(role) = std::env::var("YICHUANG_BENCH_ROLE") {
        child(Role::from_name(&role));
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
        let secs = testkit::env_or("YICHUANG_BENCH_SECS", 3);
        if std::env::var_os("YICHUANG_BENCH_SKIP_THROUGHPUT").is_none() {
            out_of_process(secs).await;
            in_process(secs).await;
        }
        if std::env::var_os("YICHUANG_BENCH_SKIP_TRACING").is_none() {
            tracing_overhead().await;
        }
    });
}

/// Under `cargo test --benches`: one `Submit` to a gateway in this process and one to a
/// gateway child, so the bench cannot rot.
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
        let child = Child::start(Role::Sqlite, &[], Stdio::inherit());
        for (n, addr) in [server.addr, child.socket()].into_iter().enumerate() {
            let mut client = CaseServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let r = client
                .submit(SubmitRequest {
                    submission: Some(testkit::nth(
                        &testkit::example("kai-canguan"),
                        "bench-smoke",
                        n as u64,
                    )),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(
                matches!(r.outcome, Some(submit_response::Outcome::Receipt(_))),
                "{r:?}"
            );
        }
        child.finish();
        println!("bench smoke test: ok");
    });
}
