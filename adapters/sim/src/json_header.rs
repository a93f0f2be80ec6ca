//! A department system with a JSON API, a login token in a custom header and no way to find a
//! case by our serial (卫生健康-like, department code `wjw`).
//!
//! # Interface document
//!
//! Everything is UTF-8 JSON (`Content-Type: application/json;charset=UTF-8`), requests and
//! answers. Every answer has the envelope `{"success": bool, "result": …}` on success and
//! `{"success": false, "errorCode": "…", "message": "…"}` on refusal. The HTTP status does not
//! follow the verdict consistently — read both:
//!
//! | `errorCode`       | HTTP | `message`                                        | when |
//! |-------------------|------|--------------------------------------------------|------|
//! | `AUTH_FAILED`     | 200  | `用户名或密码错误`                                 | login with wrong credentials |
//! | `TOKEN_EXPIRED`   | 200  | `令牌已失效，请重新登录`                             | `X-Access-Token` missing, unknown or expired |
//! | `PARAM_INVALID`   | 400  | `缺少必填项 <name>`, `applyTime 格式错误，应为 yyyy-MM-dd HH:mm:ss`, `round 应为正整数`, `请求报文格式错误` | validation |
//! | `NOT_FOUND`       | 404  | `办件不存在`                                      | unknown `caseNo` |
//! | `STATE_INVALID`   | 200  | `办件不在待补正状态`                                | supplement for a case not waiting for one |
//! | `SYSTEM_ERROR`    | 500  | `系统异常`                                        | the system failed (retry later) |
//! | `RATE_LIMIT`      | 429  | `请求过于频繁`                                     | overload; `Retry-After: <seconds>` header |
//! | —                 | 503  | an HTML page `系统维护中`                           | maintenance window (not JSON) |
//!
//! Checks run in this order: faults (429 / 500 / 503 / a hang), the token, the body, then the
//! business rules.
//!
//! ## `POST /auth/login`
//!
//! Body `{"username": "…", "password": "…"}` (settings `username`, `password`) →
//! `{"success": true, "result": {"accessToken": "<uuid>", "expireSeconds": <token_ttl_secs>}}`.
//! The token is good for `expireSeconds` from the login; a later login gives a new token and
//! leaves the old one valid until it expires. The system forgets every token when it restarts.
//!
//! ## Business calls
//!
//! Each carries the token in the header `X-Access-Token: <accessToken>` (not `Authorization`).
//!
//! ### `POST /open/apply` — submit a case
//!
//! Body: one flat JSON object of the department's fields, named as the caller maps them; values
//! are strings (numbers and booleans are taken as their text). Our business serial is
//! `bizSerialNo`. The fields in setting `required` (default `bizSerialNo`, `itemCode`,
//! `applicantName`, `applicantIdNo`, `applyTime`) must be present and not blank, in that order
//! of checking; the first one missing is named in `缺少必填项 <name>` (HTTP 400). `applyTime`,
//! when present, must be exactly `yyyy-MM-dd HH:mm:ss`, zero-padded, hall time
//! (`2019-10-22 10:30:00`).
//!
//! Answer: `{"success": true, "result": {"caseNo": "WJW20191022000001", "duplicated": false}}`.
//!
//! **There is no find-by-serial call.** The system deduplicates by `bizSerialNo` itself: a
//! serial it already has is answered `{"success": true, "result": {"caseNo": "<the existing
//! case's number>", "duplicated": true}}` and opens no second case. So a submission whose answer
//! was lost is simply submitted again. (With `behaviour.accept_duplicate_serials` the system does
//! not check: a serial submitted again opens a second case, answered `duplicated: false`.)
//!
//! ### `GET /open/apply/status?caseNo=<caseNo>` — a case's state
//!
//! ```json
//! {"success": true, "result": {
//!   "caseNo": "WJW20191022000001",
//!   "handleStatus": "受理" | "审查中" | "待补正" | "已办结",
//!   "handleResult": "1" | "0" | "",
//!   "currentNode": "承办" | "审核" | "批准" | "办结",
//!   "opinion": "…", "needMaterials": "…",
//!   "certName": "…" | null, "certNo": "…" | null,
//!   "finishTime": "2019-10-22 10:30:00" | null}}
//! ```
//!
//! **The decision is split over two fields.** `handleStatus` is `受理` at the first step (承办),
//! `审查中` at 审核 and 批准, `待补正` when the system asks for a supplement, and `已办结` once
//! decided; only then `handleResult` says which way: `"1"` 准予 (approved), `"0"` 不予
//! (rejected); it is `""` otherwise. A rejected case has `opinion` = the reasons joined with `；`.
//! A supplement request has `needMaterials` = the names of the materials wanted joined with `；`
//! (material names as in the hall's catalogue), and `opinion` = `材料不全，请补正` — which is
//! not a rejection reason. `certName` and `certNo` (the licence issued) are set when approved
//! and `null` otherwise; `finishTime` (hall time, from the system's own clock, which may be
//! off) is set once `已办结` and `null` before, also while `待补正`. `opinion` and
//! `needMaterials` are `""` when there is nothing to say. After a supplement the case starts
//! again at 承办 (`受理`) and is decided again: approved or rejected, never a second supplement
//! request.
//!
//! A missing `caseNo` is `PARAM_INVALID` (400); an unknown one `NOT_FOUND` (404).
//!
//! ### `POST /open/apply/supplement` — 补正, hand in a supplement round
//!
//! ```json
//! {"caseNo": "WJW20191022000001", "supplementNo": "<task id>-S1", "round": 1,
//!  "materials": [{"code": "PMT", "name": "经营场所平面图及设备布局图", "form": "原件",
//!                 "copies": 1, "fileUrl": "https://…", "sha256": "…"}]}
//! ```
//!
//! `caseNo`, `supplementNo` and a non-empty `materials` list are required (400
//! `缺少必填项 <name>`); `round` is a positive integer, as a number or a numeric string (400
//! `round 应为正整数`). Answer `{"success": true, "result": {"duplicated": false}}` when taken;
//! a round it already took (same `supplementNo`, or a `round` not above the last one taken) is
//! answered `{"success": true, "result": {"duplicated": true}}` and changes nothing; a case not
//! waiting for a supplement is `STATE_INVALID` (HTTP 200, `success: false`); an unknown
//! `caseNo` `NOT_FOUND` (404).
//!
//! ## Faults
//!
//! Configured in `behaviour` as for every simulated system: `429` with `Retry-After`, `500`
//! `SYSTEM_ERROR`, a `503` HTML page during maintenance, and hangs. A submission or a
//! supplement whose answer hangs has been taken before the hang, as when a real answer is lost
//! on its way back. Login goes through the same faults.
//!
//! `GET /_sim/stats` gives the simulator's counters (`duplicates` counts serials submitted
//! again and supplement rounds handed in again).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::core::{
    Behaviour, Fault, Outcome, REJECTION_REASONS, Resupply, SUPPLEMENT_MATERIALS, Sim, SimCase,
    is_time,
};

