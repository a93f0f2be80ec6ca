//! Manual re-entry: the department's system cannot be reached at all, so a clerk keys the case
//! into it and records what it gave back. Between the two stands the worklist — a SQLite file
//! (option `worklist`) that plays the legacy system for the runtime — and the clerk's
//! operations on it, which `yichuang-adapter manual list|complete` calls:
//!
//! - `submit` puts the task on the worklist (idempotent by task id) with its legacy fields, as
//!   the department's `mapping.request` made them, and the same fields over masked personal
//!   data for listings;
//! - the clerk lists pending tasks (masked) and completes one with the department's case
//!   number and outcome (approved with the document's number and name, rejected with reasons,
//!   supplement with materials);
//! - `poll` and `find` read the task's row back: the answer has `department_case_number`,
//!   `outcome` (`approved`, `rejected`, `supplement`), `document_number`, `document_name`,
//!   `reasons` (joined with `；`), `materials` (joined with `、`), `step` (`待录入` until the
//!   clerk records, then `已录入`), `completed_on` (the hall date, `YYYY-MM-DD`) and `round`;
//! - `resupply` (补正 round N ≥ 1) puts the task back on the worklist: the entry is pending
//!   again with its `round` and the `supplement` handed in (what the department asked for, the
//!   materials: code, name, form, copies, file URI), the previous round's record kept in its
//!   `history`; the same round again changes nothing. The clerk hands the materials to the
//!   department and completes the round like the first, naming it (`--round N`), so a command
//!   meant for one round can never record another.
//!
//! A recorded outcome cannot be changed: completing again with the same record (of the same
//! round) is accepted (nothing changes), with a different one refused.
//!
//! This module is the kind: it builds the system from a department's settings and answers the
//! runtime's calls through the worklist, masking the task's personal data
//! ([`yichuang::privacy::mask_task_json`]) before any of it reaches a listing. The worklist file
//! and its operations are `worklist`'s, its table and migration `schema`'s, what the clerk
//! records and its checks `record`'s. This module never writes SQL, and never lets an
//! unmasked field into the worklist's listing.

mod record;
mod schema;
mod worklist;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::Kind;
use crate::config::DepartmentConfig;
use crate::mapping::Template;
use crate::system::{Answer, DepartmentSystem, Failure, Gate, Task, supplied};
use worklist::Entry;
use yichuang::proto::v1::SupplementDelivery;

pub use record::{CompleteError, Completed, Outcome, Record};
pub use worklist::{Pending, Resupplied, Worklist};

pub const KIND: Kind = Kind {
    name: "manual",
    about: "manual re-entry by a clerk, through a worklist",
    build,
};

const OPTIONS: &[&str] = &["worklist"];

fn build(config: &DepartmentConfig, gate: Gate) -> Result<Arc<dyn DepartmentSystem>, String> {
    let o = super::options(config, OPTIONS, &["worklist"])?;
    let worklist = Worklist::open(Path::new(&o["worklist"]))?;
    Ok(Arc::new(Manual {
        worklist: Arc::new(worklist),
        request: config.mapping.request.clone(),
        material_names: config.material_names.clone(),
        gate,
    }))
}

/// The worklist file of a department whose kind is `manual`, from its settings.
pub fn worklist_of(config: &DepartmentConfig) -> Result<Worklist, String> {
    if config.kind != KIND.name {
        return Err(format!(
            "department {} is of kind {:?}, not manual: it has no worklist",
            config.department, config.kind
        ));
    }
    let path = config
        .options
        .get("worklist")
        .ok_or_else(|| format!("department {} needs options.worklist", config.department))?;
    // The adapter creates it; a clerk's command on a file that is not there is at the wrong
    // settings, and must not make an empty worklist that nobody serves.
    if !Path::new(path).exists() {
        return Err(format!(
            "worklist {path} does not exist: is the adapter serving {} with these settings started?",
            config.department
        ));
    }
    Worklist::open(Path::new(path))
}

struct Manual {
    worklist: Arc<Worklist>,
    request: std::collections::BTreeMap<String, Template>,
    /// Material code → name, for supplements.
    material_names: std::collections::BTreeMap<String, String>,
    gate: Gate,
}

