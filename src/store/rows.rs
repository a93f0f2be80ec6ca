//! What the store's facade and its two engines share: the records that go in and come out
//! (attempts, submit commands and results, outbox and event items, feed and list queries, the
//! audit of operators' actions), the SQL both engines run as is, and the pure helpers both use
//! (the idempotency decision, a case's rows, summaries, decoding). No I/O here: the engines
//! execute, this only describes.

use chrono::{DateTime, Utc};
use prost::Message;

use crate::case::{self, Accepted};
use crate::event::EventKind;
use crate::intake::Plan;
use crate::proto::v1::{
    Case, CaseEvent, CaseStatus, CaseSummary, DeficiencyNotice, NotAccepted, NotAcceptedItem,
    Submission, SubmitResponse, Task,
};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("migration {version} failed: {message}")]
    Migration { version: String, message: String },
    #[error("the daily case-number sequence for {prefix} is exhausted ({max} cases)")]
    SequenceExhausted { prefix: String, max: u32 },
    #[error("the store is shut down")]
    Closed,
    #[error("cannot open the store: {0}")]
    Open(String),
}

/// One attempt at `Submit`: who, where, when, and the submission's fingerprint.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The window's idempotency key (normalised).
    pub submission_id: String,
    /// Fingerprint of the submission as received.
    pub content_hash: [u8; 32],
    pub hall_code: String,
    pub window_code: String,
    pub clerk_staff_no: String,
    /// W3C trace id the accepted case keeps (see [`crate::trace`]).
    pub trace_id: String,
    /// Span id of the `Submit` call when spans are exported, else empty.
    pub trace_span_id: String,
    /// The gateway's clock at the attempt.
    pub at: DateTime<Utc>,
}

/// A submission evaluated by intake, ready to be recorded.
#[derive(Debug, Clone)]
pub struct SubmitCommand {
    pub attempt: Attempt,
    pub evaluated: Evaluated,
}

/// Intake's verdict.
#[derive(Debug, Clone)]
pub enum Evaluated {
    /// Complete: accept as planned.
    Accept(Box<Plan>),
    /// Deficient: record the attempt and answer with the notice.
    Deficient(Box<Deficient>),
}

/// A deficient submission: the notice it is answered with, and what is kept of it so that it
/// can be reported upward as not accepted (`not_accepted`, [`crate::store::Store::not_accepted`]).
#[derive(Debug, Clone)]
pub struct Deficient {
    pub notice: DeficiencyNotice,
    /// The submission as intake left it (normalised).
    pub submission: Submission,
    /// The items applied for that the acceptance list knows.
    pub items: Vec<NotAcceptedItem>,
}

/// The store's answer to a submission.
#[derive(Debug, Clone)]
pub enum SubmitResult {
    /// The answer to give; `replayed` is set when it repeats an earlier answer.
    Answer(Box<SubmitResponse>),
    /// The submission id already created a case from different content.
    Conflict { case_number: String },
}

/// A task the outbox relay must publish, leased to it for a while.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub task_id: String,
    pub department: String,
    /// The case the task belongs to (the message carries the submission and the task),
    /// decoded once for all its tasks in one lease.
    pub case: std::sync::Arc<Case>,
    /// 0: the task's first publish (or a supplement round's); n > 0: the n-th republish of a
    /// stalled task ([`crate::stall`]).
    pub repair: i64,
    /// An earlier claim of the task ran out before it was recorded as published: that relay may
    /// have published it and died, so this publish may be a second copy
    /// ([`crate::bus::headers::COPY`]).
    pub reclaimed: bool,
}

/// One entry of the audit of operators' actions: who did what to which messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAction {
    pub at_ms: i64,
    /// The operator's account (the caller's identity once it is authenticated).
    pub operator: String,
    /// Where it came from: `cli@<host>`, or the gRPC peer address.
    pub origin: String,
    /// `dlq-replay`, `dlq-purge`.
    pub action: String,
    /// The queue acted on.
    pub target: String,
    /// The ids of the messages acted on (never their contents).
    pub message_ids: Vec<String>,
    /// Why, in the operator's words (a purge's reason); empty when none was asked for.
    pub note: String,
}

