//! What every simulated department system shares: its own ledger of cases with its own case
//! numbers, decisions taken after a delay with configured ratios, the progress steps on the
//! way (承办 → 审核 → 批准), and the faults real systems show — 5xx, hangs past the client's
//! timeout, 429 with `Retry-After`, a maintenance window, a request-rate limit it enforces and
//! counts violations of, and duplicates it reports. A case that asked for a supplement (补正)
//! takes it (`Sim::resupply`, once per round) and goes through its steps again to a second
//! decision, which is never another supplement request: with `supplement: 1.0, reject: 0.0` the
//! first decision is a supplement request and the second an approval, always.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a simulated system behaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Behaviour {
    /// Department code, for its case numbers.
    pub department: String,
    /// Time from submission to decision.
    pub decision_delay_ms: u64,
    /// Shares of rejections and supplement requests; the rest is approved. After a supplement
    /// the case is decided again with the same rejection share, the rest approved.
    pub reject: f64,
    pub supplement: f64,
    /// Share of requests answered with a 5xx (or the kind's equivalent).
    pub server_error: f64,
    /// Share of requests that hang for `hang_ms` before answering.
    pub hang: f64,
    pub hang_ms: u64,
    /// Share of requests answered with 429 and `Retry-After: retry_after_secs`.
    pub too_many: f64,
    pub retry_after_secs: u64,
    /// Share of callbacks never sent.
    pub drop_callback: f64,
    /// Requests per second the system takes; more in any one-second window is refused (429)
    /// and counted as a violation. 0: no limit.
    pub max_rps: u32,
    /// The system is down for maintenance for this long from its start (ms); 0: never.
    pub maintenance_ms: u64,
    /// How far the system's own clock is off (seconds, may be negative): the dates it prints
    /// (decision dates) come from it, as a badly kept server's would.
    pub clock_skew_secs: i64,
    /// A system that does not check business serials: a serial submitted again opens a second
    /// case (counted in `duplicates` all the same), as many real ones do.
    pub accept_duplicate_serials: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            department: "sim".into(),
            decision_delay_ms: 1500,
            reject: 0.15,
            supplement: 0.15,
            server_error: 0.0,
            hang: 0.0,
            hang_ms: 0,
            too_many: 0.0,
            retry_after_secs: 1,
            drop_callback: 0.0,
            max_rps: 0,
            maintenance_ms: 0,
            clock_skew_secs: 0,
            accept_duplicate_serials: false,
        }
    }
}

/// A department's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Approved,
    Rejected,
    Supplement,
}

/// A case in the simulated system.
#[derive(Debug, Clone)]
pub struct SimCase {
    /// The system's own case number.
    pub number: String,
    /// Our task id, which the system keeps as its business serial number.
    pub serial: String,
    pub fields: BTreeMap<String, String>,
    pub received: Instant,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub outcome: Outcome,
    /// The last supplement round it took, if any.
    pub supplement: Option<Box<Taken>>,
}

/// A supplement round a case took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub round: u32,
    /// Its serial (`<task id>-S<round>`).
    pub serial: String,
    /// The names of the materials it brought.
    pub supplied: Vec<String>,
}

impl SimCase {
    /// The step it is at and, once decided, the outcome.
    pub fn state(&self, delay: Duration) -> (&'static str, Option<Outcome>) {
        let t = self.received.elapsed();
        if t >= delay {
            ("办结", Some(self.outcome))
        } else if t >= delay * 2 / 3 {
            ("批准", None)
        } else if t >= delay / 3 {
            ("审核", None)
        } else {
            ("承办", None)
        }
    }

    /// Supplement rounds taken (0: none).
    pub fn round(&self) -> u32 {
        self.supplement.as_ref().map_or(0, |s| s.round)
    }

    /// The licence number issued on approval.
    pub fn licence_number(&self) -> String {
        format!("ZZ{}", &self.number[self.number.len().saturating_sub(8)..])
    }
}

/// A fault to inject into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ServerError,
    Hang(Duration),
    TooMany(Duration),
    Maintenance,
}

/// Counters a test reads.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub cases: u64,
    /// Submissions of a serial number the system already had, and supplements of a round it
    /// already took.
    pub duplicates: u64,
    /// Of those, the submissions of a serial number it already had: with
    /// `accept_duplicate_serials`, each made a second case (a duplicate effect). A supplement
    /// round handed in again is answered as it stands and changes nothing.
    pub repeated_serials: u64,
    /// Supplement rounds taken.
    pub supplements: u64,
    /// Requests beyond `max_rps` in a one-second window.
    pub rate_violations: u64,
    /// Most requests seen in any one-second window.
    pub max_requests_in_a_second: u64,
    pub faults: u64,
    pub callbacks_sent: u64,
    pub callbacks_dropped: u64,
}

