//! The notifier (短信提示): sends the applicant SMS notices on the chosen events of a case —
//! accepted (receipt number and promised date), materials asked for (补正), ready, mailed
//! (carrier and tracking number), a provisional deadline confirmed, refused — through the
//! province's SMS platform, whose interface its settings describe ([`sms`]).
//!
//! - It takes the gateway's history entries from its own durable queue (`<prefix>.notify`);
//!   an entry only says "case N changed": it is noted in the [`ledger`] (durably) and
//!   acknowledged, the case is read with `GetCase` as the `notifier` role (every read is in the
//!   gateway's access log), and the notices due are derived again from the whole case
//!   ([`notices`]), so a redelivered entry or a restart sends nothing twice.
//! - Each notice is stored once per (case number, event), with a message id the SMS platform
//!   deduplicates on. Without the applicant's consent (`Contact.sms_consent`) it is recorded as
//!   skipped and never sent.
//! - Notices go only within `hours` (the hall's time); outside them they wait in the ledger
//!   and go, in order per case, when the hours open. Sending keeps the department limits
//!   (`[sms.limits]`), retries with backoff on no answer, 5xx and throttling, and keeps a
//!   refusal with the platform's words (masked).
//!
//! This module owns the notifier's settings and loops; [`sms`] owns the wire.

pub mod ledger;
pub mod sms;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tracing::{debug, info, warn};
use yichuang::config::{BusConfig, LogConfig, TracingConfig};
use yichuang::event::EventKind;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{GetCaseResponse, TaskStatus};

use crate::cases::{GatewayConfig, Pace, Unread};
use crate::mapping::Template;
use ledger::{Ledger, Notice, Stored};
use sms::{Outcome, Sms, SmsConfig};

/// The events a notice can be sent on, in the order they happen in a case.
pub const KINDS: &[&str] = &[
    "accepted",
    "deadline_confirmed",
    "supplement_asked",
    "rejected",
    "ready",
    "mailed",
];

/// The notifier's settings (`config/notifier.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// The ledger (SQLite file).
    pub ledger: PathBuf,
    /// The hall's UTC offset: `hours` are in it.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// When notices may go, in the hall's time (`08:00-20:00`; `22:00-07:00` spans midnight;
    /// `00:00-24:00` always).
    #[serde(default = "default_hours")]
    pub hours: String,
    /// A notice whose event is older than this when the notifier first sees it is not sent
    /// (stored skipped): deployed over cases under way, or with a template added, the notifier
    /// does not send their past (default 72).
    #[serde(default = "default_stale_after_hours")]
    pub stale_after_hours: u64,
    /// The events notified and their texts (MiniJinja), by event ([`KINDS`]); an event without
    /// a template is not notified.
    pub templates: BTreeMap<String, Template>,
    pub gateway: GatewayConfig,
    pub bus: BusConfig,
    pub sms: SmsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
}

fn default_offset() -> String {
    "+08:00".into()
}

fn default_stale_after_hours() -> u64 {
    72
}

fn default_hours() -> String {
    "08:00-20:00".into()
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
            listen: "127.0.0.1:9191".into(),
        }
    }
}

impl NotifierConfig {
    /// Reads the settings (`${VAR:-default}` replaced from the environment); paths are relative
    /// to the file.
    pub fn load(path: &Path) -> Result<NotifierConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let text = yichuang::config::interpolate(path, &text, |v| std::env::var(v).ok())
            .map_err(|e| e.to_string())?;
        let mut c: NotifierConfig = toml::from_str(&text)
            .map_err(|e| yichuang::config::toml_problem(path, &text, &e).to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        if c.ledger.is_relative() {
            c.ledger = base.join(&c.ledger);
        }
        c.gateway.tls = c.gateway.tls.relative_to(base);
        c.bus.ca_file = c.bus.ca_file.map(|p| base.join(p));
        c.sms.ca_file = c.sms.ca_file.map(|p| base.join(p));
        if let crate::config::SecretRef::File(p) = &mut c.sms.secret
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        c.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        Hours::parse(&self.hours)?;
        crate::cases::offset(&self.utc_offset)?;
        for k in self.templates.keys() {
            if !KINDS.contains(&k.as_str()) {
                return Err(format!(
                    "[templates] {k}: not an event notified; the events are {}",
                    KINDS.join(", ")
                ));
            }
        }
        if self.templates.is_empty() {
            return Err("[templates]: name at least one event and its text".into());
        }
        Ok(())
    }
}

