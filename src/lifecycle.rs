//! The state machines of a task and of its case, after dispatch: what a department's result
//! does to a task (accepted with its own case number → steps → approved / rejected / supplement
//! required, or refused by its system), how a case aggregates its tasks, and which waiting
//! tasks an approval releases. Pure functions over the case record; the store applies them in
//! one transaction and appends the history entries they return.
//!
//! Results may arrive twice or out of order: a result that would move a task backwards, or
//! repeat what is recorded, changes nothing and returns `None`.

use crate::event::EventKind;
use crate::proto::v1::{Case, CaseEvent, CaseStatus, ClockPause, ResultDocument, Task, TaskStatus};

/// What a department said about a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskUpdate {
    /// Its system took the task and gave its own case number.
    Accepted { department_case_number: String },
    /// A step of its procedure.
    Progress {
        department_case_number: String,
        step: String,
    },
    Approved {
        department_case_number: String,
        documents: Vec<ResultDocument>,
    },
    Rejected {
        department_case_number: String,
        reasons: Vec<String>,
    },
    Supplement {
        department_case_number: String,
        materials: Vec<String>,
    },
    /// Its system refused the task's data.
    Refused { reasons: Vec<String> },
}

/// What applying an update changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The task's new status.
    pub status: TaskStatus,
    /// Waiting tasks that became READY.
    pub released: Vec<String>,
    /// History entries to append, numbered after the case's last.
    pub events: Vec<CaseEvent>,
}

/// What an edit of a case changed (see [`crate::store::Store::edit_case`]).
#[derive(Debug, Clone, Default)]
pub struct CaseChange {
    /// History entries to append, numbered after the case's last.
    pub events: Vec<CaseEvent>,
    /// Tasks whose status moved, with their new status.
    pub tasks: Vec<(String, crate::proto::v1::TaskStatus)>,
    /// Tasks whose clock the sweeper derived (see [`crate::clock`]).
    pub clocks: Vec<ClockRow>,
    /// Replies to the 12345 hotline queued with the edit, (order number, body): written in the
    /// same transaction as the closing they report, so neither is ever without the other
    /// ([`crate::hotline`]).
    pub hotline_replies: Vec<(String, String)>,
}

/// What the SLA sweeper keeps on a task's row.
#[derive(Debug, Clone, Default)]
pub struct ClockRow {
    pub task_id: String,
    /// When the sweeper must look at the task again (its warning or deadline); `None`: never.
    pub next_check_ms: Option<i64>,
    /// The promised deadline.
    pub due_ms: Option<i64>,
    /// When the department decided.
    pub decided_ms: Option<i64>,
    /// The deadlines rest on a year without a loaded calendar (see [`crate::calendar`]).
    pub provisional: bool,
}

impl Applied {
    /// The edit of the case this result makes: the task's new status, the released tasks set
    /// READY, the history entries.
    pub fn change(&self, task_id: &str) -> CaseChange {
        let mut tasks = vec![(task_id.to_string(), self.status)];
        tasks.extend(
            self.released
                .iter()
                .map(|id| (id.clone(), TaskStatus::Ready)),
        );
        CaseChange {
            events: self.events.clone(),
            tasks,
            clocks: Vec::new(),
            hotline_replies: Vec::new(),
        }
    }
}

/// Order of the states a result can move a task through; a task never moves back.
fn rank(status: i32) -> u8 {
    match TaskStatus::try_from(status).unwrap_or(TaskStatus::Unspecified) {
        TaskStatus::Unspecified | TaskStatus::Waiting => 0,
        TaskStatus::Ready | TaskStatus::Dispatched => 1,
        TaskStatus::AcceptedByDepartment => 2,
        TaskStatus::InReview => 3,
        // The department may ask for materials, then go on reviewing after the supplement.
        TaskStatus::SupplementRequired | TaskStatus::Refused => 3,
        TaskStatus::Approved | TaskStatus::Rejected => 9,
    }
}

fn is_final(status: i32) -> bool {
    rank(status) == 9
}

