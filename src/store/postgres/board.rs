//! The operations console's reads on PostgreSQL ([`crate::store::board`]).

use super::{PgStore, pool_err};
use crate::store::StoreError;
use crate::store::board::{self, DeadlineCounts, FlowCount, TaskLine};

fn task_line(r: &tokio_postgres::Row) -> TaskLine {
    TaskLine {
        task_id: r.get(0),
        case_number: r.get(1),
        hall_code: r.get(2),
        window_code: r.get(3),
        department: r.get(4),
        item_code: r.get(5),
        status: r.get(6),
        accepted_at_ms: r.get(7),
        due_ms: r.get(8),
        decided_ms: r.get(9),
        provisional: r.get::<_, i16>(10) != 0,
        warned: r.get(11),
    }
}

impl PgStore {
    pub(in crate::store) async fn flow_counts(
        &self,
        since_ms: i64,
    ) -> Result<Vec<FlowCount>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                &board::postgres_sql(&board::flow_counts_sql()),
                &[&since_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| FlowCount {
                department: r.get(0),
                minute_ms: r.get(1),
                kind: r.get(2),
                count: r.get(3),
            })
            .collect())
    }

    pub(in crate::store) async fn department_tasks(
        &self,
        department: &str,
        limit: i64,
    ) -> Result<Vec<TaskLine>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                &board::postgres_sql(&board::department_tasks_sql()),
                &[&department, &limit],
            )
            .await?;
        Ok(rows.iter().map(task_line).collect())
    }

    pub(in crate::store) async fn deadline_board(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<TaskLine>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                &board::postgres_sql(&board::deadline_board_sql()),
                &[&now_ms, &limit],
            )
            .await?;
        Ok(rows.iter().map(task_line).collect())
    }

    pub(in crate::store) async fn case_by_submission(
        &self,
        submission_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                &board::postgres_sql(board::CASE_BY_SUBMISSION),
                &[&submission_id],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(in crate::store) async fn cases_by_department_number(
        &self,
        number: &str,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let pattern = board::department_number_pattern(number);
        let rows = client
            .query(
                &board::postgres_sql(board::CASES_BY_DEPARTMENT_NUMBER),
                &[&pattern],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(board::exactly_numbered(rows, number))
    }

    pub(in crate::store) async fn cases_by_party_id(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let sql = board::postgres_sql(board::CASE_BODIES);
        let mut found = Vec::new();
        let mut after = Some(String::new());
        while let Some(from) = after {
            let page = client
                .query(&sql, &[&from, &board::CASE_PAGE])
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            after = board::match_page(page, id, &mut found, limit);
        }
        Ok(found)
    }

    pub(in crate::store) async fn deadline_counts(
        &self,
        now_ms: i64,
    ) -> Result<Vec<DeadlineCounts>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(&board::postgres_sql(board::DEADLINE_COUNTS), &[&now_ms])
            .await?;
        Ok(rows
            .iter()
            .map(|r| DeadlineCounts {
                department: r.get(0),
                hall_code: r.get(1),
                window_code: r.get(2),
                red: r.get(3),
                yellow: r.get(4),
                provisional: r.get(5),
            })
            .collect())
    }
}
