//! Reconciliation of one day: the cases accepted that day or in the `lookback_days` before it,
//! the cases with a record learnt that day, and the submissions not accepted that day are read
//! again from the gateway, their records derived again, and compared with what the platform
//! holds (its query interface, or the exchange tables' flags).
//!
//! - A record the ledger lacked (an entry never reached the reporter) is stored and sent.
//!   Facts of the last `in_flight_secs` may still be on their way and are not counted as gaps.
//! - One the ledger had confirmed but the platform does not hold is reported again.
//! - One the platform holds differently from what was reported is a mismatch, listed for the
//!   operators.
//!
//! The result is kept in the ledger and shown by the metrics and `report reconcile`: the day's
//! completeness (records the platform holds as derived) and the share confirmed within one
//! working day of the fact. This module owns the comparison; it sends nothing itself.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, TimeZone};
use yichuang::proto::v1::{GetCaseRequest, ListCasesRequest, ListNotAcceptedRequest};

use super::Reporter;
use super::derive;
use super::ledger::{self, Change, Reconciliation};
use super::transport;

/// How many differences are listed in the result (the counts are always whole).
const LISTED: usize = 50;

pub async fn run(r: &Reporter, day: NaiveDate) -> Result<Reconciliation, String> {
    let start = |d: NaiveDate| {
        r.offset
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            .single()
            .expect("a fixed offset has one midnight")
            .with_timezone(&chrono::Utc)
    };
    let (from, to) = (start(day), start(day + chrono::Duration::days(1)));
    // Cases accepted in the days before are read again too: an entry lost for one of them (its
    // decision, its delivery) shows only there.
    let back = i64::from(r.reconciling.lookback_days.max(1)) - 1;
    let accepted_from = start(day - chrono::Duration::days(back));
    let in_flight_ms = r.reconciling.in_flight_secs as i64 * 1000;
    let mut cases: BTreeSet<String> = r
        .ledger
        .cases_learnt(from.timestamp_millis(), to.timestamp_millis())?
        .into_iter()
        // Submissions not accepted are listed by the gateway below.
        .filter(|k| !k.starts_with(derive::NOTICE_PREFIX))
        .collect();
    let mut page_token = String::new();
    loop {
        let request = ListCasesRequest {
            accepted_from: Some(timestamp(accepted_from)),
            accepted_to: Some(timestamp(to)),
            page_size: 500,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = r
            .call("ListCases", |mut g| {
                let q = request.clone();
                async move { g.list_cases(q).await }
            })
            .await?;
        cases.extend(page.cases.into_iter().map(|c| c.case_number));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }

    // The submissions not accepted that day.
    let mut notices = Vec::new();
    let mut after = 0;
    loop {
        let request = ListNotAcceptedRequest {
            after,
            page_size: 500,
            from: Some(timestamp(from)),
            to: Some(timestamp(to)),
            hall_code: String::new(),
        };
        let page = r
            .call("ListNotAccepted", |mut g| {
                let q = request.clone();
                async move { g.list_not_accepted(q).await }
            })
            .await?;
        let Some(last) = page.items.last().map(|n| n.id) else {
            break;
        };
        after = last;
        notices.extend(page.items);
    }

    let mut result = Reconciliation {
        date: day.to_string(),
        at_ms: chrono::Utc::now().timestamp_millis(),
        cases: cases.len() as i64,
        not_accepted: notices.len() as i64,
        records: 0,
        confirmed: 0,
        on_time: 0,
        missing_ledger: 0,
        missing_platform: 0,
        mismatched: 0,
        refused: 0,
        detail: Vec::new(),
    };
    let mut derived = Vec::new();
    let mut keys: Vec<String> = cases.iter().cloned().collect();
    let mut sources = Vec::new();
    for n in &notices {
        keys.push(derive::notice_key(n));
        sources.push(derive::notice_records(&r.spec, n)?);
    }
    for case_number in &cases {
        let request = GetCaseRequest {
            case_number: case_number.clone(),
        };
        let case = r
            .call(&format!("GetCase {case_number}"), |mut g| {
                let q = request.clone();
                async move { g.get_case(q).await }
            })
            .await?;
        sources.push(derive::records(&r.spec, &case)?);
    }
    for records in sources {
        for record in records {
            if r.ledger.store(&record)? == Change::New
                && record.learnt_ms < result.at_ms - in_flight_ms
            {
                result.missing_ledger += 1;
                note(
                    &mut result,
                    format!(
                        "{} {} #{}: not in the ledger (an entry never arrived); stored and sent",
                        record.sblsh, record.table, record.seq
                    ),
                );
            }
            derived.push(record);
        }
    }
    let sblsh: Vec<String> = derived
        .iter()
        .map(|d| d.sblsh.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let held: BTreeMap<(String, String, i64), transport::Held> = r
        .transport
        .held(&r.spec, &sblsh)
        .await?
        .into_iter()
        .map(|h| ((h.sblsh.clone(), h.table.clone(), h.seq), h))
        .collect();
    let stored: BTreeMap<(String, String, i64), ledger::Stored> = keys
        .iter()
        .map(|c| r.ledger.of_case(c))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .map(|s| ((s.sblsh.clone(), s.table.clone(), s.seq), s))
        .collect();
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    for d in &derived {
        let key = (d.sblsh.clone(), d.table.clone(), d.seq);
        let of_day = (from_ms..to_ms).contains(&d.learnt_ms);
        if of_day {
            result.records += 1;
        }
        let Some(s) = stored.get(&key) else {
            continue; // stored just now: counted as missing from the ledger
        };
        // What we reported is compared: a record keeps what was true when it was sent (the
        // promise made at acceptance stays the promise of the SL record).
        let sent: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&s.body).unwrap_or_default();
        match held.get(&key) {
            Some(h) if transport::same(&sent, &h.fields) => {
                if s.state != ledger::CONFIRMED {
                    // The platform took it but its answer never came back.
                    r.ledger.set(s, ledger::CONFIRMED, None, 0)?;
                }
                if of_day {
                    result.confirmed += 1;
                    let confirmed = s.confirmed_ms.unwrap_or(result.at_ms);
                    if confirmed <= due_ms(r, d.learnt_ms) {
                        result.on_time += 1;
                    }
                }
            }
            Some(_) => {
                result.mismatched += 1;
                note(
                    &mut result,
                    format!(
                        "{} {} #{}: the platform holds it differently from what was reported",
                        d.sblsh, d.table, d.seq
                    ),
                );
            }
            // Confirmed once: missing now is lost, however recent.
            None if s.state == ledger::CONFIRMED => {
                result.missing_platform += 1;
                r.ledger.rereport(s)?;
                note(
                    &mut result,
                    format!(
                        "{} {} #{}: confirmed once, not held by the platform; reported again",
                        d.sblsh, d.table, d.seq
                    ),
                );
            }
            None if s.state == ledger::REFUSED => {
                result.refused += 1;
                note(
                    &mut result,
                    format!(
                        "{} {} #{}: refused: {}",
                        d.sblsh,
                        d.table,
                        d.seq,
                        s.message.clone().unwrap_or_default()
                    ),
                );
            }
            None => {} // on its way
        }
    }
    r.ledger.record_reconciliation(&result)?;
    r.meters.reconciled(&result);
    Ok(result)
}

fn note(result: &mut Reconciliation, line: String) {
    if result.detail.len() < LISTED {
        result.detail.push(line);
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// The end of the working day after the fact's day (hall time): the goal's deadline. A year
/// without a loaded calendar counts Monday–Friday.
fn due_ms(r: &Reporter, learnt_ms: i64) -> i64 {
    let Some(at) = chrono::DateTime::from_timestamp_millis(learnt_ms) else {
        return i64::MAX;
    };
    let day = at.with_timezone(&r.offset).date_naive();
    let next = r.calendar.add_working_days(day, 1).unwrap_or_else(|_| {
        let mut d = day + chrono::Duration::days(1);
        while matches!(d.format("%u").to_string().as_str(), "6" | "7") {
            d += chrono::Duration::days(1);
        }
        d
    });
    r.offset
        .from_local_datetime(
            &(next + chrono::Duration::days(1))
                .and_hms_opt(0, 0, 0)
                .expect("midnight"),
        )
        .single()
        .map_or(i64::MAX, |t| t.timestamp_millis())
}
