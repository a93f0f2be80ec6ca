//! A provincial SMS platform (短信平台), as awkward as the real ones: a form POST at
//! `/sms/send` with `account`, `ts` (unix seconds), `sign` (MD5 of account + ts + secret, lower
//! hex), `mobile`, `content` and the client's `msgid`; it refuses a wrong account, signature or
//! stale timestamp, a malformed number and a text without its 【签名】 with its own codes (in a
//! 200 answer, as such platforms do), throttles above its rate (`107`), is sometimes down
//! (503) or slow, and deduplicates by `msgid` (a message sent again is answered `0` and not
//! delivered twice). It keeps what it received; `GET /control/messages` lists it with each
//! number masked, and nothing it logs carries a number unmasked.
//!
//! It owns the platform's side only; the controls (in-process on [`SmsSim`], and over HTTP at
//! `/control/…`) are for tests and the demo.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

/// How the simulated SMS platform is set up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub account: String,
    pub secret: String,
    /// How far `ts` may be from the platform's clock.
    pub max_clock_skew_secs: i64,
    /// Messages a second taken; more are answered `107`.
    pub per_second: u32,
    /// Share of requests answered 503 without being looked at.
    pub busy_share: f64,
    /// Share of requests answered only after `slow_ms`.
    pub slow_share: f64,
    pub slow_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            account: "yichuang".into(),
            secret: "sms-secret".into(),
            max_clock_skew_secs: 300,
            per_second: 20,
            busy_share: 0.0,
            slow_share: 0.0,
            slow_ms: 0,
        }
    }
}

/// A message the platform took, as the controls list it (the number masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub msgid: String,
    pub mobile: String,
    pub content: String,
    /// When it was taken (RFC 3339).
    pub at: String,
}

#[derive(Default)]
struct Store {
    messages: Vec<(Received, String)>,
    ids: HashSet<String>,
    duplicates: u64,
    refusals: BTreeMap<String, u64>,
    /// The second being counted and how many were taken in it.
    second: (i64, u32),
}

/// The simulated SMS platform.
pub struct SmsSim {
    settings: Settings,
    store: Mutex<Store>,
    outage: AtomicBool,
}

