//! The reporter (办件汇聚): reports every case's stages upward to the provincial one-network
//! platform in the records of its exchange specification, in order, once each, and proves it
//! with a daily reconciliation.
//!
//! - It takes the gateway's history entries from the events exchange through its own durable
//!   queue (`<prefix>.report`); an entry only says "case N changed": the case is then read
//!   with `GetCase` (as the `platform` role, so every read is in the gateway's access log), and
//!   its records derived again from the whole case ([`derive`], by the [`spec`] file).
//! - The [`ledger`] keeps each record and where it stands. A record is sent only when every
//!   earlier record of its 申办流水号 is confirmed; one the platform refuses is kept with its
//!   words and sent again when its derivation changes (the specification was corrected) or an
//!   operator says so (`report resend`).
//! - [`reconcile`] compares, for a day, what the platform holds with what the gateway's cases
//!   say, and reports again what is missing.
//!
//! This module owns the reporter's settings and its loops; [`transport`] owns the wire.

pub mod derive;
pub mod facts;
pub mod ledger;
pub mod reconcile;
pub mod spec;
pub mod transport;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tonic::transport::Channel;
use tracing::{debug, info, warn};
use yichuang::config::{BusConfig, LogConfig, TracingConfig};
use yichuang::proto::v1::ListNotAcceptedRequest;
use yichuang::proto::v1::case_service_client::CaseServiceClient;

use crate::cases::Unread;
pub use crate::cases::{GatewayConfig, Pace, pace};
use ledger::{Change, Ledger, Stored};
use spec::Spec;
use transport::{Sent, Transport, TransportConfig};

/// The reporter's settings (`config/reporter.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReporterConfig {
    /// The reporting specification (relative to this file).
    pub specification: PathBuf,
    /// The ledger (SQLite file).
    pub ledger: PathBuf,
    /// The working-day calendar (the gateway's `config/calendar`), for the one-working-day goal.
    pub calendar_dir: PathBuf,
    /// The hall's UTC offset: reconciliation days are counted in it.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    pub gateway: GatewayConfig,
    pub bus: BusConfig,
    pub transport: TransportConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
}

fn default_offset() -> String {
    "+08:00".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Health, status and metrics (internal).
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9190".into(),
        }
    }
}

/// The daily reconciliation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// When, in the hall's time (`HH:MM`): the previous day is reconciled (and any day missed
    /// while the reporter was down, within `lookback_days`).
    #[serde(default = "default_at")]
    pub at: String,
    /// A fact younger than this may still be on its way (its entry in the queue): not a gap.
    #[serde(default = "default_in_flight")]
    pub in_flight_secs: u64,
    /// Cases accepted this many days back to the day reconciled are read again too, so an
    /// entry lost for an older case (its decision, its delivery) is found.
    #[serde(default = "default_lookback")]
    pub lookback_days: u32,
    /// Confirmed records are forgotten this many days after their fact (the ledger holds
    /// personal data no longer than reconciliation needs it).
    #[serde(default = "default_keep")]
    pub keep_days: u32,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            at: default_at(),
            in_flight_secs: default_in_flight(),
            lookback_days: default_lookback(),
            keep_days: default_keep(),
        }
    }
}

impl ReconcileConfig {
    pub fn time(&self) -> chrono::NaiveTime {
        chrono::NaiveTime::parse_from_str(&self.at, "%H:%M").unwrap_or_default()
    }
}

fn default_in_flight() -> u64 {
    120
}

fn default_lookback() -> u32 {
    7
}

fn default_keep() -> u32 {
    30
}

fn default_at() -> String {
    "02:00".into()
}

impl ReporterConfig {
    /// Reads the settings (`${VAR:-default}` replaced from the environment); paths are relative
    /// to the file.
    pub fn load(path: &Path) -> Result<ReporterConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let text = yichuang::config::interpolate(path, &text, |v| std::env::var(v).ok())
            .map_err(|e| e.to_string())?;
        let mut c: ReporterConfig = toml::from_str(&text)
            .map_err(|e| yichuang::config::toml_problem(path, &text, &e).to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.specification, &mut c.ledger, &mut c.calendar_dir] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        c.gateway.tls = c.gateway.tls.relative_to(base);
        c.bus.ca_file = c.bus.ca_file.map(|p| base.join(p));
        if chrono::NaiveTime::parse_from_str(&c.reconcile.at, "%H:%M").is_err() {
            return Err(format!(
                "{}: [reconcile] at = {:?}: write HH:MM",
                path.display(),
                c.reconcile.at
            ));
        }
        if c.reconcile.lookback_days == 0 || c.reconcile.keep_days <= c.reconcile.lookback_days {
            return Err(format!(
                "{}: [reconcile] lookback_days must be at least 1, and keep_days more than it",
                path.display()
            ));
        }
        Ok(c)
    }

    pub fn offset(&self) -> Result<chrono::FixedOffset, String> {
        crate::cases::offset(&self.utc_offset)
    }

    /// A channel to the gateway, connected when first used.
    pub fn gateway_channel(&self) -> Result<Channel, String> {
        self.gateway.channel()
    }
}

