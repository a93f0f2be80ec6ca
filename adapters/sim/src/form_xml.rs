//! A department system reached by HTTP form-POSTs carrying XML, answering in GBK (税务-like).
//! Awkward as the real ones: every answer is HTTP 200 with the verdict in `<rtnMsg>` text
//! (`请求成功`, `接口令牌不存在`, `业务流水号重复`, `缺少必填项 …`, `签名验证失败`,
//! `系统繁忙，请稍后再试`), encoded in GBK (or GB18030, as configured) with the charset in
//! `Content-Type` and the XML declaration; overload is 429 with `Retry-After`, failures a 500
//! HTML page, maintenance 503 `系统维护中`, dates `2019年06月20日`. A submission whose answer
//! hangs is recorded before the hang, as when a real answer is lost on its way back.
//!
//! API (all `application/x-www-form-urlencoded` POSTs): `/api/token` (`appid`, `secret`,
//! `timestamp`) → `<token>`, `<expires_in>`; `/api/submit`, `/api/query` (`<slbh>`),
//! `/api/find` (`<ywlsh>`), `/api/supplement` (补正: `<slbh>`, `<bzlsh>` the round's serial,
//! `<bzcs>` the round, `<clqd><cl><clmc>…` the materials; `业务流水号重复` for a round it has,
//! `办件不在补正状态` when the case is not waiting for one), each with `appid`, `timestamp` (hall time `yyyyMMddHHmmss`, within
//! five minutes), `token`, `xml` and — when a signing key is set — `sign`, the lowercase hex
//! HMAC-SM3 of the other fields sorted by name as `name=value` joined by `&`. `GET /_sim/stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use crate::core::{
    Behaviour, Fault, Outcome, REJECTION_REASONS, Resupply, SUPPLEMENT_MATERIALS, Sim, SimCase,
    date_cn, outcome_word,
};
use crate::xml;

/// The character set of the answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Charset {
    #[serde(rename = "GBK")]
    Gbk,
    #[serde(rename = "GB18030")]
    Gb18030,
}

impl Charset {
    fn encoding(self) -> &'static encoding_rs::Encoding {
        match self {
            Charset::Gbk => encoding_rs::GBK,
            Charset::Gb18030 => encoding_rs::GB18030,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Charset::Gbk => "GBK",
            Charset::Gb18030 => "GB18030",
        }
    }
}

/// Settings of the simulated system.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub behaviour: Behaviour,
    pub app_id: String,
    pub app_secret: String,
    /// When set, business calls must carry a valid `sign`.
    pub sign_key: Option<String>,
    pub charset: Charset,
    /// Lifetime of a token.
    pub token_ttl_secs: u64,
    /// Name of the document issued on approval.
    pub document_name: String,
    /// Fields a submission must carry, not blank.
    pub required: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            behaviour: Behaviour {
                department: "sw".into(),
                ..Behaviour::default()
            },
            app_id: "yichuang".into(),
            app_secret: "sim-secret".into(),
            sign_key: None,
            charset: Charset::Gbk,
            token_ttl_secs: 7200,
            document_name: "税务事项通知书".into(),
            required: vec!["ywlsh".into(), "nsrmc".into()],
        }
    }
}

/// The running system.
pub struct FormXmlSim {
    pub sim: Sim,
    settings: Settings,
    tokens: Mutex<HashMap<String, Instant>>,
    /// Business calls refused for a missing or wrong signature.
    refused_signatures: AtomicU64,
    /// Business calls refused for a stale or unknown token.
    refused_tokens: AtomicU64,
}

type Shared = State<Arc<FormXmlSim>>;
type Fields = Form<HashMap<String, String>>;

