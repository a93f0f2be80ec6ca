//! Submissions in the PostgreSQL engine: `replay` and `submit`, the daily sequence that numbers
//! an accepted case, and the transactions that record a submission: a new acceptance's rows in
//! one round trip with its idempotency record first (the unique key catches a repeat racing it),
//! and otherwise the careful path under a transaction-scoped advisory lock on the submission id
//! (so concurrent repeats on several replicas are serialised).
//!
//! It owns the `submissions`, `attempts`, `not_accepted` and `case_numbers` rows and the first
//! write of a case (its record, tasks and first history entries). It never judges a submission
//! (intake did) and never changes a case once written: that is `cases::edit_case`.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::cases::insert_events;
use super::{PgStore, pool_err};
use crate::case::{self, MAX_DAILY_SEQUENCE};
use crate::proto::v1::{CaseEvent, NotAccepted};
use crate::store::{
    Attempt, CaseRows, Decision, Evaluated, Existing, NotAcceptedQuery, NotAcceptedRow, StoreError,
    StoredNotAccepted, SubmitCommand, SubmitResult, attempt_detail, case_rows, decide,
    decode_not_accepted, not_accepted_row,
};

/// Executes `sql` with a statement prepared once per connection (deadpool's cache), so a
/// submission costs one round trip per statement instead of two.
async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

const INSERT_ATTEMPT: &str = "INSERT INTO attempts (submission_id, at_ms, hall_code, window_code, clerk_staff_no, outcome, case_number, detail)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

impl PgStore {
    pub(in crate::store) async fn replay(
        &self,
        a: &Attempt,
    ) -> Result<Option<SubmitResult>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let statement = client.prepare_cached(SELECT_SUBMISSION).await?;
        let existing = client
            .query_opt(&statement, &[&a.submission_id])
            .await?
            .map(existing_from);
        let (result, outcome, case_number) = match decide(existing, &a.content_hash)? {
            Decision::Fresh => return Ok(None),
            Decision::Replay(response) => (SubmitResult::Answer(response), "replayed", None),
            Decision::Conflict(number) => (
                SubmitResult::Conflict {
                    case_number: number.clone(),
                },
                "conflict",
                Some(number),
            ),
        };
        let statement = client.prepare_cached(INSERT_ATTEMPT).await?;
        client
            .execute(
                &statement,
                &[
                    &a.submission_id,
                    &a.at.timestamp_millis(),
                    &a.hall_code,
                    &a.window_code,
                    &a.clerk_staff_no,
                    &outcome,
                    &case_number,
                    &"",
                ],
            )
            .await?;
        Ok(Some(result))
    }

    /// Submissions not accepted, after `q.after`, in position order. Only rows below the
    /// oldest transaction still running are read, as the feed does (docs/storage.md, "Feed
    /// positions"): a row positioned before them may still commit, and a reader that went past
    /// it would never see it.
    pub(in crate::store) async fn not_accepted(
        &self,
        q: NotAcceptedQuery,
    ) -> Result<Vec<NotAccepted>, StoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let statement = client
            .prepare_cached(
                "SELECT id, submission_id, at_ms, hall_code, window_code, clerk_staff_no, submission, notice, items
                 FROM not_accepted
                 WHERE id > $1 AND id < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)
                   AND ($2::bigint IS NULL OR at_ms >= $2) AND ($3::bigint IS NULL OR at_ms < $3)
                   AND ($4::text IS NULL OR hall_code = $4) AND ($5::text IS NULL OR window_code = $5)
                 ORDER BY id LIMIT $6",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &q.after,
                    &q.from_ms,
                    &q.to_ms,
                    &q.hall_code,
                    &q.window_code,
                    &(q.limit as i64),
                ],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                decode_not_accepted(StoredNotAccepted {
                    id: r.get(0),
                    submission_id: r.get(1),
                    at_ms: r.get(2),
                    hall_code: r.get(3),
                    window_code: r.get(4),
                    clerk_staff_no: r.get(5),
                    submission: r.get(6),
                    notice: r.get(7),
                    items: r.get(8),
                })
            })
            .collect()
    }

    pub(in crate::store) async fn submit(
        &self,
        c: SubmitCommand,
    ) -> Result<SubmitResult, StoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let mut rows = None;
        if let Evaluated::Accept(plan) = &c.evaluated {
            // The API asked `replay` first; a concurrent repeat found under the lock below
            // leaves this number unused.
            let prefix = case::number_prefix(
                &plan.lead_implementation_code,
                plan.accepted_at.date_naive(),
            );
            let seq = allocate(&mut client, &prefix).await?;
            if seq > i64::from(MAX_DAILY_SEQUENCE) {
                return Err(StoreError::SequenceExhausted {
                    prefix,
                    max: MAX_DAILY_SEQUENCE,
                });
            }
            rows = Some(case_rows(
                plan,
                &case::case_number(&prefix, seq as u32),
                &c.attempt,
            ));
        }
        if let Some(rows) = &rows {
            // The common case, a new submission: its rows straight away, the idempotency record
            // first. A record of the same id already there (a deficient attempt being corrected,
            // or a repeat that raced this one and committed first) fails the transaction on the
            // unique key; it is rolled back and the submission recorded the careful way below.
            let tx = client.transaction().await?;
            if insert_fresh(&tx, &c, rows).await? {
                tx.commit().await?;
                return Ok(SubmitResult::Answer(Box::new(case::receipt_response(
                    rows.accepted.receipt.clone(),
                ))));
            }
        }
        // A deficient submission's row, encoded before the transaction opens.
        let not_accepted = match &c.evaluated {
            Evaluated::Deficient(d) => Some(not_accepted_row(d)),
            Evaluated::Accept(_) => None,
        };
        let tx = client.transaction().await?;
        let result = record(&tx, &c, rows.as_ref(), not_accepted.as_ref()).await?;
        tx.commit().await?;
        Ok(result)
    }
}