/// The reporter: its specification, ledger, transport and the gateway it reads cases from.
pub struct Reporter {
    pub spec: Spec,
    pub ledger: Ledger,
    pub transport: Transport,
    pub gateway: CaseServiceClient<Channel>,
    pub calendar: yichuang::calendar::Calendar,
    pub offset: chrono::FixedOffset,
    pub meters: meters::Meters,
    /// The pace of calls to the gateway ([`pace`]).
    pub pace: Pace,
    /// The reconciliation's settings.
    pub reconciling: ReconcileConfig,
    /// The platform did not answer the last attempt: the next answer wakes the records
    /// waiting out their backoff.
    pub failing: std::sync::atomic::AtomicBool,
}

impl Reporter {
    /// The reporter of `config`: its specification, ledger, transport, calendar and the lazy
    /// channel to the gateway.
    pub fn open(config: &ReporterConfig) -> Result<Reporter, String> {
        let calendar = yichuang::calendar::Calendar::load(&config.calendar_dir).map_err(|p| {
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        Ok(Reporter {
            spec: Spec::load(&config.specification)?,
            ledger: Ledger::open(&config.ledger)?,
            transport: Transport::new(&config.transport)?,
            gateway: CaseServiceClient::new(config.gateway_channel()?),
            calendar,
            offset: config.offset()?,
            meters: meters::Meters::default(),
            pace: pace(config.gateway.calls_per_second),
            reconciling: config.reconcile.clone(),
            failing: Default::default(),
        })
    }
}

/// The ledger's cursor over `ListNotAccepted`.
const NOT_ACCEPTED: &str = "not-accepted";
/// How often the submissions not accepted are asked for (they have no history entry).
const NOT_ACCEPTED_EVERY: Duration = Duration::from_secs(2);

/// How often a row written to an exchange table is looked at until its flag is set.
const FLAG_EVERY_MS: i64 = 500;

/// How many records are sent at once (each to its own 申办流水号).
const SEND_BATCH: i64 = 16;
/// How many changed cases are read at once.
const READ_BATCH: i64 = 16;

impl Reporter {
    /// Calls the gateway at the reporter's pace ([`crate::cases::call`]).
    pub async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, String>
    where
        F: Fn(CaseServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        crate::cases::call(&self.pace, &self.gateway, what, call).await
    }

    /// Reads a changed case and stores its records; how many were new or corrected.
    pub async fn refresh(&self, case_number: &str) -> Result<usize, Unread> {
        let case = crate::cases::get_case(&self.pace, &self.gateway, case_number).await?;
        // A specification that cannot render the case is mended in the settings, not in seconds.
        let records = derive::records(&self.spec, &case).map_err(Unread::Lasting)?;
        let mut changed = 0;
        for r in &records {
            match self.ledger.store(r).map_err(Unread::Passing)? {
                Change::New | Change::Corrected => changed += 1,
                Change::Same => {}
                // A record keeps what was true when it was reported (a task's promise at
                // acceptance stays its SL's, though a release moved it since).
                Change::Differs => {
                    debug!(case = %case_number, table = %r.table, seq = r.seq, "a record already reported derives differently now; kept as reported")
                }
            }
        }
        Ok(changed)
    }

    /// Reads the submissions not accepted since the last look (`ListNotAccepted`, by position)
    /// and stores their records; how many were read.
    pub async fn poll_not_accepted(&self) -> Result<usize, String> {
        let after = self.ledger.cursor(NOT_ACCEPTED)?;
        let request = ListNotAcceptedRequest {
            after,
            page_size: 100,
            ..Default::default()
        };
        let page = self
            .call("ListNotAccepted", |mut g| {
                let r = request.clone();
                async move { g.list_not_accepted(r).await }
            })
            .await?;
        let mut last = after;
        for n in &page.items {
            for r in derive::notice_records(&self.spec, n)? {
                self.ledger.store(&r)?;
            }
            last = last.max(n.id);
        }
        if last != after {
            self.ledger.set_cursor(NOT_ACCEPTED, last)?;
        }
        Ok(page.items.len())
    }

    /// One pass over the changed cases.
    pub async fn refresh_dirty(&self) -> Result<usize, String> {
        self.ledger
            .refresh_dirty(READ_BATCH, |case| async move { self.refresh(&case).await })
            .await
    }

    /// One pass of sending: what may go now, at most one per 申办流水号.
    pub async fn send_due(&self) -> Result<usize, String> {
        let mut due = self.ledger.sendable(SEND_BATCH * 4)?;
        let mut seen = std::collections::HashSet::new();
        due.retain(|r| seen.insert(r.sblsh.clone()));
        due.truncate(SEND_BATCH as usize);
        let n = due.len();
        // Each to its own 申办流水号, side by side; each request is bounded by its timeout.
        let results =
            futures_util::future::join_all(due.iter().map(|r| self.transport.send(&self.spec, r)))
                .await;
        for (r, sent) in due.iter().zip(results) {
            self.settle(r, sent)?;
        }
        Ok(n)
    }

    /// One pass over records awaiting the exchange's flag; how many changed.
    pub async fn check_flags(&self) -> Result<usize, String> {
        let mut changed = 0;
        for r in &self.ledger.awaiting(64)? {
            match self.transport.flag(&self.spec, r).await {
                // Not taken yet: looked at again shortly (not an attempt, not a change).
                Sent::Written => self.ledger.look_later(r, FLAG_EVERY_MS)?,
                Sent::Gone => {
                    self.ledger.set(
                        r,
                        ledger::PENDING,
                        Some("the row was gone before it was taken; written again"),
                        0,
                    )?;
                    changed += 1;
                }
                sent => {
                    self.settle(r, sent)?;
                    changed += 1;
                }
            }
        }
        Ok(changed)
    }

    fn settle(&self, r: &Stored, sent: Sent) -> Result<(), String> {
        let table = r.table.as_str();
        match sent {
            Sent::Confirmed => {
                self.answered()?;
                self.meters.outcome(table, "confirmed");
                debug!(sblsh = %r.sblsh, table, seq = r.seq, "reported");
                self.ledger.set(r, ledger::CONFIRMED, None, 0)
            }
            Sent::Written | Sent::Gone => {
                self.answered()?;
                self.meters.outcome(table, "written");
                self.ledger.set(r, ledger::SENT, None, FLAG_EVERY_MS)
            }
            Sent::Refused(m) => {
                self.meters.outcome(table, "refused");
                let m = yichuang::privacy::mask_free_text(&m);
                warn!(sblsh = %r.sblsh, table, seq = r.seq, platform = %m, "the platform refused a record; kept for correction (report refused / report resend)");
                self.ledger.set(r, ledger::REFUSED, Some(&m), 0)
            }
            Sent::Retry(m) => {
                // Whatever the platform or the database said, masked before it is kept or logged.
                let m = yichuang::privacy::mask_free_text(&m);
                self.failing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.meters.outcome(table, "retry");
                let delay = backoff_ms(r.attempts);
                debug!(sblsh = %r.sblsh, table, error = %m, retry_in_ms = delay, "not reported this time");
                self.ledger.set(r, &r.state_for_retry(), Some(&m), delay)
            }
        }
    }

    /// The platform answered: if it did not before, the records waiting out their backoff go
    /// now instead of minutes later.
    fn answered(&self) -> Result<(), String> {
        if self
            .failing
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let n = self.ledger.wake()?;
            if n > 0 {
                info!(
                    records = n,
                    "the platform answers again; the records waiting are sent now"
                );
            }
        }
        Ok(())
    }

    /// Refreshes the metrics from the ledger.
    pub fn observe(&self) {
        if let Ok(counts) = self.ledger.counts() {
            self.meters.states(&counts);
        }
        if let Ok(Some(r)) = self.ledger.last_reconciliation() {
            self.meters.reconciled(&r);
        }
    }
}

impl Stored {
    /// A record not taken this time stays where it was (a written row stays written).
    fn state_for_retry(&self) -> String {
        if self.state == ledger::SENT {
            ledger::SENT.into()
        } else {
            ledger::PENDING.into()
        }
    }
}

/// Waits 1 s, 2 s, 4 s … up to 5 minutes between attempts of one record.
fn backoff_ms(attempts: i64) -> i64 {
    (1_000i64 << attempts.clamp(0, 9)).min(300_000)
}

/// Runs the reporter until the process stops (or this future is dropped, which stops every
/// part of it): the queue consumer, the reader of changed cases and of the submissions not
/// accepted, the sender, the flag checker and the daily reconciliation.
pub async fn run(reporter: Arc<Reporter>, bus: BusConfig) {
    // The backoff of records still waiting was a process that is gone: they are tried now
    // (a failure starts their backoff again, and the next answer wakes the rest).
    if let Err(e) = reporter.ledger.wake() {
        warn!(error = %e, "reporter");
    }
    // A corrected specification reaches the records still waiting.
    match reporter.ledger.dirty_unconfirmed() {
        Ok(0) => {}
        Ok(n) => info!(
            cases = n,
            "cases with records not yet confirmed are read again"
        ),
        Err(e) => warn!(error = %e, "reporter"),
    }
    let mut parts = tokio::task::JoinSet::new();
    parts.spawn(consume(reporter.clone(), bus));
    parts.spawn(daily(reporter.clone()));
    let work = {
        let r = reporter.clone();
        parts.spawn(async move {
            let mut asked = tokio::time::Instant::now() - NOT_ACCEPTED_EVERY;
            loop {
                let mut busy = 0;
                if asked.elapsed() >= NOT_ACCEPTED_EVERY {
                    asked = tokio::time::Instant::now();
                    match r.poll_not_accepted().await {
                        Ok(n) => busy += n,
                        Err(e) => warn!(error = %e, "reporter"),
                    }
                }
                for step in [
                    r.refresh_dirty().await,
                    r.send_due().await,
                    r.check_flags().await,
                ] {
                    match step {
                        Ok(n) => busy += n,
                        Err(e) => warn!(error = %e, "reporter"),
                    }
                }
                if busy == 0
                    && yichuang::supervise::idle(tokio::time::sleep(Duration::from_millis(200)))
                        .await
                        .is_none()
                {
                    return;
                }
                if yichuang::supervise::stopping() {
                    return;
                }
            }
        })
    };
    // The work loop ends when the process stops; the other parts end with it.
    while let Some(done) = parts.join_next_with_id().await {
        if done.map_or_else(|e| e.id(), |(id, ())| id) == work.id() {
            break;
        }
    }
}

/// Every day at `[reconcile] at` (hall time): reconciles the previous day; at start, also the
/// days missed while the reporter was down (within `lookback_days`).
async fn daily(reporter: Arc<Reporter>) {
    let at = reporter.reconciling.time();
    let today = chrono::Utc::now()
        .with_timezone(&reporter.offset)
        .date_naive();
    let last = reporter
        .ledger
        .last_reconciliation()
        .ok()
        .flatten()
        .and_then(|r| r.date.parse::<chrono::NaiveDate>().ok());
    if let Some(last) = last {
        let oldest = today - chrono::Duration::days(i64::from(reporter.reconciling.lookback_days));
        let mut day = (last + chrono::Duration::days(1)).max(oldest);
        while day < today - chrono::Duration::days(1) {
            reconcile_day(&reporter, day).await;
            day += chrono::Duration::days(1);
        }
    }
    loop {
        let now = chrono::Utc::now().with_timezone(&reporter.offset);
        let mut next = now.date_naive().and_time(at);
        if next <= now.naive_local() {
            next += chrono::Duration::days(1);
        }
        let wait = (next - now.naive_local())
            .to_std()
            .unwrap_or(Duration::from_secs(60));
        if yichuang::supervise::idle(tokio::time::sleep(wait))
            .await
            .is_none()
        {
            return;
        }
        reconcile_day(&reporter, next.date() - chrono::Duration::days(1)).await;
        let keep = chrono::Duration::days(i64::from(reporter.reconciling.keep_days));
        match reporter
            .ledger
            .prune((chrono::Utc::now() - keep).timestamp_millis())
        {
            Ok(n) if n > 0 => info!(
                records = n,
                "confirmed records past [reconcile] keep_days forgotten"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reporter"),
        }
    }
}

async fn reconcile_day(reporter: &Reporter, day: chrono::NaiveDate) {
    match reconcile::run(reporter, day).await {
        Ok(r) => {
            info!(date = %r.date, records = r.records, confirmed = r.confirmed, missing_platform = r.missing_platform, missing_ledger = r.missing_ledger, completeness = r.completeness(), "daily reconciliation")
        }
        Err(e) => {
            warn!(date = %day, error = %e, "daily reconciliation failed; run `yichuang-adapter report reconcile --date` once the cause is fixed")
        }
    }
}

/// Consumes `<prefix>.report`: each entry marks its case changed, then is acknowledged (the
/// mark is durable in the ledger first, so an entry is never lost between the two).
async fn consume(reporter: Arc<Reporter>, bus: BusConfig) {
    let queue = yichuang::bus::Names::new(&bus.prefix).report_queue();
    crate::cases::consume_history(
        "reporter",
        bus,
        queue,
        "declare it: `yichuang bus declare` with [bus] report = true",
        move |case_number| reporter.ledger.mark_dirty(case_number),
    )
    .await
}

pub mod meters {
    //! The reporter's metrics: records by table and outcome, records by state, and the last
    //! reconciliation's completeness.
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct Outcome {
        pub table: String,
        pub outcome: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct State {
        pub state: String,
    }

    pub struct Meters {
        pub registry: Registry,
        pub attempts: Family<Outcome, Counter>,
        pub records: Family<State, Gauge>,
        pub completeness: Gauge<f64, AtomicU64>,
        pub on_time: Gauge<f64, AtomicU64>,
        pub missing: Gauge,
    }

    impl Default for Meters {
        fn default() -> Self {
            let mut registry = Registry::with_prefix("yichuang_report");
            let attempts = Family::<Outcome, Counter>::default();
            let records = Family::<State, Gauge>::default();
            let completeness = Gauge::<f64, AtomicU64>::default();
            let on_time = Gauge::<f64, AtomicU64>::default();
            let missing = Gauge::default();
            registry.register(
                "attempts",
                "Attempts to report a record, by table and outcome (confirmed, written, refused, retry)",
                attempts.clone(),
            );
            registry.register(
                "records",
                "Records in the ledger by state (pending, sent, confirmed, refused)",
                records.clone(),
            );
            registry.register(
                "completeness_ratio",
                "Share of the last reconciled day's records the platform holds as derived",
                completeness.clone(),
            );
            registry.register(
                "on_time_ratio",
                "Share of the last reconciled day's records confirmed within one working day",
                on_time.clone(),
            );
            registry.register(
                "missing_records",
                "Records the last reconciliation found missing at the platform or in the ledger",
                missing.clone(),
            );
            Meters {
                registry,
                attempts,
                records,
                completeness,
                on_time,
                missing,
            }
        }
    }

    impl Meters {
        pub fn outcome(&self, table: &str, outcome: &str) {
            self.attempts
                .get_or_create(&Outcome {
                    table: table.into(),
                    outcome: outcome.into(),
                })
                .inc();
        }
        pub fn states(&self, counts: &[(String, i64)]) {
            for s in [
                super::ledger::PENDING,
                super::ledger::SENT,
                super::ledger::CONFIRMED,
                super::ledger::REFUSED,
            ] {
                let n = counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                self.records
                    .get_or_create(&State { state: s.into() })
                    .set(n);
            }
        }
        pub fn reconciled(&self, r: &super::ledger::Reconciliation) {
            self.completeness.set(r.completeness());
            self.on_time.set(r.on_time_share());
            self.missing.set(r.missing_platform + r.missing_ledger);
        }
        pub fn encode(&self) -> String {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("text");
            out
        }
    }
}

/// The reporter's internal HTTP: `/healthz`, `/status` (counts, refused records with the
/// platform's words, the last reconciliation; no personal data) and `/metrics`.
pub fn router(reporter: Arc<Reporter>) -> axum::Router {
    use axum::routing::get;
    let status = {
        let r = reporter.clone();
        move || {
            let r = r.clone();
            async move {
                let counts: std::collections::BTreeMap<String, i64> =
                    r.ledger.counts().unwrap_or_default().into_iter().collect();
                let refused: Vec<serde_json::Value> = r
                    .ledger
                    .refused()
                    .unwrap_or_default()
                    .into_iter()
                    // The oldest 100 (the count is in `records`; `report refused` lists all).
                    .take(100)
                    .map(|s| serde_json::json!({"sblsh": s.sblsh, "table": s.table, "seq": s.seq, "message": s.message}))
                    .collect();
                axum::Json(serde_json::json!({
                    "specification": r.spec.name,
                    "transport": r.transport.kind(),
                    "records": counts,
                    "refused": refused,
                    "last_reconciliation": r.ledger.last_reconciliation().ok().flatten(),
                }))
            }
        }
    };
    let metrics = {
        let r = reporter;
        move || {
            let r = r.clone();
            async move {
                r.observe();
                r.meters.encode()
            }
        }
    };
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
}
