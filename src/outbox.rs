//! The outbox relay: publishes tasks whose acceptance transaction committed, and the case
//! history entries (status events) written with them. It leases READY
//! rows from the store, publishes them persistent with publisher confirms — the whole batch
//! first, then the confirms — and marks a task dispatched only after its confirm. A crash
//! anywhere between commit and confirm leaves the lease to run out, and the task is published
//! again with the same `message_id`, so consumers drop the duplicate. The relay never decides
//! what a task contains; it only moves rows to the bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use prost::Message;
use tokio::sync::Notify;
use tracing::Instrument;
use tracing::{debug, info, warn};

use crate::bus::{self, Ended, Names, Topology};
use crate::config::BusConfig;
use crate::proto::v1::{SupplementDelivery, TaskMessage};
use crate::store::{EventItem, OutboxItem, Store};
use crate::supervise::idle;

/// Tasks leased and published per round.
const BATCH: usize = 1024;
/// How long a leased task is left to its relay before another may take it.
const LEASE_MS: i64 = 30_000;
/// How often the relay looks for work when nobody wakes it.
const POLL: Duration = Duration::from_millis(500);
/// Content type of task messages.
pub const TASK_CONTENT_TYPE: &str = "application/x-protobuf; proto=yichuang.v1.TaskMessage";

/// Builds the message of one task.
pub fn task_message(item: &OutboxItem) -> Option<TaskMessage> {
    let case = &item.case;
    let task = case
        .tasks
        .iter()
        .find(|t| t.task_id == item.task_id)?
        .clone();
    let submission = case.submission.clone().unwrap_or_default();
    let prerequisites = case
        .tasks
        .iter()
        .filter(|t| task.depends_on.contains(&t.task_id))
        .cloned()
        .collect();
    // A resumed task carries the materials of the supplement that resumed it.
    let supplement = (task.supplement_round > 0).then(|| {
        let codes = case
            .supplements
            .iter()
            .rev()
            .find(|s| s.resumed_task_ids.contains(&task.task_id))
            .map(|s| s.material_codes.clone())
            .unwrap_or_default();
        SupplementDelivery {
            round: task.supplement_round,
            materials: submission
                .materials
                .iter()
                .filter(|m| codes.contains(&m.material_code))
                .cloned()
                .collect(),
            requested: task.materials_requested.clone(),
        }
    });
    Some(TaskMessage {
        prerequisites,
        supplement,
        task: Some(task),
        case_number: case.case_number.clone(),
        accepted_at: case.accepted_at,
        hall_code: submission.hall_code.clone(),
        window_code: submission.window_code.clone(),
        submission: Some(submission),
    })
}

/// The `message_id` of a task message: the task id, and `:s<round>` once a supplement resumed
/// the task, so consumers drop a copy of the same round but not the next round.
pub fn task_message_id(item: &OutboxItem) -> String {
    let round = item
        .case
        .tasks
        .iter()
        .find(|t| t.task_id == item.task_id)
        .map_or(0, |t| t.supplement_round);
    if round > 0 {
        format!("{}:s{round}", item.task_id)
    } else {
        item.task_id.clone()
    }
}

/// The span of one task's publish: a producer span in the case's trace, a child of the
/// `Submit` call that accepted the case when that call's span was exported.
fn publish_span(item: &OutboxItem, exchange: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {}", item.department),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %exchange,
        case.number = %item.case.case_number,
        task.id = %item.task_id,
        department = %item.department,
    );
    if !item.case.trace_span_id.is_empty() {
        crate::trace::continue_in(
            &span,
            &format!("00-{}-{}-01", item.case.trace_id, item.case.trace_span_id),
        );
    }
    span
}

