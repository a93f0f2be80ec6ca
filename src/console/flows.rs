//! The flows: per department, what the last half hour looked like and what waits now. One
//! snapshot is taken at most every `[console] refresh_secs`, and only while someone looks
//! (every open page shares it): from the store (dispatches and answers per minute, on-time
//! share, yellow and red), from RabbitMQ (each department's queue, its retry queues, its dead
//! queue, its consumers) and from what the adapters' `/status` said (readiness, circuit breaker,
//! failed calls), which [`Flows::watch_adapters`] asks all along, since an adapter keeps counts,
//! not history. A source that does not answer is shown as such; the others are still shown.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::sync::Mutex;

use crate::bus::Names;
use crate::event::EventKind;
use crate::gateway::Gateway;

/// Minutes the sparklines cover.
pub const MINUTES: usize = 30;
/// Minutes the counts beside them cover.
pub const RECENT: usize = 10;

/// One department in a snapshot.
#[derive(Debug, Clone, Default)]
pub struct DepartmentFlow {
    pub code: String,
    pub name: String,
    /// Per minute, oldest first, [`MINUTES`] of them (the last one is the current minute).
    pub dispatched: Vec<i64>,
    pub decided: Vec<i64>,
    /// Refused by the department's system, plus the adapter's failed calls.
    pub failed: Vec<i64>,
    /// Messages waiting in the department's queue; `None` when the broker did not answer.
    pub backlog: Option<u32>,
    /// Consumers of that queue (the adapters serving it).
    pub consumers: Option<u32>,
    /// Tasks waiting in the retry queues for their next attempt or poll.
    pub retrying: Option<u32>,
    /// Messages in the dead queue.
    pub dead: Option<u32>,
    /// From the adapters' status: ready, and the circuit breaker's state.
    pub adapter: Option<AdapterView>,
    /// Decided tasks and those decided on time (all time), for the on-time share.
    pub decided_total: i64,
    pub on_time_total: i64,
    /// Undecided tasks warned about (yellow) and past their deadline (red) now.
    pub yellow: i64,
    pub red: i64,
    pub provisional: i64,
}

impl DepartmentFlow {
    fn recent(v: &[i64]) -> i64 {
        v.iter().rev().take(RECENT).sum()
    }
    pub fn dispatched_recent(&self) -> i64 {
        Self::recent(&self.dispatched)
    }
    pub fn decided_recent(&self) -> i64 {
        Self::recent(&self.decided)
    }
    pub fn failed_recent(&self) -> i64 {
        Self::recent(&self.failed)
    }
    /// The share decided on time, when anything was decided.
    pub fn on_time_share(&self) -> Option<f64> {
        (self.decided_total > 0).then(|| self.on_time_total as f64 / self.decided_total as f64)
    }
}

/// What an adapter says of one department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterView {
    pub ready: bool,
    /// `closed`, `open`, `half-open`.
    pub breaker: String,
}

/// Every department at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: DateTime<Utc>,
    pub departments: Vec<DepartmentFlow>,
    /// Sources that did not answer, in words for the page.
    pub problems: Vec<String>,
}

/// What the adapters said at the last look: failed calls per (status URL, department), the
/// failures seen between looks per department and minute, each department's readiness and
/// breaker, and the adapters that did not answer.
#[derive(Default)]
struct Counters {
    last: HashMap<(String, String), u64>,
    failures: BTreeMap<(String, i64), i64>,
    /// Per (status URL, department): what that adapter said of the department.
    views: BTreeMap<(String, String), AdapterView>,
    unreachable: BTreeMap<String, String>,
}

/// A queue's messages and consumers; `None` when it is not there (which closes the channel:
/// another is opened for the next question).
async fn count(
    connection: &lapin::Connection,
    channel: &mut lapin::Channel,
    queue: String,
) -> Option<(u32, u32)> {
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(q) => Some((q.message_count(), q.consumer_count())),
        Err(_) => {
            if let Ok(c) = connection.create_channel().await {
                *channel = c;
            }
            None
        }
    }
}

/// The shared, rate-limited snapshot.
pub struct Flows {
    latest: Mutex<Option<(Instant, Arc<Snapshot>)>>,
    counters: std::sync::Mutex<Counters>,
    http: reqwest::Client,
}

