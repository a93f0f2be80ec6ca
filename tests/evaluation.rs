//! 好差评 (GB/T 39735): a concluded case is evaluated once, with the channel's indicators; bad
//! input changes nothing; a 差评 opens a rectification (整改) due in working days on the hall's
//! calendar, whose yellow warning and red alert the SLA sweeper raises once each, and which an
//! operator closes with the response. Nothing is ever evaluated on the applicant's behalf.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use testkit::gateway::{Backend, TestGateway};
use yichuang::proto::v1::{
    Case, CaseEvent, CaseStatus, CloseRectificationRequest, DeliverRequest, EvaluateRequest,
    Evaluation, GetCaseRequest, IndicatorScore, Mail, RectificationState, SubmitRequest,
    deliver_request::How, submit_response::Outcome,
};

/// A clock the test moves: Tuesday 2026-03-10 10:00 in the hall (UTC+8) to start with.
fn clock() -> (Arc<AtomicI64>, yichuang::clock::Now) {
    let start: DateTime<Utc> = "2026-03-10T02:00:00Z".parse().unwrap();
    let ms = Arc::new(AtomicI64::new(start.timestamp_millis()));
    let read = ms.clone();
    let now: yichuang::clock::Now =
        Arc::new(move || DateTime::from_timestamp_millis(read.load(Ordering::SeqCst)).unwrap());
    (ms, now)
}

fn ms(t: &Option<pbjson_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("set");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// A kai-canguan case, accepted and approved; delivered by mail when `deliver`.
async fn concluded_case(gw: &mut TestGateway, id: &str, deliver: bool) -> (String, String) {
    let mut submission = testkit::example("kai-canguan");
    submission.submission_id = id.to_string();
    submission.submitted_at = None;
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(submission),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted: {answer:?}")
    };
    for item in &receipt.items {
        gw.gateway
            .store
            .approve_task(&item.task_id, vec![])
            .await
            .unwrap()
            .expect("approved");
    }
    if deliver {
        gw.client
            .deliver(DeliverRequest {
                case_number: receipt.case_number.clone(),
                how: Some(How::Mail(Mail {
                    carrier: "EMS".into(),
                    tracking_number: "EA123456789CN".into(),
                })),
            })
            .await
            .unwrap();
    }
    (receipt.case_number, receipt.items[0].department.clone())
}

fn window(level: i32, scores: &[(&str, i32)], comment: &str) -> Evaluation {
    Evaluation {
        channel: "window".into(),
        level,
        scores: scores
            .iter()
            .map(|(i, l)| IndicatorScore {
                indicator: i.to_string(),
                level: *l,
            })
            .collect(),
        comment: comment.into(),
        ..Default::default()
    }
}

