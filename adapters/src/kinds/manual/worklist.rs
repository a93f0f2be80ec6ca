//! The worklist file: a SQLite file that plays the legacy system for the runtime, and the
//! clerk's operations on it — put a task on it, read its answer back, list what waits (masked),
//! record the clerk's entry, put a task back for a supplement round. This module owns the
//! worklist's rows and their SQL (`schema` owns the table). It never knows of the bus, the
//! runtime's retries or a department's mapping; it never lists a task's fields unmasked (the
//! kind hands it both, the listing reads only the masked ones); and it never changes a recorded
//! outcome.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::record::{CompleteError, Completed, Record};
use super::schema;
use crate::system::Answer;

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

/// What `resupply` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resupplied {
    /// The task is pending again for the round.
    Pending,
    /// The round (or a later one) was there already: nothing changed.
    AlreadyThere,
}

/// The worklist file.
#[derive(Debug, Clone)]
pub struct Worklist {
    path: PathBuf,
}

/// A task put on the worklist.
pub(super) struct Entry {
    pub(super) task_id: String,
    pub(super) case_number: String,
    pub(super) department: String,
    pub(super) item_code: String,
    pub(super) item_name: String,
    pub(super) fields: String,
    pub(super) masked_fields: String,
}

impl Worklist {
    /// Opens (and creates, when new) the worklist at `path`.
    pub fn open(path: &Path) -> Result<Worklist, String> {
        let w = Worklist {
            path: path.to_path_buf(),
        };
        let c = w.connect()?;
        schema::migrate(&c).map_err(|(what, e)| w.problem(&what, e))?;
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

    pub(super) fn put(&self, e: &Entry) -> Result<(), String> {
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
        let row = Row::read(&c, task_id).map_err(|e| self.problem("cannot read the task", e))?;
        Ok(row.map(Row::answer))
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
        let Some(row) = Row::read(&tx, task_id).map_err(store)? else {
            return Ok(None);
        };
        if row.round >= round {
            return Ok(Some(Resupplied::AlreadyThere));
        }
        let mut history = row.history();
        if row.outcome.is_some() {
            history.push(row.history_entry());
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
        let Some(row) = Row::read(&tx, task_id).map_err(store)? else {
            return Err(CompleteError::UnknownTask(task_id.to_string()));
        };
        let current = row.round;
        let number_given = r.department_case_number.trim().to_string();
        let wrong_round = |given| CompleteError::WrongRound {
            task: task_id.to_string(),
            current,
            given,
        };
        match round {
            None if current > 0 => return Err(wrong_round(None)),
            Some(g) if g > current || g < 0 => return Err(wrong_round(Some(g))),
            Some(g) if g < current => {
                // A round done before: only its own record again is accepted.
                let history = row.history();
                let Some(old) = history.iter().find(|h| h["round"] == g) else {
                    return Err(wrong_round(Some(g)));
                };
                return earlier_round_again(task_id, g, old, r, &number_given);
            }
            _ => {}
        }
        let json = |v: &Vec<String>| (!v.is_empty()).then(|| serde_json::to_string(v).unwrap());
        if let Some(outcome) = row.outcome {
            let same = outcome == r.outcome.as_str()
                && row.department_case_number.as_deref() == Some(number_given.as_str())
                && row.document_number == r.document_number
                && row.document_name == r.document_name
                && row.reasons == json(&r.reasons)
                && row.materials == json(&r.materials);
            return if same {
                Ok(Completed::AlreadyRecorded)
            } else {
                Err(CompleteError::AlreadyCompleted {
                    task: task_id.to_string(),
                    round: current,
                    outcome,
                    case_number: row.department_case_number.unwrap_or_default(),
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

/// The clerk's command for an earlier round, `round`, again: accepted (nothing changes) when
/// it repeats that round's record (`old`, from the history) exactly, refused otherwise.
fn earlier_round_again(
    task_id: &str,
    round: i32,
    old: &Value,
    r: &Record,
    number_given: &str,
) -> Result<Completed, CompleteError> {
    let text = |k: &str| old[k].as_str().map(str::to_string);
    let list =
        |k: &str| -> Vec<String> { serde_json::from_value(old[k].clone()).unwrap_or_default() };
    let same = text("outcome").as_deref() == Some(r.outcome.as_str())
        && text("department_case_number").as_deref() == Some(number_given)
        && text("document_number") == r.document_number
        && text("document_name") == r.document_name
        && list("reasons") == r.reasons
        && list("materials") == r.materials;
    if same {
        Ok(Completed::AlreadyRecorded)
    } else {
        Err(CompleteError::AlreadyCompleted {
            task: task_id.to_string(),
            round,
            outcome: text("outcome").unwrap_or_default(),
            case_number: text("department_case_number").unwrap_or_default(),
        })
    }
}

/// A task's row as the runtime and the clerk's commands read it: the round it is at, that
/// round's record (empty while the task waits for the clerk), and the earlier rounds' records.
struct Row {
    /// 0, or the supplement round the task came back for.
    round: i32,
    /// `approved`, `rejected` or `supplement`; `None` until the clerk records.
    outcome: Option<String>,
    department_case_number: Option<String>,
    document_number: Option<String>,
    document_name: Option<String>,
    /// A JSON list of text, as stored; `None` when there is none.
    reasons: Option<String>,
    /// A JSON list of text, as stored; `None` when there is none.
    materials: Option<String>,
    clerk: Option<String>,
    /// RFC 3339, UTC.
    completed_at: Option<String>,
    /// A JSON list of the earlier rounds' records (see [`Row::history_entry`]).
    history: Option<String>,
}

impl Row {
    /// The task's row; `None` when it is not on the worklist.
    fn read(c: &Connection, task_id: &str) -> rusqlite::Result<Option<Row>> {
        c.query_row(
            "SELECT round, outcome, department_case_number, document_number, document_name,
                    reasons, materials, clerk, completed_at, history
             FROM worklist WHERE task_id = ?1",
            params![task_id],
            |r| {
                Ok(Row {
                    round: r.get("round")?,
                    outcome: r.get("outcome")?,
                    department_case_number: r.get("department_case_number")?,
                    document_number: r.get("document_number")?,
                    document_name: r.get("document_name")?,
                    reasons: r.get("reasons")?,
                    materials: r.get("materials")?,
                    clerk: r.get("clerk")?,
                    completed_at: r.get("completed_at")?,
                    history: r.get("history")?,
                })
            },
        )
        .optional()
    }

    /// The answer the runtime reads (see the kind's documentation for its fields).
    fn answer(self) -> Answer {
        let mut a = Answer::new();
        a.insert("round".into(), self.round.to_string());
        let list = |v: Option<String>| -> Vec<String> {
            v.and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default()
        };
        a.insert(
            "step".into(),
            if self.outcome.is_some() {
                "已录入"
            } else {
                "待录入"
            }
            .into(),
        );
        for (k, v) in [
            ("department_case_number", self.department_case_number),
            ("outcome", self.outcome),
            ("document_number", self.document_number),
            ("document_name", self.document_name),
        ] {
            if let Some(v) = v {
                a.insert(k.into(), v);
            }
        }
        let reasons = list(self.reasons);
        if !reasons.is_empty() {
            a.insert("reasons".into(), reasons.join("；"));
        }
        let materials = list(self.materials);
        if !materials.is_empty() {
            a.insert("materials".into(), materials.join("、"));
        }
        if let Some(t) = self
            .completed_at
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        {
            let hall = t.with_timezone(&chrono::Utc) + chrono::Duration::hours(8);
            a.insert("completed_on".into(), hall.format("%Y-%m-%d").to_string());
        }
        a
    }

    /// The records of the earlier rounds.
    fn history(&self) -> Vec<Value> {
        self.history
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default()
    }

    /// This round's record, as its history keeps it when the task comes back for the next.
    fn history_entry(&self) -> Value {
        let list = |v: &Option<String>| -> Value {
            v.as_deref()
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or(Value::Array(vec![]))
        };
        serde_json::json!({
            "round": self.round,
            "outcome": self.outcome,
            "department_case_number": self.department_case_number,
            "document_number": self.document_number,
            "document_name": self.document_name,
            "reasons": list(&self.reasons),
            "materials": list(&self.materials),
            "clerk": self.clerk,
            "completed_at": self.completed_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::manual::Outcome;
    use crate::kinds::manual::record::tests::record;

    /// The task both tests put on the worklist.
    fn entry() -> Entry {
        Entry {
            task_id: "C1-01".into(),
            case_number: "C1".into(),
            department: "gjj".into(),
            item_code: "GJJ-DJ".into(),
            item_name: "住房公积金单位缴存登记".into(),
            fields: "{}".into(),
            masked_fields: "{}".into(),
        }
    }

    #[test]
    fn a_task_is_added_once_and_completed_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = Worklist::open(&dir.path().join("w.db")).unwrap();
        let e = entry();
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
        w.put(&entry()).unwrap();
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
}
