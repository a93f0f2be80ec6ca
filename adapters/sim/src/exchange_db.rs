//! A department reached through 前置库 exchange tables (人社-, 不动产-like): the department's
//! side of the handshake, on a real PostgreSQL database. It owns the exchange tables in its
//! schema (created by [`ExchangeDbSim::create_tables`]) and runs the department's sync job
//! ([`ExchangeDbSim::run`]): every tick it picks up new inbound rows (`sfjs = '0'`), marks them
//! received (`sfjs = '1'`, `tbzt = '1'`, `jssj`), refuses rows missing a required field
//! (`tbzt = '2'` with the reason in `tbsm`), gives accepted cases its own case numbers, and
//! writes result rows as cases move on (承办 → 审核 → 批准 → 办结) with the decision after the
//! configured delay and ratios, dates as `2019年06月20日` (or `20190620`). It also picks up
//! supplement (补正) rows from the supplement table: the case takes the round (once; a round it
//! has is marked `重复补正`, a case not waiting for one is refused with `tbzt = '2'`) and writes
//! its steps and decision to the result table again, from `承办`.
//!
//! Faults: the job does not run during a maintenance window (`behaviour.maintenance_ms` from
//! the start) nor on a tick the behaviour's fault shares hit; pickup is slow
//! (`pickup_delay_ms`: a row is taken only once that old); and a second inbound row for a
//! serial it already has (a new version) is a duplicate, counted in [`Stats`] and not handled
//! again. Handling a row and marking it are one step, as in a real job's transaction: a row
//! whose mark was lost (the database restarted between) is marked again, not handled twice.
//!
//! Inbound table (`inbound_table`): `id bigserial`, `ywlsh` serial, `hjdm` stage, `bbh`
//! version — unique together — `sfjs`, `pch` batch, `tbzt`, `tbsm`, `cjsj`, `jssj`, and one
//! text column per field in `fields`. Result table (`result_table`): `id bigserial`, `ywlsh`,
//! `slbh` case number, `hjmc` step, `blzt` status (办理中, 办结, 不予许可, 补正), `blyj`
//! opinion, `zzbh` licence number, `zzmc` licence name, `bzcl` materials to supplement,
//! `bjrq` decision date (text), `blsj` written at, `sfjs` received by the adapter, `jssj`.
//! Supplement table (`supplement_table`): `id bigserial`, `ywlsh`, `bzlsh` the round's serial
//! (unique), `bzcs` round, `slbh`, `bzcl` what was asked for, `clqd` the materials (JSON array
//! of objects with `clmc` names), and the handshake columns `sfjs`, `pch`, `tbzt`, `tbsm`,
//! `cjsj`, `jssj`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_postgres::Client;

use crate::core::{
    Behaviour, Fault, Outcome, REJECTION_REASONS, Resupply, SUPPLEMENT_MATERIALS, Sim, Stats,
    date_cn, outcome_word,
};

/// Settings of the simulated department.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub behaviour: Behaviour,
    /// The department database, with its password (this is the department's own side).
    pub url: String,
    pub schema: String,
    pub inbound_table: String,
    pub result_table: String,
    pub supplement_table: String,
    /// The inbound table's data columns (the adapter's `mapping.request` fields).
    pub fields: Vec<String>,
    /// Fields a row must have non-empty, or it is refused.
    pub required: Vec<String>,
    /// How often the department's sync job runs.
    pub tick_ms: u64,
    /// Slow pickup: a row is taken only once it is this old.
    pub pickup_delay_ms: u64,
    /// Dates as `20190620` instead of `2019年06月20日`.
    pub compact_dates: bool,
    /// The licence issued on approval.
    pub licence_name: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            behaviour: Behaviour {
                department: "rs".into(),
                ..Behaviour::default()
            },
            url: "postgres://yichuang@127.0.0.1:5432/yichuang".into(),
            schema: "qzk".into(),
            inbound_table: "yc_sqxx".into(),
            result_table: "yc_bjxx".into(),
            supplement_table: "yc_bzxx".into(),
            fields: [
                "tyslbh", "sxbm", "sxmc", "dwmc", "tyshxydm", "lxr", "lxdh", "slsj",
            ]
            .map(String::from)
            .to_vec(),
            required: vec!["dwmc".into()],
            tick_ms: 200,
            pickup_delay_ms: 0,
            compact_dates: false,
            licence_name: "社会保险登记证".into(),
        }
    }
}

