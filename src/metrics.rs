//! The Prometheus endpoint (`/metrics`, text exposition format, HTTP/1.1 on `[metrics] listen`).
//! The figures are read from the store at each scrape, so every replica reports the same
//! totals and they survive restarts: the SLA alerts from the case history, the on-time figures
//! from the tasks' clocks, the outbox backlogs from their tables.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::clock::Clocks;
use crate::store::{Store, StoreError};

struct Source {
    store: Store,
    clocks: Clocks,
}

/// The `/metrics` route.
pub fn router(store: Store, clocks: Clocks) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(Source { store, clocks }))
}

async fn scrape(State(s): State<Arc<Source>>) -> Response {
    match render(&s.store, &s.clocks).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
    }
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
            "task-sla-warning",
            "Yellow warnings raised: a share of a task's promised time passed.",
        ),
        (
            "yichuang_sla_overdue_total",
            "task-overdue",
            "Red alerts raised: a task's promised deadline passed undecided.",
        ),
        (
            "yichuang_decisions_late_to_window_total",
            "task-decision-late-to-window",
            "Decisions that reached the accepting window later than 1 working day.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (department, item, _, n) in counts.iter().filter(|c| c.2 == kind) {
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
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
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
    let _ = writeln!(
        out,
        "# HELP yichuang_events_backlog Case history entries not yet confirmed on the events exchange.\n# TYPE yichuang_events_backlog gauge\nyichuang_events_backlog {}",
        store.events_backlog().await?
    );
    Ok(out)
}
