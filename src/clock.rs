//! The legal clock of each task and its supervision (the SLA sweeper). The state machines
//! record the clock's facts on the task — when it started (the case's acceptance, or the
//! task's release), its pauses (补正, 特别程序), when the department decided and when the
//! decision reached the window — and mark the task's row. The sweeper derives the rest with
//! the working-day calendar ([`crate::calendar`]): the promised and legal deadlines extended by the
//! pauses, the yellow warning once a share of the promised time has passed, the red alert at
//! the promised deadline, and whether the decision reached the window within 1 working day.
//! Each alert is a history entry (hence a status event and a feed entry), raised exactly once:
//! the flags live in the case record, edited under the case's lock, so several gateway
//! replicas sweeping at once, or a restart, raise nothing twice.
//!
//! The sweeper also raises the alerts of open rectifications (整改, [`crate::evaluation`]),
//! the same way.
//!
//! Time comes from [`Clocks::now`], the system clock in production; a test may run the whole
//! gateway on a clock of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use tracing::{debug, info, warn};

use crate::calendar::LiveCalendar;
use crate::calendar::{Limit, Pause, years_list};
use crate::event::EventKind;
use crate::proto::v1::{Case, CaseEvent, Task};
use crate::store::{CaseChange, ClockRow, Store, StoreError};

/// Where the legal clock's time comes from.
pub type Now = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_now() -> Now {
    Arc::new(Utc::now)
}

/// The calendar, the hall's zone, the warning share and the time source.
#[derive(Clone)]
pub struct Clocks {
    calendar: LiveCalendar,
    zone: FixedOffset,
    warn_share: f64,
    now: Now,
    /// 好差评's rules, for the rectifications' deadlines ([`crate::evaluation`]).
    evaluation: Arc<crate::evaluation::Rules>,
}

impl Clocks {
    pub fn new(
        calendar: impl Into<LiveCalendar>,
        zone: FixedOffset,
        warn_share: f64,
        now: Now,
    ) -> Result<Clocks, String> {
        if !(warn_share > 0.0 && warn_share < 1.0) {
            return Err(format!(
                "[sla] warn_share = {warn_share}: give a share of the promised time between 0 and 1, e.g. 0.8"
            ));
        }
        Ok(Clocks {
            calendar: calendar.into(),
            zone,
            warn_share,
            now,
            evaluation: Arc::default(),
        })
    }

    /// These clocks with 好差评's rules (the defaults otherwise).
    pub fn with_evaluation(mut self, rules: Arc<crate::evaluation::Rules>) -> Clocks {
        self.evaluation = rules;
        self
    }

    /// 好差评's rules.
    pub fn evaluation(&self) -> &Arc<crate::evaluation::Rules> {
        &self.evaluation
    }

    /// The legal clock's present.
    pub fn now(&self) -> DateTime<Utc> {
        (self.now)()
    }

    /// The calendar in use (reloaded at run time, [`crate::calendar`]).
    pub fn calendar(&self) -> &LiveCalendar {
        &self.calendar
    }

    /// The hall's time zone.
    pub fn zone(&self) -> FixedOffset {
        self.zone
    }