/// The hall-time format of `applyTime` and `finishTime`.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The header the token goes in.
pub const TOKEN_HEADER: &str = "X-Access-Token";

/// Settings of the simulated system.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub behaviour: Behaviour,
    pub username: String,
    pub password: String,
    /// Lifetime of an access token (`expireSeconds`).
    pub token_ttl_secs: u64,
    /// Name of the licence issued on approval (`certName`).
    pub document_name: String,
    /// Fields a submission must carry, not blank, checked in this order.
    pub required: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            behaviour: Behaviour {
                department: "wjw".into(),
                ..Behaviour::default()
            },
            username: "yichuang".into(),
            password: "sim-secret".into(),
            token_ttl_secs: 7200,
            document_name: "医疗机构执业许可证".into(),
            required: [
                "bizSerialNo",
                "itemCode",
                "applicantName",
                "applicantIdNo",
                "applyTime",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// The running system.
pub struct JsonHeaderSim {
    pub sim: Sim,
    settings: Settings,
    tokens: Mutex<HashMap<String, Instant>>,
    /// Business calls refused for a missing, unknown or expired token.
    refused_tokens: AtomicU64,
}

type Shared = State<Arc<JsonHeaderSim>>;

/// A JSON answer with the system's content type.
fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn ok(result: Value) -> Response {
    answer(StatusCode::OK, json!({"success": true, "result": result}))
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    answer(
        status,
        json!({"success": false, "errorCode": code, "message": message}),
    )
}

fn invalid(message: &str) -> Response {
    refuse(StatusCode::BAD_REQUEST, "PARAM_INVALID", message)
}

fn not_found() -> Response {
    refuse(StatusCode::NOT_FOUND, "NOT_FOUND", "办件不存在")
}

/// A JSON value as the text the system keeps: strings as they are, numbers and booleans as
/// their text, null as blank.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A request body that must be a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, Box<Response>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Box::new(invalid("请求报文格式错误"))),
    }
}

