//! A department system with an HTTP/JSON API and an access token that expires (市场监管-like).
//! Awkward as the real ones: errors come as HTTP 200 with an error code in the body (`E401`
//! stale token, `E409` duplicate serial number, `E400` missing field), overload as 429 with
//! `Retry-After`, failures as 502 with an HTML page, maintenance as 503 `系统维护中`, and dates
//! as `2019年06月20日`. Decisions are pushed to a callback URL, when one is set, unless the
//! callback is dropped; signed (HMAC-SHA256 over timestamp, nonce, method, path and body, the
//! adapter's `callbacks.secret`) when `callback_secret` is set.
//!
//! API: `POST /oauth/token` `{client_id, client_secret}` → `{access_token, expires_in}`;
//! `POST /api/v1/cases` (fields, `ywlsh` = our task id); `GET /api/v1/cases/{slbh}`;
//! `GET /api/v1/cases?ywlsh=…`; `POST /api/v1/cases/{slbh}/supplements` (补正: `bzlsh` the
//! round's serial, `bzcs` the round, `clqd` the materials; `E409` for a round it has, `E422`
//! when the case is not waiting for a supplement); `GET /_sim/stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::{
    Behaviour, Fault, Outcome, REJECTION_REASONS, Resupply, SUPPLEMENT_MATERIALS, Sim, SimCase,
    date_cn, outcome_word,
};

/// Settings of the simulated system.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub behaviour: Behaviour,
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token.
    pub token_ttl_secs: u64,
    /// Where decisions are pushed (the adapter's `/callback/<department>`).
    pub callback_url: Option<String>,
    /// The key callbacks are signed with (the department's `callbacks.secret` at the adapter);
    /// `None`: sent unsigned, which the adapter refuses. The simulator's command line also
    /// takes it from `YICHUANG_SIM_CALLBACK_SECRET`.
    pub callback_secret: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            behaviour: Behaviour {
                department: "scjg".into(),
                ..Behaviour::default()
            },
            client_id: "yichuang".into(),
            client_secret: "sim-secret".into(),
            token_ttl_secs: 7200,
            callback_url: None,
            callback_secret: None,
        }
    }
}

/// The running system.
pub struct HttpJsonSim {
    pub sim: Sim,
    settings: Settings,
    tokens: Mutex<HashMap<String, Instant>>,
    client: reqwest::Client,
}

impl HttpJsonSim {
    pub fn new(settings: Settings) -> Arc<HttpJsonSim> {
        Arc::new(HttpJsonSim {
            sim: Sim::new(settings.behaviour.clone()),
            settings,
            tokens: Mutex::new(HashMap::new()),
            client: reqwest::Client::new(),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v1/cases", post(submit).get(find))
            .route("/api/v1/cases/{number}", get(query))
            .route("/api/v1/cases/{number}/supplements", post(supplement))
            .route("/_sim/stats", get(stats))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let _ = axum::serve(listener, self.router()).await;
    }

    fn data(&self, case: &SimCase) -> Value {
        let (step, outcome) = case.state(self.sim.decision_delay());
        let mut data = json!({
            "slbh": case.number,
            "ywlsh": case.serial,
            "hjmc": step,
            "zt": outcome.map_or("办理中", outcome_word),
            "slsj": date_cn(case.received_at),
        });
        if let Some(taken) = &case.supplement {
            data["bzlsh"] = json!(taken.serial);
            data["bzcs"] = json!(taken.round);
        }
        match outcome {
            Some(Outcome::Approved) => {
                data["zzbh"] = json!(case.licence_number());
                data["zzmc"] = json!("食品经营许可证");
                data["bjsj"] = json!(date_cn(self.sim.now()));
            }
            Some(Outcome::Rejected) => data["spyj"] = json!(REJECTION_REASONS),
            Some(Outcome::Supplement) => data["bzcl"] = json!(SUPPLEMENT_MATERIALS),
            None => {}
        }
        data
    }

    /// The fault of this request as a response, if any.
    async fn fault(&self) -> Option<Response> {
        self.respond(self.sim.request()?).await
    }

    /// A fault as a response (a hang waits, then lets the request through).
    async fn respond(&self, fault: Fault) -> Option<Response> {
        match fault {
            Fault::ServerError => Some(
                (
                    StatusCode::BAD_GATEWAY,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body><h1>502 Bad Gateway</h1></body></html>",
                )
                    .into_response(),
            ),
            Fault::Hang(d) => {
                tokio::time::sleep(d).await;
                None
            }
            Fault::TooMany(after) => Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, after.as_secs().to_string())],
                    "请求过于频繁",
                )
                    .into_response(),
            ),
            Fault::Maintenance => {
                Some((StatusCode::SERVICE_UNAVAILABLE, "系统维护中，请稍后再试").into_response())
            }
        }
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.tokens
            .lock()
            .unwrap()
            .get(token)
            .is_some_and(|until| *until > Instant::now())
    }
}

fn error(code: &str, msg: &str) -> Response {
    // 200 OK with the error in the body, as the real system answers.
    Json(json!({"code": code, "msg": msg, "data": null})).into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    client_id: String,
    client_secret: String,
}