    /// The alerts of a task whose deadlines are counted: a decision that reached the window
    /// late, or the yellow warning and the red alert of an open task, each once; and when the
    /// sweeper must look at it again.
    fn alerts(
        &self,
        calendar: &crate::calendar::Calendar,
        task: &mut Task,
        row: &mut ClockRow,
        due: &Due,
        now: DateTime<Utc>,
        push: &mut dyn FnMut(EventKind, String),
    ) {
        let (zone, name, paused) = (self.zone, &due.name, due.paused);
        let now_here = now.with_timezone(&zone);
        if let Some(decided) = task.decided_at.as_ref().map(|t| self.instant(t)) {
            row.decided_ms = Some(decided.timestamp_millis());
            let recorded = task
                .decision_recorded_at
                .as_ref()
                .map_or(decided, |t| self.instant(t));
            if let Ok(window_due) = calendar
                .reckon(|c| c.in_zone(zone).deadline(decided, Limit::working_days(1)))
                .map(|r| r.value)
                && recorded >= window_due
                && !task.decision_late_to_window
            {
                task.decision_late_to_window = true;
                push(
                    EventKind::TaskDecisionLateToWindow,
                    format!(
                        "{name}: decided {}, reached the window {} — later than 1 working day",
                        decided.format("%Y-%m-%d %H:%M"),
                        recorded.with_timezone(&zone).format("%Y-%m-%d %H:%M")
                    ),
                );
            }
            return;
        }
        if paused {
            row.due_ms = None;
            return;
        }
        if now_here >= due.promised && !task.sla_overdue {
            task.sla_overdue = true;
            task.sla_warned = true;
            push(
                EventKind::TaskOverdue,
                format!(
                    "{name}: red alert, the promised deadline {} has passed (legal limit {})",
                    due.promised_day, due.legal_day
                ),
            );
        } else if now_here >= due.warn_at && !task.sla_warned {
            task.sla_warned = true;
            push(
                EventKind::TaskSlaWarning,
                format!(
                    "{name}: yellow warning, {:.0}% of the promised time has passed (due {})",
                    self.warn_share * 100.0,
                    due.promised_day
                ),
            );
        }
        row.next_check_ms = if !task.sla_warned {
            Some(due.warn_at.timestamp_millis())
        } else if !task.sla_overdue {
            Some(due.promised.timestamp_millis())
        } else {
            None
        };
        if row.provisional {
            // Looked at hourly while provisional, so a notice loaded while a reload's mark was
            // missed (a store error, a replica down) is still confirmed within the hour.
            let hourly = (now + chrono::Duration::hours(1)).timestamp_millis();
            row.next_check_ms = Some(row.next_check_ms.map_or(hourly, |t| t.min(hourly)));
        }
    }

    /// What a task's row keeps when its deadlines are left as recorded, looked at again at
    /// `next_check`.
    fn recorded_row(&self, task: &Task, next_check: DateTime<Utc>) -> ClockRow {
        let ms = |t: &Option<pbjson_types::Timestamp>| {
            t.as_ref().map(|t| self.instant(t).timestamp_millis())
        };
        ClockRow {
            task_id: task.task_id.clone(),
            next_check_ms: Some(next_check.timestamp_millis()),
            due_ms: ms(&task.promised_due_at),
            decided_ms: ms(&task.decided_at),
            provisional: !task.provisional_years.is_empty(),
        }
    }

    /// The time source, for the parts that stamp the clock's facts (relay, results).
    pub fn now_source(&self) -> Now {
        self.now.clone()
    }

    fn instant(&self, t: &pbjson_types::Timestamp) -> DateTime<FixedOffset> {
        DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
            .unwrap_or_default()
            .with_timezone(&self.zone)
    }

