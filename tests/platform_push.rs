//! The platform push: every status change reaches the one-network platform's HTTP endpoint once,
//! in order, signed — although the endpoint is down at first, and the gateway is restarted in
//! between. A receiver that checks freshness as docs/api.md says refuses a captured push
//! replayed outside its window; an entry the receiver refuses for good is set aside after
//! `[platform] refused_tries` and the entries after it still arrive.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use yichuang::feed::Fresh;
use yichuang::proto::v1::{GetCaseRequest, SubmitRequest, submit_response::Outcome};

const SECRET: &str = "platform-secret";

struct Platform {
    /// The receiver's documented check (signature, window, ids seen).
    freshness: yichuang::feed::Freshness,
    down_until: Mutex<Option<Instant>>,
    /// (event id, cursor) of every push taken.
    taken: Mutex<Vec<(String, i64)>>,
    refused_while_down: Mutex<u32>,
    bad_signatures: Mutex<u32>,
    /// Every push that came in: its headers and body, for a replay.
    raw: Mutex<Vec<(HeaderMap, Bytes)>>,
    /// Whether the first event id to arrive is refused for good (422) on every try.
    poison_first: bool,
    /// That event id, and how often it was sent.
    poison: Mutex<Option<(String, u32)>>,
}

impl Platform {
    fn new(window_secs: i64, poison_first: bool) -> Platform {
        Platform {
            freshness: yichuang::feed::Freshness::new(SECRET, window_secs),
            down_until: Mutex::default(),
            taken: Mutex::default(),
            refused_while_down: Mutex::default(),
            bad_signatures: Mutex::default(),
            raw: Mutex::default(),
            poison_first,
            poison: Mutex::default(),
        }
    }
}

async fn push(
    State(p): State<Arc<Platform>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    if p.down_until
        .lock()
        .unwrap()
        .is_some_and(|t| Instant::now() < t)
    {
        *p.refused_while_down.lock().unwrap() += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "");
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    p.raw.lock().unwrap().push((headers.clone(), body.clone()));
    let now = chrono::Utc::now().timestamp();
    let fresh = p.freshness.check(
        headers
            .get("x-yichuang-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-yichuang-event-id")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-yichuang-signature")
            .and_then(|v| v.to_str().ok()),
        &body,
        now,
    );
    match fresh {
        Ok(Fresh::New) => {}
        // A resend or a replay within the window: taken already, nothing applied again.
        Ok(Fresh::Repeat) => return (StatusCode::OK, ""),
        Err(_) => {
            *p.bad_signatures.lock().unwrap() += 1;
            return (StatusCode::UNAUTHORIZED, "");
        }
    }
    let id = header("x-yichuang-event-id");
    let mut poison = p.poison.lock().unwrap();
    if p.poison_first && poison.is_none() {
        *poison = Some((id.clone(), 0));
    }
    if let Some((poisoned, n)) = poison.as_mut()
        && *poisoned == id
    {
        *n += 1;
        // Refused for good; the id is forgotten so the next try is checked again.
        p.freshness.forget(&header("x-yichuang-event-id"));
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused: not an event we accept",
        );
    }
    drop(poison);
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
    (StatusCode::OK, "")
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
    let platform = Arc::new(Platform::new(300, false));
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

/// A receiver on a free port; its `http://…/push` URL.
async fn serve(platform: Arc<Platform>) -> String {
    let app = axum::Router::new()
        .route("/push", axum::routing::post(push))
        .with_state(platform);
    let (listener, endpoint) = testkit::server::listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("{endpoint}/push")
}

async fn submit(gw: &mut TestGateway, name: &str) -> String {
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
    r.case_number
}