/// Applies `update` from `department` (`None`: not checked) to task `task_id` of `case`;
/// `round` is the supplement round the department answered about, `decided_at` when the
/// department says it decided (`at`, the gateway's clock, otherwise). The task's clock facts
/// follow: a supplement request or a special procedure (特别程序) pauses it, a decision ends
/// every pause and is stamped.
/// `None`: unknown task, a result from another department than the task's, a result about an
/// earlier supplement round, or nothing to change.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    case: &mut Case,
    task_id: &str,
    department: Option<&str>,
    round: i32,
    update: TaskUpdate,
    last_seq: i64,
    decided_at: Option<pbjson_types::Timestamp>,
    at: pbjson_types::Timestamp,
) -> Option<Applied> {
    let task = case.tasks.iter_mut().find(|t| t.task_id == task_id)?;
    if department.is_some_and(|d| d != task.department) {
        return None;
    }
    if task.status == TaskStatus::Waiting as i32 || is_final(task.status) {
        return None;
    }
    // A result about the task before its last supplement: the department has since been given
    // the materials, and only what it says after them counts.
    if round < task.supplement_round {
        return None;
    }
    let result = TaskResult {
        task_id,
        name: format!("{} ({})", task.item_code, task.department),
        before: task.status,
        last_seq,
        decided_at,
        at,
    };
    let mut events = Vec::new();
    let status = result.update(task, update, &mut events)?;
    task.status = status as i32;

    // An approval releases the tasks that waited only for approved tasks.
    let released = if status == TaskStatus::Approved {
        release_waiting(case, &mut events, last_seq, at)
    } else {
        Vec::new()
    };

    follow_tasks(case, &mut events, last_seq, at);
    Some(Applied {
        status,
        released,
        events,
    })
}

/// One result being applied to a task: what its entries and checks need.
struct TaskResult<'a> {
    task_id: &'a str,
    /// The task as history names it: item (department).
    name: String,
    /// The task's status before the result.
    before: i32,
    last_seq: i64,
    decided_at: Option<pbjson_types::Timestamp>,
    at: pbjson_types::Timestamp,
}

