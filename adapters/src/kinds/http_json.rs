//! HTTP/JSON with an access token that expires: the token is fetched with the department's
//! client credentials, kept until shortly before it expires, and fetched again when the system
//! says it is no longer valid (HTTP 401, or a body code the options name). Answers are JSON
//! objects `{"code": "0", "msg": "...", "data": {...}}`; `data` is flattened into the answer
//! the department's result mapping reads.
//!
//! A supplement (补正) round is a JSON POST to `supplement_path` about the department's case:
//! `{"ywlsh": task id, "slbh": its case number, "bzlsh": "<task id>-S<round>", "bzcs": round,
//! "bzcl": "what it asked for, joined with 、", "clqd": [{"clbm": code, "clmc": name, "clxs":
//! 原件|复印件|电子件, "fs": copies, "wjdz": file URI, "wjzy": SHA-256, "wjdx": bytes}]}`. A
//! duplicate code (or 409) means the round's serial `bzlsh` is there already: success.
//!
//! Options: `token_path`, `submit_path`, `query_path` (with `{department_case_number}`),
//! `find_path` (with `{task_id}`), `supplement_path` (with `{department_case_number}` and
//! `{task_id}`, default `/api/v1/cases/{department_case_number}/supplements`), `ok_code`
//! (default `0`), `token_invalid_codes` (comma-separated body codes meaning the token is stale),
//! `duplicate_codes` (body codes meaning the serial number is already there). Credentials:
//! `client_id`, `client_secret`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use super::Kind;
use crate::config::DepartmentConfig;
use crate::system::{Answer, DepartmentSystem, Failure, Gate, Task, supplement_serial, supplied};
use yichuang::proto::v1::SupplementDelivery;

pub const KIND: Kind = Kind {
    name: "http-json",
    about: "HTTP/JSON API with an expiring access token",
    build,
};

const OPTIONS: &[&str] = &[
    "token_path",
    "submit_path",
    "query_path",
    "find_path",
    "supplement_path",
    "ok_code",
    "token_invalid_codes",
    "duplicate_codes",
];

fn build(config: &DepartmentConfig, gate: Gate) -> Result<Arc<dyn DepartmentSystem>, String> {
    let o = super::options(
        config,
        OPTIONS,
        &["token_path", "submit_path", "query_path", "find_path"],
    )?;
    let secret = |name: &str| {
        config
            .credentials
            .get(name)
            .ok_or_else(|| format!("kind http-json needs credentials.{name}"))?
            .resolve()
            .map_err(|e| format!("credentials.{name}: {e}"))
    };
    if !config.endpoint.starts_with("http://") && !config.endpoint.starts_with("https://") {
        return Err(format!(
            "endpoint {:?} is not an http:// or https:// URL",
            config.endpoint
        ));
    }
    let list = |key: &str| -> Vec<String> {
        o.get(key)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    };
    Ok(Arc::new(HttpJson {
        client: super::http_client(config)?,
        base: config.endpoint.trim_end_matches('/').to_string(),
        client_id: secret("client_id")?,
        client_secret: secret("client_secret")?,
        token_path: o["token_path"].clone(),
        submit_path: o["submit_path"].clone(),
        query_path: o["query_path"].clone(),
        find_path: o["find_path"].clone(),
        supplement_path: o
            .get("supplement_path")
            .cloned()
            .unwrap_or_else(|| DEFAULT_SUPPLEMENT_PATH.into()),
        ok_code: o.get("ok_code").cloned().unwrap_or_else(|| "0".into()),
        token_invalid: list("token_invalid_codes"),
        duplicate: list("duplicate_codes"),
        token: Mutex::new(None),
        material_names: config.material_names.clone(),
        gate,
    }))
}

/// Where a supplement round is posted unless `options.supplement_path` says otherwise.
pub const DEFAULT_SUPPLEMENT_PATH: &str = "/api/v1/cases/{department_case_number}/supplements";

struct HttpJson {
    client: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: String,
    token_path: String,
    submit_path: String,
    query_path: String,
    find_path: String,
    supplement_path: String,
    ok_code: String,
    token_invalid: Vec<String>,
    duplicate: Vec<String>,
    token: Mutex<Option<(String, Instant)>>,
    /// Material code → name, for supplements.
    material_names: BTreeMap<String, String>,
    gate: Gate,
}

/// What one HTTP exchange gave.
enum Reply {
    Ok(Value),
    NotFound,
    Duplicate,
}