/// POSTs a captured push again, headers and body as they were; the receiver's status.
async fn replay(url: &str, headers: &HeaderMap, body: &Bytes) -> StatusCode {
    let mut request = reqwest::Client::new().post(url).body(body.clone());
    for (name, value) in headers {
        if name.as_str().starts_with("x-yichuang-") || name == "content-type" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    StatusCode::from_u16(request.send().await.unwrap().status().as_u16()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_push_outside_the_receivers_window_is_refused() {
    const WINDOW_SECS: i64 = 2;
    let platform = Arc::new(Platform::new(WINDOW_SECS, false));
    let url = serve(platform.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::start_with(gateway_config(dir.path(), &url), dir).await;
    let number = submit(&mut gw, "kai-canguan").await;
    let expected = history_ids(&mut gw, &number).await;
    until_taken(&platform, &expected).await;
    gw.stop().await;
    assert_eq!(*platform.bad_signatures.lock().unwrap(), 0);

    let (headers, body) = platform.raw.lock().unwrap()[0].clone();
    let signed_at: i64 = headers["x-yichuang-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Within the window a replay is a repeat: answered, not applied again.
    let taken_before = platform.taken.lock().unwrap().len();
    if chrono::Utc::now().timestamp() - signed_at <= WINDOW_SECS {
        assert_eq!(replay(&url, &headers, &body).await, StatusCode::OK);
        assert_eq!(platform.taken.lock().unwrap().len(), taken_before);
    }
    // Once the window has passed (the receiver's clock, whole seconds), the same bytes are
    // refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while chrono::Utc::now().timestamp() - signed_at <= WINDOW_SECS {
        assert!(Instant::now() < deadline, "the clock moves");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused_before = *platform.bad_signatures.lock().unwrap();
    assert_eq!(
        replay(&url, &headers, &body).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(*platform.bad_signatures.lock().unwrap(), refused_before + 1);
    assert_eq!(
        platform.taken.lock().unwrap().len(),
        taken_before,
        "nothing applied"
    );

    // A changed timestamp on the captured body does not pass either: it is signed.
    let mut forged = headers.clone();
    forged.insert(
        "x-yichuang-timestamp",
        chrono::Utc::now().timestamp().to_string().parse().unwrap(),
    );
    assert_eq!(replay(&url, &forged, &body).await, StatusCode::UNAUTHORIZED);
}

async fn a_refused_entry_is_set_aside_and_later_ones_arrive(backend: Backend) {
    const TRIES: u32 = 3;
    let platform = Arc::new(Platform::new(300, true));
    let url = serve(platform.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = gateway_config(dir.path(), &url);
    config.store = testkit::gateway::config(backend, dir.path()).store;
    config.platform.refused_tries = TRIES;
    let mut gw = TestGateway::start_with(config, dir).await;

    // The receiver refuses the first entry it gets for good: the first case's first.
    let first = submit(&mut gw, "kai-canguan").await;
    let second = submit(&mut gw, "qiye-kaiban").await;
    let first_ids = history_ids(&mut gw, &first).await;
    let second_ids = history_ids(&mut gw, &second).await;
    let poisoned = first_ids[0].clone();
    // Every entry after it arrives although it is refused.
    let later: Vec<String> = first_ids[1..].iter().chain(&second_ids).cloned().collect();
    until_taken(&platform, &later).await;

    let dead = gw
        .gateway
        .store
        .push_dead(yichuang::feed::CURSOR_NAME)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event_id, poisoned);
    assert_eq!(dead[0].status, 422);
    assert_eq!(dead[0].tries, TRIES as i32);
    assert!(dead[0].reason.contains("refused"), "{dead:?}");
    assert_eq!(
        platform.poison.lock().unwrap().clone(),
        Some((poisoned.clone(), TRIES)),
        "sent exactly refused_tries times"
    );
    assert!(yichuang::feed::set_aside_total() >= 1);
    let taken: Vec<String> = platform
        .taken
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.0.clone())
        .collect();
    assert!(!taken.contains(&poisoned));
    assert_eq!(taken, later, "every other entry, once, in order");
    gw.stop().await;
}

testkit::on_both_stores!(a_refused_entry_is_set_aside_and_later_ones_arrive);
