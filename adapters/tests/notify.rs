//! 短信提示: cases go through their lives at the real gateway (real RabbitMQ, its relay
//! publishing history entries to the notifier's queue), and the notifier — with the shipped
//! `config/notifier.toml`'s templates and SMS interface description — sends the applicants'
//! notices to the simulated provincial SMS platform, which is down at first. Each notice
//! reaches the platform once, in its case's order; a restarted notifier given every entry again
//! sends nothing twice; an applicant who did not consent gets nothing; and outside the hours
//! nothing goes until they open.

use std::sync::Arc;
use std::time::Duration;

use testkit::broker::Vhost;
use testkit::gateway::{Backend, TestGateway};
use testkit::pki::Who;
use testkit::wait::until;
use yichuang::config::BusConfig;
use yichuang::lifecycle::TaskUpdate;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    DeliverRequest, FileRef, GetCaseRequest, IdType, Mail, Material, MaterialForm, Pickup,
    ResultDocument, SupplementRequest, TaskStatus, deliver_request::How,
};
use yichuang_adapters::notify::ledger::{self, Ledger};
use yichuang_adapters::notify::sms::Sms;
use yichuang_adapters::notify::{self, Hours, Notifier, NotifierConfig};
use yichuang_sim::sms;

const WITHIN: Duration = Duration::from_secs(60);

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped settings, pointed at the simulator, with `hours`.
fn settings(sms_url: &str, hours: &str, files: &tempfile::TempDir) -> NotifierConfig {
    let path = root().join("config/notifier.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = yichuang::config::interpolate(&path, &text, |v| match v {
        "YICHUANG_SMS_URL" => Some(sms_url.to_string()),
        "YICHUANG_NOTIFY_HOURS" => Some(hours.to_string()),
        _ => None,
    })
    .unwrap();
    let mut c: NotifierConfig = toml::from_str(&text).unwrap();
    c.ledger = files.path().join("notifier.db");
    c.sms.secret = testkit::adapter::secret_file(files, "sms-secret", "sms-secret");
    c
}

/// A notifier as `notify run` starts it, reading cases as the `notifier` role; and its run.
async fn start(
    gw: &TestGateway,
    config: &NotifierConfig,
    bus: &BusConfig,
) -> (Arc<Notifier>, tokio::task::JoinHandle<()>) {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let who = Who::Named("notifier".into(), "urn:yichuang:notifier".into());
    let notifier = Arc::new(Notifier {
        templates: config.templates.clone(),
        ledger: Ledger::open(&config.ledger).unwrap(),
        sms: Sms::new(&config.sms, offset).unwrap(),
        gateway: CaseServiceClient::new(testkit::gateway::channel(gw.addr, Some(&who)).await),
        pace: yichuang_adapters::cases::pace(50),
        sms_pace: yichuang_adapters::cases::pace(config.sms.limits.requests_per_second),
        hours: Hours::parse(&config.hours).unwrap(),
        offset,
        meters: Default::default(),
        stale_after_ms: 72 * 3_600_000,
    });
    let running = tokio::spawn(notify::run(notifier.clone(), bus.clone()));
    (notifier, running)
}

async fn gateway() -> (TestGateway, BusConfig, Vhost) {
    let vhost = Vhost::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.bus = BusConfig {
        relay: true,
        notify: true,
        timeout_secs: 5,
        ..vhost.bus.clone()
    };
    let bus = config.bus.clone();
    (TestGateway::start_with(config, dir).await, bus, vhost)
}

