//! 公安's and 消防's SOAP systems (`config/departments/ga.yaml`, `xf.yaml`, described for
//! `kind: http`) against their simulator (`yichuang_sim::soap`) on a real RabbitMQ: what is
//! particular to SOAP — server faults retried, client faults ending the task in the system's own
//! words, text escaped both ways, a description it cannot use refused. The scenarios every
//! description passes are the conformance kit's (`tests/conformance.rs`).

use std::sync::Arc;
use std::time::Duration;

use testkit::adapter::{Adapter, department};
use testkit::broker::{Broker, bus};
use testkit::server::listener;
use testkit::tasks::task;
use yichuang::proto::v1::ResultKind;
use yichuang_adapters::config::DepartmentConfig;
use yichuang_adapters::system::{Failure, Gate, Task};
use yichuang_sim::core::Behaviour;
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