/// Properties of a task message: persistent, stable id, schema, and the headers consumers
/// route and deduplicate on.
fn properties(item: &OutboxItem, span: &tracing::Span) -> BasicProperties {
    let mut headers = FieldTable::default();
    let text = |v: &str| AMQPValue::LongString(v.into());
    headers.insert(
        ShortString::from(crate::bus::headers::CASE_ID),
        text(&item.case.case_number),
    );
    headers.insert(
        ShortString::from(crate::bus::headers::TASK_ID),
        text(&item.task_id),
    );
    headers.insert(
        ShortString::from(crate::bus::headers::DEPARTMENT),
        text(&item.department),
    );
    // Our own attempt counter (x-death is not relied on); the relay's publish is attempt 1.
    headers.insert(
        ShortString::from(crate::bus::headers::ATTEMPT),
        AMQPValue::LongInt(1),
    );
    // A stalled task published again: the adapter handles it even if it remembers the task
    // (it looks the task up before submitting, so the department sees it once).
    if item.repair > 0 {
        headers.insert(
            ShortString::from(crate::bus::headers::REPAIR),
            AMQPValue::LongLongInt(item.repair),
        );
    }
    // A relay that claimed the task before may have published it and died: this one may be a
    // second copy, which the adapter holds until any earlier attempt has had its time.
    if item.reclaimed {
        headers.insert(
            ShortString::from(crate::bus::headers::COPY),
            AMQPValue::Boolean(true),
        );
    }
    headers.insert(
        ShortString::from(crate::bus::headers::TRACEPARENT),
        text(&crate::trace::header_for(span, &item.case.trace_id)),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(task_message_id(item).into())
        .with_content_type(TASK_CONTENT_TYPE.into())
        .with_timestamp(chrono::Utc::now().timestamp() as u64)
        .with_headers(headers)
}

/// What the relay knows of the broker, for health and `AdminService.Status`.
#[derive(Debug, Default)]
pub struct RelayStatus {
    state: std::sync::Mutex<(bool, String)>,
}

impl RelayStatus {
    /// Whether the relay is connected, and its last error.
    pub fn get(&self) -> (bool, String) {
        self.state.lock().expect("relay status lock").clone()
    }

    fn set(&self, connected: bool, error: String) {
        *self.state.lock().expect("relay status lock") = (connected, error);
    }
}

/// Why a lane returned when the gateway stops.
const STOPPING: &str = "the gateway is stopping";

/// What the relay tells operators while RabbitMQ blocks publishing.
pub const BLOCKED: &str =
    "RabbitMQ blocks publishing (memory or disk alarm); cases are kept in the store until it lifts";

/// Runs the relay until the task is dropped: connects (and reconnects with backoff), declares
/// the topology, and runs two lanes on channels of their own — tasks, woken by `wake` or every
/// 500 ms, and status events — until either loses the broker.
pub async fn run(
    store: Store,
    topology: Topology,
    config: BusConfig,
    wake: Arc<Notify>,
    status: Arc<RelayStatus>,
    now: crate::clock::Now,
) {
    let timeout = Duration::from_secs(config.timeout_secs);
    let names = Names::new(&config.prefix);
    let events_wake = Arc::new(Notify::new());
    let tasks_busy = Arc::new(AtomicBool::new(false));
    bus::reconnecting("outbox relay", || async {
        let (connection, tasks, events) = match open(&topology, &config, timeout).await {
            Ok(c) => c,
            Err(e) => {
                status.set(false, e.clone());
                return Ended::Unreachable(e);
            }
        };
        info!("outbox relay connected");
        status.set(true, String::new());
        let broker = Broker {
            connection: connection.status().clone(),
            status: status.clone(),
            timeout,
            now: now.clone(),
        };
        let lane = |kind, channel, wake, then| Lane {
            kind,
            store: store.clone(),
            channel,
            names: names.clone(),
            broker: broker.clone(),
            wake,
            then,
            tasks_busy: tasks_busy.clone(),
        };
        let tasks = lane(Kind::Tasks, tasks, wake.clone(), Some(events_wake.clone()));
        let events = lane(Kind::Events, events, events_wake.clone(), None);
        let e = tokio::select! {
            e = tasks.run() => e,
            e = events.run() => e,
        };
        status.set(false, e.clone());
        let _ = tokio::time::timeout(timeout, connection.close(0, "reconnecting".into())).await;
        Ended::Lost(e)
    })
    .await
}

/// Connects, declares the topology and opens two confirming channels.
async fn open(
    topology: &Topology,
    config: &BusConfig,
    timeout: Duration,
) -> Result<(Connection, Channel, Channel), String> {
    let connection = bus::connect(config).await.map_err(|e| e.to_string())?;
    let tasks = bus::confirming_channel(&connection).await?;
    let events = bus::confirming_channel(&connection).await?;
    topology
        .declare(&tasks, timeout)
        .await
        .map_err(|e| e.to_string())?;
    // At-least-once dead-lettering: without it a broker restart drops the tasks waiting in the
    // delay queues. The relay goes on without it (publishing is not affected), loudly.
    match bus::policy::apply(config).await {
        Ok(true) => debug!("bus policies applied"),
        Ok(false) => {}
        Err(e) => {
            warn!(error = %e, "bus policies not applied: dead-lettering stays at-most-once until they are")
        }
    }
    Ok((connection, tasks, events))
}

/// The broker connection as the lanes see it: every await on the broker is bounded by
/// `timeout`, except while RabbitMQ blocks the connection (a resource alarm), which is
/// back-pressure, not failure: the relay waits, reports it, and keeps its connection.
#[derive(Clone)]
struct Broker {
    connection: lapin::ConnectionStatus,
    status: Arc<RelayStatus>,
    timeout: Duration,
    /// The legal clock: a task's clock starts when it is dispatched.
    now: crate::clock::Now,
}

impl Broker {
    async fn wait<F: std::future::Future>(
        &self,
        what: &str,
        future: F,
    ) -> Result<F::Output, String> {
        tokio::pin!(future);
        let mut blocked = false;
        loop {
            match tokio::time::timeout(self.timeout, &mut future).await {
                Ok(output) => {
                    if blocked {
                        info!("RabbitMQ lifted its alarm; the outbox relay publishes again");
                        self.status.set(true, String::new());
                    }
                    return Ok(output);
                }
                Err(_) if self.connection.blocked() && self.connection.connected() => {
                    if !blocked {
                        warn!("{BLOCKED}");
                        self.status.set(false, BLOCKED.to_string());
                        blocked = true;
                    }
                }
                Err(_) => return Err(format!("{what}: no answer within {:?}", self.timeout)),
            }
        }
    }
}

/// The two kinds of outbox row.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Task rows, to the tasks exchange.
    Tasks,
    /// Case history entries, to the events exchange.
    Events,
}

