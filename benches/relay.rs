//! Publishing rate of the outbox relay against a raw lapin publisher with confirms, in the same
//! run, to the same kind of queue (a department's quorum queue), with messages of the same size
//! (a kai-canguan `TaskMessage`). The raw publisher sends windows of 256 messages and then waits
//! for their confirms, once before the relay and once after (the mean is the baseline). The
//! relay publishes batches of 1,024, the next batch's publishing overlapping the previous
//! batch's confirms, and also leases its rows from the store and marks them dispatched. The
//! relay's figure is the tasks' drain rate; a second figure counts the status events that follow
//! them on the events exchange too. Needs RabbitMQ (`make bench` starts it);
//! `YICHUANG_BENCH_TASKS` sets the number of tasks (default 10,000).
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use prost::Message;
use testkit::broker::Broker;
use yichuang::calendar::Calendar;
use yichuang::catalog::Catalog;
use yichuang::config::{BusConfig, IntakeConfig, StoreConfig};
use yichuang::intake::{Intake, Outcome, content_hash};
use yichuang::proto::v1::Submission;
use yichuang::store::{Attempt, Evaluated, Store, SubmitCommand};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("relay bench: run with `make bench` (needs RabbitMQ)");
        return;
    }
    let tasks: usize = std::env::var("YICHUANG_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let root = testkit::root();
        let catalog = Arc::new(Catalog::load(&root.join("config/catalog")).unwrap());
        let calendar = Arc::new(Calendar::load(&root.join("config/calendar")).unwrap());
        let intake = Intake::new(catalog.clone(), calendar, IntakeConfig::default()).unwrap();
        // A prefix of the run's own, every queue of the acceptance list declared; removed at
        // the end.
        let bus = BusConfig {
            url: testkit::broker::amqp_url(),
            prefix: format!("bench{}", uuid::Uuid::new_v4().simple()),
            ..BusConfig::default()
        };
        let broker = Broker::open(&bus).await;
        let (names, channel) = (&broker.names, &broker.channel);
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();

        // Fill the outbox: tasks / 2 kai-canguan cases, two tasks each (scjg and xf).
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::Sqlite {
            path: dir.path().join("relay.db"),
        })
        .await
        .unwrap();
        let base: Submission = testkit::example("kai-canguan");
        let mut fills = Vec::new();
        for lane in 0..16 {
            let (store, intake, base) = (store.clone(), intake.clone(), base.clone());
            fills.push(tokio::spawn(async move {
                for n in (lane..tasks / 2).step_by(16) {
                    let mut s = base.clone();
                    s.submission_id = format!("relay-{n}");
                    let hash = content_hash(&s);
                    let Ok(Outcome::Acceptable(plan)) = intake.evaluate(s, chrono::Utc::now())
                    else {
                        panic!("acceptable")
                    };
                    let attempt = Attempt {
                        submission_id: format!("relay-{n}"),
                        content_hash: hash,
                        hall_code: "h".into(),
                        window_code: "w".into(),
                        clerk_staff_no: "c".into(),
                        trace_id: yichuang::trace::new_trace_id(),
                        trace_span_id: String::new(),
                        at: chrono::Utc::now(),
                    };
                    store
                        .submit(SubmitCommand {
                            attempt,
                            evaluated: Evaluated::Accept(plan),
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for f in fills {
            f.await.unwrap();
        }
        let sample = store
            .claim_ready(1, 1)
            .await
            .unwrap()
            .pop()
            .expect("a task");
        let body = yichuang::outbox::task_message(&sample)
            .unwrap()
            .encode_to_vec();
        tokio::time::sleep(Duration::from_millis(5)).await; // the 1 ms lease of the sample runs out

        // Raw lapin: the same number of messages of the same size, windows of 256 confirms;
        // measured before and after the relay, and the mean taken, so a machine busier in one
        // phase than in the other weighs on both sides.
        let queue = names.task_queue("scjg");
        let raw_before = raw_publish(channel, names, &body, tasks).await;
        channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap();

        // The relay drains the outbox.
        let wake = Arc::new(tokio::sync::Notify::new());
        let status = Arc::new(yichuang::outbox::RelayStatus::default());
        let started = Instant::now();
        let relay = tokio::spawn(yichuang::outbox::run(
            store.clone(),
            broker.topology.clone(),
            bus.clone(),
            wake.clone(),
            status,
            yichuang::clock::system_now(),
        ));
        wake.notify_one();
        let events = store.events_backlog().await.unwrap();
        while store.outbox_backlog().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let relayed = tasks as f64 / started.elapsed().as_secs_f64();
        // The tasks' history entries follow on the events exchange: those of acceptance, and
        // one `task-dispatched` per task.
        let events = events + tasks as i64;
        while store.events_backlog().await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let everything = (tasks as f64 + events as f64) / started.elapsed().as_secs_f64();
        relay.abort();
        for department in ["scjg", "xf"] {
            channel
                .queue_purge(
                    names.task_queue(department).as_str().into(),
                    QueuePurgeOptions::default(),
                )
                .await
                .unwrap();
        }
        let raw_after = raw_publish(channel, names, &body, tasks).await;
        let raw = (raw_before + raw_after) / 2.0;

        println!(
            "publishing {tasks} tasks of {} bytes to quorum queues with confirms",
            body.len()
        );
        println!(
            "raw lapin publisher          {raw:>9.0} msg/s (mean of {raw_before:.0} before and {raw_after:.0} after the relay)"
        );
        println!(
            "outbox relay (store + broker) {relayed:>8.0} msg/s   ratio {:.2}",
            relayed / raw
        );
        println!(
            "outbox relay, tasks then their {events} status events (~200 bytes) {everything:>6.0} msg/s"
        );
        println!(
            "goal: relay >= 0.80 of the raw publisher: {:.2} ({})",
            relayed / raw,
            if relayed / raw >= 0.8 {
                "met"
            } else {
                "not met"
            }
        );
        broker.remove().await;
    });
}

/// Publishes `n` copies of `body` to scjg's task queue as the raw publisher: persistent, in
/// windows of 256 whose confirms are awaited; returns messages per second.
async fn raw_publish(
    channel: &lapin::Channel,
    names: &yichuang::bus::Names,
    body: &[u8],
    n: usize,
) -> f64 {
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let mut confirms = Vec::with_capacity(256);
        for _ in 0..256.min(n - sent) {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(format!("raw-{sent}").into());
            let c = channel
                .basic_publish(
                    names.tasks_exchange().into(),
                    "scjg".into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .unwrap();
            confirms.push(c);
            sent += 1;
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
    }
    n as f64 / started.elapsed().as_secs_f64()
}
