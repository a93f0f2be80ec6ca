//! `kind: http`: any legacy HTTP system, reached by its description (`crate::describe`) alone.
//! This module owns the one HTTP path every department call takes: the request written from the
//! operation's templates (form, JSON, XML, a document inside a form field, SOAP; the charset;
//! SM4 sealing; the signature), the gate (rate limit and any pause the system asked for), the
//! timeout, the answer read in its charset (JSON, XML, SOAP; a sealed field opened), and the
//! verdict the rules give it. The runtime above it owns retries, polling and deduplication.
//!
//! Template and expression variables: `fields` (the department's `mapping.request`), `task`
//! (the task message, as `mapping.request` sees it), `serial` (our task id), `case_number` (the
//! department's, in `query` and `supplement`), `token`, `credentials.<name>`, `now` (hall time,
//! RFC 3339), `supplement` (`serial`, `round`, `requested` list, `requested_text` joined with
//! `、`, `materials`: `clbm` code, `clmc` name, `clxs` form, `fs` copies, `wjdz` file URI,
//! `wjzy` SHA-256, `wjdx` bytes), `document` (the operation's document, written); in rules:
//! `answer`, `status`, `text`; in a signature: `form`, `query`, `body`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use minijinja::value::Value;
use tokio::sync::Mutex;

use super::{Kind, xml};
use crate::config::DepartmentConfig;
use crate::describe::{
    AnswerFormat, Description, Document, Format, Method, Opened, Operation, Place, Seal, Verdict,
};
use crate::mapping::{Decision, Reading};
use crate::system::{Answer, DepartmentSystem, Failure, Gate, Task, supplement_serial, supplied};
use yichuang::proto::v1::{ResultDocument, SupplementDelivery};

pub const KIND: Kind = Kind {
    name: "http",
    about: "any HTTP system by its description: operations, encodings, rules, outcome",
    build,
};

/// The answer key a duplicate's case number is put under, read before `outcome.case_number`.
pub const DUPLICATE_CASE_NUMBER: &str = "_case_number";

fn build(config: &DepartmentConfig, gate: Gate) -> Result<Arc<dyn DepartmentSystem>, String> {
    Ok(Arc::new(Http::new(config, gate)?))
}

/// A department's system reached through its description.
pub struct Http {
    d: Arc<Description>,
    client: reqwest::Client,
    base: String,
    /// `credentials`, resolved.
    secrets: BTreeMap<String, String>,
    /// The same, as templates see them.
    credentials: Value,
    timeout: Duration,
    gate: Gate,
    /// The current token and when to stop using it; one fetch at a time.
    token: Mutex<Option<(String, Instant)>>,
    material_names: BTreeMap<String, String>,
    /// Each exchange is shown here when set (`yichuang-adapter try`).
    pub trace: Option<Arc<dyn Fn(Exchange) + Send + Sync>>,
}

/// One request and its answer, for a dry run: personal data is masked by the caller.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub operation: &'static str,
    pub request: String,
    pub status: u16,
    pub answer: String,
    pub verdict: String,
}

/// What a call gave.
struct Reply {
    verdict: Verdict,
    answer: Answer,
    case_number: Option<String>,
    reason: String,
    retry_after: Option<Duration>,
}