async fn token(State(s): State<Arc<HttpJsonSim>>, Json(r): Json<TokenRequest>) -> Response {
    if let Some(fault) = s.fault().await {
        return fault;
    }
    if r.client_id != s.settings.client_id || r.client_secret != s.settings.client_secret {
        return error("E403", "客户端认证失败");
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    s.tokens.lock().unwrap().insert(
        token.clone(),
        Instant::now() + Duration::from_secs(s.settings.token_ttl_secs),
    );
    Json(json!({"access_token": token, "expires_in": s.settings.token_ttl_secs})).into_response()
}

async fn submit(
    State(s): State<Arc<HttpJsonSim>>,
    headers: HeaderMap,
    Json(fields): Json<BTreeMap<String, String>>,
) -> Response {
    // A submission that hangs is taken first and answered late, as real systems do: the case
    // is theirs even if the client gave up waiting (or died) before the answer came.
    let hang = match s.sim.request() {
        Some(Fault::Hang(d)) => Some(d),
        Some(fault) => match s.respond(fault).await {
            Some(refused) => return refused,
            None => None,
        },
        None => None,
    };
    let answer = take(&s, &headers, fields);
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    answer
}

fn take(s: &Arc<HttpJsonSim>, headers: &HeaderMap, fields: BTreeMap<String, String>) -> Response {
    if !s.authorised(headers) {
        return error("E401", "令牌无效或已过期");
    }
    for required in ["ywlsh", "sqrmc"] {
        if fields.get(required).is_none_or(|v| v.trim().is_empty()) {
            return error("E400", &format!("缺少必填项 {required}"));
        }
    }
    let serial = fields["ywlsh"].clone();
    match s.sim.submit(&serial, fields) {
        Ok(case) => {
            s.call_back(&case.serial);
            Json(json!({"code": "0", "msg": "受理成功", "data": s.data(&case)})).into_response()
        }
        Err(_) => error("E409", "业务流水号已存在"),
    }
}

impl HttpJsonSim {
    /// Pushes the case's decision to the callback URL once it is taken, unless dropped.
    fn call_back(self: &Arc<Self>, serial: &str) {
        let Some(url) = self.settings.callback_url.clone() else {
            return;
        };
        let s = self.clone();
        let serial = serial.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(s.sim.decision_delay()).await;
            if s.sim.random() < s.settings.behaviour.drop_callback {
                s.sim.count_callback(false);
                return;
            }
            let Some(case) = s.sim.by_serial(&serial) else {
                return;
            };
            let body = json!({"code": "0", "data": s.data(&case)}).to_string();
            let mut request = s
                .client
                .post(&url)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(secret) = &s.settings.callback_secret {
                for (name, value) in signed_headers(secret.as_bytes(), &url, body.as_bytes()) {
                    request = request.header(name, value);
                }
            }
            let sent = request
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            s.sim.count_callback(sent);
        });
    }
}

/// The headers of a callback POSTed to `url`, signed as the adapter checks them:
/// `X-Yichuang-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>\n<nonce>\nPOST\n<path>\n<body>">`.
pub fn signed_headers(secret: &[u8], url: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    use hmac::Mac;
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    for part in [timestamp.as_str(), nonce.as_str(), "POST", path] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    vec![
        ("x-yichuang-timestamp", timestamp),
        ("x-yichuang-nonce", nonce),
        ("x-yichuang-signature", format!("sha256={hex}")),
    ]
}

async fn supplement(
    State(s): State<Arc<HttpJsonSim>>,
    headers: HeaderMap,
    Path(number): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(fault) = s.fault().await {
        return fault;
    }
    if !s.authorised(&headers) {
        return error("E401", "令牌无效或已过期");
    }
    let serial = body["bzlsh"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string();
    if serial.is_empty() {
        return error("E400", "缺少必填项 bzlsh");
    }
    let Some(round) = body["bzcs"].as_u64().filter(|r| *r > 0) else {
        return error("E400", "补正次数 bzcs 应为正整数");
    };
    let supplied: Vec<String> = body["clqd"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| m["clmc"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match s.sim.resupply(&number, round as u32, &serial, supplied) {
        Resupply::Taken(case) => {
            s.call_back(&case.serial);
            Json(json!({"code": "0", "msg": "补正材料已接收", "data": s.data(&case)}))
                .into_response()
        }
        Resupply::Duplicate(_) => error("E409", "补正流水号已存在"),
        Resupply::NotWaiting(_) => error("E422", "办件不在补正状态"),
        Resupply::Unknown => (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "E404", "msg": "无此办件"})),
        )
            .into_response(),
    }
}

async fn query(
    State(s): State<Arc<HttpJsonSim>>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    if let Some(fault) = s.fault().await {
        return fault;
    }
    if !s.authorised(&headers) {
        return error("E401", "令牌无效或已过期");
    }
    match s.sim.by_number(&number) {
        Some(case) => Json(json!({"code": "0", "data": s.data(&case)})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "E404", "msg": "无此办件"})),
        )
            .into_response(),
    }
}

async fn find(
    State(s): State<Arc<HttpJsonSim>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(fault) = s.fault().await {
        return fault;
    }
    if !s.authorised(&headers) {
        return error("E401", "令牌无效或已过期");
    }
    let found = q.get("ywlsh").and_then(|serial| s.sim.by_serial(serial));
    Json(json!({"code": "0", "data": found.map(|c| s.data(&c))})).into_response()
}

async fn stats(State(s): State<Arc<HttpJsonSim>>) -> Json<crate::core::Stats> {
    Json(s.sim.stats())
}
