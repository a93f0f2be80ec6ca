//! Submissions in the SQLite engine: `replay` and `submit`, the preparer thread that answers
//! repeat checks and hands out case numbers from committed state, and the writer's side of the
//! group commit (one transaction for every queued submission, retried one by one if any fails).
//!
//! It owns the `submissions`, `attempts`, `not_accepted` and `case_numbers` rows and the first
//! write of a case (its record, tasks and first history entries). It never judges a submission
//! (intake did) and never changes a case once written: that is `cases::edit_case`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{SqliteStore, WriterMsg};
use crate::case::{self, MAX_DAILY_SEQUENCE};
use crate::proto::v1::NotAccepted;
use crate::store::{
    Attempt, CaseRows, Decision, Evaluated, Existing, NotAcceptedQuery, NotAcceptedRow, StoreError,
    StoredNotAccepted, SubmitCommand, SubmitResult, attempt_detail, case_rows, decide,
    decode_not_accepted, not_accepted_row,
};

/// The writer's answer to a job: `None` when an audit-only job found nothing to replay.
pub(super) type Reply = oneshot::Sender<Result<Option<SubmitResult>, StoreError>>;

/// A question for the preparer thread: is this a repeat? If not, and `prefix` is given,
/// the next sequence of `prefix`.
pub(super) struct Prepare {
    submission_id: String,
    content_hash: [u8; 32],
    prefix: Option<String>,
    reply: oneshot::Sender<Result<Prepared, StoreError>>,
}

/// The preparer's answer.
enum Prepared {
    /// A repeat or a conflict: answered (with its audit record) without recording anything new.
    Early,
    /// New: the allocated sequence, if one was asked for.
    Fresh(Option<u32>),
}

/// A submission on its way to the writer, with the work that could be done before.
pub(super) struct Job {
    attempt: Attempt,
    /// Intake's verdict; `None` for a repeat that only needs its audit record.
    evaluated: Option<Evaluated>,
    /// For an acceptance: the allocated number's prefix and sequence, and the encoded rows.
    case: Option<(String, u32, CaseRows)>,
    /// For a deficient submission: its `not_accepted` row, encoded.
    not_accepted: Option<NotAcceptedRow>,
}

