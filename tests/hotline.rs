//! The 12345 hotline's work orders, sent by a simulated hotline system over TLS with the
//! `hotline` role's certificate: a progress query is answered only to an applicant verified by
//! the last four characters of the ID number or mobile on the case — masked, in Chinese, every
//! answer an audited read naming the order — and refused otherwise saying nothing of the case;
//! too many wrong tries lock a case number until the next day; an order number is answered
//! once; a role without `hotline.orders` is refused. A complaint opens a supervision (督办) on
//! the case, assigned to a department, with a reply deadline in working days whose yellow and
//! red alerts the SLA sweeper raises once each; the citizen's words are in no history entry. An
//! operator's reply closes it and reaches the simulated hotline's reply interface, signed, once,
//! through its refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use testkit::gateway::{Backend, TestGateway};
use testkit::pki::Who;
use tonic::transport::Channel;
use yichuang::proto::v1::hotline_service_client::HotlineServiceClient;
use yichuang::proto::v1::{
    AccessLogRequest, CaseEvent, ComplainRequest, ConsultRequest, GetCaseRequest, ProgressRequest,
    ProgressResponse,
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

/// The 12345 system's identity: role `hotline`, every hall.
fn hotline_system() -> Who {
    Who::Named("hotline-12345".into(), "urn:yichuang:hotline".into())
}

async fn hotline(gw: &TestGateway, who: &Who) -> HotlineServiceClient<Channel> {
    HotlineServiceClient::new(testkit::gateway::channel(gw.addr, Some(who)).await)
}

/// A kai-canguan case (applicant: a company; its contact's mobile ends 0000, its legal
/// representative's ID number 001X), accepted in the examples' hall.
async fn case(gw: &mut TestGateway, id: &str) -> String {
    let mut submission = testkit::example("kai-canguan");
    submission.submission_id = id.to_string();
    submission.submitted_at = None;
    testkit::gateway::accept(&mut gw.client, submission).await
}

/// The shipped table's example codes (config/hotline/classification.toml): 政务服务 › 办事服务 ›
/// 办事进度查询 / 办事投诉 / 办事咨询.
const PROGRESS_CLASS: &str = "010101";
const COMPLAINT_CLASS: &str = "010102";
const CONSULTATION_CLASS: &str = "010103";

fn ask(order_no: &str, case_number: &str, digits: &str) -> ProgressRequest {
    ProgressRequest {
        order_no: order_no.into(),
        case_number: case_number.into(),
        verify_digits: digits.into(),
        classification_code: PROGRESS_CLASS.into(),
    }
}

async fn progress(
    client: &mut HotlineServiceClient<Channel>,
    request: ProgressRequest,
) -> Result<ProgressResponse, tonic::Status> {
    client.progress(request).await.map(|r| r.into_inner())
}

/// Personal data of the example that no answer, stored order or refusal may hold.
const SECRETS: [&str; 6] = [
    "13909510000",
    "64010419800315001X",
    "91640104MA76L8Q23H",
    "马强",
    "老马家",
    "解放西街",
];

fn assert_nothing_unmasked(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{s} unmasked in {text}");
    }
}

