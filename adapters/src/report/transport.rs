//! How stage records reach the platform: its HTTP interface (each record POSTed, signed with
//! the app's secret, the answer read with the specification's `http` expressions), or its
//! exchange tables (前置库: each record a row in the stage's table with a sync flag that the
//! platform's exchange sets once it took or refused the row). Both also answer what the
//! platform holds, for reconciliation.
//!
//! This module owns the wire; it decides nothing about order or retries ([`super::Reporter`]).

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::Mutex;

use super::ledger::Stored;
use super::spec::Spec;
use yichuang::store::postgres::plain_identifier;

/// How long one statement on the exchange database may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What an attempt to report a record came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// The platform holds it.
    Confirmed,
    /// Written to the exchange table; its flag is awaited.
    Written,
    /// Refused for good, with the platform's words.
    Refused(String),
    /// Not taken this time (down, busy, unreachable): try again later.
    Retry(String),
    /// The written row is gone before the exchange took it: write it again.
    Gone,
}

/// A record held by the platform, as reconciliation compares it.
#[derive(Debug, Clone)]
pub struct Held {
    pub table: String,
    pub sblsh: String,
    pub seq: i64,
    pub fields: Map<String, Value>,
}

/// The transport settings (`[transport]` of the reporter's file).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TransportConfig {
    /// The platform's HTTP interface.
    Http {
        /// Where records are POSTed.
        record_url: String,
        /// Where held records are asked for.
        query_url: String,
        app_id: String,
        /// The app's secret: a file holding it (mode 0600), or the value from the environment.
        secret: crate::config::SecretRef,
        #[serde(default = "default_timeout")]
        timeout_secs: u64,
        /// The platform's CA, when it is not a public one.
        #[serde(default, deserialize_with = "yichuang::tls::optional_path")]
        ca_file: Option<std::path::PathBuf>,
    },
    /// The platform's exchange tables in its PostgreSQL (前置库).
    Tables {
        /// `postgres://…` (TLS settings as libpq reads them: docs/tls.md).
        url: String,
        /// The schema holding the tables.
        schema: String,
    },
}

fn default_timeout() -> u64 {
    10
}

pub enum Transport {
    Http(Http),
    Tables(Tables),
}

pub struct Http {
    client: reqwest::Client,
    record_url: String,
    query_url: String,
    app_id: String,
    secret: String,
}

pub struct Tables {
    url: String,
    schema: String,
    client: Mutex<Option<tokio_postgres::Client>>,
}

impl Transport {
    pub fn new(config: &TransportConfig) -> Result<Transport, String> {
        Ok(match config {
            TransportConfig::Http {
                record_url,
                query_url,
                app_id,
                secret,
                timeout_secs,
                ca_file,
            } => {
                for (key, url) in [("record_url", record_url), ("query_url", query_url)] {
                    plain_http_only_locally(key, url)?;
                }
                let tls = yichuang::tls::ClientTls {
                    ca_file: ca_file.clone(),
                    ..Default::default()
                };
                let builder = reqwest::Client::builder()
                    .timeout(Duration::from_secs(*timeout_secs))
                    .connect_timeout(Duration::from_secs(*timeout_secs));
                let client = tls
                    .reqwest(builder, "[transport]")
                    .map_err(|e| e.to_string())?
                    .build()
                    .map_err(|e| e.to_string())?;
                Transport::Http(Http {
                    client,
                    record_url: record_url.clone(),
                    query_url: query_url.clone(),
                    app_id: app_id.clone(),
                    secret: secret.resolve()?,
                })
            }
            TransportConfig::Tables { url, schema } => {
                if !plain_identifier(schema) {
                    return Err(format!(
                        "[transport] schema {schema:?}: lower-case letters, digits and _ only"
                    ));
                }
                Transport::Tables(Tables {
                    url: url.clone(),
                    schema: schema.clone(),
                    client: Mutex::new(None),
                })
            }
        })
    }

    /// Reports one record.
    pub async fn send(&self, spec: &Spec, r: &Stored) -> Sent {
        match self {
            Transport::Http(h) => h.send(spec, r).await,
            Transport::Tables(t) => t.write(spec, r).await,
        }
    }

