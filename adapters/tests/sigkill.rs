//! The adapter process killed with SIGKILL while tasks are in flight, then started again: no
//! task is lost, and none is submitted twice to a department system that reports duplicates
//! (a redelivered task is looked up before it is submitted). Stopped with SIGTERM instead, it
//! finishes the tasks in hand first: every case the department took is reported.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::broker::{Broker, bus};
use testkit::repo;
use testkit::server::{free_port, listener};
use testkit::tasks::{assert_one_outcome_each, task};
use yichuang_sim::core::Behaviour;
use yichuang_sim::http_json::{HttpJsonSim, Settings};

/// The shipped scjg file with test timings.
fn department_file() -> String {
    let shipped = std::fs::read_to_string(repo().join("config/departments/scjg.yaml")).unwrap();
    let mut text = shipped.clone();
    for (from, to) in [
        ("timeout_secs: 10", "timeout_secs: 1"),
        ("interval_secs: 60", "interval_secs: 1"),
        ("initial_backoff_secs: 10", "initial_backoff_secs: 1"),
        ("max_backoff_secs: 600", "max_backoff_secs: 4"),
        ("max_attempts: 8", "max_attempts: 30"),
        ("requests_per_second: 5", "requests_per_second: 50"),
        ("  - { from: \"01:00\", to: \"02:00\" }\n", ""),
        ("maintenance:\n", "maintenance: []\n"),
    ] {
        assert!(text.contains(from), "the shipped file has {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The adapter's settings in a directory of their own: 市场监管's department file, the test's
/// bus, the listen address from the environment.
fn settings(bus: &yichuang::config::BusConfig) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("departments")).unwrap();
    std::fs::write(dir.path().join("departments/scjg.yaml"), department_file()).unwrap();
    std::fs::write(
        dir.path().join("adapter.toml"),
        format!(
            "departments_dir = \"departments\"\n[http]\nlisten = \"${{YICHUANG_ADAPTER_LISTEN}}\"\n[bus]\nurl = \"{}\"\nprefix = \"{}\"\nretry_delays_secs = [1, 2, 4]\ntimeout_secs = 5\n[log]\nformat = \"text\"\n",
            bus.url, bus.prefix
        ),
    )
    .unwrap();
    dir
}

struct Process {
    child: Child,
    http: String,
}

async fn start(dir: &std::path::Path, endpoint: &str) -> Process {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_yichuang-adapter"))
        .args(["--config", dir.join("adapter.toml").to_str().unwrap()])
        .args(["--department", "scjg"])
        .env("YICHUANG_ADAPTER_LISTEN", format!("127.0.0.1:{port}"))
        .env("SCJG_ENDPOINT", endpoint)
        .env("SCJG_CLIENT_ID", "yichuang")
        .env("SCJG_CLIENT_SECRET", "sim-secret")
        .env("YICHUANG_LOG_FORMAT", "json")
        .env("RUST_LOG", testkit::logfile::SUITE_FILTER)
        .stdout(Stdio::null())
        .stderr(testkit::child_log("adapter"))
        .spawn()
        .expect("the adapter binary starts");
    let http = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("{http}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the adapter becomes ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Process { child, http }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_killed_mid_flight_loses_nothing_and_submits_nothing_twice() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let (listener, endpoint) = listener().await;
    let sim = HttpJsonSim::new(Settings {
        behaviour: Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 2000,
            hang: 0.2,
            hang_ms: 700, // answers that arrive while the process is being killed
            ..Behaviour::default()
        },
        ..Settings::default()
    });
    tokio::spawn(sim.clone().serve(listener));

    let dir = settings(&bus);

    let mut adapter = start(dir.path(), &endpoint).await;
    let tasks: Vec<_> = (0..40).map(|n| task("scjg", "SP-JY", n)).collect();
    let ids: Vec<String> = testkit::tasks::task_ids(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    // Killed while some tasks are with the department and others still queued.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.sim.stats().cases < 10 {
        assert!(Instant::now() < deadline, "the adapter submits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    adapter.child.kill().unwrap(); // SIGKILL
    adapter.child.wait().unwrap();
    let at_kill = sim.sim.stats().cases;
    assert!(
        at_kill < 40,
        "killed mid-flight ({at_kill} of 40 submitted)"
    );

    let mut adapter = start(dir.path(), &endpoint).await;
    assert!(adapter.http.starts_with("http://"));
    let results = harness.results_for(&ids, Duration::from_secs(90)).await;
    assert_one_outcome_each(&results, &ids);
    let stats = sim.sim.stats();
    assert_eq!(
        stats.cases, 40,
        "every task reached the department: {stats:?}"
    );
    assert_eq!(stats.duplicates, 0, "none submitted twice: {stats:?}");
    adapter.child.kill().unwrap();
    adapter.child.wait().unwrap();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_adapter_finish_the_tasks_in_hand_and_take_no_more() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let (listener, endpoint) = listener().await;
    let sim = HttpJsonSim::new(Settings {
        behaviour: Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 2000,
            hang: 1.0,
            hang_ms: 600, // every call is slow: some are always in flight
            ..Behaviour::default()
        },
        ..Settings::default()
    });
    tokio::spawn(sim.clone().serve(listener));
    let dir = settings(&bus);

    let mut adapter = start(dir.path(), &endpoint).await;
    let tasks: Vec<_> = (0..40).map(|n| task("scjg", "SP-JY", n)).collect();
    let ids: Vec<String> = testkit::tasks::task_ids(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.sim.stats().cases < 3 {
        assert!(Instant::now() < deadline, "the adapter submits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = Command::new("kill")
        .args(["-TERM", &adapter.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = adapter.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the adapter exits within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    let taken = sim.sim.stats().cases;
    assert!(taken < 40, "stopped mid-run ({taken} of 40 submitted)");
    // Every case the department took before the adapter stopped is reported: the task in hand
    // was finished, not cut between the department's answer and the result.
    let accepted = harness
        .results_until(Duration::from_secs(20), Duration::from_millis(500), |_| {
            true
        })
        .await;
    let mut reported: Vec<String> = accepted
        .iter()
        .filter(|g| g.kind() == yichuang::proto::v1::ResultKind::Accepted)
        .map(|g| g.result.task_id.clone())
        .collect();
    reported.sort();
    reported.dedup();
    assert_eq!(
        reported.len() as u64,
        taken,
        "each case the department took has its ACCEPTED before the adapter exits"
    );

    // The rest waited in the queue: the next adapter finishes them, none twice.
    let mut adapter = start(dir.path(), &endpoint).await;
    let mut results = harness.results_for(&ids, Duration::from_secs(90)).await;
    for g in accepted {
        results.entry(g.result.task_id.clone()).or_default().push(g);
    }
    assert_one_outcome_each(&results, &ids);
    let stats = sim.sim.stats();
    assert_eq!(
        stats.cases, 40,
        "every task reached the department: {stats:?}"
    );
    assert_eq!(stats.duplicates, 0, "none submitted twice: {stats:?}");
    adapter.child.kill().unwrap();
    adapter.child.wait().unwrap();
    harness.remove().await;
}
