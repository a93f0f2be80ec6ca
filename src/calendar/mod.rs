//! The legal clock's arithmetic: the State Council's working-day calendar (holidays and 调休
//! make-up working days), loaded from one file per year, and deadlines counted on it — in dates
//! ([`Calendar`]) and in instants in the hall's time zone ([`HallCalendar`]). Clocks on cases and
//! tasks, warnings and alerts are not here; they call this.
//!
//! Conventions (docs/calendar.md):
//! - Day 1 (民法典 第二百零一条; 行政许可法 第八十二条 counts in working days): the day a period
//!   starts is not counted. A limit of N working days from an acceptance on day D ends with the
//!   N-th working day after D; N = 0 (即办件) ends with D itself.
//! - Day close (民法典 第二百零三条): a day limit runs out at 24:00 of its last day, that is 00:00
//!   of the next day in the hall's zone; the clock is overdue from that instant on. A calendar-day
//!   limit whose last day is not a working day ends with the next working day.
//! - Hours: an hour limit runs from the instant of acceptance, and hours elapse on working days
//!   only (all 24 of them; office hours are not modelled): 24 hours from Friday 10:00 end on
//!   Monday 10:00, and a holiday in between is skipped.
//! - Pauses (挂起): a day limit is extended by the whole days paused, counted like a period —
//!   the working (or calendar) days after the day the pause starts, up to and including the day
//!   it ends; an hour limit by the working-day time paused.
//! - A question that reaches into a year without calendar data — or into the last week of a year
//!   whose next year's notice is missing, since that notice may arrange those days — is an error
//!   naming the year, never a silent guess. [`Calendar::reckon`] answers it anyway, counting the
//!   missing year Monday–Friday, and names the years it assumed: a *provisional* answer, which the
//!   gateway marks wherever it shows and confirms once the year's notice is loaded. An applicant
//!   is never refused for a calendar the operators have not loaded yet.
//!
//! Layout: this file holds the calendar of working days itself (loading the year files, which
//! day is a working day, reckoning across years not loaded); [`Limit`] and [`Pause`] are in
//! `limit.rs`; deadlines on instants in a hall's zone ([`HallCalendar`]) in `hall.rs`; which
//! calendar the running gateway uses, reloaded without a restart, in `live.rs`
//! ([`LiveCalendar`], [`watch`]). Nothing here reads the clock except `live.rs`, and nothing
//! here writes a case.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;

use crate::config::{ConfigProblem, line_at, toml_problem};

mod hall;
mod limit;
mod live;
#[cfg(test)]
mod tests;

pub use hall::HallCalendar;
pub use limit::{Limit, LimitError, Pause, Unit};
pub use live::{
    LiveCalendar, Reloaded, WARN_FROM, next_year_missing, reload_and_mark, warning, watch,
};

/// Why a calendar question cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error(
        "no working-day calendar for {0}: add config/calendar/{0}.toml from the State Council's holiday notice"
    )]
    YearMissing(i32),
}

/// From this day of December on, a date also needs the next year's notice: that notice may make
/// it a make-up working day or a day off (2011-12-31 by the 2012 notice, 2018-12-29..31 by the
/// 2019 notice).
const NEXT_NOTICE_REACHES_BACK_TO: (u32, u32) = (12, 25);

/// How many missing years one question may assume before it is refused: a limit that reaches
/// further is a mistake in the acceptance list, not a deadline.
const MAX_ASSUMED_YEARS: usize = 3;

/// The working-day calendar.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    /// Years whose notice has been loaded.
    years: BTreeSet<i32>,
    /// Years without a notice counted Monday–Friday (only in the copies [`Calendar::reckon`]
    /// makes; a loaded calendar assumes nothing).
    assumed: BTreeSet<i32>,
    /// Days that differ from the Monday–Friday rule.
    overrides: HashMap<NaiveDate, Override>,
}

