//! 税务's form-XML system (`config/departments/sw.yaml`, described for `kind: http`) against its
//! simulator (`yichuang_sim::form_xml`) on a real RabbitMQ: what is particular to it — GBK and
//! GB18030 answers, signatures, tokens refused and fetched again, refusals in its own words, and a
//! bad description refused at its line. The scenarios every description passes are the
//! conformance kit's (`tests/conformance.rs`).

use testkit::tasks::task_ids as ids;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use testkit::adapter::{Adapter, department, secret_file};
use testkit::broker::{Broker, Got, bus};
use testkit::server::listener;
use testkit::tasks::{assert_one_outcome_each, task};
use yichuang::proto::v1::ResultKind;
use yichuang_adapters::config::DepartmentConfig;
use yichuang_adapters::system::{Failure, Gate, Task};
use yichuang_sim::core::{Behaviour, Outcome};
use yichuang_sim::form_xml::{Charset, FormXmlSim, Settings};

const SIGN_KEY: &str = "sw-sign-key";

async fn sim(settings: Settings) -> (Arc<FormXmlSim>, String) {
    let (listener, endpoint) = listener().await;
    let sim = FormXmlSim::new(settings);
    tokio::spawn(sim.clone().serve(listener));
    (sim, endpoint)
}

/// The shipped `sw` file with test timings, its credentials in files, signing with `sign_key`
/// (none: unsigned).
fn config(endpoint: &str, dir: &tempfile::TempDir, sign_key: Option<&str>) -> DepartmentConfig {
    let mut c = department("sw", endpoint);
    c.credentials
        .insert("app_id".into(), secret_file(dir, "id", "yichuang"));
    c.credentials.insert(
        "app_secret".into(),
        secret_file(dir, "secret", "sim-secret"),
    );
    match sign_key {
        Some(key) => {
            c.credentials
                .insert("sign_key".into(), secret_file(dir, "sign", key));
        }
        None => {
            c.credentials.remove("sign_key");
        }
    }
    c
}