impl SqliteStore {
    /// Submissions not accepted, after `q.after`, in position order.
    pub(in crate::store) async fn not_accepted(
        &self,
        q: NotAcceptedQuery,
    ) -> Result<Vec<NotAccepted>, StoreError> {
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT id, submission_id, at_ms, hall_code, window_code, clerk_staff_no, submission, notice, items
                     FROM not_accepted
                     WHERE id > ?1 AND (?2 IS NULL OR at_ms >= ?2) AND (?3 IS NULL OR at_ms < ?3)
                       AND (?4 IS NULL OR hall_code = ?4) AND (?5 IS NULL OR window_code = ?5)
                     ORDER BY id LIMIT ?6",
                )?
                .query_map(
                    params![q.after, q.from_ms, q.to_ms, q.hall_code, q.window_code, q.limit as i64],
                    |r| {
                        Ok(StoredNotAccepted {
                            id: r.get(0)?,
                            submission_id: r.get(1)?,
                            at_ms: r.get(2)?,
                            hall_code: r.get(3)?,
                            window_code: r.get(4)?,
                            clerk_staff_no: r.get(5)?,
                            submission: r.get(6)?,
                            notice: r.get(7)?,
                            items: r.get(8)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(decode_not_accepted).collect()
        })
        .await
    }

    /// Asks the preparer, without waiting for a commit, whether `attempt` repeats an earlier one.
    async fn prepare(
        &self,
        attempt: &Attempt,
        prefix: Option<String>,
    ) -> Result<Prepared, StoreError> {
        let (reply, answer) = oneshot::channel();
        let msg = Prepare {
            submission_id: attempt.submission_id.clone(),
            content_hash: attempt.content_hash,
            prefix,
            reply,
        };
        self.preparer
            .send(msg)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a job in the next group commit.
    async fn record(&self, job: Job) -> Result<Option<SubmitResult>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriterMsg::Record(Box::new(job), reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(in crate::store) async fn replay(
        &self,
        attempt: &Attempt,
    ) -> Result<Option<SubmitResult>, StoreError> {
        match self.prepare(attempt, None).await? {
            // The repeat's audit record is written with the next group.
            Prepared::Early => {
                self.record(Job {
                    attempt: attempt.clone(),
                    evaluated: None,
                    case: None,
                    not_accepted: None,
                })
                .await
            }
            Prepared::Fresh(_) => Ok(None),
        }
    }

    pub(in crate::store) async fn submit(
        &self,
        command: SubmitCommand,
    ) -> Result<SubmitResult, StoreError> {
        let SubmitCommand { attempt, evaluated } = command;
        let mut case = None;
        if let Evaluated::Accept(plan) = &evaluated {
            // A repeat is answered before a number is spent on it; the rows are built here,
            // in parallel, so the writer only writes.
            let prefix = case::number_prefix(
                &plan.lead_implementation_code,
                plan.accepted_at.date_naive(),
            );
            let seq = match self.prepare(&attempt, Some(prefix.clone())).await? {
                Prepared::Early => {
                    let job = Job {
                        attempt,
                        evaluated: None,
                        case: None,
                        not_accepted: None,
                    };
                    return self
                        .record(job)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("a repeat vanished".into()));
                }
                Prepared::Fresh(seq) => seq.unwrap_or_default(),
            };
            if seq > MAX_DAILY_SEQUENCE {
                return Err(StoreError::SequenceExhausted {
                    prefix,
                    max: MAX_DAILY_SEQUENCE,
                });
            }
            let rows = case_rows(plan, &case::case_number(&prefix, seq), &attempt);
            case = Some((prefix, seq, rows));
        }
        // Encoded here, in parallel, like an acceptance's rows.
        let not_accepted = match &evaluated {
            Evaluated::Deficient(d) => Some(not_accepted_row(d)),
            Evaluated::Accept(_) => None,
        };
        self.record(Job {
            attempt,
            evaluated: Some(evaluated),
            case,
            not_accepted,
        })
        .await?
        .ok_or_else(|| StoreError::Corrupt("a submission was not recorded".into()))
    }
}

/// Hands out the next sequence of `prefix`, reading the stored last one the first time.
fn allocate(
    conn: &Connection,
    sequences: &mut HashMap<String, u32>,
    prefix: &str,
) -> Result<u32, StoreError> {
    let last = match sequences.get(prefix) {
        Some(last) => *last,
        None => conn
            .prepare_cached("SELECT last_seq FROM case_numbers WHERE prefix = ?1")?
            .query_row([prefix], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    };
    sequences.insert(prefix.to_string(), last + 1);
    Ok(last + 1)
}

fn prepare(
    conn: &Connection,
    sequences: &mut HashMap<String, u32>,
    id: &str,
    hash: &[u8; 32],
    prefix: Option<&str>,
) -> Result<Prepared, StoreError> {
    Ok(match decide(read_existing(conn, id)?, hash)? {
        Decision::Replay(_) | Decision::Conflict(_) => Prepared::Early,
        Decision::Fresh => {
            Prepared::Fresh(prefix.map(|p| allocate(conn, sequences, p)).transpose()?)
        }
    })
}

fn read_existing(db: &Connection, submission_id: &str) -> Result<Option<Existing>, StoreError> {
    Ok(db
        .prepare_cached("SELECT content_hash, outcome, case_number, response FROM submissions WHERE submission_id = ?1")?
        .query_row([submission_id], |r| {
            Ok(Existing { content_hash: r.get(0)?, outcome: r.get(1)?, case_number: r.get(2)?, response: r.get(3)? })
        })
        .optional()?)
}

/// Answers repeat checks and allocates case numbers on its own connection, from committed
/// state. A repeat whose first attempt is still in an uncommitted group is caught again by the
/// writer (its number is then left unused).
pub(super) fn preparer_loop(conn: Connection, mut rx: mpsc::Receiver<Prepare>) {
    let mut sequences: HashMap<String, u32> = HashMap::new();
    while let Some(p) = rx.blocking_recv() {
        let answer = prepare(
            &conn,
            &mut sequences,
            &p.submission_id,
            &p.content_hash,
            p.prefix.as_deref(),
        );
        let _ = p.reply.send(answer);
    }
}

/// Records a group in one transaction. The fast path has no savepoints; if any submission
/// fails, the transaction is rolled back and each submission is recorded in its own
/// transaction, so one bad submission never takes its neighbours down.
pub(super) fn commit_group(
    conn: &mut Connection,
    group: &[(Job, Reply)],
) -> Vec<Result<Option<SubmitResult>, StoreError>> {
    match record_all(conn, group.iter().map(|(job, _)| job)) {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(_) if group.len() > 1 => group
            .iter()
            .map(|(job, _)| record_all(conn, std::iter::once(job)).map(|mut r| r.remove(0)))
            .collect(),
        Err(e) => vec![Err(e)],
    }
}

/// Records submissions in one transaction, or none of them.
fn record_all<'a>(
    conn: &mut Connection,
    jobs: impl Iterator<Item = &'a Job>,
) -> Result<Vec<Option<SubmitResult>>, StoreError> {
    let tx = conn.transaction()?;
    // The highest sequence used per prefix, stored once per group.
    let mut last: HashMap<&str, u32> = HashMap::new();
    let mut results = Vec::new();
    for job in jobs {
        results.push(record(&tx, job)?);
        if let Some((prefix, seq, _)) = &job.case {
            let entry = last.entry(prefix.as_str()).or_default();
            *entry = (*entry).max(*seq);
        }
    }
    for (prefix, seq) in last {
        tx.prepare_cached(
            "INSERT INTO case_numbers (prefix, last_seq) VALUES (?1, ?2)
             ON CONFLICT (prefix) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
        )?
        .execute(params![prefix, seq])?;
    }
    tx.commit()?;
    Ok(results)
}

/// Records one job. `None` when an audit-only job finds nothing to replay any more.
fn record(db: &Connection, job: &Job) -> Result<Option<SubmitResult>, StoreError> {
    let c = job;
    // Checked again here: a concurrent repeat may have been recorded since the early check
    // (its allocated number is then left unused).
    let existing = read_existing(db, &c.attempt.submission_id)?;
    let at_ms = c.attempt.at.timestamp_millis();
    let audit = |outcome: &str,
                 case_number: Option<&str>,
                 detail: &str|
     -> Result<(), StoreError> {
        db.prepare_cached(
            "INSERT INTO attempts (submission_id, at_ms, hall_code, window_code, clerk_staff_no, outcome, case_number, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![c.attempt.submission_id, at_ms, c.attempt.hall_code, c.attempt.window_code, c.attempt.clerk_staff_no, outcome, case_number, detail])?;
        Ok(())
    };
    match decide(existing, &c.attempt.content_hash)? {
        Decision::Replay(response) => {
            audit("replayed", None, "")?;
            Ok(Some(SubmitResult::Answer(response)))
        }
        Decision::Conflict(case_number) => {
            audit("conflict", Some(&case_number), "")?;
            Ok(Some(SubmitResult::Conflict { case_number }))
        }
        Decision::Fresh => match &c.evaluated {
            None => Ok(None),
            Some(Evaluated::Deficient(d)) => {
                let Some(row) = &c.not_accepted else {
                    return Err(StoreError::Corrupt(
                        "a deficient submission reached the writer without its row".into(),
                    ));
                };
                let response = case::notice_response(d.notice.clone());
                let bytes = prost::Message::encode_to_vec(&response);
                upsert_submission(db, c, "deficient", None, &bytes)?;
                insert_not_accepted(db, c, row)?;
                audit("deficient", None, &attempt_detail(&d.notice))?;
                Ok(Some(SubmitResult::Answer(response.into())))
            }
            Some(Evaluated::Accept(_)) => {
                let Some((_, _, rows)) = &job.case else {
                    return Err(StoreError::Corrupt(
                        "an acceptance reached the writer without its rows".into(),
                    ));
                };
                let number = &rows.accepted.case.case_number;
                insert_case(db, c, number, rows)?;
                upsert_submission(db, c, "accepted", Some(number), &rows.response)?;
                audit("accepted", Some(number), "")?;
                Ok(Some(SubmitResult::Answer(Box::new(
                    case::receipt_response(rows.accepted.receipt.clone()),
                ))))
            }
        },
    }
}

fn upsert_submission(
    db: &Connection,
    c: &Job,
    outcome: &str,
    case_number: Option<&str>,
    response: &[u8],
) -> Result<(), StoreError> {
    let at_ms = c.attempt.at.timestamp_millis();
    db.prepare_cached(
        "INSERT INTO submissions (submission_id, content_hash, outcome, case_number, response, first_at_ms, last_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (submission_id) DO UPDATE SET content_hash = excluded.content_hash, outcome = excluded.outcome,
           case_number = excluded.case_number, response = excluded.response, last_at_ms = excluded.last_at_ms",
    )?
    .execute(params![c.attempt.submission_id, &c.attempt.content_hash[..], outcome, case_number, response, at_ms])?;
    Ok(())
}

/// The submission kept for reporting upward as not accepted (a fresh deficient outcome only).
fn insert_not_accepted(db: &Connection, c: &Job, row: &NotAcceptedRow) -> Result<(), StoreError> {
    let a = &c.attempt;
    db.prepare_cached(
        "INSERT INTO not_accepted (submission_id, at_ms, hall_code, window_code, clerk_staff_no, submission, notice, items)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![a.submission_id, a.at.timestamp_millis(), a.hall_code, a.window_code, a.clerk_staff_no, row.submission, row.notice, row.items])?;
    Ok(())
}

fn insert_case(db: &Connection, c: &Job, number: &str, rows: &CaseRows) -> Result<(), StoreError> {
    let case = &rows.accepted.case;
    db.prepare_cached(
        "INSERT INTO cases (case_number, submission_id, hall_code, window_code, status, accepted_at_ms, promised_deadline, item_codes, body, trace_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        number, c.attempt.submission_id, c.attempt.hall_code, c.attempt.window_code, case.status, rows.accepted_at_ms,
        case.promised_deadline, rows.item_codes, rows.body, c.attempt.trace_id
    ])?;
    let mut task_stmt = db.prepare_cached(
        "INSERT INTO tasks (task_id, case_number, department, item_code, status, depends_on, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for t in &case.tasks {
        task_stmt.execute(params![
            t.task_id,
            number,
            t.department,
            t.item_code,
            t.status,
            t.depends_on.join(","),
            prost::Message::encode_to_vec(t)
        ])?;
    }
    let mut event_stmt = db.prepare_cached(
        "INSERT INTO case_events (case_number, seq, at_ms, kind, task_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for e in &rows.accepted.events {
        event_stmt.execute(params![
            number,
            e.seq,
            rows.accepted_at_ms,
            e.kind,
            e.task_id,
            e.detail
        ])?;
    }
    Ok(())
}
