//! A circuit breaker per department: after `breaker.failures` transient failures in a row the
//! department's legacy system is taken to be down, and the breaker opens. While it is open no
//! call is made; tasks wait in the delay queues without spending their attempts (a department
//! down for a weekend must not dead-letter Friday's cases). After `open_secs` one delivery is let
//! through as a probe (half-open): a success closes the breaker, a transient failure opens it
//! again for twice as long, up to `max_open_secs`. A permanent failure (the system answered and
//! refused the task) is an answer, so it counts as the system being up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
        period: Duration,
    },
    /// A probe is out since `since`; the others wait. `period` is how long it opens again if the
    /// probe fails. A probe that never reports (its delivery made no call) is replaced after
    /// `open_secs`.
    HalfOpen {
        period: Duration,
        since: Instant,
    },
}

/// What a delivery may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Call the system.
    Call,
    /// Wait this long (in a delay queue) and come back; no attempt is spent.
    Wait(Duration),
}

/// One department's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<(State, u32)>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            inner: Mutex::new((State::Closed, 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, u32)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a delivery may call the system now.
    pub fn admit(&self) -> Admit {
        if self.config.failures == 0 {
            return Admit::Call;
        }
        let mut inner = self.lock();
        match inner.0 {
            State::Closed => Admit::Call,
            State::Open { until, period } => {
                let now = Instant::now();
                if now >= until {
                    inner.0 = State::HalfOpen { period, since: now };
                    Admit::Call
                } else {
                    Admit::Wait(until - now)
                }
            }
            State::HalfOpen { period, since } => {
                let now = Instant::now();
                if now.duration_since(since) >= self.open_for() {
                    inner.0 = State::HalfOpen { period, since: now };
                    Admit::Call
                } else {
                    Admit::Wait(self.open_for() - now.duration_since(since))
                }
            }
        }
    }

    fn open_for(&self) -> Duration {
        Duration::from_secs(self.config.open_secs.max(1))
    }

    /// The system answered (a success, or a refusal of the task itself): closed.
    pub fn answered(&self) {
        let mut inner = self.lock();
        if inner.0 != State::Closed {
            tracing::info!(department = %self.config.department, "circuit breaker closed: the department's system answers again");
        }
        *inner = (State::Closed, 0);
        self.gauge(false);
    }

    /// How long a delivery must wait while the breaker is open (`None`: closed).
    pub fn waiting(&self) -> Option<Duration> {
        match self.lock().0 {
            State::Closed => None,
            State::Open { until, .. } => Some(until.saturating_duration_since(Instant::now())),
            State::HalfOpen { .. } => Some(self.open_for()),
        }
    }

    fn gauge(&self, open: bool) {
        crate::meters::meters()
            .breaker_open
            .get_or_create(&crate::meters::DepartmentLabels {
                department: self.config.department.clone(),
            })
            .set(i64::from(open));
    }

    /// A transient failure. `Some(wait)` when the breaker is open now (it opened, or the probe
    /// failed): the delivery waits that long without spending an attempt.
    pub fn failed(&self) -> Option<Duration> {
        if self.config.failures == 0 {
            return None;
        }
        let mut inner = self.lock();
        inner.1 = inner.1.saturating_add(1);
        let max = Duration::from_secs(self.config.max_open_secs.max(self.config.open_secs).max(1));
        let period = match inner.0 {
            State::HalfOpen { period, .. } => (period * 2).min(max),
            State::Open { until, .. } => {
                return Some(until.saturating_duration_since(Instant::now()));
            }
            State::Closed if inner.1 >= self.config.failures => self.open_for().min(max),
            State::Closed => return None,
        };
        inner.0 = State::Open {
            until: Instant::now() + period,
            period,
        };
        crate::meters::meters()
            .breaker_openings
            .get_or_create(&crate::meters::DepartmentLabels {
                department: self.config.department.clone(),
            })
            .inc();
        self.gauge(true);
        tracing::warn!(department = %self.config.department, open_secs = period.as_secs(), "circuit breaker open: the department's system keeps failing; tasks wait without spending attempts");
        Some(period)
    }

    /// Whether the breaker is open or half-open.
    pub fn is_open(&self) -> bool {
        !matches!(self.lock().0, State::Closed)
    }

    /// The state for the adapter's `/status`: `closed`, `open` or `half-open`, the transient
    /// failures in a row, and (when open) the seconds until the next probe.
    pub fn report(&self) -> Report {
        let (state, failures) = *self.lock();
        let (state, probe_in_secs) = match state {
            State::Closed => ("closed", None),
            State::Open { until, .. } => (
                "open",
                Some(until.saturating_duration_since(Instant::now()).as_secs()),
            ),
            State::HalfOpen { .. } => ("half-open", None),
        };
        Report {
            state,
            failures_in_a_row: failures,
            probe_in_secs,
        }
    }
}

/// A breaker's state, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub state: &'static str,
    pub failures_in_a_row: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_in_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> Breaker {
        Breaker::new(BreakerConfig {
            failures,
            open_secs: 1,
            max_open_secs: 4,
            department: "t".into(),
        })
    }

    #[test]
    fn its_report_follows_the_state() {
        let b = breaker(2);
        assert_eq!(b.report().state, "closed");
        b.failed();
        assert_eq!(b.report().failures_in_a_row, 1);
        b.failed();
        let open = b.report();
        assert_eq!(open.state, "open");
        assert!(open.probe_in_secs.is_some_and(|s| s <= 1), "{open:?}");
    }

    #[test]
    fn opens_after_failures_in_a_row_probes_and_closes() {
        let b = breaker(3);
        assert_eq!(b.failed(), None);
        b.answered(); // a success in between starts the count again
        assert_eq!(b.failed(), None);
        assert_eq!(b.failed(), None);
        assert_eq!(
            b.failed(),
            Some(Duration::from_secs(1)),
            "third in a row opens"
        );
        assert!(b.is_open());
        assert!(matches!(b.admit(), Admit::Wait(d) if d <= Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(b.admit(), Admit::Call, "the probe");
        assert!(matches!(b.admit(), Admit::Wait(_)), "one probe at a time");
        assert_eq!(
            b.failed(),
            Some(Duration::from_secs(2)),
            "a failed probe doubles"
        );
        std::thread::sleep(Duration::from_millis(2050));
        assert_eq!(b.admit(), Admit::Call);
        b.answered();
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Call);
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let b = breaker(0);
        for _ in 0..100 {
            assert_eq!(b.failed(), None);
        }
        assert_eq!(b.admit(), Admit::Call);
    }
}