impl Http {
    /// The system of a department file whose kind is `http`.
    pub fn new(config: &DepartmentConfig, gate: Gate) -> Result<Http, String> {
        let d = config
            .http
            .as_ref()
            .ok_or("kind http needs an `http:` section describing the system")?
            .0
            .clone();
        if !config.endpoint.starts_with("http://") && !config.endpoint.starts_with("https://") {
            return Err(format!(
                "endpoint {:?} is not an http:// or https:// URL",
                config.endpoint
            ));
        }
        if d.find.is_none() && !d.deduplicates_by_serial {
            return Err("http: no `find` operation and no `deduplicates_by_serial: true`: describe how a task submitted before a crash is recognised (a lookup by serial, or a system that answers a repeated serial with its case number)".into());
        }
        let mut secrets = BTreeMap::new();
        for (name, secret) in &config.credentials {
            secrets.insert(
                name.clone(),
                secret
                    .resolve()
                    .map_err(|e| format!("credentials.{name}: {e}"))?,
            );
        }
        // Every key a seal names must be among the credentials.
        let mut seals: Vec<(String, Option<String>)> = Vec::new();
        let mut operations: Vec<&Operation> = vec![&d.submit, &d.query];
        operations.extend(d.find.iter());
        operations.extend(d.supplement.iter());
        operations.extend(d.token.iter().map(|t| &t.call));
        for op in &operations {
            if let Some(seal) = op.document.as_ref().and_then(|doc| doc.encrypt.as_ref()) {
                seals.push((seal.key.clone(), seal.iv.clone()));
            }
            if let Some(opened) = &op.answer.decrypt {
                seals.push((opened.key.clone(), opened.iv.clone()));
            }
            let names = op.body.iter().flat_map(|b| {
                b.soap
                    .iter()
                    .map(|s| ("soap.operation", s.operation.as_str()))
                    .chain(b.xml.iter().map(|x| ("xml.root", x.root.as_str())))
            });
            let roots = op
                .document
                .iter()
                .flat_map(|d| d.xml.iter().map(|x| ("document.xml.root", x.root.as_str())));
            for (what, name) in names.chain(roots) {
                if !xml::is_name(name) {
                    return Err(format!("http: {what} {name:?} is not an XML element name"));
                }
            }
            if op.body.as_ref().is_some_and(|b| b.given() != 1) {
                return Err("http: a body is one of `form`, `json`, `xml`, `soap`, `text`".into());
            }
            if let Some(doc) = &op.document
                && doc.json.is_some() == doc.xml.is_some()
            {
                return Err("http: a document is `json:` or `xml:`, one of the two".into());
            }
        }
        for (key, iv) in seals {
            for name in std::iter::once(key).chain(iv) {
                let value = secrets.get(&name).ok_or_else(|| {
                    format!("http: the key {name:?} is not among the credentials")
                })?;
                crate::crypto::key16(value).map_err(|e| format!("credentials.{name}: {e}"))?;
            }
        }
        Ok(Http {
            d,
            client: super::http_client(config)?,
            base: config.endpoint.trim_end_matches('/').to_string(),
            credentials: Value::from_serialize(&secrets),
            secrets,
            timeout: Duration::from_secs(config.limits.timeout_secs),
            gate,
            token: Mutex::new(None),
            material_names: config.material_names.clone(),
            trace: None,
        })
    }

    /// The variables every template sees, with `more`.
    fn context(&self, token: Option<&str>, more: Vec<(&str, Value)>) -> BTreeMap<String, Value> {
        let mut ctx = BTreeMap::new();
        ctx.insert("credentials".to_string(), self.credentials.clone());
        let now = (chrono::Utc::now() + chrono::Duration::hours(8))
            .format("%Y-%m-%dT%H:%M:%S+08:00")
            .to_string();
        ctx.insert("now".to_string(), Value::from(now));
        ctx.insert(
            "token".to_string(),
            token.map_or(Value::UNDEFINED, Value::from),
        );
        for (k, v) in more {
            ctx.insert(k.to_string(), v);
        }
        ctx
    }

    /// The variables of a task. The task message itself is converted only if a template
    /// reads it (most read only `fields`, which are already rendered).
    fn task_vars(task: &Task) -> Vec<(&'static str, Value)> {
        vec![
            ("serial", Value::from(task.id())),
            (
                "fields",
                task.fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            ),
            (
                "task",
                Value::from_object(LazyTask {
                    message: task.message.clone(),
                    value: std::sync::OnceLock::new(),
                }),
            ),
        ]
    }

