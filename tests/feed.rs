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

/// Many writers commit history at once (acceptances, and approvals that edit a case) while a
/// reader follows the whole feed by its cursor as fast as it can. Writers finish in an order
/// other than the one their positions were given in; a feed that hands out a position before
/// every smaller one has committed (positions by a sequence or by transaction id, read without
/// regard to the transactions still running) lets the reader step past an entry that commits
/// later, and this reader then misses it. Every entry must reach the reader once, in position
/// order.
async fn concurrent_writers_never_leave_a_feed_reader_behind(backend: Backend) {
    const WRITERS: usize = 12;
    const CASES_EACH: usize = 15;
    let gw = TestGateway::start(backend).await;
    let store = gw.gateway.store.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen = Vec::new();
            loop {
                // The flag is read before the last look, so a read after every writer finished
                // is always made.
                let finished = stop.load(std::sync::atomic::Ordering::SeqCst);
                let items = store
                    .feed(yichuang::store::FeedQuery {
                        after: cursor,
                        limit: 64,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                for item in &items {
                    assert!(item.position > cursor, "positions only grow");
                    cursor = item.position;
                    seen.push((item.case_number.clone(), item.event.seq));
                }
                if finished && items.is_empty() {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = gw.client.clone();
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut numbers = Vec::new();
            for n in 0..CASES_EACH {
                let mut submission = example("kai-canguan");
                submission.submission_id = format!("feed-order-{w}-{n}");
                let answer = client
                    .submit(SubmitRequest {
                        submission: Some(submission),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let Some(Outcome::Receipt(receipt)) = answer.outcome else {
                    panic!("accepted: {answer:?}");
                };
                // Every other case is edited at once too (an approval: a case edit with
                // history), so acceptances and edits interleave.
                if n % 2 == 0 {
                    let sp_jy = receipt
                        .items
                        .iter()
                        .find(|i| i.item_code == "SP-JY")
                        .unwrap();
                    store
                        .approve_task(&sp_jy.task_id, vec![])
                        .await
                        .unwrap()
                        .expect("approved");
                }
                numbers.push(receipt.case_number);
            }
            numbers
        }));
    }
    let mut numbers = Vec::new();
    for w in writers {
        numbers.extend(w.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader catches up within 60 s")
        .unwrap();
    let mut expected = HashSet::new();
    for number in &numbers {
        let (_, events) = store.get_case(number).await.unwrap().expect("stored");
        for e in events {
            expected.insert((number.clone(), e.seq));
        }
    }
    let unique: HashSet<(String, i64)> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no entry twice");
    let missed: Vec<_> = expected.difference(&unique).collect();
    assert!(
        missed.is_empty(),
        "{} of {} entries never reached the reader, e.g. {:?}",
        missed.len(),
        expected.len(),
        missed.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(unique, expected);
    gw.stop().await;
}

testkit::on_both_stores!(concurrent_writers_never_leave_a_feed_reader_behind);
