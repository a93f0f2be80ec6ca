//! The kinds of a case's history entries (`CaseEvent.kind`): [`EventKind`], one variant per
//! kind with its wire name. Every module that writes a history entry names its kind here, so
//! the list of what a case's history can say is in one place.
//!
//! Owns: the kinds and their wire names, nothing else. It never builds or stores an entry (the
//! modules that decide what happened do), and a wire name never changes: it is stored in
//! `case_events.kind`, sent to feed consumers and bound to by routing key on the events
//! exchange.

use std::fmt;
use std::str::FromStr;

use crate::proto::v1::{CaseEvent, CaseStatus};

/// Declares [`EventKind`] from one table of variants and wire names, so the variants,
/// [`EventKind::ALL`], [`EventKind::as_str`] and parsing cannot drift apart.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal,)+) => {
        /// What a history entry says happened: the one list of event kinds. Each is written as
        /// its wire name ([`EventKind::as_str`]) to the case's history (`case_events.kind`,
        /// `CaseEvent.kind` in `GetCase`), from there to the feed (`FeedEvent`) and to the events
        /// exchange (`<prefix>.events`, routing key `task.<what>` for `task-<what>`, `case.<kind>`
        /// for the others: [`crate::outbox::event_routing_key`]); the SLA alerts
        /// ([`EventKind::SLA_ALERTS`]) are counted from the history for the metrics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)+
        }

        impl EventKind {
            /// Every kind, in the order of a case's life.
            pub const ALL: &[EventKind] = &[$(EventKind::$variant,)+];

            /// The wire name, as stored and sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $wire,)+
                }
            }
        }
    };
}

event_kinds! {
    // Intake (crate::case): the case and its plan.
    /// The case was accepted at a hall's window; every case's first entry.
    Accepted = "accepted",
    /// Deadlines were counted Monday–Friday in a year without a loaded working-day calendar.
    DeadlineProvisional = "deadline-provisional",
    /// Intake normalised fields of the submission.
    Normalised = "normalised",
    /// A task waits for nothing and goes to its department.
    TaskReady = "task-ready",
    /// A task waits for other tasks to be approved.
    TaskWaiting = "task-waiting",
    /// A material is owed under 容缺, by a due date.
    ObligationRecorded = "obligation-recorded",

    // Dispatch (crate::store) and the department's results (crate::lifecycle).
    /// The relay handed the task to its department.
    TaskDispatched = "task-dispatched",
    /// The department's system took the task and gave its own case number.
    TaskAcceptedByDepartment = "task-accepted-by-department",
    /// A step of the department's procedure.
    TaskProgress = "task-progress",
    /// The department approved the task.
    TaskApproved = "task-approved",
    /// The department rejected the task.
    TaskRejected = "task-rejected",
    /// The department asks the applicant for materials.
    TaskSupplementRequired = "task-supplement-required",
    /// The department's system refused the task's data.
    TaskRefused = "task-refused",
    /// An approval released a task that waited for it.
    TaskReleased = "task-released",
    /// The case moved to in progress ([`EventKind::case_moved_to`]).
    CaseInProgress = "case-in-progress",
    /// The case moved to awaiting supplement.
    CaseAwaitingSupplement = "case-awaiting-supplement",
    /// The case moved to ready for delivery.
    CaseReadyForDelivery = "case-ready-for-delivery",
    /// The case was closed rejected.
    CaseClosedRejected = "case-closed-rejected",
    /// The case's results were delivered to the applicant.
    CaseDelivered = "case-delivered",

    // 补正 (crate::intake::supplement).
    /// A supplement was handed in at the window.
    SupplementReceived = "supplement-received",
    /// A task resumes with the materials its department asked for.
    TaskResumed = "task-resumed",
    /// A material owed under 容缺 was brought.
    ObligationFulfilled = "obligation-fulfilled",

    // The legal clock (crate::clock).
    /// A calendar was loaded for a year the deadlines had assumed: confirmed or moved.
    DeadlineConfirmed = "deadline-confirmed",
    /// The task's legal clock started.
    TaskClockStarted = "task-clock-started",
    /// A pause moved the task's promised deadline.
    TaskDeadlineMoved = "task-deadline-moved",
    /// Yellow warning: a share of the promised time has passed.
    TaskSlaWarning = "task-sla-warning",
    /// Red alert: the promised deadline passed undecided.
    TaskOverdue = "task-overdue",
    /// The decision reached the accepting window later than 1 working day.
    TaskDecisionLateToWindow = "task-decision-late-to-window",

    // Liveness (crate::stall).
    /// A silent task was published again.
    TaskRepublished = "task-republished",
    /// A task was published again as many times as `[stall] alert_after` says.
    TaskStalled = "task-stalled",

    // 好差评 and 整改 (crate::evaluation).
    /// The applicant evaluated the case (channel and overall level; never the comment).
    Evaluated = "evaluated",
    /// A 差评 opened a rectification (assignee and deadline).
    RectificationOpened = "rectification-opened",
    /// Yellow warning: a share of the rectification's time has passed while it is open.
    RectificationWarning = "rectification-warning",
    /// Red alert: the rectification's deadline passed while it is open.
    RectificationOverdue = "rectification-overdue",
    /// An operator closed the rectification with the assignee's response.
    RectificationClosed = "rectification-closed",

    // The 12345 hotline (crate::hotline).
    /// A hotline complaint opened a supervision (督办): work order, kind, assignee and reply
    /// deadline; never the citizen's words.
    SupervisionOpened = "supervision-opened",
    /// Yellow warning: a share of the supervision's reply time has passed unanswered.
    SupervisionWarning = "supervision-warning",
    /// Red alert: the supervision's reply deadline passed unanswered.
    SupervisionOverdue = "supervision-overdue",
    /// An operator replied to the complaint (the reply goes back to the hotline; it is not in
    /// the entry).
    SupervisionReplied = "supervision-replied",
}

