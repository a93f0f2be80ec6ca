//! Throughput of `PreCheck` and `Submit` through the real gRPC server, on SQLite and on
//! PostgreSQL, against an empty tonic handler measured the same way in the same run (these
//! machines are shared and noisy, so only ratios mean something).
//!
//! Each scenario runs `YICHUANG_BENCH_SECS` seconds (default 3) with `YICHUANG_BENCH_CONCURRENCY`
//! requests in flight (default 128) over 4 HTTP/2 connections. `Submit` sends a distinct
//! submission each time (the kai-canguan example under a new id and date), so every request
//! creates and durably commits a case.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use yichuang::api::{Gateway, serve};
use yichuang::config::{GatewayConfig, StoreConfig};
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::case_service_server::{CaseService, CaseServiceServer};
use yichuang::proto::v1::*;

/// The baseline: a CaseService that decodes the same requests and answers at once.
struct Empty;

#[tonic::async_trait]
impl CaseService for Empty {
    async fn pre_check(
        &self,
        _: Request<PreCheckRequest>,
    ) -> Result<Response<PreCheckResponse>, Status> {
        Ok(Response::new(PreCheckResponse::default()))
    }
    async fn submit(&self, _: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        Ok(Response::new(SubmitResponse::default()))
    }
    async fn get_case(
        &self,
        _: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        Ok(Response::new(GetCaseResponse::default()))
    }
    async fn list_cases(
        &self,
        _: Request<ListCasesRequest>,
    ) -> Result<Response<ListCasesResponse>, Status> {
        Ok(Response::new(ListCasesResponse::default()))
    }
    async fn deliver(
        &self,
        _: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        Ok(Response::new(DeliverResponse::default()))
    }
    async fn supplement(
        &self,
        _: Request<yichuang::proto::v1::SupplementRequest>,
    ) -> Result<Response<yichuang::proto::v1::SupplementResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    // The feeds are not measured here: an empty stream each.
    type WindowFeedStream = yichuang::api::FeedStream;
    type WatchCaseStream = yichuang::api::FeedStream;
    async fn window_feed(
        &self,
        _: Request<WindowFeedRequest>,
    ) -> Result<Response<Self::WindowFeedStream>, Status> {
        let (_, rx) = tokio::sync::mpsc::channel(1);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
    async fn watch_case(
        &self,
        _: Request<WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        let (_, rx) = tokio::sync::mpsc::channel(1);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn example() -> Submission {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cases/kai-canguan.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("example")).expect("example parses")
}

/// The n-th distinct submission: a new id, and a new day every 5,000 so the 4-digit daily
/// sequence never runs out.
fn nth(base: &Submission, run: &str, n: u64) -> Submission {
    let mut s = base.clone();
    s.submission_id = format!("bench-{run}-{n}");
    if let Some(ts) = &mut s.submitted_at {
        ts.seconds += (n / 5000) as i64 * 86_400;
    }
    s
}

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
    let secs = env_or("YICHUANG_BENCH_SECS", 3);
    let concurrency = env_or("YICHUANG_BENCH_CONCURRENCY", 128);
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
    let base = Arc::new(example());
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = CaseServiceClient::new(channels[i as usize % channels.len()].clone());
        let (base, counter, run) = (base.clone(), counter.clone(), run.to_string());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            while Instant::now() < stop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let s = nth(&base, &run, n);
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

async fn start_empty() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(CaseServiceServer::new(Empty))
            .serve_with_incoming(yichuang::api::incoming(listener))
            .await
            .unwrap();
    });
    addr
}

async fn start_gateway(store: StoreConfig) -> std::net::SocketAddr {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = GatewayConfig {
        catalog_dir: root.join("config/catalog"),
        calendar_dir: root.join("config/calendar"),
        store,
        bus: yichuang::config::BusConfig {
            relay: false,
            ..Default::default()
        },
        ..GatewayConfig::default()
    };
    let gateway = Arc::new(Gateway::from_config(&config).await.expect("gateway"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        serve(gateway, listener, std::future::pending())
            .await
            .unwrap()
    });
    addr
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

fn main() {
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
        let empty = start_empty().await;
        let sqlite = start_gateway(StoreConfig::Sqlite { path: dir.path().join("bench.db") }).await;
        println!("intake throughput ({} s per scenario)", env_or("YICHUANG_BENCH_SECS", 3));
        // Warm up connections and code paths, then measure the baseline first and last.
        let _ = load(empty, Call::Submit, "warm").await;
        let base1 = load(empty, Call::Submit, "empty1").await;
        report("empty handler", &base1, base1.rps);
        let pre = load(sqlite, Call::PreCheck, "pre").await;
        let sub = load(sqlite, Call::Submit, "sqlite").await;
        let pg = match std::env::var("YICHUANG_TEST_PG_URL") {
            Ok(url) => {
                let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let addr = start_gateway(StoreConfig::Postgres { url, schema, pool_size: 16 }).await;
                let pre = load(addr, Call::PreCheck, "pgpre").await;
                Some((pre, load(addr, Call::Submit, "pg").await))
            }
            Err(_) => None,
        };
        let base2 = load(empty, Call::Submit, "empty2").await;
        let baseline = (base1.rps + base2.rps) / 2.0;
        println!("baseline (mean of two empty-handler runs): {baseline:.0} req/s");
        report("PreCheck (no store)", &pre, baseline);
        report("Submit, SQLite (durable commit)", &sub, baseline);
        match pg {
            Some((pre, sub)) => {
                report("PreCheck, PostgreSQL gateway", &pre, baseline);
                report("Submit, PostgreSQL", &sub, baseline);
            }
            None => println!("Submit, PostgreSQL: not measured (YICHUANG_TEST_PG_URL unset; `make bench` sets it)"),
        }
        let ratio = sub.rps / baseline;
        println!(
            "goal: Submit on SQLite >= 0.50 of the empty handler: {ratio:.2} ({})",
            if ratio >= 0.5 { "met" } else { "not met" }
        );
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
        let addr = start_gateway(StoreConfig::Sqlite {
            path: dir.path().join("smoke.db"),
        })
        .await;
        let mut client = CaseServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let r = client
            .submit(SubmitRequest {
                submission: Some(nth(&example(), "smoke", 7)),
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