impl TaskResult<'_> {
    fn entry(&self, kind: EventKind, detail: String, events: &mut Vec<CaseEvent>) {
        kind.push(events, self.last_seq, self.at, self.task_id, detail)
    }

    /// Several gateway replicas consume results side by side, so a task's step or decision
    /// can be applied before its ACCEPTED: a department that answers with its case number has
    /// taken the task, and that is recorded first (the late ACCEPTED then changes nothing). A
    /// task resumed after a supplement keeps the case number it was accepted with.
    fn accepted_first(&self, n: &str, task: &crate::proto::v1::Task, events: &mut Vec<CaseEvent>) {
        if rank(self.before) < rank(TaskStatus::AcceptedByDepartment as i32)
            && task.department_case_number.is_empty()
            && !n.is_empty()
        {
            self.entry(
                EventKind::TaskAcceptedByDepartment,
                format!("{} accepted as {n}", self.name),
                events,
            );
        }
    }

    /// The task's new status after `update`, with its entries; `None`: nothing to change.
    fn update(
        &self,
        task: &mut crate::proto::v1::Task,
        update: TaskUpdate,
        events: &mut Vec<CaseEvent>,
    ) -> Option<TaskStatus> {
        let (name, at, decided_at) = (&self.name, self.at, self.decided_at);
        Some(match update {
            TaskUpdate::Accepted {
                department_case_number,
            } => {
                if rank(self.before) >= rank(TaskStatus::AcceptedByDepartment as i32) {
                    return None;
                }
                number(&department_case_number, task);
                self.entry(
                    EventKind::TaskAcceptedByDepartment,
                    format!("{name} accepted as {department_case_number}"),
                    events,
                );
                TaskStatus::AcceptedByDepartment
            }
            TaskUpdate::Progress {
                department_case_number,
                step,
            } => {
                // A step never takes a task back from waiting on the applicant (a late or repeated
                // progress message); after a decision it is stale.
                let working = matches!(
                    TaskStatus::try_from(self.before),
                    Ok(TaskStatus::Ready
                        | TaskStatus::Dispatched
                        | TaskStatus::AcceptedByDepartment
                        | TaskStatus::InReview)
                );
                if task.step == step || !working {
                    return None;
                }
                self.accepted_first(&department_case_number, task, events);
                number(&department_case_number, task);
                task.approval_stage_code = stage_code(&step).to_string();
                if step.contains(SPECIAL_PROCEDURE) {
                    open_pause(task, SPECIAL_PROCEDURE, at);
                } else {
                    close_pauses(task, Some(SPECIAL_PROCEDURE), at);
                }
                task.step = step.clone();
                self.entry(EventKind::TaskProgress, format!("{name}: {step}"), events);
                TaskStatus::InReview
            }
            TaskUpdate::Approved {
                department_case_number,
                documents,
            } => {
                self.accepted_first(&department_case_number, task, events);
                number(&department_case_number, task);
                let names: Vec<String> = documents
                    .iter()
                    .map(|d| format!("{} {}", d.name, d.number))
                    .collect();
                task.conclusion_code = if documents.is_empty() { "6" } else { "0" }.into();
                decided(task, decided_at, at);
                task.results = documents;
                self.entry(
                    EventKind::TaskApproved,
                    format!("{name} approved: {}", names.join(", ")),
                    events,
                );
                TaskStatus::Approved
            }
            TaskUpdate::Rejected {
                department_case_number,
                reasons,
            } => {
                self.accepted_first(&department_case_number, task, events);
                number(&department_case_number, task);
                self.entry(
                    EventKind::TaskRejected,
                    format!("{name} rejected: {}", reasons.join("; ")),
                    events,
                );
                task.reasons = reasons;
                task.conclusion_code = "1".into();
                decided(task, decided_at, at);
                TaskStatus::Rejected
            }
            TaskUpdate::Supplement {
                department_case_number,
                materials,
            } => {
                if self.before == TaskStatus::SupplementRequired as i32
                    && task.materials_requested == materials
                {
                    return None;
                }
                self.accepted_first(&department_case_number, task, events);
                number(&department_case_number, task);
                self.entry(
                    EventKind::TaskSupplementRequired,
                    format!("{name} asks for: {}", materials.join("、")),
                    events,
                );
                task.materials_requested = materials;
                open_pause(task, SUPPLEMENT, at);
                TaskStatus::SupplementRequired
            }
            TaskUpdate::Refused { reasons } => {
                if self.before == TaskStatus::Refused as i32 {
                    return None;
                }
                self.entry(
                    EventKind::TaskRefused,
                    format!(
                        "{name} refused by the department's system: {}",
                        reasons.join("; ")
                    ),
                    events,
                );
                task.reasons = reasons;
                TaskStatus::Refused
            }
        })
    }
}

/// Records the department's case number on the task, when it gave one.
fn number(n: &str, task: &mut crate::proto::v1::Task) {
    if !n.is_empty() {
        task.department_case_number = n.to_string();
    }
}

/// Sets READY the waiting tasks whose every prerequisite is approved, starting their legal
/// clocks, with a `task-released` entry each; their ids.
fn release_waiting(
    case: &mut Case,
    events: &mut Vec<CaseEvent>,
    last_seq: i64,
    at: pbjson_types::Timestamp,
) -> Vec<String> {
    let mut released = Vec::new();
    let approved: Vec<String> = case
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Approved as i32)
        .map(|t| t.task_id.clone())
        .collect();
    for t in case.tasks.iter_mut() {
        if t.status == TaskStatus::Waiting as i32
            && t.depends_on.iter().all(|d| approved.contains(d))
        {
            t.status = TaskStatus::Ready as i32;
            // Its legal clock runs from its release.
            t.clock_started_at = Some(at);
            released.push(t.task_id.clone());
            events.push(CaseEvent {
                seq: last_seq + events.len() as i64 + 1,
                at: Some(at),
                kind: EventKind::TaskReleased.as_str().into(),
                task_id: t.task_id.clone(),
                detail: format!(
                    "{} released to {} after {}",
                    t.item_code,
                    t.department,
                    t.depends_on.join(", ")
                ),
            });
        }
    }
    released
}

