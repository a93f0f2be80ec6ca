//! Fair share and overload: how much each caller may ask of the gateway and how much the
//! gateway takes on at once. Two tower layers ([`LimitLayer::in_flight`], outermost, and
//! [`LimitLayer::rates`], after the policy layer; in `layer.rs`) apply it to every call of the
//! public listener before any handler runs; health checks and reflection pass untouched, so
//! probes are answered however loaded the gateway is.
//!
//! - **Rates** (governor token buckets, `[limits] per_caller`, `per_hall`, `global`): a call
//!   over any of them is refused with `RESOURCE_EXHAUSTED`, `retry-after` (seconds) and
//!   `grpc-retry-pushback-ms` in its metadata, and counted in `yichuang_calls_refused_total`.
//! - **Calls in flight** (`max_in_flight`): one more is shed at once with `UNAVAILABLE` rather
//!   than queued, so under load beyond capacity the calls that are taken keep their latency
//!   and memory stays bounded.
//! - **Feed streams** (`feed_streams_per_caller`): each caller's open `WindowFeed` and
//!   `WatchCase` streams; one more is refused with `RESOURCE_EXHAUSTED`. Each stream's own
//!   buffer is bounded (`crate::api` streams); [`Limits::feed_buffered`] counts what all of them
//!   hold.
//!
//! The caller is the [`crate::auth::Caller`] the policy layer put in the request's extensions
//! (so this layer goes after it); without one (a server without the policy layer), the peer's
//! address and port stand for it.
//!
//! Rates, the in-flight bound and the stream cap are reloaded from the configuration file
//! without a restart ([`watch`]: every `[limits] check_secs`, and at once on `SIGHUP`). A reload
//! starts the buckets full. This module never reads a request body or the store.

mod layer;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tracing::{info, warn};

pub use layer::{LimitLayer, Limited};

use crate::config::{GatewayConfig, LimitsConfig, RateConfig};

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("over the call rate of this caller ([limits] per_caller); retry in {0:?}")]
    Caller(Duration),
    #[error("over the call rate of this hall ([limits] per_hall); retry in {0:?}")]
    Hall(Duration),
    #[error("over the gateway's call rate ([limits] global); retry in {0:?}")]
    Global(Duration),
    #[error(
        "the gateway is handling as many calls as it takes at once ([limits] max_in_flight = {0}); retry shortly, with backoff"
    )]
    Overloaded(usize),
    #[error(
        "this caller already holds {0} open feed streams ([limits] feed_streams_per_caller); close one, or follow several halls or cases on one stream"
    )]
    Streams(usize),
}

impl Refusal {
    /// The label of `yichuang_calls_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Caller(_) => "caller_rate",
            Refusal::Hall(_) => "hall_rate",
            Refusal::Global(_) => "global_rate",
            Refusal::Overloaded(_) => "overloaded",
            Refusal::Streams(_) => "feed_streams",
        }
    }

    /// When the caller may try again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::Caller(d) | Refusal::Hall(d) | Refusal::Global(d) => *d,
            // Load comes and goes within milliseconds; a client backs off from here.
            Refusal::Overloaded(_) => Duration::from_millis(100),
            Refusal::Streams(_) => Duration::from_secs(1),
        }
    }

    /// The gRPC status: `UNAVAILABLE` for shed load (clients retry it by default),
    /// `RESOURCE_EXHAUSTED` for a quota.
    pub fn code(&self) -> tonic::Code {
        match self {
            Refusal::Overloaded(_) => tonic::Code::Unavailable,
            _ => tonic::Code::ResourceExhausted,
        }
    }
}

/// The token buckets of one version of `[limits]`.
struct Rates {
    per_caller: Option<DefaultKeyedRateLimiter<String>>,
    per_hall: Option<DefaultKeyedRateLimiter<String>>,
    global: Option<DefaultDirectRateLimiter>,
}

fn quota(rate: RateConfig) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
    Some(Quota::per_second(per_second).allow_burst(burst))
}

impl Rates {
    fn new(config: &LimitsConfig) -> Rates {
        Rates {
            per_caller: quota(config.per_caller).map(RateLimiter::keyed),
            per_hall: quota(config.per_hall).map(RateLimiter::keyed),
            global: quota(config.global).map(RateLimiter::direct),
        }
    }
}

