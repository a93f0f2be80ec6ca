//! The legal clock of each task and its supervision (the SLA sweeper). The state machines
//! record the clock's facts on the task — when it started (the case's acceptance, or the
//! task's release), its pauses (补正, 特别程序), when the department decided and when the
//! decision reached the window — and mark the task's row. The sweeper derives the rest with
//! the working-day calendar ([`crate::sla`]): the promised and legal deadlines extended by the
//! pauses, the yellow warning once a share of the promised time has passed, the red alert at
//! the promised deadline, and whether the decision reached the window within 1 working day.
//! Each alert is a history entry (hence a status event and a feed entry), raised exactly once:
//! the flags live in the case record, edited under the case's lock, so several gateway
//! replicas sweeping at once, or a restart, raise nothing twice.
//!
//! Time comes from [`Clocks::now`], the system clock in production; a test may run the whole
//! gateway on a clock of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use tracing::{debug, info, warn};

use crate::proto::v1::{Case, CaseEvent, Task};
use crate::sla::{Calendar, Limit, Pause};
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
    calendar: Arc<Calendar>,
    zone: FixedOffset,
    warn_share: f64,
    now: Now,
}

impl Clocks {
    pub fn new(
        calendar: Arc<Calendar>,
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
            calendar,
            zone,
            warn_share,
            now,
        })
    }

    /// The legal clock's present.
    pub fn now(&self) -> DateTime<Utc> {
        (self.now)()
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
        let hall = self.calendar.in_zone(zone);
        let index = case.tasks.iter().position(|t| t.task_id == task_id)?;
        let mut row = ClockRow {
            task_id: task_id.to_string(),
            ..Default::default()
        };
        let mut events = Vec::new();
        let mut push = |kind: &str, detail: String| {
            events.push(CaseEvent {
                seq: last_seq + events.len() as i64 + 1,
                at: Some(at),
                kind: kind.into(),
                task_id: task_id.to_string(),
                detail,
            })
        };
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
        let derived = hall
            .deadline_with_pauses(started, promised, &pauses)
            .and_then(|p| Ok((p, hall.deadline_with_pauses(started, legal, &pauses)?)))
            .and_then(|(p, l)| {
                Ok((
                    p,
                    l,
                    hall.share_reached_at(started, promised, &pauses, self.warn_share)?,
                ))
            });
        let (promised_due, legal_due, warn_at) = match derived {
            Ok(d) => d,
            Err(e) => {
                // A year without calendar data: said once per hour in the log, never guessed;
                // what was derived before stays.
                warn!(task = %task_id, error = %e, "cannot derive the task's deadlines");
                row.next_check_ms = Some((now + chrono::Duration::hours(1)).timestamp_millis());
                row.due_ms = task
                    .promised_due_at
                    .as_ref()
                    .map(|t| self.instant(t).timestamp_millis());
                row.decided_ms = task
                    .decided_at
                    .as_ref()
                    .map(|t| self.instant(t).timestamp_millis());
                return Some((events, row));
            }
        };
        let task: &mut Task = &mut case.tasks[index];
        if paused && task.decided_at.is_none() && task.promised_due_at.is_some() {
            // Standing still: the deadlines are final only when it resumes (its row is marked
            // then), no alert comes meanwhile, and the wait on the applicant does not count
            // against the department (no deadline on the row).
            return Some((events, row));
        }
        for (p, pause) in task.pauses.iter_mut().zip(&pauses) {
            if p.to.is_some() {
                p.working_days = hall.paused_working_days(&[*pause]).unwrap_or(0) as i32;
            }
        }
        let promised_day = hall.last_day(promised_due);
        let legal_day = hall.last_day(legal_due);
        let before = task
            .promised_due_at
            .as_ref()
            .map(|t| hall.last_day(self.instant(t)));
        task.promised_due_at = Some(timestamp(promised_due.with_timezone(&Utc)));
        task.legal_due_at = Some(timestamp(legal_due.with_timezone(&Utc)));
        task.promised_deadline = promised_day.to_string();
        task.legal_deadline = legal_day.to_string();
        let name = format!("{} ({})", task.item_code, task.department);
        match before {
            None => push(
                "task-clock-started",
                format!(
                    "{name}: promised by {promised_day}, legal limit {legal_day} ({} working days promised)",
                    promised.amount
                ),
            ),
            // Only a pause moves a deadline.
            Some(old) if old != promised_day => {
                let moved = self
                    .calendar
                    .working_days_between(old.min(promised_day), old.max(promised_day))
                    .unwrap_or(0);
                let paused_days: i32 = task.pauses.iter().map(|p| p.working_days).sum();
                push(
                    "task-deadline-moved",
                    format!(
                        "{name}: promised deadline moved by {moved} working days to {promised_day} (paused {paused_days} working days in all)"
                    ),
                );
            }
            Some(_) => {}
        }
        row.due_ms = Some(promised_due.timestamp_millis());

        if let Some(decided) = task.decided_at.as_ref().map(|t| self.instant(t)) {
            row.decided_ms = Some(decided.timestamp_millis());
            let recorded = task
                .decision_recorded_at
                .as_ref()
                .map_or(decided, |t| self.instant(t));
            if let Ok(window_due) = hall.deadline(decided, Limit::working_days(1))
                && recorded >= window_due
                && !task.decision_late_to_window
            {
                task.decision_late_to_window = true;
                push(
                    "task-decision-late-to-window",
                    format!(
                        "{name}: decided {}, reached the window {} — later than 1 working day",
                        decided.format("%Y-%m-%d %H:%M"),
                        recorded.with_timezone(&zone).format("%Y-%m-%d %H:%M")
                    ),
                );
            }
            return Some((events, row));
        }
        if paused {
            row.due_ms = None;
            return Some((events, row));
        }
        if now_here >= promised_due && !task.sla_overdue {
            task.sla_overdue = true;
            task.sla_warned = true;
            push(
                "task-overdue",
                format!(
                    "{name}: red alert, the promised deadline {promised_day} has passed (legal limit {legal_day})"
                ),
            );
        } else if now_here >= warn_at && !task.sla_warned {
            task.sla_warned = true;
            push(
                "task-sla-warning",
                format!(
                    "{name}: yellow warning, {:.0}% of the promised time has passed (due {promised_day})",
                    self.warn_share * 100.0
                ),
            );
        }
        row.next_check_ms = if !task.sla_warned {
            Some(warn_at.timestamp_millis())
        } else if !task.sla_overdue {
            Some(promised_due.timestamp_millis())
        } else {
            None
        };
        Some((events, row))
    }
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
            .edit_case_at(&case_number, now, move |case, last_seq, _at| {
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
                // The case is promised by its last task.
                if let Some(last) = case.tasks.iter().map(|t| t.promised_deadline.clone()).max() {
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
    Ok(written)
}

/// Sweeps every `every` until the process ends; a store error is logged and tried again.
pub async fn run(store: Store, clocks: Clocks, every: Duration) {
    info!(every_secs = every.as_secs_f64(), "SLA sweeper running");
    loop {
        match sweep(&store, &clocks).await {
            Ok(0) => {}
            Ok(n) => debug!(entries = n, "SLA sweep recorded clock changes and alerts"),
            Err(e) => warn!(error = %e, "SLA sweep failed; trying again"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::ClockPause;

    fn clocks() -> Clocks {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let calendar = Arc::new(Calendar::load(&root.join("config/calendar")).unwrap());
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
