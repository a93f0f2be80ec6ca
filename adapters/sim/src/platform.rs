//! The provincial one-network platform's case-record exchange (一网通办 办件汇聚, modelled on
//! Guangdong's `EX_GDBS_*` and `EX_HCP_*` tables), strict: it owns the platform's store of
//! accepted stage records and takes records by two transports that share it — a signed HTTP
//! interface (`POST /gdbs/api/record`, `POST /gdbs/api/query`) and exchange tables (前置库) in
//! PostgreSQL that its collector polls (`exchange`). Every record is judged by the same rules
//! (`rules`): unknown fields, code tables, formats, check digits and the order of stages are
//! refused with the platform's code and a message naming table and field, so a wrong mapping
//! in our reporter fails a test instead of passing. Idempotent on (table, SBLSH, XH).
//!
//! It also owns the test controls (in-process on [`PlatformSim`], and unsigned over HTTP at
//! `/sim/platform/...`): an outage, refusing a (table, SBLSH) until cleared, dropping a held
//! record, the held records with their acceptance counts, and refusals by code. It never
//! fabricates or repairs a record: what it holds is exactly what was sent and accepted.
//! `docs/platform-sim.md` lists the rules.

mod exchange;
mod http;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use exchange::ddl;
pub use http::{sign, signed_headers};
pub use rules::{Record, Refusal, TABLES};

/// How the simulated platform is set up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The caller's app id (`X-App-Id`).
    pub app_id: String,
    /// The caller's secret, the HMAC-SHA256 key of `X-Signature`.
    pub app_secret: String,
    /// How far `X-Timestamp` may be from the platform's clock.
    pub max_clock_skew_secs: u64,
    /// How long a nonce is remembered; one seen within it is a replay.
    pub nonce_window_secs: u64,
    /// The region codes (XZQHDM) the platform takes records for.
    pub regions: Vec<String>,
    /// The acceptance list whose items' codes are the known SXBM; `None`: only `item_codes`.
    pub catalog_dir: Option<PathBuf>,
    /// Which code of a catalog item is its SXBM.
    pub item_code: ItemCode,
    /// Further known item codes, besides the catalog's.
    pub item_codes: Vec<String>,
    /// Share of HTTP requests answered `9999 系统繁忙` without being looked at.
    pub busy_share: f64,
    /// The exchange-table transport; `None`: HTTP only.
    pub exchange: Option<ExchangeSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            app_id: "yichuang".into(),
            app_secret: "platform-secret".into(),
            max_clock_skew_secs: 300,
            nonce_window_secs: 600,
            regions: vec!["440100".into()],
            catalog_dir: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../config/catalog"
            ))),
            item_code: ItemCode::Code,
            item_codes: Vec::new(),
            busy_share: 0.0,
            exchange: None,
        }
    }
}

/// Which code of a catalog item the platform knows it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemCode {
    /// The acceptance list's item code (`QY-SL`).
    Code,
    /// The 31-character implementation code (实施编码).
    ImplementationCode,
}

/// The exchange tables (前置库) transport.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExchangeSettings {
    /// The exchange database, with its password.
    pub url: String,
    /// The schema of the exchange tables; created when missing.
    pub schema: String,
    /// How often the collector looks for rows with `sync_sign = '0'`.
    pub poll_ms: u64,
}

impl Default for ExchangeSettings {
    fn default() -> Self {
        ExchangeSettings {
            url: "postgres://yichuang@127.0.0.1:5432/yichuang".into(),
            schema: "gdbs_qzk".into(),
            poll_ms: 300,
        }
    }
}

/// By which transport a held record came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Table,
}

/// The platform's answer to one record: code `"0"` or a refusal code, and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub code: String,
    pub msg: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.code == "0"
    }
}

/// Message of a record accepted the first time.
pub const RECEIVED: &str = "接收成功";
/// Message of a record sent again with the same content.
pub const EXISTS: &str = "数据已存在";

/// A held record and what happened to its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub table: String,
    pub sblsh: String,
    pub xh: u32,
    pub record: Record,
    pub transport: Transport,
    /// Times the key was accepted first-time: 1, or one more per drop before it.
    pub accepted: u64,
    /// Times the same content came again (`数据已存在`).
    pub repeats: u64,
    /// Times the key was dropped by the control.
    pub dropped: u64,
}

struct Entry {
    record: Record,
    via: Transport,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    accepted: u64,
    repeats: u64,
    dropped: u64,
}