/// One entry of the access log: an authenticated caller read a case's personal data, or a call
/// was refused. Holds case numbers and codes, never personal data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessRecord {
    pub at_ms: i64,
    /// The caller's name (certificate common name or token subject); `-` when unknown.
    pub caller: String,
    pub role: String,
    /// The caller's hall; empty for a role over every hall.
    pub hall: String,
    /// `Service/Method`.
    pub method: String,
    /// `read` or `refused`.
    pub outcome: String,
    /// The case numbers read, or what the refused call asked for.
    pub target: String,
    /// Why it was refused; empty for a read.
    pub reason: String,
}

/// One work order of the 12345 hotline and the answer given to it (`crate::hotline`): the audit
/// trail of work orders, and what a repeated order number is answered with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HotlineOrder {
    /// The hotline's work order number.
    pub order_no: String,
    /// `progress`, `complaint` or `consultation`.
    pub kind: String,
    /// The case number it names, as given.
    pub case_number: String,
    /// The hotline caller (certificate common name or token subject).
    pub caller: String,
    pub at_ms: i64,
    /// The hall's date of the order (`YYYY-MM-DD`).
    pub day: String,
    /// `answered`, `refused` (verification failed) or `locked` (too many failures that day).
    pub outcome: String,
    /// The answer as given: text read out, personal data masked; the refusal otherwise.
    pub answer: String,
    /// The order's code in the hotline's classification table (`crate::hotline_classes`).
    pub classification: String,
}

/// Which access records to read, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessQuery {
    /// Exactly this target (a case number); empty: any.
    pub target: String,
    /// Exactly this caller; empty: any.
    pub caller: String,
    pub limit: i64,
}

/// A task in a department's hands that the gateway has not heard of since `since_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silent {
    pub case_number: String,
    pub task_id: String,
    pub department: String,
    pub since_ms: i64,
}

/// Tasks in a department's hands (dispatched, accepted, in review) not heard of since before
/// `?1`, not already flagged; at most `?2`.
pub(super) const STALL_CANDIDATES_SQLITE: &str = "SELECT case_number, task_id, department, COALESCE(progress_ms, dispatched_at_ms, 0)
     FROM tasks WHERE status IN (3, 4, 5) AND repair_due = 0 AND COALESCE(progress_ms, dispatched_at_ms, 0) < ?1
     ORDER BY 4 LIMIT ?2";
pub(super) const STALL_CANDIDATES_POSTGRES: &str = "SELECT case_number, task_id, department, COALESCE(progress_ms, dispatched_at_ms, 0)
     FROM tasks WHERE status IN (3, 4, 5) AND repair_due = 0 AND COALESCE(progress_ms, dispatched_at_ms, 0) < $1
     ORDER BY 4 LIMIT $2";
/// Flags one silent task for republishing, only if nothing was heard of it since it was found
/// silent (`?2`) and it is still in a department's hands: one replica flags it, once.
pub(super) const FLAG_REPAIR_SQLITE: &str = "UPDATE tasks SET repair_due = 1, repairs = repairs + 1
     WHERE task_id = ?1 AND repair_due = 0 AND status IN (3, 4, 5) AND COALESCE(progress_ms, dispatched_at_ms, 0) = ?2
     RETURNING repairs";
pub(super) const FLAG_REPAIR_POSTGRES: &str = "UPDATE tasks SET repair_due = 1, repairs = repairs + 1
     WHERE task_id = $1 AND repair_due = 0 AND status IN (3, 4, 5) AND COALESCE(progress_ms, dispatched_at_ms, 0) = $2
     RETURNING repairs";

/// On-time figures of one department's item: tasks decided, decided by their promised deadline,
/// and still open past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnTimeRow {
    pub department: String,
    pub item_code: String,
    pub decided: i64,
    pub on_time: i64,
    pub open_overdue: i64,
}

