//! 前置库 table exchange: the department's own PostgreSQL database holds exchange tables. This
//! module owns the adapter's side of that handshake:
//!
//! - **inbound table** (default `yc_sqxx`): the adapter inserts one row per task, keyed on
//!   (serial = task id, stage, version) with `INSERT … ON CONFLICT DO NOTHING`, so a task
//!   handed over twice (after a crash) is one row. Handshake columns: version `bbh` (1),
//!   received flag `sfjs` (`0` new, `1` the department took it), batch number `pch`, sync status
//!   `tbzt` (`0` waiting, `1` taken, `2` refused by the department, with its reason in `tbsm`),
//!   created `cjsj` and received `jssj` timestamps. Every `mapping.request` field is a text
//!   column of the same name.
//! - **result table** (default `yc_bjxx`): the department writes a row per step and one for its
//!   decision (its case number, step, status, opinions, licence number and name, materials to
//!   supplement, decision date as `2019年06月20日` or `20190620` — any columns; the department's
//!   `mapping.result` names them). The adapter reads every row of a task, oldest first, later
//!   values overriding earlier ones, and once what they said is published sets their received
//!   flag `sfjs` to `1` and `jssj` to now (the acknowledgement).
//! - **supplement table** (default `yc_bzxx`): a supplement (补正) round is one row, keyed on
//!   its serial `bzlsh` = `<task id>-S<round>` (`INSERT … ON CONFLICT DO NOTHING`, so a round
//!   handed over twice is one row), with the task id `ywlsh`, the round `bzcs` (integer), the
//!   department's case number `slbh`, what it asked for `bzcl` (joined with `、`), the
//!   materials handed in `clqd` (a JSON array of `{clbm, clmc, clxs, fs, wjdz, wjzy, wjdx}`:
//!   code, name, form, copies, file URI, SHA-256, bytes), and the inbound table's handshake
//!   columns (`sfjs`, `pch`, `tbzt`, `tbsm`, `cjsj`, `jssj`; `tbzt = '2'` refuses the round).
//!   The department's job takes it and writes the case's steps and decision to the result
//!   table again. While polling round N the adapter reads only the result rows after the
//!   department's N-th supplement request (rows whose `mapping.result.status` is one of
//!   `mapping.result.supplement`; consecutive ones count once), so the old `补正` row is not
//!   read again as the decision of the round.
//!
//! The connection is opened on first use and again after any failure; a connection problem is
//! transient. Every statement waits on the department's gate first.
//!
//! Options (all optional; names are lower-case identifiers, checked at start): `schema`
//! (`qzk`), `inbound_table` (`yc_sqxx`), `result_table` (`yc_bjxx`), `stage` (`SL`, the value
//! written to the stage column), and the column names `serial_column` (`ywlsh`),
//! `stage_column` (`hjdm`), `version_column` (`bbh`), `received_column` (`sfjs`),
//! `batch_column` (`pch`), `sync_column` (`tbzt`), `sync_note_column` (`tbsm`),
//! `created_column` (`cjsj`), `received_at_column` (`jssj`), `result_id_column` (`id`); for
//! supplements `supplement_table` (`yc_bzxx`), `supplement_serial_column` (`bzlsh`),
//! `round_column` (`bzcs`), `case_number_column` (`slbh`), `requested_column` (`bzcl`),
//! `materials_column` (`clqd`).
//! Endpoint: a `postgres://user@host:port/database` URL without a password; the password is
//! `credentials.password` (`{ env: VAR }` or `{ file: PATH }`), optional for trust/peer setups.

use std::sync::Arc;
use std::time::Duration;
use yichuang::store::postgres::plain_identifier;

use serde_json::Value;
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use tracing::{debug, info, warn};
use yichuang::tls::MakeRustlsConnect;

use super::Kind;
use crate::config::DepartmentConfig;
use crate::system::{Answer, DepartmentSystem, Failure, Gate, Task, supplement_serial, supplied};
use yichuang::proto::v1::SupplementDelivery;

pub const KIND: Kind = Kind {
    name: "exchange-db",
    about: "前置库: exchange tables in the department's PostgreSQL database",
    build,
};

