//! What a department system is to the runtime: the one trait every kind implements, the
//! answers it gives, and what a supplement round hands over (its serial and its materials). A
//! kind knows how to talk to one sort of legacy system; it knows nothing of the bus, retries,
//! rate limits or deduplication, which the runtime owns.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use yichuang::proto::v1::{MaterialForm, SupplementDelivery, TaskMessage};

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

    /// The supplement round the message is about: `supplement.round`, 0 before any supplement.
    pub fn round(&self) -> i32 {
        round_of(&self.message)
    }
}

/// The supplement round of a task message (0 when it carries no supplement).
pub fn round_of(message: &TaskMessage) -> i32 {
    message.supplement.as_ref().map_or(0, |s| s.round)
}

/// The business serial number of a supplement round, `<task id>-S<round>`: the key the legacy
/// system is given so that handing the same round over twice is recognised as a duplicate.
pub fn supplement_serial(task_id: &str, round: i32) -> String {
    format!("{task_id}-S{round}")
}

/// One material of a supplement, as kinds hand it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supplied {
    /// Material kind code of the acceptance list (`PMT`).
    pub code: String,
    /// Its name in the acceptance list (`经营场所平面图及设备布局图`) when the adapter was given
    /// the catalog (`catalog_dir`), else the code.
    pub name: String,
    /// 原件, 复印件 or 电子件 (empty when not said).
    pub form: &'static str,
    pub copies: i32,
    /// The electronic file's location and SHA-256 (empty for paper).
    pub uri: String,
    pub sha256: String,
    pub size_bytes: i64,
}

impl Supplied {
    /// The material as the JSON kinds write it, in the legacy systems' field names: `clbm` code,
    /// `clmc` name, `clxs` form, `fs` copies, `wjdz` file URI, `wjzy` SHA-256, `wjdx` bytes.
    pub fn legacy_json(&self) -> serde_json::Value {
        serde_json::json!({
            "clbm": self.code,
            "clmc": self.name,
            "clxs": self.form,
            "fs": self.copies,
            "wjdz": self.uri,
            "wjzy": self.sha256,
            "wjdx": self.size_bytes,
        })
    }
}

/// The materials of a supplement, named from `names` (material code → name).
pub fn supplied(
    supplement: &SupplementDelivery,
    names: &BTreeMap<String, String>,
) -> Vec<Supplied> {
    supplement
        .materials
        .iter()
        .map(|m| {
            let file = m.file.clone().unwrap_or_default();
            Supplied {
                code: m.material_code.clone(),
                name: names
                    .get(&m.material_code)
                    .cloned()
                    .unwrap_or_else(|| m.material_code.clone()),
                form: match MaterialForm::try_from(m.form) {
                    Ok(MaterialForm::Original) => "原件",
                    Ok(MaterialForm::Copy) => "复印件",
                    Ok(MaterialForm::Electronic) => "电子件",
                    _ => "",
                },
                copies: m.copies,
                uri: file.uri,
                sha256: file.sha256,
                size_bytes: file.size_bytes,
            }
        })
        .collect()
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

/// The longest `Retry-After` a legacy system is believed: a larger one (a bug, or a date in the
/// far future) is clamped to this, and the department is asked again then.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Failure {
    /// The same failure with a `Retry-After` no longer than [`MAX_RETRY_AFTER`].
    pub fn clamped(self) -> Failure {
        match self {
            Failure::Transient {
                reason,
                retry_after,
            } => Failure::Transient {
                reason,
                retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
            },
            permanent => permanent,
        }
    }

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
/// (kinds pass it as the legacy system's business serial number) so `find` can see it, and
/// `resupply` must let it recognise the round ([`supplement_serial`]).
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

    /// Hands the materials of a supplement (补正) round to the department's existing case
    /// `department_case_number`, which asked for them; the case then goes on and is polled
    /// again. The round's serial ([`supplement_serial`]) goes with it, so a second call for the
    /// same round (after a crash) is recognised by the legacy system and answered as success —
    /// with the case's current state, or nothing the runtime needs (it polls next either way).
    async fn resupply(
        &self,
        task: &Task,
        department_case_number: &str,
        supplement: &SupplementDelivery,
    ) -> Result<Answer, Failure>;

    /// Reads a callback the legacy system sent to the adapter's HTTP endpoint: the task id it
    /// concerns and what it says. `None`: this kind takes no callbacks, or the body is not one.
    fn callback(&self, _body: &[u8]) -> Option<(String, Answer)> {
        None
    }

    /// Reads an answer into a step and a decision, when the kind knows how (a description's
    /// `outcome`). `None`: the department's `mapping.result` reads it.
    fn read(&self, _answer: &Answer) -> Option<crate::mapping::Reading> {
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
/// Requests are evenly spaced — no bursts — 10 % wider than the rate asks: the first and the
/// `rate + 1`-th of any run are then 1.1 s apart, so network and scheduling jitter of up to
/// 100 ms cannot put one request too many into any second at the legacy end, whatever the rate.
/// (A fixed margin per request, as before, capped every department below 50 requests a second
/// however fast its system was.)
#[derive(Clone)]
pub struct Gate(Arc<GateInner>);

struct GateInner {
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
}

impl Gate {
    pub fn new(requests_per_second: u32) -> Gate {
        let rps = requests_per_second.max(1);
        let period =
            Duration::from_nanos(1_100_000_000 / u64::from(rps)).max(Duration::from_nanos(1));
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
        // Never past the clamp, whatever the caller passed: `Instant + Duration` panics on overflow.
        let now = Instant::now();
        let t = now
            .checked_add(d.min(MAX_RETRY_AFTER))
            .unwrap_or(now + MAX_RETRY_AFTER);
        let mut p = self.0.paused_until.lock().expect("pause lock");
        if p.is_none_or(|old| old < t) {
            *p = Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_retry_after_is_clamped_and_pausing_for_it_does_not_overflow() {
        let f = Failure::Transient {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(1_000_000_000_000)),
        }
        .clamped();
        assert!(
            matches!(f, Failure::Transient { retry_after: Some(d), .. } if d == MAX_RETRY_AFTER)
        );
        let gate = Gate::new(1);
        gate.pause(Duration::MAX);
        gate.pause(Duration::from_secs(1_000_000_000_000));
    }
}
