//! The platform's HTTP side: the signed interface (`/gdbs/api/record`, `/gdbs/api/query`) with
//! its gate — outage, caller signature, timestamp and nonce, busy share — and the unsigned test
//! controls at `/sim/platform/...`. It only translates: every judgement is
//! [`PlatformSim::submit`]'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::Mac;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PlatformSim, Transport};

impl PlatformSim {
    /// The HTTP interface and the controls.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/gdbs/api/record", post(http_record))
            .route("/gdbs/api/query", post(http_query))
            .route("/sim/platform/records", get(ctl_records))
            .route("/sim/platform/refusals", get(ctl_refusals))
            .route("/sim/platform/outage", post(ctl_outage))
            .route("/sim/platform/busy", post(ctl_busy))
            .route("/sim/platform/refuse", post(ctl_refuse))
            .route("/sim/platform/refuse/clear", post(ctl_clear))
            .route("/sim/platform/drop", post(ctl_drop))
            .with_state(self.clone())
    }

    /// Checks the caller's signature headers; the reason when refused.
    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("签名验证失败：缺少请求头 {name}"))
        };
        let app = header("X-App-Id")?;
        if app != self.settings.app_id {
            return Err(format!("签名验证失败：应用 {app} 未注册"));
        }
        let timestamp = header("X-Timestamp")?;
        let Ok(ms) = timestamp.parse::<i64>() else {
            return Err("签名验证失败：X-Timestamp 应为毫秒时间戳".into());
        };
        let off = (chrono::Utc::now().timestamp_millis() - ms).unsigned_abs();
        if off > self.settings.max_clock_skew_secs * 1000 {
            return Err(format!(
                "签名验证失败：时间戳超出允许范围（±{} 秒）",
                self.settings.max_clock_skew_secs
            ));
        }
        let nonce = header("X-Nonce")?;
        let signature = header("X-Signature")?;
        if signature != sign(&self.settings.app_secret, app, timestamp, nonce, body) {
            return Err("签名验证失败".into());
        }
        let mut store = self.store.lock().unwrap();
        let window = Duration::from_secs(self.settings.nonce_window_secs);
        store.nonces.retain(|_, seen| seen.elapsed() < window);
        if store.nonces.insert(nonce.into(), Instant::now()).is_some() {
            return Err("签名验证失败：X-Nonce 重复，疑似重放请求".into());
        }
        Ok(())
    }

    /// What every platform request passes first: the outage, then the signature, then the
    /// busy share. `None`: go on.
    fn gate(&self, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        if self.outage() {
            self.count("503");
            return Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("content-type", "text/html; charset=utf-8")],
                    OUTAGE_PAGE,
                )
                    .into_response(),
            );
        }
        if let Err(msg) = self.authenticate(headers, body) {
            self.count("401");
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"code": "401", "msg": msg})),
                )
                    .into_response(),
            );
        }
        let share = f64::from_bits(self.busy.load(Ordering::SeqCst));
        if share > 0.0 && random() < share {
            self.count("9999");
            return Some(answer("9999", "系统繁忙，请稍后重试"));
        }
        None
    }
}

const OUTAGE_PAGE: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// `X-Signature`: lowercase hex HMAC-SHA256 with the app secret over
/// `appId + "\n" + timestamp + "\n" + nonce + "\n" + body`.
pub fn sign(secret: &str, app_id: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(format!("{app_id}\n{timestamp}\n{nonce}\n").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The four authentication headers for `body`, timestamped now with a fresh nonce.
pub fn signed_headers(app_id: &str, secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let timestamp = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let signature = sign(secret, app_id, &timestamp, &nonce, body);
    vec![
        ("X-App-Id", app_id.to_string()),
        ("X-Timestamp", timestamp),
        ("X-Nonce", nonce),
        ("X-Signature", signature),
    ]
}

fn random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    bits as f64 / u64::MAX as f64
}

fn answer(code: &str, msg: &str) -> Response {
    axum::Json(json!({"code": code, "msg": msg})).into_response()
}

/// A request body as a JSON object with exactly these keys, or the 1001 message.
fn envelope(body: &[u8], keys: &[&str]) -> Result<serde_json::Map<String, Value>, String> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Err("请求体应为 JSON 对象".into());
    };
    if let Some(k) = obj.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!("请求字段 {k} 不在规范中"));
    }
    if let Some(k) = keys.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("请求字段 {k} 不能为空"));
    }
    Ok(obj)
}

