//! The adapter's HTTP endpoint: `GET /healthz` (the process runs), `GET /readyz` (connected to
//! RabbitMQ and consuming), `GET /status` (JSON: readiness and each department's circuit
//! breaker), `GET /metrics` (OpenMetrics text, [`crate::meters`]), and
//! `POST /callback/{department}` for legacy systems that call back
//! with their decision.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::runtime::{Callbacks, Department, Readiness};

#[derive(Clone)]
struct App {
    departments: Arc<Vec<Arc<Department>>>,
    readiness: Arc<Readiness>,
    callbacks: Arc<Callbacks>,
}

/// The router of the endpoint.
pub fn router(
    departments: Vec<Arc<Department>>,
    readiness: Arc<Readiness>,
    callbacks: Arc<Callbacks>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .route(
            "/metrics",
            get(|| async { yichuang::metrics::exposition(crate::meters::render()) }),
        )
        .route("/callback/{department}", post(callback))
        .with_state(App {
            departments: Arc::new(departments),
            readiness,
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
        .map(|d| serde_json::json!({ "department": d.code(), "breaker": d.breaker.report() }))
        .collect();
    axum::Json(serde_json::json!({
        "ready": app.readiness.get(),
        "departments": departments,
    }))
}

async fn callback(
    State(app): State<App>,
    Path(code): Path<String>,
    body: Bytes,
) -> (StatusCode, String) {
    let Some(department) = app.departments.iter().find(|d| d.code() == code) else {
        return (
            StatusCode::NOT_FOUND,
            format!("this adapter does not serve department {code:?}"),
        );
    };
    let Some((task_id, answer)) = department.system.callback(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "not a callback this department's kind understands".into(),
        );
    };
    match app.callbacks.publish(department, &task_id, &answer).await {
        Ok(()) => (StatusCode::OK, "received".into()),
        // The legacy system calls again, or polling finds the decision.
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