/// Reasons the legal clock stands still.
pub const SUPPLEMENT: &str = "补正";
pub const SPECIAL_PROCEDURE: &str = "特别程序";

/// Starts a pause of the task's clock for `reason`, unless one is open.
pub fn open_pause(task: &mut Task, reason: &str, at: pbjson_types::Timestamp) {
    if !task
        .pauses
        .iter()
        .any(|p| p.to.is_none() && p.reason == reason)
    {
        task.pauses.push(ClockPause {
            reason: reason.into(),
            from: Some(at),
            to: None,
            working_days: 0,
        });
    }
}

/// Ends the task's open pauses (of `reason`, or all).
pub fn close_pauses(task: &mut Task, reason: Option<&str>, at: pbjson_types::Timestamp) {
    for p in &mut task.pauses {
        if p.to.is_none() && reason.is_none_or(|r| r == p.reason) {
            p.to = Some(at);
        }
    }
}

/// Stamps the decision: when the department says it decided — kept within the task's clock
/// start and the moment the gateway learnt it, so a department clock that runs ahead or a
/// malformed time cannot move its on-time figures — and when it reached the window.
fn decided(
    task: &mut Task,
    decided_at: Option<pbjson_types::Timestamp>,
    at: pbjson_types::Timestamp,
) {
    close_pauses(task, None, at);
    let key = |t: &pbjson_types::Timestamp| (t.seconds, t.nanos);
    let mut when = decided_at
        .filter(|t| (0..1_000_000_000).contains(&t.nanos))
        .unwrap_or(at);
    if key(&when) > key(&at) {
        when = at;
    }
    if let Some(start) = task.clock_started_at
        && key(&when) < key(&start)
    {
        when = start;
    }
    task.decided_at = Some(when);
    task.decision_recorded_at = Some(at);
}

/// Moves the case to the status its tasks give it (see [`aggregate`]), with a history entry
/// when it changes, and keeps its national codes in step.
pub fn follow_tasks(
    case: &mut Case,
    events: &mut Vec<CaseEvent>,
    last_seq: i64,
    at: pbjson_types::Timestamp,
) {
    let aggregate = aggregate(case);
    if aggregate as i32 != case.status {
        case.status = aggregate as i32;
        // `aggregate` never gives unspecified, and accepted only to a case already accepted,
        // so every change has its entry.
        if let Some(kind) = EventKind::case_moved_to(aggregate) {
            let what = kind.as_str().trim_start_matches("case-").replace('-', " ");
            events.push(CaseEvent {
                seq: last_seq + events.len() as i64 + 1,
                at: Some(at),
                kind: kind.as_str().into(),
                task_id: String::new(),
                detail: format!("case {what}"),
            });
        }
    }
    case_codes(case);
}

/// 审批环节 SPHJDM of a department's step, by its name: `1` 承办, `2` 审核, `3` 批准 (the names
/// may carry more, as `审核中` or `科室审核`); empty for a step the table does not name.
pub fn stage_code(step: &str) -> &'static str {
    if step.contains("批准") || step.contains("审批") || step.contains("决定") {
        "3"
    } else if step.contains("审核") || step.contains("审查") {
        "2"
    } else if step.contains("承办") || step.contains("受理") {
        "1"
    } else {
        ""
    }
}

/// Keeps a case's national codes in step with its status: 受理状态 SLZTDM (`1` 受理, `3` 补齐补正
/// 材料 while it waits on the applicant) and 办结结果 BJJGDM once concluded (`0` 出证办结
/// delivered with documents, `6` 办结 delivered without, `1` 退回 closed rejected).
pub fn case_codes(case: &mut Case) {
    let status = CaseStatus::try_from(case.status).unwrap_or(CaseStatus::Unspecified);
    case.acceptance_status_code = if status == CaseStatus::AwaitingSupplement {
        3
    } else {
        1
    };
    case.conclusion_code = match status {
        CaseStatus::Delivered => {
            if case.tasks.iter().any(|t| !t.results.is_empty()) {
                "0"
            } else {
                "6"
            }
        }
        CaseStatus::ClosedRejected => "1",
        _ => "",
    }
    .into();
}

