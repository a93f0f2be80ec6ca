//! The per-delivery state machine of one department: what a task message leads to (drop a copy,
//! hold it, wait out the breaker or a maintenance window, look up and submit, resupply, poll),
//! the failure classes (transient retried with backoff, permanent published as `FAILED`, poison
//! dead-lettered), and the acknowledgement once everything it caused is confirmed. It calls the
//! legacy system only through [`Department::call`] and publishes only through [`Publisher`].

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, ShortString};
use prost::Message;
use tracing::Instrument;
use tracing::{debug, info, warn};
use yichuang::bus::headers as hdr;
use yichuang::proto::v1::{ResultKind, ResultMessage, TaskMessage};

use super::department::{Department, delivery_key, seen_key};
use super::publisher::{Publisher, decided, decided_at, now};
use super::stage::{Polling, Stage, continued_headers, header, int_header, text_header};
use crate::config::DepartmentConfig;
use crate::mapping::{Reading, render_all};
use crate::system::{Answer, Failure, Task};

/// The `traceparent` of the message a result continues, if any.
type Trace<'a> = Option<&'a AMQPValue>;

/// Beyond the request timeout, what a held copy waits for an earlier request to land.
const HOLD_MARGIN: Duration = Duration::from_secs(1);

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
    Poll { delay: Duration, at: Polling },
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

/// Handles deliveries for one department.
pub(super) struct Worker {
    pub(super) department: Arc<Department>,
    pub(super) publisher: Arc<Publisher>,
}

impl Worker {
    /// Handles one delivery in a consumer span of its own, a child of the span that published
    /// it (the gateway's relay, or this adapter when it sent the task to a delay queue).
    pub(super) async fn handle(&self, delivery: Delivery) {
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
            Next::Poll { delay, at } => {
                let mut headers = continued_headers(&delivery);
                Stage::Poll(at.clone()).write(&mut headers);
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
                self.remember_polling(&delivery, &next);
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
                    Next::Poll { at, .. } => at.polls % alive_every == 0,
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

    /// Keeps what a verified callback needs to poll a task now: the task and where its polling
    /// stands, while a poll is scheduled; forgotten once the task has its outcome.
    fn remember_polling(&self, delivery: &Delivery, next: &Next) {
        let Ok(message) = TaskMessage::decode(delivery.data.as_slice()) else {
            return;
        };
        let mut polled = self.department.polled.lock().expect("polled");
        match next {
            Next::Poll { at, .. } => polled.insert(message, at.clone()),
            Next::Done | Next::Dead(_) => {
                if let Some(task) = &message.task {
                    polled.forget(&task.task_id);
                }
            }
            _ => {}
        }
    }

    /// Polls a task now, as its scheduled poll would (a verified callback said there is news):
    /// what the legacy system answers is published; the scheduled poll still comes, and
    /// consumers drop what it publishes again by `message_id`. Says what it found.
    pub(super) async fn poll_now(&self, message: TaskMessage, at: Polling) -> &'static str {
        let dept = &self.department;
        if let crate::breaker::Admit::Wait(_) = dept.breaker.admit() {
            return "circuit breaker open; the scheduled poll asks later";
        }
        let fields = match render_all(&dept.config.mapping.request, &message) {
            Ok(f) => f,
            Err(_) => return "the task cannot be mapped; the scheduled poll reports it",
        };
        let task = Task { message, fields };
        match self.poll(None, &task, at).await {
            Next::Done => {
                dept.polled.lock().expect("polled").forget(task.id());
                "polled: the outcome is published"
            }
            Next::Requeue(_) => "polled, but the result could not be published yet",
            _ => "polled: no decision yet",
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
        // A stalled task the gateway published again, or a dead one an operator replayed, is
        // handled even if remembered here: its earlier message is gone (the lookup before
        // submitting keeps the department's one case).
        let repair = int_header(delivery, hdr::REPAIR).is_some()
            || int_header(delivery, hdr::REPLAYED).is_some();
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
                    .failed(
                        &message,
                        header(delivery, hdr::TRACEPARENT),
                        format!("mapping: {e}"),
                    )
                    .await;
            }
        };
        let task = Task { message, fields };
        match stage {
            Stage::Poll(at) => {
                self.poll(header(delivery, hdr::TRACEPARENT), &task, at)
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
            Stage::Poll(at) => Next::Poll { delay, at },
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
        let reading = dept.read(&answer);
        let department_case_number = reading.department_case_number.clone().unwrap_or_default();
        // Some systems give their number only later (a table exchange the department's job
        // picks up, a clerk's re-entry): then ACCEPTED waits for a poll that finds it.
        if !department_case_number.is_empty()
            && let Err(e) = self
                .accepted(
                    header(delivery, hdr::TRACEPARENT),
                    task,
                    &department_case_number,
                )
                .await
        {
            return self.retry_publish(e);
        }
        let at = Polling {
            department_case_number,
            ..Polling::default()
        };
        self.after_reading(
            header(delivery, hdr::TRACEPARENT),
            task,
            &answer,
            reading,
            at,
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
                    at: Polling {
                        department_case_number,
                        ..Polling::default()
                    },
                }
            }
            Err(f) => self.failure(delivery, task, attempt, f).await,
        }
    }

