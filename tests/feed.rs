//! The window feed (谁受理，谁出件) and `WatchCase`: a window sees the status changes of the cases
//! it accepted, and only those, in order; a client that drops the stream and comes back with its
//! last cursor misses nothing and sees nothing twice; the platform (no hall) sees every hall.

use std::collections::HashSet;
use std::time::Duration;

use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use tokio_stream::StreamExt;
use yichuang::proto::v1::{
    FeedEvent, GetCaseRequest, SubmitRequest, WatchCaseRequest, WindowFeedRequest,
    submit_response::Outcome,
};

async fn submit(gw: &mut TestGateway, name: &str) -> yichuang::proto::v1::Receipt {
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(example(name)),
        })
        .await
        .unwrap()
        .into_inner();
    match answer.outcome {
        Some(Outcome::Receipt(r)) => r,
        other => panic!("{name} accepted: {other:?}"),
    }
}

/// Reads `n` events from a feed, waiting up to 10 s for each.
async fn take(stream: &mut tonic::Streaming<FeedEvent>, n: usize) -> Vec<FeedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events: {out:#?}", out.len()))
            .expect("the stream stays open")
            .expect("an event");
        out.push(next);
    }
    out
}

/// Nothing more arrives within a short while.
async fn quiet(stream: &mut tonic::Streaming<FeedEvent>) {
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(600), stream.next()).await {
        panic!("unexpected event: {extra:?}");
    }
}

async fn history(gw: &mut TestGateway, number: &str) -> Vec<(i64, String)> {
    gw.client
        .get_case(GetCaseRequest {
            case_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| (e.seq, e.kind))
        .collect()
}

async fn a_window_feed_resumes_from_its_cursor(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    // kai-canguan is accepted at W03 of hall 640100-DT01, qiye-kaiban at W05.
    let kai = submit(&mut gw, "kai-canguan").await;
    let qiye = submit(&mut gw, "qiye-kaiban").await;
    let w03 = || WindowFeedRequest {
        hall_code: kai.hall_code.clone(),
        window_code: kai.window_code.clone(),
        cursor: 0,
    };
    let kai_history = history(&mut gw, &kai.case_number).await;

    let mut stream = gw.client.window_feed(w03()).await.unwrap().into_inner();
    let first = take(&mut stream, kai_history.len()).await;
    assert!(
        first.iter().all(|e| e.case_number == kai.case_number),
        "W03 sees only the case it accepted"
    );
    let seen: Vec<(i64, String)> = first
        .iter()
        .map(|e| {
            let ev = e.event.as_ref().unwrap();
            (ev.seq, ev.kind.clone())
        })
        .collect();
    assert_eq!(seen, kai_history, "every entry, in order");
    assert!(first.windows(2).all(|w| w[0].cursor < w[1].cursor));
    quiet(&mut stream).await;
    let cursor = first.last().unwrap().cursor;
    drop(stream); // the window client goes away

    // While it is away, the department approves SP-JY; the other window's case moves too.
    let sp_jy = kai.items.iter().find(|i| i.item_code == "SP-JY").unwrap();
    gw.gateway
        .store
        .approve_task(&sp_jy.task_id, vec![])
        .await
        .unwrap()
        .expect("approved");
    let qy_sl = qiye.items.iter().find(|i| i.item_code == "QY-SL").unwrap();
    gw.gateway
        .store
        .approve_task(&qy_sl.task_id, vec![])
        .await
        .unwrap()
        .expect("approved");

    // Back with its cursor: exactly what it missed.
    let mut stream = gw
        .client
        .window_feed(WindowFeedRequest { cursor, ..w03() })
        .await
        .unwrap()
        .into_inner();
    let missed = history(&mut gw, &kai.case_number).await[kai_history.len()..].to_vec();
    assert!(!missed.is_empty());
    let again = take(&mut stream, missed.len()).await;
    let seen: Vec<(i64, String)> = again
        .iter()
        .map(|e| {
            let ev = e.event.as_ref().unwrap();
            (ev.seq, ev.kind.clone())
        })
        .collect();
    assert_eq!(seen, missed, "what it missed, nothing twice");
    quiet(&mut stream).await;

    // The platform's feed (no hall: every hall) has both cases, each entry once.
    let mut platform_client =
        testkit::gateway::connect_as(gw.addr, Some(&testkit::pki::Who::Platform)).await;
    let mut platform = platform_client
        .clone()
        .window_feed(WindowFeedRequest::default())
        .await
        .unwrap()
        .into_inner();
    let total = history(&mut gw, &kai.case_number).await.len()
        + history(&mut gw, &qiye.case_number).await.len();
    let all = take(&mut platform, total).await;
    let unique: HashSet<(String, i64)> = all
        .iter()
        .map(|e| (e.case_number.clone(), e.event.as_ref().unwrap().seq))
        .collect();
    assert_eq!(unique.len(), total);
    quiet(&mut platform).await;

    // WatchCase follows one case; new entries arrive on an open stream.
    let mut watch = gw
        .client
        .watch_case(WatchCaseRequest {
            case_number: qiye.case_number.clone(),
            cursor: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let so_far = history(&mut gw, &qiye.case_number).await.len();
    let got = take(&mut watch, so_far).await;
    assert!(got.iter().all(|e| e.case_number == qiye.case_number));
    let gz_kz = qiye.items.iter().find(|i| i.item_code == "GZ-KZ").unwrap();
    gw.gateway
        .store
        .approve_task(&gz_kz.task_id, vec![])
        .await
        .unwrap()
        .expect("released by QY-SL's approval, so it can be approved");
    let live = take(&mut watch, 1).await;
    assert_eq!(live[0].event.as_ref().unwrap().kind, "task-approved");
    assert!(live[0].cursor > got.last().unwrap().cursor);

    // Bad requests say what is wrong.
    let e = platform_client
        .window_feed(WindowFeedRequest {
            hall_code: String::new(),
            window_code: "W03".into(),
            cursor: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = gw
        .client
        .watch_case(WatchCaseRequest {
            case_number: "nope".into(),
            cursor: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    gw.stop().await;
}

testkit::on_both_stores!(a_window_feed_resumes_from_its_cursor);