impl FormXmlSim {
    pub fn new(settings: Settings) -> Arc<FormXmlSim> {
        Arc::new(FormXmlSim {
            sim: Sim::new(settings.behaviour.clone()),
            settings,
            tokens: Mutex::new(HashMap::new()),
            refused_signatures: AtomicU64::new(0),
            refused_tokens: AtomicU64::new(0),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/token", post(token))
            .route("/api/submit", post(submit))
            .route("/api/query", post(query))
            .route("/api/find", post(find))
            .route("/api/supplement", post(supplement))
            .route("/_sim/stats", get(stats))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let _ = axum::serve(listener, self.router()).await;
    }

    pub fn refused_signatures(&self) -> u64 {
        self.refused_signatures.load(Ordering::Relaxed)
    }

    /// Forgets every token, as the real system does when it restarts.
    pub fn revoke_tokens(&self) {
        self.tokens.lock().unwrap().clear();
    }

    pub fn refused_tokens(&self) -> u64 {
        self.refused_tokens.load(Ordering::Relaxed)
    }

    /// An answer: always 200, the verdict in `<rtnMsg>`, in the configured charset.
    fn reply(&self, code: &str, message: &str, body: &str) -> Response {
        let charset = self.settings.charset;
        let doc = format!(
            "<?xml version=\"1.0\" encoding=\"{}\"?>\n<Response><head><rtnCode>{code}</rtnCode>\
             <rtnMsg>{}</rtnMsg></head><body>{body}</body></Response>",
            charset.label(),
            xml::escape(message)
        );
        let (bytes, _, _) = charset.encoding().encode(&doc);
        (
            [(
                header::CONTENT_TYPE,
                format!("text/xml; charset={}", charset.label()),
            )],
            bytes.into_owned(),
        )
            .into_response()
    }

    fn data(&self, case: &SimCase) -> String {
        let (step, outcome) = case.state(self.sim.decision_delay());
        let received = date_cn(case.received_at);
        let mut fields: Vec<(&str, String)> = vec![
            ("slbh", case.number.clone()),
            ("ywlsh", case.serial.clone()),
            ("hjmc", step.into()),
            ("blzt", outcome.map_or("办理中", outcome_word).into()),
            ("slsj", received),
        ];
        if let Some(taken) = &case.supplement {
            fields.push(("bzlsh", taken.serial.clone()));
            fields.push(("bzcs", taken.round.to_string()));
        }
        match outcome {
            Some(Outcome::Approved) => {
                fields.push(("wsbh", case.licence_number()));
                fields.push(("wsmc", self.settings.document_name.clone()));
                fields.push(("bjsj", date_cn(self.sim.now())));
            }
            Some(Outcome::Rejected) => fields.push(("spyj", REJECTION_REASONS.into())),
            Some(Outcome::Supplement) => fields.push(("bzcl", SUPPLEMENT_MATERIALS.into())),
            None => {}
        }
        xml::elements(fields.iter().map(|(k, v)| (*k, v.as_str())))
    }

    /// The response a fault gives (a hang has already been waited out: `None`).
    async fn fault(&self, fault: Fault) -> Option<Response> {
        match fault {
            Fault::ServerError if self.sim.random() < 0.5 => Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body><h1>500 Internal Server Error</h1></body></html>",
                )
                    .into_response(),
            ),
            // The other half: a 200 whose text says to come back later.
            Fault::ServerError => Some(self.reply("999", "系统繁忙，请稍后再试", "")),
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
            Fault::Maintenance => Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "系统维护中，请稍后再试",
                )
                    .into_response(),
            ),
        }
    }

    /// The checks every business call passes, in the real system's order; the request's
    /// leaves, or the refusal.
    fn check(&self, form: &HashMap<String, String>) -> Result<xml::Parsed, Box<Response>> {
        let fresh = form
            .get("timestamp")
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%d%H%M%S").ok())
            .is_some_and(|t| {
                let hall = (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc();
                (hall - t).num_seconds().abs() <= 300
            });
        if !fresh {
            return Err(Box::new(self.reply("103", "时间戳无效", "")));
        }
        let known = form.get("token").is_some_and(|t| {
            self.tokens
                .lock()
                .unwrap()
                .get(t)
                .is_some_and(|until| *until > Instant::now())
        });
        if !known || form.get("appid") != Some(&self.settings.app_id) {
            self.refused_tokens.fetch_add(1, Ordering::Relaxed);
            return Err(Box::new(self.reply("101", "接口令牌不存在", "")));
        }
        if let Some(key) = &self.settings.sign_key {
            let mut names: Vec<&String> = form.keys().filter(|k| *k != "sign").collect();
            names.sort();
            let canonical = names
                .iter()
                .map(|k| format!("{k}={}", form[*k]))
                .collect::<Vec<_>>()
                .join("&");
            let mut mac = <Hmac<sm3::Sm3> as Mac>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(canonical.as_bytes());
            let expected: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if form.get("sign") != Some(&expected) {
                self.refused_signatures.fetch_add(1, Ordering::Relaxed);
                return Err(Box::new(self.reply("102", "签名验证失败", "")));
            }
        }
        let parsed = form
            .get("xml")
            .ok_or("no xml field".to_string())
            .and_then(|x| xml::parse(x))
            .map_err(|e| Box::new(self.reply("104", &format!("报文格式错误：{e}"), "")))?;
        if parsed.elements.first().map(String::as_str) != Some("Request") {
            return Err(Box::new(self.reply(
                "104",
                "报文格式错误：根元素应为Request",
                "",
            )));
        }
        Ok(parsed)
    }

    /// Takes a supplement round for a case.
    fn take_supplement(&self, request: xml::Parsed) -> Response {
        let leaf = |k: &str| request.leaves.get(k).map_or("", |v| v.trim());
        for required in ["slbh", "bzlsh"] {
            if leaf(required).is_empty() {
                return self.reply("301", &format!("缺少必填项 {required}"), "");
            }
        }
        let Some(round) = leaf("bzcs").parse::<u32>().ok().filter(|r| *r > 0) else {
            return self.reply("302", "补正次数格式错误", "");
        };
        let supplied = request.lists.get("clmc").cloned().unwrap_or_default();
        match self
            .sim
            .resupply(leaf("slbh"), round, leaf("bzlsh"), supplied)
        {
            Resupply::Taken(case) => self.reply("000", "请求成功", &self.data(&case)),
            Resupply::Duplicate(_) => self.reply("201", "业务流水号重复", ""),
            Resupply::NotWaiting(_) => self.reply("303", "办件不在补正状态", ""),
            Resupply::Unknown => self.reply("404", "记录不存在", ""),
        }
    }

    fn accept(&self, fields: BTreeMap<String, String>) -> Response {
        for required in &self.settings.required {
            if fields.get(required).is_none_or(|v| v.trim().is_empty()) {
                return self.reply("301", &format!("缺少必填项 {required}"), "");
            }
        }
        if let Some(date) = fields.get("slsj")
            && chrono::NaiveDate::parse_from_str(date, "%Y年%m月%d日").is_err()
        {
            return self.reply("302", "受理日期格式错误，应为yyyy年MM月dd日", "");
        }
        let serial = fields.get("ywlsh").cloned().unwrap_or_default();
        match self.sim.submit(&serial, fields) {
            Ok(case) => self.reply("000", "请求成功", &self.data(&case)),
            Err(_) => self.reply("201", "业务流水号重复", ""),
        }
    }
}

