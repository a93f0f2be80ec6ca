//! One case followed by its spans: an OTLP/gRPC collector inside the test receives what the
//! gateway and the adapter export, and the case's spans — the window's `Submit`, the relay's
//! publish, the adapter's consume, the call to the legacy HTTP system and the gateway's
//! handling of the result — form one trace, each a child of the one before, each naming the
//! case and the task. A test binary of its own: it installs the process's global subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use testkit::adapter::Adapter;
use testkit::server::listener;
use yichuang::config::TracingConfig;
use yichuang::proto::v1::{GetCaseRequest, SubmitRequest, TaskStatus, submit_response::Outcome};

/// A received span: names, ids and string attributes.
#[derive(Clone, Debug)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for s in scope.spans {
                    let attributes = s
                        .attributes
                        .iter()
                        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(v) => Some((kv.key.clone(), v.clone())),
                            _ => None,
                        })
                        .collect();
                    spans.push(Got {
                        name: s.name.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_case_is_one_trace_from_the_window_through_the_adapter_and_the_legacy_call_back_to_the_gateway()
 {
    // The collector, then the process's spans exported to it.
    let collector = Collector::default();
    let (l, otlp) = listener().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let telemetry = yichuang::telemetry::init(
        &toml::from_str("level = \"info\"").unwrap(),
        &TracingConfig {
            otlp_endpoint: otlp,
            sampling_ratio: 1.0,
            service_name: "yichuang-test".into(),
        },
        "yichuang-test",
    )
    .expect("telemetry starts");
    assert!(telemetry.exporting());

    // 市场监管's HTTP system, decides in a second; its adapter.
    let bus = testkit::broker::bus();
    let harness = testkit::broker::Broker::for_departments(&bus, &["scjg", "xf"]).await;
    let dir = tempfile::tempdir().unwrap();
    let scjg_endpoint = testkit::adapter::scjg_sim(1000).await;
    let adapter = Adapter::start(&bus, vec![testkit::adapter::scjg(&dir, &scjg_endpoint)]).await;

    // The gateway on SQLite with its relay.
    let root = testkit::repo();
    let mut config = testkit::gateway::with_bus(dir.path(), &bus);
    config.sla.sweep_secs = 0;
    let serving = testkit::gateway::TestGateway::serve(&config).await;
    let mut client = serving.client.clone();

    // The window starts the trace.
    let window_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let window_span = "00f067aa0ba902b7";
    let mut submission: yichuang::proto::v1::Submission = testkit::example("kai-canguan");
    submission.submission_id = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let mut request = tonic::Request::new(SubmitRequest {
        submission: Some(submission),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{window_trace}-{window_span}-01")
            .parse()
            .unwrap(),
    );
    let answer = client.submit(request).await.unwrap().into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("kai-canguan is accepted: {answer:?}")
    };
    let case_number = receipt.case_number.clone();
    let task_id = receipt
        .items
        .iter()
        .find(|i| i.department == "scjg")
        .expect("a 市场监管 item")
        .task_id
        .clone();

    // 市场监管 decides; the gateway records it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let case = client
            .get_case(GetCaseRequest {
                case_number: case_number.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .case
            .unwrap();
        let task = case.tasks.iter().find(|t| t.task_id == task_id).unwrap();
        if task.status == TaskStatus::Approved as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 市场监管 task is not approved after 60 s: {:?}",
            TaskStatus::try_from(task.status)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every hop's span reaches the collector.
    let wanted = [
        "CaseService/Submit",
        "publish scjg",
        "consume scjg",
        "legacy submit",
        "result scjg approved",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        telemetry.flush();
        let spans: Vec<Got> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == window_trace)
            .cloned()
            .collect();
        if wanted.iter().all(|w| spans.iter().any(|s| s.name == *w)) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans of the window's trace after 30 s: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let by_name = |name: &str| -> &Got {
        spans
            .iter()
            .find(|s| s.name == name && s.attributes.get("task.id") != Some(&String::new()))
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let submit = by_name("CaseService/Submit");
    assert_eq!(
        submit.parent, window_span,
        "Submit continues the window's span"
    );
    assert_eq!(submit.attributes["case.number"], case_number);
    assert!(submit.attributes["task.ids"].contains(&task_id));
    // Each later hop: a child of the one before, naming the case and the task.
    let chain = [
        "publish scjg",
        "consume scjg",
        "legacy find",
        "legacy submit",
        "result scjg approved",
    ];
    let publish = spans
        .iter()
        .find(|s| s.name == "publish scjg" && s.attributes["task.id"] == task_id)
        .expect("the task's publish span");
    assert_eq!(
        publish.parent, submit.span_id,
        "publish is a child of Submit"
    );
    let consume = spans
        .iter()
        .find(|s| s.name == "consume scjg" && s.parent == publish.span_id)
        .expect("the adapter's consume, a child of the publish");
    // The adapter first asks whether the system has the task already (a crash may have
    // handed it over), then hands it over.
    let found = spans
        .iter()
        .find(|s| s.name == "legacy find" && s.parent == consume.span_id)
        .expect("the legacy find, a child of the first consume");
    assert_eq!(found.attributes["legacy.operation"], "find");
    let submitted = spans
        .iter()
        .find(|s| s.name == "legacy submit" && s.parent == consume.span_id)
        .expect("the legacy submit, a child of the first consume");
    assert_eq!(submitted.attributes["legacy.outcome"], "ok");
    let result = spans
        .iter()
        .find(|s| s.name == "result scjg approved")
        .unwrap();
    assert!(
        spans
            .iter()
            .any(|s| s.name == "consume scjg" && s.span_id == result.parent),
        "the result is a child of the adapter's consume that published it"
    );
    for name in chain {
        for s in spans.iter().filter(|s| s.name == name) {
            assert_eq!(s.attributes["case.number"], case_number, "{name}: case");
            assert!(
                s.attributes["task.id"].starts_with(&case_number),
                "{name}: task id {:?}",
                s.attributes["task.id"]
            );
        }
    }

    // No personal data in any exported attribute (kai-canguan's applicant has an ID number,
    // a mobile number and a name).
    let names = yichuang::privacy::parse_names(
        &std::fs::read_to_string(root.join("tests/fixtures/personal-names.txt")).unwrap(),
    )
    .unwrap();
    let exported: Vec<String> = collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .flat_map(|s| s.attributes.values().cloned().chain([s.name.clone()]))
        .collect();
    let found = yichuang::privacy::scan(&exported.join("\n"), &names);
    assert!(
        found.is_empty(),
        "personal data in span attributes: {found:#?}"
    );

    serving.stop().await;
    adapter.task.abort();
    harness.remove().await;
}
