//! Late in the year, before the State Council's notice for next year is loaded: a case whose
//! deadlines reach next year is accepted with provisional deadlines (counted Monday–Friday),
//! marked wherever they show; the operators are told; and when the year file is dropped into the
//! calendar directory the gateway loads it without a restart, refuses a bad one, and confirms or
//! moves every provisional deadline once, even with several replicas sweeping one database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use testkit::gateway::{Backend, TestGateway};
use yichuang::proto::v1::submit_response::Outcome;
use yichuang::proto::v1::{
    CalendarStatus, Case, CaseEvent, GetCaseRequest, ListCasesRequest, Receipt, StatusRequest,
    SubmitRequest,
};

/// A test fixture, not the 2027 notice: 2026-12-31 (a Thursday the notice arranges, as the 2019
/// notice did 2018-12-31) and New Year's Day off.
const Y2027: &str = "year = 2027\nnotice = \"fixture\"\nsource = \"https://example.invalid/2027\"\namendments = []\ndays = [\n  { date = 2026-12-31, off = true, name = \"元旦\" },\n  { date = 2027-01-01, off = true, name = \"元旦\" },\n]\n";

/// Tuesday 2026-12-15 10:00 in the hall: SP-JY's 10 promised working days end 2026-12-29 and
/// its 20 legal ones reach into 2027.
fn december_15() -> yichuang::clock::Now {
    let at: DateTime<Utc> = "2026-12-15T02:00:00Z".parse().unwrap();
    Arc::new(move || at)
}

/// The shipped calendar (2019–2026) in a directory of the test's own.
fn calendar_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(testkit::repo().join("config/calendar")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn config(backend: Backend, dir: &Path, calendar: &Path) -> yichuang::config::GatewayConfig {
    let mut config = testkit::gateway::config(backend, dir);
    config.calendar_dir = calendar.to_path_buf();
    config.calendar.check_secs = 1;
    // The test sweeps itself (`until`), so it knows which replica counted what.
    config.sla.sweep_secs = 0;
    config
}

async fn submit(gw: &mut TestGateway, id: &str) -> Receipt {
    let mut submission = testkit::example("kai-canguan");
    submission.submission_id = id.to_string();
    submission.submitted_at = None;
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(submission),
        })
        .await
        .expect("submit")
        .into_inner();
    match answer.outcome {
        Some(Outcome::Receipt(r)) => r,
        other => panic!("kai-canguan is accepted across the missing year: {other:?}"),
    }
}

async fn get(gw: &mut TestGateway, number: &str) -> (Case, Vec<CaseEvent>) {
    let r = gw
        .client
        .get_case(GetCaseRequest {
            case_number: number.to_string(),
        })
        .await
        .expect("get case")
        .into_inner();
    (r.case.expect("case"), r.events)
}