    /// The token to use: the cached one unless it expired or is the one just refused.
    async fn token(&self, refused: Option<&str>) -> Result<Option<String>, Failure> {
        let Some(call) = &self.d.token else {
            return Ok(None);
        };
        let mut token = self.token.lock().await;
        if let Some((t, until)) = token.as_ref()
            && *until > Instant::now()
            && refused != Some(t.as_str())
        {
            return Ok(Some(t.clone()));
        }
        let reply = self
            .send("token", &call.call, self.context(None, Vec::new()), false)
            .await?;
        if reply.verdict != Verdict::Success {
            // Wrong credentials cannot heal by retrying, but an operator can fix them without
            // the task being lost: transient, so it waits in the delay queues.
            return Err(Failure::Transient {
                reason: format!("token refused: {} (check the credentials)", reply.reason),
                retry_after: reply.retry_after,
            });
        }
        let ctx = answer_context(&reply.answer, 200, "");
        let value = call
            .value
            .text(&ctx)
            .map_err(|e| Failure::transient(format!("token: {e}")))?;
        if value.is_empty() {
            return Err(Failure::transient(format!(
                "token: the answer has no token at `{}`",
                call.value.source()
            )));
        }
        let lifetime = match &call.lifetime {
            Some(e) => e
                .text(&ctx)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| *s > 0.0)
                .map_or(call.lifetime_secs, |s| s as u64),
            None => call.lifetime_secs,
        };
        // Renewed a little early, so a token does not expire on its way.
        *token = Some((
            value.clone(),
            Instant::now() + Duration::from_millis(lifetime * 900),
        ));
        Ok(Some(value))
    }

    /// Makes a business call: with the token (fetched again once if refused) and the common
    /// fields.
    async fn call(
        &self,
        what: &'static str,
        op: &Operation,
        vars: Vec<(&'static str, Value)>,
    ) -> Result<Reply, Failure> {
        let mut refused: Option<String> = None;
        for _ in 0..2 {
            let token = self.token(refused.as_deref()).await?;
            let ctx = self.context(token.as_deref(), vars.clone());
            let reply = self.send(what, op, ctx, true).await?;
            if reply.verdict == Verdict::TokenInvalid && token.is_some() {
                refused = token;
                continue;
            }
            return Ok(reply);
        }
        Err(Failure::transient(format!(
            "{what}: the token was refused twice in a row"
        )))
    }

    /// Writes, sends and judges one request. Every request to the system passes here.
    async fn send(
        &self,
        what: &'static str,
        op: &Operation,
        ctx: BTreeMap<String, Value>,
        business: bool,
    ) -> Result<Reply, Failure> {
        let token = ctx
            .get("token")
            .filter(|t| !t.is_undefined())
            .map(|t| t.to_string());
        let (request, shown) = self
            .request(op, ctx, business)
            // A template that cannot render this task (a field it lacks): the window must act.
            .map_err(|e| Failure::permanent(format!("{what}: {e}")))?;
        self.gate.permit().await;
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| Failure::transient(format!("{what}: HTTP: {e}")))?;
        let reply = self.judge(what, op, response).await?;
        if let Some(trace) = &self.trace {
            // Credentials and the token are never shown; nor the token a token call hands out.
            let handed = (what == "token")
                .then(|| self.d.token.as_ref())
                .flatten()
                .and_then(|t| {
                    t.value
                        .text(&answer_context(&reply.0.answer, reply.1, &reply.2))
                        .ok()
                });
            let hide = |text: &str| {
                let mut text = text.to_string();
                for secret in self
                    .secrets
                    .values()
                    .chain(token.iter())
                    .chain(handed.iter())
                {
                    if secret.len() >= 4 {
                        text = text.replace(secret.as_str(), "***");
                    }
                }
                text
            };
            trace(Exchange {
                operation: what,
                request: hide(&shown),
                status: reply.1,
                answer: hide(&format!(
                    "{}\n(read as) {}",
                    reply.2.trim(),
                    serde_json::to_string(&reply.0.answer).unwrap_or_default()
                )),
                verdict: format!("{:?}: {}", reply.0.verdict, reply.0.reason),
            });
        }
        Ok(reply.0)
    }

    /// The request of `op` over `ctx`, and its text for a dry run.
    fn request(
        &self,
        op: &Operation,
        mut ctx: BTreeMap<String, Value>,
        business: bool,
    ) -> Result<(reqwest::RequestBuilder, String), String> {
        let charset = op.charset.unwrap_or(self.d.charset);
        let common = business.then_some(&self.d.common);
        let mut plain_document = None;
        if let Some(doc) = &op.document {
            let plain = self.document_plain(doc, &Value::from(ctx.clone()))?;
            let text = match &doc.encrypt {
                Some(seal) => {
                    let sealed = self.seal(seal, &plain)?;
                    plain_document = Some(plain);
                    sealed
                }
                None => plain,
            };
            ctx.insert("document".into(), Value::from(text));
        }
        // One context for every template of the call.
        let cv = Value::from(ctx);
        let render_all = |map: &BTreeMap<String, crate::expr::Template>,
                          out: &mut Vec<(String, String)>|
         -> Result<(), String> {
            for (k, t) in map {
                out.push((k.clone(), t.render(&cv)?));
            }
            Ok(())
        };
        let path = op.path.render(&cv)?;
        let mut query = Vec::new();
        let mut headers = Vec::new();
        if let Some(c) = common {
            render_all(&c.query, &mut query)?;
            render_all(&c.headers, &mut headers)?;
        }
        render_all(&op.query, &mut query)?;
        render_all(&op.headers, &mut headers)?;
        let mut form = Vec::new();
        let mut body: Option<(String, String)> = None; // content type, text
        let body_of = op.body.as_ref();
        if let Some(fields) = body_of.and_then(|b| b.form.as_ref()) {
            if let Some(c) = common {
                render_all(&c.form, &mut form)?;
            }
            render_all(fields, &mut form)?;
        } else if let Some(e) = body_of.and_then(|b| b.json.as_ref()) {
            let v = e.eval(&cv)?;
            let text = serde_json::to_string(&v).map_err(|e| format!("JSON body: {e}"))?;
            body = Some(("application/json".into(), text));
        } else if let Some(x) = body_of.and_then(|b| b.xml.as_ref()) {
            let text = xml_document(&x.root, &x.value.eval(&cv)?)?;
            body = Some((
                "text/xml".into(),
                format!(
                    "<?xml version=\"1.0\" encoding=\"{}\"?>{text}",
                    label(charset)
                ),
            ));
        } else if let Some(s) = body_of.and_then(|b| b.soap.as_ref()) {
            let v = s.value.eval(&cv)?;
            let mut inner = String::new();
            write_children(&mut inner, &v)?;
            let text = format!(
                "<?xml version=\"1.0\" encoding=\"{}\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:tns=\"{}\"><soap:Body><tns:{op_name}>{inner}</tns:{op_name}></soap:Body></soap:Envelope>",
                label(charset),
                xml::escape(&s.namespace),
                op_name = s.operation,
            );
            let action = match &s.action {
                Some(t) => t.render(&minijinja::context! {
                    namespace => s.namespace.clone(),
                    operation => s.operation.clone(),
                    ..cv.clone()
                })?,
                None => format!("{}/{}", s.namespace, s.operation),
            };
            headers.push(("SOAPAction".into(), format!("\"{action}\"")));
            body = Some(("text/xml".into(), text));
        } else if let Some(t) = body_of.and_then(|b| b.text.as_ref()) {
            body = Some((t.content_type.clone(), t.template.render(&cv)?));
        }
        let sign = common
            .and_then(|c| c.sign.as_ref())
            .filter(|s| s.when.as_ref().is_none_or(|w| w.test(&cv).unwrap_or(false)));
        if let Some(sign) = sign {
            let pairs = |v: &[(String, String)]| {
                Value::from_serialize(v.iter().cloned().collect::<BTreeMap<_, _>>())
            };
            let value = sign.value.render(&minijinja::context! {
                form => pairs(&form),
                query => pairs(&query),
                body => body.as_ref().map_or("", |b| b.1.as_str()),
                ..cv.clone()
            })?;
            match sign.place {
                Place::Form => form.push((sign.name.clone(), value)),
                Place::Header => headers.push((sign.name.clone(), value)),
                Place::Query => query.push((sign.name.clone(), value)),
            }
        }
        let url = format!("{}{}", self.base, path);
        // What a dry run shows; nothing is written when no one looks.
        let traced = self.trace.is_some();
        let mut shown = if traced {
            format!("{:?} {url}", op.method)
        } else {
            String::new()
        };
        let mut request = match op.method {
            Method::Get => self.client.get(&url),
            Method::Post => self.client.post(&url),
            Method::Put => self.client.put(&url),
        };
        if !query.is_empty() {
            request = request.query(&query);
            if traced {
                shown.push_str(&format!(" query {query:?}"));
            }
        }
        for (k, v) in &headers {
            request = request.header(k.as_str(), v.as_str());
            if traced {
                shown.push_str(&format!("\n{k}: {v}"));
            }
        }
        if let Some(plain) = plain_document.as_ref().filter(|_| traced) {
            shown.push_str(&format!("\n(document before sealing) {plain}"));
        }
        let encoding = charset.encoding();
        if !form.is_empty() {
            let mut text = String::new();
            for (k, v) in &form {
                if !text.is_empty() {
                    text.push('&');
                }
                text.extend(form_urlencoded::byte_serialize(&encoding.encode(k).0));
                text.push('=');
                text.extend(form_urlencoded::byte_serialize(&encoding.encode(v).0));
            }
            if traced {
                shown.push_str(&format!("\n\n{form:?}"));
            }
            request = request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    format!(
                        "application/x-www-form-urlencoded; charset={}",
                        label(charset)
                    ),
                )
                .body(text);
        } else if let Some((content_type, text)) = body {
            if traced {
                shown.push_str(&format!("\n\n{text}"));
            }
            request = request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    format!("{content_type}; charset={}", label(charset)),
                )
                .body(encoding.encode(&text).0.into_owned());
        }
        Ok((request, shown))
    }

    /// An operation's document, written, before any sealing.
    fn document_plain(&self, doc: &Document, ctx: &Value) -> Result<String, String> {
        Ok(match (&doc.json, &doc.xml) {
            (Some(e), _) => {
                serde_json::to_string(&e.eval(ctx)?).map_err(|e| format!("document: {e}"))?
            }
            (None, Some(x)) => xml_document(&x.root, &x.value.eval(ctx)?)?,
            (None, None) => String::new(),
        })
    }

    fn key(&self, name: &str) -> Result<[u8; 16], String> {
        let value = self
            .secrets
            .get(name)
            .ok_or_else(|| format!("no credential {name:?}"))?;
        crate::crypto::key16(value).map_err(|e| format!("credentials.{name}: {e}"))
    }

    fn seal(&self, seal: &Seal, text: &str) -> Result<String, String> {
        let key = self.key(&seal.key)?;
        let iv = seal.iv.as_deref().map(|n| self.key(n)).transpose()?;
        let sealed = crate::crypto::sm4_encrypt(seal.cipher, &key, iv.as_ref(), text.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(crate::crypto::encode(&sealed, seal.encoding))
    }

    fn open(&self, opened: &Opened, text: &str) -> Result<String, String> {
        let key = self.key(&opened.key)?;
        let iv = opened.iv.as_deref().map(|n| self.key(n)).transpose()?;
        let sealed = crate::crypto::decode(text, opened.encoding).map_err(|e| e.to_string())?;
        let plain = crate::crypto::sm4_decrypt(opened.cipher, &key, iv.as_ref(), &sealed)
            .map_err(|e| e.to_string())?;
        String::from_utf8(plain).map_err(|_| "the opened text is not UTF-8".to_string())
    }

    /// Reads an answer in its charset and format, and judges it by the rules.
    async fn judge(
        &self,
        what: &str,
        op: &Operation,
        response: reqwest::Response,
    ) -> Result<(Reply, u16, String), Failure> {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Failure::transient(format!("{what}: HTTP: {e}")))?;
        let fallback = self
            .d
            .answer_charset
            .or(op.charset)
            .unwrap_or(self.d.charset)
            .encoding();
        let text = xml::decode(&bytes, content_type.as_deref(), fallback);
        let read = self.read_answer(&op.answer, &text);
        let (answer, readable) = match read {
            Ok(a) => (a, true),
            Err(_) => (Answer::new(), false),
        };
        let ctx = answer_context(&answer, status, &text);
        let rules = op.rules.iter().chain(self.d.rules.iter());
        let mut verdict = None;
        let mut case_number = None;
        let mut rule_reason = None;
        for rule in rules {
            let holds = rule
                .when
                .test(&ctx)
                .map_err(|e| Failure::transient(format!("{what}: {e}")))?;
            if holds {
                verdict = Some(rule.then);
                if let Some(e) = &rule.case_number {
                    case_number = e.text(&ctx).ok().filter(|n| !n.is_empty());
                }
                rule_reason = rule.reason.as_ref();
                break;
            }
        }
        let verdict = verdict.unwrap_or(if status == 429 || status >= 500 {
            Verdict::Transient
        } else if !(200..300).contains(&status) {
            Verdict::Permanent
        } else if !readable {
            // A 200 that is not what the system writes: a proxy's page or a half-written answer.
            Verdict::Transient
        } else {
            self.d.otherwise
        });
        // A success needs no reason (the dry run shows its verdict only).
        let reason = match verdict {
            Verdict::Success if self.trace.is_none() => String::new(),
            _ => rule_reason
                .or(self.d.reason.as_ref())
                .map(|e| e.text(&ctx).unwrap_or_default())
                .unwrap_or_default(),
        };
        let reason = if reason.is_empty() && (verdict != Verdict::Success || self.trace.is_some()) {
            format!("HTTP {status}: {}", xml::excerpt(&text))
        } else {
            reason
        };
        Ok((
            Reply {
                verdict,
                answer,
                case_number,
                reason,
                retry_after,
            },
            status,
            text,
        ))
    }

    /// An answer's text as a flat map, with a sealed field opened.
    fn read_answer(&self, format: &AnswerFormat, text: &str) -> Result<Answer, String> {
        let mut answer = parse(format.format, text)?;
        if let Some(opened) = &format.decrypt
            && let Some(sealed) = answer.get(&opened.field).cloned()
            && !sealed.is_empty()
        {
            let plain = self.open(opened, &sealed)?;
            answer.remove(&opened.field);
            for (k, v) in parse(opened.format, &plain)? {
                answer.entry(k).or_insert(v);
            }
        }
        Ok(answer)
    }

    fn failure(what: &str, reply: Reply) -> Failure {
        match reply.verdict {
            Verdict::Permanent => Failure::permanent(reply.reason),
            _ => Failure::Transient {
                reason: format!("{what}: {:?}: {}", reply.verdict, reply.reason),
                retry_after: reply.retry_after,
            },
        }
    }

    /// The department's case number an answer gives.
    fn case_number_of(&self, answer: &Answer) -> Option<String> {
        self.read(answer).and_then(|r| r.department_case_number)
    }
}

