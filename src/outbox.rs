//! The outbox relay: publishes tasks whose acceptance transaction committed. It leases READY
//! rows from the store, publishes them persistent with publisher confirms — the whole batch
//! first, then the confirms — and marks a task dispatched only after its confirm. A crash
//! anywhere between commit and confirm leaves the lease to run out, and the task is published
//! again with the same `message_id`, so consumers drop the duplicate. The relay never decides
//! what a task contains; it only moves rows to the bus.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use prost::Message;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::bus::{self, Names, Topology};
use crate::config::BusConfig;
use crate::proto::v1::TaskMessage;
use crate::store::{OutboxItem, Store};

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
    Some(TaskMessage {
        prerequisites,
        task: Some(task),
        case_number: case.case_number.clone(),
        accepted_at: case.accepted_at,
        hall_code: submission.hall_code.clone(),
        window_code: submission.window_code.clone(),
        submission: Some(submission),
    })
}

/// Properties of a task message: persistent, stable id, schema, and the headers consumers
/// route and deduplicate on.
fn properties(item: &OutboxItem) -> BasicProperties {
    let mut headers = FieldTable::default();
    let text = |v: &str| AMQPValue::LongString(v.into());
    headers.insert(ShortString::from("case-id"), text(&item.case.case_number));
    headers.insert(ShortString::from("task-id"), text(&item.task_id));
    headers.insert(ShortString::from("department"), text(&item.department));
    // Our own attempt counter (x-death is not relied on); the relay's publish is attempt 1.
    headers.insert(ShortString::from("attempt"), AMQPValue::LongInt(1));
    headers.insert(
        ShortString::from("traceparent"),
        text(&crate::trace::traceparent(&item.case.trace_id)),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(item.task_id.as_str().into())
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

/// Runs the relay until the task is dropped: connects (and reconnects with backoff), declares
/// the topology, and publishes whenever `wake` is notified or every 500 ms.
pub async fn run(
    store: Store,
    topology: Topology,
    config: BusConfig,
    wake: Arc<Notify>,
    status: Arc<RelayStatus>,
) {
    let timeout = Duration::from_secs(config.timeout_secs);
    let mut backoff = Duration::from_millis(500);
    loop {
        let (connection, channel) = match open(&topology, &config, timeout).await {
            Ok(c) => {
                backoff = Duration::from_millis(500);
                c
            }
            Err(e) => {
                status.set(false, e.clone());
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay cannot reach the broker");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        info!("outbox relay connected");
        status.set(true, String::new());
        let names = Names::new(&config.prefix);
        loop {
            let round = match relay_once(&store, &channel, &names, timeout).await {
                // Tasks first, then the history entries their dispatch produced.
                Ok(n) => relay_events(&store, &channel, &names, timeout)
                    .await
                    .map(|m| n + m),
                Err(e) => Err(e),
            };
            match round {
                Ok(0) => {
                    let _ = tokio::time::timeout(POLL, wake.notified()).await;
                }
                Ok(n) => debug!(published = n, "outbox relay published"),
                Err(e) => {
                    warn!(error = %e, "outbox relay lost the broker; reconnecting");
                    status.set(false, e);
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(timeout, connection.close(0, "reconnecting".into())).await;
    }
}

/// Connects, declares the topology and opens a confirming channel.
async fn open(
    topology: &Topology,
    config: &BusConfig,
    timeout: Duration,
) -> Result<(Connection, Channel), String> {
    let connection = bus::connect(config).await.map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    topology
        .declare(&channel, timeout)
        .await
        .map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok((connection, channel))
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

/// Publishes one batch of history entries to the events exchange; returns how many were confirmed.
async fn relay_events(
    store: &Store,
    channel: &Channel,
    names: &Names,
    timeout: Duration,
) -> Result<usize, String> {
    let items = match store.claim_events(BATCH, LEASE_MS).await {
        Ok(items) => items,
        Err(e) => {
            warn!(error = %e, "outbox relay cannot read the history");
            return Ok(0);
        }
    };
    if items.is_empty() {
        return Ok(0);
    }
    let exchange = names.events_exchange();
    let mut pending = Vec::with_capacity(items.len());
    for item in items {
        let key = event_routing_key(&item.event.kind);
        let id = format!("{}:{}", item.case_number, item.event.seq);
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("case-id"),
            AMQPValue::LongString(item.case_number.as_str().into()),
        );
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(crate::trace::traceparent(&item.trace_id).into()),
        );
        if !item.event.task_id.is_empty() {
            headers.insert(
                ShortString::from("task-id"),
                AMQPValue::LongString(item.event.task_id.as_str().into()),
            );
        }
        let body = crate::proto::v1::EventMessage {
            case_number: item.case_number.clone(),
            hall_code: item.hall_code,
            window_code: item.window_code,
            event: Some(item.event.clone()),
        }
        .encode_to_vec();
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into())
            .with_content_type(EVENT_CONTENT_TYPE.into())
            .with_headers(headers);
        let publish = channel.basic_publish(
            exchange.as_str().into(),
            key.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        );
        let confirm = tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| format!("publish timed out after {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        pending.push(((item.case_number, item.event.seq), confirm));
    }
    let mut confirmed = Vec::with_capacity(pending.len());
    for (key, confirm) in pending {
        match tokio::time::timeout(timeout, confirm).await {
            Ok(Ok(c)) if c.is_ack() => confirmed.push(key),
            Ok(Ok(_)) => {
                warn!(case = %key.0, seq = key.1, "broker refused an event; it is published again after its lease")
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no confirm within {timeout:?}")),
        }
    }
    let n = confirmed.len();
    if let Err(e) = store.mark_events_published(confirmed).await {
        warn!(error = %e, "outbox relay cannot mark events published");
    }
    Ok(n)
}

/// Publishes one batch; returns how many tasks were confirmed. A store error is logged and
/// retried on the next round; a broker error ends the channel.
async fn relay_once(
    store: &Store,
    channel: &Channel,
    names: &Names,
    timeout: Duration,
) -> Result<usize, String> {
    let items = match store.claim_ready(BATCH, LEASE_MS).await {
        Ok(items) => items,
        Err(e) => {
            warn!(error = %e, "outbox relay cannot read the store");
            tokio::time::sleep(POLL).await;
            return Ok(0);
        }
    };
    if items.is_empty() {
        return Ok(0);
    }
    let exchange = names.tasks_exchange();
    let mut pending = Vec::with_capacity(items.len());
    for item in &items {
        let Some(message) = task_message(item) else {
            warn!(task = %item.task_id, "task missing from its case record; left for inspection");
            continue;
        };
        let body = message.encode_to_vec();
        let publish = channel.basic_publish(
            exchange.as_str().into(),
            item.department.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            properties(item),
        );
        let confirm = tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| format!("publish timed out after {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        pending.push((item.task_id.clone(), confirm));
    }
    let mut confirmed = Vec::with_capacity(pending.len());
    for (task_id, confirm) in pending {
        match tokio::time::timeout(timeout, confirm).await {
            Ok(Ok(c)) if c.is_ack() => confirmed.push(task_id),
            Ok(Ok(_)) => {
                warn!(task = %task_id, "broker refused the task; it is published again after its lease")
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no confirm within {timeout:?}")),
        }
    }
    let n = confirmed.len();
    if let Err(e) = store.mark_dispatched(confirmed).await {
        // Published but not marked: published again after the lease, deduplicated by message_id.
        warn!(error = %e, "outbox relay cannot mark tasks dispatched");
    }
    Ok(n)
}
