//! The gateway's working-day calendar at run time: loaded from the calendar directory at start,
//! replaced without a restart when a year file is added or changed (the directory is looked at
//! every `[calendar] check_secs`, and at once on `SIGHUP`), and the warning operators get when
//! next year's file is still missing late in the year (docs/calendar.md).
//!
//! A reload reads and checks the whole directory first; a bad file is refused with its file and
//! line, and the calendar in use stays. After a reload that added or changed a year, every task
//! whose deadlines were counted provisionally is marked for the SLA sweeper, which counts them
//! again on the new calendar under the case's lock ([`crate::clock`]): each provisional deadline
//! is confirmed (or moved) once, whichever replica gets there first.
//!
//! The arithmetic lives in [`crate::calendar`]; this module only owns which calendar is current.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use tracing::{info, warn};

use crate::calendar::Calendar;
use crate::config::ConfigProblem;
use crate::store::Store;

/// The calendar in use, shared by intake and the legal clock, replaceable at run time.
#[derive(Clone)]
pub struct LiveCalendar {
    inner: Arc<RwLock<State>>,
    /// Where it is loaded from; `None`: a fixed calendar (tests, tools).
    dir: Option<PathBuf>,
    /// From this day of the year (month, day), a missing next-year file is reported.
    warn_from: (u32, u32),
}

/// The default of `[calendar] warn_from`: 1 November.
pub const WARN_FROM: (u32, u32) = (11, 1);

struct State {
    calendar: Arc<Calendar>,
    /// What the directory held when it was read: each file's name, length and change time.
    fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
    loaded_at: DateTime<Utc>,
    /// The last reload's problems (`file:line: message`); empty when it loaded.
    problems: Vec<String>,
}

impl std::fmt::Debug for LiveCalendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCalendar")
            .field("dir", &self.dir)
            .field("years", &self.current().years().collect::<Vec<_>>())
            .finish()
    }
}

impl From<Arc<Calendar>> for LiveCalendar {
    fn from(calendar: Arc<Calendar>) -> Self {
        LiveCalendar::with(calendar, None, Vec::new())
    }
}

impl From<Calendar> for LiveCalendar {
    fn from(calendar: Calendar) -> Self {
        Arc::new(calendar).into()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The directory is as it was: nothing read.
    Unchanged,
    /// The new calendar is in use; the years it has now.
    Loaded { years: Vec<i32> },
}

impl LiveCalendar {
    fn with(
        calendar: Arc<Calendar>,
        dir: Option<PathBuf>,
        fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
    ) -> Self {
        LiveCalendar {
            inner: Arc::new(RwLock::new(State {
                calendar,
                fingerprint,
                loaded_at: Utc::now(),
                problems: Vec::new(),
            })),
            dir,
            warn_from: WARN_FROM,
        }
    }

    /// Reports a missing next-year file from `warn_from` (month, day) of each year on.
    pub fn warning_from(mut self, warn_from: (u32, u32)) -> Self {
        self.warn_from = warn_from;
        self
    }

    /// Whether next year's notice is missing at `now` in `zone`, the warning day having come.
    pub fn next_year_missing(&self, now: DateTime<Utc>, zone: chrono::FixedOffset) -> bool {
        next_year_missing(
            &self.current(),
            now.with_timezone(&zone).date_naive(),
            self.warn_from,
        )
    }

    /// The operator's warning at `now` in `zone`, or `None`.
    pub fn warning(&self, now: DateTime<Utc>, zone: chrono::FixedOffset) -> Option<String> {
        warning(
            &self.current(),
            now.with_timezone(&zone).date_naive(),
            self.warn_from,
        )
    }

    /// Loads every year file of `dir`; refused, with every problem, when one is bad.
    pub fn load(dir: &Path) -> Result<LiveCalendar, Vec<ConfigProblem>> {
        let fingerprint = fingerprint(dir);
        let calendar = Calendar::load(dir)?;
        Ok(LiveCalendar::with(
            Arc::new(calendar),
            Some(dir.to_path_buf()),
            fingerprint,
        ))
    }