/// The task message as templates see it (`task`), converted on the first read.
#[derive(Debug)]
struct LazyTask {
    message: yichuang::proto::v1::TaskMessage,
    value: std::sync::OnceLock<Value>,
}

impl LazyTask {
    fn value(&self) -> &Value {
        self.value
            .get_or_init(|| Value::from_serialize(crate::mapping::task_json(&self.message)))
    }
}

impl minijinja::value::Object for LazyTask {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.value()
            .get_item(key)
            .ok()
            .filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        match self.value().try_iter() {
            Ok(keys) => minijinja::value::Enumerator::Values(keys.collect()),
            Err(_) => minijinja::value::Enumerator::Empty,
        }
    }
}

/// The variables of a rule or outcome: `answer`, `status`, `text`.
fn answer_context(answer: &Answer, status: u16, text: &str) -> Value {
    minijinja::context! {
        answer => answer.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Value>(),
        status => status,
        text => text,
    }
}

fn label(charset: crate::describe::Charset) -> &'static str {
    match charset {
        crate::describe::Charset::Utf8 => "utf-8",
        crate::describe::Charset::Gbk => "GBK",
        crate::describe::Charset::Gb18030 => "GB18030",
    }
}

/// Reads an answer's text into a flat map.
fn parse(format: Format, text: &str) -> Result<Answer, String> {
    match format {
        Format::Json => {
            let v: serde_json::Value =
                serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
            let mut out = Answer::new();
            flatten_json("", &v, &mut out);
            Ok(out)
        }
        Format::Xml => xml::flatten(text),
        Format::Text => Ok(Answer::from([(
            "text".to_string(),
            text.trim().to_string(),
        )])),
    }
}

