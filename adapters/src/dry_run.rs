//! The dry run of a department description (`yichuang-adapter try`): one task's operations
//! performed against the department's real system — find (when described), submit unless found,
//! and one query — each request and answer shown with the task's personal data masked, with the
//! verdict the rules gave it and what the outcome reads from it. Nothing is published: no broker
//! is reached. This is how an integration team debugs a new description against the system.

use std::fmt::Write as _;
use std::sync::Arc;

use yichuang::proto::v1::TaskMessage;

use crate::config::DepartmentConfig;
use crate::kinds::http::{Exchange, Http};
use crate::mapping::{Decision, Reading};
use crate::system::{DepartmentSystem, Failure, Gate, Task};

/// What a dry run ended with.
#[derive(Debug)]
pub enum Ended {
    /// The operations ran; the outcome as read.
    Read(Reading),
    /// The system (or the description) failed the task.
    Failed(Failure),
}

/// Runs the dry run of `message` at the department of `config` (kind `http`), writing what
/// happens to `out` as it happens. The error is a problem of the description or the task.
pub async fn run(
    config: &DepartmentConfig,
    message: &TaskMessage,
    out: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Ended, String> {
    let mut system = Http::new(config, Gate::new(config.limits.requests_per_second))?;
    let masks = Arc::new(personal_values(message));
    let shown = {
        let (out, masks) = (out.clone(), masks.clone());
        move |e: Exchange| {
            let mut text = String::new();
            let _ = writeln!(text, "── {} ─────────", e.operation);
            let _ = writeln!(text, "{}", mask(&e.request, &masks));
            let _ = writeln!(text, "── answer: HTTP {}", e.status);
            let _ = writeln!(text, "{}", mask(e.answer.trim(), &masks));
            let _ = writeln!(text, "── verdict: {}\n", mask(&e.verdict, &masks));
            out(&text);
        }
    };
    system.trace = Some(Arc::new(shown));
    let fields = crate::mapping::render_all(&config.mapping.request, message)
        .map_err(|e| format!("mapping.request: {e}"))?;
    let task = Task {
        message: message.clone(),
        fields,
    };
    let read = |answer| system.read(&answer).unwrap_or_default();
    let found = match system.find(&task).await {
        Ok(found) => found,
        Err(f) => return Ok(Ended::Failed(f)),
    };
    let answer = match found {
        Some(answer) => {
            out("(found: the system has the task already; not submitted again)\n");
            answer
        }
        None => match system.submit(&task).await {
            Ok(answer) => answer,
            Err(f) => return Ok(Ended::Failed(f)),
        },
    };
    let submitted = read(answer);
    out(&format!("── read: {}\n", describe(&submitted, &masks)));
    let Some(number) = submitted.department_case_number.clone() else {
        return Ok(Ended::Failed(Failure::permanent(
            "the answer gives no case number: check outcome.case_number",
        )));
    };
    match system.poll(&task, &number).await {
        Ok(answer) => {
            let reading = read(answer);
            out(&format!("── read: {}\n", describe(&reading, &masks)));
            Ok(Ended::Read(reading))
        }
        Err(f) => Ok(Ended::Failed(f)),
    }
}

/// A reading in one line.
fn describe(r: &Reading, masks: &[(String, String)]) -> String {
    let decision = match &r.decision {
        None => "not decided".to_string(),
        Some(Decision::Approved(docs)) => format!(
            "approved, documents {:?}",
            docs.iter()
                .map(|d| format!("{} {} ({})", d.name, d.number, d.material_code))
                .collect::<Vec<_>>()
        ),
        Some(Decision::Rejected(reasons)) => format!("rejected: {reasons:?}"),
        Some(Decision::Supplement(materials)) => format!("supplement asked: {materials:?}"),
    };
    mask(
        &format!(
            "case number {:?}, step {:?}, {decision}, decided on {:?}",
            r.department_case_number.as_deref().unwrap_or(""),
            r.step.as_deref().unwrap_or(""),
            r.decided_on
        ),
        masks,
    )
}

/// The task's personal values and their masked forms (its ID numbers, mobiles, names and
/// addresses, as `yichuang::privacy` masks the task), longest first.
pub fn personal_values(message: &TaskMessage) -> Vec<(String, String)> {
    let plain = crate::mapping::task_json(message);
    let mut masked = plain.clone();
    yichuang::privacy::mask_task_json(&mut masked);
    let mut pairs = Vec::new();
    fn walk(a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                for (k, v) in x {
                    if let Some(w) = y.get(k) {
                        walk(v, w, out);
                    }
                }
            }
            (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
                for (v, w) in x.iter().zip(y) {
                    walk(v, w, out);
                }
            }
            (serde_json::Value::String(s), serde_json::Value::String(t))
                if s != t && !s.is_empty() =>
            {
                out.push((s.clone(), t.clone()));
            }
            _ => {}
        }
    }
    walk(&plain, &masked, &mut pairs);
    pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    pairs.dedup();
    pairs
}

/// `text` with every personal value of the task masked, and anything else that looks like an
/// ID or mobile number too.
pub fn mask(text: &str, masks: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (plain, masked) in masks {
        out = out.replace(plain.as_str(), masked);
    }
    yichuang::privacy::mask_free_text(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tasks_personal_values_are_masked_wherever_they_appear() {
        let message = TaskMessage {
            submission: Some(yichuang::proto::v1::Submission {
                applicant: Some(yichuang::proto::v1::Applicant {
                    name: "马强".into(),
                    id_number: "640104199001011234".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let masks = personal_values(&message);
        let shown = mask(
            "<nsrmc>马强</nsrmc><nsrsbh>640104199001011234</nsrsbh><lxdh>13800138000</lxdh>",
            &masks,
        );
        assert!(!shown.contains("马强"), "{shown}");
        assert!(!shown.contains("640104199001011234"), "{shown}");
        assert!(!shown.contains("13800138000"), "{shown}");
    }
}
