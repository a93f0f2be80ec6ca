//! The 12345 hotline's work orders in the PostgreSQL engine: each order with its answer, and the
//! progress queries refused for wrong verification digits (counted per case number and day).

use super::{PgStore, pool_err};
use crate::store::{HotlineOrder, StoreError};

const COLUMNS: &str =
    "order_no, kind, case_number, caller, at_ms, day, outcome, answer, classification";

fn order(r: &tokio_postgres::Row) -> HotlineOrder {
    HotlineOrder {
        order_no: r.get(0),
        kind: r.get(1),
        case_number: r.get(2),
        caller: r.get(3),
        at_ms: r.get(4),
        day: r.get(5),
        outcome: r.get(6),
        answer: r.get(7),
        classification: r.get(8),
    }
}

impl PgStore {
    pub(in crate::store) async fn hotline_order(
        &self,
        order_no: &str,
    ) -> Result<Option<HotlineOrder>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_opt(
                format!("SELECT {COLUMNS} FROM hotline_orders WHERE order_no = $1").as_str(),
                &[&order_no],
            )
            .await?;
        Ok(row.as_ref().map(order))
    }

    pub(in crate::store) async fn record_hotline_order(
        &self,
        o: HotlineOrder,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let n = client
            .execute(
                format!(
                    "INSERT INTO hotline_orders ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (order_no) DO NOTHING"
                )
                .as_str(),
                &[
                    &o.order_no,
                    &o.kind,
                    &o.case_number,
                    &o.caller,
                    &o.at_ms,
                    &o.day,
                    &o.outcome,
                    &o.answer,
                    &o.classification,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    pub(in crate::store) async fn hotline_orders(
        &self,
        limit: i64,
    ) -> Result<Vec<HotlineOrder>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                format!(
                    "SELECT {COLUMNS} FROM hotline_orders ORDER BY at_ms DESC, order_no LIMIT $1"
                )
                .as_str(),
                &[&limit],
            )
            .await?;
        Ok(rows.iter().map(order).collect())
    }

    pub(in crate::store) async fn hotline_try(
        &self,
        case_number: String,
        day: String,
        order_no: String,
        caller: String,
        at_ms: i64,
        max: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await?;
        // Tries about one case number and day are counted one at a time, across replicas: a
        // concurrent try waits here until this one is committed, then counts it.
        let key = format!("hotline-try/{case_number}/{day}");
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&key],
        )
        .await?;
        let n: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM hotline_failures WHERE case_number = $1 AND day = $2",
                &[&case_number, &day],
            )
            .await?
            .get(0);
        if n >= max {
            return Ok(None);
        }
        let id: i64 = tx
            .query_one(
                "INSERT INTO hotline_failures (case_number, day, order_no, caller, at_ms) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&case_number, &day, &order_no, &caller, &at_ms],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(Some(id))
    }

    pub(in crate::store) async fn hotline_try_verified(&self, id: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute("DELETE FROM hotline_failures WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn hotline_failures(
        &self,
        case_number: String,
        day: String,
    ) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        Ok(client
            .query_one(
                "SELECT COUNT(*) FROM hotline_failures WHERE case_number = $1 AND day = $2",
                &[&case_number, &day],
            )
            .await?
            .get(0))
    }
}

impl PgStore {
    pub(in crate::store) async fn claim_hotline_replies(
        &self,
        now_ms: i64,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<(String, String, i32)>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        // Claimed with a lease: another replica skips the rows being claimed and finds them not
        // due until the lease ends (or the try is recorded).
        let rows = client
            .query(
                "UPDATE hotline_replies SET next_try_ms = $1 + $3 WHERE order_no IN (SELECT order_no FROM hotline_replies WHERE delivered_ms IS NULL AND next_try_ms <= $1 ORDER BY next_try_ms LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING order_no, body, tries",
                &[&now_ms, &limit, &lease_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub(in crate::store) async fn hotline_reply_tried(
        &self,
        order_no: String,
        delivered_ms: Option<i64>,
        next_try_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        match delivered_ms {
            // A delivery stands: the first one's time is kept.
            Some(at) => {
                client
                    .execute(
                        "UPDATE hotline_replies SET tries = tries + 1, delivered_ms = COALESCE(delivered_ms, $2) WHERE order_no = $1",
                        &[&order_no, &at],
                    )
                    .await?
            }
            // A failure never undoes another replica's delivery.
            None => {
                client
                    .execute(
                        "UPDATE hotline_replies SET tries = tries + 1, next_try_ms = $2 WHERE order_no = $1 AND delivered_ms IS NULL",
                        &[&order_no, &next_try_ms],
                    )
                    .await?
            }
        };
        Ok(())
    }
}
