//! The SOAP kind against its simulator (`yichuang_sim::soap`) on a real RabbitMQ, for both
//! departments that use it (公安 `ga`, 消防 `xf`): server faults, hangs, overload and
//! maintenance are retried, client faults end the task in the system's own words, and every
//! task ends with exactly one outcome — the system's own.

use testkit::tasks::task_ids as ids;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use testkit::adapter::{Adapter, department};
use testkit::broker::{Broker, Got, bus};
use testkit::conformance::{self, Kind};
use testkit::server::listener;
use testkit::tasks::{assert_one_outcome_each, task};
use yichuang::proto::v1::ResultKind;
use yichuang_adapters::config::DepartmentConfig;
use yichuang_adapters::system::{Failure, Gate, Task};
use yichuang_sim::core::{Behaviour, Outcome};
use yichuang_sim::soap::{Settings, SoapSim};

/// The simulator as the shipped department file expects it.
fn settings(code: &str, behaviour: Behaviour) -> Settings {
    let (namespace, document_name) = match code {
        "ga" => ("http://ga.yinchuan.gov.cn/approval", "公章刻制备案回执"),
        _ => (
            "http://xf.yinchuan.gov.cn/approval",
            "公众聚集场所投入使用、营业前消防安全检查合格证",
        ),
    };
    Settings {
        behaviour: Behaviour {
            department: code.into(),
            ..behaviour
        },
        namespace: namespace.into(),
        document_name: document_name.into(),
        ..Settings::default()
    }
}

async fn start_sim(code: &str, behaviour: Behaviour) -> (Arc<SoapSim>, DepartmentConfig) {
    let (listener, endpoint) = listener().await;
    let sim = SoapSim::new(settings(code, behaviour));
    tokio::spawn(sim.clone().serve(listener));
    (sim, department(code, &endpoint))
}

/// Each outcome is the one the system decided, with its case number, document, reasons and
/// materials.
fn assert_outcomes_are_the_systems(
    results: &HashMap<String, Vec<Got>>,
    ids: &[String],
    sim: &SoapSim,
    material_code: &str,
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
                assert_eq!(r.documents[0].material_code, material_code);
                assert!(!r.documents[0].name.is_empty());
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
        assert_eq!(outcome.result.department, sim.sim.behaviour.department);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_ends_with_one_outcome_while_both_systems_misbehave() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["ga", "xf"]).await;
    let faults = Behaviour {
        decision_delay_ms: 1500,
        reject: 0.2,
        supplement: 0.2,
        server_error: 0.1, // soap:Server 数据库连接超时
        hang: 0.05,
        hang_ms: 2500, // past the adapter's 1 s timeout; the submission is taken all the same
        too_many: 0.05, // soap:Server 服务繁忙
        maintenance_ms: 1500, // 503 系统维护中 at first
        ..Behaviour::default()
    };
    let (ga, ga_config) = start_sim("ga", faults.clone()).await;
    let (xf, xf_config) = start_sim("xf", faults).await;
    let adapter = Adapter::start(&bus, vec![ga_config, xf_config]).await;

    let ga_tasks: Vec<_> = (0..15).map(|n| task("ga", "GZ-KZ", n)).collect();
    let xf_tasks: Vec<_> = (15..30).map(|n| task("xf", "XF-JC", n)).collect();
    for t in ga_tasks.iter().chain(&xf_tasks) {
        harness.publish(t).await;
    }
    let (ga_ids, xf_ids) = (ids(&ga_tasks), ids(&xf_tasks));
    let all: Vec<String> = ga_ids.iter().chain(&xf_ids).cloned().collect();
    let results = harness.results_for(&all, Duration::from_secs(120)).await;
    assert_one_outcome_each(&results, &all);

    for (sim, ids, code) in [(&ga, &ga_ids, "GZKZBA"), (&xf, &xf_ids, "XFAQJCHGZ")] {
        let stats = sim.sim.stats();
        assert_eq!(stats.cases, 15, "every task reached the system: {stats:?}");
        assert_eq!(stats.duplicates, 0, "none submitted twice: {stats:?}");
        assert!(stats.faults > 0, "faults were injected: {stats:?}");
        // Server faults were retried: no task ended FAILED.
        assert_outcomes_are_the_systems(&results, ids, sim, code);
    }
    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fault_is_published_as_failed_in_the_systems_words() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["xf"]).await;
    let (sim, config) = start_sim("xf", Behaviour::default()).await;
    let adapter = Adapter::start(&bus, vec![config]).await;

    // The system requires the applicant's name; this task has none.
    let mut refused = task("xf", "XF-JC", 1);
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
    assert_eq!(failed.result.reasons, ["缺少必填项 sqrmc"]);
    assert_eq!(sim.sim.stats().cases, 0);
    adapter.task.abort();
    harness.remove().await;
}