#[derive(Default)]
struct Store {
    /// Held records by (SBLSH, table, XH): one SBLSH's records are one range.
    held: BTreeMap<(String, usize, u32), Entry>,
    /// Per key, kept across drops so that a record sent again after a drop shows.
    tally: HashMap<(String, usize, u32), Tally>,
    /// Refusals by code, both transports, the 401s, 503s and 9999s included.
    refusals: BTreeMap<String, u64>,
    /// (table, SBLSH) refused with this message until cleared.
    refuse: HashMap<(usize, String), String>,
    /// Nonces seen, and when.
    nonces: HashMap<String, Instant>,
}

/// The simulated platform.
pub struct PlatformSim {
    settings: Settings,
    known: rules::Known,
    store: Mutex<Store>,
    outage: AtomicBool,
    /// The share of `9999` answers, as `f64` bits.
    busy: std::sync::atomic::AtomicU64,
}

impl PlatformSim {
    /// The platform with the item codes of its catalog and settings.
    pub fn new(settings: Settings) -> anyhow::Result<Arc<PlatformSim>> {
        let mut items: BTreeSet<String> = settings.item_codes.iter().cloned().collect();
        if let Some(dir) = &settings.catalog_dir {
            let catalog = yichuang::catalog::Catalog::load(dir)
                .map_err(|e| anyhow::anyhow!("platform sim: catalog {}: {e}", dir.display()))?;
            for item in catalog.items.values() {
                items.insert(match settings.item_code {
                    ItemCode::Code => item.code.get_ref().clone(),
                    ItemCode::ImplementationCode => catalog.implementation_code(item),
                });
            }
        }
        anyhow::ensure!(
            !items.is_empty(),
            "platform sim: no item codes (set catalog_dir or item_codes)"
        );
        let known = rules::Known {
            items,
            regions: settings.regions.iter().cloned().collect(),
        };
        Ok(Arc::new(PlatformSim {
            busy: (settings.busy_share.to_bits()).into(),
            settings,
            known,
            store: Mutex::new(Store::default()),
            outage: AtomicBool::new(false),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Judges one record and holds it when accepted. The HTTP interface and the collector
    /// both come here.
    pub fn submit(&self, table: &str, record: &Value, via: Transport) -> Answer {
        let mut store = self.store.lock().unwrap();
        match judge(&self.known, &mut store, table, record, via) {
            Ok(msg) => Answer {
                code: "0".into(),
                msg: msg.into(),
            },
            Err(r) => {
                *store.refusals.entry(r.code.into()).or_default() += 1;
                Answer {
                    code: r.code.into(),
                    msg: r.msg,
                }
            }
        }
    }

    /// Every record held for these SBLSH, each SBLSH's in stage order.
    pub fn query(&self, sblsh: &[String]) -> Vec<(&'static str, Record)> {
        let store = self.store.lock().unwrap();
        let mut out = Vec::new();
        for s in sblsh {
            for ((_, t, _), e) in store.held.range(of_case(s)) {
                out.push((TABLES[*t].name, e.record.clone()));
            }
        }
        out
    }

    /// Starts or ends an outage: HTTP answers 503 and the collector stops.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    pub fn outage(&self) -> bool {
        self.outage.load(Ordering::SeqCst)
    }

    /// Sets the share of HTTP requests answered `9999`.
    pub fn set_busy_share(&self, share: f64) {
        self.busy.store(share.to_bits(), Ordering::SeqCst);
    }

    /// Refuses every record of `table` for `sblsh` with `msg` (code 1001, sync '2') until
    /// [`PlatformSim::clear_refusal`].
    pub fn refuse(&self, table: &str, sblsh: &str, msg: &str) -> anyhow::Result<()> {
        let t = known_table(table)?;
        let mut store = self.store.lock().unwrap();
        store.refuse.insert((t, sblsh.into()), msg.into());
        Ok(())
    }

    /// Ends a [`PlatformSim::refuse`]; false when there was none.
    pub fn clear_refusal(&self, table: &str, sblsh: &str) -> anyhow::Result<bool> {
        let t = known_table(table)?;
        let mut store = self.store.lock().unwrap();
        Ok(store.refuse.remove(&(t, sblsh.into())).is_some())
    }

    /// Forgets a held record without a word, as a platform that lost it; one that came by the
    /// exchange tables loses its row too. False when it was not held.
    pub async fn drop_record(&self, table: &str, sblsh: &str, xh: u32) -> anyhow::Result<bool> {
        let t = known_table(table)?;
        let key = (sblsh.to_string(), t, xh);
        let via = self.store.lock().unwrap().held.get(&key).map(|e| e.via);
        let Some(via) = via else { return Ok(false) };
        if via == Transport::Table {
            let ex = self
                .settings
                .exchange
                .as_ref()
                .expect("a record came by the tables");
            exchange::delete_row(ex, t, sblsh, xh).await?;
        }
        let mut store = self.store.lock().unwrap();
        store.held.remove(&key);
        store.tally.entry(key).or_default().dropped += 1;
        Ok(true)
    }

    /// Every held record with its counts, by SBLSH and stage.
    pub fn records(&self) -> Vec<Held> {
        let store = self.store.lock().unwrap();
        store
            .held
            .iter()
            .map(|(key, e)| {
                let tally = store.tally.get(key).copied().unwrap_or_default();
                Held {
                    table: TABLES[key.1].name.into(),
                    sblsh: key.0.clone(),
                    xh: key.2,
                    record: e.record.clone(),
                    transport: e.via,
                    accepted: tally.accepted,
                    repeats: tally.repeats,
                    dropped: tally.dropped,
                }
            })
            .collect()
    }

    /// Refusals so far by code (`1001`, `1002`, `1003`, `9999`, `401`, `503`).
    pub fn refusals(&self) -> BTreeMap<String, u64> {
        self.store.lock().unwrap().refusals.clone()
    }

    fn count(&self, code: &str) {
        *self
            .store
            .lock()
            .unwrap()
            .refusals
            .entry(code.into())
            .or_default() += 1;
    }
}

fn known_table(name: &str) -> anyhow::Result<usize> {
    rules::table_index(name).ok_or_else(|| anyhow::anyhow!("no exchange table {name}"))
}

/// The keys of one SBLSH's records.
fn of_case(sblsh: &str) -> std::ops::RangeInclusive<(String, usize, u32)> {
    (sblsh.to_string(), 0, 0)..=(sblsh.to_string(), usize::MAX, u32::MAX)
}

fn judge(
    known: &rules::Known,
    store: &mut Store,
    table: &str,
    record: &Value,
    via: Transport,
) -> Result<&'static str, Refusal> {
    let invalid = |msg: String| Refusal {
        code: rules::INVALID,
        msg,
    };
    let t = rules::table_index(table).ok_or_else(|| invalid(format!("表 {table} 不在规范中")))?;
    let Some(rec) = record.as_object() else {
        return Err(invalid(format!("{table} 记录应为 JSON 对象")));
    };
    if let Some(msg) = rec
        .get("SBLSH")
        .and_then(Value::as_str)
        .and_then(|s| store.refuse.get(&(t, s.to_string())))
    {
        return Err(invalid(msg.clone()));
    }
    rules::check_fields(t, rec, known)?;
    let sblsh = rules::sblsh(rec).to_string();
    let xh = rules::xh(rec);
    let key = (sblsh.clone(), t, xh);
    if let Some(held) = store.held.get(&key) {
        if held.record == *rec {
            store.tally.entry(key).or_default().repeats += 1;
            return Ok(EXISTS);
        }
        let once = if t == rules::PJ {
            "：该办件已评价，一次一评"
        } else {
            ""
        };
        return Err(Refusal {
            code: rules::CONFLICT,
            msg: format!("{table} 记录已存在且内容不一致{once} (SBLSH={sblsh}, XH={xh})"),
        });
    }
    let case: rules::Case = store
        .held
        .range(of_case(&sblsh))
        .map(|((_, t, x), e)| ((*t, *x), &e.record))
        .collect();
    rules::check_against(t, rec, &case)?;
    store.held.insert(
        key.clone(),
        Entry {
            record: rec.clone(),
            via,
        },
    );
    store.tally.entry(key).or_default().accepted += 1;
    Ok(RECEIVED)
}

/// A running platform: its HTTP interface and, when configured, its collector. Dropping it
/// stops both.
pub struct PlatformHandle {
    pub sim: Arc<PlatformSim>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for PlatformHandle {
    type Target = PlatformSim;
    fn deref(&self) -> &PlatformSim {
        &self.sim
    }
}

impl Drop for PlatformHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the platform on a port of the system's choosing on 127.0.0.1 (the exchange tables
/// created first, when configured): its address and handle.
pub async fn spawn(settings: Settings) -> anyhow::Result<(SocketAddr, PlatformHandle)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((addr, spawn_on(listener, settings).await?))
}

/// Starts the platform on `listener`.
pub async fn spawn_on(
    listener: tokio::net::TcpListener,
    settings: Settings,
) -> anyhow::Result<PlatformHandle> {
    let sim = PlatformSim::new(settings)?;
    let mut tasks = Vec::new();
    if let Some(ex) = sim.settings.exchange.clone() {
        exchange::create_tables(&ex).await?;
        tasks.push(tokio::spawn(exchange::collect(sim.clone(), ex)));
    }
    let app = sim.router();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));
    Ok(PlatformHandle { sim, tasks })
}