/// Identifies a published row so it can be marked after its confirm.
enum Key {
    /// Task id, department, item code, and which republish of a stalled task (0: none).
    Task(String, String, String, i64),
    Event(String, i64),
}

/// A message ready to publish.
struct Outgoing {
    key: Key,
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
    /// The publish's span (a task's: a child of the `Submit` call that accepted the case).
    span: tracing::Span,
}

/// One kind of row moving to the bus on a channel of its own.
struct Lane {
    kind: Kind,
    store: Store,
    channel: Channel,
    names: Names,
    broker: Broker,
    wake: Arc<Notify>,
    /// Woken after this lane marks rows (dispatching a task writes history entries).
    then: Option<Arc<Notify>>,
    /// Set while the tasks lane finds full batches: the departments' work goes first, and the
    /// events lane waits until the tasks lane keeps up.
    tasks_busy: Arc<AtomicBool>,
}

impl Lane {
    /// The lane was told to stop: the batch in flight is confirmed and marked first.
    async fn stop(
        &self,
        in_flight: Option<tokio::task::JoinHandle<Result<usize, String>>>,
    ) -> String {
        if let Some(previous) = in_flight
            && let Err(e) = self.finish(previous).await
        {
            return e;
        }
        STOPPING.into()
    }

    /// Claims, publishes and marks until the broker fails; returns the failure. Two batches
    /// are in flight at most: while one batch's confirms are awaited and its rows marked, the
    /// next is claimed and published.
    async fn run(self) -> String {
        let mut in_flight: Option<tokio::task::JoinHandle<Result<usize, String>>> = None;
        loop {
            if matches!(self.kind, Kind::Events) && self.tasks_busy.load(Ordering::Relaxed) {
                if idle(tokio::time::timeout(POLL, self.wake.notified()))
                    .await
                    .is_none()
                {
                    return self.stop(in_flight).await;
                }
                continue;
            }
            let batch = match self.claim().await {
                Ok(batch) => {
                    crate::supervise::progressed();
                    batch
                }
                Err(e) => {
                    warn!(lane = ?self.kind, error = %e, "outbox relay cannot read the store");
                    if idle(tokio::time::sleep(POLL)).await.is_none() {
                        return self.stop(in_flight).await;
                    }
                    continue;
                }
            };
            if matches!(self.kind, Kind::Tasks) {
                let busy = batch.len() >= BATCH;
                let was_busy = self.tasks_busy.swap(busy, Ordering::Relaxed);
                if was_busy
                    && !busy
                    && let Some(then) = &self.then
                {
                    then.notify_one();
                }
            }
            if batch.is_empty() {
                if let Some(previous) = in_flight.take() {
                    if let Err(e) = self.finish(previous).await {
                        return e;
                    }
                    continue;
                }
                if idle(tokio::time::timeout(POLL, self.wake.notified()))
                    .await
                    .is_none()
                {
                    return STOPPING.into();
                }
                continue;
            }
            let confirms = match self.publish(batch).await {
                Ok(confirms) => confirms,
                Err(e) => return e,
            };
            if let Some(previous) = in_flight.take()
                && let Err(e) = self.finish(previous).await
            {
                return e;
            }
            in_flight = Some(tokio::spawn(confirm_and_mark(
                self.store.clone(),
                self.broker.clone(),
                confirms,
            )));
        }
    }