async fn a_progress_query_is_answered_only_to_the_verified_and_audited(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(backend, dir.path());
    let (_, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let number = case(&mut gw, "HOTLINE-P1").await;
    let mut agent = hotline(&gw, &hotline_system()).await;

    // Wrong digits, no digits, digits of the wrong form and an unknown case: one refusal, the
    // same words, nothing of the case.
    let wrong = progress(&mut agent, ask("GD-1", &number, "1234"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::PermissionDenied, "{wrong:?}");
    assert!(
        wrong.message().contains("verifyDigits"),
        "{}",
        wrong.message()
    );
    for (order, n, d) in [
        ("GD-2", number.as_str(), ""),
        ("GD-3", number.as_str(), "12-4"),
        ("GD-4", "11640100MB0000000X2026031000099", "0000"),
        // The company's unified social credit code is public: it does not verify.
        ("GD-C", number.as_str(), "q23h"),
    ] {
        let e = progress(&mut agent, ask(order, n, d)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{order}: {e:?}");
        assert_eq!(e.message(), wrong.message(), "{order}");
    }
    assert!(!wrong.message().contains(&number));
    assert_nothing_unmasked(wrong.message());

    // The contact's mobile, then the legal representative's ID number (x said in lower case).
    let answer = progress(&mut agent, ask("GD-5", &number, "0000"))
        .await
        .expect("verified by the mobile");
    assert!(!answer.repeated);
    assert!(answer.text.contains(&number), "{}", answer.text);
    assert!(answer.text.contains("承诺办结日期"), "{}", answer.text);
    assert!(answer.text.contains("办理的“"), "{}", answer.text);
    assert!(answer.text.contains("已受理"), "{}", answer.text);
    assert!(
        answer.text.contains("目前无需申请人办理"),
        "{}",
        answer.text
    );
    assert_nothing_unmasked(&answer.text);
    let by_id = progress(&mut agent, ask("GD-6", &number, "001x"))
        .await
        .expect("verified by the ID number");
    assert_eq!(by_id.text, answer.text);

    // The same order again: the stored answer; its number with other content: refused.
    let again = progress(&mut agent, ask("GD-5", &number, "0000"))
        .await
        .unwrap();
    assert!(again.repeated);
    assert_eq!(again.text, answer.text);
    let other = case(&mut gw, "HOTLINE-P2").await;
    let reused = progress(&mut agent, ask("GD-5", &other, "0000"))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().contains("GD-5"), "{}", reused.message());
    // A refused order stays refused, whatever digits its repeat brings: no uncounted try.
    let e = progress(&mut agent, ask("GD-1", &number, "0000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // Every answer is a read in the access log naming the hotline and the order; every refusal
    // is there too.
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let records = admin
        .access_log(AccessLogRequest {
            case_number: number.clone(),
            caller: "hotline-12345".into(),
            limit: 100,
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let reads: Vec<_> = records.iter().filter(|r| r.outcome == "read").collect();
    assert_eq!(reads.len(), 3, "{records:?}");
    assert!(
        reads
            .iter()
            .all(|r| r.method == "HotlineService/Progress" && r.role == "hotline")
    );
    for order in ["GD-5", "GD-6"] {
        assert!(
            reads.iter().any(|r| r.reason.contains(order)),
            "{order}: {records:?}"
        );
    }
    assert_eq!(
        records.iter().filter(|r| r.outcome == "refused").count(),
        5,
        "GD-1, GD-2, GD-3, GD-C and GD-1's repeat about this case: {records:?}"
    );

    // The orders are stored with their answers, masked, and operators read them.
    let orders = gw.gateway.store.hotline_orders(100).await.unwrap();
    let listed = admin
        .hotline_orders(yichuang::proto::v1::HotlineOrdersRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(listed.len(), orders.len());
    assert!(
        listed
            .iter()
            .any(|o| o.order_no == "GD-5" && o.outcome == "answered" && o.subject == number)
    );
    assert!(
        listed.iter().all(|o| o.classification == PROGRESS_CLASS),
        "{listed:?}"
    );
    assert_eq!(orders.len(), 7, "{orders:?}");
    for o in &orders {
        assert_nothing_unmasked(&o.answer);
        assert_eq!(o.caller, "hotline-12345");
    }
    let outcome = |no: &str| {
        orders
            .iter()
            .find(|o| o.order_no == no)
            .map(|o| o.outcome.clone())
    };
    assert_eq!(outcome("GD-1").as_deref(), Some("refused"));
    assert_eq!(outcome("GD-5").as_deref(), Some("answered"));

    // A window's system may not send work orders.
    let mut window = hotline(&gw, &Who::examples_hall()).await;
    let e = progress(&mut window, ask("GD-7", &number, "0000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("hotline.orders"), "{}", e.message());
    gw.stop().await;
}

async fn wrong_digits_lock_a_case_number_until_the_next_day(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(backend, dir.path());
    config.hotline.max_failed_verifications = 3;
    let (time, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let number = case(&mut gw, "HOTLINE-L1").await;
    let neighbour = case(&mut gw, "HOTLINE-L2").await;
    let mut agent = hotline(&gw, &hotline_system()).await;

    for (i, digits) in ["1111", "2222", "3333"].iter().enumerate() {
        let e = progress(&mut agent, ask(&format!("L-{i}"), &number, digits))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "try {i}: {e:?}");
    }
    // The right digits now: refused too, until the next day.
    let e = progress(&mut agent, ask("L-right", &number, "0000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("2026-03-10"), "{}", e.message());
    assert_nothing_unmasked(e.message());
    // A repeat of a failed order is no new try: still 3, and another case is not touched.
    let e = progress(&mut agent, ask("L-0", &number, "4444"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(
        gw.gateway
            .store
            .hotline_failures(&number, "2026-03-10")
            .await
            .unwrap(),
        3
    );
    progress(&mut agent, ask("L-n", &neighbour, "0000"))
        .await
        .expect("another case is not locked");

    // 23:59 the same day in the hall: still locked; the next day: answered.
    time.store(
        "2026-03-10T15:59:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis(),
        Ordering::SeqCst,
    );
    let e = progress(&mut agent, ask("L-late", &number, "0000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    time.store(
        "2026-03-10T16:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis(),
        Ordering::SeqCst,
    );
    let answer = progress(&mut agent, ask("L-next", &number, "0000"))
        .await
        .expect("the next day");
    assert!(answer.text.contains(&number));
    gw.stop().await;
}

/// Many queries at once with wrong digits: each try is counted before its digits are checked, so
/// no more than the day's limit are checked, the rest are refused as locked, and the right digits
/// afterwards are locked too.
async fn concurrent_wrong_digits_are_counted_before_they_are_checked(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(backend, dir.path());
    config.hotline.max_failed_verifications = 3;
    let (_, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let number = case(&mut gw, "HOTLINE-R1").await;
    let agent = hotline(&gw, &hotline_system()).await;

    let mut tries = tokio::task::JoinSet::new();
    for i in 0..24 {
        let mut agent = agent.clone();
        let request = ask(&format!("R-{i}"), &number, &format!("{:04}", 1000 + i));
        tries.spawn(async move { progress(&mut agent, request).await });
    }
    let (mut not_verified, mut locked) = (0, 0);
    while let Some(r) = tries.join_next().await {
        let e = r.unwrap().unwrap_err();
        match e.code() {
            tonic::Code::PermissionDenied => not_verified += 1,
            tonic::Code::ResourceExhausted => locked += 1,
            _ => panic!("{e:?}"),
        }
    }
    assert_eq!((not_verified, locked), (3, 21));
    assert_eq!(
        gw.gateway
            .store
            .hotline_failures(&number, "2026-03-10")
            .await
            .unwrap(),
        3
    );
    let e = progress(&mut agent.clone(), ask("R-right", &number, "0000"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    gw.stop().await;
}

/// A hotline limited to one hall is refused another hall's case before its digits are checked or
/// counted: the same refusal for right and wrong digits, and the case is not locked by it.
async fn another_halls_case_is_refused_before_the_digits_are_checked(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(backend, dir.path());
    config.hotline.max_failed_verifications = 2;
    let (_, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let number = case(&mut gw, "HOTLINE-S1").await;
    let mut elsewhere = hotline(
        &gw,
        &Who::Named(
            "hotline-elsewhere".into(),
            "urn:yichuang:hotline:640200-DT01".into(),
        ),
    )
    .await;
    let mut refusals = Vec::new();
    for (i, digits) in ["0000", "1111", "2222", "3333"].iter().enumerate() {
        let e = progress(&mut elsewhere, ask(&format!("S-{i}"), &number, digits))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{digits}: {e:?}");
        assert!(e.message().contains("640200-DT01"), "{}", e.message());
        refusals.push(e.message().to_string());
    }
    assert!(refusals.iter().all(|m| *m == refusals[0]), "{refusals:?}");
    assert_eq!(
        gw.gateway
            .store
            .hotline_failures(&number, "2026-03-10")
            .await
            .unwrap(),
        0
    );
    let mut agent = hotline(&gw, &hotline_system()).await;
    progress(&mut agent, ask("S-all", &number, "0000"))
        .await
        .expect("not locked by another hall's hotline");
    gw.stop().await;
}

fn complaint(order_no: &str, case_number: &str, kind: &str, content: &str) -> ComplainRequest {
    ComplainRequest {
        order_no: order_no.into(),
        case_number: case_number.into(),
        kind: kind.into(),
        content: content.into(),
        department: String::new(),
        classification_code: COMPLAINT_CLASS.into(),
    }
}

fn ms(t: &Option<pbjson_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("set");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn count(events: &[CaseEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

async fn history(
    gw: &mut TestGateway,
    number: &str,
) -> (yichuang::proto::v1::Case, Vec<CaseEvent>) {
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

async fn sweep(gw: &TestGateway) {
    yichuang::clock::sweep(&gw.gateway.store, &gw.gateway.clocks)
        .await
        .expect("sweep");
}

async fn a_complaint_is_supervised_until_its_reply_deadline_with_yellow_and_red_once(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(backend, dir.path());
    let (time, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let number = case(&mut gw, "HOTLINE-C1").await;
    let mut agent = hotline(&gw, &hotline_system()).await;
    let words = "办了半个月还没有消息，我的电话13909510000";

    // Tuesday 2026-03-10: 5 working days → Tuesday 2026-03-17, 24:00 in the hall.
    let opened = agent
        .complain(complaint("TS-1", &number, "slow", words))
        .await
        .expect("recorded")
        .into_inner();
    assert!(!opened.repeated);
    assert_eq!(opened.deadline, "2026-03-17");
    assert!(!opened.deadline_provisional);
    let (case, events) = history(&mut gw, &number).await;
    assert!(
        case.tasks.iter().any(|t| t.department == opened.department),
        "{opened:?}"
    );
    assert_eq!(case.supervisions.len(), 1);
    let watch = case.supervisions[0].watch.clone().unwrap();
    assert_eq!(watch.assignee, opened.department);
    assert_eq!(
        ms(&watch.due_at),
        "2026-03-17T16:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis()
    );
    assert_eq!(
        case.supervisions[0].content, words,
        "the words are kept on the case"
    );
    assert_eq!(count(&events, "supervision-opened"), 1);
    for e in &events {
        assert!(
            !e.detail.contains("半个月") && !e.detail.contains("13909510000"),
            "{e:?}"
        );
    }
    let said = events
        .iter()
        .find(|e| e.kind == "supervision-opened")
        .unwrap();
    assert!(
        said.detail.contains("TS-1") && said.detail.contains("2026-03-17"),
        "{said:?}"
    );

    // The same order again: the same supervision; its number with other words: refused.
    let again = agent
        .complain(complaint("TS-1", &number, "slow", words))
        .await
        .unwrap()
        .into_inner();
    assert!(again.repeated);
    assert_eq!(again.deadline, opened.deadline);
    let e = agent
        .complain(complaint("TS-1", &number, "rude", "另一件事"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("TS-1"), "{}", e.message());
    let e = agent
        .complain(complaint("TS-9", &number, "angry", words))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("kind"), "{}", e.message());
    assert!(!e.message().contains("13909510000"), "{}", e.message());
    let mut elsewhere = complaint("TS-8", &number, "refused", words);
    elsewhere.department = "nobody".into();
    let e = agent.complain(elsewhere).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("department"), "{}", e.message());
    let (case, _) = history(&mut gw, &number).await;
    assert_eq!(case.supervisions.len(), 1, "refused orders change nothing");

    // The work order is in the audit trail of orders, without the words.
    let orders = gw.gateway.store.hotline_orders(10).await.unwrap();
    let stored = orders
        .iter()
        .find(|o| o.order_no == "TS-1")
        .expect("stored");
    assert_eq!(stored.kind, "complaint");
    assert!(stored.answer.contains("2026年3月17日"), "{}", stored.answer);
    assert!(!stored.answer.contains("半个月"), "{}", stored.answer);

    // The sweeper: nothing before the warning; the yellow warning once; the red alert once.
    sweep(&gw).await;
    let (_, events) = history(&mut gw, &number).await;
    assert_eq!(count(&events, "supervision-warning"), 0);
    time.store(ms(&watch.warn_at), Ordering::SeqCst);
    sweep(&gw).await;
    sweep(&gw).await;
    let (_, events) = history(&mut gw, &number).await;
    assert_eq!(count(&events, "supervision-warning"), 1, "{events:?}");
    assert_eq!(count(&events, "supervision-overdue"), 0);
    time.store(ms(&watch.due_at), Ordering::SeqCst);
    sweep(&gw).await;
    sweep(&gw).await;
    let (case, events) = history(&mut gw, &number).await;
    assert_eq!(count(&events, "supervision-warning"), 1, "{events:?}");
    assert_eq!(count(&events, "supervision-overdue"), 1, "{events:?}");
    let watch = case.supervisions[0].watch.clone().unwrap();
    assert!(watch.warned && watch.overdue);
    let red = events
        .iter()
        .find(|e| e.kind == "supervision-overdue")
        .unwrap();
    assert!(
        red.detail.contains("TS-1") && red.detail.contains("red alert"),
        "{red:?}"
    );
    gw.stop().await;
}

/// The simulated 12345 system's reply interface: checks the signature, answers 503 to the
/// first good try, takes each order's reply once.
#[derive(Default)]
struct ReplyDesk {
    replies: std::sync::Mutex<Vec<(String, serde_json::Value)>>,
    tries: std::sync::atomic::AtomicUsize,
    badly_signed: std::sync::atomic::AtomicUsize,
}

const SECRET: &str = "hotline-secret";

async fn take_reply(
    axum::extract::State(desk): axum::extract::State<Arc<ReplyDesk>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let timestamp: i64 = header(yichuang::feed::TIMESTAMP_HEADER)
        .parse()
        .unwrap_or(0);
    let id = header(yichuang::feed::EVENT_ID_HEADER);
    let signed = header(yichuang::feed::SIGNATURE_HEADER);
    if signed != yichuang::feed::signature(SECRET, timestamp, &id, &body)
        || (chrono::Utc::now().timestamp() - timestamp).abs() > 300
    {
        desk.badly_signed.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if desk.tries.fetch_add(1, Ordering::SeqCst) == 0 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut replies = desk.replies.lock().unwrap();
    if !replies.iter().any(|(o, _)| *o == id) {
        replies.push((id, value));
    }
    StatusCode::OK
}

async fn an_operators_reply_closes_the_complaint_and_reaches_the_hotline_once(backend: Backend) {
    let desk = Arc::new(ReplyDesk::default());
    let app = axum::Router::new()
        .route("/reply", axum::routing::post(take_reply))
        .with_state(desk.clone());
    let (listener, endpoint) = testkit::server::listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(backend, dir.path());
    config.hotline.reply_url = format!("{endpoint}/reply");
    config.hotline.secret = SECRET.into();
    let (time, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let number = case(&mut gw, "HOTLINE-R1").await;
    let mut agent = hotline(&gw, &hotline_system()).await;
    let opened = agent
        .complain(complaint("TS-R1", &number, "rude", "窗口人员态度恶劣"))
        .await
        .unwrap()
        .into_inner();

    // A role without hotline.reply may not reply; an unknown order is refused naming it.
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let reply = "经核实，已对窗口人员批评教育并向您致歉。";
    let ask = |order: &str, text: &str| yichuang::proto::v1::ReplyComplaintRequest {
        case_number: number.clone(),
        order_no: order.into(),
        reply: text.into(),
    };
    let e = admin.reply_complaint(ask("TS-X", reply)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("TS-X"), "{}", e.message());
    let mut window = yichuang::proto::v1::admin_service_client::AdminServiceClient::new(
        testkit::gateway::channel(gw.admin_addr, Some(&Who::examples_hall())).await,
    );
    let e = window
        .reply_complaint(ask("TS-R1", reply))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("hotline.reply"), "{}", e.message());

    // Two days later, within the deadline: closed, and sent.
    time.store(
        "2026-03-12T02:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis(),
        Ordering::SeqCst,
    );
    let answer = admin
        .reply_complaint(ask("TS-R1", reply))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.queued);
    let case = answer.case.unwrap();
    let w = case.supervisions[0].watch.clone().unwrap();
    assert_eq!(
        w.state,
        yichuang::proto::v1::RectificationState::Closed as i32
    );
    assert_eq!(w.closed_by, "operator");
    testkit::wait::until(
        "the reply reaches the hotline",
        std::time::Duration::from_secs(30),
        || {
            let desk = desk.clone();
            async move { !desk.replies.lock().unwrap().is_empty() }
        },
    )
    .await;
    // Asked again with the same reply: nothing new is sent.
    let again = admin
        .reply_complaint(ask("TS-R1", reply))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.queued);
    let e = admin
        .reply_complaint(ask("TS-R1", "另一个答复"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

    let (case, events) = history(&mut gw, &number).await;
    let replied = events
        .iter()
        .find(|e| e.kind == "supervision-replied")
        .expect("replied");
    assert!(replied.detail.contains("within"), "{replied:?}");
    assert!(
        !replied.detail.contains("致歉"),
        "the reply is not in the history: {replied:?}"
    );
    // Closed: no alert comes any more.
    time.store(ms(&w.due_at) + 1, Ordering::SeqCst);
    sweep(&gw).await;
    let (_, events) = history(&mut gw, &number).await;
    assert_eq!(count(&events, "supervision-overdue"), 0, "{events:?}");
    assert_eq!(case.supervisions.len(), 1);

    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let replies = desk.replies.lock().unwrap().clone();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let (order, body) = &replies[0];
    assert_eq!(order, "TS-R1");
    assert_eq!(body["orderNo"], "TS-R1");
    assert_eq!(body["caseNumber"], number.as_str());
    assert_eq!(body["department"], opened.department.as_str());
    assert_eq!(body["reply"], reply);
    assert!(
        desk.tries.load(Ordering::SeqCst) >= 2,
        "the 503 was tried again"
    );
    assert_eq!(desk.badly_signed.load(Ordering::SeqCst), 0);
    gw.stop().await;
}

/// A queued reply is claimed with a lease: claimed, it is not due for another replica until the
/// lease ends; delivered, a failure recorded later by another replica does not undo it.
async fn a_reply_is_claimed_by_one_replica_and_a_late_failure_does_not_undo_its_delivery(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(backend, dir.path());
    let (_, now) = clock();
    let mut gw = TestGateway::start_with_clock(config, dir, now).await;
    let number = case(&mut gw, "HOTLINE-Q1").await;
    let mut agent = hotline(&gw, &hotline_system()).await;
    agent
        .complain(complaint("TS-Q1", &number, "rude", "窗口人员态度恶劣"))
        .await
        .unwrap();
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let answer = admin
        .reply_complaint(yichuang::proto::v1::ReplyComplaintRequest {
            case_number: number.clone(),
            order_no: "TS-Q1".into(),
            reply: "经核实，已致歉。".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.queued);

    let store = &gw.gateway.store;
    let t = Utc::now().timestamp_millis();
    let lease = 60_000;
    let claimed = store.claim_hotline_replies(t, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].0, "TS-Q1");
    assert!(
        store
            .claim_hotline_replies(t + 1, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "claimed by one replica: not due for another"
    );
    // The lease ended (the first replica is slow): another claims and delivers it; the first's
    // failure, recorded afterwards, does not make it due again.
    let again = store
        .claim_hotline_replies(t + lease, 10, lease)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "due again once the lease ended");
    store
        .hotline_reply_tried("TS-Q1", Some(t + lease + 5), t + lease + 5)
        .await
        .unwrap();
    store
        .hotline_reply_tried("TS-Q1", None, t + lease + 10)
        .await
        .unwrap();
    assert!(
        store
            .claim_hotline_replies(t + 10 * lease, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "delivered stays delivered"
    );
    gw.stop().await;
}

/// A consultation is answered from the acceptance list, by the item's code or words of its
/// name; a name several items share is refused with their codes; the same order again gets the
/// stored answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consultation_is_answered_from_the_acceptance_list() {
    let gw = TestGateway::start(Backend::Sqlite).await;
    let mut agent = hotline(&gw, &hotline_system()).await;
    let ask = |order: &str, code: &str, query: &str| ConsultRequest {
        order_no: order.into(),
        item_code: code.into(),
        query: query.into(),
        classification_code: CONSULTATION_CLASS.into(),
    };
    let by_code = agent
        .consult(ask("ZX-1", "SP-JY", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_code.item_name, "食品经营许可");
    let catalog = gw.gateway.intake.catalog();
    let item = &catalog.items["SP-JY"];
    for m in &item.materials {
        let name = &catalog.materials[m.code.get_ref().as_str()].name;
        assert!(
            by_code.text.contains(name.as_str()),
            "{name} in {}",
            by_code.text
        );
        assert!(by_code.text.contains(&m.legal_basis), "{}", by_code.text);
    }
    assert!(
        by_code
            .text
            .contains("承诺办结时限为10个工作日，法定时限为20个工作日"),
        "{}",
        by_code.text
    );
    assert!(
        by_code.text.contains("一般受理、容缺受理"),
        "{}",
        by_code.text
    );
    let by_name = agent
        .consult(ask("ZX-2", "", "食品经营"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name.item_code, "SP-JY");
    assert_eq!(by_name.text, by_code.text);
    let e = agent.consult(ask("ZX-3", "", "登记")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("QY-SL"), "{}", e.message());
    let e = agent.consult(ask("ZX-4", "NO-SUCH", "")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let again = agent
        .consult(ask("ZX-1", "SP-JY", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(again.repeated);
    let e = agent.consult(ask("ZX-1", "QY-SL", "")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    // Another class is other content too.
    let e = agent
        .consult(ConsultRequest {
            classification_code: "010000".into(),
            ..ask("ZX-1", "SP-JY", "")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let orders = gw.gateway.store.hotline_orders(10).await.unwrap();
    assert_eq!(
        orders.iter().filter(|o| o.kind == "consultation").count(),
        2,
        "{orders:?}"
    );
    gw.stop().await;
}

/// `yichuang hotline progress` as the 12345 system: the answer as JSON; refused, exit 1 with the
/// gRPC code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sends_a_progress_query_as_the_hotline() {
    let mut gw = TestGateway::start(Backend::Sqlite).await;
    let number = case(&mut gw, "HOTLINE-CLI").await;
    let (cert, key) = testkit::pki::client_files(&hotline_system());
    let server = gw.endpoint.clone();
    let run = |order: &str, digits: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_yichuang"))
            .args(["hotline", "progress", "--order", order, "--case", &number])
            .args(["--digits", digits, "--class", PROGRESS_CLASS])
            .args(["--server", &server])
            .env("YICHUANG_CA", testkit::pki::ca_file())
            .env("YICHUANG_CERT", &cert)
            .env("YICHUANG_KEY", &key)
            .output()
            .expect("runs yichuang");
        testkit::logfile::keep_stderr("yichuang", &out);
        out
    };
    let refused = tokio::task::block_in_place(|| run("CLI-1", "9999"));
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("PermissionDenied"), "{said}");
    let answered = tokio::task::block_in_place(|| run("CLI-2", "0000"));
    assert_eq!(
        answered.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert_eq!(json["orderNo"], "CLI-2");
    assert!(json["text"].as_str().unwrap().contains(&number), "{json}");
    gw.stop().await;
}

/// Every work order carries a code of the classification table: missing, malformed or not
/// listed, it is refused with INVALID_ARGUMENT naming `classificationCode` and the table's file,
/// before anything is stored (no order, no counted failure, no supervision); the same order
/// number with another code is other content.
async fn a_work_order_without_a_listed_classification_code_is_refused_and_nothing_stored(
    backend: Backend,
) {
    let mut gw = TestGateway::start(backend).await;
    let number = case(&mut gw, "HOTLINE-CLASS").await;
    let mut agent = hotline(&gw, &hotline_system()).await;
    let refused = |e: tonic::Status, code: &str| {
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let m = e.message();
        assert!(m.starts_with("classificationCode: "), "{m}");
        assert!(m.contains("config/hotline/classification.toml"), "{m}");
        if code.is_empty() {
            assert!(m.contains("is required"), "{m}");
        } else {
            assert!(
                m.contains(&format!(
                    "{code:?} is not in the hotline's classification table"
                )),
                "{m}"
            );
        }
    };
    for code in ["", "999999", "01010", "01 01 01", "020000"] {
        let e = progress(
            &mut agent,
            ProgressRequest {
                classification_code: code.into(),
                // Right digits: nothing but the code is wrong.
                ..ask("FL-1", &number, "0000")
            },
        )
        .await
        .unwrap_err();
        refused(e, code.trim());
        let e = agent
            .complain(ComplainRequest {
                classification_code: code.into(),
                ..complaint("FL-2", &number, "slow", "太慢了")
            })
            .await
            .unwrap_err();
        refused(e, code.trim());
        let e = agent
            .consult(ConsultRequest {
                order_no: "FL-3".into(),
                item_code: "SP-JY".into(),
                query: String::new(),
                classification_code: code.into(),
            })
            .await
            .unwrap_err();
        refused(e, code.trim());
    }
    // Wrong digits with an unknown code: refused for the code, no failure counted.
    let e = progress(
        &mut agent,
        ProgressRequest {
            classification_code: "999999".into(),
            ..ask("FL-4", &number, "9999")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let store = &gw.gateway.store;
    assert!(store.hotline_orders(100).await.unwrap().is_empty());
    let day = yichuang::hotline::day(gw.gateway.clocks.now(), gw.gateway.clocks.zone());
    assert_eq!(store.hotline_failures(&number, &day).await.unwrap(), 0);
    let (stored, _) = store.get_case(&number).await.unwrap().unwrap();
    assert!(stored.supervisions.is_empty(), "{:?}", stored.supervisions);

    // Listed, each kind is taken and stored with its code; the same number with another
    // listed code is other content.
    let answered = progress(&mut agent, ask("FL-1", &number, "0000"))
        .await
        .unwrap();
    assert!(!answered.repeated);
    agent
        .complain(complaint("FL-2", &number, "slow", "太慢了"))
        .await
        .unwrap();
    let orders = store.hotline_orders(100).await.unwrap();
    let class = |no: &str| {
        orders
            .iter()
            .find(|o| o.order_no == no)
            .map(|o| o.classification.clone())
    };
    assert_eq!(class("FL-1").as_deref(), Some(PROGRESS_CLASS));
    assert_eq!(class("FL-2").as_deref(), Some(COMPLAINT_CLASS));
    let e = progress(
        &mut agent,
        ProgressRequest {
            classification_code: COMPLAINT_CLASS.into(),
            ..ask("FL-1", &number, "0000")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let e = agent
        .complain(ComplainRequest {
            classification_code: PROGRESS_CLASS.into(),
            ..complaint("FL-2", &number, "slow", "太慢了")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    gw.stop().await;
}

/// A classification table with a problem refuses the gateway's start, naming the file, the line
/// and the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_classification_table_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("classes.toml");
    std::fs::write(
        &table,
        "[[class]]\ncode = \"010000\"\nname = \"政务服务\"\n\n[[class]]\ncode = \"010201\"\nname = \"办事进度查询\"\n",
    )
    .unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.hotline.classification = table.clone();
    let Err(e) = yichuang::gateway::Gateway::from_config(&config).await else {
        panic!("a gateway started on a table whose 小类 has no 中类");
    };
    let m = e.to_string();
    assert!(
        m.contains(&format!("{}:6:", table.display()))
            && m.contains("010201 is a 小类 whose 中类 010200 is not listed"),
        "{m}"
    );
}

testkit::on_both_stores!(
    a_reply_is_claimed_by_one_replica_and_a_late_failure_does_not_undo_its_delivery,
    concurrent_wrong_digits_are_counted_before_they_are_checked,
    another_halls_case_is_refused_before_the_digits_are_checked,
    a_work_order_without_a_listed_classification_code_is_refused_and_nothing_stored,
    an_operators_reply_closes_the_complaint_and_reaches_the_hotline_once,
    a_progress_query_is_answered_only_to_the_verified_and_audited,
    wrong_digits_lock_a_case_number_until_the_next_day,
    a_complaint_is_supervised_until_its_reply_deadline_with_yellow_and_red_once,
);