    /// Reads the exchange's flag of a written record (tables); the HTTP interface answers at
    /// once, so a record is never awaited there.
    pub async fn flag(&self, spec: &Spec, r: &Stored) -> Sent {
        match self {
            Transport::Http(_) => Sent::Confirmed,
            Transport::Tables(t) => t.flag(spec, r).await,
        }
    }

    /// Every record the platform holds for these 申办流水号.
    pub async fn held(&self, spec: &Spec, sblsh: &[String]) -> Result<Vec<Held>, String> {
        let mut out = Vec::new();
        for chunk in sblsh.chunks(100) {
            let records = match self {
                Transport::Http(h) => h.held(spec, chunk).await?,
                Transport::Tables(t) => t.held(spec, chunk).await?,
            };
            out.extend(records.into_iter().map(|(table, fields)| {
                Held {
                    table,
                    sblsh: text(fields.get(&spec.sblsh_field)),
                    seq: fields
                        .get(&spec.sequence_field)
                        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                        .unwrap_or(0),
                    fields,
                }
            }));
        }
        Ok(out)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Http(_) => "http",
            Transport::Tables(_) => "tables",
        }
    }
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A record's table or field as a column of the exchange database: lower case, checked.
fn column(name: &str) -> Result<String, String> {
    let lower = name.to_lowercase();
    if plain_identifier(&lower) {
        Ok(lower)
    } else {
        Err(format!(
            "{name:?} is not a plain identifier (letters, digits and _)"
        ))
    }
}

/// `http://` carries the applicants' data in the clear: only to this machine (a simulator, a
/// local relay); anything else must be `https://`.
pub(crate) fn plain_http_only_locally(key: &str, url: &str) -> Result<(), String> {
    if !url.starts_with("http://") {
        return if url.starts_with("https://") {
            Ok(())
        } else {
            Err(format!("[transport] {key} {url:?}: give an https:// URL"))
        };
    }
    if yichuang::tls::plain_http_to_this_machine(url) {
        Ok(())
    } else {
        Err(format!(
            "[transport] {key} {url:?}: plain http:// only to this machine; the platform is reached over https://"
        ))
    }
}

/// What a database error may say: its SQLSTATE and message, never its DETAIL (which quotes the
/// row, personal data and all).
fn db_error(what: &str, e: &tokio_postgres::Error) -> (bool, String) {
    match e.as_db_error() {
        // Data (22), integrity (23) and syntax or access (42): writing again changes nothing.
        Some(d) => {
            let code = d.code().code();
            let permanent = ["22", "23", "42"].iter().any(|c| code.starts_with(c));
            (permanent, format!("{what}: {code} {}", d.message()))
        }
        None => (false, format!("{what}: {}", yichuang::tls::with_causes(e))),
    }
}

impl Http {
    fn signed(&self, url: &str, body: String) -> reqwest::RequestBuilder {
        let timestamp = chrono::Utc::now().timestamp_millis().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("any key length");
        mac.update(format!("{}\n{timestamp}\n{nonce}\n", self.app_id).as_bytes());
        mac.update(body.as_bytes());
        let signature: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.client
            .post(url)
            .header("content-type", "application/json")
            .header("x-app-id", &self.app_id)
            .header("x-timestamp", timestamp)
            .header("x-nonce", nonce)
            .header("x-signature", signature)
            .body(body)
    }