/// Each outcome is the one the system decided, with its case number and, read from its GBK
/// answers, its document, reasons and materials in Chinese.
fn assert_outcomes_are_the_systems(
    results: &HashMap<String, Vec<Got>>,
    ids: &[String],
    sim: &FormXmlSim,
) {
    for id in ids {
        let case = sim.sim.by_serial(id).expect("the system has the task");
        let outcome = results[id].iter().find(|g| g.is_final()).unwrap();
        assert_eq!(outcome.result.department_case_number, case.number, "{id}");
        let r = &outcome.result;
        match case.outcome {
            Outcome::Approved => {
                assert_eq!(outcome.kind(), ResultKind::Approved, "{id}");
                assert_eq!(r.documents[0].number, case.licence_number());
                assert_eq!(r.documents[0].name, "税务事项通知书");
                assert_eq!(r.documents[0].material_code, "SWSXTZS");
            }
            Outcome::Rejected => {
                assert_eq!(outcome.kind(), ResultKind::Rejected, "{id}");
                assert_eq!(r.reasons, ["经营场所与申报不符"], "{id}");
            }
            Outcome::Supplement => {
                assert_eq!(outcome.kind(), ResultKind::Supplement, "{id}");
                assert_eq!(r.materials, testkit::tasks::REQUESTED, "{id}");
            }
        }
        // The steps came through too (承办 → 审核 → 批准 → 办结), in Chinese.
        assert!(
            results[id]
                .iter()
                .filter(|g| g.kind() == ResultKind::Progress)
                .all(|g| ["承办", "审核", "批准", "办结"].contains(&g.result.step.as_str())),
            "{id}: {:#?}",
            results[id]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gb18030_answers_and_unsigned_requests_work_the_same() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["sw"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sim, endpoint) = sim(Settings {
        behaviour: Behaviour {
            department: "sw".into(),
            decision_delay_ms: 500,
            reject: 0.34,
            supplement: 0.33,
            ..Behaviour::default()
        },
        charset: Charset::Gb18030,
        ..Settings::default()
    })
    .await;
    let adapter = Adapter::start(&bus, vec![config(&endpoint, &dir, None)]).await;
    let tasks: Vec<_> = (0..8).map(|n| task("sw", "SW-XB", n)).collect();
    let ids = ids(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let results = harness.results_for(&ids, Duration::from_secs(60)).await;
    assert_one_outcome_each(&results, &ids);
    assert_outcomes_are_the_systems(&results, &ids, &sim);
    assert_eq!(sim.sim.stats().duplicates, 0);
    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_system_refuses_is_published_as_failed_in_its_own_words() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["sw"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sim, endpoint) = sim(Settings {
        sign_key: Some(SIGN_KEY.into()),
        ..Settings::default()
    })
    .await;
    let adapter = Adapter::start(&bus, vec![config(&endpoint, &dir, Some(SIGN_KEY))]).await;

    // The system requires the taxpayer's name; this task has none.
    let mut refused = task("sw", "SW-XB", 1);
    refused
        .submission
        .as_mut()
        .unwrap()
        .applicant
        .as_mut()
        .unwrap()
        .name = " ".into();
    let id = refused.task.as_ref().unwrap().task_id.clone();
    harness.publish(&refused).await;

    let results = harness
        .results_for(std::slice::from_ref(&id), Duration::from_secs(30))
        .await;
    let failed = results[&id].iter().find(|g| g.is_final()).unwrap();
    assert_eq!(failed.kind(), ResultKind::Failed);
    assert_eq!(
        failed.result.reasons,
        ["缺少必填项 nsrmc"],
        "the system's own words, decoded from GBK"
    );
    assert_eq!(sim.sim.stats().cases, 0);
    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_refused_by_the_system_and_published_as_failed() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["sw"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sim, endpoint) = sim(Settings {
        sign_key: Some(SIGN_KEY.into()),
        ..Settings::default()
    })
    .await;
    let adapter = Adapter::start(&bus, vec![config(&endpoint, &dir, Some("not-the-key"))]).await;
    let t = task("sw", "SW-XB", 1);
    let id = t.task.as_ref().unwrap().task_id.clone();
    harness.publish(&t).await;
    let results = harness
        .results_for(std::slice::from_ref(&id), Duration::from_secs(30))
        .await;
    let failed = results[&id].iter().find(|g| g.is_final()).unwrap();
    assert_eq!(failed.kind(), ResultKind::Failed);
    assert_eq!(failed.result.reasons, ["签名验证失败"]);
    assert_eq!(sim.refused_signatures(), 1);
    assert_eq!(sim.sim.stats().cases, 0, "nothing was taken");
    adapter.task.abort();
    harness.remove().await;
}

/// The kind on its own, without the runtime: a task as the runtime would hand it.
fn kind_task(config: &DepartmentConfig, n: usize) -> Task {
    let message = task("sw", "SW-XB", n);
    let fields = yichuang_adapters::mapping::render_all(&config.mapping.request, &message).unwrap();
    Task { message, fields }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_serial_is_looked_up_and_a_refused_token_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, endpoint) = sim(Settings {
        sign_key: Some(SIGN_KEY.into()),
        ..Settings::default()
    })
    .await;
    let config = config(&endpoint, &dir, Some(SIGN_KEY));
    let system = yichuang_adapters::kinds::build(&config, Gate::new(50)).unwrap();
    let t = kind_task(&config, 7);

    let first = system.submit(&t).await.unwrap();
    assert_eq!(first["hjmc"], "承办", "GBK decoded: {first:?}");
    assert!(
        first["slsj"].contains('年')
            && yichuang_adapters::mapping::parse_date(&first["slsj"]).is_some(),
        "{first:?}"
    );
    // The system restarts and forgets its tokens; the same task comes again (its answer was
    // lost): the refused token is fetched again, the duplicate looked up, not refused.
    sim.revoke_tokens();
    let again = system.submit(&t).await.unwrap();
    assert_eq!(again["slbh"], first["slbh"]);
    assert_eq!(sim.refused_tokens(), 1);
    assert_eq!(sim.sim.stats().duplicates, 1);
    assert_eq!(sim.sim.stats().cases, 1);
    // Find and poll agree with it; an unknown serial is not found.
    let found = system.find(&t).await.unwrap().expect("found");
    assert_eq!(found["slbh"], first["slbh"]);
    assert_eq!(
        system.poll(&t, &first["slbh"]).await.unwrap()["ywlsh"],
        t.id()
    );
    assert_eq!(system.find(&kind_task(&config, 8)).await.unwrap(), None);
    let unknown = system.poll(&t, "SW00000000").await.unwrap_err();
    assert!(
        matches!(&unknown, Failure::Permanent { reason } if reason.contains("记录不存在")),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_overload_are_transient() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, endpoint) = sim(Settings::default()).await;
    let mut c = config(&endpoint, &dir, None);
    c.credentials
        .insert("app_secret".into(), secret_file(&dir, "wrong", "guessed"));
    let system = yichuang_adapters::kinds::build(&c, Gate::new(50)).unwrap();
    let e = system.submit(&kind_task(&c, 1)).await.unwrap_err();
    assert!(
        matches!(&e, Failure::Transient { reason, .. } if reason.contains("应用认证失败") && reason.contains("credentials")),
        "{e:?}"
    );

    let (_sim, endpoint) = sim(Settings {
        behaviour: Behaviour {
            too_many: 1.0,
            retry_after_secs: 7,
            ..Behaviour::default()
        },
        ..Settings::default()
    })
    .await;
    let c = config(&endpoint, &dir, None);
    let system = yichuang_adapters::kinds::build(&c, Gate::new(50)).unwrap();
    let e = system.submit(&kind_task(&c, 1)).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Failure::Transient {
                retry_after: Some(d),
                ..
            } if *d == Duration::from_secs(7)
        ),
        "{e:?}"
    );
}