async fn get(gw: &mut TestGateway, number: &str) -> (Case, Vec<CaseEvent>) {
    let got = gw
        .client
        .get_case(GetCaseRequest {
            case_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (got.case.unwrap(), got.events)
}

fn count(events: &[CaseEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

async fn sweep(gw: &TestGateway) {
    yichuang::clock::sweep(&gw.gateway.store, &gw.gateway.clocks)
        .await
        .expect("sweep");
}

async fn a_poor_evaluation_opens_a_rectification_that_is_watched_and_closed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(backend, dir.path());
    let (time, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let (number, department) = concluded_case(&mut gw, "EVAL-1", false).await;
    let good = [("服务效率", 2), ("服务水平", 3), ("服务态度", 1)];
    let comment = "办事员态度很差，电话13800138000";
    let evaluate = |e: Evaluation, department: &str| EvaluateRequest {
        case_number: number.clone(),
        evaluation: Some(e),
        department_code: department.into(),
    };

    // Not yet delivered: refused.
    let e = gw
        .client
        .evaluate(evaluate(window(2, &good, comment), ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("only a delivered"), "{}", e.message());
    gw.client
        .deliver(DeliverRequest {
            case_number: number.clone(),
            how: Some(How::Mail(Mail {
                carrier: "EMS".into(),
                tracking_number: "EA123456789CN".into(),
            })),
        })
        .await
        .unwrap();

    // Bad input says what, where and what to do, and changes nothing.
    for (request, says) in [
        (
            evaluate(window(6, &good, ""), ""),
            "evaluation.level: 6 is outside 1–5",
        ),
        (
            evaluate(window(2, &good[..2], ""), ""),
            "evaluation.scores: 服务态度 not scored",
        ),
        (
            evaluate(
                window(
                    2,
                    &[("服务效率", 2), ("服务水平", 3), ("办事便捷度", 1)],
                    "",
                ),
                "",
            ),
            "\"办事便捷度\" is not an indicator of the window channel",
        ),
        (
            evaluate(
                window(2, &[("服务效率", 9), ("服务水平", 3), ("服务态度", 1)], ""),
                "",
            ),
            "服务效率 level 9 is outside 1–5",
        ),
        (
            evaluate(window(2, &good, &"差".repeat(501)), ""),
            "evaluation.comment: 501 characters",
        ),
        (
            evaluate(window(2, &good, ""), "nobody"),
            "departmentCode: \"nobody\" handled no task",
        ),
    ] {
        let e = gw.client.evaluate(request).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
        assert!(e.message().contains(says), "{says:?} in {}", e.message());
    }
    let (case, events) = get(&mut gw, &number).await;
    assert!(case.evaluation.is_none() && case.rectification.is_none());
    assert_eq!(count(&events, "evaluated"), 0);

    // A 差评 about a department: recorded, and a rectification due 5 working days later
    // (Wed 11 … Tue 17 March).
    let case = gw
        .client
        .evaluate(evaluate(window(2, &good, comment), &department))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let evaluation = case.evaluation.clone().unwrap();
    assert_eq!(evaluation.level, 2);
    assert_eq!(evaluation.comment, comment);
    assert_eq!(
        evaluation.hall_code,
        case.submission.as_ref().unwrap().hall_code
    );
    let r = case.rectification.clone().unwrap();
    assert_eq!(r.state, RectificationState::Open as i32);
    assert_eq!(r.assignee, department);
    assert_eq!(r.deadline, "2026-03-17");
    let due: DateTime<Utc> = "2026-03-17T16:00:00Z".parse().unwrap();
    assert_eq!(ms(&r.due_at), due.timestamp_millis());
    let (_, events) = get(&mut gw, &number).await;
    let said: Vec<&CaseEvent> = events
        .iter()
        .filter(|e| e.kind == "evaluated" || e.kind.starts_with("rectification-"))
        .collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(
        said[0].detail,
        "window channel, overall 2 (不满意), comment: yes"
    );
    assert!(
        said[1].detail.contains("deadline 2026-03-17") && said[1].detail.contains(&department),
        "{}",
        said[1].detail
    );
    for e in &events {
        assert!(!e.detail.contains("13800138000") && !e.detail.contains("态度很差"));
    }

    // Read of the case's personal data: in the access log.
    let reads = gw
        .gateway
        .store
        .access_log(yichuang::store::AccessQuery {
            target: number.clone(),
            caller: String::new(),
            limit: 100,
        })
        .await
        .unwrap();
    assert!(
        reads
            .iter()
            .any(|a| a.method == "CaseService/Evaluate" && a.outcome == "read"),
        "{reads:?}"
    );
    // Neither the platform nor another hall's window may evaluate.
    use testkit::pki::Who;
    for who in [Who::Platform, Who::Window("999999".into(), "W01".into())] {
        let mut other = testkit::gateway::connect_as(gw.addr, Some(&who)).await;
        let e = other
            .evaluate(evaluate(window(5, &good, ""), ""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    }

    // 一次一评: the same again answers the stored one; another is refused, naming the first.
    let again = gw
        .client
        .evaluate(evaluate(window(2, &good, comment), &department))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(again.evaluation, case.evaluation);
    let e = gw
        .client
        .evaluate(evaluate(
            window(5, &[("服务效率", 5), ("服务水平", 5), ("服务态度", 5)], ""),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("already evaluated at 2026-03-10 10:00"),
        "{}",
        e.message()
    );

    // The sweeper: nothing before the warning; the yellow warning once; the red alert once.
    let warn_at = ms(&r.warn_at);
    assert!(warn_at > ms(&r.opened_at) && warn_at < ms(&r.due_at));
    let at = |t: i64| time.store(t, Ordering::SeqCst);
    at(warn_at - 1);
    sweep(&gw).await;
    at(warn_at);
    sweep(&gw).await;
    sweep(&gw).await;
    let (case, events) = get(&mut gw, &number).await;
    assert_eq!(count(&events, "rectification-warning"), 1);
    assert_eq!(count(&events, "rectification-overdue"), 0);
    assert!(case.rectification.as_ref().unwrap().warned);
    at(ms(&r.due_at));
    sweep(&gw).await;
    at(ms(&r.due_at) + 86_400_000);
    sweep(&gw).await;
    let (case, events) = get(&mut gw, &number).await;
    assert_eq!(count(&events, "rectification-warning"), 1);
    assert_eq!(count(&events, "rectification-overdue"), 1);
    assert!(case.rectification.as_ref().unwrap().overdue);

    // An operator closes it with the response, once; the response stays out of the history.
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let e = admin
        .close_rectification(CloseRectificationRequest {
            case_number: number.clone(),
            response: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let response = "已约谈窗口人员并整改";
    let closed = admin
        .close_rectification(CloseRectificationRequest {
            case_number: number.clone(),
            response: response.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap()
        .rectification
        .unwrap();
    assert_eq!(closed.state, RectificationState::Closed as i32);
    assert_eq!(closed.response, response);
    assert!(!closed.closed_by.is_empty());
    let e = admin
        .close_rectification(CloseRectificationRequest {
            case_number: number.clone(),
            response: "另一个答复".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    let (_, events) = get(&mut gw, &number).await;
    assert_eq!(count(&events, "rectification-closed"), 1);
    assert!(events.iter().all(|e| !e.detail.contains(response)));
    let actions = gw.gateway.store.operator_actions(10).await.unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a.action == "rectification-close" && a.target == number),
        "{actions:?}"
    );
    gw.stop().await;
}

async fn a_case_nobody_evaluates_stays_without_evaluation(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(backend, dir.path());
    let (time, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let (number, _) = concluded_case(&mut gw, "EVAL-NONE", true).await;
    let (case, _) = get(&mut gw, &number).await;
    assert_eq!(case.status, CaseStatus::Delivered as i32);
    // However long the sweeper runs, nobody evaluates on the applicant's behalf.
    for days in [0, 15, 60, 400] {
        time.fetch_add(days * 86_400_000, Ordering::SeqCst);
        sweep(&gw).await;
    }
    let (case, events) = get(&mut gw, &number).await;
    assert!(case.evaluation.is_none(), "{:?}", case.evaluation);
    assert!(case.rectification.is_none());
    assert!(
        events
            .iter()
            .all(|e| e.kind != "evaluated" && !e.kind.starts_with("rectification-")),
        "{events:?}"
    );

    // A 差评 with no department is assigned to the accepting window.
    let case = gw
        .client
        .evaluate(EvaluateRequest {
            case_number: number.clone(),
            evaluation: Some(Evaluation {
                channel: "online".into(),
                level: 1,
                scores: ["办事效率", "办事指南精确度", "办事便捷度", "平台操作性"]
                    .iter()
                    .map(|i| IndicatorScore {
                        indicator: i.to_string(),
                        level: 1,
                    })
                    .collect(),
                ..Default::default()
            }),
            department_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let s = case.submission.as_ref().unwrap();
    assert_eq!(
        case.rectification.unwrap().assignee,
        format!("window:{}/{}", s.hall_code, s.window_code)
    );
    gw.stop().await;
}

/// A test fixture, not the 2027 notice: 2026-12-31 and New Year's Day off.
const Y2027: &str = "year = 2027\nnotice = \"fixture\"\nsource = \"https://example.invalid/2027\"\namendments = []\ndays = [\n  { date = 2026-12-31, off = true, name = \"元旦\" },\n  { date = 2027-01-01, off = true, name = \"元旦\" },\n]\n";

/// Late in December, before next year's notice is loaded: a rectification's deadline is counted
/// Monday–Friday and marked provisional; once the notice is loaded the sweeper moves it, once.
async fn a_provisional_rectification_deadline_is_moved_once_the_notice_is_loaded(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let calendar = dir.path().join("calendar");
    std::fs::create_dir(&calendar).unwrap();
    for entry in std::fs::read_dir(testkit::repo().join("config/calendar")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&path, calendar.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut config = testkit::gateway::config(backend, dir.path());
    config.calendar_dir = calendar.clone();
    let (time, now) = clock();
    // Thursday 2026-12-24 10:00 in the hall.
    let start: DateTime<Utc> = "2026-12-24T02:00:00Z".parse().unwrap();
    time.store(start.timestamp_millis(), Ordering::SeqCst);
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let (number, _) = concluded_case(&mut gw, "EVAL-DEC", true).await;
    let r = gw
        .client
        .evaluate(EvaluateRequest {
            case_number: number.clone(),
            evaluation: Some(window(
                2,
                &[("服务效率", 2), ("服务水平", 2), ("服务态度", 2)],
                "",
            )),
            department_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap()
        .rectification
        .unwrap();
    // Monday–Friday: 25, 28, 29, 30, 31 December.
    assert_eq!(r.deadline, "2026-12-31");
    assert!(r.deadline_provisional);
    let (_, events) = get(&mut gw, &number).await;
    let opened = events
        .iter()
        .find(|e| e.kind == "rectification-opened")
        .unwrap();
    assert!(opened.detail.contains("provisional"), "{}", opened.detail);

    // Still missing an hour later: nothing said.
    time.store(ms(&r.recheck_at), Ordering::SeqCst);
    sweep(&gw).await;
    let (case, _) = get(&mut gw, &number).await;
    assert!(case.rectification.as_ref().unwrap().deadline_provisional);

    // The notice arrives: 31 December and 1 January are off, so the fifth working day is
    // Monday 4 January; said once.
    std::fs::write(calendar.join("2027.toml"), Y2027).unwrap();
    gw.gateway.clocks.calendar().reload(true).unwrap();
    time.fetch_add(3_600_000, Ordering::SeqCst);
    sweep(&gw).await;
    time.fetch_add(3_600_000, Ordering::SeqCst);
    sweep(&gw).await;
    let (case, events) = get(&mut gw, &number).await;
    let r = case.rectification.unwrap();
    assert_eq!(r.deadline, "2027-01-04");
    assert!(!r.deadline_provisional);
    let confirmed: Vec<&CaseEvent> = events
        .iter()
        .filter(|e| e.kind == "deadline-confirmed" && e.task_id.is_empty())
        .collect();
    assert_eq!(confirmed.len(), 1, "{events:?}");
    assert!(
        confirmed[0].detail.contains("2026-12-31 → 2027-01-04"),
        "{}",
        confirmed[0].detail
    );
    gw.stop().await;
}

/// A red alert raised on a provisional deadline that the loaded notice moves later is taken
/// back, and raised again, once, when the real deadline passes.
async fn an_alert_on_a_provisional_deadline_moved_later_is_raised_again_at_the_real_one(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let calendar = dir.path().join("calendar");
    std::fs::create_dir(&calendar).unwrap();
    for entry in std::fs::read_dir(testkit::repo().join("config/calendar")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&path, calendar.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut config = testkit::gateway::config(backend, dir.path());
    config.calendar_dir = calendar.clone();
    let (time, now) = clock();
    let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap().timestamp_millis();
    time.store(at("2026-12-24T02:00:00Z"), Ordering::SeqCst);
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let (number, _) = concluded_case(&mut gw, "EVAL-MOVED", true).await;
    gw.client
        .evaluate(EvaluateRequest {
            case_number: number.clone(),
            evaluation: Some(window(
                1,
                &[("服务效率", 1), ("服务水平", 1), ("服务态度", 1)],
                "",
            )),
            department_code: String::new(),
        })
        .await
        .unwrap();

    // 1 January, 00:30 in the hall: the provisional deadline (31 December) has passed.
    time.store(at("2026-12-31T16:30:00Z"), Ordering::SeqCst);
    sweep(&gw).await;
    let (case, events) = get(&mut gw, &number).await;
    assert!(case.rectification.as_ref().unwrap().overdue);
    assert_eq!(count(&events, "rectification-overdue"), 1);

    // The notice moves the deadline to 4 January: the alert is taken back.
    std::fs::write(calendar.join("2027.toml"), Y2027).unwrap();
    gw.gateway.clocks.calendar().reload(true).unwrap();
    time.fetch_add(3_600_000, Ordering::SeqCst);
    sweep(&gw).await;
    let (case, events) = get(&mut gw, &number).await;
    let r = case.rectification.unwrap();
    assert_eq!(r.deadline, "2027-01-04");
    assert!(!r.overdue, "not overdue before its real deadline");
    assert_eq!(count(&events, "rectification-overdue"), 1);

    // 5 January, 00:30: overdue again, said once more.
    time.store(at("2027-01-04T16:30:00Z"), Ordering::SeqCst);
    sweep(&gw).await;
    sweep(&gw).await;
    let (case, events) = get(&mut gw, &number).await;
    assert!(case.rectification.unwrap().overdue);
    assert_eq!(count(&events, "rectification-overdue"), 2, "{events:?}");
    gw.stop().await;
}

/// Two replicas on one PostgreSQL database sweeping at the same moments raise each alert of a
/// rectification once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_raise_a_rectifications_alerts_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(Backend::Postgres, dir.path());
    let (time, now) = clock();
    let mut a = TestGateway::start_with_clock(config.clone(), dir, now.clone()).await;
    let b = TestGateway::serve_with_clock(&config, now).await;
    let (number, _) = concluded_case(&mut a, "EVAL-REPLICAS", true).await;
    let r = a
        .client
        .evaluate(EvaluateRequest {
            case_number: number.clone(),
            evaluation: Some(window(
                1,
                &[("服务效率", 1), ("服务水平", 1), ("服务态度", 1)],
                "",
            )),
            department_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap()
        .rectification
        .unwrap();
    for t in [ms(&r.warn_at), ms(&r.due_at)] {
        time.store(t, Ordering::SeqCst);
        for _ in 0..3 {
            let (x, y) = tokio::join!(
                yichuang::clock::sweep(&a.gateway.store, &a.gateway.clocks),
                yichuang::clock::sweep(&b.gateway.store, &b.gateway.clocks),
            );
            x.unwrap();
            y.unwrap();
        }
    }
    let (_, events) = get(&mut a, &number).await;
    assert_eq!(count(&events, "rectification-warning"), 1, "{events:?}");
    assert_eq!(count(&events, "rectification-overdue"), 1, "{events:?}");
    b.stop().await;
    a.stop().await;
}

testkit::on_both_stores!(
    a_poor_evaluation_opens_a_rectification_that_is_watched_and_closed,
    a_case_nobody_evaluates_stays_without_evaluation,
    a_provisional_rectification_deadline_is_moved_once_the_notice_is_loaded,
    an_alert_on_a_provisional_deadline_moved_later_is_raised_again_at_the_real_one,
);
