//! The results consumer: reads what the departments' adapters publish to the gateway's results
//! queue, on a connection of its own (a publishing connection blocked by a resource alarm never
//! stops results coming in), checks who sent each one, and records it through the case state
//! machine ([`crate::lifecycle`]). A delivery is acknowledged only after its effect is stored;
//! duplicates and stale results change nothing. A result that cannot be read, whose sender is
//! not the user `[bus.department_users]` names for its department, or whose department has no
//! user there at all (the check fails closed), is refused: dead-lettered to
//! `<prefix>.dead.results` and logged with the reason as an audit record. Only
//! `[development] unchecked_results` turns the sender check off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use prost::Message;
use tokio::sync::Notify;
use tokio_stream::StreamExt;
use tracing::Instrument;
use tracing::{debug, info, warn};

use crate::bus::{Ended, Names};
use crate::config::BusConfig;
use crate::lifecycle::TaskUpdate;
use crate::proto::v1::{ResultKind, ResultMessage};
use crate::store::{Store, StoreError};

/// Results handled at once (the consumer's prefetch).
const PREFETCH: u16 = 64;
/// How often a consumer with nothing to do checks its connection and reports itself alive.
const IDLE_TICK: Duration = Duration::from_secs(10);

/// Why a result was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Unreadable(String),
    /// The broker-validated sender is not the user configured for the department.
    WrongSender {
        department: String,
        user: String,
        expected: String,
    },
    /// No user is configured for the department: nobody may send its results.
    UnlistedDepartment {
        department: String,
        user: String,
    },
}

impl Refusal {
    /// A short name of the reason, for the audit record and the metric.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unreadable(_) => "unreadable",
            Refusal::WrongSender { .. } => "wrong_sender",
            Refusal::UnlistedDepartment { .. } => "unlisted_department",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unreadable(e) => write!(f, "cannot read the result: {e}"),
            Refusal::WrongSender {
                department,
                user,
                expected,
            } => write!(
                f,
                "a result for department {department} sent by RabbitMQ user {user:?}; only {expected:?} may send its results"
            ),
            Refusal::UnlistedDepartment { department, user } => write!(
                f,
                "a result for department {department} sent by RabbitMQ user {user:?}; [bus.department_users] names no user for {department}, so none is taken (add `{department} = \"<its adapter's user>\"`)"
            ),
        }
    }
}

/// Who may send a department's results.
#[derive(Debug, Clone)]
pub enum Senders {
    /// `[bus.department_users]`: department → the only RabbitMQ user whose results are taken;
    /// a department not listed has no results taken at all.
    Listed(BTreeMap<String, String>),
    /// `[development] unchecked_results`: any sender is taken.
    Unchecked,
}

impl Senders {
    /// The check a bus configuration asks for.
    pub fn of(config: &BusConfig) -> Senders {
        if config.unchecked_results {
            Senders::Unchecked
        } else {
            Senders::Listed(config.department_users.clone())
        }
    }

