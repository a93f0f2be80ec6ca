//! The whole way for `qiye-kaiban.json` (企业开办一件事): the window submits it to the gateway,
//! the relay publishes QY-SL to 市场监管's queue, its adapter takes it to the HTTP/JSON system,
//! which asks for two materials (补正); the window hands them in with `Supplement`, the task
//! resumes at 市场监管 and is approved; the gateway releases the four follow-up tasks, and
//! 公安 (SOAP), 税务 (form-XML), 人社 (前置库 tables in PostgreSQL) and 公积金 (a clerk's
//! worklist) approve them through their own adapters; the window hands the licences over (出件).
//! Meanwhile a window feed client that drops its stream every few events and reconnects with
//! its cursor, and the one-network platform's HTTP endpoint — down for the first minute — must
//! each see every event of the case once, in order.
//! Real RabbitMQ, real PostgreSQL, the real gateway; only the departments are simulated.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use testkit::adapter::{Adapter, department, secret_file};
use testkit::broker::{Broker, bus};
use testkit::db::{Schema, pg_url, split_password};
use testkit::server::listener;
use yichuang::proto::v1::{
    CaseStatus, DeliverRequest, FileRef, GetCaseRequest, IdType, Material, MaterialForm, Pickup,
    SubmitRequest, SupplementRequest, TaskStatus, WindowFeedRequest, deliver_request::How,
    submit_response::Outcome,
};
use yichuang_adapters::kinds::manual::{Outcome as Clerk, Record, Worklist};
use yichuang_sim::core::Behaviour;

/// How long the platform's endpoint refuses every push at first.
const PLATFORM_DOWN: Duration = Duration::from_secs(60);
const PLATFORM_SECRET: &str = "platform-secret";

/// The one-network platform's endpoint: down (503) until `down_until`, then it takes every
/// correctly signed push and keeps its event id (`<case>:<seq>`).
struct Platform {
    down_until: Instant,
    refused: Mutex<u32>,
    taken: Mutex<Vec<String>>,
}