/// What a supplement led to.
#[derive(Debug, Clone)]
pub enum Resupply {
    /// Taken: the case is in review again.
    Taken(SimCase),
    /// That round was taken before.
    Duplicate(SimCase),
    /// The case is not waiting for a supplement.
    NotWaiting(SimCase),
    /// No such case.
    Unknown,
}

/// One simulated system's state.
pub struct Sim {
    pub behaviour: Behaviour,
    started: Instant,
    cases: Mutex<HashMap<String, SimCase>>,
    by_number: Mutex<HashMap<String, String>>,
    recent: Mutex<VecDeque<Instant>>,
    seq: AtomicU64,
    rng: AtomicU64,
    stats: Mutex<Stats>,
    /// The system is down: every request fails as a server error until it is back.
    outage: std::sync::atomic::AtomicBool,
}

impl Sim {
    pub fn new(behaviour: Behaviour) -> Sim {
        let seed = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
        Sim {
            behaviour,
            started: Instant::now(),
            cases: Mutex::new(HashMap::new()),
            by_number: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            rng: AtomicU64::new(seed | 1),
            stats: Mutex::new(Stats::default()),
            outage: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Takes the system down (every request then fails as a server error, e.g. a 502 page) or
    /// brings it back, as an operations test needs.
    pub fn set_outage(&self, down: bool) {
        self.outage.store(down, Ordering::Relaxed);
    }

    /// A number in [0, 1).
    pub fn random(&self) -> f64 {
        // xorshift64*, shared across requests.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Counts a request and decides its fault, if any: the rate limit and maintenance first,
    /// then the configured shares.
    pub fn request(&self) -> Option<Fault> {
        let now = Instant::now();
        let mut stats = self.stats.lock().unwrap();
        stats.requests += 1;
        {
            let mut recent = self.recent.lock().unwrap();
            while recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                recent.pop_front();
            }
            recent.push_back(now);
            stats.max_requests_in_a_second =
                stats.max_requests_in_a_second.max(recent.len() as u64);
            if self.behaviour.max_rps > 0 && recent.len() as u32 > self.behaviour.max_rps {
                stats.rate_violations += 1;
                stats.faults += 1;
                return Some(Fault::TooMany(Duration::from_secs(
                    self.behaviour.retry_after_secs,
                )));
            }
        }
        if self.outage.load(Ordering::Relaxed) {
            stats.faults += 1;
            return Some(Fault::ServerError);
        }
        let b = &self.behaviour;
        if b.maintenance_ms > 0 && self.started.elapsed() < Duration::from_millis(b.maintenance_ms)
        {
            stats.faults += 1;
            return Some(Fault::Maintenance);
        }
        let r = self.random();
        let fault = if r < b.server_error {
            Some(Fault::ServerError)
        } else if r < b.server_error + b.hang {
            Some(Fault::Hang(Duration::from_millis(b.hang_ms)))
        } else if r < b.server_error + b.hang + b.too_many {
            Some(Fault::TooMany(Duration::from_secs(b.retry_after_secs)))
        } else {
            None
        };
        if fault.is_some() {
            stats.faults += 1;
        }
        fault
    }

    /// Records a submission. A serial number seen before is a duplicate: counted, and the
    /// existing case is returned as `Err`.
    pub fn submit(
        &self,
        serial: &str,
        fields: BTreeMap<String, String>,
    ) -> Result<SimCase, SimCase> {
        let mut cases = self.cases.lock().unwrap();
        if let Some(existing) = cases.get(serial) {
            {
                let mut stats = self.stats.lock().unwrap();
                stats.duplicates += 1;
                stats.repeated_serials += 1;
            }
            eprintln!(
                "{}: serial {serial} submitted again (its case is {})",
                self.behaviour.department, existing.number
            );
            if !self.behaviour.accept_duplicate_serials {
                return Err(existing.clone());
            }
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let today = chrono::Utc::now().format("%Y%m%d");
        let number = format!("{}{today}{n:06}", self.behaviour.department.to_uppercase());
        let r = self.random();
        let outcome = if r < self.behaviour.reject {
            Outcome::Rejected
        } else if r < self.behaviour.reject + self.behaviour.supplement {
            Outcome::Supplement
        } else {
            Outcome::Approved
        };
        let case = SimCase {
            number: number.clone(),
            serial: serial.to_string(),
            fields,
            received: Instant::now(),
            received_at: chrono::Utc::now(),
            outcome,
            supplement: None,
        };
        cases.insert(serial.to_string(), case.clone());
        self.by_number
            .lock()
            .unwrap()
            .insert(number, serial.to_string());
        self.stats.lock().unwrap().cases += 1;
        Ok(case)
    }

    /// Takes supplement round `round` (serial `supplement_serial`, `supplied` the materials'
    /// names) for the case with that case number or business serial: it goes back into review
    /// from now and is decided again after the decision delay — rejected with the rejection
    /// share, else approved; never a second supplement request. A round it already took is a
    /// duplicate: counted, and answered with the case as it is.
    pub fn resupply(
        &self,
        number_or_serial: &str,
        round: u32,
        supplement_serial: &str,
        supplied: Vec<String>,
    ) -> Resupply {
        let serial = self
            .by_number
            .lock()
            .unwrap()
            .get(number_or_serial)
            .cloned()
            .unwrap_or_else(|| number_or_serial.to_string());
        let mut cases = self.cases.lock().unwrap();
        let Some(case) = cases.get_mut(&serial) else {
            return Resupply::Unknown;
        };
        if round <= case.round()
            || case
                .supplement
                .as_ref()
                .is_some_and(|s| s.serial == supplement_serial)
        {
            self.stats.lock().unwrap().duplicates += 1;
            eprintln!(
                "{}: supplement round {round} of serial {serial} handed in again",
                self.behaviour.department
            );
            return Resupply::Duplicate(case.clone());
        }
        if case.state(self.decision_delay()).1 != Some(Outcome::Supplement) {
            return Resupply::NotWaiting(case.clone());
        }
        case.outcome = if self.random() < self.behaviour.reject {
            Outcome::Rejected
        } else {
            Outcome::Approved
        };
        case.supplement = Some(Box::new(Taken {
            round,
            serial: supplement_serial.to_string(),
            supplied,
        }));
        case.received = Instant::now();
        case.received_at = chrono::Utc::now();
        self.stats.lock().unwrap().supplements += 1;
        Resupply::Taken(case.clone())
    }

    pub fn by_serial(&self, serial: &str) -> Option<SimCase> {
        self.cases.lock().unwrap().get(serial).cloned()
    }

    pub fn by_number(&self, number: &str) -> Option<SimCase> {
        let serial = self.by_number.lock().unwrap().get(number).cloned()?;
        self.by_serial(&serial)
    }

    /// Every case, for a system's own listing.
    pub fn cases(&self) -> Vec<SimCase> {
        self.cases.lock().unwrap().values().cloned().collect()
    }

    /// The time by the system's own clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::seconds(self.behaviour.clock_skew_secs)
    }

    pub fn decision_delay(&self) -> Duration {
        Duration::from_millis(self.behaviour.decision_delay_ms)
    }

    /// When the case's (latest) decision is or was taken, by the system's own clock: the same
    /// instant on every query, unlike `now()`.
    pub fn decided_at(&self, case: &SimCase) -> chrono::DateTime<chrono::Utc> {
        case.received_at
            + chrono::Duration::milliseconds(self.behaviour.decision_delay_ms as i64)
            + chrono::Duration::seconds(self.behaviour.clock_skew_secs)
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    pub fn count_callback(&self, sent: bool) {
        let mut s = self.stats.lock().unwrap();
        if sent {
            s.callbacks_sent += 1;
        } else {
            s.callbacks_dropped += 1;
        }
    }
}

/// A date the way the department's screens print it: `2019年06月20日`.
pub fn date_cn(t: chrono::DateTime<chrono::Utc>) -> String {
    (t + chrono::Duration::hours(8))
        .format("%Y年%m月%d日")
        .to_string()
}

/// Whether `s` is a time written exactly in `format` (chrono's), zero-padding and all, as a
/// strict system checks the dates it is sent.
pub fn is_time(s: &str, format: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(s, format)
        .is_ok_and(|t| t.format(format).to_string() == s)
}

/// Outcome words the simulated systems use in their answers.
pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Approved => "办结",
        Outcome::Rejected => "不予许可",
        Outcome::Supplement => "补正",
    }
}

/// The materials a supplement request names — exact names of material kinds in the gateway's
/// acceptance list (`config/catalog/materials.toml`: PMT and ZSZM), so the gateway can match
/// them — and the reasons a rejection gives.
pub const SUPPLEMENT_MATERIALS: &str = "经营场所平面图及设备布局图、住所（经营场所）使用证明";
pub const REJECTION_REASONS: &str = "经营场所与申报不符";
