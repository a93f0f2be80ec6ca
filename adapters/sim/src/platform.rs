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
pub mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::Mac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use exchange::ddl;
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

    /// The HTTP interface and the controls.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/gdbs/api/record", post(http_record))
            .route("/gdbs/api/query", post(http_query))
            .route("/sim/platform/records", get(ctl_records))
            .route("/sim/platform/refusals", get(ctl_refusals))
            .route("/sim/platform/outage", post(ctl_outage))
            .route("/sim/platform/busy", post(ctl_busy))
            .route("/sim/platform/refuse", post(ctl_refuse))
            .route("/sim/platform/refuse/clear", post(ctl_clear))
            .route("/sim/platform/drop", post(ctl_drop))
            .with_state(self.clone())
    }

    /// Checks the caller's signature headers; the reason when refused.
    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("签名验证失败：缺少请求头 {name}"))
        };
        let app = header("X-App-Id")?;
        if app != self.settings.app_id {
            return Err(format!("签名验证失败：应用 {app} 未注册"));
        }
        let timestamp = header("X-Timestamp")?;
        let Ok(ms) = timestamp.parse::<i64>() else {
            return Err("签名验证失败：X-Timestamp 应为毫秒时间戳".into());
        };
        let off = (chrono::Utc::now().timestamp_millis() - ms).unsigned_abs();
        if off > self.settings.max_clock_skew_secs * 1000 {
            return Err(format!(
                "签名验证失败：时间戳超出允许范围（±{} 秒）",
                self.settings.max_clock_skew_secs
            ));
        }
        let nonce = header("X-Nonce")?;
        let signature = header("X-Signature")?;
        if signature != sign(&self.settings.app_secret, app, timestamp, nonce, body) {
            return Err("签名验证失败".into());
        }
        let mut store = self.store.lock().unwrap();
        let window = Duration::from_secs(self.settings.nonce_window_secs);
        store.nonces.retain(|_, seen| seen.elapsed() < window);
        if store.nonces.insert(nonce.into(), Instant::now()).is_some() {
            return Err("签名验证失败：X-Nonce 重复，疑似重放请求".into());
        }
        Ok(())
    }

    /// What every platform request passes first: the outage, then the signature, then the
    /// busy share. `None`: go on.
    fn gate(&self, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        if self.outage() {
            self.count("503");
            return Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("content-type", "text/html; charset=utf-8")],
                    OUTAGE_PAGE,
                )
                    .into_response(),
            );
        }
        if let Err(msg) = self.authenticate(headers, body) {
            self.count("401");
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"code": "401", "msg": msg})),
                )
                    .into_response(),
            );
        }
        let share = f64::from_bits(self.busy.load(Ordering::SeqCst));
        if share > 0.0 && random() < share {
            self.count("9999");
            return Some(answer("9999", "系统繁忙，请稍后重试"));
        }
        None
    }
}

const OUTAGE_PAGE: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// `X-Signature`: lowercase hex HMAC-SHA256 with the app secret over
/// `appId + "\n" + timestamp + "\n" + nonce + "\n" + body`.
pub fn sign(secret: &str, app_id: &str, timestamp: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(format!("{app_id}\n{timestamp}\n{nonce}\n").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The four authentication headers for `body`, timestamped now with a fresh nonce.
pub fn signed_headers(app_id: &str, secret: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let timestamp = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let signature = sign(secret, app_id, &timestamp, &nonce, body);
    vec![
        ("X-App-Id", app_id.to_string()),
        ("X-Timestamp", timestamp),
        ("X-Nonce", nonce),
        ("X-Signature", signature),
    ]
}

fn random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    bits as f64 / u64::MAX as f64
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

fn answer(code: &str, msg: &str) -> Response {
    axum::Json(json!({"code": code, "msg": msg})).into_response()
}

/// A request body as a JSON object with exactly these keys, or the 1001 message.
fn envelope(body: &[u8], keys: &[&str]) -> Result<serde_json::Map<String, Value>, String> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Err("请求体应为 JSON 对象".into());
    };
    if let Some(k) = obj.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!("请求字段 {k} 不在规范中"));
    }
    if let Some(k) = keys.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("请求字段 {k} 不能为空"));
    }
    Ok(obj)
}

