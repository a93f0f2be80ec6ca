//! The operations console's reads on SQLite ([`crate::store::board`]).

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::board::{self, DeadlineCounts, FlowCount, TaskLine};

fn task_line(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskLine> {
    Ok(TaskLine {
        task_id: r.get(0)?,
        case_number: r.get(1)?,
        hall_code: r.get(2)?,
        window_code: r.get(3)?,
        department: r.get(4)?,
        item_code: r.get(5)?,
        status: r.get(6)?,
        accepted_at_ms: r.get(7)?,
        due_ms: r.get(8)?,
        decided_ms: r.get(9)?,
        provisional: r.get::<_, i64>(10)? != 0,
        warned: r.get(11)?,
    })
}

impl SqliteStore {
    pub(in crate::store) async fn flow_counts(
        &self,
        since_ms: i64,
    ) -> Result<Vec<FlowCount>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&board::flow_counts_sql())?
                .query_map([since_ms], |r| {
                    Ok(FlowCount {
                        department: r.get(0)?,
                        minute_ms: r.get(1)?,
                        kind: r.get(2)?,
                        count: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn department_tasks(
        &self,
        department: &str,
        limit: i64,
    ) -> Result<Vec<TaskLine>, StoreError> {
        let department = department.to_string();
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&board::department_tasks_sql())?
                .query_map(params![department, limit], task_line)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn deadline_board(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<TaskLine>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&board::deadline_board_sql())?
                .query_map(params![now_ms, limit], task_line)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn case_by_submission(
        &self,
        submission_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let id = submission_id.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(board::CASE_BY_SUBMISSION)?
                .query_row([id], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn cases_by_department_number(
        &self,
        number: &str,
    ) -> Result<Vec<String>, StoreError> {
        let pattern = board::department_number_pattern(number);
        let rows = self
            .read(move |conn| {
                let rows = conn
                    .prepare_cached(board::CASES_BY_DEPARTMENT_NUMBER)?
                    .query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await?;
        Ok(board::exactly_numbered(rows, number))
    }

    pub(in crate::store) async fn cases_by_party_id(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        let mut after = Some(String::new());
        while let Some(from) = after {
            let page: Vec<(String, Vec<u8>)> = self
                .read(move |conn| {
                    let rows = conn
                        .prepare_cached(board::CASE_BODIES)?
                        .query_map(params![from, board::CASE_PAGE], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    Ok(rows)
                })
                .await?;
            after = board::match_page(page, id, &mut found, limit);
        }
        Ok(found)
    }

    pub(in crate::store) async fn deadline_counts(
        &self,
        now_ms: i64,
    ) -> Result<Vec<DeadlineCounts>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(board::DEADLINE_COUNTS)?
                .query_map([now_ms], |r| {
                    Ok(DeadlineCounts {
                        department: r.get(0)?,
                        hall_code: r.get(1)?,
                        window_code: r.get(2)?,
                        red: r.get(3)?,
                        yellow: r.get(4)?,
                        provisional: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}
