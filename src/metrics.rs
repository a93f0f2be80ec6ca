//! The Prometheus endpoint (`/metrics`, OpenMetrics text, HTTP/1.1 on `[metrics] listen`) and
//! the process's own meters. Two sources: figures read from the store at each scrape, so every
//! replica reports the same totals and they survive restarts (the SLA alerts, on-time figures,
//! backlogs, the one-window share of the acceptance list); and counters and histograms this
//! process keeps ([`meters`]: calls per RPC, submissions, tasks dispatched, results received),
//! which a query sums over replicas. Queue depths are asked of RabbitMQ at the scrape.
//! docs/observability.md lists every series.

use std::fmt::Write;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::bus::Topology;
use crate::catalog::Catalog;
use crate::clock::Clocks;
use crate::config::BusConfig;
use crate::event::EventKind;
use crate::store::{Store, StoreError};

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An RPC and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub method: String,
    /// gRPC status name, e.g. `OK`, `INVALID_ARGUMENT`.
    pub code: String,
}

/// An RPC.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

/// One label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Why a call was refused by the limits (`crate::limits::Refusal::reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A deficiency code (`DEFICIENCY_CODE_…` without the prefix, lower case).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// An item of the acceptance list at its department.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    pub department: String,
    pub item: String,
}

/// A refused call: its method (`Service/Method`, `other` for a path not served) and why
/// (`unauthenticated`, `denied`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub method: String,
    pub reason: String,
}

/// A background worker of the gateway.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

/// A department.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepartmentLabels {
    pub department: String,
}

/// A result from a department, by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub department: String,
    pub kind: String,
}

/// Histogram buckets for call latencies: 0.5 ms to ~16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gateway process's counters and histograms.
pub struct Meters {
    registry: Registry,
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: Family<MethodLabels, Histogram>,
    pub submissions: Family<OutcomeLabels, Counter>,
    pub deficiencies: Family<CodeLabels, Counter>,
    pub items_accepted: Family<ItemLabels, Counter>,
    pub tasks_dispatched: Family<ItemLabels, Counter>,
    pub results_received: Family<ResultLabels, Counter>,
    pub tasks_repaired: Family<DepartmentLabels, Counter>,
    pub worker_restarts: Family<WorkerLabels, Counter>,
    pub calls_refused: Family<ReasonLabels, Counter>,
    pub feed_streams: Gauge,
    pub feed_buffered_events: Gauge,
    pub auth_refusals: Family<RefusalLabels, Counter>,
}