/// The MD5 signature the platform expects: of account + ts + secret, lower-case hex.
pub fn sign(account: &str, ts: &str, secret: &str) -> String {
    use md5::Digest;
    md5::Md5::digest(format!("{account}{ts}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn share(p: f64) -> bool {
    p > 0.0 && (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0 < p
}

impl SmsSim {
    pub fn new(settings: Settings) -> Arc<SmsSim> {
        Arc::new(SmsSim {
            settings,
            store: Mutex::new(Store::default()),
            outage: AtomicBool::new(false),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every message taken, in order, each once (numbers masked).
    pub fn messages(&self) -> Vec<Received> {
        self.store()
            .messages
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The numbers messages went to, in order (for tests that check where each went).
    pub fn numbers(&self) -> Vec<String> {
        self.store()
            .messages
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Messages sent again with a msgid already taken.
    pub fn duplicates(&self) -> u64 {
        self.store().duplicates
    }

    /// Refusals by code (`503` included).
    pub fn refusals(&self) -> BTreeMap<String, u64> {
        self.store().refusals.clone()
    }

    /// Every request is answered 503 while on.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::Relaxed);
    }

    fn refuse(&self, code: &str, msg: &str) -> (u16, serde_json::Value) {
        *self.store().refusals.entry(code.into()).or_default() += 1;
        tracing::info!(code, msg, "sms sim refused a message");
        (200, json!({ "code": code, "msg": msg }))
    }

    /// Answers one `/sms/send` (status, JSON body).
    pub fn send(&self, form: &BTreeMap<String, String>) -> (u16, serde_json::Value) {
        if self.outage.load(Ordering::Relaxed) || share(self.settings.busy_share) {
            *self.store().refusals.entry("503".into()).or_default() += 1;
            return (503, json!({ "code": "503", "msg": "服务不可用" }));
        }
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        let (account, ts, mobile, content, msgid) = (
            field("account"),
            field("ts"),
            field("mobile"),
            field("content"),
            field("msgid"),
        );
        if account != self.settings.account {
            return self.refuse("101", "账号不存在");
        }
        let now = chrono::Utc::now().timestamp();
        match ts.parse::<i64>() {
            Ok(t) if (now - t).abs() <= self.settings.max_clock_skew_secs => {}
            _ => return self.refuse("103", "时间戳超出允许范围"),
        }
        if field("sign") != sign(account, ts, &self.settings.secret) {
            return self.refuse("102", "签名错误");
        }
        if mobile.len() != 11
            || !mobile.starts_with('1')
            || !mobile.bytes().all(|b| b.is_ascii_digit())
        {
            return self.refuse(
                "104",
                &format!(
                    "手机号码格式错误：{}",
                    yichuang::privacy::mask_mobile(mobile)
                ),
            );
        }
        if content.is_empty() || content.chars().count() > 500 {
            return self.refuse("105", "短信内容为空或超长");
        }
        if !content.starts_with('【') {
            return self.refuse("108", "短信签名缺失");
        }
        if msgid.is_empty() {
            return self.refuse("106", "缺少客户端消息编号");
        }
        let mut store = self.store();
        if store.ids.contains(msgid) {
            store.duplicates += 1;
            return (
                200,
                json!({ "code": "0", "msg": "重复提交，已忽略", "msgid": msgid }),
            );
        }
        if store.second.0 != now {
            store.second = (now, 0);
        }
        if store.second.1 >= self.settings.per_second {
            *store.refusals.entry("107".into()).or_default() += 1;
            return (200, json!({ "code": "107", "msg": "提交过快，请稍后再试" }));
        }
        store.second.1 += 1;
        store.ids.insert(msgid.to_string());
        let masked = yichuang::privacy::mask_mobile(mobile);
        tracing::info!(msgid, mobile = %masked, "sms sim took a message");
        store.messages.push((
            Received {
                msgid: msgid.to_string(),
                mobile: masked,
                content: content.to_string(),
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
            mobile.to_string(),
        ));
        (
            200,
            json!({ "code": "0", "msg": "提交成功", "msgid": msgid }),
        )
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        use axum::routing::{get, post};
        let send = {
            let sim = self.clone();
            move |axum::Form(form): axum::Form<BTreeMap<String, String>>| {
                let sim = sim.clone();
                async move {
                    if share(sim.settings.slow_share) {
                        tokio::time::sleep(Duration::from_millis(sim.settings.slow_ms)).await;
                    }
                    let (status, body) = sim.send(&form);
                    (
                        axum::http::StatusCode::from_u16(status)
                            .unwrap_or(axum::http::StatusCode::OK),
                        axum::Json(body),
                    )
                }
            }
        };
        let messages = {
            let sim = self.clone();
            move || {
                let sim = sim.clone();
                async move { axum::Json(sim.messages()) }
            }
        };
        let stats = {
            let sim = self.clone();
            move || {
                let sim = sim.clone();
                async move {
                    axum::Json(json!({
                        "messages": sim.messages().len(),
                        "duplicates": sim.duplicates(),
                        "refusals": sim.refusals(),
                    }))
                }
            }
        };
        let outage = {
            let sim = self.clone();
            move |axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>| {
                let sim = sim.clone();
                async move {
                    let on = q.get("on").is_some_and(|v| v == "true");
                    sim.set_outage(on);
                    axum::Json(json!({ "outage": on }))
                }
            }
        };
        axum::Router::new()
            .route("/sms/send", post(send))
            .route("/control/messages", get(messages))
            .route("/control/stats", get(stats))
            .route("/control/outage", post(outage))
    }
}

/// A running simulator: the handle to its state; dropping it stops it.
pub struct SmsHandle {
    pub sim: Arc<SmsSim>,
    task: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for SmsHandle {
    type Target = SmsSim;
    fn deref(&self) -> &SmsSim {
        &self.sim
    }
}

impl Drop for SmsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the simulator on a port of the system's choosing on 127.0.0.1.
pub async fn spawn(settings: Settings) -> anyhow::Result<(SocketAddr, SmsHandle)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((addr, spawn_on(listener, settings)))
}

/// Starts the simulator on `listener`.
pub fn spawn_on(listener: tokio::net::TcpListener, settings: Settings) -> SmsHandle {
    let sim = SmsSim::new(settings);
    let app = sim.router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    SmsHandle { sim, task }
}