impl JsonHeaderSim {
    pub fn new(settings: Settings) -> Arc<JsonHeaderSim> {
        Arc::new(JsonHeaderSim {
            sim: Sim::new(settings.behaviour.clone()),
            settings,
            tokens: Mutex::new(HashMap::new()),
            refused_tokens: AtomicU64::new(0),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/auth/login", post(login))
            .route("/open/apply", post(submit))
            .route("/open/apply/status", get(status))
            .route("/open/apply/supplement", post(supplement))
            .route("/_sim/stats", get(stats))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let _ = axum::serve(listener, self.router()).await;
    }

    /// Forgets every token, as the real system does when it restarts.
    pub fn revoke_tokens(&self) {
        self.tokens.lock().unwrap().clear();
    }

    pub fn refused_tokens(&self) -> u64 {
        self.refused_tokens.load(Ordering::Relaxed)
    }

    /// The case as `/open/apply/status` shows it.
    fn data(&self, case: &SimCase) -> Value {
        let (step, outcome) = case.state(self.sim.decision_delay());
        let handle_status = match (step, outcome) {
            (_, Some(Outcome::Supplement)) => "待补正",
            (_, Some(_)) => "已办结",
            ("承办", None) => "受理",
            _ => "审查中",
        };
        let mut data = json!({
            "caseNo": case.number,
            "handleStatus": handle_status,
            "handleResult": "",
            "currentNode": step,
            "opinion": "",
            "needMaterials": "",
            "certName": null,
            "certNo": null,
            "finishTime": null,
        });
        let finished = || {
            (self.sim.decided_at(case) + chrono::Duration::hours(8))
                .format(TIME_FORMAT)
                .to_string()
        };
        match outcome {
            Some(Outcome::Approved) => {
                data["handleResult"] = json!("1");
                data["certName"] = json!(self.settings.document_name);
                data["certNo"] = json!(case.licence_number());
                data["finishTime"] = json!(finished());
            }
            Some(Outcome::Rejected) => {
                data["handleResult"] = json!("0");
                data["opinion"] =
                    json!(REJECTION_REASONS.split('、').collect::<Vec<_>>().join("；"));
                data["finishTime"] = json!(finished());
            }
            Some(Outcome::Supplement) => {
                data["opinion"] = json!("材料不全，请补正");
                data["needMaterials"] = json!(
                    SUPPLEMENT_MATERIALS
                        .split('、')
                        .collect::<Vec<_>>()
                        .join("；")
                );
            }
            None => {}
        }
        data
    }

    /// A fault as a response (a hang waits, then lets the request through: `None`).
    async fn respond(&self, fault: Fault) -> Option<Response> {
        match fault {
            Fault::ServerError => Some(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                "系统异常",
            )),
            Fault::Hang(d) => {
                tokio::time::sleep(d).await;
                None
            }
            Fault::TooMany(after) => {
                let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT", "请求过于频繁");
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    after.as_secs().to_string().parse().unwrap(),
                );
                Some(r)
            }
            Fault::Maintenance => Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
                    "<!DOCTYPE html><html><head><title>系统维护</title></head><body>\
                     <h1>系统维护中</h1><p>系统正在升级维护，请稍后再试。</p></body></html>",
                )
                    .into_response(),
            ),
        }
    }

    /// Runs the request's fault, if any: `Err` is the answer; `Ok(Some(d))` a hang still to
    /// be waited after the request has been handled (for calls that change state).
    async fn fault(&self, late_hang: bool) -> Result<Option<Duration>, Response> {
        match self.sim.request() {
            None => Ok(None),
            Some(Fault::Hang(d)) if late_hang => Ok(Some(d)),
            Some(fault) => match self.respond(fault).await {
                Some(refused) => Err(refused),
                None => Ok(None),
            },
        }
    }

    fn authorised(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let known = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                self.tokens
                    .lock()
                    .unwrap()
                    .get(t.trim())
                    .is_some_and(|until| *until > Instant::now())
            });
        if known {
            Ok(())
        } else {
            self.refused_tokens.fetch_add(1, Ordering::Relaxed);
            Err(Box::new(refuse(
                StatusCode::OK,
                "TOKEN_EXPIRED",
                "令牌已失效，请重新登录",
            )))
        }
    }

    fn take(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Err(refused) = self.authorised(headers) {
            return *refused;
        }
        let fields: BTreeMap<String, String> = match object(body) {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
            Err(refused) => return *refused,
        };
        for required in &self.settings.required {
            if fields.get(required).is_none_or(|v| v.trim().is_empty()) {
                return invalid(&format!("缺少必填项 {required}"));
            }
        }
        if let Some(time) = fields.get("applyTime")
            && !is_time(time, TIME_FORMAT)
        {
            return invalid("applyTime 格式错误，应为 yyyy-MM-dd HH:mm:ss");
        }
        let serial = fields.get("bizSerialNo").cloned().unwrap_or_default();
        match self.sim.submit(&serial, fields) {
            Ok(case) => ok(json!({"caseNo": case.number, "duplicated": false})),
            Err(existing) => ok(json!({"caseNo": existing.number, "duplicated": true})),
        }
    }

    fn take_supplement(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Err(refused) = self.authorised(headers) {
            return *refused;
        }
        let request = match object(body) {
            Ok(map) => map,
            Err(refused) => return *refused,
        };
        let field = |k: &str| request.get(k).map(text).unwrap_or_default();
        for required in ["caseNo", "supplementNo"] {
            if field(required).trim().is_empty() {
                return invalid(&format!("缺少必填项 {required}"));
            }
        }
        let round = match request.get("round") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let Some(round) = round.filter(|r| (1..=u64::from(u32::MAX)).contains(r)) else {
            return invalid("round 应为正整数");
        };
        let supplied: Vec<String> = match request.get("materials").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|m| m.get("name").map(text).unwrap_or_default())
                .collect(),
            _ => return invalid("缺少必填项 materials"),
        };
        let case_no = field("caseNo");
        let serial = field("supplementNo");
        match self
            .sim
            .resupply(case_no.trim(), round as u32, serial.trim(), supplied)
        {
            Resupply::Taken(_) => ok(json!({"duplicated": false})),
            Resupply::Duplicate(_) => ok(json!({"duplicated": true})),
            Resupply::NotWaiting(_) => {
                refuse(StatusCode::OK, "STATE_INVALID", "办件不在待补正状态")
            }
            Resupply::Unknown => not_found(),
        }
    }
}

