//! The whole way for `qiye-kaiban.json` (企业开办一件事): the window submits it to the gateway,
//! the relay publishes QY-SL to 市场监管's queue, its adapter takes it to the HTTP/JSON system,
//! the approval comes back as a result, the gateway releases the four follow-up tasks, and
//! 公安 (SOAP), 税务 (form-XML), 人社 (前置库 tables in PostgreSQL) and 公积金 (a clerk's
//! worklist) approve them through their own adapters — until the case is ready for delivery.
//! Real RabbitMQ, real PostgreSQL, the real gateway; only the departments are simulated.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Adapter, Harness, bus, department, secret_file};
use yichuang::config::{GatewayConfig, StoreConfig};
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    CaseStatus, GetCaseRequest, SubmitRequest, TaskStatus, submit_response::Outcome,
};
use yichuang_adapters::kinds::manual::{Outcome as Clerk, Record, Worklist};
use yichuang_sim::core::Behaviour;

fn pg_url() -> String {
    std::env::var("YICHUANG_TEST_PG_URL").expect("YICHUANG_TEST_PG_URL: run `make test`")
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

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    (l, endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qiye_kaiban_goes_from_the_window_through_five_departments_to_ready_for_delivery() {
    let bus = bus();
    // Declares (and at the end removes) every queue of the test's prefix.
    let harness = Harness::open(&bus, &["scjg", "ga", "sw", "rs", "gjj", "xf", "zrzy"]).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("e2e_{}", uuid::Uuid::new_v4().simple());

    // The departments' systems.
    let (l, scjg_endpoint) = listener().await;
    let scjg = yichuang_sim::http_json::HttpJsonSim::new(yichuang_sim::http_json::Settings {
        behaviour: behaviour("scjg"),
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
    let mut scjg_config = department("scjg", &scjg_endpoint);
    scjg_config
        .credentials
        .insert("client_id".into(), secret_file(&dir, "scjg-id", "yichuang"));
    scjg_config.credentials.insert(
        "client_secret".into(),
        secret_file(&dir, "scjg-secret", "sim-secret"),
    );
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
    let pg: tokio_postgres::Config = pg_url().parse().unwrap();
    let password = String::from_utf8_lossy(pg.get_password().unwrap()).into_owned();
    let (scheme_user, host) = pg_url()
        .split_once('@')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let user_only = scheme_user
        .rsplit_once(':')
        .map_or(scheme_user.clone(), |(u, _)| u.to_string());
    let mut rs_config = department("rs", &format!("{user_only}@{host}"));
    rs_config.credentials.clear();
    rs_config
        .credentials
        .insert("password".into(), secret_file(&dir, "pg", &password));
    rs_config.options.insert("schema".into(), schema.clone());
    let rs = yichuang_sim::exchange_db::ExchangeDbSim::new(yichuang_sim::exchange_db::Settings {
        behaviour: behaviour("rs"),
        url: pg_url(),
        schema: schema.clone(),
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
    let root = support::repo();
    let mut config = GatewayConfig {
        catalog_dir: root.join("config/catalog"),
        calendar_dir: root.join("config/calendar"),
        ..GatewayConfig::default()
    };
    config.store = StoreConfig::Sqlite {
        path: dir.path().join("gateway.db"),
    };
    config.bus = bus.clone();
    config.bus.relay = true;
    let gateway = Arc::new(yichuang::api::Gateway::from_config(&config).await.unwrap());
    let (l, endpoint) = listener().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(yichuang::api::serve(gateway.clone(), l, async {
        let _ = stopped.await;
    }));
    let mut client = loop {
        if let Ok(c) = CaseServiceClient::connect(endpoint.clone()).await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let submission = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/cases/qiye-kaiban.json")).unwrap(),
    )
    .unwrap();
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

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    adapter.task.abort();
    harness.remove().await;
    let (c, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}