    async fn accepted(
        &self,
        trace: Trace<'_>,
        task: &Task,
        department_case_number: &str,
    ) -> Result<(), String> {
        let accepted = self.result(task, ResultKind::Accepted, department_case_number);
        self.publisher.result(accepted, trace).await
    }

    async fn poll(&self, trace: Trace<'_>, task: &Task, mut at: Polling) -> Next {
        let dept = &self.department;
        let interval = Duration::from_secs(dept.config.polling.interval_secs);
        let system = dept.system.clone();
        match dept
            .call("poll", task, system.poll(task, &at.department_case_number))
            .await
        {
            Ok(answer) => {
                let reading = dept.read(&answer);
                if at.department_case_number.is_empty()
                    && let Some(given) = reading.department_case_number.clone()
                {
                    // The system gave its number only now: the task is accepted now.
                    if let Err(e) = self.accepted(trace, task, &given).await {
                        return self.retry_publish(e);
                    }
                    at.department_case_number = given;
                }
                self.after_reading(trace, task, &answer, reading, at).await
            }
            Err(Failure::Transient {
                reason,
                retry_after,
            }) => {
                debug!(department = %dept.code(), reason = %yichuang::privacy::mask_free_text(&reason), "poll failed; asking again later");
                Next::Poll {
                    delay: retry_after.unwrap_or(interval).max(interval),
                    at: at.polled(),
                }
            }
            Err(Failure::Permanent { reason }) => self.failed(&task.message, trace, reason).await,
        }
    }

    /// Publishes a new step and the decision when there is one; otherwise polls again. Once
    /// published, the system is told (`acknowledge`).
    async fn after_reading(
        &self,
        trace: Trace<'_>,
        task: &Task,
        answer: &Answer,
        reading: Reading,
        mut at: Polling,
    ) -> Next {
        let dept = &self.department;
        let decided_on = reading.decided_on;
        if let Some(new) = reading.step.filter(|s| *s != at.step) {
            let mut r = self.result(task, ResultKind::Progress, &at.department_case_number);
            r.step = new.clone();
            if let Err(e) = self.publisher.result(r, trace).await {
                return self.retry_publish(e);
            }
            at.step = new;
        }
        let polls = at.polls;
        let Some(decision) = reading.decision else {
            if polls >= dept.config.polling.max_polls {
                // The window is told, so a person follows it up with the department.
                return self
                    .failed(
                        &task.message,
                        trace,
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
                at: at.polled(),
            };
        };
        let mut r = decided(
            self.result(task, ResultKind::Unspecified, &at.department_case_number),
            decision,
        );
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
                    at: at.polled(),
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
            Failure::Permanent { reason } => {
                self.failed(&task.message, header(delivery, hdr::TRACEPARENT), reason)
                    .await
            }
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
                        .publish_failed(
                            &task.message,
                            header(delivery, hdr::TRACEPARENT),
                            reason.clone(),
                        )
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
    async fn failed(&self, message: &TaskMessage, trace: Trace<'_>, reason: String) -> Next {
        warn!(department = %self.department.code(), reason = %yichuang::privacy::mask_free_text(&reason), "department system refused the task");
        match self.publish_failed(message, trace, reason).await {
            Ok(()) => Next::Done,
            Err(e) => self.retry_publish(e),
        }
    }

    /// The `FAILED` result of a task, published.
    async fn publish_failed(
        &self,
        message: &TaskMessage,
        trace: Trace<'_>,
        reason: String,
    ) -> Result<(), String> {
        let task = Task {
            message: message.clone(),
            fields: Default::default(),
        };
        let mut r = self.result(&task, ResultKind::Failed, "");
        r.reasons = vec![reason];
        r.at = Some(now());
        self.publisher.result(r, trace).await
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
