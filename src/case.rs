//! The case (办件): its national number, and the case record, tasks, receipt, notice and
//! history built from an intake plan. Pure construction; the store decides when it happens.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};

use crate::calendar::years_list;

use crate::event::EventKind;
use crate::intake::Plan;
use crate::intake::normalise::Change;
use crate::proto::v1::{
    Case, CaseEvent, CaseStatus, Deficiency, DeficiencyNotice, Receipt, ReceiptItem,
    SubmitResponse, Task, TaskStatus, submit_response::Outcome,
};

/// The largest daily sequence the national format's four digits allow.
pub const MAX_DAILY_SEQUENCE: u32 = 9999;

/// The prefix a daily sequence is counted under: implementation code + `yyyyMMdd`.
pub fn number_prefix(implementation_code: &str, date: NaiveDate) -> String {
    format!("{implementation_code}{}", date.format("%Y%m%d"))
}

/// A national case number: 31-character implementation code, `yyyyMMdd`, 4-digit sequence.
pub fn case_number(prefix: &str, sequence: u32) -> String {
    format!("{prefix}{sequence:04}")
}

/// Converts an instant to the protobuf timestamp.
pub fn timestamp(at: DateTime<impl chrono::TimeZone>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// Everything accepting a case writes.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub case: Case,
    pub receipt: Receipt,
    /// History entries, `seq` from 1.
    pub events: Vec<CaseEvent>,
}

/// Builds the case, its tasks, receipt and first history entries from a plan and the case number.
pub fn accept(plan: &Plan, case_number: &str, trace_id: &str) -> Accepted {
    let tasks = tasks_of(plan, case_number);
    let accepted_at = timestamp(plan.accepted_at);
    let s = &plan.submission;
    let case = Case {
        case_number: case_number.to_string(),
        submission_id: s.submission_id.clone(),
        status: CaseStatus::Accepted as i32,
        accepted_at: Some(accepted_at),
        submission: Some(s.clone()),
        normalisations: plan.changes.iter().map(Change::to_proto).collect(),
        tasks: tasks.clone(),
        obligations: plan.obligations.clone(),
        external_ids: Default::default(),
        promised_deadline: plan.promised_deadline.to_string(),
        bundle_code: s.bundle_code.clone(),
        acceptance_status_code: 1,
        trace_id: trace_id.to_string(),
        trace_span_id: String::new(),
        supplements: Vec::new(),
        conclusion_code: String::new(),
        rejection_policy: plan.rejection_policy as i32,
        promised_deadline_provisional: !plan.promised_deadline_assumes.is_empty(),
        // Only the applicant gives one, after the case is concluded (crate::evaluation).
        evaluation: None,
        rectification: None,
        // Only a 12345 complaint opens one (crate::hotline).
        supervisions: Vec::new(),
    };
    let receipt = receipt_of(plan, case_number, &tasks);
    let mut events = Vec::new();
    let mut push = |kind: EventKind, task_id: &str, detail: String| {
        events.push(CaseEvent {
            seq: events.len() as i64 + 1,
            at: Some(accepted_at),
            kind: kind.as_str().into(),
            task_id: task_id.into(),
            detail,
        });
    };
    let items: Vec<&str> = plan.tasks.iter().map(|t| t.item_code.as_str()).collect();
    push(
        EventKind::Accepted,
        "",
        format!(
            "accepted at hall {} window {}: {}",
            s.hall_code,
            s.window_code,
            items.join(", ")
        ),
    );
    if !plan.assumed_years.is_empty() {
        let years = years_list(&plan.assumed_years);
        push(
            EventKind::DeadlineProvisional,
            "",
            format!(
                "deadlines counted Monday–Friday in {years}: no working-day calendar for {years} is loaded (the State Council's holiday notice); they are confirmed, or moved, once it is"
            ),
        );
    }
    if !plan.changes.is_empty() {
        let what: Vec<String> = plan
            .changes
            .iter()
            .map(|c| format!("{} ({})", c.path, c.rule))
            .collect();
        push(EventKind::Normalised, "", what.join("; "));
    }
    for (t, p) in tasks.iter().zip(&plan.tasks) {
        if t.depends_on.is_empty() {
            push(
                EventKind::TaskReady,
                &t.task_id,
                format!(
                    "{} to {}, due {}{}",
                    t.item_code,
                    t.department,
                    p.promised_deadline,
                    if p.promised_assumes.is_empty() {
                        ""
                    } else {
                        " (provisional)"
                    }
                ),
            );
        } else {
            push(
                EventKind::TaskWaiting,
                &t.task_id,
                format!("{} waits for {}", t.item_code, t.depends_on.join(", ")),
            );
        }
    }
    for o in &plan.obligations {
        push(
            EventKind::ObligationRecorded,
            "",
            format!(
                "{} ({}) for {} due {}{}",
                o.material_code,
                o.material_name,
                o.item_code,
                o.due_date,
                if o.due_date_provisional {
                    " (provisional)"
                } else {
                    ""
                }
            ),
        );
    }
    Accepted {
        case,
        receipt,
        events,
    }
}