#[derive(Debug, Clone, Copy)]
struct Override {
    /// `true` = day off, `false` = make-up working day.
    off: bool,
    /// The notice (year file) that arranges the day.
    year: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // source and names are documentation that must be present.
struct YearFile {
    year: toml::Spanned<i32>,
    notice: toml::Spanned<String>,
    source: toml::Spanned<String>,
    #[serde(default)]
    amendments: Vec<toml::Spanned<Amendment>>,
    days: Vec<toml::Spanned<DayEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Amendment {
    notice: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct DayEntry {
    date: toml::value::Datetime,
    off: bool,
    name: String,
}

impl Calendar {
    /// Loads every `*.toml` of `dir` (read once, when the gateway starts: a new year's file needs
    /// a restart, not a rebuild); all problems are reported at once.
    pub fn load(dir: &Path) -> Result<Calendar, Vec<ConfigProblem>> {
        let read_dir = std::fs::read_dir(dir).map_err(|e| {
            vec![ConfigProblem {
                file: dir.display().to_string(),
                line: 0,
                message: format!("cannot read the calendar directory: {e}"),
            }]
        })?;
        let mut paths: Vec<PathBuf> = read_dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut calendar = Calendar::default();
        let mut problems = Vec::new();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(ConfigProblem {
                        file: path.display().to_string(),
                        line: 0,
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            if let Err(mut more) = calendar.add_year(&path, &text) {
                problems.append(&mut more);
            }
        }
        if problems.is_empty() {
            Ok(calendar)
        } else {
            Err(problems)
        }
    }

    /// Adds one year's file, named `YYYY.toml` after the year its notice is for. Refused, with
    /// nothing added: a notice or source left empty, a date that is not a plain date, is listed
    /// twice, is out of date order, or lies outside the file's year and the last days of the
    /// year before (from December 25); a make-up working day on a weekday; a day another
    /// year's file arranges the other way; a year defined twice.
    pub fn add_year(&mut self, path: &Path, text: &str) -> Result<(), Vec<ConfigProblem>> {
        let file: YearFile =
            toml::from_str(text).map_err(|e| vec![toml_problem(path, text, &e)])?;
        let at = |span: std::ops::Range<usize>, message: String| ConfigProblem {
            file: path.display().to_string(),
            line: line_at(text, span.start),
            message,
        };
        let mut problems = Vec::new();
        let year = *file.year.get_ref();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if stem != year.to_string() {
            problems.push(at(
                file.year.span(),
                format!("file declares year {year} but is named {stem}.toml"),
            ));
        }
        if self.years.contains(&year) {
            problems.push(at(
                file.year.span(),
                format!("year {year} is defined twice"),
            ));
        }
        for (field, value) in [("notice", &file.notice), ("source", &file.source)] {
            if value.get_ref().trim().is_empty() {
                problems.push(at(
                    value.span(),
                    format!("{field} is empty: cite the State Council notice this year follows"),
                ));
            }
        }
        for amendment in &file.amendments {
            let a = amendment.get_ref();
            if a.notice.trim().is_empty() || a.source.trim().is_empty() {
                problems.push(at(
                    amendment.span(),
                    "an amendment needs its notice and source".to_string(),
                ));
            }
        }
        let first = NaiveDate::from_ymd_opt(
            year - 1,
            NEXT_NOTICE_REACHES_BACK_TO.0,
            NEXT_NOTICE_REACHES_BACK_TO.1,
        );
        let last = NaiveDate::from_ymd_opt(year, 12, 31);
        let mut days: Vec<(NaiveDate, bool)> = Vec::with_capacity(file.days.len());
        for entry in &file.days {
            let span = entry.span();
            let day = entry.get_ref();
            let Some(date) = day
                .date
                .date
                .filter(|_| day.date.time.is_none() && day.date.offset.is_none())
                .and_then(|d| {
                    NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
                })
            else {
                problems.push(at(
                    span.clone(),
                    format!("{} is not a date (write YYYY-MM-DD)", day.date),
                ));
                continue;
            };
            if days.iter().any(|&(d, _)| d == date) {
                problems.push(at(span.clone(), format!("{date} is listed twice")));
            } else if let Some(&(prev, _)) = days.last()
                && prev > date
            {
                problems.push(at(
                    span.clone(),
                    format!("{date} is out of date order (after {prev}): keep days sorted"),
                ));
            }
            if !day.off && !is_weekend(date) {
                problems.push(at(
                    span.clone(),
                    format!("{date} is a make-up working day but falls on a weekday"),
                ));
            }
            if first.is_none_or(|f| date < f) || last.is_none_or(|l| date > l) {
                problems.push(at(
                    span.clone(),
                    format!(
                        "{date} is outside year {year} (a notice may reach back to December 25 of the year before)"
                    ),
                ));
            }
            if let Some(other) = self.overrides.get(&date)
                && other.off != day.off
            {
                problems.push(at(
                    span,
                    format!(
                        "{date} is {} here but {} in {}.toml",
                        kind(day.off),
                        kind(other.off),
                        other.year
                    ),
                ));
            }
            days.push((date, day.off));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        for (date, off) in days {
            self.overrides.insert(date, Override { off, year });
        }
        self.years.insert(year);
        Ok(())
    }

    /// Years with calendar data.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.iter().copied()
    }

    /// Whether `year`'s notice is loaded.
    pub fn has_year(&self, year: i32) -> bool {
        self.years.contains(&year)
    }

    fn knows(&self, year: i32) -> bool {
        self.years.contains(&year) || self.assumed.contains(&year)
    }

    /// Answers `question` on this calendar. Where it reaches a year without a notice, answers it
    /// again with that year counted Monday–Friday (and so on for a further missing year), and
    /// names the years it assumed: the answer is then provisional. Only years after the last
    /// loaded one are assumed (those whose notice is not out yet); refused when the question
    /// reaches a year before it, or more than a few missing years.
    pub fn reckon<T>(
        &self,
        question: impl Fn(&Calendar) -> Result<T, CalendarError>,
    ) -> Result<Reckoned<T>, CalendarError> {
        let mut missing = match question(self) {
            Ok(value) => {
                return Ok(Reckoned {
                    value,
                    assumed: BTreeSet::new(),
                });
            }
            Err(CalendarError::YearMissing(year)) => year,
        };
        let mut assuming = self.clone();
        loop {
            // Only years after the last notice loaded are the ones not published yet; a year
            // before it (a gap, or a window clock set years back) is an error, not a guess.
            let after_last = self.years.last().is_some_and(|last| missing > *last);
            if !after_last || assuming.assumed.len() >= MAX_ASSUMED_YEARS {
                return Err(CalendarError::YearMissing(missing));
            }
            assuming.assumed.insert(missing);
            match question(&assuming) {
                Ok(value) => {
                    return Ok(Reckoned {
                        value,
                        assumed: assuming.assumed,
                    });
                }
                Err(CalendarError::YearMissing(year)) => missing = year,
            }
        }
    }

    /// Whether `date` is a working day. Needs its year's notice, and from December 25 on the
    /// next year's as well (it may arrange the day); without them the answer is
    /// [`CalendarError::YearMissing`], never a guess from the day of the week.
    pub fn is_workday(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        if !self.knows(date.year()) {
            return Err(CalendarError::YearMissing(date.year()));
        }
        if (date.month(), date.day()) >= NEXT_NOTICE_REACHES_BACK_TO && !self.knows(date.year() + 1)
        {
            return Err(CalendarError::YearMissing(date.year() + 1));
        }
        Ok(match self.overrides.get(&date) {
            Some(o) => !o.off,
            None => !is_weekend(date),
        })
    }

    /// The close of the `n`-th working day after `start` (`start` itself when `n` is 0).
    pub fn add_working_days(&self, start: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let mut date = start;
        let mut left = n;
        while left > 0 {
            date = date + Days::new(1);
            if self.is_workday(date)? {
                left -= 1;
            }
        }
        Ok(date)
    }

    /// Working days after `from` up to and including `to` (0 when `to <= from`).
    pub fn working_days_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<u32, CalendarError> {
        let mut count = 0;
        let mut date = from;
        while date < to {
            date = date + Days::new(1);
            if self.is_workday(date)? {
                count += 1;
            }
        }
        Ok(count)
    }
}

/// An answer of [`Calendar::reckon`]: final when `assumed` is empty, provisional otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reckoned<T> {
    pub value: T,
    /// Years without a notice that the answer counted Monday–Friday.
    pub assumed: BTreeSet<i32>,
}

impl<T> Reckoned<T> {
    /// Whether the answer rests on a year without its notice.
    pub fn provisional(&self) -> bool {
        !self.assumed.is_empty()
    }
}

/// `2027` or `2027, 2028`: the years a provisional answer assumed.
pub fn years_list(years: &BTreeSet<i32>) -> String {
    years
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind(off: bool) -> &'static str {
    if off {
        "a day off"
    } else {
        "a make-up working day"
    }
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}