/// The process's meters (one registry per process, as Prometheus clients keep).
pub fn meters() -> &'static Meters {
    static METERS: LazyLock<Meters> = LazyLock::new(|| {
        let mut registry = Registry::with_prefix("yichuang");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration =
            Family::<MethodLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let submissions = Family::<OutcomeLabels, Counter>::default();
        let deficiencies = Family::<CodeLabels, Counter>::default();
        let items_accepted = Family::<ItemLabels, Counter>::default();
        let tasks_dispatched = Family::<ItemLabels, Counter>::default();
        let results_received = Family::<ResultLabels, Counter>::default();
        let tasks_repaired = Family::<DepartmentLabels, Counter>::default();
        let worker_restarts = Family::<WorkerLabels, Counter>::default();
        let calls_refused = Family::<ReasonLabels, Counter>::default();
        let feed_streams = Gauge::default();
        let feed_buffered_events = Gauge::default();
        registry.register(
            "calls_refused",
            "Calls refused by the limits ([limits]), by reason: caller_rate, hall_rate, global_rate (RESOURCE_EXHAUSTED with a retry hint), overloaded (shed with UNAVAILABLE), feed_streams.",
            calls_refused.clone(),
        );
        registry.register(
            "feed_streams",
            "Feed streams (WindowFeed, WatchCase) open.",
            feed_streams.clone(),
        );
        registry.register(
            "feed_buffered_events",
            "Feed events read from the store and not yet taken by the transport, over every open stream (bounded per stream).",
            feed_buffered_events.clone(),
        );
        let auth_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "auth_refusals",
            "Calls refused by the policy layer or a hall scope check (each has an audit record), by method and reason (unauthenticated, denied).",
            auth_refusals.clone(),
        );
        registry.register(
            "worker_restarts",
            "Gateway workers (relay, results, sweeper, push, stall detector, calendar watch) started again after they stopped.",
            worker_restarts.clone(),
        );
        registry.register(
            "tasks_repaired",
            "Stalled tasks published again: nothing was heard of them for longer than their department allows ([stall]).",
            tasks_repaired.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC calls handled, by service, method and status code.",
            rpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call.",
            rpc_duration.clone(),
        );
        registry.register(
            "submissions",
            "Submit calls answered, by outcome: accepted, deficient (the applicant was told every deficiency), replayed (a repeat got its first answer).",
            submissions.clone(),
        );
        registry.register(
            "deficiencies",
            "Deficiencies told to applicants, by deficiency code.",
            deficiencies.clone(),
        );
        registry.register(
            "items_accepted",
            "Items accepted at the comprehensive window, by department and item (one per task created).",
            items_accepted.clone(),
        );
        registry.register(
            "tasks_dispatched",
            "Tasks confirmed on their department's queue by the broker (a supplement round counts again).",
            tasks_dispatched.clone(),
        );
        registry.register(
            "results_received",
            "Results from departments' adapters recorded or found to change nothing, by kind.",
            results_received.clone(),
        );
        Meters {
            registry,
            rpc_requests,
            rpc_duration,
            submissions,
            deficiencies,
            items_accepted,
            tasks_dispatched,
            results_received,
            tasks_repaired,
            worker_restarts,
            calls_refused,
            feed_streams,
            feed_buffered_events,
            auth_refusals,
        }
    });
    &METERS
}

/// A registry's exposition without its closing `# EOF`, for more families to follow.
pub fn encode_open(registry: &Registry) -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    out
}

/// An OpenMetrics response.
pub fn exposition(text: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// How long a rendered exposition is served again: a scrape reads the store and asks RabbitMQ
/// about every queue, so scrapes faster than this (several Prometheus servers, a client
/// hammering the internal port) cost the gateway one render per period, not one each.
pub const SCRAPE_CACHE: Duration = Duration::from_secs(5);

struct Source {
    store: Store,
    clocks: Clocks,
    catalog: Arc<Catalog>,
    bus: Option<(BusConfig, Topology)>,
    /// The last exposition and when it was rendered; held while rendering, so scrapes arriving
    /// meanwhile wait for it instead of rendering too.
    cache: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// The `/metrics` route, and `/readyz` (200 while the store answers, 503 when it does not: the
/// readiness of health's `yichuang.v1.CaseService`, for probes that cannot speak TLS). With
/// `bus`, the depth of every queue of the topology is asked of RabbitMQ at each scrape.
pub fn router(
    store: Store,
    clocks: Clocks,
    catalog: Arc<Catalog>,
    bus: Option<(BusConfig, Topology)>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> Router {
    let readyz = move || {
        let ready = ready.clone();
        async move {
            if ready.load(std::sync::atomic::Ordering::Relaxed) {
                (StatusCode::OK, "serving\n")
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not serving: the store does not answer\n",
                )
            }
        }
    };
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(Arc::new(Source {
            store,
            clocks,
            catalog,
            bus,
            cache: Default::default(),
        }))
}

async fn scrape(State(s): State<Arc<Source>>) -> Response {
    let mut cache = s.cache.lock().await;
    if let Some((at, text)) = cache.as_ref()
        && at.elapsed() < SCRAPE_CACHE
    {
        return exposition(text.clone());
    }
    let mut text = encode_open(&meters().registry);
    match render(&s.store, &s.clocks).await {
        Ok(more) => text.push_str(&more),
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response();
        }
    }
    text.push_str(&window_share(&s.catalog));
    if let Some((config, topology)) = &s.bus {
        text.push_str(&queue_depths(config, topology).await);
    }
    text.push_str("# EOF\n");
    *cache = Some((std::time::Instant::now(), text.clone()));
    exposition(text)
}

/// A metric read from the on-time rows: name, type, help, value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::store::OnTimeRow) -> f64,
);