    async fn send(&self, spec: &Spec, r: &Stored) -> Sent {
        let record: Value = match serde_json::from_str(&r.body) {
            Ok(v) => v,
            Err(e) => return Sent::Refused(format!("stored body unreadable: {e}")),
        };
        let body = json!({ "table": r.table, "record": record }).to_string();
        let answer = match self.signed(&self.record_url, body).send().await {
            Ok(a) => a,
            Err(e) => return Sent::Retry(format!("platform unreachable: {}", causes(&e))),
        };
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            let code = status.as_u16();
            // Our request is wrong (not our credentials, not the platform's load): as it is,
            // it will never be taken.
            return if status.is_client_error() && ![401, 403, 408, 429].contains(&code) {
                Sent::Refused(format!("platform answered HTTP {code}"))
            } else {
                Sent::Retry(format!("platform answered HTTP {code}"))
            };
        }
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            return Sent::Retry(format!(
                "platform answered something that is not JSON ({} bytes)",
                text.len()
            ));
        };
        let context = minijinja::context! { answer => minijinja::Value::from_serialize(&json) };
        let message = spec.http.message.text(&context).unwrap_or_default();
        match (
            spec.http.ok.test(&context),
            spec.http.refused.test(&context),
        ) {
            (Ok(true), _) => Sent::Confirmed,
            (_, Ok(true)) => Sent::Refused(message),
            (Err(e), _) | (_, Err(e)) => Sent::Retry(e),
            _ => Sent::Retry(format!("platform: {message}")),
        }
    }

    async fn held(
        &self,
        spec: &Spec,
        sblsh: &[String],
    ) -> Result<Vec<(String, Map<String, Value>)>, String> {
        let body = json!({ "sblsh": sblsh }).to_string();
        let answer = self
            .signed(&self.query_url, body)
            .send()
            .await
            .map_err(|e| format!("platform query: {}", causes(&e)))?;
        let status = answer.status();
        let json: Value = answer
            .json()
            .await
            .map_err(|e| format!("platform query: HTTP {status}: {e}"))?;
        let context = minijinja::context! { answer => minijinja::Value::from_serialize(&json) };
        if !spec.http.ok.test(&context)? {
            let message = spec.http.message.text(&context).unwrap_or_default();
            return Err(format!("platform query refused: {message}"));
        }
        let mut out = Vec::new();
        for item in json["data"].as_array().into_iter().flatten() {
            if let Some(fields) = item["record"].as_object() {
                out.push((text(item.get("table")), fields.clone()));
            }
        }
        Ok(out)
    }
}

fn causes(e: &reqwest::Error) -> String {
    yichuang::tls::with_causes(e)
}

