//! The 12345 hotline system's reply interface (the receiving end of `[hotline] reply_url`): it
//! takes a complaint's reply only when signed with the shared secret (the gateway's platform-push
//! signature, [`yichuang::feed::signature`]) and fresh, answers `503` now and then as a busy
//! hotline does, and keeps each work order's reply once however often it comes. The replies it
//! holds are at `GET /control/replies`, for tests and the demo.
//!
//! Sending work orders to the gateway is the `yichuang hotline progress|complain` command's job
//! (with the `hotline` role's certificate); this module only receives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the simulated hotline is set up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The secret shared with the gateway (`[hotline] secret`).
    pub secret: String,
    /// How far `X-Yichuang-Timestamp` may be from the hotline's clock, in seconds.
    pub max_clock_skew_secs: i64,
    /// Every n-th well-signed request is answered `503` without being taken (0: never).
    pub unavailable_every: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            secret: "hotline-secret".into(),
            max_clock_skew_secs: 300,
            unavailable_every: 3,
        }
    }
}

/// One reply the hotline holds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub order_no: String,
    pub body: Value,
    /// How many times it was delivered (well signed and taken); more than 1 is a repeat.
    pub deliveries: u64,
}

/// The simulated hotline's state.
#[derive(Default)]
pub struct HotlineSim {
    settings: Settings,
    held: Mutex<Vec<Held>>,
    requests: AtomicU64,
    refused: AtomicU64,
}

impl HotlineSim {
    /// The replies held, in the order they first came.
    pub fn replies(&self) -> Vec<Held> {
        self.held.lock().expect("hotline sim lock").clone()
    }

    /// Requests refused for their signature or timestamp.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Serves the hotline on `listener`; the state, for a test in the same process.
pub async fn spawn_on(
    listener: tokio::net::TcpListener,
    settings: Settings,
) -> std::io::Result<(SocketAddr, Arc<HotlineSim>)> {
    let addr = listener.local_addr()?;
    let sim = Arc::new(HotlineSim {
        settings,
        ..Default::default()
    });
    let app = axum::Router::new()
        .route("/reply", axum::routing::post(reply))
        .route("/control/replies", axum::routing::get(replies))
        .with_state(sim.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, sim))
}

async fn replies(State(sim): State<Arc<HotlineSim>>) -> axum::Json<Vec<Held>> {
    axum::Json(sim.replies())
}

async fn reply(
    State(sim): State<Arc<HotlineSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    use yichuang::feed::{EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let Ok(timestamp) = header(TIMESTAMP_HEADER).parse::<i64>() else {
        sim.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "timestamp missing");
    };
    let order_no = header(EVENT_ID_HEADER);
    if (chrono::Utc::now().timestamp() - timestamp).abs() > sim.settings.max_clock_skew_secs {
        sim.refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            "timestamp too far from the hotline's clock",
        );
    }
    if order_no.is_empty()
        || header(SIGNATURE_HEADER) != signature(&sim.settings.secret, timestamp, &order_no, &body)
    {
        sim.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    let n = sim.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let every = sim.settings.unavailable_every;
    if every > 0 && n % every == 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy");
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON");
    };
    if value["orderNo"].as_str() != Some(order_no.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            "orderNo differs from the signed id",
        );
    }
    let mut held = sim.held.lock().expect("hotline sim lock");
    match held.iter_mut().find(|h| h.order_no == order_no) {
        Some(h) => h.deliveries += 1,
        None => held.push(Held {
            order_no,
            body: value,
            deliveries: 1,
        }),
    }
    (StatusCode::OK, "ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, secret: &str, order_no: &str, body: &str) -> u16 {
        let timestamp = chrono::Utc::now().timestamp();
        reqwest::Client::new()
            .post(url)
            .header(yichuang::feed::TIMESTAMP_HEADER, timestamp.to_string())
            .header(yichuang::feed::EVENT_ID_HEADER, order_no)
            .header(
                yichuang::feed::SIGNATURE_HEADER,
                yichuang::feed::signature(secret, timestamp, order_no, body.as_bytes()),
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn takes_signed_replies_once_refuses_bad_ones_and_is_busy_now_and_then() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, sim) = spawn_on(listener, Settings::default()).await.unwrap();
        let url = format!("http://{addr}/reply");
        let body = r#"{"orderNo":"GD-1","reply":"已处理"}"#;
        assert_eq!(post(&url, "wrong", "GD-1", body).await, 401);
        assert_eq!(sim.refused(), 1);
        assert_eq!(
            post(&url, "hotline-secret", "GD-1", body).await,
            503,
            "the first is busy"
        );
        assert_eq!(post(&url, "hotline-secret", "GD-1", body).await, 200);
        assert_eq!(post(&url, "hotline-secret", "GD-1", body).await, 200);
        let held = sim.replies();
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0].deliveries, 2);
        assert_eq!(held[0].body["reply"], "已处理");
        let listed: Vec<Value> = reqwest::get(format!("http://{addr}/control/replies"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed[0]["orderNo"], "GD-1");
    }
}
