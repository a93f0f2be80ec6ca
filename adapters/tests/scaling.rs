//! Scaling out, checked on one machine: two gateway replicas on one PostgreSQL schema, each
//! with its own outbox relay, results consumer and SLA sweeper, and two adapter runtimes for
//! 市场监管 consuming the same quorum queue as competing consumers, in front of one simulated
//! HTTP/JSON system. The window submits 40 食品经营许可 (SP-JY) cases, alternately through
//! each replica. Every case must become ready for delivery; the department's system must have
//! received each task exactly once; each task's dispatch, acceptance and decision must be
//! recorded once; both adapters must have done work; and the two adapters together must stay
//! within what the system takes (each runs its own rate gate, so the system sees their sum).
//! Real RabbitMQ and PostgreSQL; only the department is simulated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use testkit::adapter::Adapter;
use testkit::broker::{Broker, bus};
use testkit::db::Schema;
use testkit::gateway::TestGateway;
use testkit::server::listener;
use yichuang::proto::v1::{
    CaseStatus, GetCaseRequest, ListCasesRequest, SubmitRequest, TaskStatus,
    submit_response::Outcome,
};
use yichuang_sim::core::Behaviour;

const CASES: usize = 40;
/// Each adapter's rate gate; the simulated system takes twice that, the two adapters' sum.
const ADAPTER_RPS: u32 = 10;

/// Serves the simulated system on a listener of its own and counts the submissions
/// (`POST /api/v1/cases`) that arrive through it: one listener per adapter tells which
/// adapter did the work.
async fn counted_endpoint(
    sim: &Arc<yichuang_sim::http_json::HttpJsonSim>,
) -> (String, Arc<AtomicU64>) {
    let (l, endpoint) = listener().await;
    let submits = Arc::new(AtomicU64::new(0));
    let counter = submits.clone();
    let router = sim.router().layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let counter = counter.clone();
            async move {
                if request.method() == axum::http::Method::POST
                    && request.uri().path() == "/api/v1/cases"
                {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                next.run(request).await
            }
        },
    ));
    tokio::spawn(async move { axum::serve(l, router).await });
    (endpoint, submits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_and_two_adapters_of_one_department_handle_every_case_once() {
    let bus = bus();
    // The gateways declare every department of the catalog; the harness removes them all.
    let harness =
        Broker::for_departments(&bus, &["scjg", "ga", "sw", "rs", "gjj", "xf", "zrzy"]).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new("scale");

    // 市场监管's system: approves every case after a second, takes at most 2 × ADAPTER_RPS
    // requests in any second (more would be refused with 429 and counted).
    let sim = yichuang_sim::http_json::HttpJsonSim::new(yichuang_sim::http_json::Settings {
        behaviour: Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 1000,
            reject: 0.0,
            supplement: 0.0,
            max_rps: 2 * ADAPTER_RPS,
            ..Behaviour::default()
        },
        ..Default::default()
    });
    let mut adapters = Vec::new();
    let mut submits = Vec::new();
    for _ in 0..2 {
        let (endpoint, counter) = counted_endpoint(&sim).await;
        let mut config = testkit::adapter::scjg(&dir, &endpoint);
        config.limits.requests_per_second = ADAPTER_RPS;
        adapters.push(Adapter::start(&bus, vec![config]).await);
        submits.push(counter);
    }

    // Two gateway replicas on one schema: each relays, consumes results and sweeps.
    let config = testkit::gateway::replica(&schema, &bus);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(TestGateway::serve(&config).await);
    }
    let mut clients: Vec<_> = replicas.iter().map(|r| r.client.clone()).collect();

    // 40 distinct SP-JY applications, alternately through each replica.
    let mut base: yichuang::proto::v1::Submission = testkit::example("kai-canguan");
    base.bundle_code.clear();
    base.items.retain(|i| i.item_code == "SP-JY");
    // 消防's form field (seats) belongs to XF-JC only.
    base.fields.remove("seats");
    let started = Instant::now();
    let mut tasks: BTreeMap<String, String> = BTreeMap::new(); // task id → case number
    for n in 0..CASES {
        let mut s = base.clone();
        s.submission_id = format!("scale-{n:03}");
        let answer = clients[n % 2]
            .submit(SubmitRequest {
                submission: Some(s),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(Outcome::Receipt(receipt)) = answer.outcome else {
            panic!("an SP-JY application is accepted: {answer:?}")
        };
        assert_eq!(receipt.items.len(), 1, "{receipt:?}");
        tasks.insert(receipt.items[0].task_id.clone(), receipt.case_number);
    }
    let submitted = started.elapsed();

    // Every case ready for delivery, seen from either replica.
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = loop {
        let listed = clients[1]
            .list_cases(ListCasesRequest {
                status: CaseStatus::ReadyForDelivery as i32,
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .cases;
        if listed.len() == CASES {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {CASES} cases ready for delivery within 120 s; the system has {:?}",
            listed.len(),
            sim.sim.stats()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The department's system received each task once: one case per task id, no duplicate.
    let stats = sim.sim.stats();
    let received: Vec<String> = sim.sim.cases().into_iter().map(|c| c.serial).collect();
    assert_eq!(received.len(), CASES, "{stats:?}");
    for id in tasks.keys() {
        assert!(
            received.contains(id),
            "{id} reached the system: {received:?}"
        );
    }
    assert_eq!(stats.cases, CASES as u64, "{stats:?}");
    assert_eq!(stats.duplicates, 0, "no task submitted twice: {stats:?}");
    // The two rate gates together kept within what the system takes.
    assert_eq!(stats.rate_violations, 0, "{stats:?}");

    // Each task's dispatch, acceptance by the department and decision recorded once, whichever
    // replica relayed it and whichever consumed its results.
    for (task, number) in &tasks {
        let got = clients[0]
            .get_case(GetCaseRequest {
                case_number: number.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let case = got.case.unwrap();
        assert_eq!(case.tasks.len(), 1);
        assert_eq!(
            case.tasks[0].status,
            TaskStatus::Approved as i32,
            "{case:?}"
        );
        assert!(!case.tasks[0].department_case_number.is_empty());
        let count = |kind: &str| {
            got.events
                .iter()
                .filter(|e| e.kind == kind && &e.task_id == task)
                .count()
        };
        for kind in [
            "task-dispatched",
            "task-accepted-by-department",
            "task-approved",
        ] {
            assert_eq!(count(kind), 1, "{kind} of {task}: {:?}", got.events);
        }
        assert!(
            got.events.windows(2).all(|w| w[0].seq < w[1].seq),
            "one history, in order: {:?}",
            got.events
        );
    }

    // Both adapters took tasks from the one queue.
    let by_adapter: Vec<u64> = submits.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(
        by_adapter.iter().sum::<u64>(),
        CASES as u64,
        "{by_adapter:?}"
    );
    assert!(
        by_adapter.iter().all(|&n| n > 0),
        "both adapters did work: {by_adapter:?}"
    );
    eprintln!(
        "scaling: {CASES} cases submitted through 2 replicas in {submitted:.2?}, all ready for delivery after {ready:.2?}; \
         submissions per adapter {by_adapter:?}; the system saw {} requests, at most {} in one second (each adapter's gate: {ADAPTER_RPS}/s)",
        stats.requests, stats.max_requests_in_a_second
    );

    for replica in replicas {
        replica.stop().await;
    }
    for a in adapters {
        a.task.abort();
    }
    harness.remove().await;
    schema.drop_now().await;
}