/// On-time figures by department and item; parameters: now, department and item filters
/// (empty: all).
pub(super) const ON_TIME_SQLITE: &str = "SELECT department, item_code,
       SUM(CASE WHEN decided_ms IS NOT NULL THEN 1 ELSE 0 END),
       SUM(CASE WHEN decided_ms IS NOT NULL AND decided_ms < due_ms THEN 1 ELSE 0 END),
       SUM(CASE WHEN decided_ms IS NULL AND due_ms <= ?1 THEN 1 ELSE 0 END)
     FROM tasks
     WHERE due_ms IS NOT NULL AND (?2 = '' OR department = ?2) AND (?3 = '' OR item_code = ?3)
     GROUP BY department, item_code ORDER BY department, item_code";
pub(super) const ON_TIME_POSTGRES: &str = "SELECT department, item_code,
       SUM(CASE WHEN decided_ms IS NOT NULL THEN 1 ELSE 0 END)::BIGINT,
       SUM(CASE WHEN decided_ms IS NOT NULL AND decided_ms < due_ms THEN 1 ELSE 0 END)::BIGINT,
       SUM(CASE WHEN decided_ms IS NULL AND due_ms <= $1 THEN 1 ELSE 0 END)::BIGINT
     FROM tasks
     WHERE due_ms IS NOT NULL AND ($2 = '' OR department = $2) AND ($3 = '' OR item_code = $3)
     GROUP BY department, item_code ORDER BY department, item_code";

/// History entries of the SLA kinds, counted by department and item: `(department, item, kind,
/// count)`. The kinds are [`EventKind::SLA_ALERTS`], spelled out so the query stays one constant
/// both engines prepare; a test checks the two agree.
pub(super) const SLA_COUNTS: &str = "SELECT t.department, t.item_code, e.kind, count(*)
     FROM case_events e JOIN tasks t ON t.task_id = e.task_id
     WHERE e.kind IN ('task-sla-warning', 'task-overdue', 'task-decision-late-to-window')
     GROUP BY t.department, t.item_code, e.kind ORDER BY 1, 2, 3";

/// A history entry the relay must publish to the events exchange.
#[derive(Debug, Clone)]
pub struct EventItem {
    pub case_number: String,
    pub hall_code: String,
    pub window_code: String,
    /// The case's W3C trace id.
    pub trace_id: String,
    pub event: CaseEvent,
}

/// Marks `task_ids` dispatched in the case record and returns the history entries to append
/// after `last_seq`. The case moves to in-progress once any task is with a department.
pub(super) fn dispatch_in_case(
    case: &mut Case,
    task_ids: &[String],
    last_seq: i64,
    now_ms: i64,
) -> Vec<CaseEvent> {
    let mut events = Vec::new();
    let accepted_at = case.accepted_at;
    for task in case
        .tasks
        .iter_mut()
        .filter(|t| task_ids.contains(&t.task_id))
    {
        dispatch_task(task, accepted_at, now_ms);
        events.push(dispatched_event(
            last_seq + events.len() as i64 + 1,
            now_ms,
            &task.task_id,
            &task.item_code,
            &task.department,
        ));
    }
    if !events.is_empty() && case.status == CaseStatus::Accepted as i32 {
        case.status = CaseStatus::InProgress as i32;
    }
    events
}

/// One task of a case record dispatched at `at_ms`. The legal clock runs from the acceptance
/// for a task that waited for nothing, from its release (its dispatch) for one that did; a
/// resumed task keeps its start.
fn dispatch_task(task: &mut Task, accepted_at: Option<pbjson_types::Timestamp>, at_ms: i64) {
    task.status = crate::proto::v1::TaskStatus::Dispatched as i32;
    if task.clock_started_at.is_none() {
        task.clock_started_at = if task.depends_on.is_empty() {
            accepted_at
        } else {
            ms_to_timestamp(at_ms)
        };
    }
}

/// The `task-dispatched` history entry of one task.
pub(super) fn dispatched_event(
    seq: i64,
    at_ms: i64,
    task_id: &str,
    item_code: &str,
    department: &str,
) -> CaseEvent {
    CaseEvent {
        seq,
        at: ms_to_timestamp(at_ms),
        kind: EventKind::TaskDispatched.as_str().into(),
        task_id: task_id.into(),
        detail: format!("{item_code} published to {department}"),
    }
}

