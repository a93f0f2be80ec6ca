//! The 12345 hotline's work orders in the SQLite engine: each order with its answer, and the
//! progress queries refused for wrong verification digits (counted per case number and day).

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::store::{HotlineOrder, StoreError};

const COLUMNS: &str =
    "order_no, kind, case_number, caller, at_ms, day, outcome, answer, classification";

fn order(r: &rusqlite::Row<'_>) -> rusqlite::Result<HotlineOrder> {
    Ok(HotlineOrder {
        order_no: r.get(0)?,
        kind: r.get(1)?,
        case_number: r.get(2)?,
        caller: r.get(3)?,
        at_ms: r.get(4)?,
        day: r.get(5)?,
        outcome: r.get(6)?,
        answer: r.get(7)?,
        classification: r.get(8)?,
    })
}

impl SqliteStore {
    pub(in crate::store) async fn hotline_order(
        &self,
        order_no: &str,
    ) -> Result<Option<HotlineOrder>, StoreError> {
        let order_no = order_no.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM hotline_orders WHERE order_no = ?1"
                ))?
                .query_row(params![order_no], order)
                .optional()?)
        })
        .await
    }

    pub(in crate::store) async fn record_hotline_order(
        &self,
        o: HotlineOrder,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached(&format!(
                    "INSERT INTO hotline_orders ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (order_no) DO NOTHING"
                ))?
                .execute(params![
                    o.order_no,
                    o.kind,
                    o.case_number,
                    o.caller,
                    o.at_ms,
                    o.day,
                    o.outcome,
                    o.answer,
                    o.classification
                ])?;
            Ok(n == 1)
        })
        .await
    }

    pub(in crate::store) async fn hotline_orders(
        &self,
        limit: i64,
    ) -> Result<Vec<HotlineOrder>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM hotline_orders ORDER BY at_ms DESC, order_no LIMIT ?1"
                ))?
                .query_map(params![limit], order)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
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
        // One writer at a time: the count and the insert are one step for every replica.
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let n: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM hotline_failures WHERE case_number = ?1 AND day = ?2",
                )?
                .query_row(params![case_number, day], |r| r.get(0))?;
            if n >= max {
                return Ok(None);
            }
            tx.prepare_cached(
                "INSERT INTO hotline_failures (case_number, day, order_no, caller, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![case_number, day, order_no, caller, at_ms])?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(id))
        })
        .await
    }

    pub(in crate::store) async fn hotline_try_verified(&self, id: i64) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM hotline_failures WHERE id = ?1")?
                .execute(params![id])?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn hotline_failures(
        &self,
        case_number: String,
        day: String,
    ) -> Result<i64, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM hotline_failures WHERE case_number = ?1 AND day = ?2",
                )?
                .query_row(params![case_number, day], |r| r.get(0))?)
        })
        .await
    }
}

impl SqliteStore {
    pub(in crate::store) async fn claim_hotline_replies(
        &self,
        now_ms: i64,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<(String, String, i32)>, StoreError> {
        // One writer at a time: a row claimed here is not due for anyone else until the lease
        // ends (or the try is recorded).
        self.write(move |conn| {
            let rows = conn
                .prepare_cached(
                    "UPDATE hotline_replies SET next_try_ms = ?1 + ?3 WHERE order_no IN (SELECT order_no FROM hotline_replies WHERE delivered_ms IS NULL AND next_try_ms <= ?1 ORDER BY next_try_ms LIMIT ?2) RETURNING order_no, body, tries",
                )?
                .query_map(params![now_ms, limit, lease_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub(in crate::store) async fn hotline_reply_tried(
        &self,
        order_no: String,
        delivered_ms: Option<i64>,
        next_try_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            match delivered_ms {
                // A delivery stands: the first one's time is kept.
                Some(at) => conn
                    .prepare_cached(
                        "UPDATE hotline_replies SET tries = tries + 1, delivered_ms = COALESCE(delivered_ms, ?2) WHERE order_no = ?1",
                    )?
                    .execute(params![order_no, at])?,
                // A failure never undoes another replica's delivery.
                None => conn
                    .prepare_cached(
                        "UPDATE hotline_replies SET tries = tries + 1, next_try_ms = ?2 WHERE order_no = ?1 AND delivered_ms IS NULL",
                    )?
                    .execute(params![order_no, next_try_ms])?,
            };
            Ok(())
        })
        .await
    }
}