/// The kind on its own, without the runtime: a task as the runtime would hand it.
fn kind_task(config: &DepartmentConfig, n: usize) -> Task {
    let message = task(&config.department, "GZ-KZ", n);
    let fields = yichuang_adapters::mapping::render_all(&config.mapping.request, &message).unwrap();
    Task { message, fields }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_fault_is_transient_and_a_client_fault_permanent() {
    let (sim, config) = start_sim(
        "ga",
        Behaviour {
            server_error: 1.0,
            ..Behaviour::default()
        },
    )
    .await;
    let system = yichuang_adapters::kinds::build(&config, Gate::new(50)).unwrap();
    let e = system.submit(&kind_task(&config, 1)).await.unwrap_err();
    assert!(
        matches!(&e, Failure::Transient { reason, retry_after: None }
            if reason.contains("soap:Server") && reason.contains("数据库连接超时")),
        "{e:?}"
    );
    assert_eq!(sim.sim.stats().cases, 0);

    let (sim, config) = start_sim("ga", Behaviour::default()).await;
    let system = yichuang_adapters::kinds::build(&config, Gate::new(50)).unwrap();
    let mut t = kind_task(&config, 2);
    t.fields.insert("sqrmc".into(), String::new());
    assert_eq!(
        system.submit(&t).await.unwrap_err(),
        Failure::permanent("缺少必填项 sqrmc")
    );
    assert_eq!(sim.sim.stats().cases, 0);

    let (_sim, config) = start_sim(
        "ga",
        Behaviour {
            maintenance_ms: 60_000,
            ..Behaviour::default()
        },
    )
    .await;
    let system = yichuang_adapters::kinds::build(&config, Gate::new(50)).unwrap();
    let e = system.submit(&kind_task(&config, 3)).await.unwrap_err();
    assert!(
        matches!(&e, Failure::Transient { reason, .. } if reason.contains("503") && reason.contains("系统维护中")),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_serial_is_looked_up_and_text_is_escaped_both_ways() {
    let (sim, config) = start_sim("ga", Behaviour::default()).await;
    let system = yichuang_adapters::kinds::build(&config, Gate::new(50)).unwrap();
    let mut t = kind_task(&config, 4);
    let awkward = "老马家<餐饮>&\"小吃\" ]]> 'ok'";
    t.fields.insert("sqrmc".into(), awkward.into());

    let first = system.submit(&t).await.unwrap();
    assert_eq!(first["hjmc"], "承办");
    assert_eq!(sim.sim.by_serial(t.id()).unwrap().fields["sqrmc"], awkward);
    // The same task again (its answer was lost): `业务流水号 … 已存在` → looked up.
    let again = system.submit(&t).await.unwrap();
    assert_eq!(again["slbh"], first["slbh"]);
    let stats = sim.sim.stats();
    assert_eq!((stats.cases, stats.duplicates), (1, 1), "{stats:?}");

    let found = system.find(&t).await.unwrap().expect("found");
    assert_eq!(found["slbh"], first["slbh"]);
    assert_eq!(
        system.poll(&t, &first["slbh"]).await.unwrap()["ywlsh"],
        t.id()
    );
    // `无此办件`: find says not there; a query for an unknown case is permanent.
    assert_eq!(system.find(&kind_task(&config, 5)).await.unwrap(), None);
    let e = system.poll(&t, "GA0").await.unwrap_err();
    assert!(
        matches!(&e, Failure::Permanent { reason } if reason.contains("无此办件")),
        "{e:?}"
    );
}

#[test]
fn a_description_it_cannot_use_is_refused() {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/departments/ga.yaml"),
    )
    .unwrap();
    let text = shipped.replace("operation: SubmitCase", "operation: Submit Case");
    let c = DepartmentConfig::parse(
        std::path::Path::new("ga.yaml"),
        &text,
        &yichuang_adapters::kinds::names(),
    )
    .unwrap();
    let e = yichuang_adapters::kinds::build(&c, Gate::new(1))
        .err()
        .unwrap();
    assert!(e.contains("soap.operation \"Submit Case\""), "{e}");

    let c = department("xf", "ftp://127.0.0.1:1");
    let e = yichuang_adapters::kinds::build(&c, Gate::new(1))
        .err()
        .unwrap();
    assert!(e.contains("not an http"), "{e}");
}

/// 公安's SOAP system in the kinds' conformance scenarios.
struct Ga;

impl Kind for Ga {
    type System = SoapSim;

    fn department(&self) -> &str {
        "ga"
    }

    fn item(&self) -> &str {
        "GZ-KZ"
    }

    async fn start(&mut self, behaviour: Behaviour) -> (Arc<SoapSim>, DepartmentConfig) {
        start_sim("ga", behaviour).await
    }

    fn unknown_case(&self) -> Option<&str> {
        Some("X0")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplement_is_handed_to_the_case_once_and_its_round_ends_approved() {
    conformance::supplement_round_trip(Ga).await;
}
