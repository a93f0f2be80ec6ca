//! The legal clock: the State Council's working-day calendar (holidays and 调休 make-up working
//! days), loaded from one file per year, and deadline arithmetic on it.
//!
//! Convention (行政许可法 第八十二条: the day a period starts is not counted): a time limit of N
//! working days counted from an acceptance on day D ends at the close of the N-th working day
//! after D. N = 0 (即办件) ends on D itself. A deadline that reaches into a year without
//! calendar data — or into the last week of a year whose next year's notice is missing, since
//! that notice may arrange those days — is an error naming the year, never a guess.

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

/// From this day of December on, a date also needs the next year's notice: that notice may make
/// it a make-up working day or a day off (2011-12-31 by the 2012 notice, 2018-12-29..31 by the
/// 2019 notice).
const NEXT_NOTICE_REACHES_BACK_TO: (u32, u32) = (12, 25);

/// The working-day calendar.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    /// Years whose notice has been loaded.
    years: BTreeSet<i32>,
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

    /// Whether `date` is a working day. Needs its year's notice, and from December 25 on the
    /// next year's as well (it may arrange the day); without them the answer is
    /// [`CalendarError::YearMissing`], never a guess from the day of the week.
    pub fn is_workday(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        if !self.years.contains(&date.year()) {
            return Err(CalendarError::YearMissing(date.year()));
        }
        if (date.month(), date.day()) >= NEXT_NOTICE_REACHES_BACK_TO
            && !self.years.contains(&(date.year() + 1))
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

    fn year_file(year: i32, days: &str) -> String {
        format!("year = {year}\nnotice = \"n\"\nsource = \"s\"\ndays = [\n{days}]\n")
    }

    fn refusal(year: i32, days: &str) -> Vec<String> {
        let mut cal = Calendar::default();
        let errs = cal
            .add_year(Path::new(&format!("{year}.toml")), &year_file(year, days))
            .unwrap_err();
        assert_eq!(cal.years().count(), 0, "a refused file adds nothing");
        assert!(cal.overrides.is_empty(), "a refused file adds no day");
        errs.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn loader_refuses_dates_outside_the_files_year() {
        let errs = refusal(2030, " { date = 2031-01-01, off = true, name = \"x\" },\n");
        assert!(
            errs[0].contains("2031-01-01 is outside year 2030"),
            "{errs:?}"
        );
        let errs = refusal(2030, " { date = 2029-12-24, off = true, name = \"x\" },\n");
        assert!(
            errs[0].contains("2029-12-24 is outside year 2030"),
            "{errs:?}"
        );
        // The last week of the year before is the notice's to arrange.
        let mut cal = Calendar::default();
        cal.add_year(
            Path::new("2030.toml"),
            &year_file(
                2030,
                " { date = 2029-12-29, off = false, name = \"元旦\" },\n",
            ),
        )
        .unwrap();
    }

    #[test]
    fn loader_refuses_duplicate_and_unsorted_days() {
        let errs = refusal(
            2030,
            " { date = 2030-01-01, off = true, name = \"x\" },\n { date = 2030-01-01, off = true, name = \"x\" },\n",
        );
        assert_eq!(errs, ["2030-01-01 is listed twice"]);
        let errs = refusal(
            2030,
            " { date = 2030-02-04, off = true, name = \"x\" },\n { date = 2030-01-01, off = true, name = \"x\" },\n",
        );
        assert_eq!(
            errs,
            ["2030-01-01 is out of date order (after 2030-02-04): keep days sorted"]
        );
    }

    #[test]
    fn loader_refuses_a_year_without_its_notice_cited() {
        let mut cal = Calendar::default();
        let text = "year = 2030\nnotice = \"\"\nsource = \" \"\ndays = []\n";
        let errs = cal.add_year(Path::new("2030.toml"), text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!((errs[0].line, errs[1].line), (2, 3));
        assert!(errs[0].message.starts_with("notice is empty"), "{errs:?}");
        let mut cal = Calendar::default();
        let text = "year = 2030\nnotice = \"n\"\nsource = \"s\"\ndays = []\n";
        let errs = cal.add_year(Path::new("2031.toml"), text).unwrap_err();
        assert_eq!(
            errs[0].message,
            "file declares year 2030 but is named 2031.toml"
        );
    }

    #[test]
    fn loader_refuses_a_day_two_notices_arrange_differently() {
        let mut cal = Calendar::default();
        cal.add_year(
            Path::new("2029.toml"),
            &year_file(2029, " { date = 2029-12-29, off = true, name = \"x\" },\n"),
        )
        .unwrap();
        let errs = cal
            .add_year(
                Path::new("2030.toml"),
                &year_file(
                    2030,
                    " { date = 2029-12-29, off = false, name = \"元旦\" },\n",
                ),
            )
            .unwrap_err();
        assert_eq!(
            errs[0].message,
            "2029-12-29 is a make-up working day here but a day off in 2029.toml"
        );
        let errs = cal
            .add_year(Path::new("2029.toml"), &year_file(2029, ""))
            .unwrap_err();
        assert_eq!(errs[0].message, "year 2029 is defined twice");
    }

    #[test]
    fn every_shipped_year_cites_its_notice_and_has_holidays_and_make_up_days() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar");
        for year in 2019..=2026 {
            let text = std::fs::read_to_string(dir.join(format!("{year}.toml"))).unwrap();
            let file: YearFile = toml::from_str(&text).unwrap();
            assert!(
                file.notice
                    .get_ref()
                    .contains(&format!("关于{year}年部分节假日安排的通知")),
                "{year}: {}",
                file.notice.get_ref()
            );
            assert!(file.source.get_ref().starts_with("https://www.gov.cn/"));
            let offs = file.days.iter().filter(|d| d.get_ref().off).count();
            let make_ups = file.days.len() - offs;
            assert!(
                offs >= 20 && make_ups >= 4,
                "{year}: {offs} off, {make_ups} make-up"
            );
        }
    }

    #[test]
    fn late_december_needs_the_next_years_notice() {
        let cal = shipped();
        assert_eq!(cal.is_workday(d("2026-12-24")), Ok(true));
        assert_eq!(
            cal.is_workday(d("2026-12-25")),
            Err(CalendarError::YearMissing(2027)),
            "the 2027 notice may still arrange 2026-12-25..31"
        );
        assert_eq!(
            cal.is_workday(d("2018-12-28")),
            Err(CalendarError::YearMissing(2018))
        );
    }

    #[test]
    fn shipped_cross_year_make_up_day_2018_12_29_comes_from_the_2019_notice() {
        // 2019.toml arranges 2018-12-29 (Sat) as a working day and 12-30, 12-31 (Mon) off;
        // 2018 itself is not shipped, so it takes a 2018 file to ask about the rest of 2018.
        let mut cal = Calendar::default();
        cal.add_year(Path::new("2018.toml"), &year_file(2018, ""))
            .unwrap();
        assert_eq!(
            cal.is_workday(d("2018-12-29")),
            Err(CalendarError::YearMissing(2019)),
            "without the 2019 notice, 2018-12-29 is not guessed to be a Saturday off"
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar/2019.toml");
        cal.add_year(&path, &std::fs::read_to_string(&path).unwrap())
            .unwrap();
        assert_eq!(cal.is_workday(d("2018-12-29")), Ok(true));
        assert_eq!(cal.is_workday(d("2018-12-31")), Ok(false), "a Monday off");
        assert_eq!(
            cal.add_working_days(d("2018-12-28"), 1),
            Ok(d("2018-12-29"))
        );
        assert_eq!(
            cal.add_working_days(d("2018-12-28"), 2),
            Ok(d("2019-01-02"))
        );
        assert_eq!(
            cal.working_days_between(d("2018-12-27"), d("2019-01-02")),
            Ok(3)
        );
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