async fn platform_push(
    State(p): State<Arc<Platform>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if Instant::now() < p.down_until {
        *p.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let timestamp: i64 = header("x-yichuang-timestamp").parse().unwrap_or(0);
    let id = header("x-yichuang-event-id");
    if header("x-yichuang-signature")
        != yichuang::feed::signature(PLATFORM_SECRET, timestamp, &id, &body)
    {
        return StatusCode::UNAUTHORIZED;
    }
    p.taken.lock().unwrap().push(header("x-yichuang-event-id"));
    StatusCode::OK
}

/// A window's feed client that drops its stream after every `every` events and reconnects
/// with the last cursor it saw; every event it received, as `<case>:<seq>`.
async fn window_feed(
    addr: std::net::SocketAddr,
    hall: String,
    window: String,
    every: usize,
    seen: Arc<Mutex<Vec<String>>>,
    reconnects: Arc<Mutex<u32>>,
) {
    let mut cursor = 0;
    loop {
        let mut client = testkit::gateway::connect(addr).await;
        let Ok(stream) = client
            .window_feed(WindowFeedRequest {
                hall_code: hall.clone(),
                window_code: window.clone(),
                cursor,
            })
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        let mut n = 0;
        while let Ok(Some(e)) = stream.message().await {
            let event = e.event.unwrap();
            seen.lock()
                .unwrap()
                .push(format!("{}:{}", e.case_number, event.seq));
            cursor = e.cursor;
            n += 1;
            if n == every {
                break;
            }
        }
        // Mid-stream: the client goes away and comes back with its cursor.
        drop(stream);
        *reconnects.lock().unwrap() += 1;
    }
}

/// Every department approves, quickly and without faults: the faults are each kind's own tests.
fn behaviour(code: &str) -> Behaviour {
    Behaviour {
        department: code.into(),
        decision_delay_ms: 300,
        reject: 0.0,
        supplement: 0.0,
        ..Behaviour::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qiye_kaiban_goes_through_five_departments_and_a_supplement_to_delivery_and_every_feed_sees_each_event_once()
 {
    let bus = bus();
    // Declares (and at the end removes) every queue of the test's prefix.
    let harness =
        Broker::for_departments(&bus, &["scjg", "ga", "sw", "rs", "gjj", "xf", "zrzy"]).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new("e2e");

    // The departments' systems.
    let (l, scjg_endpoint) = listener().await;
    // 市场监管 asks for materials first; after the supplement it approves.
    let scjg = yichuang_sim::http_json::HttpJsonSim::new(yichuang_sim::http_json::Settings {
        behaviour: Behaviour {
            supplement: 1.0,
            ..behaviour("scjg")
        },
        ..Default::default()
    });
    tokio::spawn(scjg.clone().serve(l));
    let (l, ga_endpoint) = listener().await;
    let ga = yichuang_sim::soap::SoapSim::new(yichuang_sim::soap::Settings {
        behaviour: behaviour("ga"),
        namespace: "http://ga.yinchuan.gov.cn/approval".into(),
        document_name: "公章刻制备案回执".into(),
        ..Default::default()
    });
    tokio::spawn(ga.clone().serve(l));
    let (l, sw_endpoint) = listener().await;
    let sw = yichuang_sim::form_xml::FormXmlSim::new(yichuang_sim::form_xml::Settings {
        behaviour: behaviour("sw"),
        sign_key: None,
        ..Default::default()
    });
    tokio::spawn(sw.clone().serve(l));

    // The adapters' view of them.
    let scjg_config = testkit::adapter::scjg(&dir, &scjg_endpoint);
    let ga_config = department("ga", &ga_endpoint);
    let mut sw_config = department("sw", &sw_endpoint);
    sw_config
        .credentials
        .insert("app_id".into(), secret_file(&dir, "sw-id", "yichuang"));
    sw_config.credentials.insert(
        "app_secret".into(),
        secret_file(&dir, "sw-secret", "sim-secret"),
    );
    sw_config.credentials.remove("sign_key");
    // 人社's exchange tables, in a schema of this test's own.
    let (without_password, password) = split_password(&pg_url());
    let password = password.unwrap();
    let mut rs_config = department("rs", &without_password);
    rs_config.credentials.clear();
    rs_config
        .credentials
        .insert("password".into(), secret_file(&dir, "pg", &password));
    rs_config
        .options
        .insert("schema".into(), schema.name.clone());
    let rs = yichuang_sim::exchange_db::ExchangeDbSim::new(yichuang_sim::exchange_db::Settings {
        behaviour: behaviour("rs"),
        url: pg_url(),
        schema: schema.name.clone(),
        inbound_table: rs_config.options["inbound_table"].clone(),
        result_table: rs_config.options["result_table"].clone(),
        fields: rs_config.mapping.request.keys().cloned().collect(),
        tick_ms: 100,
        ..Default::default()
    })
    .unwrap();
    rs.create_tables().await.unwrap();
    tokio::spawn(rs.clone().run());
    // 公积金: a clerk's worklist.
    let mut gjj_config = department("gjj", "");
    let worklist_path = dir.path().join("gjj-worklist.db");
    gjj_config.options.insert(
        "worklist".into(),
        worklist_path.to_string_lossy().into_owned(),
    );

    let adapter = Adapter::start(
        &bus,
        vec![scjg_config, ga_config, sw_config, rs_config, gjj_config],
    )
    .await;

    // The gateway, on SQLite, talking to the same bus.
    let mut config = testkit::gateway::with_bus(dir.path(), &bus);
    // The one-network platform, down for the first minute.
    let platform = Arc::new(Platform {
        down_until: Instant::now() + PLATFORM_DOWN,
        refused: Mutex::new(0),
        taken: Mutex::new(Vec::new()),
    });
    let (l, platform_endpoint) = listener().await;
    let router = axum::Router::new()
        .route("/push", axum::routing::post(platform_push))
        .with_state(platform.clone());
    tokio::spawn(async move { axum::serve(l, router).await });
    config.platform.push_url = format!("{platform_endpoint}/push");
    config.platform.secret = PLATFORM_SECRET.into();
    let serving = testkit::gateway::TestGateway::serve(&config).await;
    let (addr, mut client) = (serving.addr, serving.client.clone());

    let submission: yichuang::proto::v1::Submission = testkit::example("qiye-kaiban");
    // The accepting window follows its feed from the start, dropping the stream every 3 events.
    let feed_seen = Arc::new(Mutex::new(Vec::new()));
    let reconnects = Arc::new(Mutex::new(0));
    let feed = tokio::spawn(window_feed(
        addr,
        submission.hall_code.clone(),
        submission.window_code.clone(),
        3,
        feed_seen.clone(),
        reconnects.clone(),
    ));
    let applicant_id = submission.applicant.clone().unwrap().id_number;
    let answer = client
        .submit(SubmitRequest {
            submission: Some(submission),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("qiye-kaiban is accepted: {answer:?}")
    };
    let number = receipt.case_number.clone();
    let gjj_task = receipt
        .items
        .iter()
        .find(|i| i.item_code == "GJJ-DJ")
        .unwrap()
        .task_id
        .clone();

    // 市场监管 asks for materials: the window learns which from the case and hands them in.
    let qy_sl_task = receipt.items[0].task_id.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let asked = loop {
        let case = client
            .get_case(GetCaseRequest {
                case_number: number.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .case
            .unwrap();
        if case.status == CaseStatus::AwaitingSupplement as i32 {
            assert_eq!(case.acceptance_status_code, 3, "受理状态 补齐补正材料");
            break case.tasks[0].materials_requested.clone();
        }
        assert!(
            Instant::now() < deadline,
            "QY-SL asks for materials: {case:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        asked,
        ["经营场所平面图及设备布局图", "住所（经营场所）使用证明"]
    );
    let file = |code: &str| Material {
        material_code: code.into(),
        form: MaterialForm::Electronic as i32,
        copies: 1,
        file: Some(FileRef {
            uri: format!(
                "s3://yichuang-materials/supplements/{}.pdf",
                code.to_lowercase()
            ),
            sha256: "7".repeat(64),
            size_bytes: 150_000,
            media_type: "application/pdf".into(),
        }),
    };
    let supplied = client
        .supplement(SupplementRequest {
            case_number: number.clone(),
            supplement_id: "S-1".into(),
            materials: vec![file("PMT"), file("ZSZM")],
            task_ids: Vec::new(),
            staff_no: "0342".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        supplied.deficiencies.is_empty(),
        "{:?}",
        supplied.deficiencies
    );
    let record = supplied.record.unwrap();
    assert_eq!(record.resumed_task_ids, vec![qy_sl_task.clone()]);
    assert_eq!(
        record.fulfilled_obligations,
        ["ZSZM"],
        "the 容缺 obligation too"
    );

    // The clerk at 公积金 records the case once it reaches the worklist — which happens only
    // after QY-SL's approval released it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pending = Worklist::open(&worklist_path)
            .and_then(|w| w.pending())
            .unwrap_or_default();
        if pending.iter().any(|p| p.task_id == gjj_task) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GJJ-DJ reaches the clerk's worklist"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Worklist::open(&worklist_path)
        .unwrap()
        .complete(
            &gjj_task,
            None,
            &Record {
                department_case_number: "GJJ2019102100001".into(),
                outcome: Clerk::Approved,
                document_number: Some("GJJDW640100123".into()),
                document_name: Some("住房公积金单位登记回执".into()),
                reasons: Vec::new(),
                materials: Vec::new(),
                clerk: Some("0815".into()),
            },
        )
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    let (case, events) = loop {
        let got = client
            .get_case(GetCaseRequest {
                case_number: number.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let case = got.case.unwrap();
        if case.status == CaseStatus::ReadyForDelivery as i32 {
            break (case, got.events);
        }
        assert!(
            Instant::now() < deadline,
            "the case reaches ready-for-delivery: {:?}",
            case.tasks
                .iter()
                .map(|t| (
                    t.item_code.as_str(),
                    TaskStatus::try_from(t.status).unwrap()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Every task approved by its department, with the department's own case number.
    for t in &case.tasks {
        assert_eq!(t.status, TaskStatus::Approved as i32, "{}", t.item_code);
        assert!(!t.department_case_number.is_empty(), "{}", t.item_code);
        assert!(!t.results.is_empty(), "{} has its document", t.item_code);
    }
    let qy_sl = case.tasks.iter().find(|t| t.item_code == "QY-SL").unwrap();
    assert_eq!(
        qy_sl.department_case_number,
        scjg.sim.by_serial(&qy_sl.task_id).unwrap().number
    );
    // The history tells the story in order: QY-SL approved, then the four released.
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.task_id.as_str()))
        .collect();
    let approved_at = kinds
        .iter()
        .position(|k| *k == ("task-approved", qy_sl.task_id.as_str()))
        .unwrap();
    let released: Vec<usize> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| k.0 == "task-released")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(released.len(), 4, "{kinds:?}");
    assert!(released.iter().all(|&i| i > approved_at), "{kinds:?}");
    assert_eq!(kinds.last().unwrap().0, "case-ready-for-delivery");
    // Each department system saw its task once.
    for (name, stats) in [
        ("scjg", scjg.sim.stats()),
        ("ga", ga.sim.stats()),
        ("sw", sw.sim.stats()),
        ("rs", rs.stats()),
    ] {
        assert_eq!((stats.cases, stats.duplicates), (1, 0), "{name}: {stats:?}");
    }
    // 市场监管 was handed the supplement once, and decided again after it.
    assert_eq!(scjg.sim.stats().supplements, 1);
    assert_eq!(qy_sl.supplement_round, 1);
    let kinds_of = |task: &str| -> Vec<&str> {
        kinds
            .iter()
            .filter(|k| k.1 == task)
            .map(|k| k.0)
            .collect::<Vec<_>>()
    };
    let qy = kinds_of(&qy_sl_task);
    let asked_at = qy
        .iter()
        .position(|k| *k == "task-supplement-required")
        .unwrap();
    let resumed_at = qy.iter().position(|k| *k == "task-resumed").unwrap();
    let approved_at = qy.iter().position(|k| *k == "task-approved").unwrap();
    assert!(asked_at < resumed_at && resumed_at < approved_at, "{qy:?}");
    assert_eq!(
        qy.iter()
            .filter(|k| **k == "task-accepted-by-department")
            .count(),
        1,
        "{qy:?}"
    );
    assert_eq!(qy_sl.conclusion_code, "0", "办结结果 出证办结");

    // 出件: the applicant collects the licences at the window.
    let delivered = client
        .deliver(DeliverRequest {
            case_number: number.clone(),
            how: Some(How::Pickup(Pickup {
                collector_name: "杨晓东".into(),
                collector_id_type: IdType::ResidentId as i32,
                collector_id_number: applicant_id,
                staff_no: "0342".into(),
            })),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(delivered.status, CaseStatus::Delivered as i32);
    assert_eq!(delivered.conclusion_code, "0");
    // The window feed (which reconnected many times) and the platform (down for the first
    // minute) each saw every event of the case once, in order: their lists equal the case's
    // history. The sweeper may still add clock entries after the delivery, so the three are
    // compared until they agree or the deadline passes.
    let deadline = Instant::now() + PLATFORM_DOWN + Duration::from_secs(60);
    let history = loop {
        let history: Vec<String> = client
            .get_case(GetCaseRequest {
                case_number: number.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .iter()
            .map(|e| format!("{number}:{}", e.seq))
            .collect();
        let feed_now = feed_seen.lock().unwrap().clone();
        let pushed_now = platform.taken.lock().unwrap().clone();
        if feed_now == history && pushed_now == history {
            break history;
        }
        if Instant::now() >= deadline {
            assert_eq!(feed_now, history, "the window feed");
            assert_eq!(pushed_now, history, "the platform");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    feed.abort();
    assert!(history.len() > 20, "{history:?}");
    assert!(*reconnects.lock().unwrap() >= 5);
    assert!(
        *platform.refused.lock().unwrap() > 0,
        "it was down at first"
    );

    serving.stop().await;
    adapter.task.abort();
    harness.remove().await;
    schema.drop_now().await;
}
