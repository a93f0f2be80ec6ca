//! Dead-letter operations: what is in a department's dead queue (`<prefix>.dead.<dept>`, or
//! `results`), one message in full, and moving messages back to where they came from or
//! discarding them (`yichuang dlq`, docs/bus.md).
//!
//! Moving back is transactional (AMQP `tx.select`): the copy's publish and the dead message's
//! acknowledgement commit together, so a message is moved back once and never copied twice,
//! whatever fails in between. Messages looked at but not selected are left in place (their
//! deliveries are returned when the channel closes). Personal data is never printed: a task
//! message is shown by its ids, and reasons are masked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use prost::Message;

use super::{BusError, Names};
use crate::config::BusConfig;
use crate::proto::v1::{ResultMessage, TaskMessage};

/// One dead message, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub case_number: String,
    pub task_id: String,
    /// Why it is here (masked): the adapter's reason, or RabbitMQ's (`rejected`,
    /// `delivery_limit`, `expired`) with the queue it came from.
    pub reason: String,
    /// The task's attempts when it was given up, if known.
    pub attempt: Option<i64>,
    /// The W3C trace id of the case, from `traceparent`.
    pub trace_id: String,
    /// When it was dead-lettered, if known.
    pub dead_at: String,
    pub bytes: usize,
}

/// Which messages an operation takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The messages with these `message_id`s.
    Ids(Vec<String>),
    /// The messages whose (masked) reason contains this text.
    Reason(String),
    /// Every message in the queue.
    All,
}

impl Selection {
    /// Whether the selection takes `letter`.
    pub fn takes(&self, letter: &DeadLetter) -> bool {
        match self {
            Selection::Ids(ids) => ids.contains(&letter.message_id),
            Selection::Reason(text) => letter.reason.contains(text.as_str()),
            Selection::All => true,
        }
    }
}

fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn int(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

/// RabbitMQ's own reason (`x-death[0]`): `reason` and source `queue`.
fn death(headers: &FieldTable) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    Some(format!(
        "{} (from {})",
        text(first, "reason").unwrap_or_default(),
        text(first, "queue").unwrap_or_default()
    ))
}

fn summary(data: &[u8], properties: &BasicProperties) -> DeadLetter {
    let headers = properties.headers().clone().unwrap_or_default();
    let (mut case_number, mut task_id) = (String::new(), String::new());
    if let Ok(m) = TaskMessage::decode(data)
        && let Some(t) = &m.task
    {
        case_number = m.case_number.clone();
        task_id = t.task_id.clone();
    } else if let Ok(r) = ResultMessage::decode(data)
        && !r.task_id.is_empty()
    {
        case_number = r.case_number;
        task_id = r.task_id;
    }
    if task_id.is_empty() {
        task_id = text(&headers, super::headers::TASK_ID).unwrap_or_default();
    }
    let reason = text(&headers, super::headers::REASON)
        .or_else(|| death(&headers))
        .unwrap_or_default();
    DeadLetter {
        message_id: properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        case_number,
        task_id,
        reason: crate::privacy::mask_free_text(&reason),
        attempt: int(&headers, super::headers::ATTEMPT),
        trace_id: text(&headers, super::headers::TRACEPARENT)
            .and_then(|t| crate::trace::trace_id_of(&t).map(str::to_string))
            .unwrap_or_default(),
        dead_at: text(&headers, super::headers::DEAD_AT).unwrap_or_default(),
        bytes: data.len(),
    }
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::BasicGetMessage>, BusError> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|source| BusError::Declare {
            what: format!("reading {queue}"),
            source,
        })
}

/// The dead queue of `department` (or `results`).
pub fn queue(config: &BusConfig, department: &str) -> String {
    Names::new(&config.prefix).dead_queue(department)
}

/// Up to `limit` messages of a dead queue, oldest first; the queue is left as it was.
pub async fn list(
    config: &BusConfig,
    department: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, BusError> {
    let connection = super::connect(config).await?;
    let channel = open(&connection).await?;
    let queue = queue(config, department);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(m) = get(&channel, &queue).await? else {
            break;
        };
        out.push(summary(&m.delivery.data, &m.delivery.properties));
    }
    // Closing returns every delivery taken (none was acknowledged).
    let _ = connection.close(200, "dlq list".into()).await;
    Ok(out)
}

