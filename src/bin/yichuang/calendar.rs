//! `yichuang calendar`: working-day questions answered on the calendar directory, a year file
//! checked as the gateway would load it, and a holiday-cn file turned into our TOML.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use yichuang::calendar::Calendar;

use crate::Failure;

#[derive(Subcommand)]
pub enum CalendarCommand {
    /// When a time limit counted from START runs out (the day START falls on is not counted).
    /// Day limits print their last day (the limit runs out at 24:00 of it); hour limits print
    /// the instant.
    Add {
        /// A date (2019-09-30) or an instant (2019-09-27T10:00, in the hall's offset, or
        /// 2019-09-27T02:00:00Z).
        #[arg(value_parser = args::parse_when)]
        start: args::When,
        /// Working days (3 or 3wd), calendar days (10d) or hours (24h; they elapse on working
        /// days only).
        #[arg(value_parser = args::parse_limit)]
        limit: yichuang::calendar::Limit,
        /// A pause (挂起) FROM/TO, dates or instants; it moves the deadline by the working days
        /// after FROM's day up to and including TO's day (hour limits: by the time paused).
        /// Repeatable.
        #[arg(long = "pause", value_parser = args::parse_pause)]
        pauses: Vec<(args::When, args::When)>,
        /// The hall's UTC offset: its days are the ones counted.
        #[arg(long, default_value = "+08:00", value_parser = args::parse_offset)]
        utc_offset: chrono::FixedOffset,
    },
    /// Whether DATE is a working day.
    IsWorkday { date: chrono::NaiveDate },
    /// Checks one year file (e.g. a new config/calendar/2027.toml) as the gateway would load it,
    /// against the other years of the calendar directory, without starting anything. Prints
    /// every problem with its file and line; exit code 1 when there is one.
    Check { file: PathBuf },
    /// Turns a holiday-cn year file (JSON: {"year", "papers", "days": [{"name", "date",
    /// "isOffDay"}]}) into the project's TOML, with the notice cited; prints it (or writes
    /// --out). Check it against the notice, then drop it into the calendar directory: the
    /// gateway loads it without a restart.
    Import {
        file: PathBuf,
        /// The notice's title with its document number (default: the usual title,
        /// 国务院办公厅关于YYYY年部分节假日安排的通知).
        #[arg(long)]
        notice: Option<String>,
        /// Write the TOML here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The working days after FROM up to and including TO (the inverse of `add`).
    Between {
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    },
}

/// The `calendar` command's arguments: dates, instants, limits and pauses.
mod args {
    use chrono::{DateTime, FixedOffset};
    use yichuang::calendar::{Limit, LimitError};

    /// A date or an instant on the command line.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum When {
        Date(chrono::NaiveDate),
        Local(chrono::NaiveDateTime),
        Instant(DateTime<FixedOffset>),
    }

    impl When {
        /// The instant, a date's 00:00 and local times taken in the hall's offset.
        pub(crate) fn at(self, zone: FixedOffset) -> DateTime<FixedOffset> {
            let local = match self {
                When::Instant(t) => return t.with_timezone(&zone),
                When::Date(d) => d.and_time(chrono::NaiveTime::MIN),
                When::Local(t) => t,
            };
            DateTime::from_naive_utc_and_offset(
                local - chrono::TimeDelta::seconds(i64::from(zone.local_minus_utc())),
                zone,
            )
        }
    }

    pub(crate) fn parse_when(text: &str) -> Result<When, String> {
        if let Ok(d) = text.parse() {
            return Ok(When::Date(d));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(When::Instant(t));
        }
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            .map(When::Local)
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a date or an instant (2019-09-30, 2019-09-27T10:00, 2019-09-27T10:00:00+08:00)"
                )
            })
    }

    pub(crate) fn parse_limit(text: &str) -> Result<Limit, String> {
        match text.parse::<u32>() {
            Ok(days) => Ok(Limit::working_days(days)),
            Err(_) => text.parse().map_err(|e: LimitError| e.to_string()),
        }
    }

    pub(crate) fn parse_pause(text: &str) -> Result<(When, When), String> {
        let (from, to) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a pause (FROM/TO)"))?;
        Ok((parse_when(from)?, parse_when(to)?))
    }

    pub(crate) fn parse_offset(text: &str) -> Result<FixedOffset, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not a UTC offset (+08:00)"))
    }
}

