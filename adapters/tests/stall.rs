//! The gateway does not rely on the broker alone: a task whose message is deleted by hand (a
//! queue purged) is found silent by the stall detector, published again, and decided, with the
//! department seeing the case once; while its adapter polls, its heartbeats keep the detector
//! away. Real RabbitMQ, the real gateway (SQLite), a simulated 市场监管 system.

use std::time::{Duration, Instant};

use testkit::adapter::Adapter;
use testkit::broker::{Broker, bus};
use testkit::gateway::TestGateway;
use testkit::repo;
use testkit::server::listener;
use yichuang::config::{GatewayConfig, StoreConfig};
use yichuang::proto::v1::{GetCaseRequest, SubmitRequest, TaskStatus, submit_response::Outcome};
use yichuang_sim::core::Behaviour;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_message_was_deleted_by_hand_is_published_again_and_decided_once() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg", "xf"]).await;
    let dir = tempfile::tempdir().unwrap();

    // 市场监管's system decides 6 s after it takes a case: the adapter polls it every second
    // and tells the gateway so at every poll, past the 3 s the gateway allows a silent task.
    let (l, endpoint) = listener().await;
    let scjg = yichuang_sim::http_json::HttpJsonSim::new(yichuang_sim::http_json::Settings {
        behaviour: Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 6000,
            reject: 0.0,
            supplement: 0.0,
            ..Behaviour::default()
        },
        ..Default::default()
    });
    tokio::spawn(scjg.clone().serve(l));

    let mut config = GatewayConfig {
        catalog_dir: repo().join("config/catalog"),
        calendar_dir: repo().join("config/calendar"),
        ..GatewayConfig::default()
    };
    config.hotline.classification = repo().join("config/hotline/classification.toml");
    config.store = StoreConfig::Sqlite {
        path: dir.path().join("yichuang.db"),
    };
    config.bus = bus.clone();
    config.bus.relay = true;
    config.sla.sweep_secs = 0;
    config.stall.after_secs = 3;
    config.stall.check_secs = 1;
    testkit::gateway::secure(&mut config);
    // 消防 has no adapter in this test: its task is left alone.
    config.stall.departments.insert("xf".into(), 86_400);
    let mut gw = TestGateway::serve(&config).await;

    let mut submission: yichuang::proto::v1::Submission = testkit::example("kai-canguan");
    submission.submission_id = format!("stall-{}", uuid::Uuid::new_v4().simple());
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(submission),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted: {answer:?}")
    };
    let number = receipt.case_number;
    let task_id = receipt
        .items
        .iter()
        .find(|i| i.item_code == "SP-JY")
        .unwrap()
        .task_id
        .clone();
    let task = |case: &yichuang::proto::v1::Case| {
        case.tasks
            .iter()
            .find(|t| t.task_id == task_id)
            .cloned()
            .unwrap()
    };
    let get = |number: String| {
        let mut client = gw.client.clone();
        async move {
            client
                .get_case(GetCaseRequest {
                    case_number: number,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };

    // Published (the broker confirmed it), then deleted by hand before any adapter took it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(number.clone()).await;
        if task(r.case.as_ref().unwrap()).status == TaskStatus::Dispatched as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "the task is never dispatched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let purged = harness
        .channel
        .queue_purge(
            harness.names.task_queue("scjg").as_str().into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(purged, 1, "the task's only message deleted");

    let mut department = testkit::adapter::scjg(&dir, &endpoint);
    department.polling.alive_every = 1;
    let adapter = Adapter::start(&bus, vec![department]).await;

    // Found silent, published again, submitted and decided.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (case, events) = loop {
        let r = get(number.clone()).await;
        let case = r.case.unwrap();
        if task(&case).status == TaskStatus::Approved as i32 {
            break (case, r.events);
        }
        assert!(
            Instant::now() < deadline,
            "not approved: {:?}",
            r.events
                .iter()
                .map(|e| (&e.kind, &e.task_id))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let republished = events
        .iter()
        .filter(|e| e.kind == "task-republished" && e.task_id == task_id)
        .count();
    // Once: after it, the adapter's heartbeats (every poll, 6 s of them) kept the task heard of.
    assert_eq!(republished, 1, "{events:?}");
    assert_eq!(task(&case).status, TaskStatus::Approved as i32);
    let stats = scjg.sim.stats();
    assert_eq!(stats.cases, 1, "the department saw the case once");
    assert_eq!(stats.duplicates, 0);

    adapter.task.abort();
    gw.stop().await;
    harness.remove().await;
}