    /// Whether a result for `department` sent by the broker-validated `user` is taken.
    pub fn check(&self, department: &str, user: &str) -> Result<(), Refusal> {
        let Senders::Listed(users) = self else {
            return Ok(());
        };
        match users.get(department) {
            None => Err(Refusal::UnlistedDepartment {
                department: department.to_string(),
                user: user.to_string(),
            }),
            Some(expected) if expected != user => Err(Refusal::WrongSender {
                department: department.to_string(),
                user: user.to_string(),
                expected: expected.clone(),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// The broker-validated user that published a delivery (empty when none was set).
fn sender(delivery: &Delivery) -> String {
    delivery
        .properties
        .user_id()
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_default()
}

/// Reads a delivery and checks its sender against `[bus.department_users]`.
pub fn read(delivery: &Delivery, senders: &Senders) -> Result<ResultMessage, Refusal> {
    let r = ResultMessage::decode(delivery.data.as_slice())
        .map_err(|e| Refusal::Unreadable(e.to_string()))?;
    if r.task_id.is_empty() || r.department.is_empty() {
        return Err(Refusal::Unreadable("no task id or department".into()));
    }
    senders.check(&r.department, &sender(delivery))?;
    Ok(r)
}

/// The state-machine update a result stands for.
pub fn update(r: ResultMessage) -> Option<TaskUpdate> {
    let n = r.department_case_number;
    Some(match ResultKind::try_from(r.kind).ok()? {
        ResultKind::Unspecified => return None,
        ResultKind::Accepted => TaskUpdate::Accepted {
            department_case_number: n,
        },
        ResultKind::Progress => TaskUpdate::Progress {
            department_case_number: n,
            step: r.step,
        },
        ResultKind::Approved => TaskUpdate::Approved {
            department_case_number: n,
            documents: r.documents,
        },
        ResultKind::Rejected => TaskUpdate::Rejected {
            department_case_number: n,
            reasons: r.reasons,
        },
        ResultKind::Supplement => TaskUpdate::Supplement {
            department_case_number: n,
            materials: r.materials,
        },
        ResultKind::Failed => TaskUpdate::Refused { reasons: r.reasons },
        // A heartbeat changes no state (`record` takes it before this).
        ResultKind::Alive => return None,
    })
}

/// Consumes results until the task is dropped, reconnecting with backoff. `wake` is the
/// relay's: an approval that releases tasks wakes it.
pub async fn run(store: Store, config: BusConfig, wake: Arc<Notify>, now: crate::clock::Now) {
    if config.unchecked_results {
        warn!(
            "[development] unchecked_results = true: results are taken from any RabbitMQ user; never in production"
        );
    }
    crate::bus::reconnecting("results consumer", || session(&store, &config, &wake, &now)).await
}

async fn session(
    store: &Store,
    config: &BusConfig,
    wake: &Notify,
    now: &crate::clock::Now,
) -> Ended {
    // The channel is held for as long as its consumer runs.
    let (connection, channel, mut consumer) = match subscribe(config).await {
        Ok(c) => c,
        Err(e) => return Ended::Unreachable(e),
    };
    loop {
        // A quiet queue is progress too, while the connection stands: the worker is not stuck.
        let Some(next) =
            crate::supervise::idle(tokio::time::timeout(IDLE_TICK, consumer.next())).await
        else {
            // Told to stop between two results: the unacknowledged ones come again.
            return Ended::Lost("the gateway is stopping".into());
        };
        let next = match next {
            Ok(next) => next,
            Err(_) if connection.status().connected() => {
                crate::supervise::progressed();
                continue;
            }
            Err(_) => return Ended::Lost("the broker connection was lost".into()),
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Ended::Lost(e.to_string()),
            None => return Ended::Lost("the results consumer was cancelled".into()),
        };
        let refusals = Refused {
            connection: &connection,
            channel: &channel,
            dead_exchange: Names::new(&config.prefix).dead_exchange(),
        };
        handle(store, &Senders::of(config), &refusals, wake, now, delivery).await;
        crate::supervise::progressed();
    }
}

/// Connects and starts consuming the results queue.
async fn subscribe(
    config: &BusConfig,
) -> Result<(lapin::Connection, lapin::Channel, lapin::Consumer), String> {
    let connection = crate::bus::connect(config)
        .await
        .map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    // Confirms for the refused results it dead-letters itself, with their reason.
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let queue = Names::new(&config.prefix).results_queue();
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "yichuang-gateway-results".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    info!(queue = %queue, "results consumer connected");
    Ok((connection, channel, consumer))
}

async fn handle(
    store: &Store,
    senders: &Senders,
    refusals: &Refused<'_>,
    wake: &Notify,
    now: &crate::clock::Now,
    delivery: Delivery,
) {
    let r = match read(&delivery, senders) {
        Ok(r) => r,
        Err(refusal) => {
            // An audit record: who sent what for which department, never the body (it may name
            // an applicant).
            warn!(
                target: "audit",
                event = "result_refused",
                reason = refusal.code(),
                sender = %sender(&delivery),
                message_id = %delivery.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default(),
                detail = %refusal,
                "result refused; dead-lettered to the results dead queue"
            );
            refusals.dead_letter(delivery, &refusal.to_string()).await;
            return;
        }
    };
    let task_id = r.task_id.clone();
    let department = r.department.clone();
    let kind = ResultKind::try_from(r.kind).unwrap_or(ResultKind::Unspecified);
    let kind_name = kind
        .as_str_name()
        .trim_start_matches("RESULT_KIND_")
        .to_lowercase();
    // A span of its own in the case's trace, a child of the adapter's span that published it.
    let span = tracing::info_span!(
        "result",
        otel.name = %format!("result {department} {kind_name}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        case.number = %r.case_number,
        task.id = %task_id,
        department = %department,
        result.kind = %kind_name,
    );
    if let Some(parent) = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(crate::bus::headers::TRACEPARENT))
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        })
    {
        crate::trace::continue_in(&span, &parent);
    }
    crate::metrics::meters()
        .results_received
        .get_or_create(&crate::metrics::ResultLabels {
            department: department.clone(),
            kind: kind_name,
        })
        .inc();
    record(store, wake, now, delivery, r).instrument(span).await;
}

/// Tries of one result against a store that answers, before it is dead-lettered.
const RESULT_TRIES: u32 = 5;

/// Where a refused result is dead-lettered with its reason: the consumer's channel (in confirm
/// mode) and the dead exchange.
struct Refused<'a> {
    connection: &'a lapin::Connection,
    channel: &'a lapin::Channel,
    dead_exchange: String,
}

impl Refused<'_> {
    /// Puts a refused result in the results dead queue with its reason (`x-yichuang-reason`,
    /// which `yichuang dlq` shows), then acknowledges it; if that cannot be confirmed, or the
    /// broker is blocking publishers, rejects it, and the broker dead-letters it without the
    /// reason (the log has it).
    async fn dead_letter(&self, delivery: Delivery, reason: &str) {
        // Under a resource alarm the broker blocks a connection that publishes, and this one
        // consumes every result: nothing is published on it then (the reason is in the log).
        if self.connection.status().blocked() {
            dead_letter(delivery).await;
            return;
        }
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            crate::bus::headers::REASON.into(),
            lapin::types::AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            crate::bus::headers::DEAD_AT.into(),
            lapin::types::AMQPValue::LongString(chrono::Utc::now().to_rfc3339().into()),
        );
        // The broker checks `user_id` against the publisher: the copy drops it (the sender is
        // named in the reason).
        let properties = lapin::BasicProperties::default()
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_content_type(
                delivery
                    .properties
                    .content_type()
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
            )
            .with_message_id(delivery.properties.message_id().clone().unwrap_or_default());
        let published = self
            .channel
            .basic_publish(
                self.dead_exchange.as_str().into(),
                "results".into(),
                lapin::options::BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await;
        let confirmed = match published {
            Ok(confirm) => tokio::time::timeout(Duration::from_secs(10), confirm)
                .await
                .is_ok_and(|c| c.is_ok_and(|c| c.is_ack())),
            Err(_) => false,
        };
        if confirmed {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                warn!(error = %e, "ack of a refused result failed; it is refused again");
            }
        } else {
            dead_letter(delivery).await;
        }
    }
}