/// Options and their defaults.
const DEFAULTS: &[(&str, &str)] = &[
    ("schema", "qzk"),
    ("inbound_table", "yc_sqxx"),
    ("result_table", "yc_bjxx"),
    ("stage", "SL"),
    ("serial_column", "ywlsh"),
    ("stage_column", "hjdm"),
    ("version_column", "bbh"),
    ("received_column", "sfjs"),
    ("batch_column", "pch"),
    ("sync_column", "tbzt"),
    ("sync_note_column", "tbsm"),
    ("created_column", "cjsj"),
    ("received_at_column", "jssj"),
    ("result_id_column", "id"),
    ("supplement_table", "yc_bzxx"),
    ("supplement_serial_column", "bzlsh"),
    ("round_column", "bzcs"),
    ("case_number_column", "slbh"),
    ("requested_column", "bzcl"),
    ("materials_column", "clqd"),
];

/// Answer key carrying the highest result row id read that was not yet acknowledged.
pub const ACK_KEY: &str = "_exchange_ack_up_to";

/// The version the adapter writes: a task is handed over once.
const VERSION: i32 = 1;

/// The statements, built once from the options.
#[derive(Debug, Clone)]
struct Sql {
    insert: String,
    inbound: String,
    results: String,
    ack: String,
    supplement: String,
    supplement_state: String,
    /// Where, for messages.
    inbound_table: String,
    result_table: String,
    supplement_table: String,
}

fn build(config: &DepartmentConfig, gate: Gate) -> Result<Arc<dyn DepartmentSystem>, String> {
    let known: Vec<&str> = DEFAULTS.iter().map(|(k, _)| *k).collect();
    let o = super::options(config, &known, &[])?;
    let opt = |key: &str| -> String {
        o.get(key).cloned().unwrap_or_else(|| {
            DEFAULTS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        })
    };
    let fields = check_names(config, &opt)?;
    let (pg, tls) = connection(config)?;
    let sql = statements(&opt, &fields);
    debug!(department = %config.department, insert = %sql.insert, "exchange-db statements");
    Ok(Arc::new(ExchangeDb {
        pg,
        tls,
        sql,
        stage: opt("stage"),
        status_column: config.mapping.result.status.clone(),
        supplement_statuses: config.mapping.result.supplement.clone(),
        material_names: config.material_names.clone(),
        client: Mutex::new(None),
        gate,
    }))
}

/// Every table and column name is a plain identifier (they are spliced into SQL), and no mapped
/// field is a handshake column; the mapped fields, in order.
fn check_names<'a>(
    config: &'a DepartmentConfig,
    opt: &dyn Fn(&str) -> String,
) -> Result<Vec<&'a String>, String> {
    for (key, _) in DEFAULTS.iter().filter(|(k, _)| *k != "stage") {
        let v = opt(key);
        if !plain_identifier(&v) {
            return Err(format!(
                "options.{key} {v:?} is not a plain identifier: use lower-case letters, digits and _ (at most 63, not starting with a digit)"
            ));
        }
    }
    if opt("stage").trim().is_empty() {
        return Err("options.stage must not be empty".into());
    }
    let handshake: Vec<String> = [
        "serial_column",
        "stage_column",
        "version_column",
        "received_column",
        "batch_column",
        "sync_column",
        "sync_note_column",
        "created_column",
        "received_at_column",
    ]
    .iter()
    .map(|k| opt(k))
    .collect();
    let fields: Vec<&String> = config.mapping.request.keys().collect();
    for f in &fields {
        if !plain_identifier(f) {
            return Err(format!(
                "mapping.request.{f}: the legacy field is a column of the inbound table, so it must be a plain identifier (lower-case letters, digits and _)"
            ));
        }
        if handshake.contains(f) {
            return Err(format!(
                "mapping.request.{f}: the inbound table's handshake column has that name; rename the field or options.*_column"
            ));
        }
    }
    Ok(fields)
}

/// The connection settings: the endpoint URL without a password (`sslmode` and `sslrootcert`
/// as libpq reads them, `yichuang::tls::postgres`), the password from its secret.
fn connection(
    config: &DepartmentConfig,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), String> {
    let target = yichuang::tls::postgres(&config.endpoint).map_err(|e| {
        format!(
            "endpoint {:?}: {e} (postgres://user@host:5432/database?sslmode=verify-full&sslrootcert=/etc/ca.pem)",
            config.endpoint
        )
    })?;
    let mut pg = target.config;
    if !config.endpoint.starts_with("postgres://") && !config.endpoint.starts_with("postgresql://")
    {
        return Err(format!(
            "endpoint {:?} is not a postgres:// URL",
            config.endpoint
        ));
    }
    if pg.get_password().is_some() {
        return Err(
            "endpoint has a password in it; remove it and give credentials.password as { env: VAR } or { file: PATH }"
                .into(),
        );
    }
    for key in config.credentials.keys() {
        if key != "password" {
            return Err(format!(
                "credentials.{key}: kind exchange-db takes only credentials.password"
            ));
        }
    }
    if let Some(secret) = config.credentials.get("password") {
        let password = secret
            .resolve()
            .map_err(|e| format!("credentials.password: {e}"))?;
        pg.password(password);
    }
    pg.connect_timeout(Duration::from_secs(config.limits.timeout_secs.max(1)));
    pg.application_name(format!("yichuang-adapter-{}", config.department));
    Ok((pg, target.tls))
}