/// Hands out the next daily sequence of `prefix` in a transaction of its own, so the row lock
/// is held for one statement rather than for a whole acceptance: concurrent acceptances of the
/// same item on the same day would otherwise queue behind each other's commits. Its commit
/// need not wait for the disk: a case that uses the number commits later in the same WAL, so
/// the number is durable whenever a case that carries it is; a number lost in a crash was
/// never given out.
async fn allocate(client: &mut deadpool_postgres::Object, prefix: &str) -> Result<i64, StoreError> {
    let next = client
        .prepare_cached(
            "INSERT INTO case_numbers (prefix, last_seq) VALUES ($1, 1)
             ON CONFLICT (prefix) DO UPDATE SET last_seq = case_numbers.last_seq + 1 RETURNING last_seq",
        )
        .await?;
    // The three sent together, in one round trip; each is awaited, so the connection never
    // goes back to the pool inside the transaction (a failed increment turns COMMIT into a
    // rollback).
    let params: [&(dyn ToSql + Sync); 1] = [&prefix];
    let (begin, seq, commit) = tokio::join!(
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit TO OFF"),
        client.query_one(&next, &params),
        client.batch_execute("COMMIT"),
    );
    begin?;
    let seq = seq?.get(0);
    commit?;
    Ok(seq)
}

fn existing_from(r: tokio_postgres::Row) -> Existing {
    Existing {
        content_hash: r.get(0),
        outcome: r.get(1),
        case_number: r.get(2),
        response: r.get(3),
    }
}

