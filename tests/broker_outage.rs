//! The broker failing while windows keep submitting: RabbitMQ's application stopped
//! (`rabbitmqctl stop_app`) and started again, and a memory alarm that blocks publishers. Every
//! accepted case's tasks end up on their queues, none missing (a republished task keeps its
//! `message_id`). A test binary of its own, because it disturbs the broker every other test
//! uses; its tests take turns.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::broker::{Broker, amqp_url};
use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use yichuang::proto::v1::{SubmitRequest, submit_response::Outcome};

/// The tests here take turns: each disturbs the one broker.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `rabbitmqctl` again when dropped, so a failing test leaves the broker as it found it.
struct Restore(&'static [&'static str]);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(self.0).status();
    }
}

/// Runs `rabbitmqctl` without blocking the runtime, bounded by a deadline: a command that hangs
/// fails the test instead of holding the suite.
async fn rabbitmqctl(args: &[&str]) {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("rabbitmqctl runs");
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .unwrap_or_else(|_| panic!("rabbitmqctl {args:?} did not finish within 120 s"))
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
    eprintln!(
        "rabbitmqctl {args:?}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn wait_for_broker() {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let check = tokio::process::Command::new("rabbitmq-diagnostics")
            .args(["-q", "check_running"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(20), check).await
            && status.success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "RabbitMQ did not come back within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How long the broker waits before forwarding again a message it dead-lettered at least once
/// and saw no confirm for (`dead_letter_worker_publisher_confirm_timeout`).
async fn dead_letter_retry() -> Duration {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "eval",
            "application:get_env(rabbit, dead_letter_worker_publisher_confirm_timeout).",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("rabbitmqctl eval within 60 s")
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let millis: u64 = text
        .trim()
        .trim_start_matches("{ok,")
        .trim_end_matches('}')
        .parse()
        .unwrap_or_else(|_| panic!("rabbitmqctl eval answered {text:?}"));
    Duration::from_millis(millis)
}

/// A submission accepted within a deadline (a hung call fails the test, naming the case).
async fn submit(
    gw: &testkit::gateway::TestGateway,
    base: &yichuang::proto::v1::Submission,
    id: String,
) {
    let mut client = gw.client.clone();
    let mut s = base.clone();
    s.submission_id = id.clone();
    let call = client.submit(SubmitRequest {
        submission: Some(s),
    });
    let answer = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .unwrap_or_else(|_| panic!("{id}: no answer within 30 s"))
        .expect("submit")
        .into_inner();
    assert!(
        matches!(answer.outcome, Some(Outcome::Receipt(_))),
        "{id} accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_accepted_during_a_broker_outage_all_reach_their_queues() {
    let _turn = BROKER.lock().await;
    let (gw, bus) = TestGateway::relaying(Backend::Sqlite, amqp_url()).await;
    let broker = Broker::open(&bus).await; // declares the topology before the outage
    let base = example("kai-canguan");
    for n in 0..20 {
        submit(&gw, &base, format!("outage-{n}")).await;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        broker.connection.close(0, "outage".into()),
    )
    .await;
    let restore = Restore(&["start_app"]);
    rabbitmqctl(&["stop_app"]).await;
    for n in 20..40 {
        submit(&gw, &base, format!("outage-{n}")).await; // accepted while the broker is down
    }
    rabbitmqctl(&["start_app"]).await;
    drop(restore);
    wait_for_broker().await;
    for n in 40..60 {
        submit(&gw, &base, format!("outage-{n}")).await;
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

/// A memory alarm blocks every publishing connection. `Submit` keeps accepting into the store,
/// the relay reports the block instead of failing, and the backlog drains once the alarm lifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_holds_tasks_in_the_store_until_it_lifts() {
    let _turn = BROKER.lock().await;
    let (gw, bus) = TestGateway::relaying(Backend::Sqlite, amqp_url()).await;
    let broker = Broker::open(&bus).await;
    let base = example("kai-canguan");
    submit(&gw, &base, "alarm-0".into()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.gateway.store.outbox_backlog().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the first case's tasks leave");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The smallest watermark RabbitMQ takes: the alarm goes off at once.
    let restore = Restore(&["set_vm_memory_high_watermark", "0.4"]);
    rabbitmqctl(&["set_vm_memory_high_watermark", "0.0001"]).await;
    for n in 1..21 {
        submit(&gw, &base, format!("alarm-{n}")).await;
    }
    // The relay sees the block (the broker blocks a connection when it publishes) and says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (connected, error) = gw.gateway.relay_status.get();
        if !connected && error == yichuang::outbox::BLOCKED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay status during the alarm: connected={connected} error={error:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gw.gateway.store.outbox_backlog().await.unwrap() > 0,
        "tasks wait in the store while publishing is blocked"
    );
    for n in 21..31 {
        submit(&gw, &base, format!("alarm-{n}")).await; // still accepted
    }
    rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    drop(restore);

    for department in ["scjg", "xf"] {
        let mut ids = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while ids.len() < 31 {
            assert!(
                Instant::now() < deadline,
                "{department}: only {} of 31 tasks after the alarm",
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.gateway.store.outbox_backlog().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "every task marked dispatched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.gateway.relay_status.get(), (true, String::new()));
    broker.remove().await;
    gw.stop().await;
}

/// Tasks parked in a delay queue (waiting for a retry or their next poll) whose TTL runs out
/// while the broker is stopped reach their department's queue once it is back: the topology's
/// policies make quorum dead-lettering at-least-once (at-most-once, RabbitMQ's default, drops
/// every one of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_parked_in_delay_queues_survive_a_broker_restart() {
    let _turn = BROKER.lock().await;
    let bus = yichuang::config::BusConfig {
        url: amqp_url(),
        prefix: testkit::broker::prefix(),
        retry_delays_secs: vec![3],
        timeout_secs: 10,
        ..Default::default()
    };
    let broker = Broker::open(&bus).await;
    assert!(
        yichuang::bus::policy::apply(&bus)
            .await
            .expect("policies applied"),
        "applied, not turned off"
    );
    // RabbitMQ applies a policy to its queues asynchronously.
    let delay_queue = broker.names.retry_queue("scjg", 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let effective = yichuang::bus::policy::effective(&bus, &delay_queue)
            .await
            .expect("management API");
        if effective
            .as_ref()
            .and_then(|d| d.get("dead-letter-strategy"))
            .is_some_and(|v| v == "at-least-once")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "policy not effective: {effective:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    broker
        .channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    const PARKED: usize = 40;
    for i in 0..PARKED {
        broker
            .channel
            .basic_publish(
                broker.names.retry_exchange().as_str().into(),
                broker.names.retry_key("scjg", 3).as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                format!("task {i}").as_bytes(),
                lapin::BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(format!("parked-{i}").into()),
            )
            .await
            .unwrap()
            .await
            .expect("confirmed");
    }
    let _ = broker.connection.close(200, "restarting".into()).await;

    // The broker is down while every TTL runs out: this is the fault, not a wait for a result.
    let restore = Restore(&["start_app"]);
    rabbitmqctl(&["stop_app"]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    rabbitmqctl(&["start_app"]).await;
    std::mem::forget(restore);
    wait_for_broker().await;

    let broker = Broker::open(&bus).await;
    let mut seen = HashSet::new();
    // A forward that found its target still recovering is retried after the broker's confirm
    // timeout (scripts/services.sh sets 15 s; RabbitMQ's default is 180 s): at-least-once, late.
    let deadline = Instant::now() + Duration::from_secs(60) + dead_letter_retry().await;
    while seen.len() < PARKED && Instant::now() < deadline {
        if let Some(m) = broker.next("scjg", Duration::from_secs(1)).await {
            seen.insert(
                m.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    assert_eq!(
        seen.len(),
        PARKED,
        "every parked task reached its queue after the restart"
    );
    yichuang::bus::policy::remove(&bus).await.unwrap();
    broker.remove().await;
}
