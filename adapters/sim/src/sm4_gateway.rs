//! A department's "open platform gateway" with 国密 payloads: SM4-CBC encrypted requests and
//! answers, SM3 signatures, the token in the query string and one URL for every method
//! (交通运输-like, department code `jt`).
//!
//! # Interface document
//!
//! ## `GET /gateway/token?appKey=<appKey>&appSecret=<appSecret>`
//!
//! → `{"code": "200", "msg": "成功", "data": {"token": "<uuid>", "expireMinutes": <n>}}` — the
//! only answer whose `data` is plain JSON, not encrypted. The lifetime is reported in
//! **minutes**: setting `token_ttl_secs` rounded down to whole minutes, at least 1, and the token
//! lasts exactly that. For tests, a `token_ttl_secs` under 60 makes the token expire after that
//! many *seconds* while still reporting `expireMinutes: 1` (so a client that trusts
//! `expireMinutes` meets an expired token). Wrong settings `app_key` / `app_secret` →
//! `{"code": "401", "msg": "appKey或appSecret错误"}`. The system forgets every token when it
//! restarts.
//!
//! ## `POST /gateway/api?method=<method>&token=<token>` — every business call
//!
//! The token goes **in the query string**, next to the method. The body is
//! `application/x-www-form-urlencoded` (anything else: HTTP 415) with the fields
//!
//! - `appKey` — setting `app_key`;
//! - `timestamp` — hall time (UTC+8) `yyyyMMddHHmmss`; refused unless within 5 minutes of the
//!   system's own clock, which may be off (`behaviour.clock_skew_secs`);
//! - `data` — Base64 (standard alphabet, padded) of SM4-CBC with PKCS#7 padding of the UTF-8
//!   JSON request object; key = setting `sm4_key`, IV = setting `sm4_iv` (each 16 bytes given
//!   as 32 hex digits), the same IV for every message. Being form-encoded, its `+`, `/` and `=`
//!   must be percent-encoded (a raw `+` arrives as a space and the data no longer decrypts);
//! - `sign` — **uppercase** hex SM3 of `appKey + method + timestamp + data + signSecret`, plain
//!   concatenation, no separators, `data` as the Base64 text, `signSecret` = setting
//!   `sign_secret`. Compared exactly: lowercase hex is a wrong signature.
//!
//! Every answer is HTTP 200 `application/json;charset=UTF-8`
//! `{"code": "…", "msg": "…", "data": "<Base64 SM4-CBC of the UTF-8 JSON answer>"}`, with the
//! same key and IV; `data` is left out when there is nothing to say (every refusal). `code` is
//! a string:
//!
//! | `code`  | `msg` | meaning |
//! |---------|-------|---------|
//! | `"200"` | `成功` | done |
//! | `"400"` | `缺少必填项 <field>`, `sqsj格式错误`, `补正次数bzcs应为正整数`, `办件不在补正状态`, `报文解密失败`, `不支持的方法 <method>` | refused as sent |
//! | `"401"` | `token已过期` (missing, unknown or expired token); `appKey或appSecret错误` | get a new token |
//! | `"403"` | `时间戳无效`; `签名错误` | |
//! | `"404"` | `记录不存在` | no such case |
//! | `"409"` | `业务流水号已存在` | that serial (or supplement round) is already there |
//! | `"503"` | `系统繁忙` | try again later |
//!
//! Checks run in this order: faults, the token, `appKey`, `timestamp`, `sign`, `method`, the
//! decryption of `data` (not Base64, a wrong key or IV, bad padding, not UTF-8 or not a JSON
//! object: `报文解密失败`), then the method's own rules.
//!
//! ### `method=case.submit`
//!
//! `data`: one flat JSON object of the department's fields, named as the caller maps them;
//! values are strings (numbers and booleans are taken as their text). Our business serial is
//! `lsh`. The fields in setting `required` (default `lsh`, `sxbm`, `sqr`, `sqrzjh`, `sqsj`) must
//! be present and not blank, checked in that order; `sqsj`, when present, must be exactly
//! `2019年10月22日 10时30分` (hall time, zero-padded, hours and minutes) else `400 sqsj格式错误`.
//! Answer data `{"ajbh": "JT20191022000001"}`. A serial it already has is `409
//! 业务流水号已存在` **without** the case number: use `case.find`. (With
//! `behaviour.accept_duplicate_serials` the system does not check and opens a second case.)
//!
//! ### `method=case.find`
//!
//! `data` `{"lsh": "<serial>"}` → the same answer data as `case.query`, or `404 记录不存在`.
//!
//! ### `method=case.query`
//!
//! `data` `{"ajbh": "<case number>"}` →
//!
//! ```json
//! {"ajbh": "JT20191022000001",
//!  "blzt": "受理" | "办理中" | "补正" | "办结",
//!  "spjg": "准予许可" | "不予许可" | "",
//!  "jdmc": "承办" | "审核" | "批准" | "办结",
//!  "yj": "…", "bclx": "…", "zzmc": "…", "zzbh": "…", "bjsj": "2019年10月22日 10时30分"}
//! ```
//!
//! Every field is a string, `""` when it does not apply. **The verdict is split:** `blzt` is
//! `受理` at the first step (承办), `办理中` at 审核 and 批准, `补正` when the system asks for a
//! supplement, and `办结` once decided, when `spjg` says which way — `准予许可` (approved,
//! with the licence `zzmc`, `zzbh`) or `不予许可` (rejected, with the reasons in `yj`, joined
//! with `，`). A supplement request names the materials wanted in `bclx`, joined with `、`
//! (material names as in the hall's catalogue). `bjsj` is the time of the final decision (not
//! of a supplement request), by the system's own clock, which may be off. After a supplement
//! the case starts again at 承办 (`受理`) and is decided again: approved or rejected, never a
//! second supplement request.
//!
//! ### `method=case.supplement` — 补正
//!
//! `data`
//! `{"ajbh": "…", "bzlsh": "<task id>-S1", "bzcs": 1, "clqd": [{"clbm": "PMT", "clmc": "…",
//! "clxs": "原件", "fs": 1, "wjdz": "https://…", "wjzy": "<sha256>"}]}`; `ajbh`, `bzlsh` and a
//! non-empty `clqd` are required, `bzcs` is a positive integer (number or numeric string).
//! Answer data `{}`. A round it already took (same `bzlsh`, or `bzcs` not above the last one
//! taken) is `409 业务流水号已存在` — it is there, which is success for the caller; a case not
//! waiting for a supplement `400 办件不在补正状态`; an unknown case `404 记录不存在`.
//!
//! ## Faults
//!
//! Configured in `behaviour` as for every simulated system, at the HTTP level: overload is HTTP
//! 429 with `Retry-After`; a failure is either an HTTP 502 HTML page (the gateway's proxy) or
//! HTTP 200 `{"code": "503", "msg": "系统繁忙"}`; maintenance an HTTP 503 HTML page; a hang
//! answers late, after the request has been handled (a submission or supplement is taken, as
//! when a real answer is lost on its way back).
//!
//! `GET /_sim/stats` gives the simulator's counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sm3::Digest;

