//! Time limits (法定/承诺时限: working days, calendar days, hours) as they are written in the
//! acceptance list and on the command line, and pauses (挂起) of a clock. Parsing and display
//! only: counting them is [`super::HallCalendar`]'s.

use chrono::{DateTime, FixedOffset, TimeDelta};
use serde::{Deserialize, Serialize};

/// The unit of a time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// 工作日: counted on the working-day calendar.
    WorkingDays,
    /// 自然日: every day counts; a last day that is not a working day moves to the next working
    /// day (民法典 第二百零三条).
    CalendarDays,
    /// 小时: hours that elapse on working days only.
    Hours,
}

/// A time limit (时限): an amount of a unit, written `10wd` (working days), `10d` (calendar days)
/// or `24h` (hours); `10个工作日`, `10工作日`, `10日`, `10天`, `10自然日` and `24小时` are read too.
/// Serialised as its canonical text (`10wd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Limit {
    pub amount: u32,
    pub unit: Unit,
}

/// A time limit that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time limit (write 10wd for working days, 10d for calendar days, 24h for hours)"
)]
pub struct LimitError(String);

impl Limit {
    pub const fn working_days(amount: u32) -> Limit {
        Limit {
            amount,
            unit: Unit::WorkingDays,
        }
    }

    pub const fn calendar_days(amount: u32) -> Limit {
        Limit {
            amount,
            unit: Unit::CalendarDays,
        }
    }

    pub const fn hours(amount: u32) -> Limit {
        Limit {
            amount,
            unit: Unit::Hours,
        }
    }

    /// The clock's running time the limit allows: 24 hours per day of a day limit.
    pub(super) fn running_time(self) -> TimeDelta {
        let hours = match self.unit {
            Unit::WorkingDays | Unit::CalendarDays => 24 * i64::from(self.amount),
            Unit::Hours => i64::from(self.amount),
        };
        TimeDelta::hours(hours)
    }
}

impl std::str::FromStr for Limit {
    type Err = LimitError;

    fn from_str(text: &str) -> Result<Limit, LimitError> {
        let t = text.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (amount, unit) = t.split_at(digits);
        let unit = match unit.trim() {
            "wd" | "个工作日" | "工作日" => Unit::WorkingDays,
            "d" | "日" | "天" | "自然日" => Unit::CalendarDays,
            "h" | "小时" | "个小时" => Unit::Hours,
            _ => return Err(LimitError(text.to_string())),
        };
        let amount = amount.parse().map_err(|_| LimitError(text.to_string()))?;
        Ok(Limit { amount, unit })
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.unit {
            Unit::WorkingDays => "wd",
            Unit::CalendarDays => "d",
            Unit::Hours => "h",
        };
        write!(f, "{}{unit}", self.amount)
    }
}

impl TryFrom<String> for Limit {
    type Error = LimitError;

    fn try_from(text: String) -> Result<Limit, LimitError> {
        text.parse()
    }
}

impl From<Limit> for String {
    fn from(limit: Limit) -> String {
        limit.to_string()
    }
}

/// A pause of a clock (挂起: 补正, 特别程序): from `from` until `to`. A pause still running is
/// passed with `to` = now, which gives the deadline if the clock resumed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub from: DateTime<FixedOffset>,
    pub to: DateTime<FixedOffset>,
}
