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
                if !identifier(schema) {
                    return Err(format!(
                        "[transport] schema {schema:?}: letters, digits and _ only"
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
            Transport::Tables(t) => t.write(r).await,
        }
    }

    /// Reads the exchange's flag of a written record (tables); the HTTP interface answers at
    /// once, so a record is never awaited there.
    pub async fn flag(&self, r: &Stored) -> Sent {
        match self {
            Transport::Http(_) => Sent::Confirmed,
            Transport::Tables(t) => t.flag(r).await,
        }
    }

    /// Every record the platform holds for these 申办流水号.
    pub async fn held(&self, spec: &Spec, sblsh: &[String]) -> Result<Vec<Held>, String> {
        let mut out = Vec::new();
        for chunk in sblsh.chunks(100) {
            out.extend(match self {
                Transport::Http(h) => h.held(chunk).await?,
                Transport::Tables(t) => t.held(spec, chunk).await?,
            });
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

fn identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
            return Sent::Retry(format!("platform answered HTTP {}", status.as_u16()));
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

    async fn held(&self, sblsh: &[String]) -> Result<Vec<Held>, String> {
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
        if json["code"] != "0" {
            return Err(format!("platform query refused: {}", json["msg"]));
        }
        let mut out = Vec::new();
        for item in json["data"].as_array().into_iter().flatten() {
            let Some(fields) = item["record"].as_object() else {
                continue;
            };
            out.push(Held {
                table: item["table"].as_str().unwrap_or_default().to_string(),
                sblsh: fields
                    .get("SBLSH")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                seq: fields.get("XH").and_then(Value::as_i64).unwrap_or(0),
                fields: fields.clone(),
            });
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
            *guard = Some(
                yichuang::tls::connect_postgres(&self.url)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(guard)
    }

    fn table(&self, table: &str) -> Result<String, String> {
        if !identifier(table) {
            return Err(format!("table {table:?}: letters, digits and _ only"));
        }
        Ok(format!("{}.{}", self.schema, table.to_lowercase()))
    }

    /// Inserts the row with its flag at 0; a row the exchange refused (flag 2) is corrected in
    /// place and flagged 0 again; a row already there otherwise stays as it is (idempotent).
    async fn write(&self, r: &Stored) -> Sent {
        match self.try_write(r).await {
            Ok(()) => Sent::Written,
            Err(e) => Sent::Retry(e),
        }
    }

    async fn try_write(&self, r: &Stored) -> Result<(), String> {
        let fields: Map<String, Value> =
            serde_json::from_str(&r.body).map_err(|e| format!("stored body unreadable: {e}"))?;
        let table = self.table(&r.table)?;
        let mut columns = Vec::new();
        let mut values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        for (name, value) in &fields {
            if !identifier(name) {
                return Err(format!("field {name:?}: letters, digits and _ only"));
            }
            columns.push(name.to_lowercase());
            values.push(match value {
                Value::Number(n) if name.eq_ignore_ascii_case("XH") => {
                    Box::new(n.as_i64().unwrap_or(0) as i32)
                }
                Value::String(s) => Box::new(s.clone()),
                other => Box::new(other.to_string()),
            });
        }
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let updates: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}, sync_sign) VALUES ({}, '0')
             ON CONFLICT (sblsh, xh) DO UPDATE SET {}, sync_sign = '0', sync_msg = NULL, sync_time = NULL
             WHERE {table}.sync_sign = '2'",
            columns.join(", "),
            placeholders.join(", "),
            updates.join(", "),
        );
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let mut client = self.client().await?;
        let result = client
            .as_ref()
            .expect("connected")
            .execute(sql.as_str(), &params)
            .await;
        if let Err(e) = result {
            *client = None;
            return Err(format!(
                "exchange table {table}: {}",
                yichuang::tls::with_causes(&e)
            ));
        }
        Ok(())
    }

    async fn flag(&self, r: &Stored) -> Sent {
        let table = match self.table(&r.table) {
            Ok(t) => t,
            Err(e) => return Sent::Refused(e),
        };
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Sent::Retry(e),
        };
        let row = client
            .as_ref()
            .expect("connected")
            .query_opt(
                &format!("SELECT sync_sign, sync_msg FROM {table} WHERE sblsh = $1 AND xh = $2"),
                &[&r.sblsh, &(r.seq as i32)],
            )
            .await;
        match row {
            Err(e) => {
                *client = None;
                Sent::Retry(format!(
                    "exchange table {table}: {}",
                    yichuang::tls::with_causes(&e)
                ))
            }
            // Gone before the exchange took it: write it again.
            Ok(None) => Sent::Retry("the row is gone from the exchange table".into()),
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

    async fn held(&self, spec: &Spec, sblsh: &[String]) -> Result<Vec<Held>, String> {
        let mut out = Vec::new();
        let mut client = self.client().await?;
        let c = client.as_ref().expect("connected");
        for t in spec.tables() {
            let table = self.table(t)?;
            let rows = match c
                .query(
                    &format!(
                        "SELECT row_to_json(x)::text FROM {table} x WHERE sblsh = ANY($1) AND sync_sign = '1'"
                    ),
                    &[&sblsh],
                )
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    *client = None;
                    return Err(format!("exchange table {table}: {}", yichuang::tls::with_causes(&e)));
                }
            };
            for row in rows {
                let text: String = row.get(0);
                let columns: BTreeMap<String, Value> =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let mut fields = Map::new();
                for (k, v) in columns {
                    if matches!(
                        k.as_str(),
                        "sync_sign" | "sync_msg" | "sync_time" | "insert_time"
                    ) || v.is_null()
                    {
                        continue;
                    }
                    fields.insert(k.to_uppercase(), v);
                }
                out.push(Held {
                    table: t.to_string(),
                    sblsh: fields
                        .get("SBLSH")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    seq: fields.get("XH").and_then(Value::as_i64).unwrap_or(0),
                    fields,
                });
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