async fn http_record(
    State(p): State<Arc<PlatformSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = p.gate(&headers, &body) {
        return r;
    }
    let obj = match envelope(&body, &["table", "record"]) {
        Ok(obj) => obj,
        Err(msg) => {
            p.count("1001");
            return answer("1001", &msg);
        }
    };
    let table = obj["table"].as_str().unwrap_or_default();
    axum::Json(p.submit(table, &obj["record"], Transport::Http)).into_response()
}

async fn http_query(
    State(p): State<Arc<PlatformSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = p.gate(&headers, &body) {
        return r;
    }
    let list = envelope(&body, &["sblsh"]).and_then(|obj| {
        let list: Option<Vec<String>> = obj["sblsh"].as_array().and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
        });
        match list {
            None => Err("sblsh 应为申办流水号字符串数组".to_string()),
            Some(l) if l.len() > 100 => Err(format!("sblsh 一次最多查询 100 个，本次 {}", l.len())),
            Some(l) => Ok(l),
        }
    });
    let list = match list {
        Ok(l) => l,
        Err(msg) => {
            p.count("1001");
            return answer("1001", &msg);
        }
    };
    let data: Vec<Value> = p
        .query(&list)
        .into_iter()
        .map(|(table, record)| json!({"table": table, "record": record}))
        .collect();
    axum::Json(json!({"code": "0", "msg": "查询成功", "data": data})).into_response()
}

async fn ctl_records(State(p): State<Arc<PlatformSim>>) -> Response {
    axum::Json(p.records()).into_response()
}

async fn ctl_refusals(State(p): State<Arc<PlatformSim>>) -> Response {
    axum::Json(p.refusals()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct On {
    on: bool,
}

async fn ctl_outage(State(p): State<Arc<PlatformSim>>, axum::Json(o): axum::Json<On>) -> Response {
    p.set_outage(o.on);
    axum::Json(json!({"outage": o.on})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Share {
    share: f64,
}

async fn ctl_busy(State(p): State<Arc<PlatformSim>>, axum::Json(s): axum::Json<Share>) -> Response {
    p.set_busy_share(s.share);
    axum::Json(json!({"busy_share": s.share})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    table: String,
    sblsh: String,
    #[serde(default)]
    xh: Option<u32>,
    #[serde(default)]
    msg: Option<String>,
}

fn bad(e: anyhow::Error) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

async fn ctl_refuse(State(p): State<Arc<PlatformSim>>, axum::Json(k): axum::Json<Key>) -> Response {
    let msg = k
        .msg
        .unwrap_or_else(|| format!("{} 数据校验不通过", k.table));
    match p.refuse(&k.table, &k.sblsh, &msg) {
        Ok(()) => axum::Json(json!({"refusing": true})).into_response(),
        Err(e) => bad(e),
    }
}

async fn ctl_clear(State(p): State<Arc<PlatformSim>>, axum::Json(k): axum::Json<Key>) -> Response {
    match p.clear_refusal(&k.table, &k.sblsh) {
        Ok(was) => axum::Json(json!({"cleared": was})).into_response(),
        Err(e) => bad(e),
    }
}

async fn ctl_drop(State(p): State<Arc<PlatformSim>>, axum::Json(k): axum::Json<Key>) -> Response {
    let Some(xh) = k.xh else {
        return bad(anyhow::anyhow!("xh is required"));
    };
    match p.drop_record(&k.table, &k.sblsh, xh).await {
        Ok(dropped) => axum::Json(json!({"dropped": dropped})).into_response(),
        Err(e) => bad(e),
    }
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
