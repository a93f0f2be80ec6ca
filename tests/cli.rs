//! The `yichuang` binary as a shell user meets it: exit codes, messages with file and line,
//! JSON on stdout, and a gateway killed with SIGKILL that loses no accepted case.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::server::free_port;
use testkit::{repo, text, yichuang};

#[test]
fn catalog_check_passes_on_the_shipped_catalog() {
    let out = yichuang!(&["catalog", "check", "config/catalog"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("7 departments, 21 materials, 8 items, 2 bundles: ok"));
}

#[test]
fn catalog_check_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "[[department]]\ncode = \"a\"\nname = \"甲\"\nbody_code = \"116401000101330185\"\n\n[[department]]\ncode = \"a\"\nname = \"乙\"\nbody_code = \"116401000101330185\"\n\n[[department]]\ncode = \"b\"\nname = \"丙\"\nbody_code = \"116401000101330180\"\n",
    )
    .unwrap();
    let out = yichuang!(&["catalog", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("broken.toml:7: duplicate department code \"a\" (first defined at"),
        "{err}"
    );
    assert!(err.contains("broken.toml:14: department b: body_code 116401000101330180 is not a valid unified social credit code"), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
}

#[test]
fn calendar_commands_answer_on_the_official_calendar() {
    let out = yichuang!(&["calendar", "add", "2019-09-30", "3"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "2019-10-10",
        "{}",
        text(&out.stderr)
    );
    let out = yichuang!(&["calendar", "is-workday", "2019-10-12"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("is a working day"));
    let out = yichuang!(&["calendar", "is-workday", "2019-10-07"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a day off answers with exit code 3"
    );
    let out = yichuang!(&["calendar", "add", "2026-12-20", "30"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no working-day calendar for 2027"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bus_declare_against_an_unreachable_broker_fails_without_printing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "catalog_dir = \"{root}/config/catalog\"\n[bus]\nurl = \"amqp://gw:s3cret@127.0.0.1:1/%2f\"\ntimeout_secs = 5\n",
            root = repo().display()
        ),
    )
    .unwrap();
    let out = yichuang!(&["bus", "declare", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach RabbitMQ at amqp://gw:***@127.0.0.1:1/%2f"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// A gateway process on its own SQLite file and port.
struct Server {
    child: Child,
    url: String,
}

fn start_server(data: &Path, port: u16) -> Server {
    start_server_with(data, port, "[bus]\nrelay = false\n")
}

/// Starts a gateway whose configuration ends with `extra` (a `[bus]` section). It logs JSON
/// lines at the suite's level to the suite's log directory.
fn start_server_with(data: &Path, port: u16, extra: &str) -> Server {
    let config = data.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "catalog_dir = \"{root}/config/catalog\"\ncalendar_dir = \"{root}/config/calendar\"\n[limits]\nper_caller = {{ per_second = 0, burst = 0 }}\nper_hall = {{ per_second = 0, burst = 0 }}\n[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n[server.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n[store]\nkind = \"sqlite\"\npath = \"{db}\"\n[log]\nformat = \"json\"\nlevel = \"{level}\"\n{extra}",
            root = repo().display(),
            cert = testkit::pki::server_files().0.display(),
            key = testkit::pki::server_files().1.display(),
            ca = testkit::pki::ca_file().display(),
            db = data.join("cases.db").display(),
            level = testkit::logfile::SUITE_FILTER,
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_yichuang"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(testkit::child_log("serve"))
        .spawn()
        .expect("starts the gateway");
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while yichuang!(&["case", "list", "--server", &url, "--page-size", "1"])
        .status
        .code()
        != Some(0)
    {
        assert!(
            Instant::now() < deadline,
            "the gateway did not answer within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url }
}

#[test]
fn client_commands_print_json_and_exit_codes_and_a_sigkilled_gateway_keeps_its_cases() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_server(data.path(), port);

    let out = yichuang!(&[
        "case",
        "submit",
        "--server",
        &server.url,
        "--file",
        "examples/cases/kai-canguan.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let number = receipt["receipt"]["caseNumber"]
        .as_str()
        .unwrap()
        .to_string();

    let out = yichuang!(&[
        "case",
        "submit",
        "--server",
        &server.url,
        "--file",
        "examples/cases/bdc-deficient.json",
    ]);
    assert_eq!(out.status.code(), Some(3), "a notice exits with 3");
    let notice: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        notice["notice"]["deficiencies"].as_array().unwrap().len(),
        3
    );

    // The same submissionId with other content: exit 5, naming the case.
    let mut changed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/cases/kai-canguan.json")).unwrap(),
    )
    .unwrap();
    changed["fields"]["seats"] = "120".into();
    let changed_path = data.path().join("changed.json");
    std::fs::write(&changed_path, changed.to_string()).unwrap();
    let out = yichuang!(&[
        "case",
        "submit",
        "--server",
        &server.url,
        "--file",
        changed_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&number), "{}", text(&out.stderr));

    // A submission the server refuses with INVALID_ARGUMENT: exit 4, naming the field.
    changed["submissionId"] = "".into();
    std::fs::write(&changed_path, changed.to_string()).unwrap();
    let out = yichuang!(&[
        "case",
        "submit",
        "--server",
        &server.url,
        "--file",
        changed_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("submissionId: is required"),
        "{}",
        text(&out.stderr)
    );

    let bad = data.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"submissionId\": \"x\",\n  \"itemz\": []\n}\n").unwrap();
    let out = yichuang!(&[
        "case",
        "precheck",
        "--server",
        &server.url,
        "--file",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.json:3:") && err.contains("itemz"),
        "{err}"
    );

    // SIGKILL right after the answer: the receipt was only sent after the commit. (This shows
    // crash durability; power-loss durability rests on synchronous = FULL, checked in
    // store::sqlite's unit tests.)
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut server = start_server(data.path(), port);
    let out = yichuang!(&["case", "get", "--server", &server.url, &number]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let case: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(case["case"]["caseNumber"], number.as_str());
    assert_eq!(case["case"]["tasks"].as_array().unwrap().len(), 2);

    // 好差评 from the terminal: the server's refusals, a bad level (exit 4) and a case not yet
    // delivered (exit 1), each saying why.
    let evaluate = |level: &str| {
        yichuang!(&[
            "case",
            "evaluate",
            "--server",
            &server.url,
            &number,
            "--level",
            level,
            "--score",
            "服务效率=5",
            "--score",
            "服务水平=5",
            "--score",
            "服务态度=5",
        ])
    };
    let out = evaluate("7");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("evaluation.level: 7"),
        "{}",
        text(&out.stderr)
    );
    let out = evaluate("5");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("only a delivered"),
        "{}",
        text(&out.stderr)
    );

    let out = yichuang!(&["case", "get", "--server", &server.url, "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("NotFound"),
        "{}",
        text(&out.stderr)
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// SIGKILL in the middle of publishing: after a restart every task of every answered case is on
/// its queue; a task published twice carries the same `message_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_publishing_publishes_every_task_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let prefix = testkit::broker::prefix();
    let url = testkit::broker::amqp_url();
    // Results are taken only from the departments' listed users (none are sent here).
    let user = yichuang::bus::user(&url);
    let bus = format!(
        "[bus]\nurl = \"{url}\"\nprefix = \"{prefix}\"\n[bus.department_users]\nscjg = \"{user}\"\nxf = \"{user}\"\n"
    );
    let mut server = start_server_with(data.path(), port, &bus);
    let mut client = testkit::gateway::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let base = testkit::example("kai-canguan");
    let mut answered = Vec::new();
    for n in 0..400 {
        if n == 150 {
            server.child.kill().unwrap(); // mid-stream: the relay is publishing the first cases
        }
        let mut s = base.clone();
        s.submission_id = format!("kill-{n}");
        match client
            .submit(yichuang::proto::v1::SubmitRequest {
                submission: Some(s),
            })
            .await
        {
            Ok(r) => match r.into_inner().outcome {
                Some(yichuang::proto::v1::submit_response::Outcome::Receipt(r)) => {
                    answered.extend(r.items.into_iter().map(|i| (i.department, i.task_id)))
                }
                other => panic!("{other:?}"),
            },
            Err(_) => break,
        }
    }
    // Killed above; a run that ended early (an error before the kill) must not wait forever.
    let _ = server.child.kill();
    server.child.wait().unwrap();
    assert!(
        answered.len() >= 200,
        "at least the first 100 cases were answered: {}",
        answered.len()
    );
    let mut server = start_server_with(data.path(), port, &bus);

    let config = yichuang::config::BusConfig {
        url,
        prefix,
        ..Default::default()
    };
    let broker = testkit::broker::Broker::open(&config).await;
    let mut seen: std::collections::HashMap<String, u32> = Default::default();
    for department in ["scjg", "xf"] {
        let want = answered.iter().filter(|(d, _)| d == department).count();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = seen
                .keys()
                .filter(|id| answered.iter().any(|(d, t)| d == department && t == *id))
                .count();
            if got == want {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{department}: {got} of {want} tasks after the restart"
            );
            if let Some(m) = broker.next(department, Duration::from_secs(2)).await {
                *seen
                    .entry(
                        m.delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .unwrap()
                            .to_string(),
                    )
                    .or_default() += 1;
            }
        }
    }
    for (_, task_id) in &answered {
        assert!(seen.contains_key(task_id), "{task_id} missing");
    }
    broker.remove().await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Sends SIGTERM (what Kubernetes sends) to a child process.
fn terminate(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM sent");
}

/// Waits for a child to exit, with a deadline.
fn exit_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_gateway_in_order_and_tells_open_feeds_to_reconnect() {
    use yichuang::proto::v1::WindowFeedRequest;

    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_server(data.path(), port);
    let out = yichuang!(&[
        "case",
        "submit",
        "--server",
        &server.url,
        "--file",
        "examples/cases/kai-canguan.json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The example is accepted at window W03 of hall 640100-DT01.
    let (hall, window) = ("640100-DT01".to_string(), "W03".to_string());

    // A window keeps its feed open, as windows do all day.
    let mut client = testkit::gateway::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let mut feed = client
        .window_feed(WindowFeedRequest {
            hall_code: hall,
            window_code: window,
            cursor: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), feed.message())
        .await
        .expect("the feed answers")
        .unwrap()
        .expect("the case's first entry");
    assert!(first.cursor > 0);

    terminate(&server.child);
    // The open feed is ended with UNAVAILABLE and the cursor to go on from, not cut.
    let last = loop {
        match tokio::time::timeout(Duration::from_secs(20), feed.message())
            .await
            .expect("the feed is ended within 20 s of SIGTERM")
        {
            Ok(Some(_)) => continue, // the rest of the case's history
            Ok(None) => panic!("the feed ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(last.code(), tonic::Code::Unavailable, "{last:?}");
    assert!(last.message().contains("reconnect with cursor"), "{last:?}");
    let status = exit_within(&mut server.child, Duration::from_secs(20));
    assert!(
        status.success(),
        "the gateway exits 0 on SIGTERM: {status:?}"
    );
}