/// The case's tasks, from the plan's: READY when they wait for nothing, WAITING otherwise.
fn tasks_of(plan: &Plan, case_number: &str) -> Vec<Task> {
    let task_id = |i: usize| format!("{case_number}-{:02}", i + 1);
    plan.tasks
        .iter()
        .enumerate()
        .map(|(i, t)| Task {
            task_id: task_id(i),
            item_code: t.item_code.clone(),
            item_name: t.item_name.clone(),
            department: t.department.clone(),
            implementation_code: t.implementation_code.clone(),
            status: if t.depends_on.is_empty() {
                TaskStatus::Ready
            } else {
                TaskStatus::Waiting
            } as i32,
            depends_on: t.depends_on.iter().map(|&p| task_id(p)).collect(),
            promised_working_days: t.promised_working_days as i32,
            legal_working_days: t.legal_working_days as i32,
            promised_deadline: t.promised_deadline.to_string(),
            legal_deadline: t.legal_deadline.to_string(),
            inherited_materials: t.inherited_materials.clone(),
            mode: t.mode as i32,
            department_case_number: String::new(),
            results: Vec::new(),
            step: String::new(),
            reasons: Vec::new(),
            materials_requested: Vec::new(),
            supplement_round: 0,
            approval_stage_code: String::new(),
            conclusion_code: String::new(),
            // The legal clock runs from the acceptance for a task that waits for nothing.
            clock_started_at: t.depends_on.is_empty().then(|| timestamp(plan.accepted_at)),
            provisional_years: t.assumed_years().into_iter().collect(),
            promised_deadline_provisional: !t.promised_assumes.is_empty(),
            ..Default::default()
        })
        .collect()
}

/// The receipt (受理回执) of an accepted case: items with their promised deadlines (marked
/// provisional, with a note, when they rest on a year without its calendar file).
fn receipt_of(plan: &Plan, case_number: &str, tasks: &[Task]) -> Receipt {
    // The years the dates on the receipt rest on: promised deadlines and due dates (the legal
    // deadlines are not on it).
    let receipt_years: BTreeSet<i32> = plan
        .tasks
        .iter()
        .flat_map(|t| t.promised_assumes.iter().copied())
        .chain(plan.promised_deadline_assumes.iter().copied())
        .chain(plan.obligation_assumes.iter().copied())
        .collect();
    let deadline_provisional = !receipt_years.is_empty();
    let s = &plan.submission;
    Receipt {
        case_number: case_number.to_string(),
        submission_id: s.submission_id.clone(),
        accepted_at: Some(timestamp(plan.accepted_at)),
        hall_code: s.hall_code.clone(),
        window_code: s.window_code.clone(),
        applicant_name: s
            .applicant
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default(),
        items: plan
            .tasks
            .iter()
            .zip(tasks)
            .map(|(p, t)| ReceiptItem {
                item_code: p.item_code.clone(),
                item_name: p.item_name.clone(),
                department: p.department.clone(),
                department_name: p.department_name.clone(),
                promised_working_days: p.promised_working_days as i32,
                promised_deadline: p.promised_deadline.to_string(),
                waits_for_prerequisites: !p.depends_on.is_empty(),
                task_id: t.task_id.clone(),
                promised_deadline_provisional: !p.promised_assumes.is_empty(),
            })
            .collect(),
        obligations: plan.obligations.clone(),
        normalisations: plan.changes.iter().map(Change::to_proto).collect(),
        promised_deadline: plan.promised_deadline.to_string(),
        delivery_method: s.delivery.as_ref().map_or(0, |d| d.method),
        deadline_provisional,
        deadline_notice: if deadline_provisional {
            provisional_notice(&receipt_years)
        } else {
            String::new()
        },
    }
}

/// What the receipt tells the applicant when a date on it is provisional (in Chinese, as the
/// receipt is handed to the applicant).
pub fn provisional_notice(years: &BTreeSet<i32>) -> String {
    let years = years
        .iter()
        .map(|y| format!("{y}年"))
        .collect::<Vec<_>>()
        .join("、");
    format!(
        "本凭证所列期限涉及{years}，该年度国务院办公厅部分节假日安排尚未载入本系统，暂按周一至周五为工作日计算；待该年度节假日安排载入后予以确认，期限如有变动将另行告知。"
    )
}

/// The one-time deficiency notice; personal values in the normalisation records are masked
/// because the notice outlives the (never created) case in the audit trail.
pub fn notice(
    submission_id: &str,
    changes: &[Change],
    deficiencies: Vec<Deficiency>,
    issued_at: DateTime<Utc>,
) -> DeficiencyNotice {
    DeficiencyNotice {
        submission_id: submission_id.to_string(),
        deficiencies,
        normalisations: changes.iter().map(Change::to_masked_proto).collect(),
        issued_at: Some(timestamp(issued_at)),
        // The links to the item guides are the API's to add (it knows the public address).
        guides: Vec::new(),
    }
}

/// The answer to `Submit` for a receipt.
pub fn receipt_response(receipt: Receipt) -> SubmitResponse {
    SubmitResponse {
        outcome: Some(Outcome::Receipt(receipt)),
        replayed: false,
    }
}

/// The answer to `Submit` for a notice.
pub fn notice_response(notice: DeficiencyNotice) -> SubmitResponse {
    SubmitResponse {
        outcome: Some(Outcome::Notice(notice)),
        replayed: false,
    }
}