/// The gateway's limits in force, shared by the layer, the feed streams and the reloader.
pub struct Limits {
    settings: RwLock<(LimitsConfig, Arc<Rates>)>,
    /// Checks since the keyed buckets were last pruned.
    checks: AtomicUsize,
    max_in_flight: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    stream_cap: AtomicUsize,
    /// Open feed streams per caller; a caller with none has no entry.
    streams: Arc<Mutex<HashMap<String, usize>>>,
    /// Feed events read from the store and not yet taken by the transport, over every stream.
    feed_buffered: Arc<AtomicI64>,
}

/// How many checks between prunings of idle keys (a bucket back to full is forgotten), so
/// callers that come and go (peer addresses) do not grow the maps without bound.
const PRUNE_EVERY: usize = 4096;

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            settings: RwLock::new((config.clone(), Arc::new(Rates::new(config)))),
            checks: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(config.max_in_flight),
            in_flight: Arc::default(),
            stream_cap: AtomicUsize::new(config.feed_streams_per_caller),
            streams: Arc::default(),
            feed_buffered: Arc::default(),
        }
    }

    /// The `[limits]` in force.
    pub fn config(&self) -> LimitsConfig {
        self.settings.read().expect("limits lock").0.clone()
    }

    /// Puts `config` in force; false when it is the one in force already (buckets kept).
    pub fn apply(&self, config: &LimitsConfig) -> bool {
        let mut settings = self.settings.write().expect("limits lock");
        if settings.0 == *config {
            return false;
        }
        *settings = (config.clone(), Arc::new(Rates::new(config)));
        self.max_in_flight
            .store(config.max_in_flight, Ordering::Relaxed);
        self.stream_cap
            .store(config.feed_streams_per_caller, Ordering::Relaxed);
        true
    }

    /// Takes one call of `caller` (of `hall`) from the buckets.
    pub fn check_rate(&self, caller: &str, hall: Option<&str>) -> Result<(), Refusal> {
        let rates = self.settings.read().expect("limits lock").1.clone();
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            for keyed in [&rates.per_caller, &rates.per_hall].into_iter().flatten() {
                keyed.retain_recent();
                keyed.shrink_to_fit();
            }
        }
        let wait = |n: governor::NotUntil<_>| n.wait_time_from(DefaultClock::default().now());
        if let Some(l) = &rates.per_caller {
            l.check_key(&caller.to_string())
                .map_err(|n| Refusal::Caller(wait(n)))?;
        }
        if let (Some(l), Some(hall)) = (&rates.per_hall, hall) {
            l.check_key(&hall.to_string())
                .map_err(|n| Refusal::Hall(wait(n)))?;
        }
        if let Some(l) = &rates.global {
            l.check().map_err(|n| Refusal::Global(wait(n)))?;
        }
        Ok(())
    }

    /// One more call in flight, until the guard is dropped; refused beyond `max_in_flight`.
    pub fn enter(&self) -> Result<InFlight, Refusal> {
        let max = self.max_in_flight.load(Ordering::Relaxed);
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.in_flight.clone());
        if before >= max {
            return Err(Refusal::Overloaded(max));
        }
        Ok(guard)
    }

    /// Calls being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One more open feed stream of `caller`, until the permit is dropped.
    pub fn open_stream(&self, caller: &str) -> Result<StreamPermit, Refusal> {
        let cap = self.stream_cap.load(Ordering::Relaxed);
        let mut streams = self.streams.lock().expect("streams lock");
        let open = streams.entry(caller.to_string()).or_default();
        if *open >= cap {
            return Err(Refusal::Streams(*open));
        }
        *open += 1;
        crate::metrics::meters().feed_streams.inc();
        Ok(StreamPermit {
            caller: caller.to_string(),
            streams: self.streams.clone(),
        })
    }

    /// Open feed streams, over every caller.
    pub fn feed_streams(&self) -> usize {
        self.streams.lock().expect("streams lock").values().sum()
    }

    /// Feed events read from the store and not yet taken by the transport, over every open
    /// stream: bounded by the streams' buffers however slowly their clients read.
    pub fn feed_buffered(&self) -> i64 {
        self.feed_buffered.load(Ordering::Relaxed)
    }

    /// The counter behind [`Limits::feed_buffered`], for the feed streams to keep.
    pub fn feed_buffer(&self) -> FeedBuffer {
        FeedBuffer(self.feed_buffered.clone())
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config())
            .field("in_flight", &self.in_flight())
            .field("feed_streams", &self.feed_streams())
            .finish()
    }
}

/// A call in flight; dropped when its answer is complete (or the call is dropped).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An open feed stream; dropped when the stream ends.
#[derive(Debug)]
pub struct StreamPermit {
    caller: String,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().expect("streams lock");
        if let Some(open) = streams.get_mut(&self.caller) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.caller);
            }
        }
        crate::metrics::meters().feed_streams.dec();
    }
}