#[test]
fn a_description_with_an_unknown_field_a_bad_expression_or_a_missing_credential_is_refused_at_its_line()
 {
    let path = std::path::Path::new("config/departments/sw.yaml");
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/departments/sw.yaml"),
    )
    .unwrap();
    let parse = |text: &str| {
        DepartmentConfig::parse(path, text, &yichuang_adapters::kinds::names())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let line = |needle: &str| shipped.lines().position(|l| l.contains(needle)).unwrap() + 1;
    parse(&shipped).expect("the shipped file reads");

    let e = parse(&shipped.replace("    path: /api/submit", "    pth: /api/submit")).unwrap_err();
    let at = format!("sw.yaml:{}", line("path: /api/submit"));
    assert!(e.contains(&at) && e.contains("pth"), "{e}");

    let e = parse(&shipped.replace(
        "approved: answer.blzt == '办结'",
        "approved: answer.blzt ==",
    ))
    .unwrap_err();
    let at = format!("sw.yaml:{}", line("approved: answer.blzt"));
    assert!(e.contains(&at) && e.contains("syntax error"), "{e}");

    let e = parse(&shipped.replace("answer.rtnMsg\n", "answer.rtnMsg | lowr\n")).unwrap_err();
    assert!(e.contains("unknown filter `lowr`"), "{e}");

    let without = shipped.replace("  app_secret: { env: SW_APP_SECRET }\n", "");
    let e = parse(&without).unwrap_err();
    let used = without
        .lines()
        .position(|l| l.contains("credentials.app_secret"))
        .unwrap();
    let at = format!("sw.yaml:{}", used + 1);
    assert!(
        e.contains(&at) && e.contains("credentials.app_secret"),
        "{e}"
    );
}
