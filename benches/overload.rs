//! Overload: `Submit` offered at twice what the gateway can take, through the real gRPC server on
//! SQLite, in this process.
//!
//! 1. Capacity: closed loop, `YICHUANG_BENCH_CONCURRENCY` requests in flight (default 64) over 4
//!    HTTP/2 connections for `YICHUANG_BENCH_SECS` (default 5): the most successful `Submit`s per
//!    second, the run's reference.
//! 2. Twice that, open loop: requests issued at a fixed rate (2 × capacity) whatever the answers,
//!    each a distinct application, with the gateway's `[limits] max_in_flight` (default 256).
//!    Prints goodput (successful requests per second) as a share of the capacity, the share
//!    shed (`UNAVAILABLE`/`RESOURCE_EXHAUSTED`), p99 of the successful ones measured from when
//!    each was due (so a late send counts against it), and the gateway's peak RSS in each phase
//!    (VmHWM, reset between phases through /proc/<pid>/clear_refs). Steps 1–3 run the gateway in
//!    a child process of the bench, so its memory is measured apart from the client's.
//! 3. The same offered rate against a gateway with no in-flight bound (`max_in_flight` huge),
//!    for contrast: what queueing instead of shedding costs.
//! 4. Capacity again over TLS with client certificates (the test kit's CA, the examples' hall
//!    as the caller), against the plaintext capacity of step 1 (goal >= 0.85); this gateway too
//!    is a child process, where the plaintext one ran.
//!
//! Steps 1–3 run with `[development] plaintext`, so the figures are the gateway's own.
//!
//! **Cores apart.** On a machine with two or more CPUs the gateway's process is pinned to the
//! first half of the CPUs this bench may use and the load generator (this process) to the rest
//! (`taskset`, from util-linux): at twice the rate the client encodes, sends and reads twice the
//! requests, and on shared cores that work came out of the gateway's CPU, so the share measured
//! the client as much as the gateway. Apart, the client stands where a load generator on another
//! machine would. Steps 1 and 2 are then run again with the cores shared, for contrast.
//! `YICHUANG_BENCH_APART=0` shares them throughout.
//!
//! Goals (issue 15): goodput at twice the capacity >= 0.90 of the capacity, memory flat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use testkit::gateway::Server;
use tonic::transport::Channel;
use yichuang::app::Gateway;
use yichuang::config::{GatewayConfig, LimitsConfig, StoreConfig};
use yichuang::proto::v1::SubmitRequest;
use yichuang::proto::v1::case_service_client::CaseServiceClient;

#[path = "support/procfs.rs"]
mod procfs;
use procfs::{cpu_secs, reset_peak, status_kb};

/// A gateway in a child process of this bench (so its memory is its own, not the client's),
/// on plaintext with `max_in_flight`; ended when dropped.
struct ChildGateway {
    process: std::process::Child,
    addr: std::net::SocketAddr,
}

impl ChildGateway {
    /// Started on `cpus` (a `taskset` list) when given, else wherever this process may run.
    /// Pinned from its start (taskset execs it), so its runtime has as many workers as it has
    /// CPUs, as in a pod given that many.
    fn start(max_in_flight: usize, wire: Wire, cpus: Option<&str>) -> ChildGateway {
        use std::io::BufRead;
        let exe = std::env::current_exe().unwrap();
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", cpus]).arg(exe);
                c
            }
            None => std::process::Command::new(exe),
        };
        command
            .arg("--bench")
            .env("YICHUANG_BENCH_GATEWAY", max_in_flight.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        if wire == Wire::MutualTls {
            // The child serves with this process's test CA and server certificate.
            command.env("YICHUANG_BENCH_PKI", testkit::pki::dir());
        }
        let mut process = command
            .spawn()
            .expect("the bench runs itself as the gateway");
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the child gateway's address");
        let addr = line.trim().parse().expect("an address");
        ChildGateway { process, addr }
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        // Its stdin closes: it stops; killed if it has not within a few seconds.
        drop(self.process.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The child: a gateway with `max_in_flight`, its address on stdout, until stdin closes.
fn child(max_in_flight: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let wire = match std::env::var_os("YICHUANG_BENCH_PKI") {
            Some(pki) => Serving::MutualTls(pki.into()),
            None => Serving::Plaintext,
        };
        let server = start_gateway(dir.path().join("child.db"), max_in_flight, wire).await;
        println!("{}", server.addr);
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
        })
        .await;
        server.stop().await;
    });
}

/// How the bench reaches a gateway.
#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Plaintext,
    MutualTls,
}