impl Tables {
    async fn client(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<tokio_postgres::Client>>, String> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let connect = yichuang::tls::connect_postgres(&self.url);
            let client = tokio::time::timeout(STATEMENT_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    format!("exchange database: no connection within {STATEMENT_TIMEOUT:?}")
                })?
                .map_err(|e| e.to_string())?;
            *guard = Some(client);
        }
        Ok(guard)
    }

    fn table(&self, table: &str) -> Result<String, String> {
        Ok(format!("{}.{}", self.schema, column(table)?))
    }

    /// Inserts the row with its flag at 0; a row the exchange refused (flag 2) is corrected in
    /// place and flagged 0 again; a row already there otherwise stays as it is (idempotent).
    async fn write(&self, spec: &Spec, r: &Stored) -> Sent {
        match self.try_write(spec, r).await {
            Ok(()) => Sent::Written,
            Err((true, e)) => Sent::Refused(e),
            Err((false, e)) => Sent::Retry(e),
        }
    }

    /// The error says whether writing again could ever succeed (false) or not (true).
    async fn try_write(&self, spec: &Spec, r: &Stored) -> Result<(), (bool, String)> {
        let keys = Self::keys(spec).map_err(|e| (true, e))?;
        let fields: Map<String, Value> = serde_json::from_str(&r.body)
            .map_err(|e| (true, format!("stored body unreadable: {e}")))?;
        let table = self.table(&r.table).map_err(|e| (true, e))?;
        let mut columns = Vec::new();
        let mut values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        for (name, value) in &fields {
            columns.push(column(name).map_err(|e| (true, e))?);
            values.push(match value {
                Value::Number(n) => Box::new(n.as_i64().unwrap_or(0) as i32),
                Value::String(s) => Box::new(s.clone()),
                other => Box::new(other.to_string()),
            });
        }
        self.insert(&table, &keys, &columns, &values).await
    }

    async fn insert(
        &self,
        table: &str,
        (sblsh, seq): &(String, String),
        columns: &[String],
        values: &[Box<dyn tokio_postgres::types::ToSql + Sync + Send>],
    ) -> Result<(), (bool, String)> {
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let updates: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}, sync_sign) VALUES ({}, '0')
             ON CONFLICT ({sblsh}, {seq}) DO UPDATE SET {}, sync_sign = '0', sync_msg = NULL, sync_time = NULL
             WHERE {table}.sync_sign = '2'",
            columns.join(", "),
            placeholders.join(", "),
            updates.join(", "),
        );
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let mut client = self.client().await.map_err(|e| (false, e))?;
        let c = client.as_ref().expect("connected");
        match tokio::time::timeout(STATEMENT_TIMEOUT, c.execute(sql.as_str(), &params)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *client = None;
                Err(db_error(&format!("exchange table {table}"), &e))
            }
            Err(_) => {
                *client = None;
                Err((
                    false,
                    format!("exchange table {table}: no answer within {STATEMENT_TIMEOUT:?}"),
                ))
            }
        }
    }

    /// The key columns of a record's row: its 申办流水号 and sequence fields, lower case.
    fn keys(spec: &Spec) -> Result<(String, String), String> {
        Ok((column(&spec.sblsh_field)?, column(&spec.sequence_field)?))
    }

    async fn flag(&self, spec: &Spec, r: &Stored) -> Sent {
        let (table, (sblsh, seq)) = match self
            .table(&r.table)
            .and_then(|t| Ok((t, Self::keys(spec)?)))
        {
            Ok(t) => t,
            Err(e) => return Sent::Refused(e),
        };
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Sent::Retry(e),
        };
        let sql =
            format!("SELECT sync_sign, sync_msg FROM {table} WHERE {sblsh} = $1 AND {seq} = $2");
        let seq_value = r.seq as i32;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&r.sblsh, &seq_value];
        let query = client
            .as_ref()
            .expect("connected")
            .query_opt(sql.as_str(), &params);
        let row = match tokio::time::timeout(STATEMENT_TIMEOUT, query).await {
            Ok(row) => row,
            Err(_) => {
                *client = None;
                return Sent::Retry(format!(
                    "exchange table {table}: no answer within {STATEMENT_TIMEOUT:?}"
                ));
            }
        };
        match row {
            Err(e) => {
                *client = None;
                Sent::Retry(db_error(&format!("exchange table {table}"), &e).1)
            }
            // Gone before the exchange took it: write it again.
            Ok(None) => Sent::Gone,
            Ok(Some(row)) => {
                let sign: String = row.get(0);
                let msg: Option<String> = row.get(1);
                match sign.trim() {
                    "1" => Sent::Confirmed,
                    "2" => Sent::Refused(msg.unwrap_or_default()),
                    _ => Sent::Written,
                }
            }
        }
    }

    async fn held(
        &self,
        spec: &Spec,
        sblsh: &[String],
    ) -> Result<Vec<(String, Map<String, Value>)>, String> {
        let (key, _) = Self::keys(spec)?;
        let mut out = Vec::new();
        let mut client = self.client().await?;
        for t in spec.tables() {
            let table = self.table(t)?;
            let sql = format!(
                "SELECT row_to_json(x)::text FROM {table} x WHERE {key} = ANY($1) AND sync_sign = '1'"
            );
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&sblsh];
            let query = client
                .as_ref()
                .expect("connected")
                .query(sql.as_str(), &params);
            let rows = match tokio::time::timeout(STATEMENT_TIMEOUT, query).await {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    *client = None;
                    return Err(db_error(&format!("exchange table {table}"), &e).1);
                }
                Err(_) => {
                    *client = None;
                    return Err(format!(
                        "exchange table {table}: no answer within {STATEMENT_TIMEOUT:?}"
                    ));
                }
            };
            for row in rows {
                let text: String = row.get(0);
                let columns: BTreeMap<String, Value> =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let fields = columns
                    .into_iter()
                    .filter(|(k, v)| {
                        !v.is_null()
                            && !matches!(
                                k.as_str(),
                                "sync_sign" | "sync_msg" | "sync_time" | "insert_time"
                            )
                    })
                    .map(|(k, v)| (k.to_uppercase(), v))
                    .collect();
                out.push((t.to_string(), fields));
            }
        }
        Ok(out)
    }
}

/// Whether the platform holds `ours` as we derived it. A list field written to a table as
/// JSON text compares by its content.
pub fn same(ours: &Map<String, Value>, held: &Map<String, Value>) -> bool {
    ours.iter().all(|(k, v)| match (v, held.get(k)) {
        (_, None) => false,
        (Value::Array(_), Some(Value::String(s))) => {
            serde_json::from_str::<Value>(s).ok().as_ref() == Some(v)
        }
        (Value::Number(n), Some(Value::String(s))) => n.to_string() == *s,
        (a, Some(b)) => a == b,
    })
}