    /// Derives the clock of task `task_id` of `case` at `now`: its deadlines, the alerts that
    /// came due (as history entries after `last_seq`), and what its row keeps. `None`: no such
    /// task.
    pub fn refresh(
        &self,
        case: &mut Case,
        task_id: &str,
        last_seq: i64,
        now: DateTime<Utc>,
    ) -> Option<(Vec<CaseEvent>, ClockRow)> {
        let at = timestamp(now);
        let zone = self.zone;
        // One calendar for the whole refresh, even if it is reloaded meanwhile.
        let calendar = self.calendar.current();
        let hall = calendar.in_zone(zone);
        let index = case.tasks.iter().position(|t| t.task_id == task_id)?;
        let mut row = ClockRow {
            task_id: task_id.to_string(),
            ..Default::default()
        };
        let mut events = Vec::new();
        let mut push =
            |kind: EventKind, detail: String| kind.push(&mut events, last_seq, at, task_id, detail);
        let task = &case.tasks[index];
        // A record from before the clock existed: a task that waited for nothing ran from the
        // acceptance.
        let fallback = (task.depends_on.is_empty()
            && task.status != crate::proto::v1::TaskStatus::Waiting as i32)
            .then_some(case.accepted_at)
            .flatten();
        let Some(started) = task
            .clock_started_at
            .or(fallback)
            .as_ref()
            .map(|t| self.instant(t))
        else {
            return Some((events, row));
        };
        let task = &mut case.tasks[index];
        task.clock_started_at = Some(timestamp(started.with_timezone(&Utc)));
        let task = &case.tasks[index];
        let now_here = now.with_timezone(&zone);
        let paused = task.pauses.iter().any(|p| p.to.is_none());
        let pauses: Vec<Pause> = task
            .pauses
            .iter()
            .filter_map(|p| {
                Some(Pause {
                    from: self.instant(p.from.as_ref()?),
                    to: p.to.as_ref().map_or(now_here, |t| self.instant(t)),
                })
            })
            .collect();
        let promised = Limit::working_days(task.promised_working_days.max(0) as u32);
        let legal = Limit::working_days(task.legal_working_days.max(0) as u32);
        // Counted on the calendar; a year without its notice is counted Monday–Friday and named
        // (the deadlines are then provisional, see `crate::calendar::Calendar::reckon`).
        let derived = calendar.reckon(|c| {
            let hall = c.in_zone(zone);
            let p = hall.deadline_with_pauses(started, promised, &pauses)?;
            let l = hall.deadline_with_pauses(started, legal, &pauses)?;
            let w = hall.share_reached_at(started, promised, &pauses, self.warn_share)?;
            Ok((p, l, w))
        });
        // Each pause's working days, for the record; a pause reaching a missing year does not
        // make the deadlines provisional by itself (one after the deadline does not move it).
        let paused_days: Vec<u32> = pauses
            .iter()
            .map(|pause| {
                calendar
                    .reckon(|c| c.in_zone(zone).paused_working_days(&[*pause]))
                    .map_or(0, |r| r.value)
            })
            .collect();
        let derived = derived.map(|r| (r.value, r.assumed));
        let ((promised_due, legal_due, warn_at), assumed) = match derived {
            Ok(d) => d,
            Err(e) => {
                // Years beyond what may be assumed (a limit of years): said once per hour in
                // the log; what was derived before stays.
                warn!(task = %task_id, error = %e, "cannot derive the task's deadlines");
                let row = self.recorded_row(task, now + chrono::Duration::hours(1));
                return Some((events, row));
            }
        };
        let task: &mut Task = &mut case.tasks[index];
        let was: BTreeSet<i32> = task.provisional_years.iter().copied().collect();
        if is_behind(task, &assumed, &was) {
            // Another replica counted this task on a year this one has not loaded yet: its
            // calendar is behind. Keep what is recorded; look again once this one has reloaded.
            warn!(task = %task_id, assumed = %years_list(&assumed), "this gateway's calendar is behind the task's record (a year file missing here); leaving the task's deadlines");
            let row = self.recorded_row(task, now + chrono::Duration::minutes(1));
            return Some((events, row));
        }
        if paused && task.decided_at.is_none() && task.promised_due_at.is_some() {
            // Standing still: the deadlines are final only when it resumes (its row is marked
            // then), no alert comes meanwhile, and the wait on the applicant does not count
            // against the department (no deadline on the row).
            row.provisional = !was.is_empty();
            return Some((events, row));
        }
        for (p, days) in task.pauses.iter_mut().zip(&paused_days) {
            if p.to.is_some() {
                p.working_days = *days as i32;
            }
        }
        let promised_day = hall.last_day(promised_due);
        let legal_day = hall.last_day(legal_due);
        let before = task
            .promised_due_at
            .as_ref()
            .map(|t| hall.last_day(self.instant(t)));
        let (old_promised, old_legal) = (
            std::mem::take(&mut task.promised_deadline),
            std::mem::take(&mut task.legal_deadline),
        );
        task.promised_due_at = Some(timestamp(promised_due.with_timezone(&Utc)));
        task.legal_due_at = Some(timestamp(legal_due.with_timezone(&Utc)));
        task.promised_deadline = promised_day.to_string();
        task.legal_deadline = legal_day.to_string();
        task.provisional_years = assumed.iter().copied().collect();
        // The promised deadline rests on the assumed years its own dates reach.
        task.promised_deadline_provisional = assumed.iter().any(|y| *y <= reach(promised_day));
        let name = format!("{} ({})", task.item_code, task.department);
        let recount = Recount {
            was,
            before,
            old_promised,
            old_legal,
            promised_days: promised.amount,
            promised_day,
            legal_day,
        };
        deadline_entries(&calendar, task, &name, &assumed, &recount, &mut push);
        row.due_ms = Some(promised_due.timestamp_millis());
        row.provisional = !assumed.is_empty();
        let due = Due {
            name,
            paused,
            promised: promised_due,
            warn_at,
            promised_day,
            legal_day,
        };
        self.alerts(&calendar, task, &mut row, &due, now, &mut push);
        Some((events, row))
    }
}