/// Runs a `calendar` command on the calendar directory `dir`.
pub fn run(dir: &Path, command: CalendarCommand) -> Result<u8, Failure> {
    match command {
        CalendarCommand::Check { file } => check(dir, &file),
        CalendarCommand::Import { file, notice, out } => {
            import(&file, notice.as_deref(), out.as_deref())
        }
        command => answer(dir, command),
    }
}

/// `calendar import FILE`: holiday-cn JSON to our TOML, printed or written to `out`.
fn import(file: &Path, notice: Option<&str>, out: Option<&Path>) -> Result<u8, Failure> {
    let json = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let toml = yichuang::holidays::from_holiday_cn(&json, file, notice)
        .map_err(|e| Failure(1, anyhow::anyhow!("{e}")))?;
    match out {
        Some(out) => {
            std::fs::write(out, toml)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
            eprintln!(
                "wrote {}: check it against the notice, then put it in the calendar directory",
                out.display()
            );
        }
        None => print!("{toml}"),
    }
    Ok(0)
}

/// The questions answered on the calendar: `add`, `between`, `is-workday`.
fn answer(dir: &Path, command: CalendarCommand) -> Result<u8, Failure> {
    let calendar = Calendar::load(dir).map_err(|problems| {
        anyhow::anyhow!(
            "{}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    match command {
        CalendarCommand::Add {
            start,
            limit,
            pauses,
            utc_offset,
        } => {
            let hall = calendar.in_zone(utc_offset);
            use yichuang::calendar::{Pause, Unit};
            if limit.unit == Unit::Hours && matches!(start, args::When::Date(_)) {
                return Err(Failure(
                    2,
                    anyhow::anyhow!(
                        "an hour limit needs a start time, like {}T09:00",
                        hall.date_of(start.at(utc_offset))
                    ),
                ));
            }
            let pauses: Vec<Pause> = pauses
                .iter()
                .map(|(from, to)| Pause {
                    from: from.at(utc_offset),
                    to: to.at(utc_offset),
                })
                .collect();
            let due = hall.deadline_with_pauses(start.at(utc_offset), limit, &pauses)?;
            match limit.unit {
                Unit::Hours => println!("{}", due.to_rfc3339()),
                Unit::WorkingDays | Unit::CalendarDays => {
                    println!("{}", hall.last_day(due))
                }
            }
        }
        CalendarCommand::Between { from, to } => {
            println!("{}", calendar.working_days_between(from, to)?)
        }
        CalendarCommand::IsWorkday { date } => {
            let workday = calendar.is_workday(date)?;
            println!(
                "{date} {}",
                if workday {
                    "is a working day"
                } else {
                    "is not a working day"
                }
            );
            return Ok(if workday { 0 } else { 3 });
        }
        CalendarCommand::Check { .. } | CalendarCommand::Import { .. } => {
            unreachable!("answered by run")
        }
    }
    Ok(0)
}

/// `calendar check FILE`: the file as the gateway would load it, beside the directory's other
/// years (a day two notices arrange differently is caught).
fn check(dir: &Path, file: &Path) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure(1, anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    // The directory's file of the same name is the one being replaced (a corrected file checked
    // from elsewhere), so it is left out too.
    let same = |p: &Path| {
        p.file_name() == file.file_name()
            || matches!((p.canonicalize(), file.canonicalize()), (Ok(a), Ok(b)) if a == b)
    };
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && !same(p))
                .collect()
        })
        .unwrap_or_default();
    others.sort();
    let mut calendar = Calendar::default();
    let mut problems = Vec::new();
    for path in &others {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                if let Err(mut more) = calendar.add_year(path, &t) {
                    problems.append(&mut more);
                }
            }
            Err(e) => problems.push(yichuang::config::ConfigProblem {
                file: path.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if let Err(mut more) = calendar.add_year(file, &text) {
        problems.append(&mut more);
    }
    if problems.is_empty() {
        let years: Vec<String> = calendar.years().map(|y| y.to_string()).collect();
        println!(
            "{}: OK (checked beside {}: {})",
            file.display(),
            dir.display(),
            years.join(", ")
        );
        Ok(0)
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        Err(Failure(
            1,
            anyhow::anyhow!("{} problem(s); the file would be refused", problems.len()),
        ))
    }
}
