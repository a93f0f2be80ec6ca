//! The facts of a task's life, read from its case as `GetCase` returns it (the case and its
//! history): what a reporting specification makes its records from. Each fact has the time it
//! is reported with (`at`, RFC 3339) and the fields of its kind; facts come in the order the
//! gateway learnt them, which is the order the platform must receive their records in.
//!
//! This module owns reading the case; it knows no specification. The facts and their fields
//! are listed in docs/reporting.md ("Facts").

use serde_json::{Value, json};
use yichuang::proto::v1::{Case, CaseEvent, CaseStatus, Task, TaskStatus};

/// The reason of a clock pause that waits on the applicant (补正).
const SUPPLEMENT: &str = "补正";
/// The reason of a special procedure's pause (特别程序).
const SPECIAL: &str = "特别程序";

/// One fact of a task, in its JSON form for templates (`fact.kind`, `fact.at`, …).
#[derive(Debug, Clone)]
pub struct Fact {
    pub kind: &'static str,
    /// When the gateway learnt it (milliseconds): the order of reporting.
    pub learnt_ms: i64,
    pub value: Value,
}

fn rfc3339(t: &Option<pbjson_types::Timestamp>) -> Option<(String, i64)> {
    let t = t.as_ref()?;
    let dt = chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)?;
    Some((
        dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        dt.timestamp_millis(),
    ))
}

fn entries<'a>(
    events: &'a [CaseEvent],
    kind: &'a str,
    task_id: &'a str,
) -> impl Iterator<Item = &'a CaseEvent> + 'a {
    events
        .iter()
        .filter(move |e| e.kind == kind && (task_id.is_empty() || e.task_id == task_id))
}

/// The step a `task-progress` entry names (`<department>: <step>`).
fn step_of(detail: &str) -> &str {
    detail.split_once(": ").map_or(detail, |(_, s)| s).trim()
}

/// The one fact of a submission the window did not accept: its one-time notice
/// (`fact.reasons`: what the notice named, in its words).
pub fn of_notice(n: &yichuang::proto::v1::NotAccepted) -> Option<Fact> {
    let (at, ms) = rfc3339(&n.at)?;
    // A deficiency may quote what was typed (an ID number in a date field): masked.
    let reasons: Vec<String> = n
        .deficiencies
        .iter()
        .map(|d| yichuang::privacy::mask_free_text(&d.message))
        .collect();
    Some(Fact {
        kind: "not_accepted",
        learnt_ms: ms,
        value: json!({ "kind": "not_accepted", "at": at, "reasons": reasons }),
    })
}