impl Default for Flows {
    fn default() -> Self {
        Flows {
            latest: Mutex::new(None),
            counters: std::sync::Mutex::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("a plain HTTP client builds"),
        }
    }
}

impl Flows {
    /// The latest snapshot, taken again when older than `[console] refresh_secs`.
    pub async fn snapshot(&self, gateway: &Gateway) -> Arc<Snapshot> {
        let mut latest = self.latest.lock().await;
        let fresh = Duration::from_secs(gateway.console.refresh_secs);
        if let Some((at, s)) = latest.as_ref()
            && at.elapsed() < fresh
        {
            return s.clone();
        }
        let s = Arc::new(self.take(gateway).await);
        *latest = Some((Instant::now(), s.clone()));
        s
    }

    async fn take(&self, gateway: &Gateway) -> Snapshot {
        let now = gateway.clocks.now();
        let now_ms = now.timestamp_millis();
        let this_minute = now_ms / 60_000 * 60_000;
        let first_minute = this_minute - (MINUTES as i64 - 1) * 60_000;
        let mut problems = Vec::new();
        let mut departments: BTreeMap<String, DepartmentFlow> = gateway
            .intake
            .catalog()
            .departments
            .iter()
            .map(|(code, d)| {
                (
                    code.clone(),
                    DepartmentFlow {
                        code: code.clone(),
                        name: d.name.clone(),
                        dispatched: vec![0; MINUTES],
                        decided: vec![0; MINUTES],
                        failed: vec![0; MINUTES],
                        ..Default::default()
                    },
                )
            })
            .collect();
        let slot = |minute_ms: i64| {
            let i = (minute_ms - first_minute) / 60_000;
            (0..MINUTES as i64).contains(&i).then_some(i as usize)
        };
        let store = &gateway.store;
        let clock = Instant::now();
        let (counts, on_time, board) = tokio::join!(
            store.flow_counts(first_minute),
            store.on_time("", "", now),
            store.deadline_counts(now_ms),
        );
        match counts {
            Ok(rows) => {
                for r in rows {
                    let (Some(d), Some(i)) =
                        (departments.get_mut(&r.department), slot(r.minute_ms))
                    else {
                        continue;
                    };
                    let series = match r.kind.parse::<EventKind>() {
                        Ok(EventKind::TaskDispatched) => &mut d.dispatched,
                        Ok(EventKind::TaskRefused) => &mut d.failed,
                        _ => &mut d.decided,
                    };
                    series[i] += r.count;
                }
            }
            Err(e) => problems.push(format!("store: {e}")),
        }
        if let Ok(rows) = on_time {
            for r in rows {
                if let Some(d) = departments.get_mut(&r.department) {
                    d.decided_total += r.decided;
                    d.on_time_total += r.on_time;
                }
            }
        }
        if let Ok(rows) = board {
            for r in rows {
                if let Some(d) = departments.get_mut(&r.department) {
                    d.red += r.red;
                    d.yellow += r.yellow;
                    d.provisional += r.provisional;
                }
            }
        }
        let store_ms = clock.elapsed().as_millis();
        // A broker that stalls holds every page that waits for this snapshot: bounded.
        match tokio::time::timeout(
            Duration::from_secs(5),
            self.queues(gateway, &mut departments),
        )
        .await
        {
            Ok(Err(e)) => problems.push(format!("RabbitMQ: {e}")),
            Err(_) => problems.push("RabbitMQ: no answer within 5 s".to_string()),
            Ok(Ok(())) => {}
        }
        let broker_ms = clock.elapsed().as_millis() - store_ms;
        tracing::debug!(
            store_ms,
            broker_ms,
            total_ms = clock.elapsed().as_millis(),
            "console flows sampled"
        );
        let counters = self.counters.lock().expect("counters lock");
        for ((department, minute), n) in &counters.failures {
            if let (Some(d), Some(i)) = (departments.get_mut(department), slot(*minute)) {
                d.failed[i] += n;
            }
        }
        // Several adapters may serve one department: ready when any is, and the worst breaker.
        for ((_, department), view) in &counters.views {
            if let Some(d) = departments.get_mut(department) {
                let rank = |b: &str| match b {
                    "open" => 2,
                    "half-open" => 1,
                    _ => 0,
                };
                d.adapter = Some(match d.adapter.take() {
                    None => view.clone(),
                    Some(seen) => AdapterView {
                        ready: seen.ready || view.ready,
                        breaker: if rank(&view.breaker) > rank(&seen.breaker) {
                            view.breaker.clone()
                        } else {
                            seen.breaker
                        },
                    },
                });
            }
        }
        problems.extend(counters.unreachable.values().cloned());
        Snapshot {
            at: now,
            departments: departments.into_values().collect(),
            problems,
        }
    }

