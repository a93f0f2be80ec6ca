//! The adapter process's counters and histograms, served at `/metrics` (OpenMetrics text) by
//! [`crate::http`]: calls to the legacy systems by operation and outcome (the failure class),
//! their latency, retries scheduled, polls and dead letters, per department.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A call to a legacy system and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub department: String,
    /// `submit`, `find`, `poll`, `resupply`, `acknowledge`.
    pub operation: String,
    /// `ok`, `transient` (timeout, 5xx, refused connection, maintenance, rate limit: retried)
    /// or `permanent` (the system refused the task: the window must act).
    pub outcome: String,
}

/// A legacy call, without its outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub department: String,
    pub operation: String,
}

/// One department.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepartmentLabels {
    pub department: String,
}

/// A callback and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// The department served here (`unknown` for a path naming none, so the series stay
    /// bounded).
    pub department: String,
    /// `published` (trusted), `polled`, `not_polled_here`, `unreadable`, `failed`, or the
    /// refusal: `no_secret`, `unsigned`, `bad_signature`, `stale`, `replayed`, `busy`.
    pub outcome: String,
}

/// The adapter's meters.
pub struct Meters {
    pub registry: Registry,
    pub calls: Family<CallLabels, Counter>,
    pub call_duration: Family<OperationLabels, Histogram>,
    pub retries: Family<DepartmentLabels, Counter>,
    pub dead_letters: Family<DepartmentLabels, Counter>,
    pub tasks_consumed: Family<DepartmentLabels, Counter>,
    pub breaker_openings: Family<DepartmentLabels, Counter>,
    pub breaker_open: Family<DepartmentLabels, prometheus_client::metrics::gauge::Gauge>,
    pub callbacks: Family<CallbackLabels, Counter>,
}

impl Meters {
    /// Creates a department's series at zero, so a rate or an alert on them works before the
    /// first retry or dead letter (a series that does not exist yet has no rate).
    pub fn start(&self, department: &str) {
        let labels = DepartmentLabels {
            department: department.to_string(),
        };
        drop(self.retries.get_or_create(&labels));
        drop(self.dead_letters.get_or_create(&labels));
        drop(self.tasks_consumed.get_or_create(&labels));
        drop(self.breaker_openings.get_or_create(&labels));
        drop(self.breaker_open.get_or_create(&labels));
    }
}

/// The process's meters.
pub fn meters() -> &'static Meters {
    static METERS: LazyLock<Meters> = LazyLock::new(|| {
        let mut registry = Registry::with_prefix("yichuang_adapter");
        let calls = Family::<CallLabels, Counter>::default();
        let call_duration = Family::<OperationLabels, Histogram>::new_with_constructor(
            yichuang::metrics::latency_histogram as fn() -> _,
        );
        let retries = Family::<DepartmentLabels, Counter>::default();
        let dead_letters = Family::<DepartmentLabels, Counter>::default();
        let tasks_consumed = Family::<DepartmentLabels, Counter>::default();
        let breaker_openings = Family::<DepartmentLabels, Counter>::default();
        let breaker_open =
            Family::<DepartmentLabels, prometheus_client::metrics::gauge::Gauge>::default();
        let callbacks = Family::<CallbackLabels, Counter>::default();
        registry.register(
            "callbacks",
            "Callbacks from legacy systems, by what became of them (refusals by reason).",
            callbacks.clone(),
        );
        registry.register(
            "breaker_openings",
            "Times a department's circuit breaker opened (transient failures in a row, or a failed probe).",
            breaker_openings.clone(),
        );
        registry.register(
            "breaker_open",
            "1 while a department's circuit breaker is open or probing: no calls, tasks wait without spending attempts.",
            breaker_open.clone(),
        );
        registry.register(
            "legacy_calls",
            "Calls to a department's legacy system, by operation and outcome (failure class).",
            calls.clone(),
        );
        registry.register(
            "legacy_call_duration_seconds",
            "Time a legacy system took to answer (timeouts count at the timeout).",
            call_duration.clone(),
        );
        registry.register(
            "retries",
            "Tasks sent to a delay queue to be tried again after a transient failure.",
            retries.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages the adapter dead-lettered (gave up, or could not read them).",
            dead_letters.clone(),
        );
        registry.register(
            "deliveries",
            "Task deliveries taken from a department's queue (first deliveries, retries and polls).",
            tasks_consumed.clone(),
        );
        Meters {
            registry,
            calls,
            call_duration,
            retries,
            dead_letters,
            tasks_consumed,
            breaker_openings,
            breaker_open,
            callbacks,
        }
    });
    &METERS
}

/// The exposition.
pub fn render() -> String {
    let mut text = yichuang::metrics::encode_open(&meters().registry);
    text.push_str("# EOF\n");
    text
}

/// One department's counts since the process started, for `GET /status` (the gateway's
/// operations console turns them into rates): legacy calls by outcome, retries scheduled,
/// tasks dead-lettered, tasks taken from the queue.
pub fn department_counts(department: &str) -> serde_json::Value {
    let m = meters();
    let label = DepartmentLabels {
        department: department.to_string(),
    };
    let mut calls = serde_json::Map::new();
    for outcome in ["ok", "transient", "permanent"] {
        let total: u64 = ["submit", "find", "poll", "resupply", "acknowledge"]
            .into_iter()
            .map(|operation| {
                m.calls
                    .get_or_create(&CallLabels {
                        department: department.to_string(),
                        operation: operation.to_string(),
                        outcome: outcome.to_string(),
                    })
                    .get()
            })
            .sum();
        calls.insert(outcome.to_string(), total.into());
    }
    serde_json::json!({
        "calls": calls,
        "retries": m.retries.get_or_create(&label).get(),
        "dead_letters": m.dead_letters.get_or_create(&label).get(),
        "tasks_consumed": m.tasks_consumed.get_or_create(&label).get(),
    })
}