/// Counts feed events held by the gateway between the store and the transport (also in the
/// `yichuang_feed_buffered_events` gauge).
#[derive(Debug, Clone)]
pub struct FeedBuffer(Arc<AtomicI64>);

impl FeedBuffer {
    /// `n` more events held (negative: handed on or dropped).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
        crate::metrics::meters().feed_buffered_events.inc_by(n);
    }
}

/// Reads `[limits]` again from the configuration file at `path` every `every` (when set) and on
/// `SIGHUP`, until the gateway stops. A file that does not load is reported with its file and
/// line, and the limits in force stay.
pub async fn watch(limits: Arc<Limits>, path: PathBuf, every: Option<Duration>) {
    let mut reloads = crate::supervise::Reloads::new(every);
    info!(path = %path.display(), every_secs = every.map(|e| e.as_secs()), "limits watch running (SIGHUP reloads at once)");
    crate::supervise::progressed();
    while reloads.next().await.is_some() {
        reload(&limits, &path);
        crate::supervise::progressed();
    }
}

/// One reload (see [`watch`]); true when new limits were put in force.
pub fn reload(limits: &Limits, path: &std::path::Path) -> bool {
    match GatewayConfig::load(path) {
        Ok(config) => {
            let applied = limits.apply(&config.limits);
            if applied {
                info!(limits = ?config.limits, "limits reloaded");
            }
            applied
        }
        Err(e) => {
            warn!(error = %e, "configuration refused on reload; the limits in force stay");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_caller: u32, per_hall: u32) -> LimitsConfig {
        LimitsConfig {
            per_caller: RateConfig {
                per_second: per_caller,
                burst: per_caller,
            },
            per_hall: RateConfig {
                per_second: per_hall,
                burst: per_hall,
            },
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_caller_over_its_rate_is_refused_with_a_wait_and_others_are_not() {
        let limits = Limits::new(&config(2, 100));
        assert!(limits.check_rate("a", Some("h1")).is_ok());
        assert!(limits.check_rate("a", Some("h1")).is_ok());
        let Err(Refusal::Caller(wait)) = limits.check_rate("a", Some("h1")) else {
            panic!("the third call of a is over its rate")
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.check_rate("b", Some("h1")).is_ok());
    }

    #[test]
    fn a_hall_over_its_rate_refuses_each_of_its_callers() {
        let limits = Limits::new(&config(100, 2));
        assert!(limits.check_rate("a", Some("h1")).is_ok());
        assert!(limits.check_rate("b", Some("h1")).is_ok());
        assert!(matches!(
            limits.check_rate("c", Some("h1")),
            Err(Refusal::Hall(_))
        ));
        assert!(limits.check_rate("c", Some("h2")).is_ok());
        assert!(
            limits.check_rate("d", None).is_ok(),
            "no hall: no hall limit"
        );
    }

    #[test]
    fn calls_beyond_the_bound_are_shed_and_a_finished_call_makes_room() {
        let limits = Limits::new(&LimitsConfig {
            max_in_flight: 2,
            ..LimitsConfig::default()
        });
        let a = limits.enter().unwrap();
        let _b = limits.enter().unwrap();
        assert_eq!(limits.enter().unwrap_err(), Refusal::Overloaded(2));
        drop(a);
        assert!(limits.enter().is_ok());
    }

    #[test]
    fn streams_are_capped_per_caller_and_released_when_dropped() {
        let limits = Limits::new(&LimitsConfig {
            feed_streams_per_caller: 1,
            ..LimitsConfig::default()
        });
        let a = limits.open_stream("a").unwrap();
        assert_eq!(limits.open_stream("a").unwrap_err(), Refusal::Streams(1));
        let _b = limits.open_stream("b").unwrap();
        assert_eq!(limits.feed_streams(), 2);
        drop(a);
        assert!(limits.open_stream("a").is_ok());
    }

    #[test]
    fn applying_new_limits_replaces_the_buckets_and_the_same_keeps_them() {
        let limits = Limits::new(&config(1, 100));
        assert!(limits.check_rate("a", None).is_ok());
        assert!(limits.check_rate("a", None).is_err());
        assert!(!limits.apply(&config(1, 100)), "unchanged: buckets kept");
        assert!(limits.check_rate("a", None).is_err());
        assert!(limits.apply(&config(5, 100)));
        assert!(limits.check_rate("a", None).is_ok());
    }
}