/// Brings a case record up to its task rows' dispatch marks. The SQLite engine marks a task
/// dispatched in its row and history only (not in the record, which would be decoded and
/// rewritten for every batch the relay confirms); whoever reads the record applies the marks
/// here, with [`dispatch_in_case`]'s rule: a task READY in the record whose row is DISPATCHED
/// since `dispatched_at_ms` is dispatched, and the case is in progress. `dispatched`: the
/// `(task id, dispatched_at_ms)` of the case's DISPATCHED task rows.
pub(super) fn apply_dispatch_marks(case: &mut Case, dispatched: &[(String, i64)]) {
    let accepted_at = case.accepted_at;
    let mut any = false;
    for task in case
        .tasks
        .iter_mut()
        .filter(|t| t.status == crate::proto::v1::TaskStatus::Ready as i32)
    {
        if let Some((_, at_ms)) = dispatched.iter().find(|(id, _)| *id == task.task_id) {
            dispatch_task(task, accepted_at, *at_ms);
            any = true;
        }
    }
    if any && case.status == CaseStatus::Accepted as i32 {
        case.status = CaseStatus::InProgress as i32;
    }
}

/// What a feed reader follows: a hall, a window of a hall, every hall (the platform), or one case.
#[derive(Debug, Clone, Default)]
pub struct FeedQuery {
    /// Empty: every hall.
    pub hall_code: String,
    /// Empty: every window of the hall.
    pub window_code: String,
    /// Set: this case only.
    pub case_number: String,
    /// Entries after this position.
    pub after: i64,
    pub limit: usize,
}

/// A history entry in feed order.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// Its position: the cursor a reader resumes after.
    pub position: i64,
    pub case_number: String,
    pub hall_code: String,
    pub window_code: String,
    pub event: CaseEvent,
}

/// An entry of a push set aside: the receiver refused it for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDead {
    /// Its feed position.
    pub position: i64,
    /// The push's event id (`<case number>:<seq>`).
    pub event_id: String,
    /// The receiver's last HTTP status.
    pub status: i32,
    /// The receiver's last answer, shortened and masked (what an operator reads to fix it).
    pub reason: String,
    /// How many times it was sent.
    pub tries: i32,
    /// When it was set aside (ms since the epoch).
    pub at_ms: i64,
}

/// A filter for listing cases.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub hall_code: Option<String>,
    pub window_code: Option<String>,
    pub status: Option<CaseStatus>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
    /// Continue after this `(accepted_at_ms, case_number)`.
    pub after: Option<(i64, String)>,
}

/// Which not-accepted submissions to list, in position order.
#[derive(Debug, Clone, Default)]
pub struct NotAcceptedQuery {
    /// Only positions after this one.
    pub after: i64,
    /// Only notices given at or after this instant (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Only notices given before this instant.
    pub to_ms: Option<i64>,
    /// Only this hall's.
    pub hall_code: Option<String>,
    /// Only this window's (within `hall_code`).
    pub window_code: Option<String>,
    pub limit: usize,
}

/// The encoded columns of a `not_accepted` row, built before the transaction that writes it.
pub(super) struct NotAcceptedRow {
    pub(super) submission: Vec<u8>,
    pub(super) notice: Vec<u8>,
    pub(super) items: String,
}

pub(super) fn not_accepted_row(d: &Deficient) -> NotAcceptedRow {
    NotAcceptedRow {
        submission: d.submission.encode_to_vec(),
        notice: d.notice.encode_to_vec(),
        // The proto3 JSON of each item: the column stays readable to an operator.
        items: serde_json::to_string(&d.items).unwrap_or_else(|_| "[]".into()),
    }
}

/// The stored columns of a `not_accepted` row, as both engines read them.
pub(super) struct StoredNotAccepted {
    pub(super) id: i64,
    pub(super) submission_id: String,
    pub(super) at_ms: i64,
    pub(super) hall_code: String,
    pub(super) window_code: String,
    pub(super) clerk_staff_no: String,
    pub(super) submission: Vec<u8>,
    pub(super) notice: Vec<u8>,
    pub(super) items: String,
}