/// Every scalar of a JSON value under its dotted path and, the first time a name is met, its
/// own name; an array of scalars is joined with `,`, and objects inside arrays are kept whole
/// as JSON under their path.
pub fn flatten_json(path: &str, v: &serde_json::Value, out: &mut Answer) {
    let put = |out: &mut Answer, path: &str, text: String| {
        let leaf = path.rsplit('.').next().unwrap_or(path).to_string();
        out.insert(path.to_string(), text.clone());
        out.entry(leaf).or_insert(text);
    };
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten_json(&p, child, out);
            }
        }
        serde_json::Value::Array(items) => {
            if items.iter().all(|i| !i.is_object() && !i.is_array()) {
                let texts: Vec<String> = items.iter().map(scalar).collect();
                put(out, path, texts.join(","));
            } else {
                put(out, path, v.to_string());
            }
        }
        serde_json::Value::Null => {}
        other => put(out, path, scalar(other)),
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `<root>` with the children of `value` (a map).
fn xml_document(root: &str, value: &Value) -> Result<String, String> {
    let mut out = format!("<{root}>");
    write_children(&mut out, value)?;
    out.push_str(&format!("</{root}>"));
    Ok(out)
}

/// A map's entries as elements: a map nests, a list repeats the element, anything else is
/// escaped text.
fn write_children(out: &mut String, value: &Value) -> Result<(), String> {
    let entries = value
        .try_iter()
        .map_err(|_| format!("an XML document needs a map, not {}", value.kind()))?;
    for key in entries {
        let name = key.as_str().unwrap_or_default().to_string();
        if !xml::is_name(&name) {
            return Err(format!("{name:?} is not an XML element name"));
        }
        let child = value.get_item(&key).map_err(|e| e.to_string())?;
        write_element(out, &name, &child)?;
    }
    Ok(())
}