/// The statements, with the configured table and column names.
fn statements(opt: &dyn Fn(&str) -> String, fields: &[&String]) -> Sql {
    let schema = opt("schema");
    let inbound_table = format!("{schema}.{}", opt("inbound_table"));
    let result_table = format!("{schema}.{}", opt("result_table"));
    let supplement_table = format!("{schema}.{}", opt("supplement_table"));
    let (serial, stage, version) = (
        opt("serial_column"),
        opt("stage_column"),
        opt("version_column"),
    );
    let (received, received_at, id) = (
        opt("received_column"),
        opt("received_at_column"),
        opt("result_id_column"),
    );
    let mut columns = vec![
        serial.clone(),
        stage.clone(),
        version.clone(),
        received.clone(),
        opt("batch_column"),
        opt("sync_column"),
        opt("created_column"),
    ];
    let mut values = vec![
        "$1".to_string(),
        "$2".into(),
        "$3".into(),
        "'0'".into(),
        "$4".into(),
        "'0'".into(),
        "now()".into(),
    ];
    for (i, f) in fields.iter().enumerate() {
        columns.push((*f).clone());
        values.push(format!("${}", i + 5));
    }
    Sql {
        insert: format!(
            "INSERT INTO {inbound_table} ({}) VALUES ({}) ON CONFLICT ({serial}, {stage}, {version}) DO NOTHING",
            columns.join(", "),
            values.join(", ")
        ),
        inbound: format!(
            "SELECT {received}::text, {sync}::text, {note}::text FROM {inbound_table} \
             WHERE {serial} = $1 AND {stage} = $2 ORDER BY {version} DESC LIMIT 1",
            sync = opt("sync_column"),
            note = opt("sync_note_column"),
        ),
        results: format!(
            "SELECT row_to_json(r)::text, r.{id}::bigint, coalesce(r.{received}::text, '0') \
             FROM {result_table} r WHERE r.{serial} = $1 ORDER BY r.{id}"
        ),
        ack: format!(
            "UPDATE {result_table} SET {received} = '1', {received_at} = now() \
             WHERE {serial} = $1 AND {id} <= $2 AND coalesce({received}::text, '0') <> '1'"
        ),
        supplement: format!(
            "INSERT INTO {supplement_table} ({serial}, {supplement_serial}, {round}, {case_number}, \
             {requested}, {materials}, {received}, {batch}, {sync}, {created}) \
             VALUES ($1, $2, $3, $4, $5, $6, '0', $7, '0', now()) \
             ON CONFLICT ({supplement_serial}) DO NOTHING",
            supplement_serial = opt("supplement_serial_column"),
            round = opt("round_column"),
            case_number = opt("case_number_column"),
            requested = opt("requested_column"),
            materials = opt("materials_column"),
            batch = opt("batch_column"),
            sync = opt("sync_column"),
            created = opt("created_column"),
        ),
        supplement_state: format!(
            "SELECT {sync}::text, {note}::text FROM {supplement_table} WHERE {supplement_serial} = $1",
            sync = opt("sync_column"),
            note = opt("sync_note_column"),
            supplement_serial = opt("supplement_serial_column"),
        ),
        inbound_table,
        result_table,
        supplement_table,
    }
}

struct ExchangeDb {
    pg: tokio_postgres::Config,
    /// TLS as the endpoint's `sslmode` asks.
    tls: MakeRustlsConnect,
    sql: Sql,
    stage: String,
    /// The result column with the status, and the statuses that ask for a supplement: the
    /// result rows of a supplement round start after the department's request for it.
    status_column: Option<String>,
    supplement_statuses: Vec<String>,
    /// Material code → name, for supplements.
    material_names: std::collections::BTreeMap<String, String>,
    client: Mutex<Option<Arc<Client>>>,
    gate: Gate,
}