pub(super) fn decode_not_accepted(r: StoredNotAccepted) -> Result<NotAccepted, StoreError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("not_accepted {}: {what}: {e}", r.id))
    };
    let submission =
        Submission::decode(r.submission.as_slice()).map_err(|e| corrupt("submission", &e))?;
    let notice =
        DeficiencyNotice::decode(r.notice.as_slice()).map_err(|e| corrupt("notice", &e))?;
    let items: Vec<NotAcceptedItem> =
        serde_json::from_str(&r.items).map_err(|e| corrupt("items", &e))?;
    Ok(NotAccepted {
        id: r.id,
        submission_id: r.submission_id,
        at: ms_to_timestamp(r.at_ms),
        hall_code: r.hall_code,
        window_code: r.window_code,
        clerk_staff_no: r.clerk_staff_no,
        submission: Some(submission),
        deficiencies: notice.deficiencies,
        items,
    })
}

/// What a submission id already has.
#[derive(Debug)]
pub(super) struct Existing {
    pub(super) content_hash: Vec<u8>,
    pub(super) outcome: String,
    pub(super) case_number: Option<String>,
    pub(super) response: Vec<u8>,
}

/// What to do with a submission, given what its id already has.
pub(super) enum Decision {
    Replay(Box<SubmitResponse>),
    Conflict(String),
    Fresh,
}

pub(super) fn decide(existing: Option<Existing>, hash: &[u8; 32]) -> Result<Decision, StoreError> {
    let Some(e) = existing else {
        return Ok(Decision::Fresh);
    };
    if e.content_hash == hash {
        let mut response = SubmitResponse::decode(e.response.as_slice())
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        response.replayed = true;
        return Ok(Decision::Replay(Box::new(response)));
    }
    match (e.outcome.as_str(), e.case_number) {
        // The id created a case: a different content under it is a client error, never a second case.
        ("accepted", Some(number)) => Ok(Decision::Conflict(number)),
        // A deficient attempt created nothing: a corrected resubmission under the same id is evaluated anew.
        _ => Ok(Decision::Fresh),
    }
}

/// Rows that accepting a case writes, shared by both engines.
pub(super) struct CaseRows {
    pub(super) accepted: Accepted,
    pub(super) body: Vec<u8>,
    pub(super) item_codes: String,
    pub(super) response: Vec<u8>,
    pub(super) accepted_at_ms: i64,
}

pub(super) fn case_rows(plan: &Plan, case_number: &str, attempt: &Attempt) -> CaseRows {
    let mut accepted = case::accept(plan, case_number, &attempt.trace_id);
    accepted
        .case
        .trace_span_id
        .clone_from(&attempt.trace_span_id);
    let body = accepted.case.encode_to_vec();
    let item_codes = accepted
        .case
        .tasks
        .iter()
        .map(|t| t.item_code.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let response = case::receipt_response(accepted.receipt.clone()).encode_to_vec();
    CaseRows {
        body,
        item_codes,
        response,
        accepted_at_ms: plan.accepted_at.timestamp_millis(),
        accepted,
    }
}

pub(super) fn attempt_detail(n: &DeficiencyNotice) -> String {
    n.deficiencies
        .iter()
        .map(|d| {
            format!(
                "{}@{}",
                crate::proto::v1::DeficiencyCode::try_from(d.code).map_or("?", |c| c.as_str_name()),
                d.path
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn summary(case: &Case) -> CaseSummary {
    let s = case.submission.as_ref();
    CaseSummary {
        case_number: case.case_number.clone(),
        submission_id: case.submission_id.clone(),
        hall_code: s.map(|s| s.hall_code.clone()).unwrap_or_default(),
        window_code: s.map(|s| s.window_code.clone()).unwrap_or_default(),
        status: case.status,
        accepted_at: case.accepted_at,
        item_codes: case.tasks.iter().map(|t| t.item_code.clone()).collect(),
        promised_deadline: case.promised_deadline.clone(),
        promised_deadline_provisional: case.promised_deadline_provisional,
    }
}

pub(super) fn decode_case(body: &[u8]) -> Result<Case, StoreError> {
    Case::decode(body).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn ms_to_timestamp(ms: i64) -> Option<pbjson_types::Timestamp> {
    Some(pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}