/// What a recount of a task's deadlines compares: the years assumed before, the promised last
/// day and the deadlines recorded before, and the new ones.
struct Recount {
    was: BTreeSet<i32>,
    before: Option<chrono::NaiveDate>,
    old_promised: String,
    old_legal: String,
    promised_days: u32,
    promised_day: chrono::NaiveDate,
    legal_day: chrono::NaiveDate,
}

/// The history of a recount: the clock started, a deadline moved by a pause, or provisional
/// deadlines confirmed once their year's notice is loaded (said once, whichever replica gets
/// there first).
fn deadline_entries(
    calendar: &crate::calendar::Calendar,
    task: &Task,
    name: &str,
    assumed: &BTreeSet<i32>,
    r: &Recount,
    push: &mut dyn FnMut(EventKind, String),
) {
    let (promised_day, legal_day) = (r.promised_day, r.legal_day);
    let provisional_note = if assumed.is_empty() {
        String::new()
    } else {
        format!(
            " (provisional: {} counted Monday–Friday until its holiday notice is loaded)",
            years_list(assumed)
        )
    };
    // Fewer years assumed than before, and their notices loaded now: confirmed. Said once,
    // whichever replica gets here first (the case is locked), with what it confirmed or
    // moved. (A released task that no longer reaches a year its estimate did confirms
    // nothing: that year is still not loaded.)
    let confirmed: BTreeSet<i32> = r
        .was
        .difference(assumed)
        .copied()
        .filter(|y| calendar.has_year(*y))
        .collect();
    if !confirmed.is_empty() {
        let change = |old: &str, new: &str| {
            if old == new {
                format!("{new} confirmed")
            } else {
                format!("{old} → {new}")
            }
        };
        push(
            EventKind::DeadlineConfirmed,
            format!(
                "{name}: the {} calendar is loaded; promised deadline {}, legal deadline {}{provisional_note}",
                years_list(&confirmed),
                change(&r.old_promised, &task.promised_deadline),
                change(&r.old_legal, &task.legal_deadline),
            ),
        );
    }
    match r.before {
        None => push(
            EventKind::TaskClockStarted,
            format!(
                "{name}: promised by {promised_day}, legal limit {legal_day} ({} working days promised){provisional_note}",
                r.promised_days
            ),
        ),
        // Apart from a calendar being loaded, only a pause moves a deadline.
        Some(old) if old != promised_day && confirmed.is_empty() => {
            let moved = calendar
                .reckon(|c| c.working_days_between(old.min(promised_day), old.max(promised_day)))
                .map_or(0, |r| r.value);
            let paused_days: i32 = task.pauses.iter().map(|p| p.working_days).sum();
            push(
                EventKind::TaskDeadlineMoved,
                format!(
                    "{name}: promised deadline moved by {moved} working days to {promised_day} (paused {paused_days} working days in all){provisional_note}"
                ),
            );
        }
        Some(_) => {}
    }
}