    /// The calendar in use now. Hold it for one whole computation, so that a reload meanwhile
    /// cannot mix two calendars in one answer.
    pub fn current(&self) -> Arc<Calendar> {
        self.read().calendar.clone()
    }

    /// When the calendar in use was loaded, and the last reload's problems.
    pub fn loaded(&self) -> (DateTime<Utc>, Vec<String>) {
        let state = self.read();
        (state.loaded_at, state.problems.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves a whole calendar behind it: keep using it.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the directory again if it changed since it was last read. A bad file keeps the
    /// calendar in use and is answered with every problem (also kept for `AdminService.Status`);
    /// an unchanged directory is not read at all unless `force`.
    pub fn reload(&self, force: bool) -> Result<Reloaded, Vec<ConfigProblem>> {
        let Some(dir) = &self.dir else {
            return Ok(Reloaded::Unchanged);
        };
        let seen = fingerprint(dir);
        if !force && seen == self.read().fingerprint {
            return Ok(Reloaded::Unchanged);
        }
        // Read and checked before the lock is taken: intake and the sweeper go on meanwhile.
        let loaded = Calendar::load(dir).and_then(|calendar| {
            // A year once loaded is never dropped at run time: deadlines were confirmed on it.
            let dropped: Vec<ConfigProblem> = self
                .current()
                .years()
                .filter(|y| !calendar.has_year(*y))
                .map(|y| ConfigProblem {
                    file: dir.join(format!("{y}.toml")).display().to_string(),
                    line: 0,
                    message: format!(
                        "{y} is loaded but its file is gone: a reload never drops a year (deadlines were counted on it); put the file back"
                    ),
                })
                .collect();
            if dropped.is_empty() {
                Ok(calendar)
            } else {
                Err(dropped)
            }
        });
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match loaded {
            Ok(calendar) => {
                let years: Vec<i32> = calendar.years().collect();
                state.calendar = Arc::new(calendar);
                state.fingerprint = seen;
                state.loaded_at = Utc::now();
                state.problems.clear();
                Ok(Reloaded::Loaded { years })
            }
            Err(problems) => {
                // Not read again until it changes: one report per edit, not one per look.
                state.fingerprint = seen;
                state.problems = problems.iter().map(ToString::to_string).collect();
                Err(problems)
            }
        }
    }
}

/// Each `*.toml` of `dir` with its length and change time, sorted; empty when unreadable.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut seen: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .filter_map(|e| {
            // Followed through symlinks: a Kubernetes ConfigMap swaps the target, not the link.
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    seen.sort();
    seen
}

/// The year whose notice is missing and needed: this year's (every deadline is then
/// provisional), or next year's once `warn_from` (month, day) has come (deadlines that reach it
/// are).
fn missing_year(calendar: &Calendar, today: NaiveDate, warn_from: (u32, u32)) -> Option<i32> {
    if !calendar.has_year(today.year()) {
        Some(today.year())
    } else if (today.month(), today.day()) >= warn_from && !calendar.has_year(today.year() + 1) {
        Some(today.year() + 1)
    } else {
        None
    }
}

/// Whether a needed notice is missing on `today` (a date in the hall): this year's, or next
/// year's once `warn_from` (month, day) has come.
pub fn next_year_missing(calendar: &Calendar, today: NaiveDate, warn_from: (u32, u32)) -> bool {
    missing_year(calendar, today, warn_from).is_some()
}

/// The operator's warning when a needed notice is missing, or `None`.
pub fn warning(calendar: &Calendar, today: NaiveDate, warn_from: (u32, u32)) -> Option<String> {
    missing_year(calendar, today, warn_from).map(|next| {
        format!(
            "no working-day calendar for {next}: deadlines reaching {next} are counted Monday–Friday and marked provisional; add config/calendar/{next}.toml from the State Council's holiday notice (`yichuang calendar import` / `calendar check`), and it is loaded without a restart"
        )
    })
}

/// Reloads `calendar` every `every` (when set) and on `SIGHUP`, until the process ends. After a
/// reload that loaded, marks every open task for the SLA sweeper. With `mark_first`, marks them
/// once at start too (a file added while the gateway was down).
pub async fn watch(
    calendar: LiveCalendar,
    store: Store,
    every: Option<Duration>,
    mark_first: bool,
) {
    let mut reloads = crate::supervise::Reloads::new(every);
    if mark_first && let Err(e) = store.mark_open_clocks().await {
        warn!(error = %e, "cannot mark the open tasks at start; the sweeper's hourly look will count provisional ones again");
    }
    info!(
        every_secs = every.map(|e| e.as_secs()),
        "calendar watch running (SIGHUP reloads at once)"
    );
    crate::supervise::progressed();
    while let Some(forced) = reloads.next().await {
        reload_and_mark(&calendar, &store, forced).await;
        crate::supervise::progressed();
    }
}

/// One reload (see [`watch`]): logs what happened; a store error marking the provisional tasks
/// is retried on the next reload that loads, and by the hourly look the sweeper gives them.
pub async fn reload_and_mark(calendar: &LiveCalendar, store: &Store, force: bool) {
    match calendar.reload(force) {
        Ok(Reloaded::Unchanged) => {}
        Ok(Reloaded::Loaded { years }) => {
            info!(?years, "working-day calendar reloaded");
            // Every open task, not only the provisional ones: a file edited in place (an
            // amendment notice) moves confirmed deadlines too.
            match store.mark_open_clocks().await {
                Ok(n) => info!(tasks = n, "open tasks marked to be counted again"),
                Err(e) => {
                    warn!(error = %e, "cannot mark the open tasks; the sweeper's hourly look will count the provisional ones again")
                }
            }
        }
        Err(problems) => {
            for p in &problems {
                warn!(problem = %p, "calendar file refused; the calendar in use stays");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of_shipped() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar");
        for entry in std::fs::read_dir(shipped).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        dir
    }

    const Y2027: &str = "year = 2027\nnotice = \"test notice\"\nsource = \"test\"\ndays = [\n  { date = 2027-01-01, off = true, name = \"元旦\" },\n]\n";

    #[test]
    fn a_new_year_file_is_loaded_and_a_bad_one_keeps_the_calendar_in_use() {
        let dir = copy_of_shipped();
        let live = LiveCalendar::load(dir.path()).unwrap();
        assert!(!live.current().has_year(2027));
        assert_eq!(live.reload(false), Ok(Reloaded::Unchanged));

        // A bad file: refused with its file and line, the old calendar kept.
        let bad = Y2027.replace("2027-01-01, off = true", "2027-01-01, off = maybe");
        std::fs::write(dir.path().join("2027.toml"), bad).unwrap();
        let problems = live.reload(false).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.file.ends_with("2027.toml") && p.line == 5),
            "{problems:?}"
        );
        assert!(!live.current().has_year(2027));
        assert_eq!(live.loaded().1.len(), problems.len());
        // Not read again until it changes.
        assert_eq!(live.reload(false), Ok(Reloaded::Unchanged));

        std::fs::write(dir.path().join("2027.toml"), Y2027).unwrap();
        let reloaded = live.reload(true).unwrap();
        assert!(
            matches!(&reloaded, Reloaded::Loaded { years } if years.contains(&2027)),
            "{reloaded:?}"
        );
        assert!(live.current().has_year(2027));
        assert!(live.loaded().1.is_empty());
    }

    #[test]
    fn next_years_file_is_missed_from_the_warning_day_on() {
        let dir = copy_of_shipped();
        let calendar = Calendar::load(dir.path()).unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert!(!next_year_missing(&calendar, d("2026-10-31"), (11, 1)));
        assert!(next_year_missing(&calendar, d("2026-11-01"), (11, 1)));
        assert!(next_year_missing(&calendar, d("2026-12-06"), (11, 1)));
        assert!(!next_year_missing(&calendar, d("2025-12-06"), (11, 1)));
        // From New Year on, a year with no file at all is missing whatever the day.
        assert!(next_year_missing(&calendar, d("2027-01-04"), (11, 1)));
        let w = warning(&calendar, d("2027-01-04"), (11, 1)).unwrap();
        assert!(w.contains("config/calendar/2027.toml"), "{w}");
        let w = warning(&calendar, d("2026-12-06"), (11, 1)).unwrap();
        assert!(w.contains("config/calendar/2027.toml"), "{w}");
    }
}
