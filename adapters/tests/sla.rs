//! The legal clock end to end: 开餐馆 (kai-canguan) accepted on Monday 2019-10-21, its SP-JY task
//! at 市场监管 (a simulated HTTP/JSON system behind its adapter) with 10 working days promised.
//! The department first asks for materials; the applicant brings them two working days later,
//! and the deadline moves by exactly those two days. Then the department takes too long: the
//! yellow warning and the red alert are raised once each, although two gateway replicas sweep
//! the same PostgreSQL store, and the late decision counts against the department's on-time
//! rate. The gateways run on a clock of the test's own (days pass in seconds); the department's
//! system keeps its own (skewed) clock, as real ones do. Real RabbitMQ and PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use testkit::adapter::Adapter;
use testkit::broker::{Broker, bus};
use testkit::db::Schema;
use testkit::gateway::TestGateway;
use testkit::server::listener;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    CaseEvent, CaseStatus, GetCaseRequest, Material, MaterialForm, OnTimeRatesRequest,
    SubmitRequest, SupplementRequest, TaskStatus, submit_response::Outcome,
};
use yichuang_sim::core::Behaviour;

fn hall(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_str(&format!("{s} +0800"), "%Y-%m-%d %H:%M %z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The gateways' clock: it starts at `start` and runs with real time, plus whatever the test
/// moves it on by.
struct TestClock {
    real: Instant,
    start: DateTime<Utc>,
    moved: Mutex<chrono::Duration>,
}

impl TestClock {
    fn now(&self) -> DateTime<Utc> {
        self.start
            + chrono::Duration::from_std(self.real.elapsed()).unwrap()
            + *self.moved.lock().unwrap()
    }

    /// Moves the clock on to `to` (hall time).
    fn set(&self, to: &str) {
        let delta = hall(to) - self.now();
        *self.moved.lock().unwrap() += delta;
    }
}

async fn history(
    client: &mut CaseServiceClient<tonic::transport::Channel>,
    number: &str,
) -> (yichuang::proto::v1::Case, Vec<CaseEvent>) {
    let got = client
        .get_case(GetCaseRequest {
            case_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (got.case.unwrap(), got.events)
}

/// Waits until the case's history has an entry of `kind` for `task`, and returns the history.
async fn until_event(
    client: &mut CaseServiceClient<tonic::transport::Channel>,
    number: &str,
    task: &str,
    kind: &str,
) -> (yichuang::proto::v1::Case, Vec<CaseEvent>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (case, events) = history(client, number).await;
        if events.iter().any(|e| e.kind == kind && e.task_id == task) {
            return (case, events);
        }
        assert!(
            Instant::now() < deadline,
            "{kind} for {task}: {:?}",
            events
                .iter()
                .map(|e| (&e.kind, &e.task_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_department_gets_one_yellow_and_one_red_alert_and_a_supplement_moves_its_deadline() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg", "xf"]).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock {
        real: Instant::now(),
        start: hall("2019-10-21 09:30"),
        moved: Mutex::new(chrono::Duration::zero()),
    });

    // 市场监管's system: asks for materials first, approves after them; each answer takes
    // 8 s of real time. Its own clock says 2019-11-08 by the time it decides.
    let (l, scjg_endpoint) = listener().await;
    let scjg = yichuang_sim::http_json::HttpJsonSim::new(yichuang_sim::http_json::Settings {
        behaviour: Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 8000,
            reject: 0.0,
            supplement: 1.0,
            clock_skew_secs: (hall("2019-11-08 10:00") - Utc::now()).num_seconds(),
            ..Behaviour::default()
        },
        ..Default::default()
    });
    tokio::spawn(scjg.clone().serve(l));
    let scjg_config = testkit::adapter::scjg(&dir, &scjg_endpoint);
    let adapter = Adapter::start(&bus, vec![scjg_config]).await;

    // Two gateway replicas on one PostgreSQL schema, sweeping every second on the test's clock.
    let schema = Schema::new("sla");
    let mut config = testkit::gateway::replica(&schema, &bus);
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let c = clock.clone();
        let now: yichuang::clock::Now = Arc::new(move || c.now());
        replicas.push(TestGateway::serve_with_clock(&config, now).await);
    }
    let metrics: Vec<_> = replicas
        .iter()
        .map(|r| r.gateway.metrics_addr.unwrap())
        .collect();
    let mut client = replicas[0].client.clone();

    let submission = testkit::example("kai-canguan");
    let answer = client
        .submit(SubmitRequest {
            submission: Some(submission),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("kai-canguan is accepted: {answer:?}")
    };
    let number = receipt.case_number.clone();
    let sp_jy = receipt
        .items
        .iter()
        .find(|i| i.item_code == "SP-JY")
        .unwrap()
        .task_id
        .clone();

    // Dispatched: the clock runs from the acceptance, Monday 2019-10-21; 10 working days.
    let (case, _) = until_event(&mut client, &number, &sp_jy, "task-clock-started").await;
    let task = case.tasks.iter().find(|t| t.task_id == sp_jy).unwrap();
    assert_eq!(task.promised_deadline, "2019-11-04");

    // The department asks for materials (the clock stops) …
    until_event(&mut client, &number, &sp_jy, "task-supplement-required").await;
    // … and the applicant brings them on Wednesday 23rd: two working days later (22nd, 23rd).
    clock.set("2019-10-23 15:00");
    let paper = |code: &str| Material {
        material_code: code.into(),
        form: MaterialForm::Original as i32,
        copies: 1,
        file: None,
    };
    let supplied = client
        .supplement(SupplementRequest {
            case_number: number.clone(),
            supplement_id: "S-1".into(),
            materials: vec![paper("PMT"), paper("ZSZM")],
            task_ids: Vec::new(),
            staff_no: "0342".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        supplied.deficiencies.is_empty(),
        "{:?}",
        supplied.deficiencies
    );
    let (case, events) = until_event(&mut client, &number, &sp_jy, "task-deadline-moved").await;
    let task = case.tasks.iter().find(|t| t.task_id == sp_jy).unwrap();
    assert_eq!(
        task.promised_deadline, "2019-11-06",
        "moved by the 2 paused working days"
    );
    assert_eq!(task.pauses.len(), 1);
    assert_eq!(task.pauses[0].working_days, 2);
    let moved = events
        .iter()
        .find(|e| e.kind == "task-deadline-moved" && e.task_id == sp_jy)
        .unwrap();
    assert!(
        moved.detail.contains("by 2 working days"),
        "{}",
        moved.detail
    );

    // The department takes its time: past 80 % of the promised time, the yellow warning …
    clock.set("2019-11-05 09:00");
    until_event(&mut client, &number, &sp_jy, "task-sla-warning").await;
    // … and past 24:00 on the last day (Wednesday 2019-11-06), the red alert.
    clock.set("2019-11-07 09:00");
    until_event(&mut client, &number, &sp_jy, "task-overdue").await;
    // It decides at last, by its own clock on 2019-11-08.
    let (case, _) = until_event(&mut client, &number, &sp_jy, "task-approved").await;
    let task = case.tasks.iter().find(|t| t.task_id == sp_jy).unwrap();
    assert_eq!(task.status, TaskStatus::Approved as i32);

    // Two replicas swept all along, and a restart would find the flags in the store: one
    // warning and one alert, no more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, events) = history(&mut client, &number).await;
    let count = |kind: &str| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.task_id == sp_jy)
            .count()
    };
    assert_eq!(count("task-clock-started"), 1, "{events:?}");
    assert_eq!(count("task-deadline-moved"), 1, "{events:?}");
    assert_eq!(count("task-sla-warning"), 1, "{events:?}");
    assert_eq!(count("task-overdue"), 1, "{events:?}");
    assert_ne!(
        case.status,
        CaseStatus::ReadyForDelivery as i32,
        "XF-JC is still out"
    );

    // The late decision counts against 市场监管's on-time rate for SP-JY.
    let mut admin = testkit::gateway::admin(replicas[1].admin_addr).await;
    let rates = admin
        .on_time_rates(OnTimeRatesRequest {
            department: "scjg".into(),
            item_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .rates;
    assert_eq!(rates.len(), 1, "{rates:?}");
    let r = &rates[0];
    assert_eq!(
        (r.item_code.as_str(), r.decided, r.on_time),
        ("SP-JY", 1, 0),
        "{r:?}"
    );
    // 消防 has no adapter here: its task is undecided and past its deadline too.
    let all = admin
        .on_time_rates(OnTimeRatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rates;
    let xf = all.iter().find(|r| r.department == "xf").unwrap();
    assert_eq!((xf.decided, xf.open_overdue), (0, 1), "{xf:?}");

    // Both replicas' Prometheus endpoints report the same figures, read from the store.
    for addr in &metrics {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            r#"yichuang_sla_warnings_total{department="scjg",item="SP-JY"} 1"#,
            r#"yichuang_sla_overdue_total{department="scjg",item="SP-JY"} 1"#,
            r#"yichuang_tasks_decided_total{department="scjg",item="SP-JY"} 1"#,
            r#"yichuang_tasks_decided_on_time_total{department="scjg",item="SP-JY"} 0"#,
            r#"yichuang_tasks_open_overdue{department="xf",item="XF-JC"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    for replica in replicas {
        replica.stop().await;
    }
    adapter.task.abort();
    harness.remove().await;
    schema.drop_now().await;
}
