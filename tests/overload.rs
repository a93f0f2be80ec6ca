//! Fair share and overload (docs/scaling.md, "Fair share and overload"): a caller over its quota
//! is refused with `RESOURCE_EXHAUSTED` and a retry hint while another caller is served; new
//! `[limits]` in the configuration file take effect without a restart; calls beyond the
//! in-flight bound are shed with `UNAVAILABLE` while health is still served; feed streams are
//! capped per caller; a feed client that stops reading holds a bounded buffer in the gateway,
//! and gets every event, in order, once it reads again; unknown paths are counted as `other`.
//!
//! Callers are told apart by their client certificates (the test kit's CA), as deployed.

use std::time::Duration;

use testkit::example;
use testkit::gateway::{Backend, TestGateway, config, connect_as};
use testkit::pki::{HALL, Who};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use yichuang::config::{LimitsConfig, RateConfig};
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    PreCheckRequest, Submission, SubmitRequest, WindowFeedRequest, submit_response,
};

/// A gateway on SQLite with `limits`.
async fn gateway(limits: LimitsConfig) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(Backend::Sqlite, dir.path());
    config.limits = limits;
    TestGateway::start_with(config, dir).await
}

/// `who`, on a connection of its own.
async fn caller(gw: &TestGateway, who: Who) -> CaseServiceClient<Channel> {
    connect_as(gw.addr, Some(&who)).await
}

fn window(w: &str) -> Who {
    Who::Window(HALL.into(), w.into())
}

/// The health service, with no client certificate.
async fn health(gw: &TestGateway) -> tonic_health::pb::health_client::HealthClient<Channel> {
    tonic_health::pb::health_client::HealthClient::new(
        testkit::gateway::channel(gw.addr, None).await,
    )
}

fn precheck() -> PreCheckRequest {
    PreCheckRequest {
        submission: Some(example("kai-canguan")),
    }
}

/// The n-th distinct submission of this test: a new id each.
fn nth(base: &Submission, run: &str, n: u64) -> Submission {
    let mut s = base.clone();
    s.submission_id = format!("overload-{run}-{n}");
    s
}

/// PreChecks until one is refused; the refusal (at most `limit` calls).
async fn until_refused(client: &mut CaseServiceClient<Channel>, limit: usize) -> tonic::Status {
    for _ in 0..limit {
        if let Err(status) = client.pre_check(precheck()).await {
            return status;
        }
    }
    panic!("{limit} calls in a row were all served");
}

fn refused_for(reason: &str) -> u64 {
    yichuang::metrics::meters()
        .calls_refused
        .get_or_create(&yichuang::metrics::ReasonLabels {
            reason: reason.into(),
        })
        .get()
}

/// `yichuang_grpc_requests_total` of `CaseService/<method>` with `code`.
fn calls_of(method: &str, code: &str) -> u64 {
    yichuang::metrics::meters()
        .rpc_requests
        .get_or_create(&yichuang::metrics::RpcLabels {
            service: "CaseService".into(),
            method: method.into(),
            code: code.into(),
        })
        .get()
}