impl Manual {
    /// Runs a worklist operation off the async threads, after the gate.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Worklist) -> Result<T, String> + Send + 'static,
    ) -> Result<T, Failure> {
        self.gate.permit().await;
        let w = self.worklist.clone();
        tokio::task::spawn_blocking(move || f(&w))
            .await
            .map_err(|e| Failure::transient(format!("worklist: {e}")))?
            .map_err(Failure::transient)
    }
}

#[async_trait::async_trait]
impl DepartmentSystem for Manual {
    async fn submit(&self, task: &Task) -> Result<Answer, Failure> {
        let mut masked = crate::mapping::task_json(&task.message);
        yichuang::privacy::mask_task_json(&mut masked);
        // The masked fields are rendered from the masked message, so no field can slip
        // through unmasked whatever the mapping names.
        let masked_fields: std::collections::BTreeMap<&String, String> = self
            .request
            .iter()
            .map(|(k, t)| (k, t.render(&masked).unwrap_or_else(|_| "***".into())))
            .collect();
        let t = task.message.task.clone().unwrap_or_default();
        let entry = Entry {
            task_id: task.id().to_string(),
            case_number: task.message.case_number.clone(),
            department: t.department,
            item_code: t.item_code,
            item_name: t.item_name,
            fields: serde_json::to_string(&task.fields).unwrap_or_default(),
            masked_fields: serde_json::to_string(&masked_fields).unwrap_or_default(),
        };
        let id = task.id().to_string();
        self.run(move |w| {
            w.put(&entry)?;
            w.answer(&id)
        })
        .await?
        .ok_or_else(|| Failure::transient("the task is not on the worklist after adding it"))
    }

    async fn poll(&self, task: &Task, _department_case_number: &str) -> Result<Answer, Failure> {
        let id = task.id().to_string();
        let path = self.worklist.path().display().to_string();
        self.run(move |w| w.answer(&id)).await?.ok_or_else(|| {
            Failure::permanent(format!(
                "task {} is no longer on the worklist {path} (was the file replaced?); the window must hand it over again",
                task.id()
            ))
        })
    }

    async fn find(&self, task: &Task) -> Result<Option<Answer>, Failure> {
        let id = task.id().to_string();
        self.run(move |w| w.answer(&id)).await
    }

    async fn resupply(
        &self,
        task: &Task,
        _department_case_number: &str,
        supplement: &SupplementDelivery,
    ) -> Result<Answer, Failure> {
        let materials: Vec<Value> = supplied(supplement, &self.material_names)
            .iter()
            .map(|m| {
                serde_json::json!({
                    "code": m.code,
                    "name": m.name,
                    "form": m.form,
                    "copies": m.copies,
                    "uri": m.uri,
                })
            })
            .collect();
        let handed_in = serde_json::json!({
            "requested": supplement.requested,
            "materials": materials,
        });
        let (id, round) = (task.id().to_string(), supplement.round);
        let path = self.worklist.path().display().to_string();
        let answer = self
            .run(move |w| match w.resupply(&id, round, &handed_in)? {
                Some(_) => w.answer(&id),
                None => Ok(None),
            })
            .await?;
        answer.ok_or_else(|| {
            Failure::permanent(format!(
                "task {} is not on the worklist {path} (was the file replaced?); the window must hand it over again",
                task.id()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example submission, masked as the clerk's listing renders it, carries no personal
    /// data the log scan would find (the recipient of a mailed result is a name too).
    #[test]
    fn the_examples_are_masked_for_the_clerk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let names = yichuang::privacy::parse_names(
            &std::fs::read_to_string(root.join("tests/fixtures/personal-names.txt")).unwrap(),
        )
        .unwrap();
        for name in ["kai-canguan", "qiye-kaiban", "bdc-deficient"] {
            let text =
                std::fs::read_to_string(root.join(format!("examples/cases/{name}.json"))).unwrap();
            let message = yichuang::proto::v1::TaskMessage {
                submission: Some(serde_json::from_str(&text).unwrap()),
                ..Default::default()
            };
            let mut v = crate::mapping::task_json(&message);
            let before = yichuang::privacy::scan(&v.to_string(), &names).len();
            assert!(before >= 3, "{name}: the example names persons");
            yichuang::privacy::mask_task_json(&mut v);
            let found = yichuang::privacy::scan(&v.to_string(), &names);
            assert!(found.is_empty(), "{name}: {found:#?}");
        }
    }
}