/// What a refresh counted for a task, for its alerts.
struct Due {
    /// The task as history names it: item (department).
    name: String,
    /// Its clock stands still (a pause running).
    paused: bool,
    promised: DateTime<FixedOffset>,
    warn_at: DateTime<FixedOffset>,
    promised_day: chrono::NaiveDate,
    legal_day: chrono::NaiveDate,
}

/// Whether the calendar in use is behind the one the task's deadlines were counted on: it
/// assumes a year the record did not, within the reach of the record's deadlines (so the record
/// was counted with that year's notice loaded). A year assumed beyond the record's reach is new
/// (a pause carried the deadline further), not a calendar behind.
fn is_behind(task: &Task, assumed: &BTreeSet<i32>, was: &BTreeSet<i32>) -> bool {
    let Ok(legal) = task.legal_deadline.parse::<chrono::NaiveDate>() else {
        return false;
    };
    assumed
        .iter()
        .any(|y| !was.contains(y) && *y <= reach(legal))
}

/// The last year whose notice counting up to `date` needs: its own, and from December 25 the
/// next one too (`crate::sla`).
fn reach(date: chrono::NaiveDate) -> i32 {
    use chrono::Datelike;
    date.year() + i32::from((date.month(), date.day()) >= (12, 25))
}

fn timestamp(t: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Looks once at every task whose clock changed or whose warning or deadline came; returns how
/// many history entries it wrote.
pub async fn sweep(store: &Store, clocks: &Clocks) -> Result<usize, StoreError> {
    let now = clocks.now();
    let due = store.clock_candidates(now.timestamp_millis(), 512).await?;
    let mut by_case: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (case_number, task_id) in due {
        by_case.entry(case_number).or_default().push(task_id);
    }
    let mut written = 0;
    for (case_number, task_ids) in by_case {
        let clocks2 = clocks.clone();
        let edited = store
            .edit_case(&case_number, now, move |case, last_seq, _at| {
                let mut change = CaseChange::default();
                for id in &task_ids {
                    let seq = last_seq + change.events.len() as i64;
                    match clocks2.refresh(case, id, seq, now) {
                        Some((events, row)) => {
                            change.events.extend(events);
                            change.clocks.push(row);
                        }
                        // A row the record does not know: nothing to derive, not dirty again.
                        None => change.clocks.push(ClockRow {
                            task_id: id.clone(),
                            ..Default::default()
                        }),
                    }
                }
                // The case is promised by its last task, provisionally when that task's is.
                if let Some(last) = case.tasks.iter().map(|t| t.promised_deadline.clone()).max() {
                    case.promised_deadline_provisional = case
                        .tasks
                        .iter()
                        .any(|t| t.promised_deadline == last && t.promised_deadline_provisional);
                    case.promised_deadline = last;
                }
                let n = change.events.len();
                (Some(change), n)
            })
            .await;
        match edited {
            Ok(Some((_, n))) => written += n,
            Ok(None) => {}
            // One case the sweeper cannot edit does not hold the others back.
            Err(e) => {
                warn!(case = %case_number, error = %e, "SLA sweep cannot edit a case; trying again next sweep")
            }
        }
    }
    written += sweep_rectifications(store, clocks, now).await?;
    Ok(written)
}

/// The rectifications (整改) whose yellow warning or deadline came, or whose provisional
/// deadline is to be looked at again: each alert raised once, a deadline confirmed once
/// ([`crate::evaluation::refresh`]), under the case's lock like the tasks' alerts.
async fn sweep_rectifications(
    store: &Store,
    clocks: &Clocks,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut written = 0;
    for case_number in store
        .rectification_candidates(now.timestamp_millis(), 512)
        .await?
    {
        let clocks = clocks.clone();
        let edited = store
            .edit_case(&case_number, now, move |case, last_seq, _at| {
                let events = crate::evaluation::refresh(&clocks, case, last_seq, now);
                let n = events.len();
                (
                    Some(CaseChange {
                        events,
                        ..Default::default()
                    }),
                    n,
                )
            })
            .await;
        match edited {
            Ok(Some((_, n))) => written += n,
            Ok(None) => {}
            Err(e) => {
                warn!(case = %case_number, error = %e, "SLA sweep cannot edit a case's rectification; trying again next sweep")
            }
        }
    }
    Ok(written)
}

/// Sweeps every `every` until the process ends; a store error is logged and tried again.
pub async fn run(store: Store, clocks: Clocks, every: Duration) {
    info!(every_secs = every.as_secs_f64(), "SLA sweeper running");
    loop {
        match sweep(&store, &clocks).await {
            Ok(0) => crate::supervise::progressed(),
            Ok(n) => {
                crate::supervise::progressed();
                debug!(entries = n, "SLA sweep recorded clock changes and alerts")
            }
            Err(e) => warn!(error = %e, "SLA sweep failed; trying again"),
        }
        if crate::supervise::idle(tokio::time::sleep(every))
            .await
            .is_none()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::ClockPause;

    fn clocks() -> Clocks {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let calendar =
            Arc::new(crate::calendar::Calendar::load(&root.join("config/calendar")).unwrap());
        let zone = FixedOffset::east_opt(8 * 3600).unwrap();
        Clocks::new(calendar, zone, 0.8, system_now()).unwrap()
    }

    /// `2019-10-21 10:00` in the hall (UTC+8), as UTC.
    fn hall(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_str(&format!("{s} +0800"), "%Y-%m-%d %H:%M %z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// kai-canguan's SP-JY: 10 working days promised, 20 legal, accepted 2019-10-21 10:00.
    fn case() -> Case {
        Case {
            case_number: "C".into(),
            tasks: vec![Task {
                task_id: "C-01".into(),
                item_code: "SP-JY".into(),
                department: "scjg".into(),
                promised_working_days: 10,
                legal_working_days: 20,
                clock_started_at: Some(timestamp(hall("2019-10-21 10:00"))),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn kinds(events: &[CaseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn the_clock_starts_warns_once_and_alerts_once() {
        let c = clocks();
        let mut case = case();
        let (events, row) = c
            .refresh(&mut case, "C-01", 3, hall("2019-10-21 10:01"))
            .unwrap();
        assert_eq!(kinds(&events), ["task-clock-started"]);
        assert_eq!(events[0].seq, 4);
        assert_eq!(case.tasks[0].promised_deadline, "2019-11-04");
        assert_eq!(case.tasks[0].legal_deadline, "2019-11-18");
        let due = hall("2019-11-05 00:00").timestamp_millis();
        assert_eq!(row.due_ms, Some(due));
        let warn_at = row.next_check_ms.unwrap();
        assert!(warn_at < due && warn_at > hall("2019-10-21 10:01").timestamp_millis());

        // Not yet: nothing. At the warning: yellow, once.
        let just_before = DateTime::from_timestamp_millis(warn_at - 1).unwrap();
        let (events, _) = c.refresh(&mut case, "C-01", 4, just_before).unwrap();
        assert!(events.is_empty(), "{events:?}");
        let at_warning = DateTime::from_timestamp_millis(warn_at).unwrap();
        let (events, row) = c.refresh(&mut case, "C-01", 4, at_warning).unwrap();
        assert_eq!(kinds(&events), ["task-sla-warning"]);
        assert_eq!(row.next_check_ms, Some(due), "next: the deadline");
        let (events, _) = c.refresh(&mut case, "C-01", 5, at_warning).unwrap();
        assert!(events.is_empty(), "a warning is raised once");

        // At 24:00 of the last day: red, once; then nothing more to watch.
        let (events, row) = c
            .refresh(&mut case, "C-01", 5, hall("2019-11-05 00:00"))
            .unwrap();
        assert_eq!(kinds(&events), ["task-overdue"]);
        assert_eq!(row.next_check_ms, None);
        let (events, _) = c
            .refresh(&mut case, "C-01", 6, hall("2019-11-06 09:00"))
            .unwrap();
        assert!(events.is_empty(), "an alert is raised once");
    }

    #[test]
    fn a_supplement_pause_moves_the_deadline_by_the_paused_working_days() {
        let c = clocks();
        let mut case = case();
        c.refresh(&mut case, "C-01", 0, hall("2019-10-21 10:01"))
            .unwrap();
        // Waiting on the applicant from Wednesday 23rd to Friday 25th: two working days (24, 25).
        case.tasks[0].pauses.push(ClockPause {
            reason: crate::lifecycle::SUPPLEMENT.into(),
            from: Some(timestamp(hall("2019-10-23 15:00"))),
            to: None,
            working_days: 0,
        });
        let (events, row) = c
            .refresh(&mut case, "C-01", 1, hall("2019-10-24 09:00"))
            .unwrap();
        assert!(
            events.is_empty(),
            "no move announced while paused: {events:?}"
        );
        assert_eq!(row.next_check_ms, None, "no alert while paused");
        case.tasks[0].pauses[0].to = Some(timestamp(hall("2019-10-25 11:00")));
        let (events, row) = c
            .refresh(&mut case, "C-01", 1, hall("2019-10-25 11:00"))
            .unwrap();
        assert_eq!(kinds(&events), ["task-deadline-moved"]);
        assert!(
            events[0].detail.contains("by 2 working days"),
            "{}",
            events[0].detail
        );
        assert_eq!(case.tasks[0].promised_deadline, "2019-11-06");
        assert_eq!(case.tasks[0].pauses[0].working_days, 2);
        assert_eq!(
            row.due_ms,
            Some(hall("2019-11-07 00:00").timestamp_millis())
        );
    }

    #[test]
    fn a_decision_that_reaches_the_window_after_a_working_day_is_flagged_once() {
        let c = clocks();
        let mut case = case();
        c.refresh(&mut case, "C-01", 0, hall("2019-10-21 10:01"))
            .unwrap();
        // Decided Friday 25th 10:00; within a working day means by Monday 28th 24:00.
        case.tasks[0].decided_at = Some(timestamp(hall("2019-10-25 10:00")));
        case.tasks[0].decision_recorded_at = Some(timestamp(hall("2019-10-28 16:00")));
        let (events, row) = c
            .refresh(&mut case, "C-01", 1, hall("2019-10-28 16:00"))
            .unwrap();
        assert!(events.is_empty(), "in time: {events:?}");
        assert_eq!(
            row.decided_ms,
            Some(hall("2019-10-25 10:00").timestamp_millis())
        );
        assert_eq!(row.next_check_ms, None, "decided: nothing more to watch");
        case.tasks[0].decision_recorded_at = Some(timestamp(hall("2019-10-29 09:00")));
        let (events, _) = c
            .refresh(&mut case, "C-01", 1, hall("2019-10-29 09:00"))
            .unwrap();
        assert_eq!(kinds(&events), ["task-decision-late-to-window"]);
        let (events, _) = c
            .refresh(&mut case, "C-01", 2, hall("2019-10-29 09:00"))
            .unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn a_warning_share_outside_zero_to_one_is_refused() {
        let c = clocks();
        let e = Clocks::new(c.calendar.clone(), c.zone, 1.5, system_now())
            .err()
            .unwrap();
        assert!(e.contains("warn_share"), "{e}");
    }
}
