//! The runtime every kind shares, so no kind repeats it: consuming a department's queue (prefetch
//! = the department's concurrency, manual acks), dropping duplicates by task id and supplement
//! round, the rate limit (evenly spaced calls) and a legacy `Retry-After`, maintenance windows,
//! failure classes — transient retried with exponential backoff and jitter through the delay
//! queues, permanent published as a `FAILED` result, poison dead-lettered with its reason — and
//! polling scheduled through the delay queues, so the adapter keeps no state of its own and can
//! be killed at any moment. A delivery is acknowledged only after everything it caused is
//! confirmed by the broker.
//!
//! Messages on a department's queue carry their stage in headers: none (a task from the gateway),
//! or `stage=poll` with `department-case-number`, `polls` and the last `step` seen.
//!
//! A task message that carries a `supplement` (补正, round N ≥ 1) resumes a task the department
//! already has: its materials are handed to the department's case (`resupply`, never `find` or
//! `submit`), and polling starts again without a second `ACCEPTED`. Every result published while
//! handling it — the poll messages are the same body, so the round travels with them — carries
//! `round = N`, and its `message_id` ends in `:s<N>`.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use prost::Message;
use tokio_stream::StreamExt;
use tracing::Instrument;
use tracing::{debug, info, warn};
use yichuang::bus::{Names, Topology};
use yichuang::config::BusConfig;
use yichuang::proto::v1::{ResultKind, ResultMessage, TaskMessage};

use crate::config::DepartmentConfig;
use crate::mapping::{Decision, Reading, render_all};
use crate::system::{Answer, DepartmentSystem, Failure, Gate, Task};

/// Content type of result messages.
pub const RESULT_CONTENT_TYPE: &str = "application/x-protobuf; proto=yichuang.v1.ResultMessage";
use yichuang::bus::headers as hdr;

/// Beyond the request timeout, what a held copy waits for an earlier request to land.
const HOLD_MARGIN: Duration = Duration::from_secs(1);

/// One department served by this process.
pub struct Department {
    pub config: DepartmentConfig,
    pub system: Arc<dyn DepartmentSystem>,
    /// The rate limit and pauses every request to the system waits for.
    pub gate: Gate,
    /// The circuit breaker: no calls while the system keeps failing.
    pub breaker: crate::breaker::Breaker,
    /// Task ids (with their supplement round, [`seen_key`]) finished here or being handled: a
    /// duplicate task message is dropped.
    seen: Mutex<Seen>,
}

/// What a task message is deduplicated by: the task id, and `:s<round>` for a supplement round
/// (as the gateway's `message_id`), so the next round of a task is not taken for a copy.
pub fn seen_key(task_id: &str, round: i32) -> String {
    if round > 0 {
        format!("{task_id}:s{round}")
    } else {
        task_id.to_string()
    }
}

/// The deduplication key of a delivery: from its body when it decodes, else its `message_id`.
fn delivery_key(delivery: &Delivery) -> String {
    match TaskMessage::decode(delivery.data.as_slice()) {
        Ok(m) if m.task.is_some() => seen_key(
            m.task.as_ref().map_or("", |t| t.task_id.as_str()),
            crate::system::round_of(&m),
        ),
        _ => delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// The `message_id` of a result: `<task id>:<kind>`, with `:<step>` for progress, and
/// `:s<round>` when it is about a supplement round. Copies of one result share it.
pub fn result_message_id(r: &ResultMessage) -> String {
    let kind = ResultKind::try_from(r.kind).unwrap_or(ResultKind::Unspecified);
    let kind_name = kind
        .as_str_name()
        .trim_start_matches("RESULT_KIND_")
        .to_lowercase();
    let mut id = if kind == ResultKind::Progress {
        format!("{}:{kind_name}:{}", r.task_id, r.step)
    } else if kind == ResultKind::Alive {
        // Each heartbeat is news: none is a copy of another.
        let at = r.at.unwrap_or_default();
        format!("{}:{kind_name}:{}.{:09}", r.task_id, at.seconds, at.nanos)
    } else {
        format!("{}:{kind_name}", r.task_id)
    };
    if r.round != 0 {
        id.push_str(&format!(":s{}", r.round));
    }
    id
}

/// A bounded memory of task ids.
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    const CAPACITY: usize = 100_000;

    /// Remembers `id`; false when it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    fn forget(&mut self, id: &str) {
        self.set.remove(id);
    }
}

impl Department {
    pub fn new(
        config: DepartmentConfig,
        system: Arc<dyn DepartmentSystem>,
        gate: Gate,
    ) -> Department {
        let mut breaker = config.breaker.clone();
        breaker.department = config.department.clone();
        Department {
            config,
            system,
            gate,
            breaker: crate::breaker::Breaker::new(breaker),
            seen: Mutex::new(Seen::default()),
        }
    }

    pub fn code(&self) -> &str {
        &self.config.department
    }