    async fn finish(
        &self,
        previous: tokio::task::JoinHandle<Result<usize, String>>,
    ) -> Result<(), String> {
        let n = previous.await.map_err(|e| e.to_string())??;
        debug!(lane = ?self.kind, published = n, "outbox relay published");
        crate::supervise::progressed();
        if let Some(then) = &self.then {
            then.notify_one();
        }
        Ok(())
    }

    async fn claim(&self) -> Result<Vec<Outgoing>, crate::store::StoreError> {
        Ok(match self.kind {
            Kind::Tasks => {
                let exchange = self.names.tasks_exchange();
                self.store
                    .claim_ready(BATCH, LEASE_MS)
                    .await?
                    .into_iter()
                    .filter_map(|item| {
                        let Some(message) = task_message(&item) else {
                            warn!(task = %item.task_id, "task missing from its case record; left for inspection");
                            return None;
                        };
                        let span = publish_span(&item, &exchange);
                        let item_code = message
                            .task
                            .as_ref()
                            .map(|t| t.item_code.clone())
                            .unwrap_or_default();
                        Some(Outgoing {
                            exchange: exchange.clone(),
                            routing_key: item.department.clone(),
                            body: message.encode_to_vec(),
                            properties: properties(&item, &span),
                            key: Key::Task(item.task_id, item.department, item_code, item.repair),
                            span,
                        })
                    })
                    .collect()
            }
            Kind::Events => {
                let exchange = self.names.events_exchange();
                self.store
                    .claim_events(BATCH, LEASE_MS)
                    .await?
                    .into_iter()
                    .map(|item| Outgoing {
                        span: tracing::Span::none(),
                        exchange: exchange.clone(),
                        routing_key: event_routing_key(&item.event.kind),
                        properties: event_properties(&item),
                        key: Key::Event(item.case_number.clone(), item.event.seq),
                        body: crate::proto::v1::EventMessage {
                            case_number: item.case_number,
                            hall_code: item.hall_code,
                            window_code: item.window_code,
                            event: Some(item.event),
                        }
                        .encode_to_vec(),
                    })
                    .collect()
            }
        })
    }

