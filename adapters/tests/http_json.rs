//! 市场监管's HTTP/JSON system (`config/departments/scjg.yaml`, described for `kind: http`)
//! against its simulator (`yichuang_sim::http_json`) on a real RabbitMQ: what is particular to it
//! — callbacks (signed, trusted or not), TLS to the system, tokens. The scenarios every
//! description passes are the conformance kit's (`tests/conformance.rs`).

use std::time::Duration;

use testkit::adapter::{Adapter, department, secret_file};
use testkit::broker::{Broker, bus};
use testkit::server::listener;
use testkit::tasks::{assert_one_outcome_each, task};
use yichuang::proto::v1::ResultKind;
use yichuang_adapters::config::DepartmentConfig;
use yichuang_sim::core::Behaviour;
use yichuang_sim::http_json::{HttpJsonSim, Settings};

async fn sim(
    behaviour: Behaviour,
    callback: Option<String>,
) -> (std::sync::Arc<HttpJsonSim>, String) {
    let (listener, endpoint) = listener().await;
    let sim = HttpJsonSim::new(Settings {
        behaviour,
        token_ttl_secs: 1,
        callback_url: callback,
        ..Settings::default()
    });
    tokio::spawn(sim.clone().serve(listener));
    (sim, endpoint)
}

fn config(endpoint: &str, dir: &tempfile::TempDir) -> DepartmentConfig {
    let mut c = department("scjg", endpoint);
    c.credentials
        .insert("client_id".into(), secret_file(dir, "id", "yichuang"));
    c.credentials.insert(
        "client_secret".into(),
        secret_file(dir, "secret", "sim-secret"),
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_deliver_decisions_and_polling_covers_the_dropped_ones() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    // The callback URL needs the adapter's address, the adapter the system's: bind first.
    let (listener, endpoint) = listener().await;
    let mut c = config(&endpoint, &dir);
    c.polling.interval_secs = 4; // slower than the decision, so callbacks arrive first
    // Signed callbacks, not trusted: each makes the adapter poll the task now.
    c.callbacks.secret = Some(secret_file(&dir, "callback", CALLBACK_SECRET));
    let polled_before = callbacks_counted("polled");
    let adapter = Adapter::start(&bus, vec![c]).await;
    let sim = HttpJsonSim::new(Settings {
        behaviour: Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 500,
            drop_callback: 0.5,
            ..Behaviour::default()
        },
        callback_url: Some(format!("http://{}/callback/scjg", adapter.callbacks)),
        callback_secret: Some(CALLBACK_SECRET.into()),
        ..Settings::default()
    });
    tokio::spawn(sim.clone().serve(listener));

    let tasks: Vec<_> = (0..10).map(|n| task("scjg", "SP-JY", n)).collect();
    let ids: Vec<String> = testkit::tasks::task_ids(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let results = harness.results_for(&ids, Duration::from_secs(60)).await;
    assert_one_outcome_each(&results, &ids);
    let stats = sim.sim.stats();
    assert!(
        stats.callbacks_sent > 0 && stats.callbacks_dropped > 0,
        "{stats:?}"
    );
    assert!(
        callbacks_counted("polled") > polled_before,
        "the signed callbacks made the adapter poll their tasks"
    );
    adapter.task.abort();
    harness.remove().await;
}

const CALLBACK_SECRET: &str = "callback-secret";

/// `yichuang_adapter_callbacks_total` for 市场监管 and `outcome`, in this process.
fn callbacks_counted(outcome: &str) -> u64 {
    let series =
        format!("yichuang_adapter_callbacks_total{{department=\"scjg\",outcome=\"{outcome}\"}}");
    yichuang_adapters::meters::render()
        .lines()
        .find(|l| l.starts_with(&series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// A callback that claims the task is approved (办结, with a licence number), as the system
/// would send it.
fn claim(task_id: &str, number: &str) -> String {
    serde_json::json!({"code": "0", "data": {
        "slbh": number, "ywlsh": task_id, "hjmc": "办结", "zt": "办结",
        "zzbh": "FORGED-0001", "zzmc": "食品经营许可证", "bjsj": "2019年06月20日",
    }})
    .to_string()
}

/// A forged callback (unsigned, signed with another key, or too old, or a replay of a signed
/// one) is refused with 401, counted, and changes nothing; a signed one from the department,
/// whose callbacks are not trusted, only makes the adapter ask the system, which has not
/// decided: no decision is published on the callback's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_callback_is_refused_and_a_signed_one_only_makes_the_adapter_ask() {
    use yichuang_adapters::runtime::{NONCE, SIGNATURE, TIMESTAMP, sign};
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    // The system takes ten minutes to decide: a decision within this test is forged.
    let (sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 600_000,
            reject: 0.0,
            supplement: 0.0,
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let mut c = config(&endpoint, &dir);
    c.callbacks.secret = Some(secret_file(&dir, "callback", CALLBACK_SECRET));
    c.polling.interval_secs = 600; // no scheduled poll within the test
    let adapter = Adapter::start(&bus, vec![c]).await;
    let message = task("scjg", "SP-JY", 1);
    let id = message.task.as_ref().unwrap().task_id.clone();
    harness.publish(&message).await;
    let accepted = harness
        .results_until(Duration::from_secs(20), Duration::ZERO, |g| {
            g.kind() == ResultKind::Accepted
        })
        .await;
    let number = accepted
        .iter()
        .find(|g| g.kind() == ResultKind::Accepted)
        .unwrap()
        .result
        .department_case_number
        .clone();
    let body = claim(&id, &number);
    let url = format!("http://{}/callback/scjg", adapter.callbacks);
    let path = "/callback/scjg";
    let client = reqwest::Client::new();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = client.post(&url).body(body.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let answer = request.send().await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    let signed = |secret: &[u8], at: i64, nonce: &str| {
        let ts = at.to_string();
        vec![
            (TIMESTAMP, ts.clone()),
            (NONCE, nonce.to_string()),
            (
                SIGNATURE,
                sign(secret, &ts, nonce, "POST", path, body.as_bytes()),
            ),
        ]
    };
    let now = chrono::Utc::now().timestamp();
    let before: Vec<u64> = ["unsigned", "bad_signature", "stale", "replayed"]
        .iter()
        .map(|o| callbacks_counted(o))
        .collect();

    let (status, text) = post(vec![]).await;
    assert_eq!(status, 401, "unsigned: {text}");
    let (status, _) = post(signed(b"not-the-secret", now, "n-1")).await;
    assert_eq!(status, 401, "signed with another key");
    let (status, _) = post(signed(CALLBACK_SECRET.as_bytes(), now - 900, "n-2")).await;
    assert_eq!(status, 401, "fifteen minutes old");
    // Signed by the department: taken, but only as a reason to ask the system now.
    let genuine = signed(CALLBACK_SECRET.as_bytes(), now, "n-3");
    let (status, text) = post(genuine.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("polled: no decision yet"), "{text}");
    let (status, _) = post(genuine).await;
    assert_eq!(status, 401, "the same callback again");
    let after: Vec<u64> = ["unsigned", "bad_signature", "stale", "replayed"]
        .iter()
        .map(|o| callbacks_counted(o))
        .collect();
    assert_eq!(
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect::<Vec<_>>(),
        [1, 1, 1, 1],
        "each refusal counted by its reason"
    );
    // And each is an audit record: the department, the reason, the peer; not the body.
    if let Some(log) = testkit::logfile::init_suite() {
        let text = std::fs::read_to_string(log).unwrap();
        for reason in ["unsigned", "bad_signature", "stale", "replayed"] {
            assert!(
                text.lines().any(|l| l.contains(r#""target":"audit""#)
                    && l.contains(r#""event":"callback_refused""#)
                    && l.contains(&format!(r#""reason":"{reason}""#))
                    && l.contains(r#""department":"scjg""#)
                    && l.contains(r#""peer":"127.0.0.1:"#)),
                "an audit record of the {reason} refusal in {}",
                log.display()
            );
        }
        assert!(
            text.lines()
                .filter(|l| l.contains(r#""target":"audit""#))
                .all(|l| !l.contains("FORGED-0001") && !l.contains("办结")),
            "no body in an audit record"
        );
    }

    // Nothing the callbacks claimed was published: no decision, no forged licence.
    let later = harness.results_within(Duration::from_secs(3)).await;
    assert!(
        later.iter().all(|g| !g.is_final()),
        "no decision on a callback's word: {later:#?}"
    );
    let case = sim.sim.by_serial(&id).expect("the system has the task");
    assert_eq!(case.number, number);
    assert_eq!(sim.sim.stats().cases, 1);
    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_system_refuses_is_published_as_failed_in_its_own_words() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sim, endpoint) = sim(Behaviour::default(), None).await;
    let adapter = Adapter::start(&bus, vec![config(&endpoint, &dir)]).await;

    // The system requires the applicant's name; this task has none.
    let mut refused = task("scjg", "SP-JY", 1);
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
    assert!(
        failed.result.reasons[0].contains("缺少必填项 sqrmc"),
        "the system's own words: {:?}",
        failed.result.reasons
    );
    assert_eq!(sim.sim.stats().cases, 0);
    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_never_goes_faster_than_the_departments_rate() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    // The system takes 5 requests a second and counts any more; it decides at once, so each
    // task is one call (plus token fetches).
    let (sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 0,
            max_rps: 5,
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let mut c = config(&endpoint, &dir);
    c.limits.requests_per_second = 5;
    c.limits.concurrency = 16;
    let tasks: Vec<_> = (0..20).map(|n| task("scjg", "SP-JY", n)).collect();
    let ids: Vec<String> = testkit::tasks::task_ids(&tasks);
    // The whole backlog is there before the adapter starts.
    for t in &tasks {
        harness.publish(t).await;
    }
    let adapter = Adapter::start(&bus, vec![c]).await;
    let results = harness.results_for(&ids, Duration::from_secs(60)).await;
    assert_one_outcome_each(&results, &ids);
    let stats = sim.sim.stats();
    assert_eq!(stats.rate_violations, 0, "{stats:?}");
    assert!(stats.max_requests_in_a_second <= 5, "{stats:?}");
    assert!(stats.requests >= 20, "{stats:?}");
    adapter.task.abort();
    harness.remove().await;
}

/// A system that fails every time: after `max_attempts` the window is told (a `FAILED` result
/// naming the attempts and the last failure), and the task is kept in the dead queue to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_out_of_attempts_is_published_as_failed_and_dead_lettered() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (_sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            server_error: 1.0,
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let mut c = config(&endpoint, &dir);
    c.retry.max_attempts = 2;
    let adapter = Adapter::start(&bus, vec![c]).await;
    let message = task("scjg", "SP-JY", 1);
    let id = message.task.as_ref().unwrap().task_id.clone();
    harness.publish(&message).await;

    let results = harness
        .results_for(std::slice::from_ref(&id), Duration::from_secs(40))
        .await;
    let failed = results[&id].iter().find(|g| g.is_final()).unwrap();
    assert_eq!(failed.kind(), ResultKind::Failed);
    assert!(
        failed.result.reasons[0].contains("gave up after 2 attempts"),
        "{:?}",
        failed.result.reasons
    );
    let (headers, _) = harness
        .dead_letter("scjg", Duration::from_secs(20))
        .await
        .expect("the task in the dead queue");
    assert!(
        headers[yichuang::bus::headers::REASON].contains("gave up after 2 attempts"),
        "{headers:?}"
    );
    adapter.task.abort();
    harness.remove().await;
}

/// A `Retry-After` of 10^12 seconds (past what `Instant` can add) is clamped: the adapter keeps
/// running and the task waits to be tried again, neither lost nor dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_ten_to_the_twelve_seconds_is_clamped() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            too_many: 1.0,
            retry_after_secs: 1_000_000_000_000,
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let adapter = Adapter::start(&bus, vec![config(&endpoint, &dir)]).await;
    let message = task("scjg", "SP-JY", 1);
    harness.publish(&message).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sim.sim.stats().requests == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the system was never called"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Given time to handle the answer: the delivery task did not panic, nothing dead-lettered.
    let quiet = harness.dead_letter("scjg", Duration::from_secs(3)).await;
    assert!(quiet.is_none(), "not dead-lettered: {quiet:?}");
    assert!(!adapter.task.is_finished(), "the adapter is still running");
    adapter.task.abort();
    harness.remove().await;
}

/// The department's system is down for 8 s (maintenance it did not announce). With 3 attempts
/// the task would be given up in about 3 s; the breaker opens after 2 failures in a row, the task
/// waits without spending attempts, the probes find the system back, and the task is approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_while_the_system_is_down_and_closes_when_it_is_back() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (_sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            maintenance_ms: 8000,
            decision_delay_ms: 300,
            reject: 0.0,
            supplement: 0.0,
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let mut c = config(&endpoint, &dir);
    c.retry.max_attempts = 3;
    c.breaker.failures = 2;
    c.breaker.open_secs = 1;
    c.breaker.max_open_secs = 2;
    let openings = || {
        yichuang_adapters::meters::render()
            .lines()
            .find(|l| l.starts_with("yichuang_adapter_breaker_openings_total{department=\"scjg\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let opened_before = openings();
    let adapter = Adapter::start(&bus, vec![c]).await;
    let message = task("scjg", "SP-JY", 1);
    let id = message.task.as_ref().unwrap().task_id.clone();
    harness.publish(&message).await;
    // The adapter's /status shows the breaker open while the system is down.
    let status = format!("http://{}/status", adapter.http);
    let breaker = || async {
        let s: serde_json::Value = reqwest::get(&status).await.unwrap().json().await.unwrap();
        s["departments"][0]["breaker"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while breaker().await != "open" {
        assert!(
            std::time::Instant::now() < deadline,
            "/status never showed the breaker open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let results = harness
        .results_for(std::slice::from_ref(&id), Duration::from_secs(60))
        .await;
    let last = results[&id].iter().find(|g| g.is_final()).unwrap();
    assert_eq!(
        last.kind(),
        ResultKind::Approved,
        "not given up: {:?}",
        last.result.reasons
    );
    assert!(openings() > opened_before, "the breaker opened");
    assert_eq!(
        breaker().await,
        "closed",
        "closed again once the system answers"
    );
    assert!(
        harness
            .dead_letter("scjg", Duration::from_millis(500))
            .await
            .is_none(),
        "nothing dead-lettered"
    );
    adapter.task.abort();
    harness.remove().await;
}

/// Two adapter replicas; a task and a copy of it (a stalled task published again while the first
/// attempt is still under way) arrive together, at a system that does not check serials and
/// takes 300 ms a request. The copy is held for the request timeout before it is looked up, so
/// it finds the case the first attempt made: one case at the department, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_racing_an_attempt_in_flight_is_held_and_the_department_gets_one_case() {
    copy_is_held(
        yichuang::bus::headers::REPAIR,
        lapin::types::AMQPValue::LongLongInt(1),
    )
    .await;
}

/// The same with the relay's copy: a task published again after an earlier relay's lease ran out
/// unrecorded (header `copy`, not `redelivered`) is held too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_copy_racing_an_attempt_in_flight_is_held_and_the_department_gets_one_case() {
    copy_is_held(
        yichuang::bus::headers::COPY,
        lapin::types::AMQPValue::Boolean(true),
    )
    .await;
}

async fn copy_is_held(header: &str, value: lapin::types::AMQPValue) {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 300,
            reject: 0.0,
            supplement: 0.0,
            hang: 1.0,
            hang_ms: 300,
            accept_duplicate_serials: true,
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let a = Adapter::start(&bus, vec![config(&endpoint, &dir)]).await;
    let b = Adapter::start(&bus, vec![config(&endpoint, &dir)]).await;
    let message = task("scjg", "SP-JY", 1);
    let id = message.task.as_ref().unwrap().task_id.clone();
    let mut headers = lapin::types::FieldTable::default();
    headers.insert("attempt".into(), lapin::types::AMQPValue::LongInt(1));
    headers.insert(header.into(), value);
    let body = prost::Message::encode_to_vec(&message);
    harness.publish(&message).await;
    harness
        .raw(
            "scjg",
            &body,
            lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.clone().into())
                .with_content_type(yichuang::outbox::TASK_CONTENT_TYPE.into())
                .with_headers(headers),
        )
        .await;

    let results = harness
        .results_for(std::slice::from_ref(&id), Duration::from_secs(60))
        .await;
    assert_one_outcome_each(&results, std::slice::from_ref(&id));
    let stats = sim.sim.stats();
    assert_eq!(
        (stats.cases, stats.duplicates),
        (1, 0),
        "one case, no second submission"
    );
    a.task.abort();
    b.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_amqps_an_https_endpoint_signed_by_the_departments_own_ca_is_reached_and_another_is_refused()
 {
    // The adapter's broker connection is TLS too: amqps:// with the broker's CA.
    let mut bus = bus();
    let (url, broker_ca) = testkit::broker::amqps();
    bus.url = url;
    bus.ca_file = Some(broker_ca);
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    // The department's intranet CA signed the system's certificate, and the adapter's client
    // certificate (the system asks for one: mTLS).
    let ca = yichuang_devcerts::Authority::new("scjg intranet CA").unwrap();
    std::fs::write(dir.path().join("scjg-ca.pem"), ca.cert_pem()).unwrap();
    ca.client("adapter", "urn:yichuang:adapter:scjg")
        .unwrap()
        .write(dir.path(), "adapter")
        .unwrap();
    let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
    let (listener, endpoint) = testkit::server::https(&server, Some(ca.cert_pem())).await;
    let sim = HttpJsonSim::new(Settings {
        behaviour: Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 200,
            ..Behaviour::default()
        },
        ..Settings::default()
    });
    let app = sim.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut department = config(&endpoint, &dir);
    department.tls = yichuang::tls::ClientTls {
        ca_file: Some(dir.path().join("scjg-ca.pem")),
        client_cert: Some(dir.path().join("adapter.pem")),
        client_key: Some(dir.path().join("adapter-key.pem")),
    };
    let adapter = Adapter::start(&bus, vec![department.clone()]).await;
    let tasks: Vec<_> = (0..3).map(|n| task("scjg", "SP-JY", n)).collect();
    let ids = testkit::tasks::task_ids(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let results = harness.results_for(&ids, Duration::from_secs(60)).await;
    assert_one_outcome_each(&results, &ids);
    assert_eq!(
        sim.sim.stats().cases,
        3,
        "every task reached the system over https"
    );
    adapter.task.abort();
    harness.remove().await;

    // Trusting the public roots only (no ca_file), the department's client refuses the
    // system's certificate and says why.
    department.tls.ca_file = None;
    let client = yichuang_adapters::kinds::http_client(&department).unwrap();
    let e = client.get(format!("{endpoint}/")).send().await.unwrap_err();
    let message = yichuang::tls::with_causes(&e);
    assert!(message.contains("UnknownIssuer"), "{message}");
}

#[test]
fn a_tls_block_on_a_plain_http_endpoint_is_refused_at_its_line() {
    let text =
        "department: scjg\nkind: manual\nendpoint: http://10.1.2.3/api\ntls:\n  ca_file: ca.pem\n";
    let e = DepartmentConfig::parse(
        std::path::Path::new("scjg.yaml"),
        text,
        &yichuang_adapters::kinds::names(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("scjg.yaml:4") && e.contains("https://"), "{e}");
}

/// A department whose callbacks are trusted has what a signed callback says published as its
/// answer, without asking the system (which has not decided).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_callback_of_a_trusted_department_is_published_as_it_says() {
    use yichuang_adapters::runtime::{NONCE, SIGNATURE, TIMESTAMP, sign};
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    let dir = tempfile::tempdir().unwrap();
    let (_sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 600_000,
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let mut c = config(&endpoint, &dir);
    c.callbacks.secret = Some(secret_file(&dir, "callback", CALLBACK_SECRET));
    c.callbacks.trusted = true;
    c.polling.interval_secs = 600;
    let adapter = Adapter::start(&bus, vec![c]).await;
    let message = task("scjg", "SP-JY", 1);
    let id = message.task.as_ref().unwrap().task_id.clone();
    harness.publish(&message).await;
    harness
        .results_until(Duration::from_secs(20), Duration::ZERO, |g| {
            g.kind() == ResultKind::Accepted
        })
        .await;
    let body = claim(&id, "SCJG-CB-1");
    let ts = chrono::Utc::now().timestamp().to_string();
    let answer = reqwest::Client::new()
        .post(format!("http://{}/callback/scjg", adapter.callbacks))
        .header(TIMESTAMP, &ts)
        .header(NONCE, "t-1")
        .header(
            SIGNATURE,
            sign(
                CALLBACK_SECRET.as_bytes(),
                &ts,
                "t-1",
                "POST",
                "/callback/scjg",
                body.as_bytes(),
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let got = harness
        .results_until(Duration::from_secs(10), Duration::ZERO, |g| g.is_final())
        .await;
    let decided = got.iter().find(|g| g.is_final()).unwrap();
    assert_eq!(decided.kind(), ResultKind::Approved);
    assert_eq!(decided.result.documents[0].number, "FORGED-0001");
    adapter.task.abort();
    harness.remove().await;
}

/// The adapter runtime connected as its own least-privileged RabbitMQ user (made by
/// `yichuang::bus::users`, as `yichuang bus users` makes it), in a vhost of the test's own: it
/// finds the topology it may not declare, consumes its queue, retries and polls through the delay
/// queues, and publishes every result as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_connected_as_its_least_privileged_user_does_all_its_work() {
    let mut vhost = testkit::broker::Vhost::create().await;
    let mut bus = vhost.bus.clone();
    let user = format!("{}-scjg", vhost.name);
    bus.department_users.insert("scjg".into(), user.clone());
    vhost.owns_user(&user);
    let harness = Broker::for_departments(&bus, &["scjg"]).await;
    for u in yichuang::bus::users::adapter_users(&bus) {
        yichuang::bus::users::apply(&bus, None, &u, "adapter-secret")
            .await
            .unwrap();
    }
    let as_adapter = yichuang::config::BusConfig {
        url: vhost.url_as(&user, "adapter-secret"),
        ..bus.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let (_sim, endpoint) = sim(
        Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 1500, // decided after a poll or two, through the delay queues
            server_error: 0.2,       // and retries through them too
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let adapter = Adapter::start(&as_adapter, vec![config(&endpoint, &dir)]).await;
    let tasks: Vec<_> = (0..5).map(|n| task("scjg", "SP-JY", n)).collect();
    let ids: Vec<String> = testkit::tasks::task_ids(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let results = harness.results_for(&ids, Duration::from_secs(60)).await;
    testkit::tasks::assert_one_outcome_each_from(&results, &ids, &user);
    assert!(
        results.values().flatten().all(|g| g.user_id == user),
        "every result is published as the adapter's own user"
    );
    adapter.task.abort();
    harness.remove().await;
    vhost.remove().await;
}
