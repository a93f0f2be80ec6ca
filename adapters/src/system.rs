//! What a department system is to the runtime: the one trait every kind implements, and the
//! answers it gives. A kind knows how to talk to one sort of legacy system; it knows nothing of
//! the bus, retries, rate limits or deduplication, which the runtime owns.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use yichuang::proto::v1::TaskMessage;

/// A task as a kind sees it: the canonical message and the legacy fields the department's
/// mapping made of it.
#[derive(Debug, Clone)]
pub struct Task {
    pub message: TaskMessage,
    /// Legacy field name → value, from `mapping.request`, in the legacy system's order of names.
    pub fields: BTreeMap<String, String>,
}

impl Task {
    /// The task id (`<case number>-NN`): the key the legacy system is given for idempotency.
    pub fn id(&self) -> &str {
        self.message
            .task
            .as_ref()
            .map_or("", |t| t.task_id.as_str())
    }
}

/// A legacy answer, flattened: field name → value. The department's `mapping.result` reads it.
pub type Answer = BTreeMap<String, String>;

/// Why a call to a legacy system failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// Worth trying again later: timeout, 5xx, connection refused, maintenance, rate limit.
    #[error("transient: {reason}")]
    Transient {
        reason: String,
        /// The legacy system's own `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// The legacy system refused the task itself (validation): trying again cannot help; the
    /// window must act.
    #[error("refused by the department system: {reason}")]
    Permanent { reason: String },
}

impl Failure {
    pub fn transient(reason: impl Into<String>) -> Failure {
        Failure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Failure {
        Failure::Permanent {
            reason: reason.into(),
        }
    }
}

/// A department's legacy approval system, reached one way. Every method may be called again
/// for the same task after a crash; `submit` must let the legacy system recognise the task id
/// (kinds pass it as the legacy system's business serial number) so `find` can see it.
#[async_trait::async_trait]
pub trait DepartmentSystem: Send + Sync {
    /// Hands the task to the legacy system. The answer carries at least the department's own
    /// case number; it may already carry a decision.
    async fn submit(&self, task: &Task) -> Result<Answer, Failure>;

    /// Asks the legacy system about a task it has: its steps and decision so far.
    async fn poll(&self, task: &Task, department_case_number: &str) -> Result<Answer, Failure>;

    /// Whether the legacy system already has this task (it was submitted before a crash):
    /// its answer about it, or `None`. Kinds whose system cannot be asked return `None` and
    /// rely on the legacy system refusing a duplicate serial number.
    async fn find(&self, task: &Task) -> Result<Option<Answer>, Failure>;

    /// Reads a callback the legacy system sent to the adapter's HTTP endpoint: the task id it
    /// concerns and what it says. `None`: this kind takes no callbacks, or the body is not one.
    fn callback(&self, _body: &[u8]) -> Option<(String, Answer)> {
        None
    }

    /// Told once everything an answer from `submit`, `find` or `poll` led to (step, decision)
    /// is confirmed published, so systems that keep a received flag (table exchange) can set
    /// it. It may be called again for the same answer. Default: nothing to do.
    async fn acknowledge(&self, _task: &Task, _answer: &Answer) -> Result<(), Failure> {
        Ok(())
    }
}

/// The door to a legacy system: every request a kind sends waits here first, for the
/// department's rate limit and for any pause the system asked for (429 / `Retry-After`).
/// Requests are evenly spaced — no bursts — with a margin (5 % and 20 ms), so that network and
/// scheduling jitter cannot put one request too many into any second at the legacy end.
#[derive(Clone)]
pub struct Gate(Arc<GateInner>);

struct GateInner {
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
}

impl Gate {
    pub fn new(requests_per_second: u32) -> Gate {
        let rps = requests_per_second.max(1);
        let period = Duration::from_micros(1_000_000 * 105 / 100 / u64::from(rps))
            + Duration::from_millis(20);
        let quota = Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(NonZeroU32::MIN);
        Gate(Arc::new(GateInner {
            limiter: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
        }))
    }

    /// Waits until a request may be sent.
    pub async fn permit(&self) {
        loop {
            let until = *self.0.paused_until.lock().expect("pause lock");
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => break,
            }
        }
        self.0.limiter.until_ready().await;
    }

    /// Holds every request back for `d` (the system said `Retry-After`).
    pub fn pause(&self, d: Duration) {
        let t = Instant::now() + d;
        let mut p = self.0.paused_until.lock().expect("pause lock");
        if p.is_none_or(|old| old < t) {
            *p = Some(t);
        }
    }
}