/// Label value escaped as the exposition format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text.
pub async fn render(store: &Store, clocks: &Clocks) -> Result<String, StoreError> {
    let mut out = String::new();
    let counts = store.sla_counts().await?;
    for (name, kind, help) in [
        (
            "yichuang_sla_warnings_total",
            EventKind::TaskSlaWarning,
            "Yellow warnings raised: a share of a task's promised time passed.",
        ),
        (
            "yichuang_sla_overdue_total",
            EventKind::TaskOverdue,
            "Red alerts raised: a task's promised deadline passed undecided.",
        ),
        (
            "yichuang_decisions_late_to_window_total",
            EventKind::TaskDecisionLateToWindow,
            "Decisions that reached the accepting window later than 1 working day.",
        ),
    ] {
        let family = name.trim_end_matches("_total");
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
        for (department, item, _, n) in counts.iter().filter(|c| c.2 == kind.as_str()) {
            let _ = writeln!(
                out,
                "{name}{{department=\"{}\",item=\"{}\"}} {n}",
                label(department),
                label(item)
            );
        }
    }
    let rows = store.on_time("", "", clocks.now()).await?;
    let series: [Series; 4] = [
        (
            "yichuang_tasks_decided_total",
            "counter",
            "Tasks decided by their department.",
            |r| r.decided as f64,
        ),
        (
            "yichuang_tasks_decided_on_time_total",
            "counter",
            "Tasks decided by their promised deadline (extended by pauses).",
            |r| r.on_time as f64,
        ),
        (
            "yichuang_on_time_ratio",
            "gauge",
            "Share of decided tasks decided on time (按时办结率).",
            |r| {
                if r.decided > 0 {
                    r.on_time as f64 / r.decided as f64
                } else {
                    0.0
                }
            },
        ),
        (
            "yichuang_tasks_open_overdue",
            "gauge",
            "Tasks undecided and past their promised deadline.",
            |r| r.open_overdue as f64,
        ),
    ];
    for (name, kind, help, value) in series {
        let family = name.trim_end_matches("_total");
        let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
        for r in &rows {
            let _ = writeln!(
                out,
                "{name}{{department=\"{}\",item=\"{}\"}} {}",
                label(&r.department),
                label(&r.item_code),
                value(r)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP yichuang_outbox_backlog Tasks accepted but not yet confirmed by the broker.\n# TYPE yichuang_outbox_backlog gauge\nyichuang_outbox_backlog {}",
        store.outbox_backlog().await?
    );
    let calendar = clocks.calendar();
    let _ = writeln!(
        out,
        "# HELP yichuang_calendar_next_year_missing 1 when next year's working-day calendar is not loaded and [calendar] warn_from has passed: deadlines reaching next year are being made provisional.\n# TYPE yichuang_calendar_next_year_missing gauge\nyichuang_calendar_next_year_missing {}",
        u8::from(calendar.next_year_missing(clocks.now(), clocks.zone()))
    );
    let _ = writeln!(
        out,
        "# HELP yichuang_calendar_last_year The last year whose working-day calendar is loaded.\n# TYPE yichuang_calendar_last_year gauge\nyichuang_calendar_last_year {}",
        calendar.current().years().last().unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "# HELP yichuang_deadlines_provisional Undecided tasks whose deadlines were counted on a year without a loaded calendar.\n# TYPE yichuang_deadlines_provisional gauge\nyichuang_deadlines_provisional {}",
        store.provisional_open().await?
    );
    let _ = writeln!(
        out,
        "# HELP yichuang_events_backlog Case history entries not yet confirmed on the events exchange.\n# TYPE yichuang_events_backlog gauge\nyichuang_events_backlog {}",
        store.events_backlog().await?
    );
    Ok(out)
}

/// The reform's measure: the share of the hall's items accepted through the comprehensive
/// window (一窗受理事项比例, 70% by 2019 and 80% by 2020 in the reform). Items of the acceptance
/// list over the hall's items per department (`hall_items` in the catalog); departments
/// without `hall_items` are left out of the share.
pub fn window_share(catalog: &Catalog) -> String {
    let mut listed = std::collections::BTreeMap::<&str, u64>::new();
    for item in catalog.items.values() {
        *listed
            .entry(item.department.get_ref().as_str())
            .or_default() += 1;
    }
    let mut out = String::from(
        "# HELP yichuang_catalog_items Items of the acceptance list (受理清单), by department.\n# TYPE yichuang_catalog_items gauge\n",
    );
    for (department, n) in &listed {
        let _ = writeln!(
            out,
            "yichuang_catalog_items{{department=\"{}\"}} {n}",
            label(department)
        );
    }
    out.push_str("# HELP yichuang_one_window_item_share Share of the hall's items accepted through the comprehensive window (一窗受理事项比例), by department and for the hall (department=\"\").\n# TYPE yichuang_one_window_item_share gauge\n");
    let (mut all_listed, mut all_hall) = (0u64, 0u64);
    for (code, department) in &catalog.departments {
        let Some(hall) = department.hall_items.filter(|&n| n > 0) else {
            continue;
        };
        let n = listed.get(code.as_str()).copied().unwrap_or(0);
        all_listed += n;
        all_hall += u64::from(hall);
        let _ = writeln!(
            out,
            "yichuang_one_window_item_share{{department=\"{}\"}} {}",
            label(code),
            n as f64 / f64::from(hall)
        );
    }
    if all_hall > 0 {
        let _ = writeln!(
            out,
            "yichuang_one_window_item_share{{department=\"\"}} {}",
            all_listed as f64 / all_hall as f64
        );
    }
    out
}

/// Messages and consumers of every queue of the topology, asked of RabbitMQ (a passive
/// declare each); a queue that cannot be asked is left out and counted in
/// `yichuang_queue_scrape_errors`.
pub async fn queue_depths(config: &BusConfig, topology: &Topology) -> String {
    let mut out = String::new();
    let mut errors = 0u64;
    let timeout = Duration::from_secs(config.timeout_secs.clamp(1, 5));
    let mut rows = Vec::new();
    match crate::bus::connect(config).await {
        Ok(connection) => {
            let mut channel = None;
            for queue in &topology.queues {
                if channel.is_none() {
                    channel = tokio::time::timeout(timeout, connection.create_channel())
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                let Some(ch) = &channel else {
                    errors += 1;
                    continue;
                };
                let options = lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let asked = tokio::time::timeout(
                    timeout,
                    ch.queue_declare(
                        queue.name.as_str().into(),
                        options,
                        lapin::types::FieldTable::default(),
                    ),
                )
                .await;
                match asked {
                    Ok(Ok(q)) => {
                        rows.push((queue.name.clone(), q.message_count(), q.consumer_count()))
                    }
                    _ => {
                        errors += 1;
                        channel = None; // a failed passive declare closes the channel
                    }
                }
            }
            let _ = tokio::time::timeout(timeout, connection.close(0, "scraped".into())).await;
        }
        Err(_) => errors += 1,
    }
    out.push_str("# HELP yichuang_queue_messages Messages ready on a queue of the bus (dead-letter queues: <prefix>.dead.*).\n# TYPE yichuang_queue_messages gauge\n");
    for (name, messages, _) in &rows {
        let _ = writeln!(
            out,
            "yichuang_queue_messages{{queue=\"{}\"}} {messages}",
            label(name)
        );
    }
    out.push_str("# HELP yichuang_queue_consumers Consumers of a queue of the bus.\n# TYPE yichuang_queue_consumers gauge\n");
    for (name, _, consumers) in &rows {
        let _ = writeln!(
            out,
            "yichuang_queue_consumers{{queue=\"{}\"}} {consumers}",
            label(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP yichuang_queue_scrape_errors Queues RabbitMQ could not be asked about at this scrape.\n# TYPE yichuang_queue_scrape_errors gauge\nyichuang_queue_scrape_errors {errors}"
    );
    out
}