fn per_caller(per_second: u32, burst: u32) -> LimitsConfig {
    LimitsConfig {
        per_caller: RateConfig { per_second, burst },
        per_hall: RateConfig::OFF,
        ..LimitsConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_quota_is_refused_with_a_retry_hint_while_another_is_served() {
    let gw = gateway(per_caller(1, 3)).await;
    let (mut greedy, mut other) = (
        caller(&gw, window("W03")).await,
        caller(&gw, Who::examples_hall()).await,
    );
    let before = refused_for("caller_rate");

    // 1 call a second with a burst of 3: the greedy caller is refused within a few calls.
    let status = until_refused(&mut greedy, 12).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("per_caller"), "{status:?}");
    let meta = status.metadata();
    let after: u64 = meta
        .get("retry-after")
        .expect("retry-after in the metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "retry-after {after}");
    let pushback: u64 = meta
        .get("grpc-retry-pushback-ms")
        .expect("grpc-retry-pushback-ms in the metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&pushback), "pushback {pushback} ms");
    assert!(
        refused_for("caller_rate") > before,
        "the refusal is counted"
    );

    // Another caller has a bucket of its own.
    other
        .pre_check(precheck())
        .await
        .expect("another caller is served");
    // Health is never limited: answered many times over while the greedy caller is refused.
    let mut health = health(&gw).await;
    for _ in 0..20 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health is served");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hall_over_its_quota_is_refused_for_each_of_its_callers_and_not_for_others() {
    let gw = gateway(LimitsConfig {
        per_caller: RateConfig::OFF,
        per_hall: RateConfig {
            per_second: 1,
            burst: 3,
        },
        ..LimitsConfig::default()
    })
    .await;
    let (mut w1, mut w2) = (
        caller(&gw, window("W03")).await,
        caller(&gw, Who::examples_hall()).await,
    );
    let status = until_refused(&mut w1, 12).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("per_hall"), "{status:?}");
    let status = w2.pre_check(precheck()).await.unwrap_err();
    assert!(
        status.message().contains("per_hall"),
        "the hall's other window too: {status:?}"
    );
    // The platform belongs to no hall.
    caller(&gw, Who::Platform)
        .await
        .pre_check(precheck())
        .await
        .expect("a caller of no hall is served");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_limits_in_the_file_take_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let generous = "[limits]\nper_caller = { per_second = 10000, burst = 10000 }\n";
    std::fs::write(&file, generous).unwrap();
    let loaded = yichuang::config::GatewayConfig::load(&file).unwrap();
    let gw = gateway(loaded.limits).await;
    let watch = tokio::spawn(yichuang::limits::watch(
        gw.gateway.limits.clone(),
        file.clone(),
        Some(Duration::from_millis(100)),
    ));
    let mut client = caller(&gw, window("W03")).await;
    for _ in 0..20 {
        client.pre_check(precheck()).await.expect("well within");
    }

    let strict = "[limits]\nper_caller = { per_second = 1, burst = 2 }\n";
    std::fs::write(&file, strict).unwrap();
    testkit::until(
        "the stricter limits in force",
        Duration::from_secs(10),
        || {
            let limits = gw.gateway.limits.clone();
            async move { limits.config().per_caller.per_second == 1 }
        },
    )
    .await;
    let status = until_refused(&mut client, 12).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    // A file that does not load leaves the limits in force.
    std::fs::write(&file, "[limits]\nper_caller = 3\n").unwrap();
    assert!(!yichuang::limits::reload(&gw.gateway.limits, &file));
    assert_eq!(gw.gateway.limits.config().per_caller.per_second, 1);
    watch.abort();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_in_flight_bound_are_shed_and_health_is_still_served() {
    let gw = gateway(LimitsConfig {
        max_in_flight: 4,
        ..LimitsConfig::default().without_rates()
    })
    .await;
    // Every place in flight taken, as by four slow calls.
    let held: Vec<_> = (0..4).map(|_| gw.gateway.limits.enter().unwrap()).collect();
    let before = refused_for("overloaded");
    let counted = calls_of("PreCheck", "UNAVAILABLE");
    let mut client = caller(&gw, window("W03")).await;
    let status = client.pre_check(precheck()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("max_in_flight"), "{status:?}");
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
    assert!(refused_for("overloaded") > before);
    assert!(
        calls_of("PreCheck", "UNAVAILABLE") > counted,
        "a shed call is counted with the gateway's calls"
    );
    // Shed before anything else is done for it: a caller with no identity is not even asked
    // for one while there is no room (a shed call costs the gateway as little as it can).
    let mut anonymous = connect_as(gw.addr, None).await;
    let status = anonymous.pre_check(precheck()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    let answer = health(&gw)
        .await
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is served while the gateway sheds")
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    drop(held);
    client
        .pre_check(precheck())
        .await
        .expect("served once there is room");
    let status = anonymous.pre_check(precheck()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(
        gw.gateway.limits.in_flight(),
        0,
        "every call gave its place back"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_streams_are_capped_per_caller() {
    let gw = gateway(LimitsConfig {
        feed_streams_per_caller: 1,
        ..LimitsConfig::default().without_rates()
    })
    .await;
    let (mut a, mut b) = (
        caller(&gw, Who::Platform).await,
        caller(&gw, window("W01")).await,
    );
    let first = a
        .window_feed(WindowFeedRequest::default())
        .await
        .expect("a first stream")
        .into_inner();
    let status = a
        .window_feed(WindowFeedRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("feed_streams_per_caller"));
    let _other = b
        .window_feed(WindowFeedRequest::default())
        .await
        .expect("another caller's stream");

    drop(first);
    testkit::until(
        "the closed stream given back",
        Duration::from_secs(10),
        || {
            let limits = gw.gateway.limits.clone();
            async move { limits.feed_streams() == 1 }
        },
    )
    .await;
    a.window_feed(WindowFeedRequest::default())
        .await
        .expect("a stream again after closing one");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_client_that_stops_reading_holds_a_bounded_buffer_and_misses_nothing() {
    let gw = gateway(LimitsConfig::default().without_rates()).await;
    let limits = gw.gateway.limits.clone();
    // A reader with small HTTP/2 windows, so its pause reaches the gateway soon.
    let channel = Endpoint::from_shared(format!("https://{}", gw.addr))
        .unwrap()
        .tls_config(testkit::pki::client_tls(Some(&Who::Platform)))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut reader = CaseServiceClient::new(channel);
    let mut feed = reader
        .window_feed(WindowFeedRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Cases are accepted while nobody reads the feed, until the gateway's queue for it is full
    // (the transport's buffers are full before it), then as many again.
    let base = example("kai-canguan");
    let writers: Vec<_> = (0..8).map(|_| gw.client.clone()).collect();
    let mut submitted = 0u64;
    let submit_round = |from: u64| {
        let base = base.clone();
        let writers = writers.clone();
        async move {
            let mut calls = Vec::new();
            for (i, mut w) in writers.into_iter().enumerate() {
                let s = nth(&base, "feed", from + i as u64);
                calls.push(tokio::spawn(async move {
                    let r = w
                        .submit(SubmitRequest {
                            submission: Some(s),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(matches!(
                        r.outcome,
                        Some(submit_response::Outcome::Receipt(_))
                    ));
                }));
            }
            for c in calls {
                c.await.unwrap();
            }
        }
    };
    // The most the gateway held for the stream, looked at every millisecond meanwhile.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sampler = tokio::spawn({
        let (limits, peak) = (limits.clone(), peak.clone());
        async move {
            loop {
                peak.fetch_max(limits.feed_buffered(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    while limits.feed_buffered() < yichuang::api::HELD_PER_STREAM as i64 / 3 {
        assert!(
            submitted < 4000,
            "the gateway's queue for the feed never filled"
        );
        submit_round(submitted).await;
        submitted += writers.len() as u64;
    }
    // Then until the history holds five times what the stream may hold.
    let bound = yichuang::api::HELD_PER_STREAM as i64;
    let entries = || async {
        gw.gateway
            .store
            .feed(yichuang::store::FeedQuery {
                limit: 1_000_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len() as i64
    };
    while entries().await < 5 * bound {
        submit_round(submitted).await;
        submitted += writers.len() as u64;
    }
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak <= bound,
        "the gateway held {peak} events for one stream, more than its bound of {bound}"
    );

    // Every entry, in commit order, once the reader reads again: held back, never skipped.
    let total = entries().await;
    let mut last = 0;
    for n in 0..total {
        let n = n as usize;
        let event = tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {total} events arrived"))
            .expect("the stream stays open")
            .expect("an event");
        assert!(event.cursor > last, "cursor {} after {last}", event.cursor);
        last = event.cursor;
    }
    drop(feed);
    testkit::until(
        "the stream's buffer given back",
        Duration::from_secs(10),
        || {
            let limits = limits.clone();
            async move { limits.feed_buffered() == 0 && limits.feed_streams() == 0 }
        },
    )
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_unknown_paths_are_counted_as_other() {
    let gw = gateway(LimitsConfig::default().without_rates()).await;
    let channel = testkit::gateway::channel(gw.addr, Some(&window("W01"))).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    let other = || {
        yichuang::metrics::meters()
            .rpc_requests
            .get_or_create(&yichuang::metrics::RpcLabels {
                service: "other".into(),
                method: "other".into(),
                code: "UNIMPLEMENTED".into(),
            })
            .get()
    };
    let before = other();
    for n in 0..5 {
        grpc.ready().await.unwrap();
        let path = format!("/probe{n}.Service/Method{n}");
        let status = grpc
            .unary::<PreCheckRequest, yichuang::proto::v1::PreCheckResponse, _>(
                tonic::Request::new(precheck()),
                path.parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
    assert!(other() >= before + 5, "five calls counted under other");
    gw.stop().await;
}
