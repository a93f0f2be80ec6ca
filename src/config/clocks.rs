//! The settings of the gateway's timed work: looking for a new or changed calendar file and the
//! warning about next year's, the SLA sweeper (when the yellow warning comes, how often it
//! looks), and stalled tasks (how long a department's adapter may be silent about one). Shapes
//! and defaults only: it never reads the clock, the calendar or the store.

use serde::Deserialize;

/// The working-day calendar at run time (docs/calendar.md): how often its directory is looked at
/// for a new or changed year file, and from when a missing next-year file is reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Seconds between looks at the calendar directory (default 30); 0: reload on `SIGHUP` only.
    #[serde(default = "default_calendar_check_secs")]
    pub check_secs: u64,
    /// From this day of each year (`MM-DD`, default `11-01`), a missing file for next year is
    /// reported: the `yichuang_calendar_next_year_missing` metric and `AdminService.Status`.
    #[serde(default = "default_calendar_warn_from")]
    pub warn_from: String,
}

fn default_calendar_check_secs() -> u64 {
    30
}

fn default_calendar_warn_from() -> String {
    "11-01".into()
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            check_secs: default_calendar_check_secs(),
            warn_from: default_calendar_warn_from(),
        }
    }
}

impl CalendarConfig {
    /// `warn_from` as (month, day).
    pub fn warn_from_day(&self) -> Result<(u32, u32), String> {
        let parsed = self.warn_from.split_once('-').and_then(|(m, d)| {
            let (m, d) = (m.parse::<u32>().ok()?, d.parse::<u32>().ok()?);
            // Any year with a 29 February will do to check the day exists.
            chrono::NaiveDate::from_ymd_opt(2024, m, d).map(|_| (m, d))
        });
        parsed.ok_or_else(|| {
            format!(
                "[calendar] warn_from = {:?}: write a day of the year as MM-DD, e.g. \"11-01\"",
                self.warn_from
            )
        })
    }
}

/// Stalled tasks (docs/bus.md): a task in a department's hands that the gateway hears nothing of
/// (no result, no `ALIVE` heartbeat) for longer than this is published again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StallConfig {
    /// Seconds of silence allowed (default 1800). Keep it well above the department's longest
    /// retry delay and its polling interval × `polling.alive_every`.
    #[serde(default = "default_stall_after")]
    pub after_secs: u64,
    /// Seconds between looks (default 30); 0: this replica does not look (another one does).
    #[serde(default = "default_stall_check")]
    pub check_secs: u64,
    /// After this many repairs of one task, a `task-stalled` entry in its case's history.
    #[serde(default = "default_stall_alert")]
    pub alert_after: u32,
    /// Per department, seconds of silence allowed instead of `after_secs`.
    #[serde(default)]
    pub departments: std::collections::BTreeMap<String, u64>,
}

fn default_stall_after() -> u64 {
    1800
}
fn default_stall_check() -> u64 {
    30
}
fn default_stall_alert() -> u32 {
    3
}

impl Default for StallConfig {
    fn default() -> Self {
        StallConfig {
            after_secs: default_stall_after(),
            check_secs: default_stall_check(),
            alert_after: default_stall_alert(),
            departments: Default::default(),
        }
    }
}

impl StallConfig {
    /// Seconds of silence allowed for `department`.
    pub fn allowance(&self, department: &str) -> u64 {
        self.departments
            .get(department)
            .copied()
            .unwrap_or(self.after_secs)
    }
}

/// The SLA sweeper: when the yellow warning comes and how often tasks are looked at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// Share of the promised time after which a task gets its yellow warning (0 < share < 1;
    /// default 0.8).
    #[serde(default = "default_warn_share")]
    pub warn_share: f64,
    /// How often the sweeper looks for tasks whose clock changed or whose warning or deadline
    /// came, in seconds (default 5); 0: this replica does not sweep (another one does).
    #[serde(default = "default_sweep_secs")]
    pub sweep_secs: u64,
}

fn default_warn_share() -> f64 {
    0.8
}

fn default_sweep_secs() -> u64 {
    5
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            warn_share: default_warn_share(),
            sweep_secs: default_sweep_secs(),
        }
    }
}
