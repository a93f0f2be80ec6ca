//! What a clerk records about a task: the outcome (approved, rejected, supplement), the
//! department's case number, and what goes with the outcome (the document, the reasons, the
//! materials asked for); the checks a record must pass, and why recording it can be refused.
//! This module owns those rules and their words for the clerk; it never opens the worklist
//! (that is `worklist`'s).

use serde::Serialize;

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

/// What `complete` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    Recorded,
    /// The same record was there already.
    AlreadyRecorded,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::kinds::manual) fn record(outcome: Outcome) -> Record {
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
}
