//! Deadlines on instants in a hall's time zone: when a limit counted from an acceptance runs
//! out, with pauses, the share of it used, and the last day shown to the applicant. Pure
//! arithmetic on a [`Calendar`]; it never reads the clock.

use chrono::{DateTime, Days, FixedOffset, NaiveDate, NaiveTime, TimeDelta};

use super::{Calendar, CalendarError, Limit, Pause, Unit};

/// The calendar in a hall's time zone: deadline arithmetic on instants. Every instant may carry
/// any offset; days are the hall's days, and results are in the hall's offset.
#[derive(Debug, Clone, Copy)]
pub struct HallCalendar<'a> {
    calendar: &'a Calendar,
    zone: FixedOffset,
}

/// A clock's running time: from `start`, on every day or on working days only, outside `pauses`.
struct Run {
    start: DateTime<FixedOffset>,
    every_day: bool,
    /// Sorted, merged, non-empty.
    pauses: Vec<(DateTime<FixedOffset>, DateTime<FixedOffset>)>,
}

impl Calendar {
    /// This calendar in the hall's time zone (`+08:00` in China).
    pub fn in_zone(&self, zone: FixedOffset) -> HallCalendar<'_> {
        HallCalendar {
            calendar: self,
            zone,
        }
    }
}

impl HallCalendar<'_> {
    /// The hall's offset.
    pub fn zone(&self) -> FixedOffset {
        self.zone
    }

    /// The hall's date at `t`.
    pub fn date_of(&self, t: DateTime<FixedOffset>) -> NaiveDate {
        t.with_timezone(&self.zone).date_naive()
    }

    /// 24:00 of `date` in the hall: the instant a day limit ending on `date` runs out.
    pub fn close_of(&self, date: NaiveDate) -> DateTime<FixedOffset> {
        let midnight = (date + Days::new(1)).and_time(NaiveTime::MIN);
        DateTime::from_naive_utc_and_offset(
            midnight - TimeDelta::seconds(i64::from(self.zone.local_minus_utc())),
            self.zone,
        )
    }

    /// The hall's day a deadline falls on: the last day of a day limit (its deadline is 24:00
    /// of that day), the day an hour limit runs out.
    pub fn last_day(&self, deadline: DateTime<FixedOffset>) -> NaiveDate {
        self.date_of(deadline - TimeDelta::nanoseconds(1))
    }

    /// The instant `limit` runs out for a clock started at `accepted`: the first instant the
    /// clock is overdue at (`now >= deadline`). Day limits run out at 24:00 of their last day.
    pub fn deadline(
        &self,
        accepted: DateTime<FixedOffset>,
        limit: Limit,
    ) -> Result<DateTime<FixedOffset>, CalendarError> {
        self.deadline_with_pauses(accepted, limit, &[])
    }

    /// [`deadline`](Self::deadline) moved by the clock's pauses: by exactly the paused working
    /// days ([`paused_working_days`](Self::paused_working_days)) for a working-day limit, the
    /// paused calendar days for a calendar-day limit, the paused working-day time for an hour
    /// limit. A pause counts from the clock's start on (the day of acceptance is not paused);
    /// a pause that starts after the time has run out (a day limit: after its last day) does
    /// not revive it.
    pub fn deadline_with_pauses(
        &self,
        accepted: DateTime<FixedOffset>,
        limit: Limit,
        pauses: &[Pause],
    ) -> Result<DateTime<FixedOffset>, CalendarError> {
        if limit.unit == Unit::Hours {
            let run = self.run(accepted, limit.unit, pauses);
            return Ok(self.walk(&run, limit.running_time(), None)?.0);
        }
        let start = self.date_of(accepted);
        let last_day = |extra: u32| -> Result<NaiveDate, CalendarError> {
            let amount = limit.amount.saturating_add(extra);
            if limit.unit == Unit::WorkingDays {
                return self.calendar.add_working_days(start, amount);
            }
            let mut last = start + Days::new(u64::from(amount));
            // 民法典 第二百零三条: a last day that is a day off moves to the day after the days off.
            while amount > 0 && !self.calendar.is_workday(last)? {
                last = last + Days::new(1);
            }
            Ok(last)
        };
        let mut extra = 0u32;
        let mut last = last_day(0)?;
        for (from, to) in self.snapped(pauses) {
            let paused_on = self.date_of(from) - Days::new(1);
            if paused_on > last {
                break;
            }
            let (first, through) = (paused_on.max(start), self.last_day(to));
            extra += match limit.unit {
                Unit::WorkingDays => self.calendar.working_days_between(first, through)?,
                _ => u32::try_from((through - first).num_days()).unwrap_or(0),
            };
            last = last_day(extra)?;
        }
        Ok(self.close_of(last))
    }

    /// Working days paused: for each pause, the working days after the day it starts up to and
    /// including the day it ends (the same count as [`Calendar::working_days_between`]; the
    /// clock ran on the day the pause started, and starts again the day after it ends).
    /// Overlapping pauses count once.
    pub fn paused_working_days(&self, pauses: &[Pause]) -> Result<u32, CalendarError> {
        let mut days = 0;
        for (from, to) in self.snapped(pauses) {
            days += self
                .calendar
                .working_days_between(self.date_of(from) - Days::new(1), self.last_day(to))?;
        }
        Ok(days)
    }

    /// Whole working days that have ended after `from`'s day and by `to`: 0 on the day of
    /// `from`, N at the deadline of an N-working-day limit started at `from`.
    pub fn working_days_elapsed(
        &self,
        from: DateTime<FixedOffset>,
        to: DateTime<FixedOffset>,
    ) -> Result<u32, CalendarError> {
        let first = self.date_of(from);
        let Some(last_ended) = self.date_of(to).pred_opt() else {
            return Ok(0);
        };
        self.calendar.working_days_between(first, last_ended)
    }

    /// The share (0.0–1.0) of the clock's running time used by `now`, the deadline's being the
    /// whole. For a yellow warning; whether the clock is overdue is `now >= deadline`.
    pub fn share_elapsed(
        &self,
        accepted: DateTime<FixedOffset>,
        limit: Limit,
        pauses: &[Pause],
        now: DateTime<FixedOffset>,
    ) -> Result<f64, CalendarError> {
        let deadline = self.deadline_with_pauses(accepted, limit, pauses)?;
        if now >= deadline {
            return Ok(1.0);
        }
        let run = self.run(accepted, limit.unit, pauses);
        let (_, total) = self.walk(&run, TimeDelta::MAX, Some(deadline))?;
        if total <= TimeDelta::zero() {
            return Ok(0.0);
        }
        let (_, used) = self.walk(&run, TimeDelta::MAX, Some(now))?;
        Ok(millis(used) / millis(total))
    }

    /// The first instant at which `share` (0.0–1.0) of the clock's running time up to the
    /// deadline is used: when a yellow warning is due. `share` 1.0 gives the deadline.
    pub fn share_reached_at(
        &self,
        accepted: DateTime<FixedOffset>,
        limit: Limit,
        pauses: &[Pause],
        share: f64,
    ) -> Result<DateTime<FixedOffset>, CalendarError> {
        let deadline = self.deadline_with_pauses(accepted, limit, pauses)?;
        if share >= 1.0 {
            return Ok(deadline);
        }
        let run = self.run(accepted, limit.unit, pauses);
        let (_, total) = self.walk(&run, TimeDelta::MAX, Some(deadline))?;
        let need = TimeDelta::milliseconds((millis(total) * share.clamp(0.0, 1.0)).ceil() as i64);
        Ok(self.walk(&run, need, None)?.0)
    }

    /// A day limit's clock starts at the close of the day of acceptance (民法典 第二百零一条: the
    /// day a period starts is not counted) and pauses count whole days; an hour limit's clock
    /// starts at acceptance and pauses count to the second.
    fn run(&self, accepted: DateTime<FixedOffset>, unit: Unit, pauses: &[Pause]) -> Run {
        match unit {
            Unit::WorkingDays | Unit::CalendarDays => Run {
                start: self.close_of(self.date_of(accepted)),
                every_day: unit == Unit::CalendarDays,
                pauses: self.snapped(pauses),
            },
            Unit::Hours => Run {
                start: accepted,
                every_day: false,
                pauses: merged(pauses.iter().map(|p| (p.from, p.to))),
            },
        }
    }

    /// Pauses as whole days: from the close of the day each starts to the close of the day it ends.
    fn snapped(&self, pauses: &[Pause]) -> Vec<(DateTime<FixedOffset>, DateTime<FixedOffset>)> {
        merged(pauses.iter().map(|p| {
            (
                self.close_of(self.date_of(p.from)),
                self.close_of(self.date_of(p.to)),
            )
        }))
    }

    /// Walks the clock's running time from its start until `need` has run (answering the instant
    /// it has) or until `until` (answering `until`), with the running time walked.
    fn walk(
        &self,
        run: &Run,
        need: TimeDelta,
        until: Option<DateTime<FixedOffset>>,
    ) -> Result<(DateTime<FixedOffset>, TimeDelta), CalendarError> {
        let mut ran = TimeDelta::zero();
        let mut t = run.start;
        if need <= ran {
            return Ok((t, ran));
        }
        let mut pauses = run.pauses.iter().peekable();
        loop {
            if let Some(u) = until
                && t >= u
            {
                return Ok((u, ran));
            }
            let date = self.date_of(t);
            let day_end = self.close_of(date);
            let end = until.map_or(day_end, |u| u.min(day_end));
            if run.every_day || self.calendar.is_workday(date)? {
                let mut cur = t;
                while cur < end {
                    while pauses.next_if(|p| p.1 <= cur).is_some() {}
                    let free_end = match pauses.peek() {
                        Some(p) if p.0 <= cur => {
                            cur = p.1.min(end);
                            continue;
                        }
                        Some(p) => p.0.min(end),
                        None => end,
                    };
                    let free = free_end - cur;
                    if ran + free >= need {
                        return Ok((cur + (need - ran), need));
                    }
                    ran += free;
                    cur = free_end;
                }
            }
            t = end;
        }
    }
}

fn millis(t: TimeDelta) -> f64 {
    t.num_milliseconds() as f64
}

/// Non-empty intervals, sorted and merged.
fn merged(
    intervals: impl Iterator<Item = (DateTime<FixedOffset>, DateTime<FixedOffset>)>,
) -> Vec<(DateTime<FixedOffset>, DateTime<FixedOffset>)> {
    let mut all: Vec<_> = intervals.filter(|(a, b)| a < b).collect();
    all.sort();
    let mut out: Vec<(DateTime<FixedOffset>, DateTime<FixedOffset>)> =
        Vec::with_capacity(all.len());
    for (a, b) in all {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}