/// How a database error counts: data the department's table cannot take (class 22, 23) is the
/// task's problem; everything else (connection, missing table, permissions) is transient.
fn classify(what: &str, e: &tokio_postgres::Error) -> Failure {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let message = format!(
                "{what}: PostgreSQL {code}: {}{}",
                db.message(),
                db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            );
            if code.starts_with("22") || code.starts_with("23") {
                Failure::permanent(message)
            } else {
                Failure::transient(message)
            }
        }
        None => Failure::transient(format!("{what}: {e}")),
    }
}

/// Where the result rows of supplement round `round` start: after the department's `round`-th
/// supplement request among `statuses` (each row's status, `None` for a row without one). A
/// request written on several rows in a row counts once, and rows without a status right after
/// it belong to it. Round 0 starts at the first row; a round the department has not asked for
/// has no rows (rather than the rows of another round).
fn round_start(statuses: &[Option<String>], supplement: &[String], round: i32) -> usize {
    if round <= 0 {
        return 0;
    }
    let (mut requests, mut asking, mut start) = (0, false, None);
    for (i, status) in statuses.iter().enumerate() {
        let Some(status) = status.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
            if asking && requests == round {
                start = Some(i + 1);
            }
            continue;
        };
        let is_request = supplement.iter().any(|v| v == status);
        if is_request && !asking {
            requests += 1;
        }
        asking = is_request;
        if is_request && requests == round {
            start = Some(i + 1);
        }
    }
    start.unwrap_or(statuses.len())
}

/// One result row, as JSON, flattened into text values.
fn flatten_row(json: &str, out: &mut Answer) {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(json) else {
        return;
    };
    for (k, v) in m {
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s,
            other => other.to_string(),
        };
        if !text.trim().is_empty() {
            out.insert(k, text);
        }
    }
}

impl ExchangeDb {
    /// The connection, opened if there is none.
    async fn client(&self) -> Result<Arc<Client>, Failure> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let (client, connection) = self.pg.connect(self.tls.clone()).await.map_err(|e| {
            Failure::transient(format!(
                "cannot connect to the department database {}: {e}",
                self.where_()
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                warn!(error = %e, "department database connection ended");
            }
        });
        info!(database = %self.where_(), "connected to the department database");
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection after a failure that may have broken it.
    async fn failed(&self, what: &str, e: tokio_postgres::Error) -> Failure {
        if e.as_db_error().is_none() || e.is_closed() {
            *self.client.lock().await = None;
        }
        classify(what, &e)
    }

    fn where_(&self) -> String {
        format!(
            "{}:{}/{}",
            match self.pg.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                #[cfg(unix)]
                Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                None => String::new(),
            },
            self.pg.get_ports().first().copied().unwrap_or(5432),
            self.pg.get_dbname().unwrap_or("")
        )
    }

    /// What the department's tables say about a task, or `None` when it has no inbound row
    /// and no result row. For a supplement round: only the result rows of that round, and a
    /// refusal of the round's row is the task's failure.
    async fn state(&self, task: &Task) -> Result<Option<Answer>, Failure> {
        let client = self.client().await?;
        self.gate.permit().await;
        let inbound = match client
            .query_opt(&self.sql.inbound, &[&task.id(), &self.stage])
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.failed("reading the inbound table", e).await),
        };
        if let Some(row) = &inbound {
            let sync: Option<String> = row.get(1);
            if sync.as_deref().map(str::trim) == Some("2") {
                let note: Option<String> = row.get(2);
                return Err(Failure::permanent(format!(
                    "the department refused the row in {}: {}",
                    self.sql.inbound_table,
                    note.filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| "no reason given".into())
                )));
            }
        }
        let round = task.round();
        if round > 0 {
            let serial = supplement_serial(task.id(), round);
            self.gate.permit().await;
            let row = match client
                .query_opt(&self.sql.supplement_state, &[&serial])
                .await
            {
                Ok(r) => r,
                Err(e) => return Err(self.failed("reading the supplement table", e).await),
            };
            if let Some(row) = row {
                let sync: Option<String> = row.get(0);
                if sync.as_deref().map(str::trim) == Some("2") {
                    let note: Option<String> = row.get(1);
                    return Err(Failure::permanent(format!(
                        "the department refused supplement {serial} in {}: {}",
                        self.sql.supplement_table,
                        note.filter(|n| !n.trim().is_empty())
                            .unwrap_or_else(|| "no reason given".into())
                    )));
                }
            }
        }
        self.gate.permit().await;
        let rows = match client.query(&self.sql.results, &[&task.id()]).await {
            Ok(r) => r,
            Err(e) => return Err(self.failed("reading the result table", e).await),
        };
        if inbound.is_none() && rows.is_empty() {
            return Ok(None);
        }
        let mut parsed: Vec<Answer> = Vec::with_capacity(rows.len());
        let mut unacknowledged: Option<i64> = None;
        for row in &rows {
            let mut one = Answer::new();
            flatten_row(row.get(0), &mut one);
            parsed.push(one);
            let id: i64 = row.get(1);
            let received: String = row.get(2);
            if received.trim() != "1" {
                unacknowledged = Some(id);
            }
        }
        let start = match &self.status_column {
            Some(column) => {
                let statuses: Vec<Option<String>> =
                    parsed.iter().map(|r| r.get(column).cloned()).collect();
                round_start(&statuses, &self.supplement_statuses, round)
            }
            None => 0,
        };
        let mut answer = Answer::new();
        for one in parsed.into_iter().skip(start) {
            answer.extend(one);
        }
        if let Some(id) = unacknowledged {
            answer.insert(ACK_KEY.into(), id.to_string());
        }
        Ok(Some(answer))
    }
}

