//! The outbox relay on a real RabbitMQ and real stores: accepted tasks reach exactly their
//! departments' queues with the agreed properties and headers, waiting tasks stay back, and a
//! broker that cannot be reached never stops `Submit`.

use std::time::{Duration, Instant};

use lapin::types::AMQPValue;
use prost::Message;
use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use yichuang::config::BusConfig;
use yichuang::proto::v1::{
    CaseStatus, GetCaseRequest, ListCasesRequest, ResultDocument, StatusRequest, SubmitRequest,
    TaskMessage, TaskStatus, submit_response::Outcome,
};

use testkit::broker::{Broker, amqp_url, header, text_header};

async fn kai_canguan_tasks_reach_scjg_and_xf_with_their_headers(backend: Backend) {
    let (mut gw, bus) = TestGateway::relaying(backend, amqp_url()).await;
    // The window's request belongs to a trace; the departments' messages join it.
    let window_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(SubmitRequest {
        submission: Some(example("kai-canguan")),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{window_trace}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let answer = gw.client.submit(request).await.unwrap().into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted")
    };
    let broker = Broker::open(&bus).await;
    let mut spans = std::collections::HashSet::new();
    for (department, item) in [("scjg", "SP-JY"), ("xf", "XF-JC")] {
        let m = broker
            .next(department, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("a task on {department}'s queue"));
        let task = receipt.items.iter().find(|i| i.item_code == item).unwrap();
        let p = &m.delivery.properties;
        assert_eq!(
            p.message_id().as_ref().map(|s| s.to_string()),
            Some(task.task_id.clone()),
            "message_id is the task id"
        );
        assert_eq!(p.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            p.content_type().as_ref().map(|s| s.to_string()).as_deref(),
            Some(yichuang::outbox::TASK_CONTENT_TYPE)
        );
        assert_eq!(text_header(&m, "case-id"), receipt.case_number);
        assert_eq!(text_header(&m, "task-id"), task.task_id);
        assert_eq!(text_header(&m, "department"), department);
        assert_eq!(header(&m, "attempt"), Some(&AMQPValue::LongInt(1)));
        let traceparent = text_header(&m, "traceparent");
        assert_eq!(
            yichuang::trace::trace_id_of(&traceparent),
            Some(window_trace),
            "{traceparent} continues the window's trace"
        );
        assert!(
            spans.insert(traceparent),
            "each publish is a span of its own"
        );
        let message = TaskMessage::decode(m.delivery.data.as_slice()).expect("a TaskMessage");
        assert_eq!(message.case_number, receipt.case_number);
        assert_eq!(message.task.unwrap().item_code, item);
        assert_eq!(message.submission.unwrap().items.len(), 2);
    }
    for other in ["ga", "sw", "rs", "gjj", "zrzy"] {
        assert!(
            broker.next(other, Duration::ZERO).await.is_none(),
            "nothing for {other}"
        );
    }
    // Marked dispatched after the confirm, in the case and its history.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = gw
            .client
            .get_case(GetCaseRequest {
                case_number: receipt.case_number.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let case = got.case.unwrap();
        if case
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Dispatched as i32)
        {
            assert_eq!(case.status, CaseStatus::InProgress as i32);
            assert_eq!(
                got.events
                    .iter()
                    .filter(|e| e.kind == "task-dispatched")
                    .count(),
                2
            );
            // Neither task waited for another: their legal clocks run from the acceptance.
            assert!(
                case.tasks
                    .iter()
                    .all(|t| t.clock_started_at.is_some() && t.clock_started_at == case.accepted_at),
                "{:?}",
                case.tasks
            );
            // The list says in progress too, and finds the case by that status.
            let listed = gw
                .client
                .list_cases(ListCasesRequest {
                    status: CaseStatus::InProgress as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(
                listed
                    .cases
                    .iter()
                    .any(|c| c.case_number == receipt.case_number
                        && c.status == CaseStatus::InProgress as i32),
                "{listed:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks not marked dispatched: {:?}",
            case.tasks
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.gateway.store.outbox_backlog().await.unwrap(), 0);
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let status = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(
        status.broker_connected && status.outbox_backlog == 0,
        "{status:?}"
    );
    broker.remove().await;
    gw.stop().await;
}

async fn qiye_kaiban_releases_later_tasks_only_after_qy_sl_is_approved(backend: Backend) {
    let (mut gw, bus) = TestGateway::relaying(backend, amqp_url()).await;
    gw.client
        .submit(SubmitRequest {
            submission: Some(example("qiye-kaiban")),
        })
        .await
        .unwrap();
    let broker = Broker::open(&bus).await;
    let m = broker
        .next("scjg", Duration::from_secs(15))
        .await
        .expect("QY-SL on scjg's queue");
    let first = TaskMessage::decode(m.delivery.data.as_slice())
        .unwrap()
        .task
        .unwrap();
    assert_eq!(first.item_code, "QY-SL");
    // The others wait for QY-SL's approval: their rows are WAITING, not in the outbox.
    for waiting in ["ga", "sw", "rs", "gjj"] {
        assert!(
            broker
                .next(waiting, Duration::from_millis(300))
                .await
                .is_none(),
            "{waiting} must wait for QY-SL"
        );
    }

    // scjg approves QY-SL with the 营业执照; the four waiting tasks are released and published,
    // each carrying QY-SL's result.
    let licence = ResultDocument {
        material_code: "YYZZ".into(),
        name: "营业执照".into(),
        number: "91640106MA77XD0T1L".into(),
        file: None,
    };
    let released = gw
        .gateway
        .store
        .approve_task(&first.task_id, vec![licence.clone()])
        .await
        .unwrap()
        .expect("approved");
    assert_eq!(released.len(), 4);
    assert_eq!(
        gw.gateway
            .store
            .approve_task(&first.task_id, vec![])
            .await
            .unwrap(),
        None,
        "a repeated approval changes nothing"
    );
    gw.gateway.wake.notify_one();
    for (department, item) in [
        ("ga", "GZ-KZ"),
        ("sw", "SW-XB"),
        ("rs", "SB-DJ"),
        ("gjj", "GJJ-DJ"),
    ] {
        let m = broker
            .next(department, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{item} on {department}'s queue"));
        let message = TaskMessage::decode(m.delivery.data.as_slice()).unwrap();
        assert_eq!(message.task.unwrap().item_code, item);
        assert_eq!(message.prerequisites.len(), 1);
        assert_eq!(message.prerequisites[0].item_code, "QY-SL");
        assert_eq!(
            message.prerequisites[0].results,
            std::slice::from_ref(&licence),
            "{item} carries the 营业执照 of QY-SL"
        );
    }
    let history = gw
        .client
        .get_case(GetCaseRequest {
            case_number: first.task_id[..43].to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        history
            .events
            .iter()
            .filter(|e| e.kind == "task-released")
            .count(),
        4
    );
    broker.remove().await;
    gw.stop().await;
}

async fn submit_keeps_accepting_while_the_broker_is_unreachable(backend: Backend) {
    let (mut gw, _bus) =
        TestGateway::relaying(backend, "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;
    for name in ["kai-canguan", "qiye-kaiban"] {
        let answer = gw
            .client
            .submit(SubmitRequest {
                submission: Some(example(name)),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            matches!(answer.outcome, Some(Outcome::Receipt(_))),
            "{name} accepted without a broker"
        );
    }
    // SP-JY, XF-JC and QY-SL wait in the outbox; the four waiting tasks are not ready yet.
    assert_eq!(gw.gateway.store.outbox_backlog().await.unwrap(), 3);
    // Operators see it: the store answers, the broker does not, three tasks are waiting.
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let status = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(
        status.store_ok && status.relay_enabled && !status.broker_connected,
        "{status:?}"
    );
    assert_eq!(status.outbox_backlog, 3);
    assert!(
        status.broker_error.contains("127.0.0.1:1") && !status.broker_error.contains("guest:guest"),
        "{}",
        status.broker_error
    );
    gw.stop().await;
}

async fn every_status_change_reaches_the_events_exchange(backend: Backend) {
    let (mut gw, bus) = TestGateway::relaying(backend, amqp_url()).await;
    let broker = Broker::open(&bus).await;
    // Another system's queue, bound to every event.
    let queue = format!("{}.test-events", bus.prefix);
    broker
        .channel
        .queue_declare(
            queue.as_str().into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    broker
        .channel
        .queue_bind(
            queue.as_str().into(),
            broker.names.events_exchange().into(),
            "#".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(example("kai-canguan")),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted")
    };

    let trace_id = gw
        .client
        .get_case(GetCaseRequest {
            case_number: receipt.case_number.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap()
        .trace_id;
    assert_eq!(trace_id.len(), 32, "a case keeps a trace id: {trace_id:?}");
    let mut keys = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while keys.len() < 5 {
        assert!(Instant::now() < deadline, "events so far: {keys:?}");
        let got = broker
            .channel
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        let Some(m) = got else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let event = yichuang::proto::v1::EventMessage::decode(m.delivery.data.as_slice()).unwrap();
        assert_eq!(event.case_number, receipt.case_number);
        assert_eq!(event.window_code, "W03");
        assert_eq!(
            yichuang::trace::trace_id_of(&text_header(&m, "traceparent")),
            Some(trace_id.as_str()),
            "events join the case's trace"
        );
        assert!(
            ids.insert(
                m.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .to_string()
            ),
            "each event once"
        );
        keys.push(m.delivery.routing_key.to_string());
    }
    keys.sort();
    assert_eq!(
        keys,
        [
            "case.accepted",
            "task.dispatched",
            "task.dispatched",
            "task.ready",
            "task.ready"
        ]
    );
    let _ = broker
        .channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    broker.remove().await;
    gw.stop().await;
}

/// A relay that claimed a task and died before recording the publish leaves a lease that runs
/// out; the task is handed out again marked `reclaimed` (its message carries the `copy` header,
/// so the adapter holds it until an earlier copy's request has had its time). A first claim is
/// not marked.
async fn a_task_claimed_again_after_its_lease_ran_out_is_marked_a_copy(backend: Backend) {
    // No broker: the gateway's own relay never claims, the test does.
    let (mut gw, _bus) =
        TestGateway::relaying(backend, "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;
    gw.client
        .submit(SubmitRequest {
            submission: Some(example("kai-canguan")),
        })
        .await
        .unwrap();
    let store = &gw.gateway.store;
    let first = store.claim_ready(10, 1).await.unwrap();
    assert_eq!(first.len(), 2, "SP-JY and XF-JC");
    assert!(
        first.iter().all(|i| !i.reclaimed),
        "a first claim is no copy"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        let items = store.claim_ready(10, 60_000).await.unwrap();
        if !items.is_empty() {
            break items;
        }
        assert!(Instant::now() < deadline, "the 1 ms lease never ran out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(again.len(), 2, "both handed out again");
    assert!(
        again.iter().all(|i| i.reclaimed),
        "{:?}",
        again.iter().map(|i| i.reclaimed).collect::<Vec<_>>()
    );
    assert!(
        store.claim_ready(10, 60_000).await.unwrap().is_empty(),
        "leased again: not handed out a third time"
    );
    gw.stop().await;
}

/// A cluster whose first node is down: the relay moves on to the next node of `[bus] nodes`
/// and the tasks reach their departments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reaches_the_departments_through_the_next_node_when_the_first_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.bus = BusConfig {
        // Nothing listens on port 1: the "node" that is down.
        url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        nodes: vec![amqp_url()],
        prefix: testkit::broker::prefix(),
        relay: true,
        timeout_secs: 5,
        ..BusConfig::default()
    };
    let bus = config.bus.clone();
    let mut gw = TestGateway::start_with(config, dir).await;
    let broker = Broker::open(&bus).await;
    gw.client
        .submit(SubmitRequest {
            submission: Some(example("kai-canguan")),
        })
        .await
        .unwrap();
    for department in ["scjg", "xf"] {
        assert!(
            broker
                .next(department, Duration::from_secs(20))
                .await
                .is_some(),
            "the {department} task through the second node"
        );
    }
    broker.remove().await;
    gw.stop().await;
}

/// A gateway on SQLite that died holding a lease: the next start hands its tasks out at once,
/// marked a copy (the dead relay may have published them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_dead_sqlite_gateway_is_handed_out_at_once_as_a_copy() {
    let keep = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, keep.path());
    config.bus = BusConfig {
        url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        prefix: testkit::broker::prefix(),
        relay: true,
        timeout_secs: 5,
        ..BusConfig::default()
    };
    let mut gw = TestGateway::start_with(config.clone(), tempfile::tempdir().unwrap()).await;
    gw.client
        .submit(SubmitRequest {
            submission: Some(example("kai-canguan")),
        })
        .await
        .unwrap();
    let first = gw.gateway.store.claim_ready(10, 3_600_000).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|i| !i.reclaimed));
    gw.stop().await;
    // The stopped gateway's last workers let go of the database's lock as they wind down.
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        match yichuang::store::Store::open(&config.store).await {
            Ok(store) => break store,
            Err(e) if Instant::now() < deadline && e.to_string().contains("in use") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the store does not open again: {e}"),
        }
    };
    let again = store.claim_ready(10, 60_000).await.unwrap();
    assert_eq!(
        again.len(),
        2,
        "handed out at once, not after the hour's lease"
    );
    assert!(again.iter().all(|i| i.reclaimed), "marked a copy");
}

testkit::on_both_stores!(
    a_task_claimed_again_after_its_lease_ran_out_is_marked_a_copy,
    every_status_change_reaches_the_events_exchange,
    kai_canguan_tasks_reach_scjg_and_xf_with_their_headers,
    qiye_kaiban_releases_later_tasks_only_after_qy_sl_is_approved,
    submit_keeps_accepting_while_the_broker_is_unreachable,
);

/// Two gateways on one PostgreSQL schema, both relaying: 1,000 cases (2,000 tasks) are published
/// with no task published twice (leases last 30 s, longer than the test, so any duplicate would
/// be a concurrent double publish) and none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_publish_every_task_once() {
    let dir1 = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Postgres, dir1.path());
    config.bus = BusConfig {
        url: amqp_url(),
        prefix: testkit::broker::prefix(),
        relay: true,
        timeout_secs: 5,
        ..BusConfig::default()
    };
    let bus = config.bus.clone();
    let broker = Broker::open(&bus).await;
    let gw1 = TestGateway::start_with(config.clone(), dir1).await;
    let gw2 = TestGateway::start_with(config, tempfile::tempdir().unwrap()).await;

    let base = example("kai-canguan");
    let mut handles = Vec::new();
    for (g, gw) in [&gw1, &gw2].into_iter().enumerate() {
        for lane in 0..8 {
            let mut client = gw.client.clone();
            let base = base.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..(500 / 8 + 1) {
                    let n = g * 1000 + lane * 100 + i;
                    if i * 8 + lane >= 500 {
                        break;
                    }
                    let mut s = base.clone();
                    s.submission_id = format!("replica-{n}");
                    client
                        .submit(SubmitRequest {
                            submission: Some(s),
                        })
                        .await
                        .expect("submit");
                }
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(gw1.gateway.store.case_count().await.unwrap(), 1000);

    let mut seen: std::collections::HashMap<String, u32> = Default::default();
    for department in ["scjg", "xf"] {
        let mut count = 0;
        while count < 1000 {
            let m = broker
                .next(department, Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("{department}: only {count} of 1000 tasks"));
            let id = m
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string();
            *seen.entry(id).or_default() += 1;
            count += 1;
        }
        assert!(
            broker
                .next(department, Duration::from_millis(500))
                .await
                .is_none(),
            "{department}: more than 1000 messages"
        );
    }
    assert_eq!(seen.len(), 2000, "every task once");
    assert!(seen.values().all(|&n| n == 1), "a task was published twice");
    broker.remove().await;
    gw2.stop().await;
    gw1.stop().await;
}