/// Why a case cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryRefused {
    #[error(
        "case is {0}; a case is delivered when it is ready for delivery (every task approved, or every task decided under the deliver-approved policy)"
    )]
    NotReady(String),
}

/// Whether the holder of resident ID `id_number` (half-width, as intake normalises the case's)
/// may collect the case's results: only the applicant, its legal representative or the agent
/// named on the case may.
pub fn may_collect(case: &Case, id_number: &str) -> bool {
    let clean = |v: &str| v.trim().to_ascii_uppercase();
    let id = clean(id_number);
    if id.is_empty() {
        return false;
    }
    let Some(s) = case.submission.as_ref() else {
        return false;
    };
    let applicant = s.applicant.as_ref();
    [
        applicant.map(|a| a.id_number.as_str()),
        applicant
            .and_then(|a| a.legal_representative.as_ref())
            .map(|p| p.id_number.as_str()),
        s.agent.as_ref().map(|a| a.id_number.as_str()),
    ]
    .into_iter()
    .flatten()
    .any(|entitled| !entitled.trim().is_empty() && clean(entitled) == id)
}

/// Records the delivery (出件) of a ready case; the case closes. `detail` says how (pickup by
/// whom, or mail with which tracking number), already masked.
pub fn deliver(
    case: &mut Case,
    detail: String,
    last_seq: i64,
    at: pbjson_types::Timestamp,
) -> Result<Vec<CaseEvent>, DeliveryRefused> {
    if case.status != CaseStatus::ReadyForDelivery as i32 {
        let status = CaseStatus::try_from(case.status)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("CASE_STATUS_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        return Err(DeliveryRefused::NotReady(status));
    }
    case.status = CaseStatus::Delivered as i32;
    case_codes(case);
    Ok(vec![CaseEvent {
        seq: last_seq + 1,
        at: Some(at),
        kind: EventKind::CaseDelivered.as_str().into(),
        task_id: String::new(),
        detail,
    }])
}

/// The case's status from its tasks: all approved → ready for delivery; any task waiting on
/// the applicant → awaiting supplement; a rejection with nothing left that could still be
/// decided → ready for delivery of what was approved when the case's policy says so and
/// something was, closed rejected otherwise; otherwise in progress.
pub fn aggregate(case: &Case) -> CaseStatus {
    let has = |s: TaskStatus| case.tasks.iter().any(|t| t.status == s as i32);
    if case.status == CaseStatus::Delivered as i32 {
        return CaseStatus::Delivered;
    }
    if !case.tasks.is_empty()
        && case
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Approved as i32)
    {
        return CaseStatus::ReadyForDelivery;
    }
    if has(TaskStatus::SupplementRequired) || has(TaskStatus::Refused) {
        return CaseStatus::AwaitingSupplement;
    }
    let moving = case.tasks.iter().any(|t| {
        matches!(
            TaskStatus::try_from(t.status),
            Ok(TaskStatus::Ready
                | TaskStatus::Dispatched
                | TaskStatus::AcceptedByDepartment
                | TaskStatus::InReview)
        )
    });
    if has(TaskStatus::Rejected) && !moving {
        let deliver_approved =
            case.rejection_policy == crate::proto::v1::RejectionPolicy::DeliverApproved as i32;
        return if deliver_approved && has(TaskStatus::Approved) {
            CaseStatus::ReadyForDelivery
        } else {
            CaseStatus::ClosedRejected
        };
    }
    if case.status == CaseStatus::Accepted as i32 && !moving && !has(TaskStatus::Approved) {
        return CaseStatus::Accepted;
    }
    CaseStatus::InProgress
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> pbjson_types::Timestamp {
        pbjson_types::Timestamp {
            seconds: 1_571_625_000,
            nanos: 0,
        }
    }

    /// A QY-SL task and two tasks waiting for it, all dispatched or waiting.
    fn bundle() -> Case {
        let task = |id: &str, status: TaskStatus, deps: &[&str]| Task {
            task_id: id.into(),
            item_code: id.into(),
            department: "d".into(),
            status: status as i32,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        Case {
            case_number: "C".into(),
            status: CaseStatus::InProgress as i32,
            tasks: vec![
                task("C-01", TaskStatus::Dispatched, &[]),
                task("C-02", TaskStatus::Waiting, &["C-01"]),
                task("C-03", TaskStatus::Waiting, &["C-01"]),
            ],
            ..Default::default()
        }
    }

    fn approved(n: &str) -> TaskUpdate {
        TaskUpdate::Approved {
            department_case_number: n.into(),
            documents: vec![ResultDocument {
                material_code: "YYZZ".into(),
                name: "营业执照".into(),
                number: "91640104MA76L8Q23H".into(),
                file: None,
            }],
        }
    }

    #[test]
    fn a_step_applied_before_its_acceptance_records_the_acceptance_first() {
        // Two gateway replicas consuming results: 承办 is applied before ACCEPTED.
        let mut case = bundle();
        let step = TaskUpdate::Progress {
            department_case_number: "S1".into(),
            step: "承办".into(),
        };
        let a = apply(&mut case, "C-01", None, 0, step, 3, None, at()).unwrap();
        let kinds: Vec<&str> = a.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["task-accepted-by-department", "task-progress"]);
        assert_eq!((a.events[0].seq, a.events[1].seq), (4, 5));
        assert_eq!(a.events[0].detail, "C-01 (d) accepted as S1");
        let late = TaskUpdate::Accepted {
            department_case_number: "S1".into(),
        };
        assert_eq!(
            apply(&mut case, "C-01", None, 0, late, 5, None, at()),
            None,
            "the late acceptance changes nothing"
        );
        // A decision first: the acceptance comes before it too.
        let mut case = bundle();
        let a = apply(&mut case, "C-01", None, 0, approved("S1"), 3, None, at()).unwrap();
        assert_eq!(a.events[0].kind, "task-accepted-by-department");
        assert_eq!(a.events[1].kind, "task-approved");
        // A task resumed after a supplement keeps its acceptance: none is added.
        let mut case = bundle();
        case.tasks[0].department_case_number = "S1".into();
        case.tasks[0].supplement_round = 1;
        let step = TaskUpdate::Progress {
            department_case_number: "S1".into(),
            step: "审核".into(),
        };
        let a = apply(&mut case, "C-01", None, 1, step, 8, None, at()).unwrap();
        let kinds: Vec<&str> = a.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["task-progress"]);
    }

    #[test]
    fn a_task_moves_forward_and_never_back() {
        let mut case = bundle();
        let accepted = TaskUpdate::Accepted {
            department_case_number: "S1".into(),
        };
        let a = apply(&mut case, "C-01", None, 0, accepted.clone(), 3, None, at()).unwrap();
        assert_eq!(a.status, TaskStatus::AcceptedByDepartment);
        assert_eq!(a.events[0].seq, 4);
        assert_eq!(case.tasks[0].department_case_number, "S1");
        assert_eq!(
            apply(&mut case, "C-01", None, 0, accepted, 4, None, at()),
            None,
            "a duplicate changes nothing"
        );
        let step = |s: &str| TaskUpdate::Progress {
            department_case_number: "S1".into(),
            step: s.into(),
        };
        assert!(apply(&mut case, "C-01", None, 0, step("审核"), 4, None, at()).is_some());
        assert_eq!(
            apply(&mut case, "C-01", None, 0, step("审核"), 5, None, at()),
            None
        );
        assert!(apply(&mut case, "C-01", None, 0, approved("S1"), 5, None, at()).is_some());
        assert_eq!(
            apply(&mut case, "C-01", None, 0, step("批准"), 9, None, at()),
            None,
            "progress after the decision is stale"
        );
        assert_eq!(
            apply(&mut case, "C-01", None, 0, approved("S1"), 9, None, at()),
            None
        );
        assert_eq!(
            apply(&mut case, "C-09", None, 0, approved("S1"), 9, None, at()),
            None,
            "unknown task"
        );
    }

    #[test]
    fn an_approval_releases_the_waiting_tasks_and_the_case_follows_its_tasks() {
        let mut case = bundle();
        let a = apply(&mut case, "C-01", None, 0, approved("S1"), 0, None, at()).unwrap();
        assert_eq!(a.released, ["C-02", "C-03"]);
        let kinds: Vec<&str> = a.events.iter().map(|e| e.kind.as_str()).collect();
        // The department's case number came with the approval: it took the task.
        assert_eq!(
            kinds,
            [
                "task-accepted-by-department",
                "task-approved",
                "task-released",
                "task-released"
            ]
        );
        assert_eq!(case.status, CaseStatus::InProgress as i32);
        for id in ["C-02", "C-03"] {
            case.tasks
                .iter_mut()
                .find(|t| t.task_id == id)
                .unwrap()
                .status = TaskStatus::Dispatched as i32;
        }
        let s = apply(
            &mut case,
            "C-02",
            None,
            0,
            TaskUpdate::Supplement {
                department_case_number: "S2".into(),
                materials: vec!["租赁合同".into()],
            },
            3,
            None,
            at(),
        )
        .unwrap();
        assert_eq!(case.status, CaseStatus::AwaitingSupplement as i32);
        assert_eq!(s.events.last().unwrap().kind, "case-awaiting-supplement");
        apply(&mut case, "C-02", None, 0, approved("S2"), 5, None, at()).unwrap();
        let last = apply(&mut case, "C-03", None, 0, approved("S3"), 7, None, at()).unwrap();
        assert_eq!(case.status, CaseStatus::ReadyForDelivery as i32);
        assert_eq!(last.events.last().unwrap().kind, "case-ready-for-delivery");
    }

    #[test]
    fn a_rejection_closes_the_case_once_nothing_else_can_be_approved() {
        let mut case = bundle();
        apply(
            &mut case,
            "C-01",
            None,
            0,
            TaskUpdate::Rejected {
                department_case_number: "S1".into(),
                reasons: vec!["名称不符合规定".into()],
            },
            0,
            None,
            at(),
        )
        .unwrap();
        // The waiting tasks can never start: the case is closed.
        assert_eq!(case.status, CaseStatus::ClosedRejected as i32);
        assert_eq!(case.tasks[0].reasons, ["名称不符合规定"]);
    }

    #[test]
    fn under_deliver_approved_a_rejection_still_lets_the_approved_be_delivered() {
        let mut case = bundle();
        case.rejection_policy = crate::proto::v1::RejectionPolicy::DeliverApproved as i32;
        apply(&mut case, "C-01", None, 0, approved("S1"), 0, None, at()).unwrap();
        for t in &mut case.tasks[1..] {
            t.status = TaskStatus::Dispatched as i32;
        }
        let rejected = TaskUpdate::Rejected {
            department_case_number: "S2".into(),
            reasons: vec!["不符合条件".into()],
        };
        apply(&mut case, "C-02", None, 0, rejected, 3, None, at()).unwrap();
        assert_eq!(
            case.status,
            CaseStatus::InProgress as i32,
            "C-03 still moves"
        );
        apply(&mut case, "C-03", None, 0, approved("S3"), 5, None, at()).unwrap();
        assert_eq!(case.status, CaseStatus::ReadyForDelivery as i32);

        // The same under the close policy ends closed.
        let mut case = bundle();
        case.rejection_policy = crate::proto::v1::RejectionPolicy::Close as i32;
        apply(&mut case, "C-01", None, 0, approved("S1"), 0, None, at()).unwrap();
        for t in &mut case.tasks[1..] {
            t.status = TaskStatus::Dispatched as i32;
        }
        let rejected = TaskUpdate::Rejected {
            department_case_number: "S2".into(),
            reasons: vec!["不符合条件".into()],
        };
        apply(&mut case, "C-02", None, 0, rejected, 3, None, at()).unwrap();
        apply(&mut case, "C-03", None, 0, approved("S3"), 5, None, at()).unwrap();
        assert_eq!(case.status, CaseStatus::ClosedRejected as i32);
    }

    #[test]
    fn a_late_step_does_not_undo_a_supplement_request() {
        let mut case = bundle();
        let supplement = TaskUpdate::Supplement {
            department_case_number: "S1".into(),
            materials: vec!["租赁合同".into()],
        };
        apply(&mut case, "C-01", None, 0, supplement, 0, None, at()).unwrap();
        let late = TaskUpdate::Progress {
            department_case_number: "S1".into(),
            step: "审核".into(),
        };
        assert_eq!(apply(&mut case, "C-01", None, 0, late, 2, None, at()), None);
        assert_eq!(case.tasks[0].status, TaskStatus::SupplementRequired as i32);
        assert_eq!(case.status, CaseStatus::AwaitingSupplement as i32);
    }

    #[test]
    fn a_result_about_an_earlier_supplement_round_is_stale() {
        let mut case = bundle();
        case.tasks[0].supplement_round = 1;
        let supplement = TaskUpdate::Supplement {
            department_case_number: "S1".into(),
            materials: vec!["租赁合同".into()],
        };
        assert_eq!(
            apply(&mut case, "C-01", None, 0, supplement, 0, None, at()),
            None
        );
        assert_eq!(case.tasks[0].status, TaskStatus::Dispatched as i32);
        let a = apply(&mut case, "C-01", None, 1, approved("S1"), 0, None, at()).unwrap();
        assert_eq!(a.status, TaskStatus::Approved);
        assert_eq!(case.tasks[0].conclusion_code, "0", "出证办结");
    }

    #[test]
    fn a_decision_time_is_kept_between_the_clock_start_and_its_arrival() {
        let mut case = bundle();
        case.tasks[0].clock_started_at = Some(pbjson_types::Timestamp {
            seconds: 1_571_600_000,
            nanos: 0,
        });
        // The department's clock runs a week ahead: its word cannot be later than ours.
        let ahead = pbjson_types::Timestamp {
            seconds: at().seconds + 7 * 86_400,
            nanos: 0,
        };
        apply(
            &mut case,
            "C-01",
            None,
            0,
            approved("S1"),
            0,
            Some(ahead),
            at(),
        )
        .unwrap();
        assert_eq!(case.tasks[0].decided_at, Some(at()));
        assert_eq!(case.tasks[0].decision_recorded_at, Some(at()));
        // Nor earlier than the clock's start.
        let mut case = bundle();
        let start = pbjson_types::Timestamp {
            seconds: 1_571_600_000,
            nanos: 0,
        };
        case.tasks[0].clock_started_at = Some(start);
        let zero = pbjson_types::Timestamp::default();
        apply(
            &mut case,
            "C-01",
            None,
            0,
            approved("S1"),
            0,
            Some(zero),
            at(),
        )
        .unwrap();
        assert_eq!(case.tasks[0].decided_at, Some(start));
    }

    #[test]
    fn steps_and_outcomes_map_to_the_national_code_tables() {
        assert_eq!(
            ["承办", "科室审核", "批准", "办结", ""].map(stage_code),
            ["1", "2", "3", "", ""]
        );
        let mut case = bundle();
        let step = TaskUpdate::Progress {
            department_case_number: "S1".into(),
            step: "审核".into(),
        };
        apply(&mut case, "C-01", None, 0, step, 0, None, at()).unwrap();
        assert_eq!(case.tasks[0].approval_stage_code, "2");
        let rejected = TaskUpdate::Rejected {
            department_case_number: "S1".into(),
            reasons: vec!["名称不符合规定".into()],
        };
        apply(&mut case, "C-01", None, 0, rejected, 1, None, at()).unwrap();
        assert_eq!(case.tasks[0].conclusion_code, "1", "退回");
        assert_eq!(case.conclusion_code, "1");
        assert_eq!(case.acceptance_status_code, 1);
    }

    #[test]
    fn a_result_from_another_department_changes_nothing() {
        let mut case = bundle();
        assert_eq!(
            apply(
                &mut case,
                "C-01",
                Some("other"),
                0,
                approved("S1"),
                0,
                None,
                at()
            ),
            None
        );
        assert_eq!(case.tasks[0].status, TaskStatus::Dispatched as i32);
        assert!(
            apply(
                &mut case,
                "C-01",
                Some("d"),
                0,
                approved("S1"),
                0,
                None,
                at()
            )
            .is_some()
        );
    }
}
