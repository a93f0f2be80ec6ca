//! The figures on `/metrics` after a run match what the run did. The gateway and a 市场监管
//! adapter handle three cases, one repeat and one deficient submission; both endpoints are
//! scraped and parsed by the Prometheus project's own OpenMetrics parser (the Python client's,
//! in `target/pyenv`, which `make test` installs), strictly: a malformed exposition fails.
//! A test binary of its own: the meters are the process's.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::adapter::Adapter;
use testkit::broker::Broker;
use testkit::example;
use yichuang::proto::v1::{
    DeficiencyCode, GetCaseRequest, SubmitRequest, TaskStatus, submit_response::Outcome,
};

/// One sample: name and labels.
type Key = (String, BTreeMap<String, String>);

/// Parses an exposition with the Prometheus Python client's OpenMetrics parser.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let python = testkit::repo().join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run the suite with `make test`, which creates it (scripts/pyenv.sh)",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(testkit::repo().join("scripts/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let labels = v["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (
                (v["name"].as_str().unwrap().to_string(), labels),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn get(samples: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    *samples.get(&key).unwrap_or_else(|| {
        panic!(
            "no sample {name}{labels:?}; have: {:?}",
            samples.keys().filter(|k| k.0 == name).collect::<Vec<_>>()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_on_both_endpoints_match_what_the_run_did() {
    let bus = testkit::broker::bus();
    let harness = Broker::for_departments(&bus, &["scjg", "xf"]).await;
    let dir = tempfile::tempdir().unwrap();
    let scjg_endpoint = testkit::adapter::scjg_sim(500).await;
    // 消防 has no adapter running: its tasks wait on its queue.
    let adapter = Adapter::start(&bus, vec![testkit::adapter::scjg(&dir, &scjg_endpoint)]).await;

    let mut config = testkit::gateway::with_bus(dir.path(), &bus);
    // The on-time figures come from the tasks' clocks, which the sweeper keeps.
    config.sla.sweep_secs = 1;
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let serving = testkit::gateway::TestGateway::serve(&config).await;
    let metrics = serving.gateway.metrics_addr.unwrap();
    let (gateway, mut client) = (serving.gateway.clone(), serving.client.clone());

    // Three cases, a repeat of the first, and a deficient submission.
    let mut numbers = Vec::new();
    for n in 0..4 {
        let mut s = example("kai-canguan");
        s.submission_id = format!("metrics-{}", n.min(2));
        let answer = client
            .submit(SubmitRequest {
                submission: Some(s),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(Outcome::Receipt(r)) = answer.outcome else {
            panic!("accepted: {answer:?}")
        };
        if n < 3 {
            numbers.push(r.case_number);
        } else {
            assert!(answer.replayed);
        }
    }
    let answer = client
        .submit(SubmitRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Notice(notice)) = answer.outcome else {
        panic!("bdc-deficient is deficient: {answer:?}")
    };
    let mut told = BTreeMap::<String, f64>::new();
    for d in &notice.deficiencies {
        let code = DeficiencyCode::try_from(d.code).unwrap();
        *told
            .entry(
                code.as_str_name()
                    .trim_start_matches("DEFICIENCY_CODE_")
                    .to_lowercase(),
            )
            .or_default() += 1.0;
    }

    // 市场监管 approves the three.
    let deadline = Instant::now() + Duration::from_secs(60);
    for number in &numbers {
        loop {
            let case = client
                .get_case(GetCaseRequest {
                    case_number: number.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .case
                .unwrap();
            if case
                .tasks
                .iter()
                .any(|t| t.department == "scjg" && t.status == TaskStatus::Approved as i32)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{number}: 市场监管 has not approved"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The gateway's figures. Dispatch counts once the broker confirmed: wait for the backlog.
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.store.outbox_backlog().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scrape = |addr: String| async move {
        let response = reqwest::get(addr).await.unwrap();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
        );
        response.text().await.unwrap()
    };
    let decided = |g: &BTreeMap<Key, f64>| {
        g.get(&(
            "yichuang_tasks_decided_total".to_string(),
            [("department", "scjg"), ("item", "SP-JY")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
        .copied()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (g, gateway_text) = loop {
        let text = scrape(format!("http://{metrics}/metrics")).await;
        let g = parse(&text);
        if decided(&g) == Some(3.0) {
            break (g, text);
        }
        assert!(
            Instant::now() < deadline,
            "the sweeper has not counted 3 decided tasks: {:?}",
            decided(&g)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let submissions = "yichuang_submissions_total";
    assert_eq!(get(&g, submissions, &[("outcome", "accepted")]), 3.0);
    assert_eq!(get(&g, submissions, &[("outcome", "replayed")]), 1.0);
    assert_eq!(get(&g, submissions, &[("outcome", "deficient")]), 1.0);
    for (code, n) in &told {
        assert_eq!(
            get(&g, "yichuang_deficiencies_total", &[("code", code)]),
            *n,
            "{code}"
        );
    }
    for (department, item) in [("scjg", "SP-JY"), ("xf", "XF-JC")] {
        let labels = [("department", department), ("item", item)];
        assert_eq!(get(&g, "yichuang_items_accepted_total", &labels), 3.0);
        assert_eq!(get(&g, "yichuang_tasks_dispatched_total", &labels), 3.0);
    }
    assert_eq!(
        get(
            &g,
            "yichuang_tasks_decided_total",
            &[("department", "scjg"), ("item", "SP-JY")]
        ),
        3.0
    );
    assert_eq!(
        get(
            &g,
            "yichuang_results_received_total",
            &[("department", "scjg"), ("kind", "approved")]
        ),
        3.0
    );
    assert_eq!(
        get(
            &g,
            "yichuang_grpc_requests_total",
            &[
                ("service", "CaseService"),
                ("method", "Submit"),
                ("code", "OK")
            ]
        ),
        5.0
    );
    let names = yichuang::bus::Names::new(&bus.prefix);
    assert_eq!(
        get(
            &g,
            "yichuang_queue_messages",
            &[("queue", &names.task_queue("xf"))]
        ),
        3.0,
        "消防's three tasks wait on its queue"
    );
    assert_eq!(
        get(
            &g,
            "yichuang_queue_consumers",
            &[("queue", &names.task_queue("scjg"))]
        ),
        1.0
    );
    assert_eq!(get(&g, "yichuang_queue_scrape_errors", &[]), 0.0);
    let share = get(&g, "yichuang_one_window_item_share", &[("department", "")]);
    assert!((share - 8.0 / 11.0).abs() < 1e-9, "share {share}");

    // The adapter's.
    let adapter_text = scrape(format!("http://{}/metrics", adapter.http)).await;
    let a = parse(&adapter_text);

    // Every series the shipped Grafana dashboard queries is one the endpoints serve.
    let dashboard = std::fs::read_to_string(testkit::repo().join("dashboards/yichuang.json"))
        .expect("the dashboard");
    let mut queried = std::collections::BTreeSet::new();
    for (i, _) in dashboard.match_indices("yichuang_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        queried.insert(name);
    }
    assert!(queried.len() > 10, "the dashboard queries {queried:?}");
    for name in &queried {
        let family = name.trim_end_matches("_bucket").trim_end_matches("_total");
        assert!(
            gateway_text.contains(&format!("# TYPE {family} "))
                || adapter_text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which neither endpoint serves"
        );
    }
    let calls = "yichuang_adapter_legacy_calls_total";
    for operation in ["find", "submit"] {
        assert_eq!(
            get(
                &a,
                calls,
                &[
                    ("department", "scjg"),
                    ("operation", operation),
                    ("outcome", "ok")
                ]
            ),
            3.0,
            "{operation}"
        );
    }
    assert_eq!(
        get(
            &a,
            "yichuang_adapter_legacy_call_duration_seconds_count",
            &[("department", "scjg"), ("operation", "submit")]
        ),
        3.0
    );
    assert!(
        get(
            &a,
            "yichuang_adapter_deliveries_total",
            &[("department", "scjg")]
        ) >= 3.0
    );

    serving.stop().await;
    adapter.task.abort();
    harness.remove().await;
}