/// Every fact of `task` in `case`, in reporting order.
pub fn of_task(case: &Case, events: &[CaseEvent], task: &Task) -> Vec<Fact> {
    let mut facts = Vec::new();
    let mut push = |kind: &'static str, learnt_ms: i64, value: Value| {
        let mut value = value;
        value["kind"] = json!(kind);
        facts.push(Fact {
            kind,
            learnt_ms,
            value,
        })
    };
    let Some((accepted_at, accepted_ms)) = rfc3339(&case.accepted_at) else {
        return Vec::new();
    };
    push("accepted", accepted_ms, json!({ "at": accepted_at }));

    let id = task.task_id.as_str();
    let steps: Vec<(String, i64, String)> = entries(events, "task-progress", id)
        .filter_map(|e| {
            let (at, ms) = rfc3339(&e.at)?;
            Some((at, ms, step_of(&e.detail).to_string()))
        })
        .collect();
    for (at, ms, step) in &steps {
        push("step", *ms, json!({ "at": at, "step": step }));
    }
    let asks: Vec<(i64, Vec<String>)> = entries(events, "task-supplement-required", id)
        .filter_map(|e| {
            let (_, ms) = rfc3339(&e.at)?;
            let materials = e
                .detail
                .split_once("asks for: ")
                .map(|(_, m)| crate::expr::split(m))
                .unwrap_or_default();
            Some((ms, materials))
        })
        .collect();
    // When the window handed materials in for this task (a decision also ends a 补正 pause,
    // but nothing was handed in then).
    let resumes: Vec<(String, i64)> = entries(events, "task-resumed", id)
        .filter_map(|e| rfc3339(&e.at))
        .collect();
    let supplements: Vec<(i64, Option<i64>)> = task
        .pauses
        .iter()
        .filter(|p| p.reason == SUPPLEMENT)
        .filter_map(|p| Some((rfc3339(&p.from)?.1, rfc3339(&p.to).map(|t| t.1))))
        .collect();
    // The last request for materials was never answered: the task was decided without them.
    let unanswered = supplements
        .last()
        .is_some_and(|(from, _)| !resumes.iter().any(|(_, ms)| ms >= from));
    for p in &task.pauses {
        let Some((from, from_ms)) = rfc3339(&p.from) else {
            continue;
        };
        let to = rfc3339(&p.to);
        if p.reason == SUPPLEMENT {
            // The materials of the request that opened the pause.
            let materials = asks
                .iter()
                .rev()
                .find(|(ms, _)| *ms <= from_ms)
                .map(|(_, m)| m.clone())
                .unwrap_or_default();
            push(
                "supplement_asked",
                from_ms,
                json!({ "at": from, "materials": materials }),
            );
            // Received: the first hand-in after the request, before the pause's end.
            let until = to.as_ref().map_or(i64::MAX, |t| t.1);
            if let Some((at, ms)) = resumes
                .iter()
                .find(|(_, ms)| *ms >= from_ms && *ms <= until)
            {
                push(
                    "supplement_received",
                    *ms,
                    json!({ "at": at, "materials": materials }),
                );
            }
        } else if p.reason == SPECIAL {
            let step = steps
                .iter()
                .rev()
                .find(|(_, ms, _)| *ms <= from_ms)
                .map_or(SPECIAL.to_string(), |(_, _, s)| s.clone());
            push(
                "special_started",
                from_ms,
                json!({ "at": from, "step": step }),
            );
            if let Some((to, to_ms)) = to {
                // What ended it: the next step; empty when it was the decision.
                let next = steps
                    .iter()
                    .find(|(_, ms, s)| *ms >= to_ms && !s.contains(SPECIAL))
                    .map_or(String::new(), |(_, _, s)| s.clone());
                push("special_ended", to_ms, json!({ "at": to, "next": next }));
            }
        }
    }
    let status = TaskStatus::try_from(task.status).unwrap_or(TaskStatus::Unspecified);
    if matches!(status, TaskStatus::Approved | TaskStatus::Rejected) {
        let decided = rfc3339(&task.decided_at);
        let recorded = rfc3339(&task.decision_recorded_at);
        if let (Some((at, _)), Some((_, learnt))) = (decided.or(recorded.clone()), recorded) {
            let outcome = match (status, task.conclusion_code.as_str()) {
                (TaskStatus::Approved, "0") => "approved_with_documents",
                (TaskStatus::Approved, _) => "approved",
                // 补正不来办结: refused because the materials asked for never came.
                _ if unanswered => "rejected_without_supplement",
                _ => "rejected",
            };
            let reasons = if status == TaskStatus::Rejected {
                task.reasons.clone()
            } else {
                Vec::new()
            };
            let documents: Vec<Value> = task
                .results
                .iter()
                .map(|d| json!({ "name": d.name, "number": d.number }))
                .collect();
            push(
                "decided",
                learnt,
                json!({ "at": at, "outcome": outcome, "reasons": reasons, "documents": documents }),
            );
        }
    } else if case.status == CaseStatus::ClosedRejected as i32
        && let Some(closed) = entries(events, "case-closed-rejected", "").last()
        && let Some((at, ms)) = rfc3339(&closed.at)
    {
        // Never decided: the case closed around it (一件事 whose other item was refused); the
        // reasons are those of the items refused.
        let reasons: Vec<String> = case
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Rejected as i32)
            .flat_map(|t| t.reasons.iter().cloned())
            .collect();
        push(
            "withdrawn",
            ms,
            json!({ "at": at, "outcome": "withdrawn", "reasons": reasons }),
        );
    }
    if let Some(delivered) = entries(events, "case-delivered", "").last()
        && let Some((at, ms)) = rfc3339(&delivered.at)
    {
        let (method, tracking) = match delivered.detail.split_once("tracking number ") {
            Some((_, t)) => ("mail", t.trim().to_string()),
            None => ("pickup", String::new()),
        };
        push(
            "delivered",
            ms,
            json!({
                "at": at,
                "method": method,
                "tracking": tracking,
                "approved": status == TaskStatus::Approved,
            }),
        );
    }
    if let Some(e) = &case.evaluation
        && let Some((at, ms)) = rfc3339(&e.at)
    {
        let scores: Vec<Value> = e
            .scores
            .iter()
            .map(|s| json!({ "indicator": s.indicator, "level": s.level }))
            .collect();
        push(
            "evaluated",
            ms,
            json!({
                "at": at,
                "channel": e.channel,
                "level": e.level,
                "scores": scores,
                "comment": e.comment,
            }),
        );
    }
    if let Some(r) = &case.rectification
        && r.state == yichuang::proto::v1::RectificationState::Closed as i32
        && let Some((at, ms)) = rfc3339(&r.closed_at)
    {
        push(
            "rectified",
            ms,
            json!({ "at": at, "response": r.response, "assignee": r.assignee }),
        );
    }
    let rank = |k: &str| {
        super::spec::FACTS
            .iter()
            .position(|f| *f == k)
            .unwrap_or(usize::MAX)
    };
    facts.sort_by_key(|f| (f.learnt_ms, rank(f.kind)));
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Option<pbjson_types::Timestamp> {
        Some(pbjson_types::Timestamp {
            seconds: 1_800_000_000 + s,
            nanos: 0,
        })
    }

    fn event(seq: i64, s: i64, kind: &str, task: &str, detail: &str) -> CaseEvent {
        CaseEvent {
            seq,
            at: ts(s),
            kind: kind.into(),
            task_id: task.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn a_special_procedure_ends_before_the_decision_it_precedes() {
        let task = Task {
            task_id: "C-01".into(),
            status: TaskStatus::Approved as i32,
            conclusion_code: "6".into(),
            pauses: vec![yichuang::proto::v1::ClockPause {
                reason: SPECIAL.into(),
                from: ts(20),
                to: ts(40),
                working_days: 1,
            }],
            // The department's clock says it decided before the pause ended.
            decided_at: ts(35),
            decision_recorded_at: ts(40),
            ..Task::default()
        };
        let case = Case {
            accepted_at: ts(0),
            tasks: vec![task.clone()],
            ..Case::default()
        };
        let events = vec![
            event(1, 0, "accepted", "", ""),
            event(2, 10, "task-progress", "C-01", "市场监管: 审核"),
            event(
                3,
                20,
                "task-progress",
                "C-01",
                "市场监管: 特别程序（专家评审）",
            ),
            event(4, 40, "task-approved", "C-01", "市场监管 approved: "),
        ];
        let kinds: Vec<&str> = of_task(&case, &events, &task)
            .iter()
            .map(|f| f.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "accepted",
                "step",
                // At the instant of the step that opened it.
                "special_started",
                "step",
                "special_ended",
                "decided"
            ]
        );
    }

    #[test]
    fn a_mailed_delivery_carries_its_tracking_number() {
        let task = Task {
            task_id: "C-01".into(),
            status: TaskStatus::Approved as i32,
            decision_recorded_at: ts(5),
            ..Task::default()
        };
        let case = Case {
            accepted_at: ts(0),
            ..Case::default()
        };
        let events = vec![event(
            9,
            50,
            "case-delivered",
            "",
            "mailed by EMS with tracking number 1190000000001",
        )];
        let facts = of_task(&case, &events, &task);
        let d = facts.iter().find(|f| f.kind == "delivered").unwrap();
        assert_eq!(d.value["method"], "mail");
        assert_eq!(d.value["tracking"], "1190000000001");
        assert_eq!(d.value["approved"], true);
    }
}