fn transport(e: reqwest::Error) -> Failure {
    Failure::transient(format!("HTTP: {e}"))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Flattens `data` into field → text; nested objects become dotted names.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => {
            let texts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.insert(prefix.to_string(), texts.join(","));
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

impl HttpJson {
    async fn token(&self, renew: bool) -> Result<String, Failure> {
        let mut token = self.token.lock().await;
        if !renew
            && let Some((t, until)) = token.as_ref()
            && *until > Instant::now()
        {
            return Ok(t.clone());
        }
        self.gate.permit().await;
        let response = self
            .client
            .post(format!("{}{}", self.base, self.token_path))
            .json(&serde_json::json!({
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            }))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let after = retry_after(response.headers());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Failure::Transient {
                reason: format!("token: HTTP {status}"),
                retry_after: after,
            });
        }
        let Some(access) = body.get("access_token").and_then(Value::as_str) else {
            // Wrong credentials cannot heal by retrying, but an operator can fix them without
            // the task being lost: transient, so it waits in the delay queues.
            return Err(Failure::transient(format!(
                "token: HTTP {status}, no access_token in the answer (check credentials)"
            )));
        };
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(300);
        // Renewed a little early, so a token does not expire on its way.
        let until = Instant::now() + Duration::from_millis(lifetime * 900);
        *token = Some((access.to_string(), until));
        Ok(access.to_string())
    }

    async fn exchange(
        &self,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Reply, Failure> {
        let mut renew = false;
        for _ in 0..2 {
            let token = self.token(renew).await?;
            self.gate.permit().await;
            let response = request(&token).send().await.map_err(transport)?;
            let status = response.status();
            let after = retry_after(response.headers());
            let text = response.text().await.map_err(transport)?;
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = match body.get("code") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            let msg = body
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or(text.as_str())
                .chars()
                .take(300)
                .collect::<String>();
            if status.as_u16() == 401 || self.token_invalid.contains(&code) {
                renew = true;
                continue;
            }
            if status.as_u16() == 429 {
                return Err(Failure::Transient {
                    reason: "HTTP 429 Too Many Requests".into(),
                    retry_after: after,
                });
            }
            if status.is_server_error() {
                return Err(Failure::Transient {
                    reason: format!("HTTP {status}: {msg}"),
                    retry_after: after,
                });
            }
            if status.as_u16() == 404 {
                return Ok(Reply::NotFound);
            }
            if status.as_u16() == 409 || self.duplicate.contains(&code) {
                return Ok(Reply::Duplicate);
            }
            if status.is_client_error() {
                return Err(Failure::permanent(format!("HTTP {status}: {msg}")));
            }
            if code != self.ok_code {
                return Err(Failure::permanent(format!("code {code}: {msg}")));
            }
            return Ok(Reply::Ok(body.get("data").cloned().unwrap_or(Value::Null)));
        }
        Err(Failure::transient(
            "the access token was refused twice in a row",
        ))
    }

    fn answer(data: &Value) -> Answer {
        let mut out = BTreeMap::new();
        flatten("", data, &mut out);
        out
    }
}

#[async_trait::async_trait]
impl DepartmentSystem for HttpJson {
    async fn submit(&self, task: &Task) -> Result<Answer, Failure> {
        let url = format!("{}{}", self.base, self.submit_path);
        match self
            .exchange(|token| self.client.post(&url).bearer_auth(token).json(&task.fields))
            .await?
        {
            Reply::Ok(data) => Ok(Self::answer(&data)),
            // Submitted before (the answer was lost): the system tells us what it has.
            Reply::Duplicate => self
                .find(task)
                .await?
                .ok_or_else(|| Failure::transient("a duplicate that cannot be found yet")),
            Reply::NotFound => Err(Failure::permanent(format!(
                "{} does not exist on the department system (check options.submit_path)",
                self.submit_path
            ))),
        }
    }

    async fn poll(&self, _task: &Task, department_case_number: &str) -> Result<Answer, Failure> {
        let url = format!(
            "{}{}",
            self.base,
            self.query_path
                .replace("{department_case_number}", department_case_number)
        );
        match self
            .exchange(|token| self.client.get(&url).bearer_auth(token))
            .await?
        {
            Reply::Ok(data) => Ok(Self::answer(&data)),
            _ => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number}"
            ))),
        }
    }

    async fn find(&self, task: &Task) -> Result<Option<Answer>, Failure> {
        let url = format!(
            "{}{}",
            self.base,
            self.find_path.replace("{task_id}", task.id())
        );
        match self
            .exchange(|token| self.client.get(&url).bearer_auth(token))
            .await?
        {
            Reply::Ok(Value::Null) | Reply::NotFound => Ok(None),
            Reply::Ok(data) => Ok(Some(Self::answer(&data))),
            _ => Ok(None),
        }
    }

    async fn resupply(
        &self,
        task: &Task,
        department_case_number: &str,
        supplement: &SupplementDelivery,
    ) -> Result<Answer, Failure> {
        let url = format!(
            "{}{}",
            self.base,
            self.supplement_path
                .replace("{department_case_number}", department_case_number)
                .replace("{task_id}", task.id())
        );
        let materials: Vec<Value> = supplied(supplement, &self.material_names)
            .iter()
            .map(|m| m.legacy_json())
            .collect();
        let body = serde_json::json!({
            "ywlsh": task.id(),
            "slbh": department_case_number,
            "bzlsh": supplement_serial(task.id(), supplement.round),
            "bzcs": supplement.round,
            "bzcl": supplement.requested.join("、"),
            "clqd": materials,
        });
        match self
            .exchange(|token| self.client.post(&url).bearer_auth(token).json(&body))
            .await?
        {
            Reply::Ok(data) => Ok(Self::answer(&data)),
            // Handed over before (the answer was lost): the case goes on, polling reads it.
            Reply::Duplicate => Ok(Answer::new()),
            Reply::NotFound => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number} (or options.supplement_path is wrong)"
            ))),
        }
    }

    fn callback(&self, body: &[u8]) -> Option<(String, Answer)> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let data = v.get("data").unwrap_or(&v);
        let answer = Self::answer(data);
        let task_id = answer.get("ywlsh")?.clone();
        Some((task_id, answer))
    }
}
