//! Manual re-entry: the department's system cannot be reached at all, so a clerk keys the case
//! into it and records what it gave back. This module owns the worklist that stands between
//! the two — a SQLite file (option `worklist`) that plays the legacy system for the runtime —
//! and the clerk's operations on it, which `yichuang-adapter manual list|complete` calls:
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::Kind;
use crate::config::DepartmentConfig;
use crate::mapping::Template;
use crate::system::{Answer, DepartmentSystem, Failure, Gate, Task, supplied};
use yichuang::proto::v1::SupplementDelivery;

pub const KIND: Kind = Kind {
    name: "manual",
    about: "manual re-entry by a clerk, through a worklist",
    build,
};

const OPTIONS: &[&str] = &["worklist"];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS worklist (
    task_id TEXT PRIMARY KEY,
    case_number TEXT NOT NULL,
    department TEXT NOT NULL,
    item_code TEXT NOT NULL,
    item_name TEXT NOT NULL,
    fields TEXT NOT NULL,
    masked_fields TEXT NOT NULL,
    waiting_since TEXT NOT NULL,
    department_case_number TEXT,
    outcome TEXT CHECK (outcome IN ('approved', 'rejected', 'supplement')),
    document_number TEXT,
    document_name TEXT,
    reasons TEXT,
    materials TEXT,
    clerk TEXT,
    completed_at TEXT,
    round INTEGER NOT NULL DEFAULT 0,
    supplement TEXT,
    history TEXT
);
";

/// Columns added after the first release, for worklists created before them.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("round", "INTEGER NOT NULL DEFAULT 0"),
    ("supplement", "TEXT"),
    ("history", "TEXT"),
];

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

/// A decision a clerk records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Approved,
    Rejected,
    Supplement,
}

impl Outcome {
    pub fn parse(v: &str) -> Option<Outcome> {
        Some(match v {
            "approved" => Outcome::Approved,
            "rejected" => Outcome::Rejected,
            "supplement" => Outcome::Supplement,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Rejected => "rejected",
            Outcome::Supplement => "supplement",
        }
    }
}

/// What the clerk records about one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub department_case_number: String,
    pub outcome: Outcome,
    pub document_number: Option<String>,
    pub document_name: Option<String>,
    pub reasons: Vec<String>,
    pub materials: Vec<String>,
    pub clerk: Option<String>,
}

impl Record {
    /// Checks the record is complete and consistent; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let text_ok = |v: &str| !v.chars().any(char::is_control);
        let n = self.department_case_number.trim();
        if n.is_empty() {
            return Err(
                "--case-number is empty: give the case number the department system showed".into(),
            );
        }
        if n.chars().count() > 64 || !text_ok(n) || n.contains(char::is_whitespace) {
            return Err(format!(
                "--case-number {n:?} is not a case number: at most 64 characters, no spaces or control characters"
            ));
        }
        let all = self
            .reasons
            .iter()
            .chain(&self.materials)
            .chain(&self.document_number)
            .chain(&self.document_name);
        for v in all {
            if v.trim().is_empty() || !text_ok(v) || v.chars().count() > 500 {
                return Err(format!(
                    "{v:?}: values are 1 to 500 characters without control characters"
                ));
            }
        }
        let has_document = self.document_number.is_some() || self.document_name.is_some();
        match self.outcome {
            Outcome::Approved => {
                if !self.reasons.is_empty() || !self.materials.is_empty() {
                    return Err(
                        "--reason and --material go with rejected and supplement, not approved"
                            .into(),
                    );
                }
                if self.document_number.is_some() != self.document_name.is_some() {
                    return Err(
                        "an approval's document needs both --document-number and --document-name"
                            .into(),
                    );
                }
            }
            Outcome::Rejected => {
                if has_document || !self.materials.is_empty() {
                    return Err(
                        "a rejection takes --reason only (no --document-*, no --material)".into(),
                    );
                }
                if self.reasons.is_empty() {
                    return Err(
                        "a rejection needs at least one --reason, as the department gave it".into(),
                    );
                }
            }
            Outcome::Supplement => {
                if has_document || !self.reasons.is_empty() {
                    return Err(
                        "a supplement request takes --material only (no --document-*, no --reason)"
                            .into(),
                    );
                }
                if self.materials.is_empty() {
                    return Err("a supplement request needs at least one --material the department asks for".into());
                }
            }
        }
        Ok(())
    }
}