/// Records a submission in `tx`. `rows` are the case's rows when it is accepted (built with
/// its number before the transaction); a repeat found here leaves that number unused.
///
/// Two round trips: the advisory lock on the submission id with the look for an earlier
/// attempt (the server runs them in order, so the look is under the lock), then every row the
/// outcome writes, sent together.
async fn record(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    rows: Option<&CaseRows>,
    not_accepted: Option<&NotAcceptedRow>,
) -> Result<SubmitResult, StoreError> {
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .await?;
    let look = tx.prepare_cached(SELECT_SUBMISSION).await?;
    let params: [&(dyn ToSql + Sync); 1] = [&c.attempt.submission_id];
    let (_, existing) = tokio::try_join!(tx.execute(&lock, &params), tx.query_opt(&look, &params))?;
    let existing = existing.map(existing_from);
    match decide(existing, &c.attempt.content_hash)? {
        Decision::Replay(response) => {
            audit(tx, c, "replayed", None, "").await?;
            Ok(SubmitResult::Answer(response))
        }
        Decision::Conflict(case_number) => {
            audit(tx, c, "conflict", Some(&case_number), "").await?;
            Ok(SubmitResult::Conflict { case_number })
        }
        Decision::Fresh => match &c.evaluated {
            Evaluated::Deficient(d) => {
                let Some(row) = not_accepted else {
                    return Err(StoreError::Corrupt(
                        "a deficient submission reached its transaction without its row".into(),
                    ));
                };
                let response = case::notice_response(d.notice.clone());
                let bytes = prost::Message::encode_to_vec(&response);
                let detail = attempt_detail(&d.notice);
                tokio::try_join!(
                    upsert_submission(tx, c, "deficient", None, &bytes),
                    insert_not_accepted(tx, c, row),
                    audit(tx, c, "deficient", None, &detail),
                )?;
                Ok(SubmitResult::Answer(response.into()))
            }
            Evaluated::Accept(_) => {
                let Some(rows) = rows else {
                    return Err(StoreError::Corrupt(
                        "an acceptance reached its transaction without its rows".into(),
                    ));
                };
                let number = rows.accepted.case.case_number.as_str();
                let (submitted, written) = write_accepted(
                    tx,
                    c,
                    rows,
                    UPSERT_SUBMISSION,
                    upsert_submission(tx, c, "accepted", Some(number), &rows.response),
                )
                .await;
                submitted?;
                written?;
                Ok(SubmitResult::Answer(Box::new(case::receipt_response(
                    rows.accepted.receipt.clone(),
                ))))
            }
        },
    }
}

/// Writes a new acceptance's rows in one round trip: the idempotency record (a plain insert),
/// the case, its tasks and history, and the audit line. False when a submission of the same id
/// is recorded already (the transaction is then failed and must be rolled back).
async fn insert_fresh(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    rows: &CaseRows,
) -> Result<bool, StoreError> {
    let at_ms = c.attempt.at.timestamp_millis();
    let submission: [&(dyn ToSql + Sync); 6] = [
        &c.attempt.submission_id,
        &&c.attempt.content_hash[..],
        &rows.accepted.case.case_number,
        &rows.response,
        &at_ms,
        &"accepted",
    ];
    let (submitted, written) = write_accepted(
        tx,
        c,
        rows,
        INSERT_SUBMISSION,
        exec(tx, INSERT_SUBMISSION, &submission),
    )
    .await;
    match submitted {
        Err(StoreError::Postgres(e))
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
        {
            return Ok(false);
        }
        other => other?,
    };
    written?;
    Ok(true)
}

/// An acceptance's rows, sent together with `record` (the statement `record_sql` that records
/// the submission id): the case, its tasks and history, and the audit line. Every statement is
/// awaited (`join`, not `try_join`): the first failure is the one that says why, and the others
/// fail after it as the transaction is aborted. Returns the record's result, then the rest's.
async fn write_accepted(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    rows: &CaseRows,
    record_sql: &str,
    record: impl std::future::Future<Output = Result<u64, StoreError>>,
) -> (Result<u64, StoreError>, Result<(), StoreError>) {
    // Prepared (or found in the cache) before any is sent, so they reach the server in this
    // order: the case before the rows that refer to it.
    for sql in [record_sql, INSERT_CASE, INSERT_TASKS, INSERT_ATTEMPT] {
        if let Err(e) = tx.prepare_cached(sql).await {
            return (Err(e.into()), Ok(()));
        }
    }
    let number = &rows.accepted.case.case_number;
    let events: Vec<(&str, &CaseEvent)> = rows
        .accepted
        .events
        .iter()
        .map(|e| (number.as_str(), e))
        .collect();
    let mut ordinal = 0;
    let (recorded, case, events, audited) = tokio::join!(
        record,
        insert_case(tx, c, number, rows),
        insert_events(tx, &events, rows.accepted_at_ms, &mut ordinal),
        audit(tx, c, "accepted", Some(number), ""),
    );
    (recorded, case.and(events).and(audited.map(|_| ())))
}

/// The idempotency record of a new submission, accepted.
const INSERT_SUBMISSION: &str = "INSERT INTO submissions (submission_id, content_hash, case_number, response, first_at_ms, last_at_ms, outcome)
     VALUES ($1, $2, $3, $4, $5, $5, $6)";

