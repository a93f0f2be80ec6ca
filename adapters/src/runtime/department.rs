//! One department served by this process: its configuration, its legacy system behind the rate
//! limit, the call timeout and the circuit breaker ([`Department::call`], which also counts and
//! traces every legacy call), and the memory of task ids it is handling or has finished, by which
//! copies of a task message are dropped. It never publishes and never decides what a delivery
//! leads to (that is [`super::worker`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::message::Delivery;
use prost::Message;
use tracing::Instrument;
use yichuang::proto::v1::TaskMessage;

use super::stage::Polling;
use crate::config::DepartmentConfig;
use crate::system::{DepartmentSystem, Failure, Gate, Task};

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
    pub(super) seen: Mutex<Seen>,
    /// The callback secret (`callbacks.secret`, resolved when the department is built); `None`:
    /// every callback is refused.
    pub callback_secret: Option<Vec<u8>>,
    /// Callback nonces seen within the freshness window: a replay is refused.
    pub(super) nonces: Mutex<super::callbacks::Nonces>,
    /// Tasks this process is polling, with where their polling stands: a verified callback about
    /// one of them polls it now.
    pub(super) polled: Mutex<Polled>,
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
pub(super) fn delivery_key(delivery: &Delivery) -> String {
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

/// A bounded memory of task ids.
#[derive(Default)]
pub(super) struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    const CAPACITY: usize = 100_000;

    /// Remembers `id`; false when it was already there.
    pub(super) fn insert(&mut self, id: &str) -> bool {
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

    pub(super) fn forget(&mut self, id: &str) {
        self.set.remove(id);
    }
}

/// A bounded memory of the tasks being polled here: task id → the task message and where its
/// polling stood when the next poll was scheduled. A task forgotten (the memory full, another
/// replica polling it, a restart) is still polled on schedule; a callback about it only does
/// not make that poll sooner.
#[derive(Default)]
pub(super) struct Polled {
    tasks: HashMap<String, (TaskMessage, Polling)>,
    order: VecDeque<String>,
}

impl Polled {
    const CAPACITY: usize = 10_000;

    pub(super) fn insert(&mut self, message: TaskMessage, at: Polling) {
        let Some(id) = message.task.as_ref().map(|t| t.task_id.clone()) else {
            return;
        };
        if self.tasks.insert(id.clone(), (message, at)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }

    pub(super) fn get(&self, task_id: &str) -> Option<(TaskMessage, Polling)> {
        self.tasks.get(task_id).cloned()
    }

    pub(super) fn forget(&mut self, task_id: &str) {
        if self.tasks.remove(task_id).is_some() {
            self.order.retain(|id| id != task_id);
        }
    }
}

impl Department {
    /// Reads an answer of its system: by the kind's own reading (a description's `outcome`),
    /// else by the department's `mapping.result`.
    pub fn read(&self, answer: &crate::system::Answer) -> crate::mapping::Reading {
        self.system
            .read(answer)
            .unwrap_or_else(|| self.config.mapping.result.read(answer))
    }

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
            callback_secret: None,
            nonces: Mutex::new(super::callbacks::Nonces::default()),
            polled: Mutex::new(Polled::default()),
        }
    }

    pub fn code(&self) -> &str {
        &self.config.department
    }

    /// Calls the legacy system under the rate limit and the call timeout.
    pub(super) async fn call<T>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_messages_are_deduplicated_by_task_and_supplement_round() {
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
}
