//! The platform's exchange tables (前置库) in PostgreSQL and its collector: one table per
//! record table (`ex_gdbs_sb`, …), one `text` column per field (`xh integer`, `zbpj` the JSON
//! array as text), keyed (sblsh, xh), with the handshake columns `sync_sign` ('0' 待处理,
//! '1' 已接收, '2' 处理失败), `sync_msg`, `sync_time` and `insert_time`. The collector takes
//! rows marked '0' in insert order (stage order within one instant), judges them as the HTTP
//! interface would — against the same store, so order rules see both transports — and marks
//! them. It never writes a row's data: a refused row is the writer's to correct and set back
//! to '0'. `exchange.sql` is [`ddl`] for the schema `gdbs_qzk`, for the docs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Client;

use super::rules::{Record, TABLES};
use super::{ExchangeSettings, PlatformSim, Transport};
use crate::exchange_db::identifier;

/// The handshake columns, which are not part of a record.
const HANDSHAKE: [&str; 4] = ["sync_sign", "sync_msg", "sync_time", "insert_time"];

fn table_name(t: usize) -> String {
    TABLES[t].name.to_ascii_lowercase()
}

/// The exchange tables' DDL for `schema`, idempotent.
pub fn ddl(schema: &str) -> String {
    let mut sql = format!("CREATE SCHEMA IF NOT EXISTS {schema};\n");
    for (t, table) in TABLES.iter().enumerate() {
        sql.push_str(&format!(
            "\nCREATE TABLE IF NOT EXISTS {schema}.{} (\n",
            table_name(t)
        ));
        for field in table.all_fields() {
            let column = field.to_ascii_lowercase();
            let ty = match field {
                "SBLSH" => "text NOT NULL",
                "XH" => "integer NOT NULL",
                _ => "text",
            };
            sql.push_str(&format!("    {column} {ty},\n"));
        }
        sql.push_str(
            "    sync_sign char(1) NOT NULL DEFAULT '0',\n    sync_msg text,\n    sync_time timestamptz,\n    insert_time timestamptz NOT NULL DEFAULT now(),\n    PRIMARY KEY (sblsh, xh)\n);\n",
        );
    }
    sql
}

async fn connect(ex: &ExchangeSettings) -> anyhow::Result<Client> {
    Ok(yichuang::tls::connect_postgres(&ex.url).await?)
}

/// Creates the schema and tables when missing.
pub async fn create_tables(ex: &ExchangeSettings) -> anyhow::Result<()> {
    identifier(&ex.schema)?;
    connect(ex).await?.batch_execute(&ddl(&ex.schema)).await?;
    Ok(())
}

/// Deletes one row (a dropped record).
pub async fn delete_row(
    ex: &ExchangeSettings,
    t: usize,
    sblsh: &str,
    xh: u32,
) -> anyhow::Result<()> {
    connect(ex)
        .await?
        .execute(
            &format!(
                "DELETE FROM {}.{} WHERE sblsh = $1 AND xh = $2",
                ex.schema,
                table_name(t)
            ),
            &[&sblsh, &(xh as i32)],
        )
        .await?;
    Ok(())
}

/// Runs the collector until the task is aborted; it does nothing during an outage, and a lost
/// connection is opened again on the next poll.
pub async fn collect(sim: Arc<PlatformSim>, ex: ExchangeSettings) {
    let poll = Duration::from_millis(ex.poll_ms.max(10));
    let mut client: Option<Client> = None;
    loop {
        tokio::time::sleep(poll).await;
        if sim.outage() {
            continue;
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match connect(&ex).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "platform sim: cannot reach the exchange database");
                    continue;
                }
            };
        }
        let c = client.as_ref().expect("connected");
        if let Err(e) = pass(&sim, &ex.schema, c).await {
            tracing::warn!(error = %e, "platform sim: collector pass failed; next poll");
        }
    }
}

/// A row as the record it carries: handshake columns left out, NULL columns absent, names
/// upper-case, `zbpj` read as JSON.
fn record_of(row: Value) -> Record {
    let Value::Object(columns) = row else {
        return Record::new();
    };
    columns
        .into_iter()
        .filter(|(k, v)| !v.is_null() && !HANDSHAKE.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = match (k.as_str(), v) {
                ("zbpj", Value::String(text)) => {
                    serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
                }
                (_, v) => v,
            };
            (k.to_ascii_uppercase(), v)
        })
        .collect()
}

/// One pass: every row waiting, oldest first.
async fn pass(sim: &PlatformSim, schema: &str, c: &Client) -> anyhow::Result<()> {
    let union: Vec<String> = (0..TABLES.len())
        .map(|t| {
            format!(
                "SELECT {t} AS t, insert_time, xh, to_jsonb(x)::text AS j \
                 FROM {schema}.{} x WHERE sync_sign = '0'",
                table_name(t)
            )
        })
        .collect();
    let rows = c
        .query(
            &format!("{} ORDER BY insert_time, t, xh", union.join(" UNION ALL ")),
            &[],
        )
        .await?;
    for row in rows {
        let t = row.get::<_, i32>(0) as usize;
        let xh: i32 = row.get(2);
        let text: &str = row.get(3);
        let raw: Value = serde_json::from_str(text)?;
        let sblsh = raw["sblsh"].as_str().unwrap_or_default().to_string();
        let answer = sim.submit(
            TABLES[t].name,
            &Value::Object(record_of(raw)),
            Transport::Table,
        );
        let sign = if answer.ok() { "1" } else { "2" };
        tracing::debug!(table = TABLES[t].name, xh, sign, msg = %answer.msg, "platform sim: row collected");
        c.execute(
            &format!(
                "UPDATE {schema}.{} x SET sync_sign = '{sign}', sync_msg = $3, sync_time = now() \
                 WHERE sblsh = $1 AND xh = $2 AND to_jsonb(x)::text = $4",
                table_name(t)
            ),
            // Only the row as it was judged: one the writer changed meanwhile stays '0' and
            // is judged again on the next pass.
            &[&sblsh, &xh, &answer.msg, &text],
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_ddl_is_the_generated_one() {
        assert_eq!(
            include_str!("exchange.sql"),
            super::ddl("gdbs_qzk"),
            "regenerate adapters/sim/src/platform/exchange.sql from platform::ddl(\"gdbs_qzk\")"
        );
    }
}