/// How a gateway serves: plaintext, or mTLS with the test PKI of the bench that started it (a
/// directory with `ca.pem`, `server.pem` and `server-key.pem`).
enum Serving {
    Plaintext,
    MutualTls(std::path::PathBuf),
}

async fn start_gateway(path: std::path::PathBuf, max_in_flight: usize, wire: Serving) -> Server {
    let root = testkit::root();
    let mut config = GatewayConfig {
        catalog_dir: root.join("config/catalog"),
        calendar_dir: root.join("config/calendar"),
        store: StoreConfig::Sqlite { path },
        bus: yichuang::config::BusConfig {
            relay: false,
            ..Default::default()
        },
        // One client stands for every window: no call rates, only the in-flight bound.
        limits: LimitsConfig {
            max_in_flight,
            ..LimitsConfig::default().without_rates()
        },
        ..GatewayConfig::default()
    };
    match wire {
        Serving::Plaintext => config.development.plaintext = true,
        Serving::MutualTls(pki) => {
            config.server.tls = yichuang::config::TlsConfig {
                cert: pki.join("server.pem"),
                key: pki.join("server-key.pem"),
                client_ca: pki.join("ca.pem"),
            };
        }
    }
    // Several gateways run in this process: the internal listener on a free port each.
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    let gateway = Arc::new(Gateway::from_config(&config).await.expect("gateway"));
    Server::start(gateway).await
}

async fn clients(addr: std::net::SocketAddr, wire: Wire) -> Vec<CaseServiceClient<Channel>> {
    let mut out = Vec::new();
    for _ in 0..4 {
        let channel = match wire {
            Wire::Plaintext => Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .expect("connect"),
            Wire::MutualTls => {
                let who = testkit::pki::Who::examples_hall();
                Channel::from_shared(format!("https://{addr}"))
                    .unwrap()
                    .tls_config(testkit::pki::client_tls(Some(&who)))
                    .unwrap()
                    .connect()
                    .await
                    .expect("connect over mTLS")
            }
        };
        out.push(CaseServiceClient::new(channel));
    }
    out
}

/// Closed loop: `concurrency` callers for `secs`; successful requests per second.
async fn capacity(
    addr: std::net::SocketAddr,
    wire: Wire,
    run: &str,
    concurrency: u64,
    secs: u64,
) -> f64 {
    let clients = clients(addr, wire).await;
    let base = Arc::new(testkit::example("kai-canguan"));
    let (counter, ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let stop = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = clients[i as usize % clients.len()].clone();
        let (base, counter, ok, run) = (
            base.clone(),
            counter.clone(),
            ok.clone(),
            format!("overload-{run}"),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let request = SubmitRequest {
                    submission: Some(testkit::nth(&base, &run, n)),
                };
                if client.submit(request).await.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ok.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

struct Overload {
    /// The first error that was not a shed, if any.
    first_failure: Option<String>,
    /// Cores the gateway used meanwhile.
    gateway_cores: f64,
    offered: f64,
    goodput: f64,
    shed: u64,
    failed: u64,
    sent: u64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_kb: u64,
}

/// Open loop: `rate` requests per second for `secs`, each sent when due whatever the earlier
/// ones became; latencies from when each was due.
async fn open_loop(
    addr: std::net::SocketAddr,
    pid: u32,
    run: &str,
    rate: f64,
    secs: u64,
) -> Overload {
    let clients = clients(addr, Wire::Plaintext).await;
    let base = testkit::example("kai-canguan");
    let run = format!("overload-{run}");
    // Built before the clock starts, as a load generator's requests are: the client's CPU
    // during the phase goes to sending and reading, not to making applications.
    let build = |n: u64| SubmitRequest {
        submission: Some(testkit::nth(&base, &run, n)),
    };
    let mut requests = (0..=(rate * secs as f64) as u64)
        .map(build)
        .collect::<Vec<_>>()
        .into_iter();
    let (shed, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).unwrap()));
    reset_peak(pid);
    let cpu_before = cpu_secs(pid);
    let start = Instant::now();
    let span = Duration::from_secs(secs);
    let mut sent = 0u64;
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed() < span {
        tick.tick().await;
        let due_now = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due_now {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            let mut client = clients[sent as usize % clients.len()].clone();
            let request = requests.next().unwrap_or_else(|| build(sent));
            let (shed, failed, hist) = (shed.clone(), failed.clone(), hist.clone());
            let first_failure = first_failure.clone();
            tasks.push(tokio::spawn(async move {
                match client.submit(request).await {
                    Ok(_) => {
                        let us = due.elapsed().as_micros() as u64;
                        hist.lock().unwrap().record(us.max(1)).unwrap();
                    }
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                        ) =>
                    {
                        shed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
                    }
                }
            }));
            sent += 1;
        }
    }
    let issued_for = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    // Goodput over the whole run, to the last answer: a backlog served late is not free.
    let elapsed = start.elapsed().as_secs_f64();
    let hist = hist.lock().unwrap();
    let first_failure = first_failure.lock().unwrap().clone();
    Overload {
        first_failure,
        gateway_cores: (cpu_secs(pid) - cpu_before) / elapsed,
        offered: sent as f64 / issued_for,
        goodput: hist.len() as f64 / elapsed,
        shed: shed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        sent,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        peak_rss_kb: status_kb(pid, "VmHWM"),
    }
}

