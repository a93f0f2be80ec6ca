//! The hand-written `form-xml` kind as it was before `kind: http` replaced it, kept only as the
//! baseline of `benches/adapter_cpu.rs` (the declarative kind's CPU per task is measured against
//! it). It is not registered as a kind and serves no department.
//!
//! HTTP form-POST carrying an XML document (税务-like): each call is an
//! `application/x-www-form-urlencoded` POST of `appid`, `timestamp` (hall time,
//! `yyyyMMddHHmmss`), `token`, `xml` (`<Request>` with one element per legacy field) and, when a
//! signing key is configured, `sign`. Answers are XML in GBK (or whatever charset the
//! `Content-Type` or the XML declaration names; GB18030 included), always HTTP 200 whether
//! they succeed or not: the system's message element says which (`请求成功`; `接口令牌不存在`
//! → the token is fetched again; `业务流水号重复` → the task is there already and is looked
//! up; any other text → the system refused the task, in its own words). The answer's leaf
//! elements are flattened into the [`Answer`] the department's result mapping reads.
//!
//! The token comes from `token_path` (form `appid`, `secret`, `timestamp`; the answer carries
//! `<token>` and optionally `<expires_in>` seconds) and is kept until shortly before it
//! expires.
//!
//! # Signature
//!
//! `sign` is the lowercase hex HMAC-SM3, keyed with the `sign_key` credential's UTF-8 bytes,
//! of the canonical string of the form: every field sent except `sign`, sorted by name, written
//! `name=value` and joined with `&`, values as they are before URL encoding (the `xml` value is
//! the XML text itself), all UTF-8. For a business call that is
//! `appid=…&timestamp=…&token=…&xml=<Request>…</Request>`. The token request is not signed: it
//! is authenticated by the secret it carries.
//!
//! # Supplements
//!
//! A supplement (补正) round is one more business call, to `supplement_path`, signed like the
//! others: `<Request>` with the department's case number (`case_number_field`), our task id
//! (`serial_field`), the round's serial `<task id>-S<round>` (`supplement_serial_field`),
//! `<bzcs>` the round, `<bzcl>` what the department asked for (joined with `、`) and
//! `<clqd>` with one `<cl>` per material handed in: `<clbm>` code, `<clmc>` name, `<clxs>`
//! 原件|复印件|电子件, `<fs>` copies, `<wjdz>` file URI, `<wjzy>` SHA-256. A `duplicate_texts`
//! answer means the round is there already: success.
//!
//! Options: `token_path`, `submit_path`, `query_path`, `find_path` (required);
//! `supplement_path` (default `/api/supplement`), `supplement_serial_field` (default `bzlsh`);
//! `request_root` (root element of the request XML, default `Request`); `serial_field` (the
//! element carrying our task id to `find_path`, default `ywlsh`); `case_number_field` (the
//! element carrying the department's case number to `query_path`, default
//! `mapping.result.case_number`); `message_field` (answer element with the system's message,
//! default `rtnMsg`); comma-separated texts the message is matched against (contains):
//! `ok_texts` (default `请求成功`), `token_invalid_texts` (`接口令牌不存在,接口令牌已过期`),
//! `duplicate_texts` (`业务流水号重复`), `not_found_texts` (`记录不存在`), `transient_texts`
//! (`系统繁忙,时间戳无效`: refusals worth trying again — overload, and a clock out of step,
//! which an operator fixes without the tasks being lost). Credentials: `app_id`,
//! `app_secret`, optional `sign_key`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use tokio::sync::Mutex;

use yichuang::proto::v1::SupplementDelivery;
use yichuang_adapters::config::DepartmentConfig;
use yichuang_adapters::kinds::{Kind, xml};
use yichuang_adapters::system::{
    Answer, DepartmentSystem, Failure, Gate, Task, supplement_serial, supplied,
};

pub const KIND: Kind = Kind {
    name: "form-xml",
    about: "HTTP form-POST carrying XML, GBK/GB18030 answers, optional HMAC-SM3 signature",
    build,
};

const OPTIONS: &[&str] = &[
    "token_path",
    "submit_path",
    "query_path",
    "find_path",
    "supplement_path",
    "supplement_serial_field",
    "request_root",
    "serial_field",
    "case_number_field",
    "message_field",
    "ok_texts",
    "token_invalid_texts",
    "duplicate_texts",
    "not_found_texts",
    "transient_texts",
];