use crate::core::{
    Behaviour, Fault, Outcome, REJECTION_REASONS, Resupply, SUPPLEMENT_MATERIALS, Sim, SimCase,
    is_time,
};

/// The hall-time format of `sqsj` and `bjsj`.
pub const TIME_FORMAT: &str = "%Y年%m月%d日 %H时%M分";
/// The format of the request `timestamp`.
pub const TIMESTAMP_FORMAT: &str = "%Y%m%d%H%M%S";
/// How far a request's `timestamp` may be from the system's clock.
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;

/// Settings of the simulated system.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub behaviour: Behaviour,
    pub app_key: String,
    pub app_secret: String,
    /// Appended to the signed string.
    pub sign_secret: String,
    /// The SM4 key, 32 hex digits.
    pub sm4_key: String,
    /// The CBC IV, 32 hex digits.
    pub sm4_iv: String,
    /// Lifetime of a token; see the module doc for how it is reported.
    pub token_ttl_secs: u64,
    /// Name of the licence issued on approval (`zzmc`).
    pub document_name: String,
    /// Fields a submission must carry, not blank, checked in this order.
    pub required: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            behaviour: Behaviour {
                department: "jt".into(),
                ..Behaviour::default()
            },
            app_key: "yichuang".into(),
            app_secret: "sim-secret".into(),
            sign_secret: "sim-sign-secret".into(),
            sm4_key: "0123456789abcdeffedcba9876543210".into(),
            sm4_iv: "fedcba98765432100123456789abcdef".into(),
            token_ttl_secs: 7200,
            document_name: "道路运输经营许可证".into(),
            required: ["lsh", "sxbm", "sqr", "sqrzjh", "sqsj"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Settings {
    /// The key and IV, or what is wrong with them.
    pub fn cipher_key(&self) -> Result<([u8; 16], [u8; 16]), String> {
        Ok((
            hex16("sm4_key", &self.sm4_key)?,
            hex16("sm4_iv", &self.sm4_iv)?,
        ))
    }

    /// `expireMinutes` and how long a token really lasts.
    fn token_lifetime(&self) -> (u64, Duration) {
        let minutes = (self.token_ttl_secs / 60).max(1);
        if self.token_ttl_secs < 60 {
            (minutes, Duration::from_secs(self.token_ttl_secs))
        } else {
            (minutes, Duration::from_secs(minutes * 60))
        }
    }
}

fn hex16(name: &str, s: &str) -> Result<[u8; 16], String> {
    let bad = || format!("{name} must be 32 hex digits (16 bytes), not {s:?}");
    if s.len() != 32 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The running system.
pub struct Sm4GatewaySim {
    pub sim: Sim,
    settings: Settings,
    key: [u8; 16],
    iv: [u8; 16],
    tokens: Mutex<HashMap<String, Instant>>,
    refused_tokens: AtomicU64,
    refused_signatures: AtomicU64,
    refused_timestamps: AtomicU64,
}

type Shared = State<Arc<Sm4GatewaySim>>;
type Params = Query<HashMap<String, String>>;

/// An answer as the gateway writes it.
fn envelope(code: &str, msg: &str, data: Option<Value>) -> Response {
    let mut body = json!({"code": code, "msg": msg});
    if let Some(data) = data {
        body["data"] = data;
    }
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(code: &str, msg: &str) -> Response {
    envelope(code, msg, None)
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

fn html(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
        body,
    )
        .into_response()
}

impl Sm4GatewaySim {
    /// # Panics
    ///
    /// If `sm4_key` or `sm4_iv` is not 32 hex digits (`Settings::cipher_key` says so first).
    pub fn new(settings: Settings) -> Arc<Sm4GatewaySim> {
        let (key, iv) = settings.cipher_key().expect("SM4 key and IV");
        Arc::new(Sm4GatewaySim {
            sim: Sim::new(settings.behaviour.clone()),
            settings,
            key,
            iv,
            tokens: Mutex::new(HashMap::new()),
            refused_tokens: AtomicU64::new(0),
            refused_signatures: AtomicU64::new(0),
            refused_timestamps: AtomicU64::new(0),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/gateway/token", get(token))
            .route("/gateway/api", post(api))
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

    /// Business calls refused for a missing, unknown or expired token.
    pub fn refused_tokens(&self) -> u64 {
        self.refused_tokens.load(Ordering::Relaxed)
    }

    /// Business calls refused for a wrong `sign`.
    pub fn refused_signatures(&self) -> u64 {
        self.refused_signatures.load(Ordering::Relaxed)
    }

    /// Business calls refused for a `timestamp` out of the window.
    pub fn refused_timestamps(&self) -> u64 {
        self.refused_timestamps.load(Ordering::Relaxed)
    }

    fn encrypt(&self, plain: &[u8]) -> String {
        let sealed = cbc::Encryptor::<sm4::Sm4>::new(&self.key.into(), &self.iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        BASE64.encode(sealed)
    }

    /// The request object in `data`, or `None` when it does not decrypt to one.
    fn decrypt(&self, data: &str) -> Option<Map<String, Value>> {
        let sealed = BASE64.decode(data.trim()).ok()?;
        let plain = cbc::Decryptor::<sm4::Sm4>::new(&self.key.into(), &self.iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&sealed)
            .ok()?;
        match serde_json::from_slice(&plain) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    /// A success, its data encrypted.
    fn ok(&self, data: Value) -> Response {
        envelope(
            "200",
            "成功",
            Some(json!(self.encrypt(data.to_string().as_bytes()))),
        )
    }

    /// The sign expected for these fields.
    pub fn sign(&self, app_key: &str, method: &str, timestamp: &str, data: &str) -> String {
        sign(app_key, method, timestamp, data, &self.settings.sign_secret)
    }

    /// The case as `case.query` and `case.find` show it.
    fn data(&self, case: &SimCase) -> Value {
        let (step, outcome) = case.state(self.sim.decision_delay());
        let blzt = match (step, outcome) {
            (_, Some(Outcome::Supplement)) => "补正",
            (_, Some(_)) => "办结",
            ("承办", None) => "受理",
            _ => "办理中",
        };
        let mut data = json!({
            "ajbh": case.number,
            "blzt": blzt,
            "spjg": "",
            "jdmc": step,
            "yj": "",
            "bclx": "",
            "zzmc": "",
            "zzbh": "",
            "bjsj": "",
        });
        let finished = || {
            (self.sim.decided_at(case) + chrono::Duration::hours(8))
                .format(TIME_FORMAT)
                .to_string()
        };
        match outcome {
            Some(Outcome::Approved) => {
                data["spjg"] = json!("准予许可");
                data["zzmc"] = json!(self.settings.document_name);
                data["zzbh"] = json!(case.licence_number());
                data["bjsj"] = json!(finished());
            }
            Some(Outcome::Rejected) => {
                data["spjg"] = json!("不予许可");
                data["yj"] = json!(REJECTION_REASONS.split('、').collect::<Vec<_>>().join("，"));
                data["bjsj"] = json!(finished());
            }
            Some(Outcome::Supplement) => data["bclx"] = json!(SUPPLEMENT_MATERIALS),
            None => {}
        }
        data
    }

    /// The checks every business call passes, in the gateway's order: the decrypted request,
    /// or the refusal.
    fn check(
        &self,
        params: &HashMap<String, String>,
        form: &HashMap<String, String>,
    ) -> Result<Map<String, Value>, Box<Response>> {
        let token_ok = params.get("token").is_some_and(|t| {
            self.tokens
                .lock()
                .unwrap()
                .get(t.trim())
                .is_some_and(|until| *until > Instant::now())
        });
        if !token_ok {
            self.refused_tokens.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(refuse("401", "token已过期")));
        }
        let field = |k: &str| form.get(k).map_or("", String::as_str);
        if field("appKey") != self.settings.app_key {
            return Err(Box::new(refuse("401", "appKey或appSecret错误")));
        }
        let timestamp = field("timestamp");
        let fresh = is_time(timestamp, TIMESTAMP_FORMAT)
            && chrono::NaiveDateTime::parse_from_str(timestamp, TIMESTAMP_FORMAT).is_ok_and(|t| {
                let own = (self.sim.now() + chrono::Duration::hours(8)).naive_utc();
                (own - t).num_seconds().abs() <= TIMESTAMP_WINDOW_SECS
            });
        if !fresh {
            self.refused_timestamps.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(refuse("403", "时间戳无效")));
        }
        let method = params.get("method").map_or("", String::as_str);
        if field("sign") != self.sign(field("appKey"), method, timestamp, field("data")) {
            self.refused_signatures.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(refuse("403", "签名错误")));
        }
        if !["case.submit", "case.find", "case.query", "case.supplement"].contains(&method) {
            return Err(Box::new(refuse("400", &format!("不支持的方法 {method}"))));
        }
        self.decrypt(field("data"))
            .ok_or_else(|| Box::new(refuse("400", "报文解密失败")))
    }

    fn handle(&self, params: &HashMap<String, String>, form: &HashMap<String, String>) -> Response {
        let request = match self.check(params, form) {
            Ok(request) => request,
            Err(refused) => return *refused,
        };
        let field = |k: &str| request.get(k).map(text).unwrap_or_default();
        let missing = |k: &str| refuse("400", &format!("缺少必填项 {k}"));
        match params.get("method").map_or("", String::as_str) {
            "case.submit" => {
                let fields: BTreeMap<String, String> =
                    request.iter().map(|(k, v)| (k.clone(), text(v))).collect();
                for required in &self.settings.required {
                    if fields.get(required).is_none_or(|v| v.trim().is_empty()) {
                        return missing(required);
                    }
                }
                if let Some(time) = fields.get("sqsj")
                    && !is_time(time, TIME_FORMAT)
                {
                    return refuse("400", "sqsj格式错误");
                }
                let serial = fields.get("lsh").cloned().unwrap_or_default();
                match self.sim.submit(&serial, fields) {
                    Ok(case) => self.ok(json!({"ajbh": case.number})),
                    Err(_) => refuse("409", "业务流水号已存在"),
                }
            }
            method @ ("case.find" | "case.query") => {
                let key = if method == "case.find" { "lsh" } else { "ajbh" };
                let value = field(key);
                let value = value.trim();
                if value.is_empty() {
                    return missing(key);
                }
                let found = if method == "case.find" {
                    self.sim.by_serial(value)
                } else {
                    self.sim.by_number(value)
                };
                match found {
                    Some(case) => self.ok(self.data(&case)),
                    None => refuse("404", "记录不存在"),
                }
            }
            "case.supplement" => {
                for required in ["ajbh", "bzlsh"] {
                    if field(required).trim().is_empty() {
                        return missing(required);
                    }
                }
                let round = match request.get("bzcs") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.trim().parse().ok(),
                    _ => None,
                };
                let Some(round) = round.filter(|r| (1..=u64::from(u32::MAX)).contains(r)) else {
                    return refuse("400", "补正次数bzcs应为正整数");
                };
                let supplied: Vec<String> = match request.get("clqd").and_then(Value::as_array) {
                    Some(list) if !list.is_empty() => list
                        .iter()
                        .map(|m| m.get("clmc").map(text).unwrap_or_default())
                        .collect(),
                    _ => return missing("clqd"),
                };
                match self.sim.resupply(
                    field("ajbh").trim(),
                    round as u32,
                    field("bzlsh").trim(),
                    supplied,
                ) {
                    Resupply::Taken(_) => self.ok(json!({})),
                    Resupply::Duplicate(_) => refuse("409", "业务流水号已存在"),
                    Resupply::NotWaiting(_) => refuse("400", "办件不在补正状态"),
                    Resupply::Unknown => refuse("404", "记录不存在"),
                }
            }
            _ => unreachable!("methods are checked"),
        }
    }

    /// A fault as a response; a hang is waited by the caller.
    fn refusal(&self, fault: Fault) -> Response {
        match fault {
            Fault::ServerError if self.sim.random() < 0.5 => html(
                StatusCode::BAD_GATEWAY,
                "<html><head><title>502 Bad Gateway</title></head><body>\
                 <center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>\
                 </body></html>",
            ),
            // The other half: the gateway itself answers that the service is busy.
            Fault::ServerError => refuse("503", "系统繁忙"),
            Fault::TooMany(after) => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, after.as_secs().to_string())],
                "Too Many Requests",
            )
                .into_response(),
            Fault::Maintenance => html(
                StatusCode::SERVICE_UNAVAILABLE,
                "<!DOCTYPE html><html><head><title>系统维护</title></head><body>\
                 <h1>系统维护中</h1><p>开放平台正在维护，请稍后再试。</p></body></html>",
            ),
            Fault::Hang(_) => unreachable!("a hang is not refused"),
        }
    }
}

/// Uppercase hex SM3 of `appKey + method + timestamp + data + signSecret`.
pub fn sign(app_key: &str, method: &str, timestamp: &str, data: &str, secret: &str) -> String {
    let mut h = sm3::Sm3::new();
    for part in [app_key, method, timestamp, data, secret] {
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02X}")).collect()
}

async fn token(State(s): Shared, Query(q): Params) -> Response {
    match s.sim.request() {
        Some(Fault::Hang(d)) => tokio::time::sleep(d).await,
        Some(fault) => return s.refusal(fault),
        None => {}
    }
    if q.get("appKey") != Some(&s.settings.app_key)
        || q.get("appSecret") != Some(&s.settings.app_secret)
    {
        return refuse("401", "appKey或appSecret错误");
    }
    let (minutes, lifetime) = s.settings.token_lifetime();
    let token = uuid::Uuid::new_v4().to_string();
    s.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), Instant::now() + lifetime);
    envelope(
        "200",
        "成功",
        Some(json!({"token": token, "expireMinutes": minutes})),
    )
}

async fn api(
    State(s): Shared,
    Query(params): Params,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match s.sim.request() {
        // The request is handled; its answer is what hangs.
        Some(Fault::Hang(d)) => {
            let answer = s.handle(&params, &form);
            tokio::time::sleep(d).await;
            answer
        }
        Some(fault) => s.refusal(fault),
        None => s.handle(&params, &form),
    }
}

async fn stats(State(s): Shared) -> Json<crate::core::Stats> {
    Json(s.sim.stats())
}