/// A pending task, as listed for the clerk: personal data masked.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub task_id: String,
    pub case_number: String,
    pub item_code: String,
    pub item_name: String,
    pub waiting_since: String,
    pub fields: serde_json::Map<String, Value>,
    /// 0, or the supplement round the task came back for: complete it with `--round`.
    pub round: i32,
    /// The supplement handed in for that round: `requested` (what the department asked for)
    /// and `materials` (code, name, form, copies, uri).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplement: Option<Value>,
}

/// Why `complete` did not record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    #[error("task {0} is not on the worklist (check the id with `manual list`)")]
    UnknownTask(String),
    #[error(
        "task {task} was already completed{} as {outcome} with case number {case_number}; a recorded outcome cannot be changed",
        in_round(*.round)
    )]
    AlreadyCompleted {
        task: String,
        /// The supplement round the record is of (0: the first).
        round: i32,
        outcome: String,
        case_number: String,
    },
    #[error("{}", wrong_round(.task, *.current, *.given))]
    WrongRound {
        task: String,
        /// The round the task waits to be completed for.
        current: i32,
        /// The round the clerk named, if any.
        given: Option<i32>,
    },
    #[error("{0}")]
    Worklist(String),
}

fn in_round(round: i32) -> String {
    if round > 0 {
        format!(" in supplement round {round}")
    } else {
        String::new()
    }
}

fn wrong_round(task: &str, current: i32, given: Option<i32>) -> String {
    match given {
        None => format!(
            "task {task} came back after supplement round {current}: name the round you complete with --round {current}"
        ),
        Some(g) => format!(
            "task {task} is at supplement round {current}, not {g}: check the round with `manual list`"
        ),
    }
}

/// What `resupply` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resupplied {
    /// The task is pending again for the round.
    Pending,
    /// The round (or a later one) was there already: nothing changed.
    AlreadyThere,
}

/// What `complete` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    Recorded,
    /// The same record was there already.
    AlreadyRecorded,
}

/// The worklist file.
#[derive(Debug, Clone)]
pub struct Worklist {
    path: PathBuf,
}

/// A task put on the worklist.
struct Entry {
    task_id: String,
    case_number: String,
    department: String,
    item_code: String,
    item_name: String,
    fields: String,
    masked_fields: String,
}

impl Worklist {
    /// Opens (and creates, when new) the worklist at `path`.
    pub fn open(path: &Path) -> Result<Worklist, String> {
        let w = Worklist {
            path: path.to_path_buf(),
        };
        let c = w.connect()?;
        c.execute_batch(SCHEMA)
            .map_err(|e| w.problem("cannot create its table", e))?;
        let have: Vec<String> = c
            .prepare("SELECT name FROM pragma_table_info('worklist')")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| w.problem("cannot read its columns", e))?;
        for (name, ty) in ADDED_COLUMNS {
            if !have.iter().any(|h| h == name) {
                c.execute_batch(&format!("ALTER TABLE worklist ADD COLUMN {name} {ty}"))
                    .map_err(|e| w.problem(&format!("cannot add column {name}"), e))?;
            }
        }
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn problem(&self, what: &str, e: rusqlite::Error) -> String {
        format!("worklist {}: {what}: {e}", self.path.display())
    }