fn build(config: &DepartmentConfig, gate: Gate) -> Result<Arc<dyn DepartmentSystem>, String> {
    let o = yichuang_adapters::kinds::options(
        config,
        OPTIONS,
        &["token_path", "submit_path", "query_path", "find_path"],
    )?;
    let secret = |name: &str| {
        config
            .credentials
            .get(name)
            .ok_or_else(|| format!("kind form-xml needs credentials.{name}"))?
            .resolve()
            .map_err(|e| format!("credentials.{name}: {e}"))
    };
    let sign_key = match config.credentials.get("sign_key") {
        Some(_) => Some(secret("sign_key")?),
        None => None,
    };
    if !config.endpoint.starts_with("http://") && !config.endpoint.starts_with("https://") {
        return Err(format!(
            "endpoint {:?} is not an http:// or https:// URL",
            config.endpoint
        ));
    }
    let text = |key: &str, default: &str| o.get(key).cloned().unwrap_or_else(|| default.into());
    let texts = |key: &str, default: &str| -> Vec<String> {
        text(key, default)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let case_number_field = o
        .get("case_number_field")
        .cloned()
        .or_else(|| config.mapping.result.case_number.clone())
        .ok_or("kind form-xml needs options.case_number_field or mapping.result.case_number")?;
    let request_root = text("request_root", "Request");
    let serial_field = text("serial_field", "ywlsh");
    let supplement_serial_field = text("supplement_serial_field", "bzlsh");
    for (what, name) in [
        ("options.request_root", &request_root),
        ("options.serial_field", &serial_field),
        ("options.supplement_serial_field", &supplement_serial_field),
        ("options.case_number_field", &case_number_field),
    ]
    .into_iter()
    .chain(
        config
            .mapping
            .request
            .keys()
            .map(|k| ("a field of mapping.request", k)),
    ) {
        if !xml::is_name(name) {
            return Err(format!("{what} {name:?} is not an XML element name"));
        }
    }
    Ok(Arc::new(FormXml {
        client: yichuang_adapters::kinds::http_client(config)?,
        base: config.endpoint.trim_end_matches('/').to_string(),
        app_id: secret("app_id")?,
        app_secret: secret("app_secret")?,
        sign_key,
        token_path: o["token_path"].clone(),
        submit_path: o["submit_path"].clone(),
        query_path: o["query_path"].clone(),
        find_path: o["find_path"].clone(),
        supplement_path: text("supplement_path", "/api/supplement"),
        request_root,
        serial_field,
        supplement_serial_field,
        case_number_field,
        message_field: text("message_field", "rtnMsg"),
        ok: texts("ok_texts", "请求成功"),
        token_invalid: texts("token_invalid_texts", "接口令牌不存在,接口令牌已过期"),
        duplicate: texts("duplicate_texts", "业务流水号重复"),
        not_found: texts("not_found_texts", "记录不存在"),
        transient: texts("transient_texts", "系统繁忙,时间戳无效"),
        token: Mutex::new(None),
        material_names: config.material_names.clone(),
        gate,
    }))
}

struct FormXml {
    client: reqwest::Client,
    base: String,
    app_id: String,
    app_secret: String,
    /// Signs business calls when set.
    sign_key: Option<String>,
    token_path: String,
    submit_path: String,
    query_path: String,
    find_path: String,
    supplement_path: String,
    request_root: String,
    serial_field: String,
    /// The element carrying a supplement round's serial.
    supplement_serial_field: String,
    case_number_field: String,
    message_field: String,
    ok: Vec<String>,
    token_invalid: Vec<String>,
    duplicate: Vec<String>,
    not_found: Vec<String>,
    transient: Vec<String>,
    /// The current token and when to stop using it; one fetch at a time.
    token: Mutex<Option<(String, Instant)>>,
    /// Material code → name, for supplements.
    material_names: std::collections::BTreeMap<String, String>,
    gate: Gate,
}

/// What one call gave, when the system answered it.
enum Reply {
    Ok(Answer),
    NotFound(String),
    Duplicate,
}

/// The materials of a supplement as the hand-written kinds sent them: `<clqd>` with one `<cl>` per
/// material — `<clbm>` code, `<clmc>` name, `<clxs>` form, `<fs>` copies, `<wjdz>` file URI,
/// `<wjzy>` SHA-256 — every text escaped.
fn materials(supplied: &[yichuang_adapters::system::Supplied]) -> String {
    let mut out = String::from("<clqd>");
    for m in supplied {
        out.push_str("<cl>");
        xml::element(&mut out, "clbm", &m.code);
        xml::element(&mut out, "clmc", &m.name);
        xml::element(&mut out, "clxs", m.form);
        xml::element(&mut out, "fs", &m.copies.to_string());
        xml::element(&mut out, "wjdz", &m.uri);
        xml::element(&mut out, "wjzy", &m.sha256);
        out.push_str("</cl>");
    }
    out.push_str("</clqd>");
    out
}

/// The canonical string signed (see the module docs): fields but `sign`, sorted by name,
/// `name=value` joined with `&`.
pub fn canonical(form: &[(&str, &str)]) -> String {
    let mut fields: Vec<&(&str, &str)> = form.iter().filter(|(k, _)| *k != "sign").collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `sign` field: lowercase hex HMAC-SM3 of [`canonical`] under `key`.
pub fn sign(key: &str, form: &[(&str, &str)]) -> String {
    let mut mac = <Hmac<sm3::Sm3> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(canonical(form).as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The time the legacy system expects: hall time (UTC+8), `yyyyMMddHHmmss`.
fn timestamp() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y%m%d%H%M%S")
        .to_string()
}

fn transport(e: reqwest::Error) -> Failure {
    Failure::transient(format!("HTTP: {e}"))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether `message` contains one of `texts`.
fn says(message: &str, texts: &[String]) -> bool {
    texts.iter().any(|t| message.contains(t.as_str()))
}

/// A status and an answer read: what a 429 or 5xx means, and the answer's text in its charset.
async fn read(response: reqwest::Response, what: &str) -> Result<Answer, Failure> {
    let status = response.status();
    let after = retry_after(response.headers());
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.map_err(transport)?;
    let text = xml::decode(&body, content_type.as_deref(), encoding_rs::GBK);
    if status.as_u16() == 429 || status.is_server_error() {
        return Err(Failure::Transient {
            reason: format!("{what}: HTTP {status}: {}", xml::excerpt(&text)),
            retry_after: after,
        });
    }
    if !status.is_success() {
        return Err(Failure::permanent(format!(
            "{what}: HTTP {status} (check the endpoint and options.*_path): {}",
            xml::excerpt(&text)
        )));
    }
    // A 200 that is not XML is a proxy's page or a half-written answer: it may heal.
    xml::flatten(&text).map_err(|e| {
        Failure::transient(format!(
            "{what}: unreadable answer ({e}): {}",
            xml::excerpt(&text)
        ))
    })
}

impl FormXml {
    /// The token to use: the cached one unless it expired or is the one just refused.
    async fn token(&self, refused: Option<&str>) -> Result<String, Failure> {
        let mut token = self.token.lock().await;
        if let Some((t, until)) = token.as_ref()
            && *until > Instant::now()
            && refused != Some(t.as_str())
        {
            return Ok(t.clone());
        }
        self.gate.permit().await;
        let response = self
            .client
            .post(format!("{}{}", self.base, self.token_path))
            .form(&[
                ("appid", self.app_id.as_str()),
                ("secret", self.app_secret.as_str()),
                ("timestamp", timestamp().as_str()),
            ])
            .send()
            .await
            .map_err(transport)?;
        let answer = read(response, "token").await?;
        let message = answer.get(&self.message_field).cloned().unwrap_or_default();
        let access = answer
            .get("token")
            .filter(|t| !t.is_empty() && says(&message, &self.ok));
        let Some(access) = access else {
            // Wrong credentials cannot heal by retrying, but an operator can fix them without
            // the task being lost: transient, so it waits in the delay queues.
            return Err(Failure::transient(format!(
                "token refused: {} (check credentials.app_id and credentials.app_secret)",
                xml::excerpt(&message)
            )));
        };
        let lifetime: u64 = answer
            .get("expires_in")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(300);
        // Renewed a little early, so a token does not expire on its way.
        *token = Some((
            access.clone(),
            Instant::now() + Duration::from_millis(lifetime * 900),
        ));
        Ok(access.clone())
    }

    /// Posts `xml` to `path` with the token (fetched again once if refused) and the signature.
    async fn call(&self, path: &str, xml_text: &str) -> Result<Reply, Failure> {
        let url = format!("{}{}", self.base, path);
        let mut refused: Option<String> = None;
        for _ in 0..2 {
            let token = self.token(refused.as_deref()).await?;
            let stamp = timestamp();
            let mut form = vec![
                ("appid", self.app_id.as_str()),
                ("timestamp", stamp.as_str()),
                ("token", token.as_str()),
                ("xml", xml_text),
            ];
            let signature = self.sign_key.as_deref().map(|key| sign(key, &form));
            if let Some(s) = signature.as_deref() {
                form.push(("sign", s));
            }
            self.gate.permit().await;
            let response = self
                .client
                .post(&url)
                .form(&form)
                .send()
                .await
                .map_err(transport)?;
            let answer = read(response, path).await?;
            let Some(message) = answer.get(&self.message_field) else {
                return Err(Failure::transient(format!(
                    "{path}: the answer has no <{}> (check options.message_field)",
                    self.message_field
                )));
            };
            if says(message, &self.token_invalid) {
                refused = Some(token);
                continue;
            }
            if says(message, &self.duplicate) {
                return Ok(Reply::Duplicate);
            }
            if says(message, &self.not_found) {
                return Ok(Reply::NotFound(message.clone()));
            }
            if says(message, &self.transient) {
                return Err(Failure::transient(format!(
                    "{path}: {}",
                    xml::excerpt(message)
                )));
            }
            if says(message, &self.ok) {
                return Ok(Reply::Ok(answer));
            }
            // The system's own words, for the window: not masked (the runtime masks its logs).
            return Err(Failure::permanent(message.trim().to_string()));
        }
        Err(Failure::transient("the token was refused twice in a row"))
    }

    /// `<Request><name>value</name>…</Request>`, escaped.
    fn request<'a>(&self, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        self.request_with(fields, "")
    }

    /// A request with `more` (XML already written) after the fields.
    fn request_with<'a>(
        &self,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
        more: &str,
    ) -> String {
        let mut out = format!("<{}>", self.request_root);
        for (name, value) in fields {
            xml::element(&mut out, name, value);
        }
        out.push_str(more);
        out.push_str(&format!("</{}>", self.request_root));
        out
    }
}

#[async_trait::async_trait]
impl DepartmentSystem for FormXml {
    async fn submit(&self, task: &Task) -> Result<Answer, Failure> {
        let body = self.request(task.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match self.call(&self.submit_path, &body).await? {
            Reply::Ok(answer) => Ok(answer),
            // Submitted before (the answer was lost): the system tells us what it has.
            Reply::Duplicate => self
                .find(task)
                .await?
                .ok_or_else(|| Failure::transient("a duplicate that cannot be found yet")),
            Reply::NotFound(message) => Err(Failure::permanent(message)),
        }
    }

    async fn poll(&self, _task: &Task, department_case_number: &str) -> Result<Answer, Failure> {
        let body = self.request([(self.case_number_field.as_str(), department_case_number)]);
        match self.call(&self.query_path, &body).await? {
            Reply::Ok(answer) => Ok(answer),
            Reply::NotFound(message) => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number}: {message}"
            ))),
            Reply::Duplicate => Err(Failure::transient(
                "a query answered as a duplicate submission",
            )),
        }
    }

    async fn resupply(
        &self,
        task: &Task,
        department_case_number: &str,
        supplement: &SupplementDelivery,
    ) -> Result<Answer, Failure> {
        let serial = supplement_serial(task.id(), supplement.round);
        let round = supplement.round.to_string();
        let requested = supplement.requested.join("、");
        let materials = materials(&supplied(supplement, &self.material_names));
        let body = self.request_with(
            [
                (self.case_number_field.as_str(), department_case_number),
                (self.serial_field.as_str(), task.id()),
                (self.supplement_serial_field.as_str(), serial.as_str()),
                ("bzcs", round.as_str()),
                ("bzcl", requested.as_str()),
            ],
            &materials,
        );
        match self.call(&self.supplement_path, &body).await? {
            Reply::Ok(answer) => Ok(answer),
            // Handed over before (the answer was lost): the case goes on, polling reads it.
            Reply::Duplicate => Ok(Answer::new()),
            Reply::NotFound(message) => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number}: {message}"
            ))),
        }
    }

    async fn find(&self, task: &Task) -> Result<Option<Answer>, Failure> {
        let body = self.request([(self.serial_field.as_str(), task.id())]);
        match self.call(&self.find_path, &body).await? {
            Reply::Ok(answer)
                if answer
                    .get(&self.case_number_field)
                    .is_some_and(|n| !n.trim().is_empty()) =>
            {
                Ok(Some(answer))
            }
            _ => Ok(None),
        }
    }
}