/// Refuses a result for good: the broker dead-letters it to the results dead queue.
async fn dead_letter(delivery: Delivery) {
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await;
}

/// Records one well-formed result, then acknowledges it.
async fn record(
    store: &Store,
    wake: &Notify,
    now: &crate::clock::Now,
    delivery: Delivery,
    r: ResultMessage,
) {
    let task_id = r.task_id.clone();
    let department = r.department.clone();
    let round = r.round;
    let decided_at = r.at;
    let kind = ResultKind::try_from(r.kind).unwrap_or(ResultKind::Unspecified);
    // Anything from the task's adapter, a duplicate or a heartbeat included, says it is alive.
    let heard = now().timestamp_millis();
    if kind == ResultKind::Alive {
        loop {
            match store.touch_progress(&task_id, heard).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(task = %task_id, error = %e, "cannot record a heartbeat; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            warn!(error = %e, "ack failed; the heartbeat is delivered again");
        }
        return;
    }
    let Some(update) = update(r) else {
        warn!(task = %task_id, "result of no known kind; dead-lettered");
        dead_letter(delivery).await;
        return;
    };
    let mut tries = 0u32;
    loop {
        match store
            .record_result_at(
                &task_id,
                &department,
                round,
                update.clone(),
                decided_at,
                now(),
            )
            .await
        {
            Ok(Some(applied)) => {
                let _ = store.touch_progress(&task_id, heard).await;
                debug!(task = %task_id, kind = ?kind, status = ?applied.status, "result recorded");
                if !applied.released.is_empty() {
                    wake.notify_one();
                }
                break;
            }
            Ok(None) => {
                let _ = store.touch_progress(&task_id, heard).await;
                debug!(task = %task_id, kind = ?kind, "result changes nothing (duplicate, stale or unknown task)");
                break;
            }
            Err(StoreError::Corrupt(reason)) => {
                // The case record cannot be read: trying again cannot help, and waiting would
                // hold every other result back. Kept in the results dead queue for inspection.
                warn!(task = %task_id, reason = %reason, "result cannot be applied (the case record is unreadable); dead-lettered to the results dead queue");
                dead_letter(delivery).await;
                return;
            }
            Err(e) => {
                // Nothing is acknowledged before it is stored: wait for the store. But a store
                // that answers while this one result keeps failing has a problem with the result,
                // not with itself: after a few tries it is dead-lettered, not waited on forever.
                tries += 1;
                if tries >= RESULT_TRIES && store.ping().await.is_ok() {
                    warn!(task = %task_id, error = %e, tries, "result keeps failing while the store answers; dead-lettered to the results dead queue");
                    dead_letter(delivery).await;
                    return;
                }
                warn!(task = %task_id, error = %e, "cannot record a result; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(tries.min(30)))).await;
            }
        }
    }
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        warn!(error = %e, "ack failed; the result is delivered again and changes nothing twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_check_fails_closed_for_a_department_with_no_user() {
        let senders = Senders::Listed(BTreeMap::from([("scjg".into(), "adapter-scjg".into())]));
        assert_eq!(senders.check("scjg", "adapter-scjg"), Ok(()));
        assert!(matches!(
            senders.check("scjg", "adapter-xf"),
            Err(Refusal::WrongSender { .. })
        ));
        let unlisted = senders.check("xf", "adapter-xf").unwrap_err();
        assert_eq!(unlisted.code(), "unlisted_department");
        assert!(unlisted.to_string().contains("xf = "), "{unlisted}");
        assert!(
            Senders::Listed(BTreeMap::new())
                .check("scjg", "guest")
                .is_err(),
            "an empty list takes nothing"
        );
        assert_eq!(Senders::Unchecked.check("xf", "anyone"), Ok(()));
    }
}