/// `name` when it is a plain lower-case identifier (it is spliced into SQL).
pub(crate) fn identifier(name: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(
        yichuang::store::postgres::plain_identifier(name),
        "{name:?} is not a plain lower-case identifier"
    );
    Ok(name)
}

/// The handshake mark a row gets: `tbzt` and `tbsm`.
type Mark = (&'static str, String);

/// The running department.
pub struct ExchangeDbSim {
    pub sim: Sim,
    settings: Settings,
    /// When the job started, for tests of the maintenance window.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The last supplement round and step written per serial.
    written: Mutex<HashMap<String, (u32, &'static str)>>,
    /// Inbound and supplement rows handled, by (table, row id), with the mark they get: a row
    /// whose mark was not written (the database restarted in between) is marked again, not
    /// handled twice, as a real sync job's single transaction would have it.
    handled: Mutex<HashMap<(&'static str, i64), Mark>>,
}

impl ExchangeDbSim {
    pub fn new(settings: Settings) -> anyhow::Result<Arc<ExchangeDbSim>> {
        for name in [
            &settings.schema,
            &settings.inbound_table,
            &settings.result_table,
            &settings.supplement_table,
        ]
        .into_iter()
        .chain(&settings.fields)
        {
            identifier(name)?;
        }
        Ok(Arc::new(ExchangeDbSim {
            sim: Sim::new(settings.behaviour.clone()),
            settings,
            started_at: chrono::Utc::now(),
            written: Mutex::new(HashMap::new()),
            handled: Mutex::new(HashMap::new()),
        }))
    }

    pub fn stats(&self) -> Stats {
        self.sim.stats()
    }

    /// The mark of a row handled before whose mark may not have been written.
    fn already(&self, table: &'static str, id: i64) -> Option<Mark> {
        self.handled.lock().unwrap().get(&(table, id)).cloned()
    }

    /// Remembers that a row was handled, and the mark it gets.
    fn handle(&self, table: &'static str, id: i64, sync: &'static str, note: &str) {
        self.handled
            .lock()
            .unwrap()
            .insert((table, id), (sync, note.to_string()));
    }

    fn inbound(&self) -> String {
        format!("{}.{}", self.settings.schema, self.settings.inbound_table)
    }

    fn results(&self) -> String {
        format!("{}.{}", self.settings.schema, self.settings.result_table)
    }

    fn supplements(&self) -> String {
        format!(
            "{}.{}",
            self.settings.schema, self.settings.supplement_table
        )
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        // The URL's `sslmode` as libpq reads it: the suite's database asks for TLS.
        Ok(yichuang::tls::connect_postgres(&self.settings.url).await?)
    }

    /// Creates the schema and the exchange tables, when they are not there.
    pub async fn create_tables(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        let fields: String = self
            .settings
            .fields
            .iter()
            .map(|f| format!("    {f} text,\n"))
            .collect();
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {inbound} (
                     id bigserial PRIMARY KEY,
                     ywlsh varchar(64) NOT NULL,
                     hjdm varchar(16) NOT NULL,
                     bbh integer NOT NULL DEFAULT 1,
                     sfjs char(1) NOT NULL DEFAULT '0',
                     pch varchar(32),
                     tbzt char(1) NOT NULL DEFAULT '0',
                     tbsm varchar(500),
                     cjsj timestamptz NOT NULL DEFAULT now(),
                     jssj timestamptz,
                 {fields}
                     UNIQUE (ywlsh, hjdm, bbh)
                 );
                 CREATE TABLE IF NOT EXISTS {results} (
                     id bigserial PRIMARY KEY,
                     ywlsh varchar(64) NOT NULL,
                     slbh varchar(64),
                     hjmc varchar(32),
                     blzt varchar(32),
                     blyj text,
                     zzbh varchar(64),
                     zzmc varchar(128),
                     bzcl text,
                     bjrq varchar(32),
                     blsj timestamptz NOT NULL DEFAULT now(),
                     sfjs char(1) NOT NULL DEFAULT '0',
                     jssj timestamptz
                 );
                 CREATE INDEX IF NOT EXISTS {rt}_ywlsh ON {results} (ywlsh);
                 CREATE TABLE IF NOT EXISTS {supplements} (
                     id bigserial PRIMARY KEY,
                     ywlsh varchar(64) NOT NULL,
                     bzlsh varchar(80) NOT NULL UNIQUE,
                     bzcs integer NOT NULL,
                     slbh varchar(64),
                     bzcl text,
                     clqd text,
                     sfjs char(1) NOT NULL DEFAULT '0',
                     pch varchar(32),
                     tbzt char(1) NOT NULL DEFAULT '0',
                     tbsm varchar(500),
                     cjsj timestamptz NOT NULL DEFAULT now(),
                     jssj timestamptz
                 );",
                schema = self.settings.schema,
                inbound = self.inbound(),
                results = self.results(),
                supplements = self.supplements(),
                rt = self.settings.result_table,
            ))
            .await?;
        Ok(())
    }

    /// Runs the department's sync job until the task is dropped; a lost connection is opened
    /// again on the next tick.
    pub async fn run(self: Arc<Self>) {
        let mut client: Option<Client> = None;
        let tick = Duration::from_millis(self.settings.tick_ms.max(10));
        loop {
            tokio::time::sleep(tick).await;
            match self.sim.request() {
                Some(Fault::Maintenance | Fault::ServerError | Fault::TooMany(_)) => continue,
                Some(Fault::Hang(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            if client.as_ref().is_none_or(Client::is_closed) {
                client = match self.connect().await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "sim: cannot connect to the exchange database");
                        continue;
                    }
                };
            }
            let c = client.as_ref().expect("connected");
            if let Err(e) = self.tick(c).await {
                tracing::warn!(error = %e, "sim: sync job failed; next tick");
            }
        }
    }

    /// One run of the sync job.
    pub async fn tick(&self, c: &Client) -> anyhow::Result<()> {
        self.pick_up(c).await?;
        self.pick_up_supplements(c).await?;
        self.progress(c).await
    }

    async fn pick_up_supplements(&self, c: &Client) -> anyhow::Result<()> {
        let rows = c
            .query(
                &format!(
                    "SELECT id, ywlsh, bzlsh, bzcs, clqd FROM {} WHERE sfjs = '0' \
                     AND cjsj <= now() - $1::bigint * interval '1 millisecond' ORDER BY id",
                    self.supplements()
                ),
                &[&(self.settings.pickup_delay_ms as i64)],
            )
            .await?;
        let mark = format!(
            "UPDATE {} SET sfjs = '1', tbzt = $2, tbsm = $3, jssj = now() WHERE id = $1",
            self.supplements()
        );
        for row in rows {
            let id: i64 = row.get(0);
            if let Some((sync, note)) = self.already("supplement", id) {
                c.execute(&mark, &[&id, &sync, &note]).await?;
                continue;
            }
            let serial: String = row.get(1);
            let supplement_serial: String = row.get(2);
            let round: i32 = row.get(3);
            let supplied: Vec<String> = row
                .get::<_, Option<String>>(4)
                .and_then(|j| serde_json::from_str::<Vec<Value>>(&j).ok())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m["clmc"].as_str().map(str::to_string))
                .collect();
            let round = u32::try_from(round).unwrap_or(0);
            match self
                .sim
                .resupply(&serial, round, &supplement_serial, supplied)
            {
                Resupply::Taken(case) => {
                    self.handle("supplement", id, "1", "已接收");
                    c.execute(&mark, &[&id, &"1", &"已接收"]).await?;
                    self.write(c, &case.serial, &case.number, case.round(), "承办", None)
                        .await?;
                }
                Resupply::Duplicate(_) => {
                    self.handle("supplement", id, "1", "重复补正，已按原补正办理");
                    c.execute(&mark, &[&id, &"1", &"重复补正，已按原补正办理"])
                        .await?;
                }
                Resupply::NotWaiting(_) => {
                    self.handle("supplement", id, "2", "办件不在补正状态");
                    c.execute(&mark, &[&id, &"2", &"办件不在补正状态"]).await?;
                }
                Resupply::Unknown => {
                    self.handle("supplement", id, "2", "无此办件");
                    c.execute(&mark, &[&id, &"2", &"无此办件"]).await?;
                }
            }
        }
        Ok(())
    }

    async fn pick_up(&self, c: &Client) -> anyhow::Result<()> {
        let rows = c
            .query(
                &format!(
                    "SELECT id, row_to_json(t)::text FROM {} t WHERE sfjs = '0' \
                     AND cjsj <= now() - $1::bigint * interval '1 millisecond' ORDER BY id",
                    self.inbound()
                ),
                &[&(self.settings.pickup_delay_ms as i64)],
            )
            .await?;
        for row in rows {
            let id: i64 = row.get(0);
            let json: Value = serde_json::from_str(row.get::<_, &str>(1))?;
            let text = |k: &str| match json.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            let serial = text("ywlsh");
            let fields: BTreeMap<String, String> = self
                .settings
                .fields
                .iter()
                .map(|f| (f.clone(), text(f)))
                .collect();
            let mark = format!(
                "UPDATE {} SET sfjs = '1', tbzt = $2, tbsm = $3, jssj = now() WHERE id = $1",
                self.inbound()
            );
            if let Some((sync, note)) = self.already("inbound", id) {
                c.execute(&mark, &[&id, &sync, &note]).await?;
                continue;
            }
            // A serial it has already is a duplicate, whatever the row holds; a new one must
            // have the required fields.
            let known = self.sim.by_serial(&serial).is_some();
            if let Some(missing) = self
                .settings
                .required
                .iter()
                .find(|f| !known && fields.get(*f).is_none_or(|v| v.trim().is_empty()))
            {
                let note = format!("缺少必填项 {missing}");
                self.handle("inbound", id, "2", &note);
                c.execute(&mark, &[&id, &"2", &note]).await?;
                continue;
            }
            match self.sim.submit(&serial, fields) {
                Ok(case) => {
                    self.handle("inbound", id, "1", "已接收");
                    c.execute(&mark, &[&id, &"1", &"已接收"]).await?;
                    self.write(c, &case.serial, &case.number, 0, "承办", None)
                        .await?;
                }
                Err(existing) => {
                    let note = format!("重复申报，已按办件 {} 办理", existing.number);
                    self.handle("inbound", id, "1", &note);
                    c.execute(&mark, &[&id, &"1", &note]).await?;
                }
            }
        }
        Ok(())
    }

    async fn progress(&self, c: &Client) -> anyhow::Result<()> {
        let delay = self.sim.decision_delay();
        for case in self.sim.cases() {
            let (step, outcome) = case.state(delay);
            let last = self.written.lock().unwrap().get(&case.serial).copied();
            if last == Some((case.round(), step)) || last == Some((case.round(), "办结")) {
                continue;
            }
            self.write(c, &case.serial, &case.number, case.round(), step, outcome)
                .await?;
        }
        Ok(())
    }

    /// The date as this department writes it.
    pub fn date(&self, t: chrono::DateTime<chrono::Utc>) -> String {
        if self.settings.compact_dates {
            (t + chrono::Duration::hours(8))
                .format("%Y%m%d")
                .to_string()
        } else {
            date_cn(t)
        }
    }

    async fn write(
        &self,
        c: &Client,
        serial: &str,
        number: &str,
        round: u32,
        step: &'static str,
        outcome: Option<Outcome>,
    ) -> anyhow::Result<()> {
        let case = self.sim.by_serial(serial);
        let (mut opinion, mut licence, mut licence_name, mut materials, mut date) =
            (None, None, None, None, None);
        if step == "审核" {
            opinion = Some("同意".to_string());
        }
        if let Some(o) = outcome {
            date = Some(self.date(self.sim.now()));
            match o {
                Outcome::Approved => {
                    licence = case.as_ref().map(|c| c.licence_number());
                    licence_name = Some(self.settings.licence_name.clone());
                }
                Outcome::Rejected => opinion = Some(REJECTION_REASONS.to_string()),
                Outcome::Supplement => materials = Some(SUPPLEMENT_MATERIALS.to_string()),
            }
        }
        c.execute(
            &format!(
                "INSERT INTO {} (ywlsh, slbh, hjmc, blzt, blyj, zzbh, zzmc, bzcl, bjrq) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                self.results()
            ),
            &[
                &serial,
                &number,
                &step,
                &outcome.map_or("办理中", outcome_word),
                &opinion,
                &licence,
                &licence_name,
                &materials,
                &date,
            ],
        )
        .await?;
        self.written
            .lock()
            .unwrap()
            .insert(serial.to_string(), (round, step));
        Ok(())
    }
}