async fn token(State(s): Shared, Form(form): Fields) -> Response {
    if let Some(fault) = s.sim.request()
        && let Some(r) = s.fault(fault).await
    {
        return r;
    }
    if form.get("appid") != Some(&s.settings.app_id)
        || form.get("secret") != Some(&s.settings.app_secret)
    {
        return s.reply("100", "应用认证失败", "");
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    s.tokens.lock().unwrap().insert(
        token.clone(),
        Instant::now() + Duration::from_secs(s.settings.token_ttl_secs),
    );
    let ttl = s.settings.token_ttl_secs.to_string();
    s.reply(
        "000",
        "请求成功",
        &xml::elements([("token", token.as_str()), ("expires_in", ttl.as_str())]),
    )
}

async fn submit(State(s): Shared, Form(form): Fields) -> Response {
    match s.sim.request() {
        // The submission is taken; its answer is what hangs.
        Some(Fault::Hang(d)) => {
            let answer = match s.check(&form) {
                Ok(request) => s.accept(request.leaves),
                Err(refusal) => *refusal,
            };
            tokio::time::sleep(d).await;
            answer
        }
        Some(fault) => s.fault(fault).await.expect("not a hang"),
        None => match s.check(&form) {
            Ok(request) => s.accept(request.leaves),
            Err(refusal) => *refusal,
        },
    }
}

async fn query(State(s): Shared, Form(form): Fields) -> Response {
    if let Some(fault) = s.sim.request()
        && let Some(r) = s.fault(fault).await
    {
        return r;
    }
    let fields = match s.check(&form) {
        Ok(request) => request.leaves,
        Err(refusal) => return *refusal,
    };
    match fields.get("slbh").and_then(|n| s.sim.by_number(n)) {
        Some(case) => s.reply("000", "请求成功", &s.data(&case)),
        None => s.reply("404", "记录不存在", ""),
    }
}

async fn find(State(s): Shared, Form(form): Fields) -> Response {
    if let Some(fault) = s.sim.request()
        && let Some(r) = s.fault(fault).await
    {
        return r;
    }
    let fields = match s.check(&form) {
        Ok(request) => request.leaves,
        Err(refusal) => return *refusal,
    };
    match fields.get("ywlsh").and_then(|n| s.sim.by_serial(n)) {
        Some(case) => s.reply("000", "请求成功", &s.data(&case)),
        None => s.reply("404", "记录不存在", ""),
    }
}

async fn supplement(State(s): Shared, Form(form): Fields) -> Response {
    match s.sim.request() {
        // The supplement is taken; its answer is what hangs.
        Some(Fault::Hang(d)) => {
            let answer = match s.check(&form) {
                Ok(request) => s.take_supplement(request),
                Err(refusal) => *refusal,
            };
            tokio::time::sleep(d).await;
            answer
        }
        Some(fault) => s.fault(fault).await.expect("not a hang"),
        None => match s.check(&form) {
            Ok(request) => s.take_supplement(request),
            Err(refusal) => *refusal,
        },
    }
}

async fn stats(State(s): Shared) -> Json<crate::core::Stats> {
    Json(s.sim.stats())
}