async fn login(State(s): Shared, body: Bytes) -> Response {
    if let Err(refused) = s.fault(false).await {
        return refused;
    }
    let request = match object(&body) {
        Ok(map) => map,
        Err(refused) => return *refused,
    };
    let given = |k: &str| request.get(k).and_then(Value::as_str);
    if given("username") != Some(s.settings.username.as_str())
        || given("password") != Some(s.settings.password.as_str())
    {
        return refuse(StatusCode::OK, "AUTH_FAILED", "用户名或密码错误");
    }
    let token = uuid::Uuid::new_v4().to_string();
    s.tokens.lock().unwrap().insert(
        token.clone(),
        Instant::now() + Duration::from_secs(s.settings.token_ttl_secs),
    );
    ok(json!({"accessToken": token, "expireSeconds": s.settings.token_ttl_secs}))
}

async fn submit(State(s): Shared, headers: HeaderMap, body: Bytes) -> Response {
    // A submission that hangs is taken first and answered late.
    let hang = match s.fault(true).await {
        Ok(hang) => hang,
        Err(refused) => return refused,
    };
    let answer = s.take(&headers, &body);
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    answer
}

async fn status(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = s.fault(false).await {
        return refused;
    }
    if let Err(refused) = s.authorised(&headers) {
        return *refused;
    }
    let Some(number) = q.get("caseNo").map(|n| n.trim()).filter(|n| !n.is_empty()) else {
        return invalid("缺少必填项 caseNo");
    };
    match s.sim.by_number(number) {
        Some(case) => ok(s.data(&case)),
        None => not_found(),
    }
}

async fn supplement(State(s): Shared, headers: HeaderMap, body: Bytes) -> Response {
    // A supplement that hangs is taken first and answered late.
    let hang = match s.fault(true).await {
        Ok(hang) => hang,
        Err(refused) => return refused,
    };
    let answer = s.take_supplement(&headers, &body);
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    answer
}

async fn stats(State(s): Shared) -> Json<crate::core::Stats> {
    Json(s.sim.stats())
}