/// Sweeps with `gw` and waits (with a deadline) until the case satisfies `done`.
async fn until(
    gw: &mut TestGateway,
    number: &str,
    what: &str,
    done: impl Fn(&Case, &[CaseEvent]) -> bool,
) -> (Case, Vec<CaseEvent>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        yichuang::clock::sweep(&gw.gateway.store, &gw.gateway.clocks)
            .await
            .expect("sweep");
        let (case, events) = get(gw, number).await;
        if done(&case, &events) {
            return (case, events);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{number}: no {what} within 30 s; history: {:#?}",
            events
                .iter()
                .map(|e| format!("{} {}", e.kind, e.detail))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn calendar_status(gw: &TestGateway) -> CalendarStatus {
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    admin
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .calendar
        .expect("calendar status")
}

fn count(events: &[CaseEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

fn sp_jy(case: &Case) -> &yichuang::proto::v1::Task {
    case.tasks.iter().find(|t| t.item_code == "SP-JY").unwrap()
}

async fn accepted_provisionally_then_confirmed_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let calendar = calendar_dir();
    let mut gw = TestGateway::start_with_clock(
        config(backend, dir.path(), calendar.path()),
        dir,
        december_15(),
    )
    .await;

    // Accepted, not refused: the receipt says which dates are provisional, in Chinese.
    let receipt = submit(&mut gw, "prov-1").await;
    let number = receipt.case_number.clone();
    assert!(receipt.deadline_provisional, "{receipt:?}");
    assert!(
        receipt.deadline_notice.contains("2027年") && receipt.deadline_notice.contains("确认"),
        "{}",
        receipt.deadline_notice
    );
    let item = receipt
        .items
        .iter()
        .find(|i| i.item_code == "SP-JY")
        .unwrap();
    // 16–18, 21–25 (25th provisional), 28, 29: the 10th working day.
    assert_eq!(item.promised_deadline, "2026-12-29");
    assert!(item.promised_deadline_provisional);

    // The case, its tasks, its history and the case list say so too.
    let (case, events) = get(&mut gw, &number).await;
    assert!(case.promised_deadline_provisional);
    assert_eq!(sp_jy(&case).provisional_years, [2027]);
    assert_eq!(sp_jy(&case).legal_deadline, "2027-01-12");
    let reason = events
        .iter()
        .find(|e| e.kind == "deadline-provisional")
        .expect("the reason is in the history");
    assert!(reason.detail.contains("no working-day calendar for 2027"));
    let list = gw
        .client
        .list_cases(ListCasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.cases
            .iter()
            .any(|c| c.case_number == number && c.promised_deadline_provisional)
    );

    // The sweeper starts the clock on the provisional deadlines and says so (and the row knows).
    // Its first look happens here, so the count of provisional tasks below is this case's.
    let (_, events) = until(&mut gw, &number, "provisional clock start", |c, e| {
        e.iter().any(|e| {
            e.kind == "task-clock-started"
                && e.task_id == sp_jy(c).task_id
                && e.detail.contains("provisional: 2027")
        })
    })
    .await;
    assert_eq!(count(&events, "deadline-confirmed"), 0);

    // Operators are told: next year is missing (past 1 November), one task (at least) waits.
    let status = calendar_status(&gw).await;
    assert!(status.next_year_missing, "{status:?}");
    assert!(status.warning.contains("config/calendar/2027.toml"));
    assert!(status.provisional_deadlines >= 1, "{status:?}");

    // A bad 2027 file is refused with its file and line; the calendar in use stays.
    std::fs::write(
        calendar.path().join("2027.toml"),
        Y2027.replace("2027-01-01, off = true", "2027-01-01, off = yes"),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = calendar_status(&gw).await;
        if !status.reload_problems.is_empty() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad file is not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.reload_problems[0].contains("2027.toml:7:"),
        "{status:?}"
    );
    assert!(status.next_year_missing && !status.years.contains(&2027));
    let (case, _) = get(&mut gw, &number).await;
    assert_eq!(sp_jy(&case).provisional_years, [2027], "nothing confirmed");

    // The good file: loaded without a restart; the legal deadline moves by the two days off,
    // the promised one is confirmed; each said once.
    std::fs::write(calendar.path().join("2027.toml"), Y2027).unwrap();
    let (case, events) = until(&mut gw, &number, "deadline-confirmed", |c, _| {
        sp_jy(c).provisional_years.is_empty() && !c.promised_deadline_provisional
    })
    .await;
    let task = sp_jy(&case);
    assert_eq!(task.promised_deadline, "2026-12-29");
    assert_eq!(task.legal_deadline, "2027-01-14");
    assert!(!task.promised_deadline_provisional);
    let confirmed: Vec<&CaseEvent> = events
        .iter()
        .filter(|e| e.kind == "deadline-confirmed" && e.task_id == task.task_id)
        .collect();
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert!(
        confirmed[0].detail.contains("2026-12-29 confirmed")
            && confirmed[0].detail.contains("2027-01-12 → 2027-01-14"),
        "{}",
        confirmed[0].detail
    );
    let status = calendar_status(&gw).await;
    assert!(!status.next_year_missing && status.years.contains(&2027));
    assert!(status.reload_problems.is_empty());
    assert_eq!(status.provisional_deadlines, 0);

    // Counted again (a reload, a restart): nothing more is said.
    assert!(gw.gateway.store.mark_open_clocks().await.unwrap() >= 1);
    let store = gw.gateway.store.clone();
    let before = get(&mut gw, &number).await.1.len();
    assert_eq!(
        yichuang::clock::sweep(&store, &gw.gateway.clocks)
            .await
            .unwrap(),
        0,
        "nothing to say"
    );
    assert_eq!(get(&mut gw, &number).await.1.len(), before);
    gw.stop().await;
}

testkit::on_both_stores!(accepted_provisionally_then_confirmed_once);

/// Two replicas on one PostgreSQL schema, one of them still without the 2027 file: the one that
/// has it confirms each case once; the one behind leaves what is recorded alone; when it loads
/// the file too (SIGHUP or its look at the directory), nothing is said again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_confirm_each_case_once() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (calendar_a, calendar_b) = (calendar_dir(), calendar_dir());
    let config_a = config(Backend::Postgres, dir_a.path(), calendar_a.path());
    let mut config_b = config(Backend::Postgres, dir_b.path(), calendar_b.path());
    config_b.store = config_a.store.clone();
    let yichuang::config::StoreConfig::Postgres { schema, .. } = config_a.store.clone() else {
        unreachable!("a PostgreSQL configuration")
    };
    // B looks at its directory only when told (SIGHUP), so it stays behind while A confirms.
    config_b.calendar.check_secs = 0;
    let mut a = TestGateway::start_with_clock(config_a, dir_a, december_15()).await;
    let b = TestGateway::start_with_clock(config_b, dir_b, december_15()).await;

    let mut numbers = Vec::new();
    for i in 0..4 {
        numbers.push(submit(&mut a, &format!("prov-r-{i}")).await.case_number);
    }
    for n in &numbers {
        until(&mut a, n, "clock start", |_, e| {
            count(e, "task-clock-started") >= 1
        })
        .await;
    }

    std::fs::write(calendar_a.path().join("2027.toml"), Y2027).unwrap();
    for n in &numbers {
        until(&mut a, n, "deadline-confirmed", |c, _| {
            c.tasks.iter().all(|t| t.provisional_years.is_empty())
        })
        .await;
    }
    // B, behind, sweeps every task again: it must not put the provisional dates back.
    mark_all(&schema).await;
    assert_eq!(
        yichuang::clock::sweep(&b.gateway.store, &b.gateway.clocks)
            .await
            .unwrap(),
        0
    );
    for n in &numbers {
        let (case, events) = get(&mut a, n).await;
        assert!(
            case.tasks.iter().all(|t| t.provisional_years.is_empty()),
            "{n}: the replica behind reverted {case:?}"
        );
        let task = sp_jy(&case);
        assert_eq!(task.legal_deadline, "2027-01-14");
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == "deadline-confirmed" && e.task_id == task.task_id)
                .count(),
            1,
            "{n}"
        );
    }

    // B catches up: loads the file, counts everything again, says nothing new.
    std::fs::write(calendar_b.path().join("2027.toml"), Y2027).unwrap();
    yichuang::calendar::reload_and_mark(b.gateway.clocks.calendar(), &b.gateway.store, true).await;
    mark_all(&schema).await;
    let lengths: Vec<usize> = {
        let mut v = Vec::new();
        for n in &numbers {
            v.push(get(&mut a, n).await.1.len());
        }
        v
    };
    yichuang::clock::sweep(&b.gateway.store, &b.gateway.clocks)
        .await
        .unwrap();
    for (n, len) in numbers.iter().zip(lengths) {
        assert_eq!(get(&mut a, n).await.1.len(), len, "{n}: said again");
    }
    b.stop().await;
    a.stop().await;
}

/// Marks every task of the schema for the sweeper, as a dispatch or a result would.
async fn mark_all(schema: &str) {
    testkit::db::connect()
        .await
        .batch_execute(&format!("UPDATE {schema}.tasks SET clock_dirty = 1"))
        .await
        .expect("mark every task");
}

/// The sweeper writes only what changed: a task whose clock is looked at again with nothing new
/// to record gets its clock row written, and the case row is left as it was (PostgreSQL: its
/// row version, `xmin`, does not move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_changes_nothing_leaves_the_case_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(Backend::Postgres, dir.path());
    let yichuang::config::StoreConfig::Postgres { schema, .. } = &config.store else {
        unreachable!("a PostgreSQL configuration")
    };
    let schema = schema.clone();
    let mut gw = TestGateway::start_with(config, dir).await;
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(testkit::example("kai-canguan")),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted: {answer:?}")
    };
    let db = testkit::db::connect().await;
    // The first sweep starts the tasks' clocks: the record changes.
    let before = version(&db, &schema, &receipt.case_number).await;
    yichuang::clock::sweep(&gw.gateway.store, &gw.gateway.clocks)
        .await
        .unwrap();
    let started = version(&db, &schema, &receipt.case_number).await;
    assert_ne!(
        before, started,
        "the clocks' start is written into the record"
    );
    assert_eq!(dirty(&db, &schema, &receipt.case_number).await, 0);
    // Looked at again with nothing new: the task rows are written (clean again), the case not.
    db.execute(
        &format!("UPDATE {schema}.tasks SET clock_dirty = 1 WHERE case_number = $1"),
        &[&receipt.case_number],
    )
    .await
    .unwrap();
    yichuang::clock::sweep(&gw.gateway.store, &gw.gateway.clocks)
        .await
        .unwrap();
    assert_eq!(
        dirty(&db, &schema, &receipt.case_number).await,
        0,
        "the sweep looked at the tasks"
    );
    assert_eq!(
        version(&db, &schema, &receipt.case_number).await,
        started,
        "the case row was not written again"
    );
    let (_, events) = get(&mut gw, &receipt.case_number).await;
    assert!(events.iter().all(|e| e.kind != "sla-warning"));
    gw.stop().await;
}

/// The row version of a case's record.
async fn version(db: &tokio_postgres::Client, schema: &str, number: &str) -> String {
    db.query_one(
        &format!("SELECT xmin::text FROM {schema}.cases WHERE case_number = $1"),
        &[&number],
    )
    .await
    .unwrap()
    .get(0)
}

/// How many of a case's tasks wait for the sweeper.
async fn dirty(db: &tokio_postgres::Client, schema: &str, number: &str) -> i64 {
    db.query_one(
        &format!("SELECT count(*) FROM {schema}.tasks WHERE case_number = $1 AND clock_dirty = 1"),
        &[&number],
    )
    .await
    .unwrap()
    .get(0)
}