    /// Calls the legacy system under the rate limit and the call timeout.
    async fn call<T>(
        &self,
        what: &str,
        task: &Task,
        f: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let timeout = Duration::from_secs(self.config.limits.timeout_secs);
        let department = self.config.department.clone();
        // The legacy call is a client span of its own, a child of the delivery's span.
        let span = tracing::info_span!(
            "legacy",
            otel.name = %format!("legacy {what}"),
            otel.kind = "client",
            department = %department,
            case.number = %task.message.case_number,
            task.id = %task.id(),
            legacy.operation = %what,
            legacy.kind = %self.config.kind,
            legacy.outcome = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(timeout, f)
            .instrument(span.clone())
            .await
        {
            Ok(r) => r.map_err(Failure::clamped),
            Err(_) => Err(Failure::transient(format!(
                "{what}: no answer within {timeout:?}"
            ))),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Failure::Transient { .. }) => "transient",
            Err(Failure::Permanent { .. }) => "permanent",
        };
        span.record("legacy.outcome", outcome);
        match &result {
            Err(Failure::Transient { .. }) => {
                self.breaker.failed();
            }
            _ => self.breaker.answered(),
        }
        let m = crate::meters::meters();
        m.calls
            .get_or_create(&crate::meters::CallLabels {
                department: department.clone(),
                operation: what.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        m.call_duration
            .get_or_create(&crate::meters::OperationLabels {
                department,
                operation: what.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        if let Err(Failure::Transient {
            retry_after: Some(d),
            ..
        }) = &result
        {
            self.gate.pause(*d);
        }
        result
    }
}

/// What a delivery leads to.
#[derive(Debug)]
enum Next {
    /// Nothing more: the task has its outcome (or was a duplicate).
    Done,
    /// Try the submission again after `delay`, as attempt `attempt`.
    Retry {
        delay: Duration,
        attempt: u32,
        reason: String,
    },
    /// Ask for the outcome after `delay`.
    Poll {
        delay: Duration,
        department_case_number: String,
        polls: u32,
        step: String,
    },
    /// A copy of a task that may still be in flight at the department (a broker redelivery after
    /// a crash, or a stalled task published again): comes back after `delay`, marked `held`,
    /// and is looked up then, once the earlier attempt has had its time.
    Hold { delay: Duration },
    /// Dead-letter with the reason.
    Dead(String),
    /// What the delivery led to could not be published: it is put back on its queue (and
    /// dead-lettered by the broker's delivery limit if that keeps happening).
    Requeue(String),
}

/// Where results, retries and dead letters go; its own connection, with confirms.
struct Publisher {
    channel: Channel,
    /// The connection's RabbitMQ user: results carry it as `user_id`, which the broker
    /// validates, so the gateway can refuse a result that claims another department.
    user: String,
    names: Names,
    delays: Vec<u64>,
    timeout: Duration,
}

impl Publisher {
    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), String> {
        let confirm = tokio::time::timeout(
            self.timeout,
            self.channel.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            ),
        )
        .await
        .map_err(|_| format!("publish to {exchange}: no answer within {:?}", self.timeout))?
        .map_err(|e| e.to_string())?;
        let confirmation = tokio::time::timeout(self.timeout, confirm)
            .await
            .map_err(|_| format!("confirm from {exchange}: none within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        if confirmation.is_ack() {
            Ok(())
        } else {
            Err(format!("RabbitMQ refused the message to {exchange}"))
        }
    }

    /// Publishes a result about `task_id`.
    async fn result(&self, r: ResultMessage, trace: Option<&AMQPValue>) -> Result<(), String> {
        let kind = ResultKind::try_from(r.kind).unwrap_or(ResultKind::Unspecified);
        let kind_name = kind
            .as_str_name()
            .trim_start_matches("RESULT_KIND_")
            .to_lowercase();
        let message_id = result_message_id(&r);
        let mut headers = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(v.into());
        headers.insert(ShortString::from(hdr::CASE_ID), text(&r.case_number));
        headers.insert(ShortString::from(hdr::TASK_ID), text(&r.task_id));
        headers.insert(ShortString::from(hdr::DEPARTMENT), text(&r.department));
        // The result continues the trace from the span it was published in (the delivery's,
        // when spans are exported), else from the task's own header.
        match yichuang::trace::traceparent_of(&tracing::Span::current()) {
            Some(own) => {
                headers.insert(ShortString::from(hdr::TRACEPARENT), text(&own));
            }
            None => {
                if let Some(t) = trace {
                    headers.insert(ShortString::from(hdr::TRACEPARENT), t.clone());
                }
            }
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_content_type(RESULT_CONTENT_TYPE.into())
            .with_timestamp(chrono::Utc::now().timestamp() as u64)
            .with_user_id(self.user.as_str().into())
            .with_headers(headers);
        let key = format!("{}.{kind_name}", r.department);
        self.publish(
            &self.names.results_exchange(),
            &key,
            &r.encode_to_vec(),
            properties,
        )
        .await
    }

    /// Sends the message back to its department's queue after `delay`, through the delay queue
    /// whose TTL is the shortest not below it; the message's own expiration carries the exact
    /// (jittered) delay when it is shorter.
    async fn later(
        &self,
        department: &str,
        delivery: &Delivery,
        delay: Duration,
        headers: FieldTable,
    ) -> Result<(), String> {
        let wanted = delay.as_secs().max(1);
        let bucket = self
            .delays
            .iter()
            .copied()
            .find(|&d| d >= wanted)
            .or_else(|| self.delays.last().copied())
            .ok_or("no delay queues configured ([bus] retry_delays_secs)")?;
        let expiration = (delay.as_millis() as u64).clamp(1, bucket * 1000);
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(expiration.to_string().into());
        self.publish(
            &self.names.retry_exchange(),
            &self.names.retry_key(department, bucket),
            &delivery.data,
            properties,
        )
        .await
    }

    async fn dead(
        &self,
        department: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), String> {
        let mut headers = continued_headers(delivery);
        headers.insert(
            ShortString::from(hdr::REASON),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            ShortString::from(hdr::DEAD_AT),
            AMQPValue::LongString(chrono::Utc::now().to_rfc3339().into()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        self.publish(
            &self.names.dead_exchange(),
            department,
            &delivery.data,
            properties,
        )
        .await
    }
}

/// Where a task message is in the adapter's protocol, as its headers say: the one place that
/// reads and writes the stage headers (names in [`yichuang::bus::headers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// A task to hand to the department (after a lookup): its `attempt`-th try, from 1.
    Submit { attempt: u32 },
    /// A case the department has, asked about again: `polls` so far, the last `step` seen.
    Poll {
        department_case_number: String,
        polls: u32,
        step: String,
    },
}

impl Stage {
    /// The stage of a delivery.
    pub fn of(delivery: &Delivery) -> Stage {
        Stage::from_headers(delivery.properties.headers().as_ref())
    }

    /// The stage headers say: no `stage` header is a task to submit (attempt 1 if unsaid).
    pub fn from_headers(headers: Option<&FieldTable>) -> Stage {
        let get = |name: &str| headers.and_then(|h| h.inner().get(name));
        let text = |name: &str| get(name).and_then(text_value);
        let int = |name: &str| get(name).and_then(int_value);
        if text(hdr::STAGE).as_deref() == Some(hdr::STAGE_POLL) {
            Stage::Poll {
                department_case_number: text(hdr::DEPARTMENT_CASE_NUMBER).unwrap_or_default(),
                polls: int(hdr::POLLS).unwrap_or(0),
                step: text(hdr::STEP).unwrap_or_default(),
            }
        } else {
            Stage::Submit {
                attempt: int(hdr::ATTEMPT).unwrap_or(1).max(1),
            }
        }
    }

    /// Writes the stage into the headers of the task's next message.
    pub fn write(&self, headers: &mut FieldTable) {
        match self {
            Stage::Submit { attempt } => {
                headers.insert(
                    ShortString::from(hdr::ATTEMPT),
                    AMQPValue::LongInt(*attempt as i32),
                );
            }
            Stage::Poll {
                department_case_number,
                polls,
                step,
            } => {
                let text = |v: &str| AMQPValue::LongString(v.into());
                headers.insert(ShortString::from(hdr::STAGE), text(hdr::STAGE_POLL));
                headers.insert(
                    ShortString::from(hdr::DEPARTMENT_CASE_NUMBER),
                    text(department_case_number),
                );
                headers.insert(
                    ShortString::from(hdr::POLLS),
                    AMQPValue::LongInt(*polls as i32),
                );
                headers.insert(ShortString::from(hdr::STEP), text(step));
            }
        }
    }
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref()?.inner().get(name)
}

fn text_header(delivery: &Delivery, name: &str) -> Option<String> {
    text_value(header(delivery, name)?)
}

fn text_value(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The headers a task's next message carries on: the delivery's, less the mark of a
/// republished stalled task (the chain it starts is an ordinary one).
fn continued_headers(delivery: &Delivery) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(old) = delivery.properties.headers() {
        for (k, v) in old.inner() {
            if k.as_str() != hdr::REPAIR {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers
}

fn int_header(delivery: &Delivery, name: &str) -> Option<u32> {
    int_value(header(delivery, name)?)
}

fn int_value(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(*v),
        _ => None,
    }
}

/// Exponential backoff with full jitter between half and all of the step.
fn backoff(config: &DepartmentConfig, attempt: u32) -> Duration {
    let policy = &config.retry;
    let step = policy
        .initial_backoff_secs
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(policy.max_backoff_secs)
        .max(1);
    let ms = step * 1000;
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * (ms / 2) / 255;
    Duration::from_millis(ms / 2 + jitter)
}

/// The case number of a task id (`<case number>-NN`).
pub fn case_of(task_id: &str) -> &str {
    task_id.rsplit_once('-').map_or(task_id, |(c, _)| c)
}

/// Handles deliveries for one department.
struct Worker {
    department: Arc<Department>,
    publisher: Arc<Publisher>,
}

impl Worker {
    /// Handles one delivery in a consumer span of its own, a child of the span that published
    /// it (the gateway's relay, or this adapter when it sent the task to a delay queue).
    async fn handle(&self, delivery: Delivery) {
        let code = self.department.code();
        let span = tracing::info_span!(
            "consume",
            otel.name = %format!("consume {code}"),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            department = %code,
            case.number = %text_header(&delivery, hdr::CASE_ID).unwrap_or_default(),
            task.id = %text_header(&delivery, hdr::TASK_ID).unwrap_or_default(),
            stage = %text_header(&delivery, hdr::STAGE).unwrap_or_else(|| "submit".into()),
        );
        if let Some(parent) = text_header(&delivery, hdr::TRACEPARENT) {
            yichuang::trace::continue_in(&span, &parent);
        }
        crate::meters::meters()
            .tasks_consumed
            .get_or_create(&crate::meters::DepartmentLabels {
                department: code.to_string(),
            })
            .inc();
        self.handle_in_span(delivery).instrument(span).await
    }

    async fn handle_in_span(&self, delivery: Delivery) {
        let code = self.department.code().to_string();
        let next = self.decide(&delivery).await;
        debug!(department = %code, next = ?next, "task handled");
        let done = match &next {
            Next::Done => Ok(()),
            Next::Requeue(e) => Err(e.clone()),
            Next::Retry {
                delay,
                attempt,
                reason,
            } => {
                info!(department = %code, attempt, delay_ms = delay.as_millis() as u64, reason = %yichuang::privacy::mask_free_text(reason), "task retried later");
                crate::meters::meters()
                    .retries
                    .get_or_create(&crate::meters::DepartmentLabels {
                        department: code.clone(),
                    })
                    .inc();
                let mut headers = continued_headers(&delivery);
                Stage::Submit { attempt: *attempt }.write(&mut headers);
                self.publisher
                    .later(&code, &delivery, *delay, headers)
                    .await
            }
            Next::Poll {
                delay,
                department_case_number,
                polls,
                step,
            } => {
                let mut headers = continued_headers(&delivery);
                Stage::Poll {
                    department_case_number: department_case_number.clone(),
                    polls: *polls,
                    step: step.clone(),
                }
                .write(&mut headers);
                self.publisher
                    .later(&code, &delivery, *delay, headers)
                    .await
            }
            Next::Hold { delay } => {
                info!(department = %code, delay_ms = delay.as_millis() as u64, "a copy of a task held until an earlier attempt has had its time");
                let mut headers = continued_headers(&delivery);
                headers.insert(ShortString::from(hdr::HELD), AMQPValue::LongInt(1));
                self.publisher
                    .later(&code, &delivery, *delay, headers)
                    .await
            }
            Next::Dead(reason) => {
                warn!(department = %code, reason = %yichuang::privacy::mask_free_text(reason), "message dead-lettered");
                crate::meters::meters()
                    .dead_letters
                    .get_or_create(&crate::meters::DepartmentLabels {
                        department: code.clone(),
                    })
                    .inc();
                self.publisher.dead(&code, &delivery, reason).await
            }
        };
        let key = delivery_key(&delivery);
        match done {
            Ok(()) => {
                if matches!(
                    next,
                    Next::Retry { .. } | Next::Poll { .. } | Next::Hold { .. }
                ) {
                    // The task continues in a later message: its next delivery is ours to take.
                    self.department.seen.lock().expect("seen").forget(&key);
                }
                let alive_every = self.department.config.polling.alive_every.max(1);
                let heartbeat = match &next {
                    Next::Retry { .. } | Next::Hold { .. } => true,
                    Next::Poll { polls, .. } => polls % alive_every == 0,
                    _ => false,
                };
                if heartbeat {
                    self.alive(&delivery).await;
                }
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    warn!(department = %code, error = %e, "ack failed; the task is delivered again");
                }
            }
            Err(e) => {
                warn!(department = %code, error = %e, "cannot publish what the task led to; it is delivered again");
                self.department.seen.lock().expect("seen").forget(&key);
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
    }

    /// Tells the gateway the task is still followed here (an `ALIVE` result), so its stall
    /// detector does not publish it again. Best effort: a lost heartbeat costs at most a repair,
    /// which the lookup before submitting makes harmless.
    async fn alive(&self, delivery: &Delivery) {
        let Ok(message) = TaskMessage::decode(delivery.data.as_slice()) else {
            return;
        };
        let Some(task) = message.task.as_ref() else {
            return;
        };
        let r = ResultMessage {
            task_id: task.task_id.clone(),
            case_number: message.case_number.clone(),
            department: self.department.code().to_string(),
            kind: ResultKind::Alive as i32,
            at: Some(now()),
            round: crate::system::round_of(&message),
            ..Default::default()
        };
        if let Err(e) = self
            .publisher
            .result(r, header(delivery, hdr::TRACEPARENT))
            .await
        {
            debug!(department = %self.department.code(), error = %e, "heartbeat not published");
        }
    }

    /// Works out what a delivery leads to, publishing results on the way.
    async fn decide(&self, delivery: &Delivery) -> Next {
        let dept = &self.department;
        let expected = yichuang::outbox::TASK_CONTENT_TYPE;
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        if content_type != expected {
            return Next::Dead(format!("content type {content_type:?} is not {expected:?}"));
        }
        let message = match TaskMessage::decode(delivery.data.as_slice()) {
            Ok(m) => m,
            Err(e) => return Next::Dead(format!("cannot decode the TaskMessage: {e}")),
        };
        let Some(task) = message.task.clone() else {
            return Next::Dead("TaskMessage without a task".into());
        };
        if task.department != dept.code() {
            return Next::Dead(format!(
                "a task for {:?} on {:?}'s queue",
                task.department,
                dept.code()
            ));
        }
        let stage = Stage::of(delivery);
        let polling = matches!(stage, Stage::Poll { .. });
        let round = crate::system::round_of(&message);
        let key = seen_key(&task.task_id, round);
        // A stalled task the gateway published again is handled even if remembered here: its
        // earlier message is gone (the lookup before submitting keeps the department's one case).
        let repair = int_header(delivery, hdr::REPAIR).is_some();
        if !dept.seen.lock().expect("seen").insert(&key) && !polling && !repair {
            info!(department = %dept.code(), task = %task.task_id, round, "duplicate task dropped");
            return Next::Done;
        }
        // A copy that may race an attempt still in flight (this process or another took the
        // task, and died or gave up waiting, while the request may yet reach the department):
        // held for the request timeout first, so the lookup then sees what that attempt did.
        let copy = delivery.redelivered
            || repair
            || matches!(header(delivery, hdr::COPY), Some(AMQPValue::Boolean(true)));
        if copy && !polling && int_header(delivery, hdr::HELD).is_none() {
            return Next::Hold {
                delay: Duration::from_secs(dept.config.limits.timeout_secs) + HOLD_MARGIN,
            };
        }
        // The department's system keeps failing: wait, without calling it or spending an attempt.
        if let crate::breaker::Admit::Wait(wait) = dept.breaker.admit() {
            return self.later_same(delivery, wait, "circuit breaker open");
        }
        let hall_now = (chrono::Utc::now() + chrono::Duration::hours(8)).time();
        if let Some(wait) = dept
            .config
            .maintenance
            .iter()
            .find_map(|w| w.remaining(hall_now))
        {
            return self.later_same(delivery, Duration::from_secs(wait), "maintenance window");
        }
        let fields = match render_all(&dept.config.mapping.request, &message) {
            Ok(f) => f,
            Err(e) => {
                return self
                    .failed(&message, delivery, format!("mapping: {e}"))
                    .await;
            }
        };
        let task = Task { message, fields };
        match stage {
            Stage::Poll {
                department_case_number,
                polls,
                step,
            } => {
                self.poll(delivery, &task, department_case_number, polls, step)
                    .await
            }
            Stage::Submit { attempt } if task.message.supplement.is_some() => {
                self.resupply(delivery, &task, attempt).await
            }
            Stage::Submit { attempt } => self.submit(delivery, &task, attempt).await,
        }
    }

    /// A message put back unchanged (same attempt, same stage) for `delay`.
    fn later_same(&self, delivery: &Delivery, delay: Duration, reason: &str) -> Next {
        match Stage::of(delivery) {
            Stage::Poll {
                department_case_number,
                polls,
                step,
            } => Next::Poll {
                delay,
                department_case_number,
                polls,
                step,
            },
            Stage::Submit { attempt } => Next::Retry {
                delay,
                attempt,
                reason: reason.into(),
            },
        }
    }

    async fn submit(&self, delivery: &Delivery, task: &Task, attempt: u32) -> Next {
        let dept = &self.department;
        let system = dept.system.clone();
        // Every task is looked up first: a copy may come from a redelivery after a crash, a
        // retry after a timeout that reached the legacy system, the relay publishing again
        // after its lease ran out, or another adapter replica — none is submitted twice.
        let found = match dept.call("find", task, system.find(task)).await {
            Ok(found) => found,
            Err(f) => return self.failure(delivery, task, attempt, f).await,
        };
        let answer = match found {
            Some(answer) => answer,
            None => match dept.call("submit", task, system.submit(task)).await {
                Ok(answer) => answer,
                Err(f) => return self.failure(delivery, task, attempt, f).await,
            },
        };
        let reading = dept.config.mapping.result.read(&answer);
        let department_case_number = reading.department_case_number.clone().unwrap_or_default();
        // Some systems give their number only later (a table exchange the department's job
        // picks up, a clerk's re-entry): then ACCEPTED waits for a poll that finds it.
        if !department_case_number.is_empty()
            && let Err(e) = self.accepted(delivery, task, &department_case_number).await
        {
            return self.retry_publish(e);
        }
        self.after_reading(
            delivery,
            task,
            &answer,
            reading,
            department_case_number,
            0,
            String::new(),
        )
        .await
    }

    /// Hands a supplement round to the department's case, then polls it again: the task was
    /// accepted long ago, so no `ACCEPTED` is published, and no step is taken as seen (the case
    /// goes through its steps again). Failures are handled as a submission's.
    async fn resupply(&self, delivery: &Delivery, task: &Task, attempt: u32) -> Next {
        let dept = &self.department;
        let Some(supplement) = task.message.supplement.as_ref() else {
            return Next::Dead("resupply without a supplement".into());
        };
        let department_case_number = task
            .message
            .task
            .as_ref()
            .map(|t| t.department_case_number.trim().to_string())
            .unwrap_or_default();
        if department_case_number.is_empty() {
            return Next::Dead(format!(
                "supplement round {} without task.department_case_number: the department's case it is for is unknown",
                supplement.round
            ));
        }
        if supplement.round <= 0 {
            return Next::Dead(format!(
                "supplement with round {}: rounds start at 1",
                supplement.round
            ));
        }
        let system = dept.system.clone();
        match dept
            .call(
                "resupply",
                task,
                system.resupply(task, &department_case_number, supplement),
            )
            .await
        {
            Ok(_) => {
                info!(department = %dept.code(), task = %task.id(), round = supplement.round, "supplement handed over");
                Next::Poll {
                    delay: Duration::from_secs(dept.config.polling.interval_secs),
                    department_case_number,
                    polls: 0,
                    step: String::new(),
                }
            }
            Err(f) => self.failure(delivery, task, attempt, f).await,
        }
    }

    async fn accepted(
        &self,
        delivery: &Delivery,
        task: &Task,
        department_case_number: &str,
    ) -> Result<(), String> {
        let accepted = self.result(task, ResultKind::Accepted, department_case_number);
        self.publisher
            .result(accepted, header(delivery, hdr::TRACEPARENT))
            .await
    }

    async fn poll(
        &self,
        delivery: &Delivery,
        task: &Task,
        department_case_number: String,
        polls: u32,
        step: String,
    ) -> Next {
        let dept = &self.department;
        let interval = Duration::from_secs(dept.config.polling.interval_secs);
        let system = dept.system.clone();
        match dept
            .call("poll", task, system.poll(task, &department_case_number))
            .await
        {
            Ok(answer) => {
                let reading = dept.config.mapping.result.read(&answer);
                let mut department_case_number = department_case_number;
                if department_case_number.is_empty()
                    && let Some(given) = reading.department_case_number.clone()
                {
                    // The system gave its number only now: the task is accepted now.
                    if let Err(e) = self.accepted(delivery, task, &given).await {
                        return self.retry_publish(e);
                    }
                    department_case_number = given;
                }
                self.after_reading(
                    delivery,
                    task,
                    &answer,
                    reading,
                    department_case_number,
                    polls,
                    step,
                )
                .await
            }
            Err(Failure::Transient {
                reason,
                retry_after,
            }) => {
                debug!(department = %dept.code(), reason = %yichuang::privacy::mask_free_text(&reason), "poll failed; asking again later");
                Next::Poll {
                    delay: retry_after.unwrap_or(interval).max(interval),
                    department_case_number,
                    polls: polls + 1,
                    step,
                }
            }
            Err(Failure::Permanent { reason }) => {
                self.failed(&task.message, delivery, reason).await
            }
        }
    }

    /// Publishes a new step and the decision when there is one; otherwise polls again. Once
    /// published, the system is told (`acknowledge`).
    #[allow(clippy::too_many_arguments)]
    async fn after_reading(
        &self,
        delivery: &Delivery,
        task: &Task,
        answer: &Answer,
        reading: Reading,
        department_case_number: String,
        polls: u32,
        last_step: String,
    ) -> Next {
        let dept = &self.department;
        let trace = header(delivery, hdr::TRACEPARENT);
        let decided_on = reading.decided_on;
        let mut step = last_step;
        if let Some(new) = reading.step.filter(|s| *s != step) {
            let mut r = self.result(task, ResultKind::Progress, &department_case_number);
            r.step = new.clone();
            if let Err(e) = self.publisher.result(r, trace).await {
                return self.retry_publish(e);
            }
            step = new;
        }
        let Some(decision) = reading.decision else {
            if polls >= dept.config.polling.max_polls {
                // The window is told, so a person follows it up with the department.
                return self
                    .failed(
                        &task.message,
                        delivery,
                        format!("no decision from the department system after {polls} polls"),
                    )
                    .await;
            }
            // Not acknowledged now: the next poll reads it again and acknowledges it then.
            if let Err(f) = self.acknowledge(task, answer).await {
                debug!(department = %dept.code(), failure = %yichuang::privacy::mask_free_text(&f.to_string()), "acknowledgement failed; the next poll tries again");
            }
            return Next::Poll {
                delay: Duration::from_secs(dept.config.polling.interval_secs),
                department_case_number,
                polls: polls + 1,
                step,
            };
        };
        let mut r = match decision {
            Decision::Approved(documents) => {
                let mut r = self.result(task, ResultKind::Approved, &department_case_number);
                r.documents = documents;
                r
            }
            Decision::Rejected(reasons) => {
                let mut r = self.result(task, ResultKind::Rejected, &department_case_number);
                r.reasons = reasons;
                r
            }
            Decision::Supplement(materials) => {
                let mut r = self.result(task, ResultKind::Supplement, &department_case_number);
                r.materials = materials;
                r
            }
        };
        r.at = Some(decided_on.map_or_else(now, decided_at));
        if let Err(e) = self.publisher.result(r, trace).await {
            return self.retry_publish(e);
        }
        match self.acknowledge(task, answer).await {
            Ok(()) => Next::Done,
            Err(f) => {
                // Asked again later: the decision is published once more (consumers drop the
                // copy by its id) and acknowledged then.
                warn!(department = %dept.code(), failure = %yichuang::privacy::mask_free_text(&f.to_string()), "acknowledgement of a published decision failed; polling again");
                Next::Poll {
                    delay: Duration::from_secs(dept.config.polling.interval_secs),
                    department_case_number,
                    polls: polls + 1,
                    step,
                }
            }
        }
    }

    /// Tells the system its answer is published.
    async fn acknowledge(&self, task: &Task, answer: &Answer) -> Result<(), Failure> {
        let system = self.department.system.clone();
        self.department
            .call("acknowledge", task, system.acknowledge(task, answer))
            .await
    }

    fn retry_publish(&self, e: String) -> Next {
        // The delivery comes back; what was already published is deduplicated by its id.
        Next::Requeue(e)
    }

    async fn failure(&self, delivery: &Delivery, task: &Task, attempt: u32, f: Failure) -> Next {
        let dept = &self.department;
        match f {
            Failure::Permanent { reason } => self.failed(&task.message, delivery, reason).await,
            Failure::Transient {
                reason,
                retry_after,
            } => {
                // This failure opened the breaker (or was its failed probe): the department is
                // down, not this task; it waits without spending the attempt.
                if let Some(wait) = dept.breaker.waiting() {
                    return self.later_same(
                        delivery,
                        wait.max(retry_after.unwrap_or_default()),
                        "circuit breaker open",
                    );
                }
                if attempt >= dept.config.retry.max_attempts {
                    let reason =
                        format!("gave up after {attempt} attempts; last failure: {reason}");
                    // The window is told (a FAILED result), then the message is kept in the dead
                    // queue, where it can be inspected and replayed.
                    return match self
                        .publish_failed(&task.message, delivery, reason.clone())
                        .await
                    {
                        Ok(()) => Next::Dead(reason),
                        Err(e) => self.retry_publish(e),
                    };
                }
                let delay = backoff(&dept.config, attempt).max(retry_after.unwrap_or_default());
                Next::Retry {
                    delay,
                    attempt: attempt + 1,
                    reason,
                }
            }
        }
    }

    /// Publishes a `FAILED` result the window can act on.
    async fn failed(&self, message: &TaskMessage, delivery: &Delivery, reason: String) -> Next {
        warn!(department = %self.department.code(), reason = %yichuang::privacy::mask_free_text(&reason), "department system refused the task");
        match self.publish_failed(message, delivery, reason).await {
            Ok(()) => Next::Done,
            Err(e) => self.retry_publish(e),
        }
    }

    /// The `FAILED` result of a task, published.
    async fn publish_failed(
        &self,
        message: &TaskMessage,
        delivery: &Delivery,
        reason: String,
    ) -> Result<(), String> {
        let task = Task {
            message: message.clone(),
            fields: Default::default(),
        };
        let mut r = self.result(&task, ResultKind::Failed, "");
        r.reasons = vec![reason];
        r.at = Some(now());
        self.publisher
            .result(r, header(delivery, hdr::TRACEPARENT))
            .await
    }

    fn result(&self, task: &Task, kind: ResultKind, department_case_number: &str) -> ResultMessage {
        ResultMessage {
            task_id: task.id().to_string(),
            case_number: task.message.case_number.clone(),
            department: self.department.code().to_string(),
            kind: kind as i32,
            department_case_number: department_case_number.to_string(),
            at: Some(now()),
            round: task.round(),
            ..Default::default()
        }
    }
}

/// When a department that gives only a date decided: now if that is today in hall time
/// (UTC+8), else the start of that day in hall time.
fn decided_at(date: chrono::NaiveDate) -> pbjson_types::Timestamp {
    let hall_today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    if date == hall_today {
        return now();
    }
    let start = date.and_time(chrono::NaiveTime::MIN).and_utc() - chrono::Duration::hours(8);
    pbjson_types::Timestamp {
        seconds: start.timestamp(),
        nanos: 0,
    }
}

fn now() -> pbjson_types::Timestamp {
    let t = chrono::Utc::now();
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

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

/// Publishes what a legacy system said in a callback. Used by the HTTP endpoint.
pub struct Callbacks {
    publisher: tokio::sync::RwLock<Option<Arc<Publisher>>>,
}

impl Callbacks {
    pub fn new() -> Arc<Callbacks> {
        Arc::new(Callbacks {
            publisher: tokio::sync::RwLock::new(None),
        })
    }

    /// Publishes the step and decision a callback carries; the polling chain still runs (a
    /// callback may be lost), and consumers drop the second copy by `message_id`. A callback
    /// does not say which supplement round it is about: its results are round 0, which the
    /// gateway takes as stale once the task resumed after a supplement — that round's results
    /// come from polling.
    pub async fn publish(
        &self,
        department: &Department,
        task_id: &str,
        answer: &Answer,
    ) -> Result<(), String> {
        let publisher = self
            .publisher
            .read()
            .await
            .clone()
            .ok_or("not connected to RabbitMQ")?;
        let reading = department.config.mapping.result.read(answer);
        let base = ResultMessage {
            task_id: task_id.to_string(),
            case_number: case_of(task_id).to_string(),
            department: department.code().to_string(),
            department_case_number: reading.department_case_number.clone().unwrap_or_default(),
            at: Some(now()),
            ..Default::default()
        };
        if let Some(step) = reading.step {
            publisher
                .result(
                    ResultMessage {
                        kind: ResultKind::Progress as i32,
                        step,
                        ..base.clone()
                    },
                    None,
                )
                .await?;
        }
        let decided = match reading.decision {
            Some(Decision::Approved(documents)) => ResultMessage {
                kind: ResultKind::Approved as i32,
                documents,
                ..base
            },
            Some(Decision::Rejected(reasons)) => ResultMessage {
                kind: ResultKind::Rejected as i32,
                reasons,
                ..base
            },
            Some(Decision::Supplement(materials)) => ResultMessage {
                kind: ResultKind::Supplement as i32,
                materials,
                ..base
            },
            None => return Ok(()),
        };
        publisher.result(decided, None).await
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
    let topology = Topology::for_departments(&codes, &bus);
    let mut backoff = Duration::from_millis(500);
    loop {
        match session(
            &bus,
            &topology,
            &departments,
            &readiness,
            &callbacks,
            timeout,
        )
        .await
        {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "adapter lost RabbitMQ; reconnecting");
            }
        }
        readiness.set(false);
        *callbacks.publisher.write().await = None;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
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
) -> Result<(), String> {
    let publishing = open(bus, "publishing").await?;
    let consuming = open(bus, "consuming").await?;
    let channel = publishing
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
    let publisher = Arc::new(Publisher {
        channel,
        user: yichuang::bus::user(&bus.url),
        names: Names::new(&bus.prefix),
        delays: bus.retry_delays_secs.clone(),
        timeout,
    });
    *callbacks.publisher.write().await = Some(publisher.clone());
    let names = Names::new(&bus.prefix);
    let mut consumers = tokio::task::JoinSet::new();
    for department in departments {
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
        let mut consumer = channel
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
        let worker = Arc::new(Worker {
            department: department.clone(),
            publisher: publisher.clone(),
        });
        consumers.spawn(async move {
            let _channel = channel;
            while let Some(delivery) = consumer.next().await {
                match delivery {
                    Ok(delivery) => {
                        let worker = worker.clone();
                        tokio::spawn(async move { worker.handle(delivery).await });
                    }
                    Err(e) => return format!("consumer: {e}"),
                }
            }
            "consumer ended".to_string()
        });
    }
    readiness.set(true);
    let ended = consumers
        .join_next()
        .await
        .map(|r| r.unwrap_or_else(|e| e.to_string()))
        .unwrap_or_default();
    consumers.abort_all();
    let _ = tokio::time::timeout(timeout, publishing.close(0, "reconnecting".into())).await;
    let _ = tokio::time::timeout(timeout, consuming.close(0, "reconnecting".into())).await;
    Err(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_written_reads_back_the_same_and_no_stage_is_a_first_submit() {
        assert_eq!(Stage::from_headers(None), Stage::Submit { attempt: 1 });
        for stage in [
            Stage::Submit { attempt: 3 },
            Stage::Poll {
                department_case_number: "SCJG2019000001".into(),
                polls: 7,
                step: "审核".into(),
            },
        ] {
            let mut headers = FieldTable::default();
            stage.write(&mut headers);
            assert_eq!(Stage::from_headers(Some(&headers)), stage);
        }
    }

    #[test]
    fn results_of_a_supplement_round_have_ids_of_their_own() {
        let r = |kind: ResultKind, step: &str, round: i32| ResultMessage {
            task_id: "C1-01".into(),
            kind: kind as i32,
            step: step.into(),
            round,
            ..Default::default()
        };
        assert_eq!(
            result_message_id(&r(ResultKind::Accepted, "", 0)),
            "C1-01:accepted"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Supplement, "", 0)),
            "C1-01:supplement"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Approved, "", 1)),
            "C1-01:approved:s1"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Progress, "审核", 0)),
            "C1-01:progress:审核"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Progress, "审核", 1)),
            "C1-01:progress:审核:s1"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Failed, "", 12)),
            "C1-01:failed:s12"
        );
        // Task messages are deduplicated the way the gateway names them.
        assert_eq!(seen_key("C1-01", 0), "C1-01");
        assert_eq!(seen_key("C1-01", 2), "C1-01:s2");
        let mut seen = Seen::default();
        assert!(seen.insert(&seen_key("C1-01", 0)));
        assert!(
            seen.insert(&seen_key("C1-01", 1)),
            "the next round is not a copy"
        );
        assert!(
            !seen.insert(&seen_key("C1-01", 1)),
            "a copy of the round is"
        );
    }

    #[test]
    fn a_decision_date_is_the_start_of_that_hall_day_or_now_when_today() {
        let d = chrono::NaiveDate::from_ymd_opt(2019, 6, 20).unwrap();
        // 2019-06-20 00:00 in UTC+8 is 2019-06-19 16:00 UTC.
        assert_eq!(decided_at(d).seconds, 1_560_960_000);
        let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
        let at = decided_at(today).seconds;
        assert!((chrono::Utc::now().timestamp() - at).abs() < 5);
    }
}