    /// Each department's queue, retry queues and dead queue, by passive declaration.
    async fn queues(
        &self,
        gateway: &Gateway,
        departments: &mut BTreeMap<String, DepartmentFlow>,
    ) -> Result<(), String> {
        let bus = &gateway.bus;
        let connection = tokio::time::timeout(Duration::from_secs(3), crate::bus::connect(bus))
            .await
            .map_err(|_| "no answer within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        let names = Names::new(&bus.prefix);
        let mut channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        for d in departments.values_mut() {
            if let Some((messages, consumers)) =
                count(&connection, &mut channel, names.task_queue(&d.code)).await
            {
                d.backlog = Some(messages);
                d.consumers = Some(consumers);
            }
            d.dead = count(&connection, &mut channel, names.dead_queue(&d.code))
                .await
                .map(|(m, _)| m);
            let mut retrying = None;
            for delay in &bus.retry_delays_secs {
                if let Some((m, _)) = count(
                    &connection,
                    &mut channel,
                    names.retry_queue(&d.code, *delay),
                )
                .await
                {
                    *retrying.get_or_insert(0) += m;
                }
            }
            d.retrying = retrying;
        }
        let _ = connection.close(200, "console".into()).await;
        Ok(())
    }

    /// Asks each configured adapter for its status every `[console] refresh_secs` until the
    /// gateway stops: unlike the store and the broker, which keep their own history, an
    /// adapter's failed calls are counts since it started, so they are looked at all along and
    /// turned into failures per minute here.
    pub async fn watch_adapters(self: std::sync::Arc<Self>, gateway: std::sync::Arc<Gateway>) {
        let every = Duration::from_secs(gateway.console.refresh_secs);
        while !gateway.shutdown.is_stopped() {
            self.look_at_adapters(&gateway).await;
            tokio::time::sleep(every).await;
        }
    }

    /// One look at every adapter: readiness, breakers, and failed calls since the last look,
    /// counted in this minute.
    async fn look_at_adapters(&self, gateway: &Gateway) {
        let minute = gateway.clocks.now().timestamp_millis() / 60_000 * 60_000;
        for url in &gateway.console.adapters {
            let status: Result<serde_json::Value, String> = async {
                let r = self.http.get(url).send().await.map_err(|e| e.to_string())?;
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                serde_json::from_slice(&body).map_err(|e| e.to_string())
            }
            .await;
            let mut counters = self.counters.lock().expect("counters lock");
            let status = match status {
                Ok(s) => {
                    counters.unreachable.remove(url);
                    s
                }
                Err(e) => {
                    counters
                        .unreachable
                        .insert(url.clone(), format!("adapter {url}: {e}"));
                    // What it said before is no longer known.
                    counters.views.retain(|(u, _), _| u != url);
                    continue;
                }
            };
            let ready = status["ready"].as_bool().unwrap_or(false);
            for entry in status["departments"].as_array().into_iter().flatten() {
                let code = entry["department"].as_str().unwrap_or_default().to_string();
                let calls = &entry["counts"]["calls"];
                let failed = calls["transient"].as_u64().unwrap_or(0)
                    + calls["permanent"].as_u64().unwrap_or(0);
                let key = (url.clone(), code.clone());
                if let Some(before) = counters.last.insert(key, failed) {
                    // A restarted adapter counts from zero again.
                    let new = if failed >= before {
                        failed - before
                    } else {
                        failed
                    };
                    if new > 0 {
                        *counters.failures.entry((code.clone(), minute)).or_default() += new as i64;
                    }
                }
                counters.views.insert(
                    (url.clone(), code),
                    AdapterView {
                        ready,
                        breaker: entry["breaker"]["state"]
                            .as_str()
                            .unwrap_or("-")
                            .to_string(),
                    },
                );
            }
            let oldest = minute - MINUTES as i64 * 60_000;
            counters.failures.retain(|(_, m), _| *m >= oldest);
        }
    }
}
