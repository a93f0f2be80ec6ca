//! The worklist's table, in one place: its definition, and the migration of worklists an
//! earlier release created (the columns added since are added when such a file is opened).
//! This module owns the worklist's SQL schema. It never reads or writes a task's row (that is
//! `worklist`'s), and it never drops, renames or rewrites a column: a worklist of any
//! earlier release must open with every row it holds.

use rusqlite::Connection;

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

/// Creates the table in a new worklist and adds the columns an older one lacks; opening the
/// same file again changes nothing. The error says what could not be done.
pub(super) fn migrate(c: &Connection) -> Result<(), (String, rusqlite::Error)> {
    c.execute_batch(SCHEMA)
        .map_err(|e| ("cannot create its table".to_string(), e))?;
    let have: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('worklist')")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| ("cannot read its columns".to_string(), e))?;
    for (name, ty) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            c.execute_batch(&format!("ALTER TABLE worklist ADD COLUMN {name} {ty}"))
                .map_err(|e| (format!("cannot add column {name}"), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::manual::Worklist;

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
}
