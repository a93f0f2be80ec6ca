//! The platform push: every status change reaches the one-network platform's HTTP endpoint once,
//! in order, signed — although the endpoint is down at first, and the gateway is restarted in
//! between.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use yichuang::proto::v1::{GetCaseRequest, SubmitRequest, submit_response::Outcome};

const SECRET: &str = "platform-secret";

#[derive(Default)]
struct Platform {
    down_until: Mutex<Option<Instant>>,
    /// (event id, cursor) of every push taken.
    taken: Mutex<Vec<(String, i64)>>,
    refused_while_down: Mutex<u32>,
    bad_signatures: Mutex<u32>,
}

async fn push(State(p): State<Arc<Platform>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if p.down_until
        .lock()
        .unwrap()
        .is_some_and(|t| Instant::now() < t)
    {
        *p.refused_while_down.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if header("x-yichuang-signature") != yichuang::feed::signature(SECRET, &body) {
        *p.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        header("x-yichuang-event-id"),
        format!(
            "{}:{}",
            event["caseNumber"].as_str().unwrap(),
            event["event"]["seq"]
                .as_str()
                .map_or_else(|| event["event"]["seq"].to_string(), str::to_string)
        )
    );
    p.taken.lock().unwrap().push((
        header("x-yichuang-event-id"),
        header("x-yichuang-cursor").parse().unwrap(),
    ));
    StatusCode::OK
}

fn gateway_config(dir: &std::path::Path, url: &str) -> yichuang::config::GatewayConfig {
    let mut config = testkit::gateway::config(Backend::Sqlite, dir);
    config.platform.push_url = url.to_string();
    config.platform.secret = SECRET.into();
    config
}

async fn history_ids(gw: &mut TestGateway, number: &str) -> Vec<String> {
    gw.client
        .get_case(GetCaseRequest {
            case_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .iter()
        .map(|e| format!("{number}:{}", e.seq))
        .collect()
}

async fn until_taken(platform: &Platform, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let taken: Vec<String> = platform
            .taken
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.0.clone())
            .collect();
        if expected.iter().all(|id| taken.contains(id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pushed so far: {taken:?}; expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_change_reaches_the_platform_once_in_order() {
    let platform = Arc::new(Platform::default());
    *platform.down_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(2));
    let app = axum::Router::new()
        .route("/push", axum::routing::post(push))
        .with_state(platform.clone());
    let (listener, endpoint) = testkit::server::listener().await;
    let url = format!("{endpoint}/push");
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The store outlives both gateway runs.
    let data = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::start_with(
        gateway_config(data.path(), &url),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let mut numbers = Vec::new();
    for name in ["kai-canguan", "qiye-kaiban"] {
        let answer = gw
            .client
            .submit(SubmitRequest {
                submission: Some(example(name)),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(Outcome::Receipt(r)) = answer.outcome else {
            panic!("accepted")
        };
        numbers.push(r);
    }
    let mut expected = Vec::new();
    for r in &numbers {
        expected.extend(history_ids(&mut gw, &r.case_number).await);
    }
    until_taken(&platform, &expected).await;
    assert!(
        *platform.refused_while_down.lock().unwrap() > 0,
        "the platform was down at first"
    );
    gw.stop().await;

    // A new gateway process on the same store: the push resumes where it stopped.
    let mut gw = TestGateway::start_with(
        gateway_config(data.path(), &url),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let qy_sl = numbers[1]
        .items
        .iter()
        .find(|i| i.item_code == "QY-SL")
        .unwrap();
    gw.gateway
        .store
        .approve_task(&qy_sl.task_id, vec![])
        .await
        .unwrap()
        .expect("approved");
    let mut expected = Vec::new();
    for r in &numbers {
        expected.extend(history_ids(&mut gw, &r.case_number).await);
    }
    until_taken(&platform, &expected).await;

    let taken = platform.taken.lock().unwrap().clone();
    let ids: Vec<&String> = taken.iter().map(|t| &t.0).collect();
    let unique: HashSet<&&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each change once: {ids:?}");
    assert_eq!(ids.len(), expected.len(), "nothing else");
    assert!(
        taken.windows(2).all(|w| w[0].1 < w[1].1),
        "in feed order: {taken:?}"
    );
    assert_eq!(*platform.bad_signatures.lock().unwrap(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_push_url_without_a_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = gateway_config(dir.path(), "http://127.0.0.1:9/push");
    config.platform.secret.clear();
    let e = yichuang::app::Gateway::from_config(&config)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("secret"), "{e}");
}
