//! 办件汇聚 and 好差评, upward: cases go through every path at the real gateway (real RabbitMQ,
//! its relay publishing history entries to the reporter's queue), and the reporter reports
//! their stage records to the simulated provincial platform — strict about fields, code tables
//! and stage order — over its HTTP interface and over its exchange tables (前置库, real
//! PostgreSQL). The platform is down for a while at the start, refuses one record until it is
//! corrected, and loses one, which reconciliation finds and reports again. At the end every
//! record the cases derive is held by the platform, accepted once, and reconciliation finds
//! nothing missing.
//!
//! The paths: accepted → decided → delivered (pickup) and evaluated 满意; 补正 (asked, handed
//! in) → delivered by mail → evaluated 不满意 → rectification closed; 特别程序 between steps;
//! rejected (the 一件事's waiting items withdrawn); not accepted at the window (the one-time notice).

use std::sync::Arc;
use std::time::Duration;

use testkit::broker::Vhost;
use testkit::electronic;
use testkit::gateway::{Backend, TestGateway};
use testkit::pki::Who;
use testkit::wait::until;
use yichuang::config::BusConfig;
use yichuang::lifecycle::TaskUpdate;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    CaseStatus, CloseRectificationRequest, DeliverRequest, EvaluateRequest, Evaluation,
    GetCaseRequest, IdType, IndicatorScore, Mail, Pickup, ResultDocument, SupplementRequest,
    TaskStatus, deliver_request::How,
};
use yichuang_adapters::report::ledger::{self, Ledger};
use yichuang_adapters::report::spec::Spec;
use yichuang_adapters::report::transport::{Transport, TransportConfig};
use yichuang_adapters::report::{self, Reporter, derive};
use yichuang_sim::platform::{self, ExchangeSettings, ItemCode, Settings};

const WITHIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Via {
    Http,
    Tables,
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Submits an example under a submission id of its own; its case number and task ids.
async fn accept(gw: &mut TestGateway, example: &str, id: &str) -> (String, Vec<String>) {
    let mut s = testkit::example(example);
    s.submission_id = format!("{}-{id}", s.submission_id);
    // Accepted now, by the gateway's clock: the day reconciled is today.
    s.submitted_at = None;
    let number = testkit::gateway::accept(&mut gw.client, s).await;
    let case = get(gw, &number).await;
    (
        number,
        case.tasks.iter().map(|t| t.task_id.clone()).collect(),
    )
}

async fn get(gw: &mut TestGateway, number: &str) -> yichuang::proto::v1::Case {
    gw.client
        .get_case(GetCaseRequest {
            case_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap()
}

/// What the task's department says, applied as the gateway's results consumer applies it.
async fn result(gw: &TestGateway, task: &str, update: TaskUpdate) {
    let store = &gw.gateway.store;
    let number = store.case_of_task(task).await.unwrap().unwrap();
    let (case, _) = store.get_case(&number).await.unwrap().unwrap();
    let t = case.tasks.iter().find(|t| t.task_id == task).unwrap();
    store
        .record_result(task, &t.department, t.supplement_round, update)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{task}: the result changed nothing"));
}

fn approved(n: &str, documents: bool) -> TaskUpdate {
    TaskUpdate::Approved {
        department_case_number: n.into(),
        documents: if documents {
            vec![ResultDocument {
                material_code: String::new(),
                name: "许可证".into(),
                number: format!("XK-{n}"),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
    }
}

fn step(n: &str, step: &str) -> TaskUpdate {
    TaskUpdate::Progress {
        department_case_number: n.into(),
        step: step.into(),
    }
}

/// Approves every task of the case that is with a department, until all are approved (the
/// ones waiting for others are released by the approvals).
async fn approve_all(gw: &mut TestGateway, number: &str) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let case = get(gw, number).await;
        let mut all = true;
        for t in &case.tasks {
            match TaskStatus::try_from(t.status).unwrap() {
                TaskStatus::Approved => {}
                TaskStatus::Waiting => all = false,
                _ => {
                    let n = format!("D-{}", t.task_id);
                    result(gw, &t.task_id, approved(&n, true)).await;
                    all = false;
                }
            }
        }
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every task of {number} approved within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn evaluate(gw: &mut TestGateway, number: &str, level: i32) {
    let scores = ["服务效率", "服务水平", "服务态度"]
        .iter()
        .map(|i| IndicatorScore {
            indicator: i.to_string(),
            level,
        })
        .collect();
    gw.client
        .evaluate(EvaluateRequest {
            case_number: number.into(),
            evaluation: Some(Evaluation {
                channel: "window".into(),
                level,
                scores,
                comment: if level <= 2 {
                    "等了很久".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }),
            department_code: String::new(),
        })
        .await
        .unwrap();
}

/// Empties the reporter's queue, as a purge or a lost broker would.
async fn purge(bus: &BusConfig) {
    let connection = yichuang::bus::connect(bus).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_purge(
            yichuang::bus::Names::new(&bus.prefix)
                .report_queue()
                .as_str()
                .into(),
            lapin::options::QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(0, "purged".into()).await;
}

fn pickup() -> Option<How> {
    Some(How::Pickup(Pickup {
        collector_name: "马强".into(),
        collector_id_type: IdType::ResidentId as i32,
        collector_id_number: "64010419800315001X".into(),
        staff_no: "0342".into(),
    }))
}

async fn every_path_reaches_the_platform_once(via: Via) {
    let vhost = Vhost::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.bus = BusConfig {
        relay: true,
        report: true,
        timeout_secs: 5,
        ..vhost.bus.clone()
    };
    let bus = config.bus.clone();
    let mut gw = TestGateway::start_with(config, dir).await;

    // The platform, down at first.
    let schema = testkit::db::Schema::new("gdbs");
    let exchange = matches!(via, Via::Tables).then(|| ExchangeSettings {
        url: testkit::db::pg_url(),
        schema: schema.name.clone(),
        poll_ms: 200,
    });
    let (addr, sim) = platform::spawn(Settings {
        regions: vec!["640100".into()],
        item_code: ItemCode::ImplementationCode,
        exchange: exchange.clone(),
        ..Settings::default()
    })
    .await
    .unwrap();
    sim.set_outage(true);

    let files = tempfile::tempdir().unwrap();
    let transport = match via {
        Via::Http => TransportConfig::Http {
            record_url: format!("http://{addr}/gdbs/api/record"),
            query_url: format!("http://{addr}/gdbs/api/query"),
            app_id: "yichuang".into(),
            secret: testkit::adapter::secret_file(&files, "platform-secret", "platform-secret"),
            timeout_secs: 5,
            ca_file: None,
        },
        Via::Tables => TransportConfig::Tables {
            url: testkit::db::pg_url(),
            schema: schema.name.clone(),
        },
    };
    // The reporter, as `report run` starts it; killed and started again on its ledger below.
    let gw_addr = gw.addr;
    let start = || async {
        let reporter = Arc::new(Reporter {
            spec: Spec::load(&root().join("config/report/gdbs.yaml")).unwrap(),
            ledger: Ledger::open(&files.path().join("reporter.db")).unwrap(),
            transport: Transport::new(&transport).unwrap(),
            gateway: CaseServiceClient::new(
                testkit::gateway::channel(gw_addr, Some(&Who::Platform)).await,
            ),
            calendar: yichuang::calendar::Calendar::load(&root().join("config/calendar")).unwrap(),
            offset: chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
            meters: Default::default(),
            pace: report::pace(50),
            // Nothing is on its way at the end of the test: a gap is a gap at once.
            reconciling: report::ReconcileConfig {
                in_flight_secs: 0,
                ..Default::default()
            },
            failing: Default::default(),
        });
        let running = tokio::spawn(report::run(reporter.clone(), bus.clone()));
        (reporter, running)
    };
    let (_, running) = start().await;

    // 1. Accepted → decided → delivered (pickup) → 满意.
    let (a, a_tasks) = accept(&mut gw, "kai-canguan", "a").await;
    // The platform refuses 办结 of this item until its operators fix their side.
    sim.refuse(
        "EX_GDBS_BJ",
        &a_tasks[0],
        "EX_GDBS_BJ.BJBMDM 办结部门代码未在平台登记",
    )
    .unwrap();
    approve_all(&mut gw, &a).await;
    gw.client
        .deliver(DeliverRequest {
            case_number: a.clone(),
            how: pickup(),
        })
        .await
        .unwrap();
    evaluate(&mut gw, &a, 5).await;

    // 2. 补正 → delivered by mail → 不满意 → rectification closed.
    let (b, b_tasks) = accept(&mut gw, "qiye-kaiban", "b").await;
    result(
        &gw,
        &b_tasks[0],
        TaskUpdate::Supplement {
            department_case_number: "SCJG-B".into(),
            materials: vec![
                "经营场所平面图及设备布局图".into(),
                "住所（经营场所）使用证明".into(),
            ],
        },
    )
    .await;
    let handed = gw
        .client
        .supplement(SupplementRequest {
            case_number: b.clone(),
            supplement_id: "S-B".into(),
            materials: vec![electronic("PMT"), electronic("ZSZM")],
            task_ids: Vec::new(),
            staff_no: "0342".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(handed.deficiencies.is_empty(), "{:?}", handed.deficiencies);
    approve_all(&mut gw, &b).await;
    gw.client
        .deliver(DeliverRequest {
            case_number: b.clone(),
            how: Some(How::Mail(Mail {
                carrier: "EMS".into(),
                tracking_number: "1190000000001".into(),
            })),
        })
        .await
        .unwrap();
    evaluate(&mut gw, &b, 2).await;
    testkit::gateway::admin(gw.admin_addr)
        .await
        .close_rectification(CloseRectificationRequest {
            case_number: b.clone(),
            response: "已约谈窗口人员，增开午间窗口".into(),
        })
        .await
        .unwrap();

    // The reporter dies (its entries in flight are given again by the broker, its records are
    // in its ledger); the next cases' entries wait on its queue.
    running.abort();
    let _ = running.await;

    // 3. 特别程序 between the department's steps.
    let (c, c_tasks) = accept(&mut gw, "kai-canguan", "c").await;
    for s in ["承办", "特别程序（专家评审）", "审核"] {
        result(&gw, &c_tasks[0], step("SP-C", s)).await;
    }
    approve_all(&mut gw, &c).await;
    gw.client
        .deliver(DeliverRequest {
            case_number: c.clone(),
            how: pickup(),
        })
        .await
        .unwrap();

    // 4. Rejected: the 一件事's waiting items can never be decided and are withdrawn.
    let (d, d_tasks) = accept(&mut gw, "qiye-kaiban", "d").await;
    result(
        &gw,
        &d_tasks[0],
        TaskUpdate::Rejected {
            department_case_number: "SCJG-D".into(),
            reasons: vec!["拟设立企业名称与已登记企业名称相同".into()],
        },
    )
    .await;
    assert_eq!(
        get(&mut gw, &d).await.status,
        CaseStatus::ClosedRejected as i32
    );

    // 5. Not accepted: the one-time notice (一次性告知) goes up as 申办 and 受理 "3 补齐补正材料".
    let mut e = testkit::example("bdc-deficient");
    e.submission_id = format!("{}-e", e.submission_id);
    e.submitted_at = None;
    let notice_id = e.submission_id.clone();
    let answer = gw
        .client
        .submit(yichuang::proto::v1::SubmitRequest {
            submission: Some(e),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        answer.outcome,
        Some(yichuang::proto::v1::submit_response::Outcome::Notice(_))
    ));

    // Those entries are lost with the queue (an operator purged it, a broker lost it): the
    // records of cases c and d can now only be found by reconciliation. A new reporter starts
    // on the ledger.
    until("every entry published", WITHIN, || async {
        gw.gateway.store.events_backlog().await.unwrap() == 0
    })
    .await;
    purge(&bus).await;
    let (reporter, running) = start().await;

    // The platform, refusing while down, comes back.
    // (Its HTTP interface answered 503; rows written to its exchange tables wait uncollected.)
    until("the platform asked while down", WITHIN, || async {
        sim.refusals().get("503").copied().unwrap_or(0) > 0
            || reporter
                .ledger
                .counts()
                .unwrap()
                .iter()
                .any(|(state, n)| state == ledger::SENT && *n > 0)
    })
    .await;
    sim.set_outage(false);
    let accepted_at = get(&mut gw, &a).await.accepted_at.unwrap();
    let day = chrono::DateTime::from_timestamp(accepted_at.seconds, 0)
        .unwrap()
        .with_timezone(&reporter.offset)
        .date_naive();

    let cases = [a.clone(), b.clone(), c.clone(), d.clone()];
    let derived = |gw: &mut TestGateway| {
        let cases = cases.clone();
        let mut client = gw.client.clone();
        let spec = Spec::load(&root().join("config/report/gdbs.yaml")).unwrap();
        async move {
            let mut all = Vec::new();
            for n in cases {
                let case = client
                    .get_case(GetCaseRequest { case_number: n })
                    .await
                    .unwrap()
                    .into_inner();
                all.extend(derive::records(&spec, &case).unwrap());
            }
            all
        }
    };
    let mut expected = derived(&mut gw).await;
    let lost: Vec<_> = expected
        .iter()
        .filter(|r| r.case_number == c || r.case_number == d)
        .collect();
    let found = report::reconcile::run(&reporter, day).await.unwrap();
    assert!(
        found.missing_ledger >= lost.len() as i64,
        "reconciliation finds the {} records whose entries were lost: {found:?}",
        lost.len()
    );
    let notices = gw
        .client
        .list_not_accepted(yichuang::proto::v1::ListNotAcceptedRequest::default())
        .await;
    // The examples' hall's window may list its own hall's notices.
    let notices = notices.unwrap().into_inner().items;
    let notice = notices
        .iter()
        .find(|n| n.submission_id == notice_id)
        .expect("the notice is listed");
    let (e_key, e_item) = (
        derive::notice_key(notice),
        format!("{notice_id}-{:x}-01", notice.id),
    );
    for n in &notices {
        expected.extend(
            derive::notice_records(
                &Spec::load(&root().join("config/report/gdbs.yaml")).unwrap(),
                n,
            )
            .unwrap(),
        );
    }

    // Everything but the refused 办结 (and what waits behind it) reaches the platform.
    until(
        "every record but the refused one's line reported",
        WITHIN,
        || async {
            let held = sim.records();
            expected.iter().filter(|r| r.sblsh != a_tasks[0]).all(|r| {
                held.iter()
                    .any(|h| h.table == r.table && h.sblsh == r.sblsh && h.xh as i64 == r.seq)
            })
        },
    )
    .await;
    let refused = reporter.ledger.refused().unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].table, "EX_GDBS_BJ");
    assert!(
        refused[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("办结部门代码未在平台登记"),
        "kept with the platform's words: {:?}",
        refused[0].message
    );
    // What follows the refused record in its line waits for it.
    assert!(
        !sim.records()
            .iter()
            .any(|h| h.sblsh == a_tasks[0] && h.table == "EX_GDBS_LQDJ"),
        "领证 is not reported before 办结"
    );

    // Corrected on the platform's side: the operator sends it again.
    sim.clear_refusal("EX_GDBS_BJ", &a_tasks[0]).unwrap();
    assert_eq!(reporter.ledger.resend(Some(&a_tasks[0])).unwrap(), 1);
    until("everything reported", WITHIN, || async {
        let held = sim.records();
        expected.iter().all(|r| {
            held.iter()
                .any(|h| h.table == r.table && h.sblsh == r.sblsh && h.xh as i64 == r.seq)
        })
    })
    .await;

    // Each path's records.
    let held = sim.records();
    // The platform holds every record as the reporter made it, field for field.
    for key in cases.iter().cloned().chain([e_key.clone()]) {
        for r in reporter.ledger.of_case(&key).unwrap() {
            let ours: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&r.body).unwrap();
            let h = held
                .iter()
                .find(|h| h.table == r.table && h.sblsh == r.sblsh && h.xh as i64 == r.seq)
                .unwrap_or_else(|| panic!("{} {} #{} held", r.sblsh, r.table, r.seq));
            assert!(
                yichuang_adapters::report::transport::same(&ours, &h.record)
                    && ours.len() == h.record.len(),
                "{} {} #{}: held as reported",
                r.sblsh,
                r.table,
                r.seq
            );
        }
    }
    let tables_of = |task: &str| -> Vec<String> {
        let mut t: Vec<String> = held
            .iter()
            .filter(|h| h.sblsh == task)
            .map(|h| format!("{}#{}", h.table, h.xh))
            .collect();
        t.sort();
        t
    };
    let field = |task: &str, table: &str, name: &str| -> String {
        held.iter()
            .find(|h| h.sblsh == task && h.table == table)
            .and_then(|h| {
                h.record
                    .get(name)
                    .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            })
            .unwrap_or_default()
    };
    assert_eq!(
        tables_of(&a_tasks[0]),
        [
            "EX_GDBS_BJ#1",
            "EX_GDBS_LQDJ#1",
            "EX_GDBS_SB#1",
            "EX_GDBS_SL#1",
            "EX_HCP_PJ#1"
        ]
    );
    assert_eq!(field(&a_tasks[0], "EX_HCP_PJ", "MYD"), "5");
    assert_eq!(field(&a_tasks[0], "EX_GDBS_LQDJ", "LQFS"), "0");
    assert!(tables_of(&b_tasks[0]).contains(&"EX_GDBS_BJGZ#1".to_string()));
    assert!(tables_of(&b_tasks[0]).contains(&"EX_GDBS_BJSL#1".to_string()));
    assert_eq!(field(&b_tasks[0], "EX_GDBS_LQDJ", "YJDH"), "1190000000001");
    for t in &b_tasks {
        assert_eq!(field(t, "EX_HCP_PJ", "MYD"), "2");
        assert_eq!(
            field(t, "EX_HCP_ZGFK", "ZGQK"),
            "已约谈窗口人员，增开午间窗口"
        );
    }
    let c0 = tables_of(&c_tasks[0]);
    for t in [
        "EX_GDBS_TBCXSQ#1",
        "EX_GDBS_TBCXJG#1",
        "EX_GDBS_SPCL#1",
        "EX_GDBS_SPCL#2",
    ] {
        assert!(c0.contains(&t.to_string()), "{t} in {c0:?}");
    }
    assert_eq!(
        field(&c_tasks[0], "EX_GDBS_TBCXSQ", "TBCXZL"),
        "3",
        "专家评审"
    );
    assert_eq!(field(&d_tasks[0], "EX_GDBS_BJ", "BJJGDM"), "7", "不予许可");
    assert_eq!(tables_of(&e_item), ["EX_GDBS_SB#1", "EX_GDBS_SL#1"]);
    assert_eq!(field(&e_item, "EX_GDBS_SL", "SLZTDM"), "3", "补齐补正材料");
    assert!(
        !field(&e_item, "EX_GDBS_SL", "BSLYY").is_empty(),
        "with the notice's words"
    );
    for t in &d_tasks[1..] {
        assert_eq!(
            field(t, "EX_GDBS_BJ", "BJJGDM"),
            "2",
            "{t}: withdrawn, 作废办结"
        );
        assert!(
            !field(t, "EX_GDBS_BJ", "ZFHTHYY").is_empty(),
            "with its reason"
        );
    }
    // Nothing fabricated: the cases nobody evaluated have no evaluation upward.
    for t in c_tasks.iter().chain(&d_tasks) {
        assert!(!tables_of(t).iter().any(|x| x.starts_with("EX_HCP")), "{t}");
    }

    // Once each, and never out of order: the only refusals are the outage's and the one asked
    // for (no 1002, stage order, ever).
    assert!(held.iter().all(|h| h.accepted == 1), "{held:?}");
    let refusals = sim.refusals();
    assert!(!refusals.contains_key("1002"), "{refusals:?}");
    assert!(!refusals.contains_key("1003"), "{refusals:?}");

    // A record the platform loses is found by reconciliation and reported again.
    assert!(sim.drop_record("EX_GDBS_SL", &c_tasks[1], 1).await.unwrap());
    until("the reporter's ledger settled", WITHIN, || async {
        reporter
            .ledger
            .counts()
            .unwrap()
            .iter()
            .all(|(state, _)| state == ledger::CONFIRMED)
    })
    .await;
    let found = report::reconcile::run(&reporter, day).await.unwrap();
    assert_eq!(found.missing_platform, 1, "{found:?}");
    assert_eq!((found.cases, found.not_accepted), (4, 1));
    until("the lost record reported again", WITHIN, || async {
        sim.records()
            .iter()
            .any(|h| h.sblsh == c_tasks[1] && h.table == "EX_GDBS_SL" && h.accepted == 2)
    })
    .await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let r = report::reconcile::run(&reporter, day).await.unwrap();
        if r.missing_platform + r.missing_ledger + r.mismatched + r.refused == 0
            && r.completeness() == 1.0
            && r.records == expected.len() as i64
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reconciliation finds nothing missing within {WITHIN:?}: {r:?} ({} derived)",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    running.abort();
    drop(sim);
    gw.stop().await;
    vhost.remove().await;
    if exchange.is_some() {
        schema.drop_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_reaches_the_platform_once_over_http() {
    every_path_reaches_the_platform_once(Via::Http).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_reaches_the_platform_once_through_exchange_tables() {
    every_path_reaches_the_platform_once(Via::Tables).await
}