/// Submits an example under a submission id of its own, with or without consent to SMS.
async fn accept(gw: &mut TestGateway, example: &str, id: &str, consent: bool) -> String {
    let mut s = testkit::example(example);
    s.submission_id = format!("{}-{id}", s.submission_id);
    s.submitted_at = None;
    s.applicant
        .as_mut()
        .and_then(|a| a.contact.as_mut())
        .expect("the example has a contact")
        .sms_consent = consent;
    testkit::gateway::accept(&mut gw.client, s).await
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

/// Approves every task of the case until all are approved.
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
                    result(
                        gw,
                        &t.task_id,
                        TaskUpdate::Approved {
                            department_case_number: n.clone(),
                            documents: vec![ResultDocument {
                                name: "许可证".into(),
                                number: format!("XK-{n}"),
                                ..Default::default()
                            }],
                        },
                    )
                    .await;
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

fn electronic(code: &str) -> Material {
    Material {
        material_code: code.into(),
        form: MaterialForm::Electronic as i32,
        copies: 1,
        file: Some(FileRef {
            uri: format!(
                "s3://yichuang-materials/supplements/{}.pdf",
                code.to_lowercase()
            ),
            sha256: "5".repeat(64),
            size_bytes: 120_000,
            media_type: "application/pdf".into(),
        }),
    }
}

/// The texts the platform took for a case, in order.
fn texts_of(sim: &sms::SmsSim, case: &str) -> Vec<String> {
    sim.messages()
        .into_iter()
        .filter(|m| m.content.contains(case))
        .map(|m| m.content)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cases_whole_life_reaches_the_sms_platform_once_each_in_order() {
    let (mut gw, bus, _vhost) = gateway().await;
    let (addr, sim) = sms::spawn(sms::Settings::default()).await.unwrap();
    // Down at first: the notices wait and are tried again.
    sim.set_outage(true);
    let files = tempfile::tempdir().unwrap();
    let config = settings(&format!("http://{addr}/sms/send"), "00:00-24:00", &files);
    let (notifier, running) = start(&gw, &config, &bus).await;

    // A: accepted → materials asked for → handed in → decided → ready → mailed.
    let a = accept(&mut gw, "qiye-kaiban", "a", true).await;
    let a_task = get(&mut gw, &a).await.tasks[0].task_id.clone();
    result(
        &gw,
        &a_task,
        TaskUpdate::Supplement {
            department_case_number: "SCJG-A".into(),
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
            case_number: a.clone(),
            supplement_id: "S-A".into(),
            materials: vec![electronic("PMT"), electronic("ZSZM")],
            task_ids: Vec::new(),
            staff_no: "0342".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(handed.deficiencies.is_empty(), "{:?}", handed.deficiencies);
    approve_all(&mut gw, &a).await;
    gw.client
        .deliver(DeliverRequest {
            case_number: a.clone(),
            how: Some(How::Mail(Mail {
                carrier: "EMS".into(),
                tracking_number: "1190000000001".into(),
            })),
        })
        .await
        .unwrap();

    // B: accepted → decided → ready → picked up.
    let b = accept(&mut gw, "kai-canguan", "b", true).await;
    approve_all(&mut gw, &b).await;
    gw.client
        .deliver(DeliverRequest {
            case_number: b.clone(),
            how: Some(How::Pickup(Pickup {
                collector_name: "马强".into(),
                collector_id_type: IdType::ResidentId as i32,
                collector_id_number: "64010419800315001X".into(),
                staff_no: "0342".into(),
            })),
        })
        .await
        .unwrap();

    // C: the applicant did not consent.
    let c = accept(&mut gw, "kai-canguan", "c", false).await;
    approve_all(&mut gw, &c).await;

    until("the SMS platform asked while down", WITHIN, || async {
        sim.refusals().get("503").copied().unwrap_or(0) > 0
    })
    .await;
    sim.set_outage(false);

    let a_expected = [
        format!("【银川市民大厅】您的申请已受理，受理编号{a}，承诺"),
        format!(
            "【银川市民大厅】受理编号{a}的申请需补正材料：经营场所平面图及设备布局图、住所（经营场所）使用证明。"
        ),
        format!("【银川市民大厅】受理编号{a}已办结，"),
        format!("【银川市民大厅】受理编号{a}的办理结果已由EMS寄出，运单号1190000000001。"),
    ];
    let b_expected = [
        format!("【银川市民大厅】您的申请已受理，受理编号{b}，承诺"),
        format!("【银川市民大厅】受理编号{b}已办结，"),
    ];
    let matches = |got: &[String], expected: &[String]| {
        got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .all(|(g, e)| g.starts_with(e.as_str()))
    };
    until(
        "every notice of A and B at the SMS platform",
        WITHIN,
        || async {
            texts_of(&sim, &a).len() >= a_expected.len()
                && texts_of(&sim, &b).len() >= b_expected.len()
        },
    )
    .await;
    until("C's notices recorded as skipped", WITHIN, || async {
        let c = notifier.ledger.of_case(&c).unwrap();
        c.len() == 2 && c.iter().all(|n| n.state == ledger::SKIPPED)
    })
    .await;
    let (got_a, got_b) = (texts_of(&sim, &a), texts_of(&sim, &b));
    assert!(
        matches(&got_a, &a_expected),
        "A once each, in order: {got_a:#?}"
    );
    assert!(
        matches(&got_b, &b_expected),
        "B once each, in order: {got_b:#?}"
    );
    assert!(texts_of(&sim, &c).is_empty(), "no consent, no SMS");
    assert_eq!(sim.messages().len(), 6);
    // To the applicants' numbers, listed masked.
    let numbers = sim.numbers();
    assert!(
        numbers[..]
            .iter()
            .all(|n| n == "18995110234" || n == "13909510000"),
        "{numbers:?}"
    );
    assert!(sim.messages().iter().all(|m| m.mobile.contains("****")));

    // The notifier dies and another starts on its ledger; every entry is given again.
    running.abort();
    let _ = running.await;
    let (notifier, running) = start(&gw, &config, &bus).await;
    for n in [&a, &b, &c] {
        notifier.ledger.mark_dirty(n).unwrap();
    }
    until("every case read again", WITHIN, || async {
        notifier.ledger.dirty(10).unwrap().is_empty()
    })
    .await;
    let counts: std::collections::BTreeMap<String, i64> =
        notifier.ledger.counts().unwrap().into_iter().collect();
    assert_eq!(counts.get(ledger::SENT), Some(&6), "{counts:?}");
    assert_eq!(counts.get(ledger::SKIPPED), Some(&2), "{counts:?}");
    assert_eq!(
        counts.get(ledger::PENDING),
        None,
        "nothing due again: {counts:?}"
    );
    assert_eq!(sim.messages().len(), 6, "nothing sent twice");
    assert_eq!(sim.duplicates(), 0, "nothing even offered twice");
    running.abort();

    // What this process logged (the notifier, the simulator) names each number masked only.
    let log = testkit::logfile::init_suite().expect("the suite's log file");
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("\"mobile\":\"189****0234\""),
        "each notice sent is logged, masked"
    );
    for number in ["18995110234", "13909510000"] {
        assert!(
            !text.contains(number),
            "{number} unmasked in {}",
            log.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_hours_notices_wait_and_go_once_when_the_hours_open() {
    let (mut gw, bus, _vhost) = gateway().await;
    let (addr, sim) = sms::spawn(sms::Settings::default()).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    // Hours that are not now, in the hall's time.
    use chrono::Timelike;
    let h = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .hour();
    let closed = format!("{:02}:00-{:02}:00", (h + 2) % 24, (h + 3) % 24);
    let url = format!("http://{addr}/sms/send");
    let (notifier, running) = start(&gw, &settings(&url, &closed, &files), &bus).await;
    assert!(!notifier.within_hours());

    let d = accept(&mut gw, "kai-canguan", "d", true).await;
    until(
        "D's acceptance notice waiting in the ledger",
        WITHIN,
        || async {
            notifier.ledger.dirty(10).unwrap().is_empty()
                && notifier
                    .ledger
                    .of_case(&d)
                    .unwrap()
                    .iter()
                    .any(|n| n.event == "accepted" && n.state == ledger::PENDING)
        },
    )
    .await;
    // The sender passes over it while outside the hours.
    assert_eq!(notifier.send_due().await.unwrap(), 0);
    assert!(sim.messages().is_empty(), "nothing outside the hours");

    // The hours are changed to include now and the notifier restarted: it goes, once.
    running.abort();
    let _ = running.await;
    let (notifier, running) = start(&gw, &settings(&url, "00:00-24:00", &files), &bus).await;
    until(
        "D's acceptance notice at the SMS platform",
        WITHIN,
        || async { texts_of(&sim, &d).len() == 1 },
    )
    .await;
    notifier.ledger.mark_dirty(&d).unwrap();
    until("D read again", WITHIN, || async {
        notifier.ledger.dirty(10).unwrap().is_empty()
    })
    .await;
    assert_eq!(texts_of(&sim, &d).len(), 1);
    assert_eq!(sim.duplicates(), 0);
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_kept_with_the_platforms_words_and_no_number() {
    let (mut gw, bus, _vhost) = gateway().await;
    // The platform knows another account: every message is refused for good.
    let (addr, sim) = sms::spawn(sms::Settings {
        account: "someone-else".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let files = tempfile::tempdir().unwrap();
    let config = settings(&format!("http://{addr}/sms/send"), "00:00-24:00", &files);
    let (notifier, running) = start(&gw, &config, &bus).await;
    let e = accept(&mut gw, "kai-canguan", "e", true).await;
    until("E's notice refused", WITHIN, || async {
        !notifier.ledger.refused().unwrap().is_empty()
    })
    .await;
    let refused = notifier.ledger.refused().unwrap();
    assert_eq!(refused[0].case_number, e);
    assert_eq!(refused[0].message.as_deref(), Some("101 账号不存在"));
    let status = serde_json::to_string(&refused).unwrap();
    assert!(!status.contains("13909510000"), "{status}");
    assert!(sim.messages().is_empty());
    notifier.observe();
    let metrics = notifier.meters.encode();
    assert!(
        metrics.contains(r#"yichuang_notify_attempts_total{event="accepted",outcome="refused"} 1"#),
        "{metrics}"
    );
    running.abort();
}