async fn http_record(
    State(p): State<Arc<PlatformSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = p.gate(&headers, &body) {
        return r;
    }
    let obj = match envelope(&body, &["table", "record"]) {
        Ok(obj) => obj,
        Err(msg) => {
            p.count("1001");
            return answer("1001", &msg);
        }
    };
    let table = obj["table"].as_str().unwrap_or_default();
    axum::Json(p.submit(table, &obj["record"], Transport::Http)).into_response()
}

async fn http_query(
    State(p): State<Arc<PlatformSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = p.gate(&headers, &body) {
        return r;
    }
    let list = envelope(&body, &["sblsh"]).and_then(|obj| {
        let list: Option<Vec<String>> = obj["sblsh"].as_array().and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
        });
        match list {
            None => Err("sblsh 应为申办流水号字符串数组".to_string()),
            Some(l) if l.len() > 100 => Err(format!("sblsh 一次最多查询 100 个，本次 {}", l.len())),
            Some(l) => Ok(l),
        }
    });
    let list = match list {
        Ok(l) => l,
        Err(msg) => {
            p.count("1001");
            return answer("1001", &msg);
        }
    };
    let data: Vec<Value> = p
        .query(&list)
        .into_iter()
        .map(|(table, record)| json!({"table": table, "record": record}))
        .collect();
    axum::Json(json!({"code": "0", "msg": "查询成功", "data": data})).into_response()
}

async fn ctl_records(State(p): State<Arc<PlatformSim>>) -> Response {
    axum::Json(p.records()).into_response()
}

async fn ctl_refusals(State(p): State<Arc<PlatformSim>>) -> Response {
    axum::Json(p.refusals()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct On {
    on: bool,
}

async fn ctl_outage(State(p): State<Arc<PlatformSim>>, axum::Json(o): axum::Json<On>) -> Response {
    p.set_outage(o.on);
    axum::Json(json!({"outage": o.on})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Share {
    share: f64,
}

async fn ctl_busy(State(p): State<Arc<PlatformSim>>, axum::Json(s): axum::Json<Share>) -> Response {
    p.set_busy_share(s.share);
    axum::Json(json!({"busy_share": s.share})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    table: String,
    sblsh: String,
    #[serde(default)]
    xh: Option<u32>,
    #[serde(default)]
    msg: Option<String>,
}

fn bad(e: anyhow::Error) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

async fn ctl_refuse(State(p): State<Arc<PlatformSim>>, axum::Json(k): axum::Json<Key>) -> Response {
    let msg = k
        .msg
        .unwrap_or_else(|| format!("{} 数据校验不通过", k.table));
    match p.refuse(&k.table, &k.sblsh, &msg) {
        Ok(()) => axum::Json(json!({"refusing": true})).into_response(),
        Err(e) => bad(e),
    }
}

async fn ctl_clear(State(p): State<Arc<PlatformSim>>, axum::Json(k): axum::Json<Key>) -> Response {
    match p.clear_refusal(&k.table, &k.sblsh) {
        Ok(was) => axum::Json(json!({"cleared": was})).into_response(),
        Err(e) => bad(e),
    }
}

async fn ctl_drop(State(p): State<Arc<PlatformSim>>, axum::Json(k): axum::Json<Key>) -> Response {
    let Some(xh) = k.xh else {
        return bad(anyhow::anyhow!("xh is required"));
    };
    match p.drop_record(&k.table, &k.sblsh, xh).await {
        Ok(dropped) => axum::Json(json!({"dropped": dropped})).into_response(),
        Err(e) => bad(e),
    }
}
