//! The adapter's HTTP endpoints, on two listeners. [`router`] (internal: probes and Prometheus):
//! `GET /healthz` (the process runs), `GET /readyz` (connected to RabbitMQ and consuming),
//! `GET /status` (JSON: readiness, each department's circuit breaker and its call counts), `GET /metrics`
//! (OpenMetrics text, [`crate::meters`]). [`callbacks_router`] (reached from the departments'
//! networks): `POST /callback/{department}`, signed callbacks from legacy systems
//! ([`crate::runtime::verify`]); a refusal is a 401 and an audit record (`tracing` target
//! `audit`), counted in `yichuang_adapter_callbacks_total`. Serve it with
//! `into_make_service_with_connect_info::<SocketAddr>()`: the audit record names the peer.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{get, post};
use tracing::{info, warn};

use crate::runtime::{
    Callbacks, Department, Handled, NONCE, Readiness, Refusal, SIGNATURE, Signed, TIMESTAMP, verify,
};

#[derive(Clone)]
struct App {
    departments: Arc<Vec<Arc<Department>>>,
    readiness: Arc<Readiness>,
}

/// The router of the internal endpoint: health, readiness, status, metrics.
pub fn router(departments: Vec<Arc<Department>>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .route(
            "/metrics",
            get(|| async { yichuang::metrics::exposition(crate::meters::render()) }),
        )
        .with_state(App {
            departments: Arc::new(departments),
            readiness,
        })
}

#[derive(Clone)]
struct CallbackApp {
    departments: Arc<Vec<Arc<Department>>>,
    callbacks: Arc<Callbacks>,
}

/// The router of the callbacks listener.
pub fn callbacks_router(departments: Vec<Arc<Department>>, callbacks: Arc<Callbacks>) -> Router {
    Router::new()
        .route("/callback/{department}", post(callback))
        .with_state(CallbackApp {
            departments: Arc::new(departments),
            callbacks,
        })
}

async fn ready(State(app): State<App>) -> (StatusCode, &'static str) {
    if app.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to RabbitMQ")
    }
}

async fn status(State(app): State<App>) -> axum::Json<serde_json::Value> {
    let departments: Vec<serde_json::Value> = app
        .departments
        .iter()
        .map(|d| {
            serde_json::json!({
                "department": d.code(),
                "breaker": d.breaker.report(),
                "counts": crate::meters::department_counts(d.code()),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "ready": app.readiness.get(),
        "departments": departments,
    }))
}

fn count(department: &str, outcome: &str) {
    crate::meters::meters()
        .callbacks
        .get_or_create(&crate::meters::CallbackLabels {
            department: department.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

async fn callback(
    State(app): State<CallbackApp>,
    Path(code): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let Some(department) = app.departments.iter().find(|d| d.code() == code) else {
        count("unknown", "unknown_department");
        return (
            StatusCode::NOT_FOUND,
            "this adapter serves no such department".into(),
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = Signed {
        timestamp: header(TIMESTAMP),
        nonce: header(NONCE),
        signature: header(SIGNATURE),
        method: method.as_str(),
        path: uri.path(),
        body: &body,
    };
    if let Err(refusal) = verify(department, &signed, chrono::Utc::now().timestamp()) {
        // An audit record: which department, why, from where; never the body (it may name an
        // applicant).
        warn!(
            target: "audit",
            event = "callback_refused",
            department = %department.code(),
            reason = refusal.code(),
            peer = %peer,
            "callback refused"
        );
        count(department.code(), refusal.code());
        let status = if refusal == Refusal::Busy {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::UNAUTHORIZED
        };
        return (status, refusal.message().into());
    }
    let Some((task_id, answer)) = department.system.callback(&body) else {
        count(department.code(), "unreadable");
        return (
            StatusCode::BAD_REQUEST,
            "not a callback this department's kind understands".into(),
        );
    };
    match app.callbacks.handle(department, &task_id, &answer).await {
        Ok(handled) => {
            let (outcome, said) = match handled {
                Handled::Published => ("published", "received".to_string()),
                Handled::Polled(found) => ("polled", format!("received; {found}")),
                Handled::NotPolledHere => (
                    "not_polled_here",
                    "received; the task is not polled here, its scheduled poll covers it".into(),
                ),
            };
            info!(department = %department.code(), task = %task_id, outcome, peer = %peer, "callback received");
            count(department.code(), outcome);
            (StatusCode::OK, said)
        }
        // The legacy system calls again, or polling finds the decision.
        Err(e) => {
            count(department.code(), "failed");
            (StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}