    fn connect(&self) -> Result<Connection, String> {
        let c = Connection::open(&self.path).map_err(|e| {
            self.problem(
                "cannot open it (does its directory exist, may this user write there?)",
                e,
            )
        })?;
        c.busy_timeout(Duration::from_secs(5))
            .map_err(|e| self.problem("busy timeout", e))?;
        c.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| self.problem("WAL mode", e))?;
        Ok(c)
    }

    fn put(&self, e: &Entry) -> Result<(), String> {
        self.connect()?
            .execute(
                "INSERT INTO worklist (task_id, case_number, department, item_code, item_name, fields, masked_fields, waiting_since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (task_id) DO NOTHING",
                params![
                    e.task_id,
                    e.case_number,
                    e.department,
                    e.item_code,
                    e.item_name,
                    e.fields,
                    e.masked_fields,
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ],
            )
            .map_err(|err| self.problem("cannot add the task", err))?;
        Ok(())
    }

    /// The answer about a task, as the runtime reads it; `None` when it is not there.
    pub fn answer(&self, task_id: &str) -> Result<Option<Answer>, String> {
        let c = self.connect()?;
        let row = c
            .query_row(
                "SELECT department_case_number, outcome, document_number, document_name, reasons, materials, completed_at, round
                 FROM worklist WHERE task_id = ?1",
                params![task_id],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, i32>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.problem("cannot read the task", e))?;
        let Some((number, outcome, doc_number, doc_name, reasons, materials, completed, round)) =
            row
        else {
            return Ok(None);
        };
        let mut a = Answer::new();
        a.insert("round".into(), round.to_string());
        let list = |v: Option<String>| -> Vec<String> {
            v.and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default()
        };
        a.insert(
            "step".into(),
            if outcome.is_some() {
                "已录入"
            } else {
                "待录入"
            }
            .into(),
        );
        for (k, v) in [
            ("department_case_number", number),
            ("outcome", outcome),
            ("document_number", doc_number),
            ("document_name", doc_name),
        ] {
            if let Some(v) = v {
                a.insert(k.into(), v);
            }
        }
        let reasons = list(reasons);
        if !reasons.is_empty() {
            a.insert("reasons".into(), reasons.join("；"));
        }
        let materials = list(materials);
        if !materials.is_empty() {
            a.insert("materials".into(), materials.join("、"));
        }
        if let Some(t) = completed.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()) {
            let hall = t.with_timezone(&chrono::Utc) + chrono::Duration::hours(8);
            a.insert("completed_on".into(), hall.format("%Y-%m-%d").to_string());
        }
        Ok(Some(a))
    }

    /// Puts a task back on the worklist for supplement round `round`, with what was handed in
    /// (`supplement`, JSON); the record of the round before goes to its history. Nothing
    /// changes when the task is at that round or a later one already. `None`: no such task.
    pub fn resupply(
        &self,
        task_id: &str,
        round: i32,
        supplement: &Value,
    ) -> Result<Option<Resupplied>, String> {
        let store = |e: rusqlite::Error| self.problem("cannot put the task back", e);
        let mut c = self.connect()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store)?;
        let row = tx
            .query_row(
                "SELECT round, outcome, department_case_number, document_number, document_name,
                        reasons, materials, clerk, completed_at, history
                 FROM worklist WHERE task_id = ?1",
                params![task_id],
                |r| {
                    Ok((
                        r.get::<_, i32>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, Option<String>>(9)?,
                    ))
                },
            )
            .optional()
            .map_err(store)?;
        let Some((
            current,
            outcome,
            number,
            doc_number,
            doc_name,
            reasons,
            materials,
            clerk,
            at,
            history,
        )) = row
        else {
            return Ok(None);
        };
        if current >= round {
            return Ok(Some(Resupplied::AlreadyThere));
        }
        let mut history: Vec<Value> = history
            .and_then(|h| serde_json::from_str(&h).ok())
            .unwrap_or_default();
        if outcome.is_some() {
            let list = |v: Option<String>| -> Value {
                v.and_then(|v| serde_json::from_str(&v).ok())
                    .unwrap_or(Value::Array(vec![]))
            };
            history.push(serde_json::json!({
                "round": current,
                "outcome": outcome,
                "department_case_number": number,
                "document_number": doc_number,
                "document_name": doc_name,
                "reasons": list(reasons),
                "materials": list(materials),
                "clerk": clerk,
                "completed_at": at,
            }));
        }
        tx.execute(
            "UPDATE worklist SET round = ?2, supplement = ?3, history = ?4, waiting_since = ?5,
                 outcome = NULL, document_number = NULL, document_name = NULL, reasons = NULL,
                 materials = NULL, clerk = NULL, completed_at = NULL
             WHERE task_id = ?1",
            params![
                task_id,
                round,
                supplement.to_string(),
                Value::Array(history).to_string(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ],
        )
        .map_err(store)?;
        tx.commit().map_err(store)?;
        Ok(Some(Resupplied::Pending))
    }

    /// Tasks waiting for the clerk, oldest first, personal data masked.
    pub fn pending(&self) -> Result<Vec<Pending>, String> {
        let c = self.connect()?;
        let mut s = c
            .prepare(
                "SELECT task_id, case_number, item_code, item_name, waiting_since, masked_fields,
                        round, supplement
                 FROM worklist WHERE outcome IS NULL ORDER BY waiting_since, task_id",
            )
            .map_err(|e| self.problem("cannot list", e))?;
        let rows = s
            .query_map([], |r| {
                let fields: String = r.get(5)?;
                let supplement: Option<String> = r.get(7)?;
                Ok(Pending {
                    task_id: r.get(0)?,
                    case_number: r.get(1)?,
                    item_code: r.get(2)?,
                    item_name: r.get(3)?,
                    waiting_since: r.get(4)?,
                    fields: serde_json::from_str(&fields).unwrap_or_default(),
                    round: r.get(6)?,
                    supplement: supplement.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .map_err(|e| self.problem("cannot list", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.problem("cannot list", e))
    }

    /// Records the clerk's entry for a task, once per round. `round` is the supplement round
    /// the clerk completes: it must be named once the task came back after a supplement, and
    /// must be the task's current round — or an earlier one whose record it repeats exactly
    /// (accepted, nothing changes).
    pub fn complete(
        &self,
        task_id: &str,
        round: Option<i32>,
        r: &Record,
    ) -> Result<Completed, CompleteError> {
        r.validate().map_err(CompleteError::Worklist)?;
        let store = |e: rusqlite::Error| CompleteError::Worklist(self.problem("cannot record", e));
        let mut c = self.connect().map_err(CompleteError::Worklist)?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store)?;
        let json = |v: &Vec<String>| (!v.is_empty()).then(|| serde_json::to_string(v).unwrap());
        let existing = tx
            .query_row(
                "SELECT outcome, department_case_number, document_number, document_name, reasons, materials, round, history FROM worklist WHERE task_id = ?1",
                params![task_id],
                |row| {
                    Ok((
                        row.get::<_, Option<String>>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, i32>(6)?,
                        row.get::<_, Option<String>>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(store)?;
        let Some((outcome, number, doc_number, doc_name, reasons, materials, current, history)) =
            existing
        else {
            return Err(CompleteError::UnknownTask(task_id.to_string()));
        };
        let number_given = r.department_case_number.trim().to_string();
        match round {
            None if current > 0 => {
                return Err(CompleteError::WrongRound {
                    task: task_id.to_string(),
                    current,
                    given: None,
                });
            }
            Some(g) if g > current || g < 0 => {
                return Err(CompleteError::WrongRound {
                    task: task_id.to_string(),
                    current,
                    given: Some(g),
                });
            }
            Some(g) if g < current => {
                // A round done before: only its own record again is accepted.
                let history: Vec<Value> = history
                    .and_then(|h| serde_json::from_str(&h).ok())
                    .unwrap_or_default();
                let Some(old) = history.iter().find(|h| h["round"] == g) else {
                    return Err(CompleteError::WrongRound {
                        task: task_id.to_string(),
                        current,
                        given: Some(g),
                    });
                };
                let text = |k: &str| old[k].as_str().map(str::to_string);
                let list = |k: &str| -> Vec<String> {
                    serde_json::from_value(old[k].clone()).unwrap_or_default()
                };
                let same = text("outcome").as_deref() == Some(r.outcome.as_str())
                    && text("department_case_number").as_deref() == Some(number_given.as_str())
                    && text("document_number") == r.document_number
                    && text("document_name") == r.document_name
                    && list("reasons") == r.reasons
                    && list("materials") == r.materials;
                return if same {
                    Ok(Completed::AlreadyRecorded)
                } else {
                    Err(CompleteError::AlreadyCompleted {
                        task: task_id.to_string(),
                        round: g,
                        outcome: text("outcome").unwrap_or_default(),
                        case_number: text("department_case_number").unwrap_or_default(),
                    })
                };
            }
            _ => {}
        }
        if let Some(outcome) = outcome {
            let same = outcome == r.outcome.as_str()
                && number.as_deref() == Some(number_given.as_str())
                && doc_number == r.document_number
                && doc_name == r.document_name
                && reasons == json(&r.reasons)
                && materials == json(&r.materials);
            return if same {
                Ok(Completed::AlreadyRecorded)
            } else {
                Err(CompleteError::AlreadyCompleted {
                    task: task_id.to_string(),
                    round: current,
                    outcome,
                    case_number: number.unwrap_or_default(),
                })
            };
        }
        tx.execute(
            "UPDATE worklist SET department_case_number = ?2, outcome = ?3, document_number = ?4,
                 document_name = ?5, reasons = ?6, materials = ?7, clerk = ?8, completed_at = ?9
             WHERE task_id = ?1 AND outcome IS NULL",
            params![
                task_id,
                number_given,
                r.outcome.as_str(),
                r.document_number,
                r.document_name,
                json(&r.reasons),
                json(&r.materials),
                r.clerk,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ],
        )
        .map_err(store)?;
        tx.commit().map_err(store)?;
        Ok(Completed::Recorded)
    }
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

    fn record(outcome: Outcome) -> Record {
        Record {
            department_case_number: "GJJ2019001".into(),
            outcome,
            document_number: None,
            document_name: None,
            reasons: vec![],
            materials: vec![],
            clerk: None,
        }
    }

    #[test]
    fn records_are_checked_for_what_each_outcome_needs() {
        assert_eq!(record(Outcome::Approved).validate(), Ok(()));
        let mut r = record(Outcome::Rejected);
        assert!(r.validate().unwrap_err().contains("--reason"));
        r.reasons.push("缴存基数不符".into());
        assert_eq!(r.validate(), Ok(()));
        r.document_number = Some("X".into());
        assert!(r.validate().unwrap_err().contains("--reason only"));
        let mut r = record(Outcome::Supplement);
        assert!(r.validate().unwrap_err().contains("--material"));
        let mut r2 = record(Outcome::Approved);
        r2.document_number = Some("GJJ-1".into());
        assert!(r2.validate().unwrap_err().contains("both"));
        r.department_case_number = " ".into();
        assert!(r.validate().unwrap_err().contains("--case-number is empty"));
        r.department_case_number = "A B".into();
        assert!(r.validate().unwrap_err().contains("not a case number"));
    }

    #[test]
    fn a_task_is_added_once_and_completed_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = Worklist::open(&dir.path().join("w.db")).unwrap();
        let e = Entry {
            task_id: "C1-01".into(),
            case_number: "C1".into(),
            department: "gjj".into(),
            item_code: "GJJ-DJ".into(),
            item_name: "住房公积金单位缴存登记".into(),
            fields: "{}".into(),
            masked_fields: "{}".into(),
        };
        w.put(&e).unwrap();
        w.put(&e).unwrap();
        assert_eq!(w.pending().unwrap().len(), 1);
        assert_eq!(w.answer("C1-01").unwrap().unwrap()["step"], "待录入");
        assert_eq!(w.answer("C9-01").unwrap(), None);
        let mut r = record(Outcome::Supplement);
        r.materials = vec!["缴存登记表".into(), "授权委托书".into()];
        assert_eq!(w.complete("C1-01", None, &r), Ok(Completed::Recorded));
        assert_eq!(
            w.complete("C1-01", None, &r),
            Ok(Completed::AlreadyRecorded)
        );
        let a = w.answer("C1-01").unwrap().unwrap();
        assert_eq!(a["materials"], "缴存登记表、授权委托书");
        assert_eq!(a["department_case_number"], "GJJ2019001");
        let mut other = record(Outcome::Rejected);
        other.reasons = vec!["x".into()];
        assert!(matches!(
            w.complete("C1-01", None, &other),
            Err(CompleteError::AlreadyCompleted { .. })
        ));
        assert_eq!(
            w.complete("C2-01", None, &r),
            Err(CompleteError::UnknownTask("C2-01".into()))
        );
        assert!(w.pending().unwrap().is_empty());
    }

    #[test]
    fn a_supplement_round_puts_the_task_back_and_is_completed_by_its_round() {
        let dir = tempfile::tempdir().unwrap();
        let w = Worklist::open(&dir.path().join("w.db")).unwrap();
        w.put(&Entry {
            task_id: "C1-01".into(),
            case_number: "C1".into(),
            department: "gjj".into(),
            item_code: "GJJ-DJ".into(),
            item_name: "住房公积金单位缴存登记".into(),
            fields: "{}".into(),
            masked_fields: "{}".into(),
        })
        .unwrap();
        let mut asked = record(Outcome::Supplement);
        asked.materials = vec!["授权委托书".into()];
        assert_eq!(w.complete("C1-01", None, &asked), Ok(Completed::Recorded));
        let handed_in =
            serde_json::json!({"requested": ["授权委托书"], "materials": [{"code": "SQWTS"}]});
        assert_eq!(w.resupply("C9-01", 1, &handed_in), Ok(None));
        assert_eq!(
            w.resupply("C1-01", 1, &handed_in),
            Ok(Some(Resupplied::Pending))
        );
        assert_eq!(
            w.resupply("C1-01", 1, &handed_in),
            Ok(Some(Resupplied::AlreadyThere)),
            "the same round twice is one"
        );
        let pending = w.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].round, 1);
        assert_eq!(
            pending[0].supplement.as_ref().unwrap()["requested"][0],
            "授权委托书"
        );
        let a = w.answer("C1-01").unwrap().unwrap();
        assert_eq!((a["step"].as_str(), a["round"].as_str()), ("待录入", "1"));
        assert!(
            !a.contains_key("outcome") && !a.contains_key("materials"),
            "{a:?}"
        );
        assert_eq!(a["department_case_number"], "GJJ2019001");

        // The round-0 command again does not record round 1: it says it was done.
        assert_eq!(
            w.complete("C1-01", Some(0), &asked),
            Ok(Completed::AlreadyRecorded)
        );
        assert!(matches!(
            w.complete("C1-01", None, &asked),
            Err(CompleteError::WrongRound {
                current: 1,
                given: None,
                ..
            })
        ));
        let approved = record(Outcome::Approved);
        let e = w.complete("C1-01", Some(0), &approved).unwrap_err();
        assert!(
            e.to_string()
                .contains("already completed as supplement with case number GJJ2019001"),
            "{e}"
        );
        assert!(matches!(
            w.complete("C1-01", Some(2), &approved),
            Err(CompleteError::WrongRound {
                current: 1,
                given: Some(2),
                ..
            })
        ));
        assert!(w.pending().unwrap().len() == 1, "nothing recorded yet");
        assert_eq!(
            w.complete("C1-01", Some(1), &approved),
            Ok(Completed::Recorded)
        );
        assert_eq!(
            w.complete("C1-01", Some(1), &approved),
            Ok(Completed::AlreadyRecorded)
        );
        let e = w.complete("C1-01", Some(1), &asked).unwrap_err();
        assert!(e.to_string().contains("in supplement round 1"), "{e}");
        assert_eq!(w.answer("C1-01").unwrap().unwrap()["outcome"], "approved");
        // An older round never comes back.
        assert_eq!(
            w.resupply("C1-01", 1, &handed_in),
            Ok(Some(Resupplied::AlreadyThere))
        );
        assert!(w.pending().unwrap().is_empty());
    }

    #[test]
    fn a_worklist_of_the_first_release_gains_the_round_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE worklist (task_id TEXT PRIMARY KEY, case_number TEXT NOT NULL,
             department TEXT NOT NULL, item_code TEXT NOT NULL, item_name TEXT NOT NULL,
             fields TEXT NOT NULL, masked_fields TEXT NOT NULL, waiting_since TEXT NOT NULL,
             department_case_number TEXT, outcome TEXT, document_number TEXT, document_name TEXT,
             reasons TEXT, materials TEXT, clerk TEXT, completed_at TEXT);
             INSERT INTO worklist VALUES ('C1-01', 'C1', 'gjj', 'GJJ-DJ', 'x', '{}', '{}',
             '2019-10-21T02:30:00Z', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
        )
        .unwrap();
        drop(c);
        let w = Worklist::open(&path).unwrap();
        assert_eq!(w.pending().unwrap()[0].round, 0);
        assert_eq!(w.answer("C1-01").unwrap().unwrap()["round"], "0");
        Worklist::open(&path).unwrap();
    }

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