#[async_trait::async_trait]
impl DepartmentSystem for ExchangeDb {
    async fn submit(&self, task: &Task) -> Result<Answer, Failure> {
        let client = self.client().await?;
        let batch = format!(
            "{}{}",
            (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y%m%d%H%M%S"),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![];
        let id = task.id().to_string();
        params.push(&id);
        params.push(&self.stage);
        params.push(&VERSION);
        params.push(&batch);
        // The fields in the order the columns were listed: both are the mapping's sorted keys.
        for v in task.fields.values() {
            params.push(v);
        }
        self.gate.permit().await;
        let inserted = match client.execute(&self.sql.insert, &params).await {
            Ok(n) => n,
            Err(e) => return Err(self.failed("inserting into the inbound table", e).await),
        };
        if inserted == 0 {
            debug!(task = %id, "the inbound row was already there");
        }
        // The department's job gives its case number when it takes the row; until then the
        // answer has none and the runtime polls for it.
        Ok(self.state(task).await?.unwrap_or_default())
    }

    async fn poll(&self, task: &Task, _department_case_number: &str) -> Result<Answer, Failure> {
        self.state(task).await?.ok_or_else(|| {
            Failure::permanent(format!(
                "neither {} nor {} has a row for serial {} any more (deleted on the department side?); the window must hand the task over again",
                self.sql.inbound_table,
                self.sql.result_table,
                task.id()
            ))
        })
    }

    async fn find(&self, task: &Task) -> Result<Option<Answer>, Failure> {
        self.state(task).await
    }

    async fn resupply(
        &self,
        task: &Task,
        department_case_number: &str,
        supplement: &SupplementDelivery,
    ) -> Result<Answer, Failure> {
        let client = self.client().await?;
        let batch = format!(
            "{}{}",
            (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y%m%d%H%M%S"),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let id = task.id().to_string();
        let serial = supplement_serial(&id, supplement.round);
        let case_number = department_case_number.to_string();
        let requested = supplement.requested.join("、");
        let materials = Value::Array(
            supplied(supplement, &self.material_names)
                .iter()
                .map(|m| m.legacy_json())
                .collect(),
        )
        .to_string();
        let params: [&(dyn ToSql + Sync); 7] = [
            &id,
            &serial,
            &supplement.round,
            &case_number,
            &requested,
            &materials,
            &batch,
        ];
        self.gate.permit().await;
        match client.execute(&self.sql.supplement, &params).await {
            Ok(0) => debug!(serial = %serial, "the supplement row was already there"),
            Ok(_) => {}
            Err(e) => return Err(self.failed("inserting into the supplement table", e).await),
        }
        // The department's job takes the row and writes the case's steps again; polling reads
        // them.
        Ok(Answer::new())
    }

    async fn acknowledge(&self, task: &Task, answer: &Answer) -> Result<(), Failure> {
        let Some(up_to) = answer.get(ACK_KEY).and_then(|v| v.parse::<i64>().ok()) else {
            return Ok(());
        };
        let client = self.client().await?;
        self.gate.permit().await;
        match client.execute(&self.sql.ack, &[&task.id(), &up_to]).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed("acknowledging result rows", e).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DepartmentConfig;

    fn config(extra: &str) -> DepartmentConfig {
        DepartmentConfig::parse(
            std::path::Path::new("rs.yaml"),
            &format!(
                "department: rs\nkind: exchange-db\nendpoint: postgres://rs@127.0.0.1:5432/rs\nmapping:\n  request:\n    ywlsh_ref: \"{{{{ task.taskId }}}}\"\n{extra}"
            ),
            &crate::kinds::names(),
        )
        .unwrap()
    }

    fn built(c: &DepartmentConfig) -> Result<(), String> {
        build(c, Gate::new(5)).map(|_| ())
    }

    #[test]
    fn identifiers_are_plain_lower_case_names() {
        for ok in ["yc_sqxx", "_t", "t1", &"a".repeat(63)] {
            assert!(plain_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1t",
            "Yc",
            "yc-sqxx",
            "yc sqxx",
            "yc;drop table x",
            "\"q\"",
            "表",
            &"a".repeat(64),
        ] {
            assert!(!plain_identifier(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn defaults_build_and_a_bad_name_is_refused_with_its_option() {
        assert_eq!(built(&config("")), Ok(()));
        let e = built(&config("options:\n  result_table: \"bj; drop\"\n")).unwrap_err();
        assert!(
            e.contains("options.result_table") && e.contains("identifier"),
            "{e}"
        );
        let e = built(&config("options:\n  tables: x\n")).unwrap_err();
        assert!(e.contains("options.tables"), "{e}");
    }

    #[tokio::test]
    async fn a_password_in_the_endpoint_is_refused() {
        let mut c = config("");
        c.endpoint = "postgres://rs:secret@127.0.0.1/rs".into();
        let e = built(&c).unwrap_err();
        assert!(
            e.contains("credentials.password") && !e.contains("secret@"),
            "{e}"
        );
        c.endpoint = "http://127.0.0.1/rs".into();
        assert!(built(&c).unwrap_err().contains("postgres://"));
    }

    #[tokio::test]
    async fn a_field_that_is_not_a_column_name_is_refused() {
        let mut c = config("");
        c.mapping.request.insert(
            "Bad-Name".into(),
            crate::mapping::Template::parse("x").unwrap(),
        );
        let e = built(&c).unwrap_err();
        assert!(e.contains("mapping.request.Bad-Name"), "{e}");
        let mut c = config("");
        c.mapping
            .request
            .insert("sfjs".into(), crate::mapping::Template::parse("x").unwrap());
        assert!(built(&c).unwrap_err().contains("handshake"));
    }

    #[test]
    fn a_rounds_rows_start_after_the_departments_request_for_it() {
        let s = |v: &[&str]| -> Vec<Option<String>> {
            v.iter()
                .map(|s| (!s.is_empty()).then(|| s.to_string()))
                .collect()
        };
        let supplement = vec!["补正".to_string()];
        let rows = s(&["办理中", "办理中", "补正", "补正", "办理中", "办结"]);
        assert_eq!(round_start(&rows, &supplement, 0), 0);
        // The request written twice counts once: round 1 starts after both.
        assert_eq!(round_start(&rows, &supplement, 1), 4);
        // Not asked for a second time: no rows of its own, never the first round's.
        assert_eq!(round_start(&rows, &supplement, 2), 6);
        let rows = s(&["办理中", "补正", "办理中", "", "补正", "", "办理中"]);
        assert_eq!(round_start(&rows, &supplement, 1), 2);
        assert_eq!(round_start(&rows, &supplement, 2), 6);
        // Before the department took the round's row, round 1 has no rows of its own yet.
        assert_eq!(round_start(&s(&["办理中", "补正"]), &supplement, 1), 2);
        assert_eq!(
            round_start(&s(&["补正", "", "补正", "办结"]), &supplement, 1),
            3
        );
    }

    #[test]
    fn rows_are_flattened_later_values_winning() {
        let mut a = Answer::new();
        flatten_row(
            r#"{"id":1,"slbh":"RS1","hjmc":"承办","blyj":null,"bjrq":""}"#,
            &mut a,
        );
        flatten_row(
            r#"{"id":2,"slbh":"RS1","hjmc":"办结","bjrq":"2019年06月20日"}"#,
            &mut a,
        );
        assert_eq!(a["id"], "2");
        assert_eq!(a["hjmc"], "办结");
        assert_eq!(a["bjrq"], "2019年06月20日");
        assert!(!a.contains_key("blyj"));
    }
}