/// The hours notices may go in, in the hall's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    from: u32,
    to: u32,
}

impl Hours {
    /// `HH:MM-HH:MM` (the end may be `24:00`).
    pub fn parse(s: &str) -> Result<Hours, String> {
        let minutes = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let bad =
            || format!("hours = {s:?}: write HH:MM-HH:MM in the hall's time, e.g. 08:00-20:00");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (from, to) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if from == to || from == 24 * 60 {
            return Err(bad());
        }
        Ok(Hours { from, to })
    }

    /// Whether `t` (hall time) is within the hours.
    pub fn contains(&self, t: chrono::NaiveTime) -> bool {
        use chrono::Timelike;
        let m = t.hour() * 60 + t.minute();
        if self.from < self.to {
            self.from <= m && m < self.to
        } else {
            m >= self.from || m < self.to
        }
    }
}

/// Derives the notices due from a case as `GetCase` returns it (the case and its whole
/// history), for the events that have a template; the same case always gives the same notices.
pub fn notices(
    templates: &BTreeMap<String, Template>,
    case: &GetCaseResponse,
) -> Result<Vec<Notice>, String> {
    let Some(c) = case.case.as_ref() else {
        return Ok(Vec::new());
    };
    let contact = c
        .submission
        .as_ref()
        .and_then(|s| s.applicant.as_ref())
        .and_then(|a| a.contact.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |kind: &str, event: String, position: i64, vars: Value| -> Result<(), String> {
        let Some(t) = templates.get(kind) else {
            return Ok(());
        };
        let mut vars = vars;
        vars["receipt"] = json!(c.case_number);
        vars["promised"] = json!(c.promised_deadline);
        let body = t
            .render(&vars)
            .map_err(|e| format!("[templates] {kind}: {e}"))?;
        out.push(Notice {
            message_id: message_id(&c.case_number, &event),
            case_number: c.case_number.clone(),
            event,
            kind: kind.to_string(),
            position,
            mobile: contact.mobile.clone(),
            body,
            consent: contact.sms_consent,
            at_ms: 0,
            stale: false,
        });
        Ok(())
    };
    // The kinds matched here are among those the notify queue is bound to
    // (`yichuang::bus::NOTIFY_EVENTS`): a kind added here alone would never be heard.
    for e in &case.events {
        let Ok(kind) = e.kind.parse::<EventKind>() else {
            continue;
        };
        match kind {
            EventKind::Accepted => push("accepted", "accepted".into(), e.seq, json!({}))?,
            // The case's promised date confirmed: one notice per date, however many of its
            // tasks were counted again (each has its entry); a rectification's deadline (no
            // task) is no deadline of the applicant's case.
            EventKind::DeadlineConfirmed if !e.task_id.is_empty() => push(
                "deadline_confirmed",
                format!("deadline_confirmed@{}", c.promised_deadline),
                e.seq,
                json!({}),
            )?,
            EventKind::TaskSupplementRequired => {
                let materials = e
                    .detail
                    .split_once("asks for: ")
                    .map(|(_, m)| crate::expr::split(m))
                    .unwrap_or_default();
                push(
                    "supplement_asked",
                    format!("supplement_asked#{}", e.seq),
                    e.seq,
                    json!({ "materials": materials.join("、"), "materials_list": materials }),
                )?
            }
            EventKind::CaseClosedRejected => {
                // The departments' reasons for refusing, not a system's errors of tasks
                // that went on to be approved.
                let reasons: Vec<String> = c
                    .tasks
                    .iter()
                    .filter(|t| t.status == TaskStatus::Rejected as i32)
                    .flat_map(|t| t.reasons.iter().cloned())
                    .collect();
                push(
                    "rejected",
                    "rejected".into(),
                    e.seq,
                    json!({ "reasons": reasons.join("；") }),
                )?
            }
            EventKind::CaseReadyForDelivery => push("ready", "ready".into(), e.seq, json!({}))?,
            EventKind::CaseDelivered => {
                if let Some((before, tracking)) = e.detail.split_once("tracking number ") {
                    let carrier = before
                        .split_once("by ")
                        .map_or("", |(_, c)| c)
                        .trim()
                        .trim_end_matches(" with")
                        .trim();
                    push(
                        "mailed",
                        "mailed".into(),
                        e.seq,
                        json!({ "carrier": carrier, "tracking": tracking.trim() }),
                    )?
                }
            }
            _ => {}
        }
    }
    // A kind notified once per case is notified at its first entry.
    let mut seen = std::collections::HashSet::new();
    out.retain(|n| seen.insert(n.event.clone()));
    let at: std::collections::HashMap<i64, i64> = case
        .events
        .iter()
        .map(|e| {
            let ms =
                e.at.as_ref()
                    .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
            (e.seq, ms)
        })
        .collect();
    for n in &mut out {
        n.at_ms = at.get(&n.position).copied().unwrap_or(0);
    }
    Ok(out)
}

/// The message id of (case, event): stable, and says nothing about the applicant.
pub fn message_id(case_number: &str, event: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{case_number}\n{event}").as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The notifier: its templates, ledger, SMS interface and the gateway it reads cases from.
pub struct Notifier {
    pub templates: BTreeMap<String, Template>,
    pub ledger: Ledger,
    pub sms: Sms,
    pub gateway: CaseServiceClient<Channel>,
    /// The pace of calls to the gateway.
    pub pace: Pace,
    /// The pace of messages to the SMS platform (`[sms.limits] requests_per_second`).
    pub sms_pace: Pace,
    pub hours: Hours,
    pub offset: chrono::FixedOffset,
    pub meters: meters::Meters,
    /// `stale_after_hours`, in ms.
    pub stale_after_ms: i64,
}

impl Notifier {
    pub fn open(config: &NotifierConfig) -> Result<Notifier, String> {
        let offset = crate::cases::offset(&config.utc_offset)?;
        Ok(Notifier {
            templates: config.templates.clone(),
            ledger: Ledger::open(&config.ledger)?,
            sms: Sms::new(&config.sms, offset)?,
            gateway: CaseServiceClient::new(config.gateway.channel()?),
            pace: crate::cases::pace(config.gateway.calls_per_second),
            sms_pace: crate::cases::pace(config.sms.limits.requests_per_second),
            hours: Hours::parse(&config.hours)?,
            offset,
            meters: meters::Meters::default(),
            stale_after_ms: i64::try_from(config.stale_after_hours)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000),
        })
    }

    /// Whether notices may go now.
    pub fn within_hours(&self) -> bool {
        self.hours
            .contains(chrono::Utc::now().with_timezone(&self.offset).time())
    }

    /// Reads a changed case and stores the notices it makes due; how many were new.
    pub async fn refresh(&self, case_number: &str) -> Result<usize, Unread> {
        let case = crate::cases::get_case(&self.pace, &self.gateway, case_number).await?;
        let mut new = 0;
        let now_ms = chrono::Utc::now().timestamp_millis();
        // A template that cannot render the case is mended in the settings, not in seconds.
        for mut n in notices(&self.templates, &case).map_err(Unread::Lasting)? {
            n.stale = now_ms.saturating_sub(n.at_ms) > self.stale_after_ms;
            if self.ledger.store(&n).map_err(Unread::Passing)? {
                new += 1;
                if n.stale {
                    self.meters.outcome(&n.kind, "stale");
                    debug!(case = %n.case_number, event = %n.event, "an old event: not notified");
                } else if !n.consent || n.mobile.is_empty() {
                    self.meters.outcome(&n.kind, "skipped");
                    debug!(case = %n.case_number, event = %n.event, "no consent to SMS notices; skipped");
                }
            }
        }
        Ok(new)
    }

    /// One pass over the changed cases.
    pub async fn refresh_dirty(&self) -> Result<usize, String> {
        self.ledger
            .refresh_dirty(16, |case| async move { self.refresh(&case).await })
            .await
    }

    /// One pass of sending, within the hours only: of each case its next notice, at most
    /// `[sms.limits] concurrency` at once, at the SMS platform's pace.
    pub async fn send_due(&self) -> Result<usize, String> {
        if !self.within_hours() {
            return Ok(0);
        }
        let due = self
            .ledger
            .sendable(i64::from(self.sms.config().limits.concurrency))?;
        let n = due.len();
        let results = futures_util::future::join_all(due.iter().map(|s| async move {
            self.sms_pace.until_ready().await;
            self.sms
                .send(&sms::Message {
                    mobile: &s.mobile,
                    text: &s.body,
                    message_id: &s.message_id,
                })
                .await
        }))
        .await;
        for (s, outcome) in due.iter().zip(results) {
            self.settle(s, outcome)?;
        }
        Ok(n)
    }

    fn settle(&self, s: &Stored, outcome: Outcome) -> Result<(), String> {
        let mobile = yichuang::privacy::mask_mobile(&s.mobile);
        match outcome {
            Outcome::Sent => {
                self.meters.outcome(&s.kind, "sent");
                info!(case = %s.case_number, event = %s.event, mobile = %mobile, "notice sent");
                self.ledger.set(s, ledger::SENT, None, 0)
            }
            Outcome::Refused(m) => {
                self.meters.outcome(&s.kind, "refused");
                warn!(case = %s.case_number, event = %s.event, mobile = %mobile, platform = %m, "the SMS platform refused a notice");
                self.ledger.set(s, ledger::REFUSED, Some(&m), 0)
            }
            Outcome::Throttled(m) | Outcome::Retry(m) => {
                self.meters.outcome(&s.kind, "retry");
                let delay = backoff_ms(s.attempts);
                debug!(case = %s.case_number, event = %s.event, mobile = %mobile, error = %m, retry_in_ms = delay, "notice not sent this time");
                self.ledger.set(s, ledger::PENDING, Some(&m), delay)
            }
        }
    }

    /// Refreshes the metrics from the ledger.
    pub fn observe(&self) {
        if let Ok(counts) = self.ledger.counts() {
            self.meters.states(&counts);
        }
    }
}

/// Waits 1 s, 2 s, 4 s … up to 5 minutes between attempts of one notice.
fn backoff_ms(attempts: i64) -> i64 {
    (1_000i64 << attempts.clamp(0, 9)).min(300_000)
}

/// Runs the notifier until the process stops (or this future is dropped): the queue consumer,
/// and the loop that reads changed cases and sends what is due.
pub async fn run(notifier: Arc<Notifier>, bus: BusConfig) {
    // The backoff of notices still waiting was a process that is gone.
    if let Err(e) = notifier.ledger.wake() {
        warn!(error = %e, "notifier");
    }
    let mut parts = tokio::task::JoinSet::new();
    {
        let queue = yichuang::bus::Names::new(&bus.prefix).notify_queue();
        let n = notifier.clone();
        parts.spawn(crate::cases::consume_history(
            "notifier",
            bus,
            queue,
            "declare it: `yichuang bus declare` with [bus] notify = true",
            move |case_number| n.ledger.mark_dirty(case_number),
        ));
    }
    let work = {
        let n = notifier.clone();
        parts.spawn(async move {
            let mut outside = false;
            loop {
                let mut busy = 0;
                for step in [n.refresh_dirty().await, n.send_due().await] {
                    match step {
                        Ok(k) => busy += k,
                        Err(e) => warn!(error = %e, "notifier"),
                    }
                }
                let now_outside = !n.within_hours();
                if now_outside != outside {
                    outside = now_outside;
                    if outside {
                        info!("outside the notifier's hours: notices wait in the ledger");
                    } else {
                        info!("within the notifier's hours: waiting notices go");
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
    while let Some(done) = parts.join_next_with_id().await {
        if done.map_or_else(|e| e.id(), |(id, ())| id) == work.id() {
            break;
        }
    }
}

pub mod meters {
    //! The notifier's metrics: attempts by event and outcome, notices by state.
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct Outcome {
        pub event: String,
        pub outcome: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct State {
        pub state: String,
    }

    pub struct Meters {
        pub registry: Registry,
        pub attempts: Family<Outcome, Counter>,
        pub notices: Family<State, Gauge>,
    }

    impl Default for Meters {
        fn default() -> Self {
            let mut registry = Registry::with_prefix("yichuang_notify");
            let attempts = Family::<Outcome, Counter>::default();
            let notices = Family::<State, Gauge>::default();
            registry.register(
                "attempts",
                "Notices by event and outcome (sent, retry, refused, skipped)",
                attempts.clone(),
            );
            registry.register(
                "notices",
                "Notices in the ledger by state (pending, sent, skipped, refused)",
                notices.clone(),
            );
            Meters {
                registry,
                attempts,
                notices,
            }
        }
    }

    impl Meters {
        pub fn outcome(&self, event: &str, outcome: &str) {
            self.attempts
                .get_or_create(&Outcome {
                    event: event.into(),
                    outcome: outcome.into(),
                })
                .inc();
        }
        pub fn states(&self, counts: &[(String, i64)]) {
            for s in [
                super::ledger::PENDING,
                super::ledger::SENT,
                super::ledger::SKIPPED,
                super::ledger::REFUSED,
            ] {
                let n = counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                self.notices
                    .get_or_create(&State { state: s.into() })
                    .set(n);
            }
        }
        pub fn encode(&self) -> String {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("text");
            out
        }
    }
}

/// The notifier's internal HTTP: `/healthz`, `/status` (counts, whether within the hours,
/// refused notices with the platform's words; no mobile number) and `/metrics`.
pub fn router(notifier: Arc<Notifier>) -> axum::Router {
    use axum::routing::get;
    let status = {
        let n = notifier.clone();
        move || {
            let n = n.clone();
            async move {
                let counts: BTreeMap<String, i64> =
                    n.ledger.counts().unwrap_or_default().into_iter().collect();
                let refused: Vec<Stored> = n
                    .ledger
                    .refused()
                    .unwrap_or_default()
                    .into_iter()
                    .take(100)
                    .collect();
                axum::Json(json!({
                    "within_hours": n.within_hours(),
                    "notices": counts,
                    "refused": refused,
                }))
            }
        }
    };
    let metrics = move || {
        let n = notifier.clone();
        async move {
            n.observe();
            n.meters.encode()
        }
    };
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yichuang::proto::v1::{Applicant, Case, CaseEvent, Contact, Submission};

    #[test]
    fn hours_hold_their_start_not_their_end_and_may_span_midnight() {
        let t = |s: &str| chrono::NaiveTime::parse_from_str(s, "%H:%M").unwrap();
        let day = Hours::parse("08:00-20:00").unwrap();
        assert!(day.contains(t("08:00")) && day.contains(t("19:59")));
        assert!(!day.contains(t("20:00")) && !day.contains(t("07:59")));
        let night = Hours::parse("22:00-07:00").unwrap();
        assert!(night.contains(t("23:30")) && night.contains(t("06:59")));
        assert!(!night.contains(t("12:00")));
        assert!(Hours::parse("00:00-24:00").unwrap().contains(t("23:59")));
        assert!(Hours::parse("8-20").is_err());
        assert!(Hours::parse("08:00-08:00").is_err());
    }

    #[test]
    fn the_shipped_settings_load_and_an_unknown_event_is_refused_by_name() {
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/notifier.toml");
        let c = NotifierConfig::load(&shipped).unwrap();
        assert_eq!(c.hours, "08:00-20:00");
        assert_eq!(
            c.templates.len(),
            KINDS.len(),
            "every event has a shipped text"
        );
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(&shipped)
            .unwrap()
            .replace("[templates]\n", "[templates]\nrecieved = \"【x】\"\n");
        let path = dir.path().join("notifier.toml");
        std::fs::write(&path, text).unwrap();
        let e = NotifierConfig::load(&path).unwrap_err();
        assert!(
            e.contains("[templates] recieved: not an event notified"),
            "{e}"
        );
    }

    /// Every entry that makes a notice is one the notify queue hears; the queue hears no other,
    /// but for the moved date a confirmed-deadline notice names.
    #[test]
    fn only_the_entries_the_notify_queue_is_bound_to_make_notices() {
        let templates: BTreeMap<String, Template> = toml::from_str(
            r#"
            accepted = "a"
            deadline_confirmed = "d"
            supplement_asked = "s"
            rejected = "r"
            ready = "y"
            mailed = "m"
            "#,
        )
        .unwrap();
        for kind in EventKind::ALL {
            let case = GetCaseResponse {
                case: Some(Case {
                    case_number: "C1".into(),
                    ..Default::default()
                }),
                events: vec![CaseEvent {
                    task_id: "T1".into(),
                    ..event(
                        1,
                        kind.as_str(),
                        "by EMS with tracking number 9; asks for: 营业执照",
                    )
                }],
            };
            let made = !notices(&templates, &case).unwrap().is_empty();
            let bound = yichuang::bus::NOTIFY_EVENTS.contains(kind);
            assert_eq!(
                made,
                bound && *kind != EventKind::TaskDeadlineMoved,
                "{kind:?}: a notice from it, or a binding for it, but not both"
            );
        }
    }

    /// A confirmed deadline is notified once for the case, however many of its tasks were
    /// counted again, and never for a rectification's deadline; a refusal gives the reasons of
    /// the rejected tasks only.
    #[test]
    fn a_confirmed_deadline_and_a_refusal_are_notified_from_their_entries() {
        let templates: BTreeMap<String, Template> = toml::from_str(
            r#"
            deadline_confirmed = "【中心】{{ receipt }}承诺办结日期已确认为{{ promised | date_cn }}。"
            rejected = "【中心】{{ receipt }}未予批准：{{ reasons }}。"
            "#,
        )
        .unwrap();
        let case = GetCaseResponse {
            case: Some(Case {
                case_number: "C9".into(),
                promised_deadline: "2027-01-08".into(),
                tasks: vec![
                    yichuang::proto::v1::Task {
                        status: TaskStatus::Rejected as i32,
                        reasons: vec!["名称与已登记企业相同".into()],
                        ..Default::default()
                    },
                    // Approved after its system refused a first submission for its own reasons.
                    yichuang::proto::v1::Task {
                        status: TaskStatus::Approved as i32,
                        reasons: vec!["系统繁忙".into()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            events: vec![
                event(1, "accepted", ""),
                event(2, "deadline-provisional", ""),
                CaseEvent {
                    task_id: "T1".into(),
                    ..event(
                        5,
                        "deadline-confirmed",
                        "市场监管: the 2027 calendar is loaded",
                    )
                },
                CaseEvent {
                    task_id: "T2".into(),
                    ..event(6, "deadline-confirmed", "消防: the 2027 calendar is loaded")
                },
                event(
                    7,
                    "deadline-confirmed",
                    "rectification by scjg: the working-day calendar is loaded",
                ),
                event(8, "case-closed-rejected", ""),
            ],
        };
        let n = notices(&templates, &case).unwrap();
        let got: Vec<(&str, &str)> = n
            .iter()
            .map(|n| (n.event.as_str(), n.body.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "deadline_confirmed@2027-01-08",
                    "【中心】C9承诺办结日期已确认为2027年01月08日。"
                ),
                ("rejected", "【中心】C9未予批准：名称与已登记企业相同。"),
            ]
        );
        assert!(n.iter().all(|n| !n.consent), "no contact, no consent");
    }

    fn templates() -> BTreeMap<String, Template> {
        toml::from_str(
            r#"
            accepted = "【政务服务中心】您的申请已受理，受理编号{{ receipt }}，承诺{{ promised | date_cn }}前办结。"
            supplement_asked = "【政务服务中心】受理编号{{ receipt }}需补正：{{ materials }}。"
            mailed = "【政务服务中心】受理编号{{ receipt }}的结果已由{{ carrier }}寄出，运单号{{ tracking }}。"
            "#,
        )
        .unwrap()
    }

    fn event(seq: i64, kind: &str, detail: &str) -> CaseEvent {
        CaseEvent {
            seq,
            kind: kind.into(),
            detail: detail.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_cases_history_gives_its_notices_in_chinese_once_each_in_order() {
        let case = GetCaseResponse {
            case: Some(Case {
                case_number: "YC20261207000001".into(),
                promised_deadline: "2026-12-21".into(),
                submission: Some(Submission {
                    applicant: Some(Applicant {
                        contact: Some(Contact {
                            mobile: "13812345678".into(),
                            sms_consent: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            events: vec![
                event(1, "accepted", ""),
                event(
                    4,
                    "task-supplement-required",
                    "市场监管 asks for: 平面图、使用证明",
                ),
                event(9, "case-ready-for-delivery", ""),
                event(
                    12,
                    "case-delivered",
                    "mailed by EMS with tracking number 1190000000001",
                ),
            ],
        };
        let n = notices(&templates(), &case).unwrap();
        let events: Vec<&str> = n.iter().map(|n| n.event.as_str()).collect();
        // `ready` has no template: not notified.
        assert_eq!(events, ["accepted", "supplement_asked#4", "mailed"]);
        assert_eq!(
            n[0].body,
            "【政务服务中心】您的申请已受理，受理编号YC20261207000001，承诺2026年12月21日前办结。"
        );
        assert_eq!(
            n[1].body,
            "【政务服务中心】受理编号YC20261207000001需补正：平面图、使用证明。"
        );
        assert_eq!(
            n[2].body,
            "【政务服务中心】受理编号YC20261207000001的结果已由EMS寄出，运单号1190000000001。"
        );
        assert!(n.iter().all(|n| n.consent && n.mobile == "13812345678"));
        assert_eq!(
            n,
            notices(&templates(), &case).unwrap(),
            "the same case, the same notices"
        );
        assert_ne!(n[0].message_id, n[1].message_id);
        assert!(!n[0].message_id.contains("13812345678"));
    }
}