impl EventKind {
    /// Appends a history entry of this kind about `task_id` (empty: the case) to `events`,
    /// numbered after the case's last entry `last_seq` and the ones already in `events`.
    pub fn push(
        self,
        events: &mut Vec<CaseEvent>,
        last_seq: i64,
        at: pbjson_types::Timestamp,
        task_id: &str,
        detail: String,
    ) {
        events.push(CaseEvent {
            seq: last_seq + events.len() as i64 + 1,
            at: Some(at),
            kind: self.as_str().into(),
            task_id: task_id.to_string(),
            detail,
        })
    }

    /// The SLA alerts, counted by department and item for the metrics.
    pub const SLA_ALERTS: [EventKind; 3] = [
        EventKind::TaskSlaWarning,
        EventKind::TaskOverdue,
        EventKind::TaskDecisionLateToWindow,
    ];

    /// The entry of a case moving to `status`. `None` for the statuses a case never moves to:
    /// it starts accepted (recorded as [`EventKind::Accepted`]) and never returns there.
    pub const fn case_moved_to(status: CaseStatus) -> Option<EventKind> {
        match status {
            CaseStatus::InProgress => Some(EventKind::CaseInProgress),
            CaseStatus::AwaitingSupplement => Some(EventKind::CaseAwaitingSupplement),
            CaseStatus::ReadyForDelivery => Some(EventKind::CaseReadyForDelivery),
            CaseStatus::ClosedRejected => Some(EventKind::CaseClosedRejected),
            CaseStatus::Delivered => Some(EventKind::CaseDelivered),
            CaseStatus::Unspecified | CaseStatus::Accepted => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wire name no [`EventKind`] has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?}")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_string()))
    }
}

impl TryFrom<&str> for EventKind {
    type Error = UnknownEventKind;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire names written before the enum, in its order. A name here never changes.
    const WIRE_NAMES: &[&str] = &[
        "accepted",
        "deadline-provisional",
        "normalised",
        "task-ready",
        "task-waiting",
        "obligation-recorded",
        "task-dispatched",
        "task-accepted-by-department",
        "task-progress",
        "task-approved",
        "task-rejected",
        "task-supplement-required",
        "task-refused",
        "task-released",
        "case-in-progress",
        "case-awaiting-supplement",
        "case-ready-for-delivery",
        "case-closed-rejected",
        "case-delivered",
        "supplement-received",
        "task-resumed",
        "obligation-fulfilled",
        "deadline-confirmed",
        "task-clock-started",
        "task-deadline-moved",
        "task-sla-warning",
        "task-overdue",
        "task-decision-late-to-window",
        "task-republished",
        "task-stalled",
        "evaluated",
        "rectification-opened",
        "rectification-warning",
        "rectification-overdue",
        "rectification-closed",
        "supervision-opened",
        "supervision-warning",
        "supervision-overdue",
        "supervision-replied",
    ];

    #[test]
    fn wire_names_are_the_ones_used_before() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, WIRE_NAMES);
    }

    #[test]
    fn every_kind_round_trips() {
        for &kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(EventKind::try_from(kind.as_str()), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn an_unknown_name_is_refused() {
        for name in [
            "",
            "task-unknown",
            "Task-Overdue",
            "task_overdue",
            "task.overdue",
        ] {
            assert_eq!(
                name.parse::<EventKind>(),
                Err(UnknownEventKind(name.to_string()))
            );
        }
    }

    /// The names `lifecycle::follow_tasks` derived from a status before (`case-` and the
    /// status's name in kebab case).
    #[test]
    fn a_case_moving_is_named_after_its_status() {
        for status in [
            CaseStatus::InProgress,
            CaseStatus::AwaitingSupplement,
            CaseStatus::ReadyForDelivery,
            CaseStatus::ClosedRejected,
            CaseStatus::Delivered,
        ] {
            let derived = format!(
                "case-{}",
                status
                    .as_str_name()
                    .trim_start_matches("CASE_STATUS_")
                    .to_lowercase()
                    .replace('_', "-")
            );
            assert_eq!(
                EventKind::case_moved_to(status).map(EventKind::as_str),
                Some(derived.as_str())
            );
        }
        assert_eq!(EventKind::case_moved_to(CaseStatus::Accepted), None);
        assert_eq!(EventKind::case_moved_to(CaseStatus::Unspecified), None);
    }

    #[test]
    fn routing_keys_stay_as_documented() {
        use crate::outbox::event_routing_key;
        assert_eq!(
            event_routing_key(EventKind::Accepted.as_str()),
            "case.accepted"
        );
        assert_eq!(
            event_routing_key(EventKind::RectificationOverdue.as_str()),
            "case.rectification-overdue"
        );
        assert_eq!(
            event_routing_key(EventKind::TaskDispatched.as_str()),
            "task.dispatched"
        );
        let keys: std::collections::BTreeSet<String> = EventKind::ALL
            .iter()
            .map(|k| event_routing_key(k.as_str()))
            .collect();
        assert_eq!(
            keys.len(),
            EventKind::ALL.len(),
            "two kinds share a routing key"
        );
    }
}