fn write_element(out: &mut String, name: &str, value: &Value) -> Result<(), String> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Map => {
            out.push_str(&format!("<{name}>"));
            write_children(out, value)?;
            out.push_str(&format!("</{name}>"));
        }
        ValueKind::Seq => {
            for item in value.try_iter().map_err(|e| e.to_string())? {
                write_element(out, name, &item)?;
            }
        }
        _ => xml::element(out, name, &crate::expr::text_of(value)),
    }
    Ok(())
}

#[async_trait::async_trait]
impl DepartmentSystem for Http {
    async fn submit(&self, task: &Task) -> Result<Answer, Failure> {
        let reply = self
            .call("submit", &self.d.submit, Self::task_vars(task))
            .await?;
        match reply.verdict {
            Verdict::Success => Ok(reply.answer),
            Verdict::Duplicate => {
                if let Some(number) = reply.case_number {
                    // The system answered the repeated serial with the case it has.
                    let mut answer = reply.answer;
                    answer.insert(DUPLICATE_CASE_NUMBER.into(), number);
                    return Ok(answer);
                }
                if self.d.find.is_none() {
                    return Err(Failure::transient(
                        "submit: a duplicate answer without the case number, and no find: give the duplicate rule its case_number",
                    ));
                }
                // Submitted before (the answer was lost): the system tells us what it has.
                self.find(task)
                    .await?
                    .ok_or_else(|| Failure::transient("a duplicate that cannot be found yet"))
            }
            Verdict::NotFound => Err(Failure::permanent(format!("submit: {}", reply.reason))),
            _ => Err(Self::failure("submit", reply)),
        }
    }

