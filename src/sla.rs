//! The legal clock: the State Council's working-day calendar (holidays and 调休 make-up working
//! days), loaded from one file per year, and deadline arithmetic on it.
//!
//! Convention (行政许可法 第八十二条: the day a period starts is not counted): a time limit of N
//! working days counted from an acceptance on day D ends at the close of the N-th working day
//! after D. N = 0 (即办件) ends on D itself. A deadline that reaches into a year without
//! calendar data is an error naming the year, never a guess.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::Deserialize;

use crate::config::{ConfigProblem, line_at, toml_problem};

/// Why a calendar question cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error(
        "no working-day calendar for {0}: add config/calendar/{0}.toml from the State Council's holiday notice"
    )]
    YearMissing(i32),
}

/// The working-day calendar.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    /// Years whose notice has been loaded.
    years: BTreeSet<i32>,
    /// Days that differ from the Monday–Friday rule: `true` = day off, `false` = make-up working day.
    overrides: HashMap<NaiveDate, bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // notice, source and names are documentation that must be present.
struct YearFile {
    year: i32,
    notice: String,
    source: String,
    #[serde(default)]
    amendments: Vec<Amendment>,
    days: Vec<toml::Spanned<DayEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
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
    /// Loads every `YYYY.toml` of `dir`; all problems are reported at once.
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

    /// Adds one year's file.
    pub fn add_year(&mut self, path: &Path, text: &str) -> Result<(), Vec<ConfigProblem>> {
        let file: YearFile =
            toml::from_str(text).map_err(|e| vec![toml_problem(path, text, &e)])?;
        let at = |span: std::ops::Range<usize>, message: String| ConfigProblem {
            file: path.display().to_string(),
            line: line_at(text, span.start),
            message,
        };
        let mut problems = Vec::new();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if stem != file.year.to_string() {
            problems.push(at(
                0..0,
                format!("file declares year {} but is named {stem}.toml", file.year),
            ));
        }
        if self.years.contains(&file.year) {
            problems.push(at(0..0, format!("year {} is defined twice", file.year)));
        }
        let mut seen = HashMap::new();
        for entry in &file.days {
            let span = entry.span();
            let day = entry.get_ref();
            let Some(date) = day
                .date
                .date
                .filter(|_| day.date.time.is_none())
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
            if seen.insert(date, ()).is_some() {
                problems.push(at(span.clone(), format!("{date} is listed twice")));
            }
            if !day.off && !is_weekend(date) {
                problems.push(at(
                    span.clone(),
                    format!("{date} is a make-up working day but falls on a weekday"),
                ));
            }
            if (date.year() - file.year).abs() > 1 {
                problems.push(at(
                    span,
                    format!("{date} is too far from year {}", file.year),
                ));
            }
            self.overrides.insert(date, day.off);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        self.years.insert(file.year);
        Ok(())
    }

    /// Years with calendar data.
    pub fn years(&self) -> impl Iterator<Item = i32> + '_ {
        self.years.iter().copied()
    }

    /// Whether `date` is a working day.
    pub fn is_workday(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        if !self.years.contains(&date.year()) {
            return Err(CalendarError::YearMissing(date.year()));
        }
        Ok(match self.overrides.get(&date) {
            Some(off) => !off,
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

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shipped() -> Calendar {
        Calendar::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar"))
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn ships_2019_to_2026() {
        assert_eq!(
            shipped().years().collect::<Vec<_>>(),
            (2019..=2026).collect::<Vec<_>>()
        );
    }

    #[test]
    fn kai_canguan_accepted_2019_10_21_is_due_2019_11_04() {
        assert_eq!(
            shipped().add_working_days(d("2019-10-21"), 10),
            Ok(d("2019-11-04"))
        );
    }

    #[test]
    fn national_day_2019_with_make_up_days() {
        let cal = shipped();
        assert_eq!(
            cal.is_workday(d("2019-09-29")),
            Ok(true),
            "Sunday make-up day"
        );
        assert_eq!(
            cal.is_workday(d("2019-10-12")),
            Ok(true),
            "Saturday make-up day"
        );
        assert_eq!(cal.is_workday(d("2019-10-07")), Ok(false));
        // Friday 2019-09-27 + 1 working day is the make-up Sunday 2019-09-29.
        assert_eq!(
            cal.add_working_days(d("2019-09-27"), 1),
            Ok(d("2019-09-29"))
        );
        // 2019-09-30 + 1 working day skips the seven-day holiday.
        assert_eq!(
            cal.add_working_days(d("2019-09-30"), 1),
            Ok(d("2019-10-08"))
        );
    }

    #[test]
    fn spring_festival_2020_extension_is_off() {
        let cal = shipped();
        assert_eq!(cal.is_workday(d("2020-01-31")), Ok(false));
        assert_eq!(
            cal.is_workday(d("2020-02-01")),
            Ok(false),
            "make-up day cancelled by the extension"
        );
        assert_eq!(
            cal.add_working_days(d("2020-01-23"), 1),
            Ok(d("2020-02-03"))
        );
    }

    #[test]
    fn year_without_data_is_an_error_naming_it() {
        let cal = shipped();
        assert_eq!(
            cal.add_working_days(d("2026-12-25"), 10),
            Err(CalendarError::YearMissing(2027))
        );
    }

    #[test]
    fn cross_year_make_up_day_comes_from_the_next_years_notice() {
        // The 2012 notice made Saturday 2011-12-31 a working day; a make-up day may sit in the previous year.
        let mut cal = Calendar::default();
        let y2011 = "year = 2011\nnotice = \"n\"\nsource = \"s\"\ndays = []\n";
        let y2012 = "year = 2012\nnotice = \"n\"\nsource = \"s\"\ndays = [\n { date = 2011-12-31, off = false, name = \"元旦\" },\n { date = 2012-01-02, off = true, name = \"元旦\" },\n { date = 2012-01-03, off = true, name = \"元旦\" },\n]\n";
        cal.add_year(Path::new("2011.toml"), y2011).unwrap();
        cal.add_year(Path::new("2012.toml"), y2012).unwrap();
        assert_eq!(cal.is_workday(d("2011-12-31")), Ok(true));
        assert_eq!(
            cal.add_working_days(d("2011-12-30"), 1),
            Ok(d("2011-12-31"))
        );
        assert_eq!(
            cal.add_working_days(d("2011-12-31"), 1),
            Ok(d("2012-01-04"))
        );
    }

    #[test]
    fn make_up_day_on_a_weekday_is_refused_with_its_line() {
        let mut cal = Calendar::default();
        let text = "year = 2030\nnotice = \"n\"\nsource = \"s\"\ndays = [\n { date = 2030-01-02, off = false, name = \"x\" },\n]\n";
        let errs = cal.add_year(Path::new("2030.toml"), text).unwrap_err();
        assert_eq!(errs[0].line, 5, "{errs:?}");
    }

    proptest! {
        #[test]
        fn adding_working_days_lands_on_a_working_day_and_counts_back(offset in 0u64..2700, n in 1u32..60) {
            // Start dates up to 2026-05 with at most 60 working days stay within the shipped years.
            let cal = shipped();
            let start = d("2019-01-01") + Days::new(offset);
            let end = cal.add_working_days(start, n).expect("within the shipped calendar");
            prop_assert_eq!(cal.is_workday(end), Ok(true));
            prop_assert_eq!(cal.working_days_between(start, end), Ok(n));
        }
    }
}