/// The CPUs this process may run on (`taskset -p -c`), empty when that cannot be read.
fn allowed_cpus() -> Vec<usize> {
    let Ok(out) = std::process::Command::new("taskset")
        .args(["-p", "-c", &std::process::id().to_string()])
        .output()
    else {
        return Vec::new();
    };
    // "pid 12's current affinity list: 0-3,6"
    let text = String::from_utf8_lossy(&out.stdout);
    let list = text.rsplit(": ").next().unwrap_or("").trim();
    list.split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?..=b.parse().ok()?).collect::<Vec<usize>>()),
            None => Some(vec![part.parse().ok()?]),
        })
        .flatten()
        .collect()
}

/// Pins every thread of process `pid` to `cpus` (a `taskset` list); threads it starts later
/// inherit it. False when it could not.
fn pin(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The gateway's CPUs and the load generator's, as `taskset` lists: the first half of the CPUs
/// this process may use and the rest; `None` with fewer than two or `YICHUANG_BENCH_APART=0`.
fn cores_apart() -> Option<(String, String)> {
    if std::env::var("YICHUANG_BENCH_APART").is_ok_and(|v| v == "0") {
        return None;
    }
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return None;
    }
    let list = |part: &[usize]| {
        part.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (gateway, client) = cpus.split_at(cpus.len() / 2);
    Some((list(gateway), list(client)))
}

fn report(name: &str, o: &Overload, max: f64) {
    if let Some(f) = &o.first_failure {
        println!("  first failure: {f}");
    }
    println!(
        "{name:<34} offered {:>6.0}/s  goodput {:>6.0}/s = {:.2} of max  shed {:>4.1}%  failed {}  p50 {:>8.2} ms  p99 {:>8.2} ms  peak RSS {} MiB",
        o.offered,
        o.goodput,
        o.goodput / max,
        100.0 * o.shed as f64 / o.sent.max(1) as f64,
        o.failed,
        o.p50_ms,
        o.p99_ms,
        o.peak_rss_kb / 1024
    );
}

fn main() {
    if let Ok(max) = std::env::var("YICHUANG_BENCH_GATEWAY") {
        child(max.parse().expect("max_in_flight"));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a quick smoke test.
    let bench = std::env::args().any(|a| a == "--bench");
    // The load generator is pinned before its runtime starts. The runtime keeps a worker per
    // CPU this process may use, so the shared-cores phase at the end has them all.
    let apart = if bench { cores_apart() } else { None };
    let all_cpus = allowed_cpus();
    if let Some((_, client)) = &apart {
        assert!(
            pin(std::process::id(), client),
            "taskset pins the bench to {client}"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(match all_cpus.len() {
            // taskset could not tell: as tokio would choose.
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        })
        .enable_all()
        .build()
        .unwrap();
    if !bench {
        runtime.block_on(smoke());
        return;
    }
    runtime.block_on(async {
        let secs = testkit::env_or("YICHUANG_BENCH_SECS", 5);
        let concurrency = testkit::env_or("YICHUANG_BENCH_CONCURRENCY", 64);
        let bound = testkit::env_or("YICHUANG_BENCH_MAX_IN_FLIGHT", 256) as usize;
        let gateway_cpus = apart.as_ref().map(|(g, _)| g.as_str());
        println!(
            "overload (Submit, SQLite, {secs} s per phase, capacity at {concurrency} in flight, max_in_flight {bound}; gateway in a child process, RSS is the gateway's)"
        );
        match &apart {
            Some((gateway, client)) => println!(
                "cores apart: the gateway on CPU {gateway}, the load generator on CPU {client} (YICHUANG_BENCH_APART=0 shares them)"
            ),
            None => println!("cores shared by the gateway and the load generator"),
        }
        let bounded = ChildGateway::start(bound, Wire::Plaintext, gateway_cpus);
        let (max, max_cores, peak_capacity) =
            capacity_of(&bounded, Wire::Plaintext, concurrency, secs).await;
        let shed = open_loop(bounded.addr, bounded.pid(), "twice", 2.0 * max, secs).await;
        report("2x capacity, shedding", &shed, max);
        let rss_after = status_kb(bounded.pid(), "VmRSS");
        drop(bounded);

        let unbounded = ChildGateway::start(usize::MAX, Wire::Plaintext, gateway_cpus);
        let _ = capacity(unbounded.addr, Wire::Plaintext, "warm", concurrency, 1).await;
        let queued = open_loop(unbounded.addr, unbounded.pid(), "queued", 2.0 * max, secs).await;
        report("2x capacity, no bound (queueing)", &queued, max);
        drop(unbounded);

        // What the gateway did with the CPU it got.
        let per_core = (shed.goodput / shed.gateway_cores) / (max / max_cores);
        println!(
            "gateway CPU: {max_cores:.2} cores at capacity, {:.2} at 2x with shedding; successful Submits per gateway core-second at 2x = {per_core:.2} of capacity's",
            shed.gateway_cores
        );
        let share = shed.goodput / max;
        println!(
            "goal: goodput at 2x capacity >= 0.90 of capacity: {share:.2} ({})",
            if share >= 0.9 { "met" } else { "not met" }
        );
        println!(
            "memory (gateway): peak RSS {} MiB at capacity, {} MiB at 2x with shedding ({:.2}x), RSS after {} MiB",
            peak_capacity / 1024,
            shed.peak_rss_kb / 1024,
            shed.peak_rss_kb as f64 / peak_capacity.max(1) as f64,
            rss_after / 1024
        );
        let tls = ChildGateway::start(bound, Wire::MutualTls, gateway_cpus);
        let _ = capacity(tls.addr, Wire::MutualTls, "warm", concurrency, 1).await;
        let over_tls = capacity(tls.addr, Wire::MutualTls, "mtls", concurrency, secs).await;
        drop(tls);
        let ratio = over_tls / max;
        println!(
            "Submit over mTLS (closed loop)     {over_tls:>6.0} req/s = {ratio:.2} of plaintext ({max:.0} req/s)"
        );
        println!(
            "goal: Submit with mTLS >= 0.85 of plaintext: {ratio:.2} ({})",
            if ratio >= 0.85 { "met" } else { "not met" }
        );

        if apart.is_some() {
            // For contrast, steps 1 and 2 with the cores shared, as the bench ran before.
            let every = all_cpus
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",");
            assert!(pin(std::process::id(), &every), "taskset frees the bench");
            let shared = ChildGateway::start(bound, Wire::Plaintext, Some(&every));
            let (max, _, _) = capacity_of(&shared, Wire::Plaintext, concurrency, secs).await;
            let shed = open_loop(shared.addr, shared.pid(), "shared", 2.0 * max, secs).await;
            report("cores shared: 2x capacity, shedding", &shed, max);
            println!(
                "cores shared (for contrast, no goal): goodput at 2x = {:.2} of capacity ({max:.0} req/s); the load generator's work at twice the rate comes out of the gateway's CPU",
                shed.goodput / max
            );
        }
    });
}

/// A warm-up second, then the closed-loop capacity of `gateway`: requests per second, the
/// cores the gateway used for them, and its peak RSS (kB).
async fn capacity_of(
    gateway: &ChildGateway,
    wire: Wire,
    concurrency: u64,
    secs: u64,
) -> (f64, f64, u64) {
    let _ = capacity(gateway.addr, wire, "warm", concurrency, 1).await;
    reset_peak(gateway.pid());
    let rss_start = status_kb(gateway.pid(), "VmRSS");
    let cpu_before = (cpu_secs(gateway.pid()), Instant::now());
    let max = capacity(gateway.addr, wire, "max", concurrency, secs).await;
    let peak = status_kb(gateway.pid(), "VmHWM");
    let cores = (cpu_secs(gateway.pid()) - cpu_before.0) / cpu_before.1.elapsed().as_secs_f64();
    println!(
        "capacity (closed loop)             {max:>6.0} req/s  peak RSS {} MiB (RSS before {} MiB)",
        peak / 1024,
        rss_start / 1024
    );
    (max, cores, peak)
}

/// Under `cargo test --benches`: a short open loop against a small bound, so the bench cannot rot.
async fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_gateway(dir.path().join("smoke.db"), 4, Serving::Plaintext).await;
    let o = open_loop(server.addr, std::process::id(), "smoke", 200.0, 1).await;
    assert!(
        o.goodput > 0.0 && o.failed == 0,
        "smoke: {} ok, {} failed",
        o.goodput,
        o.failed
    );
    println!("bench smoke test: ok");
}