    async fn poll(&self, task: &Task, department_case_number: &str) -> Result<Answer, Failure> {
        let mut vars = Self::task_vars(task);
        vars.push(("case_number", Value::from(department_case_number)));
        let reply = self.call("query", &self.d.query, vars).await?;
        match reply.verdict {
            Verdict::Success => Ok(reply.answer),
            Verdict::NotFound => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number}: {}",
                reply.reason
            ))),
            _ => Err(Self::failure("query", reply)),
        }
    }

    async fn find(&self, task: &Task) -> Result<Option<Answer>, Failure> {
        let Some(find) = &self.d.find else {
            // The system deduplicates by serial itself: submitting again is the lookup.
            return Ok(None);
        };
        let reply = self.call("find", find, Self::task_vars(task)).await?;
        match reply.verdict {
            Verdict::Success => Ok(self.case_number_of(&reply.answer).map(|_| reply.answer)),
            Verdict::NotFound => Ok(None),
            _ => Err(Self::failure("find", reply)),
        }
    }

    async fn resupply(
        &self,
        task: &Task,
        department_case_number: &str,
        supplement: &SupplementDelivery,
    ) -> Result<Answer, Failure> {
        let Some(op) = &self.d.supplement else {
            return Err(Failure::permanent(
                "this department's system takes no supplements (no `supplement` operation in its description)",
            ));
        };
        let materials: Vec<serde_json::Value> = supplied(supplement, &self.material_names)
            .iter()
            .map(|m| m.legacy_json())
            .collect();
        let mut vars = Self::task_vars(task);
        vars.push(("case_number", Value::from(department_case_number)));
        vars.push((
            "supplement",
            Value::from_serialize(serde_json::json!({
                "serial": supplement_serial(task.id(), supplement.round),
                "round": supplement.round,
                "requested": supplement.requested,
                "requested_text": supplement.requested.join("、"),
                "materials": materials,
            })),
        ));
        let reply = self.call("supplement", op, vars).await?;
        match reply.verdict {
            Verdict::Success => Ok(reply.answer),
            // Handed over before (the answer was lost): the case goes on, polling reads it.
            Verdict::Duplicate => Ok(Answer::new()),
            Verdict::NotFound => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number}: {}",
                reply.reason
            ))),
            _ => Err(Self::failure("supplement", reply)),
        }
    }

    fn callback(&self, body: &[u8]) -> Option<(String, Answer)> {
        let callback = self.d.callback.as_ref()?;
        let text = xml::decode(
            body,
            None,
            self.d.answer_charset.unwrap_or(self.d.charset).encoding(),
        );
        let answer = self.read_answer(&callback.answer, &text).ok()?;
        let serial = callback
            .serial
            .text(&answer_context(&answer, 200, &text))
            .ok()
            .filter(|s| !s.is_empty())?;
        Some((serial, answer))
    }

    fn read(&self, answer: &Answer) -> Option<Reading> {
        let o = &self.d.outcome;
        let ctx = answer_context(answer, 200, "");
        let text = |e: &Option<crate::expr::Expr>| {
            e.as_ref()
                .and_then(|e| e.text(&ctx).ok())
                .filter(|v| !v.is_empty())
        };
        let list = |e: &Option<crate::expr::Expr>| {
            e.as_ref()
                .and_then(|e| e.list(&ctx).ok())
                .unwrap_or_default()
        };
        let holds = |e: &crate::expr::Expr| e.test(&ctx).unwrap_or(false);
        let decision = if holds(&o.approved) {
            let documents = o
                .document
                .as_ref()
                .map(|d| ResultDocument {
                    material_code: d.material_code.clone(),
                    name: text(&d.name).unwrap_or_default(),
                    number: text(&d.number).unwrap_or_default(),
                    file: None,
                })
                .filter(|d| !d.name.is_empty() || !d.number.is_empty());
            Some(Decision::Approved(documents.into_iter().collect()))
        } else if holds(&o.rejected) {
            Some(Decision::Rejected(list(&o.reasons)))
        } else if o.supplement.as_ref().is_some_and(holds) {
            Some(Decision::Supplement(list(&o.materials)))
        } else {
            None
        };
        let case_number = answer
            .get(DUPLICATE_CASE_NUMBER)
            .cloned()
            .or_else(|| o.case_number.text(&ctx).ok())
            .filter(|v| !v.is_empty());
        Some(Reading {
            department_case_number: case_number,
            step: text(&o.step),
            decided_on: text(&o.decided_on)
                .and_then(|v| crate::expr::parse_time(&v))
                .map(|t| t.date()),
            decision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_is_read_through_its_lazy_value() {
        let message = yichuang::proto::v1::TaskMessage {
            case_number: "C1".into(),
            task: Some(yichuang::proto::v1::Task {
                task_id: "C1-01".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let task = Task {
            message,
            fields: Default::default(),
        };
        let ctx: BTreeMap<String, Value> = Http::task_vars(&task)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let ctx = Value::from(ctx);
        let t = crate::expr::Template::compile(
            "{{ task.caseNumber }}/{{ task.task.taskId }}/{{ serial }}",
        )
        .unwrap();
        assert_eq!(t.render(&ctx).unwrap(), "C1/C1-01/C1-01");
        let missing = crate::expr::Template::compile("{{ task.nothing }}").unwrap();
        assert!(
            missing.render(&ctx).is_err(),
            "a missing field is still an error"
        );
        let keys = crate::expr::Expr::compile("task | list").unwrap();
        assert!(
            keys.list(&ctx).unwrap().contains(&"caseNumber".to_string()),
            "the task enumerates its fields"
        );
    }

    #[test]
    fn json_answers_flatten_by_path_and_by_name() {
        let v = serde_json::json!({"code": 0, "data": {"slbh": "N1", "list": ["a", "b"], "cl": [{"x": 1}]}});
        let mut a = Answer::new();
        flatten_json("", &v, &mut a);
        assert_eq!(a["code"], "0");
        assert_eq!(a["data.slbh"], "N1");
        assert_eq!(a["slbh"], "N1");
        assert_eq!(a["list"], "a,b");
        assert_eq!(a["data.cl"], "[{\"x\":1}]");
    }

    #[test]
    fn maps_and_lists_become_nested_and_repeated_elements() {
        let v = Value::from_serialize(serde_json::json!({
            "ywlsh": "T<1>",
            "clqd": {"cl": [{"clbm": "A"}, {"clbm": "B"}]}
        }));
        assert_eq!(
            xml_document("Request", &v).unwrap(),
            "<Request><clqd><cl><clbm>A</clbm></cl><cl><clbm>B</clbm></cl></clqd><ywlsh>T&lt;1&gt;</ywlsh></Request>"
        );
        let bad = Value::from_serialize(serde_json::json!({"a b": "1"}));
        assert!(
            xml_document("R", &bad)
                .unwrap_err()
                .contains("not an XML element name")
        );
    }
}