const SELECT_SUBMISSION: &str =
    "SELECT content_hash, outcome, case_number, response FROM submissions WHERE submission_id = $1";

const UPSERT_SUBMISSION: &str = "INSERT INTO submissions (submission_id, content_hash, outcome, case_number, response, first_at_ms, last_at_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $6)
     ON CONFLICT (submission_id) DO UPDATE SET content_hash = excluded.content_hash, outcome = excluded.outcome,
       case_number = excluded.case_number, response = excluded.response, last_at_ms = excluded.last_at_ms";

const INSERT_CASE: &str = "INSERT INTO cases (case_number, submission_id, hall_code, window_code, status, accepted_at_ms, promised_deadline, item_codes, body, trace_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// A case's tasks in one statement.
const INSERT_TASKS: &str =
    "INSERT INTO tasks (task_id, case_number, department, item_code, status, depends_on, body)
     SELECT u.task_id, $1, u.department, u.item_code, u.status, u.depends_on, u.body
     FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::bytea[])
       AS u(task_id, department, item_code, status, depends_on, body)";

/// The submission kept for reporting upward as not accepted (a fresh deficient outcome only).
/// Its id is the transaction's (the column's default, see the migration).
async fn insert_not_accepted(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    row: &NotAcceptedRow,
) -> Result<u64, StoreError> {
    let a = &c.attempt;
    exec(
        tx,
        "INSERT INTO not_accepted (submission_id, at_ms, hall_code, window_code, clerk_staff_no, submission, notice, items)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &a.submission_id,
            &a.at.timestamp_millis(),
            &a.hall_code,
            &a.window_code,
            &a.clerk_staff_no,
            &row.submission,
            &row.notice,
            &row.items,
        ],
    )
    .await
}

/// The attempt's line in the audit trail.
async fn audit(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    outcome: &str,
    case_number: Option<&str>,
    detail: &str,
) -> Result<u64, StoreError> {
    let at_ms = c.attempt.at.timestamp_millis();
    exec(
        tx,
        INSERT_ATTEMPT,
        &[
            &c.attempt.submission_id,
            &at_ms,
            &c.attempt.hall_code,
            &c.attempt.window_code,
            &c.attempt.clerk_staff_no,
            &outcome,
            &case_number,
            &detail,
        ],
    )
    .await
}

async fn upsert_submission(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    outcome: &str,
    case_number: Option<&str>,
    response: &[u8],
) -> Result<u64, StoreError> {
    let at_ms = c.attempt.at.timestamp_millis();
    exec(
        tx,
        UPSERT_SUBMISSION,
        &[
            &c.attempt.submission_id,
            &&c.attempt.content_hash[..],
            &outcome,
            &case_number,
            &response,
            &at_ms,
        ],
    )
    .await
}

/// The case record and its tasks: one statement each, sent together.
async fn insert_case(
    tx: &Transaction<'_>,
    c: &SubmitCommand,
    number: &str,
    rows: &CaseRows,
) -> Result<(), StoreError> {
    let case = &rows.accepted.case;
    let tasks = &case.tasks;
    let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
    let departments: Vec<&str> = tasks.iter().map(|t| t.department.as_str()).collect();
    let items: Vec<&str> = tasks.iter().map(|t| t.item_code.as_str()).collect();
    let statuses: Vec<i32> = tasks.iter().map(|t| t.status).collect();
    let depends_on: Vec<String> = tasks.iter().map(|t| t.depends_on.join(",")).collect();
    let bodies: Vec<Vec<u8>> = tasks.iter().map(prost::Message::encode_to_vec).collect();
    let case_params: [&(dyn ToSql + Sync); 10] = [
        &number,
        &c.attempt.submission_id,
        &c.attempt.hall_code,
        &c.attempt.window_code,
        &case.status,
        &rows.accepted_at_ms,
        &case.promised_deadline,
        &rows.item_codes,
        &rows.body,
        &c.attempt.trace_id,
    ];
    let task_params: [&(dyn ToSql + Sync); 7] = [
        &number,
        &ids,
        &departments,
        &items,
        &statuses,
        &depends_on,
        &bodies,
    ];
    tokio::try_join!(
        exec(tx, INSERT_CASE, &case_params),
        exec(tx, INSERT_TASKS, &task_params),
    )?;
    Ok(())
}