    /// Publishes the whole batch; the confirms are awaited later.
    async fn publish(
        &self,
        batch: Vec<Outgoing>,
    ) -> Result<Vec<(Key, lapin::PublisherConfirm)>, String> {
        let mut confirms = Vec::with_capacity(batch.len());
        for m in batch {
            let publish = self.channel.basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &m.body,
                m.properties,
            );
            let confirm = self
                .broker
                .wait("publish", publish)
                .instrument(m.span)
                .await?
                .map_err(|e| e.to_string())?;
            confirms.push((m.key, confirm));
        }
        Ok(confirms)
    }
}

/// Awaits a batch's confirms and marks the confirmed rows. A refused message (nack) stays
/// leased and is published again after its lease; a row published but not marked (store
/// error) likewise, and consumers drop the duplicate by `message_id`.
async fn confirm_and_mark(
    store: Store,
    broker: Broker,
    confirms: Vec<(Key, lapin::PublisherConfirm)>,
) -> Result<usize, String> {
    let mut tasks = Vec::new();
    let mut repaired = Vec::new();
    let mut events = Vec::new();
    for (key, confirm) in confirms {
        let confirmation = broker
            .wait("publisher confirm", confirm)
            .await?
            .map_err(|e| e.to_string())?;
        match (key, confirmation.is_ack()) {
            (Key::Task(id, _, _, repair), true) if repair > 0 => repaired.push(id),
            (Key::Task(id, department, item, _), true) => {
                crate::metrics::meters()
                    .tasks_dispatched
                    .get_or_create(&crate::metrics::ItemLabels { department, item })
                    .inc();
                tasks.push(id)
            }
            (Key::Event(case, seq), true) => events.push((case, seq)),
            (Key::Task(id, ..), false) => {
                warn!(task = %id, "broker refused the task; it is published again after its lease")
            }
            (Key::Event(case, seq), false) => {
                warn!(case = %case, seq, "broker refused an event; it is published again after its lease")
            }
        }
    }
    let n = tasks.len() + repaired.len() + events.len();
    for id in repaired {
        if let Err(e) = crate::stall::republished(&store, &id, (broker.now)()).await {
            warn!(task = %id, error = %e, "outbox relay cannot record a republished task; it is published again after its lease");
        }
    }
    if !tasks.is_empty()
        && let Err(e) = store.mark_dispatched_at(tasks, (broker.now)()).await
    {
        warn!(error = %e, "outbox relay cannot mark tasks dispatched");
    }
    if !events.is_empty()
        && let Err(e) = store.mark_events_published(events).await
    {
        warn!(error = %e, "outbox relay cannot mark events published");
    }
    Ok(n)
}

/// Routing key of a history entry on the events exchange: `task.<what>` for task entries
/// (`task-dispatched` → `task.dispatched`), `case.<kind>` for the others (`case.accepted`).
pub fn event_routing_key(kind: &str) -> String {
    match kind.strip_prefix("task-") {
        Some(what) => format!("task.{what}"),
        None => format!("case.{kind}"),
    }
}

/// Content type of event messages.
pub const EVENT_CONTENT_TYPE: &str = "application/x-protobuf; proto=yichuang.v1.EventMessage";

/// Properties of an event message.
fn event_properties(item: &EventItem) -> BasicProperties {
    let mut headers = FieldTable::default();
    let text = |v: &str| AMQPValue::LongString(v.into());
    headers.insert(
        ShortString::from(crate::bus::headers::CASE_ID),
        text(&item.case_number),
    );
    if !item.event.task_id.is_empty() {
        headers.insert(
            ShortString::from(crate::bus::headers::TASK_ID),
            text(&item.event.task_id),
        );
    }
    headers.insert(
        ShortString::from(crate::bus::headers::TRACEPARENT),
        text(&crate::trace::traceparent(&item.trace_id)),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(format!("{}:{}", item.case_number, item.event.seq).into())
        .with_content_type(EVENT_CONTENT_TYPE.into())
        .with_timestamp(chrono::Utc::now().timestamp() as u64)
        .with_headers(headers)
}