/// One dead message in full, for an operator looking at it: its summary, every header (values
/// masked), RabbitMQ's record of each time it died, and its body as JSON with personal data
/// masked ([`crate::privacy::mask_task_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadDetail {
    pub letter: DeadLetter,
    pub headers: Vec<(String, String)>,
    /// `x-death`, first death first: reason, queue, count and time.
    pub deaths: Vec<String>,
    pub body: String,
}

/// The message `message_id` of a dead queue, looked at among its first `limit`; the queue is
/// left as it was.
pub async fn look(
    config: &BusConfig,
    department: &str,
    message_id: &str,
    limit: usize,
) -> Result<Option<DeadDetail>, BusError> {
    let connection = super::connect(config).await?;
    let channel = open(&connection).await?;
    let queue = queue(config, department);
    let mut found = None;
    for _ in 0..limit {
        let Some(m) = get(&channel, &queue).await? else {
            break;
        };
        let letter = summary(&m.delivery.data, &m.delivery.properties);
        if letter.message_id == message_id {
            found = Some(detail(letter, &m.delivery.data, &m.delivery.properties));
            break;
        }
    }
    let _ = connection.close(200, "dlq look".into()).await;
    Ok(found)
}

fn detail(letter: DeadLetter, data: &[u8], properties: &BasicProperties) -> DeadDetail {
    let table = properties.headers().clone().unwrap_or_default();
    let shown = |v: &AMQPValue| match v {
        AMQPValue::LongString(s) => crate::privacy::mask_free_text(&s.to_string()),
        AMQPValue::ShortString(s) => crate::privacy::mask_free_text(s.as_str()),
        AMQPValue::FieldArray(a) => format!("[{} entries]", a.as_slice().len()),
        AMQPValue::FieldTable(_) => "{…}".to_string(),
        other => crate::privacy::mask_free_text(&format!("{other:?}")),
    };
    let headers = table
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-death")
        .map(|(k, v)| (k.to_string(), shown(v)))
        .collect();
    let mut deaths: Vec<String> = match table.inner().get("x-death") {
        Some(AMQPValue::FieldArray(all)) => all
            .as_slice()
            .iter()
            .filter_map(|d| match d {
                AMQPValue::FieldTable(t) => Some(format!(
                    "{} from {} ×{}{}",
                    text(t, "reason").unwrap_or_default(),
                    text(t, "queue").unwrap_or_default(),
                    int(t, "count").unwrap_or(1),
                    match t.inner().get("time") {
                        Some(AMQPValue::Timestamp(at)) =>
                            chrono::DateTime::from_timestamp(*at as i64, 0)
                                .map(|t| format!(" at {}", t.to_rfc3339()))
                                .unwrap_or_default(),
                        _ => String::new(),
                    }
                )),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // RabbitMQ keeps the latest death first.
    deaths.reverse();
    let body = if let Ok(m) = TaskMessage::decode(data)
        && m.task.is_some()
    {
        let mut v = serde_json::to_value(&m).unwrap_or_default();
        crate::privacy::mask_task_json(&mut v);
        // Outside the submission too (a department's reasons, results, supplements): every
        // string through the free-text mask.
        mask_strings(&mut v);
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else if let Ok(r) = ResultMessage::decode(data)
        && !r.task_id.is_empty()
    {
        let mut v = serde_json::to_value(&r).unwrap_or_default();
        mask_strings(&mut v);
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else {
        format!(
            "({} bytes that are neither a task nor a result)",
            data.len()
        )
    };
    DeadDetail {
        letter,
        headers,
        deaths,
        body,
    }
}

/// Every string of `v` through [`crate::privacy::mask_free_text`] (what is masked already
/// stays as it is).
fn mask_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = crate::privacy::mask_free_text(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_strings),
        serde_json::Value::Object(m) => m.values_mut().for_each(mask_strings),
        _ => {}
    }
}

async fn open(connection: &lapin::Connection) -> Result<Channel, BusError> {
    connection
        .create_channel()
        .await
        .map_err(|source| BusError::Declare {
            what: "a channel".into(),
            source,
        })
}

/// What to do with a selected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Back where it came from: a department's task queue (attempts start again), or the
    /// results queue.
    Replay,
    /// Discarded.
    Purge,
}

/// How far an operation has gone, for whoever watches it (the console's progress): the
/// messages the queue held when it started, those looked at, and those moved.
#[derive(Debug, Default)]
pub struct Progress {
    pub queued: AtomicUsize,
    pub looked: AtomicUsize,
    pub moved: AtomicUsize,
}

/// Moves back (or discards) the selected messages of `department`'s dead queue, at most `rate`
/// a second (0: no limit), each in a transaction of its own. Each message moved is pushed onto
/// `moved` as its transaction commits, so a failure part-way still tells what was moved;
/// `progress` counts as it goes.
pub async fn act(
    config: &BusConfig,
    department: &str,
    selection: &Selection,
    action: Action,
    rate: u32,
    moved: &mut Vec<DeadLetter>,
    progress: &Progress,
) -> Result<(), BusError> {
    let names = Names::new(&config.prefix);
    let connection = super::connect(config).await?;
    let channel = open(&connection).await?;
    let failed = |what: &str| {
        let what = what.to_string();
        move |source| BusError::Declare { what, source }
    };
    channel
        .tx_select()
        .await
        .map_err(failed("tx.select on the dead-letter channel"))?;
    let queue = queue(config, department);
    let count = channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(failed(&format!("queue {queue}")))?
        .message_count();
    progress.queued.store(count as usize, Ordering::Relaxed);
    // Each message is looked at once: the ones not selected stay taken until the channel closes.
    for _ in 0..count {
        let Some(m) = get(&channel, &queue).await? else {
            break;
        };
        let letter = summary(&m.delivery.data, &m.delivery.properties);
        progress.looked.fetch_add(1, Ordering::Relaxed);
        if !selection.takes(&letter) {
            continue;
        }
        if action == Action::Replay {
            let (exchange, key) = if department == "results" {
                (names.results_exchange(), "replayed".to_string())
            } else {
                (names.tasks_exchange(), department.to_string())
            };
            let mut headers = FieldTable::default();
            if let Some(old) = m.delivery.properties.headers() {
                for (k, v) in old.inner() {
                    if !matches!(
                        k.as_str(),
                        "x-death" | super::headers::REASON | super::headers::DEAD_AT
                    ) {
                        headers.insert(k.clone(), v.clone());
                    }
                }
            }
            // A fresh set of attempts: the operator sends it back because its cause is fixed.
            headers.insert(
                ShortString::from(super::headers::ATTEMPT),
                AMQPValue::LongInt(1),
            );
            // Handled again even where an adapter remembers the task (it died there).
            headers.insert(
                ShortString::from(super::headers::REPLAYED),
                AMQPValue::LongInt(1),
            );
            let properties = m.delivery.properties.clone().with_headers(headers);
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    &m.delivery.data,
                    properties,
                )
                .await
                .map_err(failed("publishing a dead letter back"))?;
        }
        channel
            .basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(failed("acknowledging a dead letter"))?;
        channel
            .tx_commit()
            .await
            .map_err(failed("committing a dead letter's move"))?;
        moved.push(letter);
        progress.moved.fetch_add(1, Ordering::Relaxed);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(1.0 / f64::from(rate))).await;
        }
    }
    let _ = connection.close(200, "dlq done".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{Applicant, Submission, Task};

    /// A dead task shown in full masks the applicant's data in the submission and personal data
    /// anywhere else in the message (a department's reasons name people too).
    #[test]
    fn a_dead_task_s_body_is_masked_throughout() {
        let id = "640102199003071234";
        let message = TaskMessage {
            case_number: "C1".into(),
            task: Some(Task {
                task_id: "C1-01".into(),
                reasons: vec![format!("申请人 {id} 的材料不全,联系 13912345678")],
                ..Default::default()
            }),
            submission: Some(Submission {
                applicant: Some(Applicant {
                    name: "张三丰".into(),
                    id_number: id.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let data = message.encode_to_vec();
        let properties = BasicProperties::default().with_message_id("m1".into());
        let shown = detail(summary(&data, &properties), &data, &properties);
        assert!(!shown.body.contains(id), "{}", shown.body);
        assert!(!shown.body.contains("13912345678"), "{}", shown.body);
        assert!(!shown.body.contains("张三丰"), "{}", shown.body);
        assert!(shown.body.contains("C1-01"), "ids stay: {}", shown.body);
    }
}
