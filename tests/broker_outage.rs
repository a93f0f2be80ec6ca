//! A broker outage while windows keep submitting: RabbitMQ's application is stopped
//! (`rabbitmqctl stop_app`) and started again; every accepted case's tasks end up on their
//! queues, none missing (a republished task keeps its `message_id`). A test binary of its own,
//! because it stops the broker every other test uses.

mod common;
mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, example};
use support::broker::{Broker, amqp_url, start};
use yichuang::proto::v1::{SubmitRequest, submit_response::Outcome};

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

fn wait_for_broker() {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("rabbitmq-diagnostics")
        .args(["-q", "check_running"])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            Instant::now() < deadline,
            "RabbitMQ did not come back within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_accepted_during_a_broker_outage_all_reach_their_queues() {
    let (gw, bus) = start(Backend::Sqlite, amqp_url()).await;
    let broker = Broker::open(&bus).await; // declares the topology before the outage
    let base = example("kai-canguan");
    let submit = |n: usize| {
        let mut client = gw.client.clone();
        let mut s = base.clone();
        s.submission_id = format!("outage-{n}");
        async move {
            let answer = client
                .submit(SubmitRequest {
                    submission: Some(s),
                })
                .await
                .expect("submit")
                .into_inner();
            assert!(
                matches!(answer.outcome, Some(Outcome::Receipt(_))),
                "case {n} accepted"
            );
        }
    };
    for n in 0..20 {
        submit(n).await;
    }
    drop(broker);
    rabbitmqctl(&["stop_app"]);
    for n in 20..40 {
        submit(n).await; // accepted into the store while the broker is down
    }
    rabbitmqctl(&["start_app"]);
    wait_for_broker();
    for n in 40..60 {
        submit(n).await;
    }

    let broker = Broker::open(&bus).await;
    for department in ["scjg", "xf"] {
        let mut ids = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while ids.len() < 60 {
            assert!(
                Instant::now() < deadline,
                "{department}: only {} of 60 tasks after the outage",
                ids.len()
            );
            if let Some(m) = broker.next(department, Duration::from_secs(5)).await {
                ids.insert(
                    m.delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    assert_eq!(
        gw.gateway.store.outbox_backlog().await.unwrap(),
        0,
        "every task marked dispatched"
    );
    broker.remove().await;
    gw.stop().await;
}
