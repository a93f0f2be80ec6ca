//! The runtime's broker session: a publishing connection (one confirming channel for results,
//! delays and dead letters) and a consuming connection (one channel per department, prefetch =
//! its concurrency), kept alive by [`yichuang::bus::reconnecting`], and the readiness it reports.
//! Deliveries are handed to each department's [`Worker`]; nothing here looks inside them. It
//! declares nothing: the adapter's broker user may configure nothing (docs/bus.md, "Users and
//! permissions"), so each session first checks, passively, that what it uses exists, and stays
//! not ready, saying what is missing, until `yichuang bus declare` or the gateway's relay made it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio_stream::StreamExt;
use tracing::{debug, info};
use yichuang::bus::{Ended, Names, Topology};
use yichuang::config::BusConfig;

use super::callbacks::Callbacks;
use super::department::Department;
use super::publisher::Publisher;
use super::worker::Worker;

/// Whether the runtime is connected and consuming (for readiness).
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, v: bool) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// Runs every department until the process ends: one consuming connection and one publishing
/// connection, recovered with backoff when the broker goes away.
pub async fn run(
    bus: BusConfig,
    departments: Vec<Arc<Department>>,
    readiness: Arc<Readiness>,
    callbacks: Arc<Callbacks>,
) {
    let timeout = Duration::from_secs(bus.timeout_secs);
    let codes: Vec<String> = departments.iter().map(|d| d.code().to_string()).collect();
    for code in &codes {
        crate::meters::meters().start(code);
    }
    let topology = used(&codes, &bus);
    yichuang::bus::reconnecting("adapter", || async {
        let ended = session(
            &bus,
            &topology,
            &departments,
            &readiness,
            &callbacks,
            timeout,
        )
        .await;
        readiness.set(false);
        *callbacks.publisher.write().await = None;
        ended
    })
    .await
}

async fn open(bus: &BusConfig, name: &str) -> Result<Connection, String> {
    let mut config = bus.clone();
    config.url = bus.url.clone();
    let connection = yichuang::bus::connect(&config)
        .await
        .map_err(|e| e.to_string())?;
    debug!(connection = name, "connected");
    Ok(connection)
}

/// One connected session: ends when a consumer stops (the broker went away).
async fn session(
    bus: &BusConfig,
    topology: &Topology,
    departments: &[Arc<Department>],
    readiness: &Readiness,
    callbacks: &Callbacks,
    timeout: Duration,
) -> Ended {
    let (publishing, consuming, publisher) = match connect(bus, topology, timeout).await {
        Ok(c) => c,
        Err(e) => return Ended::Unreachable(e),
    };
    *callbacks.publisher.write().await = Some(publisher.clone());
    let names = Names::new(&bus.prefix);
    let mut consumers = tokio::task::JoinSet::new();
    for department in departments {
        let consumer = match subscribe(&consuming, &names, department).await {
            Ok(c) => c,
            Err(e) => {
                consumers.abort_all();
                close(&publishing, &consuming, timeout).await;
                return Ended::Unreachable(e);
            }
        };
        let worker = Arc::new(Worker {
            department: department.clone(),
            publisher: publisher.clone(),
        });
        consumers.spawn(yichuang::supervise::inherit(consume(consumer, worker)));
    }
    readiness.set(true);
    let ended = consumers
        .join_next()
        .await
        .map(|r| r.unwrap_or_else(|e| e.to_string()))
        .unwrap_or_default();
    if yichuang::supervise::stopping() {
        // Every consumer stops taking deliveries and finishes the ones in hand; their results
        // go out on this session's publisher before it closes.
        readiness.set(false);
        while consumers.join_next().await.is_some() {}
    }
    consumers.abort_all();
    close(&publishing, &consuming, timeout).await;
    Ended::Lost(ended)
}

/// What of the shared topology the adapter uses, and checks exists before it consumes (it
/// declares nothing: its broker user may configure nothing, docs/bus.md): the exchanges it
/// publishes to (results, retry, dead) and its departments' task and delay queues.
fn used(codes: &[String], bus: &BusConfig) -> Topology {
    let names = Names::new(&bus.prefix);
    let mut topology = Topology::for_departments(codes, bus);
    let written = [
        names.results_exchange(),
        names.retry_exchange(),
        names.dead_exchange(),
    ];
    topology.exchanges.retain(|e| written.contains(&e.name));
    topology.queues.retain(|q| {
        codes.iter().any(|d| {
            q.name == names.task_queue(d)
                || q.name.starts_with(&format!("{}.retry.{d}.", bus.prefix))
        })
    });
    topology.bindings.clear();
    topology.retired.clear();
    topology
}

/// The two connections, the topology checked, and the confirming publisher.
async fn connect(
    bus: &BusConfig,
    topology: &Topology,
    timeout: Duration,
) -> Result<(Connection, Connection, Arc<Publisher>), String> {
    let publishing = open(bus, "publishing").await?;
    let consuming = open(bus, "consuming").await?;
    // Checked on a channel of its own: a missing queue closes the channel it is asked on.
    let checking = publishing
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    topology
        .check(&checking, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let _ = checking.close(200, "checked".into()).await;
    let channel = yichuang::bus::confirming_channel(&publishing).await?;
    let publisher = Arc::new(Publisher {
        channel,
        user: yichuang::bus::user(&bus.url),
        names: Names::new(&bus.prefix),
        delays: bus.retry_delays_secs.clone(),
        timeout,
    });
    Ok((publishing, consuming, publisher))
}

/// A channel of its own for the department's queue, with its prefetch, consuming.
async fn subscribe(
    consuming: &Connection,
    names: &Names,
    department: &Department,
) -> Result<(Channel, Consumer), String> {
    let channel = consuming
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .basic_qos(
            department.config.limits.concurrency,
            BasicQosOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let queue = names.task_queue(department.code());
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            format!(
                "yichuang-adapter-{}-{}",
                department.code(),
                uuid::Uuid::new_v4().simple()
            )
            .as_str()
            .into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    info!(department = %department.code(), queue = %queue, "consuming");
    Ok((channel, consumer))
}

/// Hands every delivery to the worker, each in a task of its own; ends with the consumer,
/// saying why. Told to stop, it takes no more deliveries and returns once the ones in hand are
/// handled (acknowledged, or put back); the broker returns the prefetched rest to the queue
/// when the channel closes.
async fn consume((channel, mut consumer): (Channel, Consumer), worker: Arc<Worker>) -> String {
    // The channel is held for as long as its consumer runs.
    let _channel = channel;
    // Each delivery's task holds a sender: once every one is dropped, nothing is in hand. The
    // tasks are detached, so a session cut short never cuts a legacy call in the middle.
    let (in_hand, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let ended = loop {
        let Some(next) = yichuang::supervise::idle(consumer.next()).await else {
            break "the adapter is stopping".to_string();
        };
        match next {
            Some(Ok(delivery)) => {
                let (worker, held) = (worker.clone(), in_hand.clone());
                tokio::spawn(async move {
                    worker.handle(delivery).await;
                    drop(held);
                });
            }
            Some(Err(e)) => break format!("consumer: {e}"),
            None => break "consumer ended".to_string(),
        }
    };
    drop(in_hand);
    if yichuang::supervise::stopping() {
        let _ = all_done.recv().await;
    }
    ended
}

async fn close(publishing: &Connection, consuming: &Connection, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, publishing.close(0, "reconnecting".into())).await;
    let _ = tokio::time::timeout(timeout, consuming.close(0, "reconnecting".into())).await;
}
