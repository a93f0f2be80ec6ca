//! Submissions the window did not accept (issue 19): each fresh deficient outcome is kept with
//! its one-time notice and the items it applied for, listed by `ListNotAccepted` in position
//! order for the reporter; a replay adds nothing, an accepted submission is never listed, a
//! window sees only its own hall's, and every page read is audited.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use testkit::example;
use testkit::gateway::{Backend, TestGateway, connect_as};
use testkit::pki::{HALL, Who};
use tonic::Code;
use tonic::transport::Channel;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    DeficiencyNotice, ListNotAcceptedRequest, NotAccepted, Submission, SubmitRequest,
    submit_response::Outcome,
};

/// A clock the test moves: the notices' instants are then known.
fn clock() -> (Arc<AtomicI64>, yichuang::clock::Now) {
    let start: DateTime<Utc> = "2026-03-10T02:00:00Z".parse().unwrap();
    let ms = Arc::new(AtomicI64::new(start.timestamp_millis()));
    let read = ms.clone();
    let now: yichuang::clock::Now =
        Arc::new(move || DateTime::from_timestamp_millis(read.load(Ordering::SeqCst)).unwrap());
    (ms, now)
}

fn timestamp(ms: i64) -> Option<pbjson_types::Timestamp> {
    Some(pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

async fn start(backend: Backend) -> (TestGateway, Arc<AtomicI64>) {
    let dir = tempfile::tempdir().unwrap();
    let config = testkit::gateway::config(backend, dir.path());
    let (time, now) = clock();
    (TestGateway::start_with_clock(config, dir, now).await, time)
}

/// Submits `s`; the notice when it is not accepted.
async fn submit(
    client: &mut CaseServiceClient<Channel>,
    s: &Submission,
) -> Option<DeficiencyNotice> {
    let answer = client
        .submit(SubmitRequest {
            submission: Some(s.clone()),
        })
        .await
        .expect("Submit answers")
        .into_inner();
    match answer.outcome {
        Some(Outcome::Notice(n)) => Some(n),
        _ => None,
    }
}

async fn list(
    client: &mut CaseServiceClient<Channel>,
    request: ListNotAcceptedRequest,
) -> Result<Vec<NotAccepted>, tonic::Status> {
    Ok(client.list_not_accepted(request).await?.into_inner().items)
}

/// The whole listing once it holds `n` entries. On PostgreSQL an entry is listed once every
/// transaction older than the one that wrote it has ended (another test's, say), so a poller
/// never goes past one that is still to commit.
async fn listed(client: &CaseServiceClient<Channel>, n: usize) -> Vec<NotAccepted> {
    testkit::wait::eventually(format!("{n} listed"), Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let items = list(&mut client, ListNotAcceptedRequest::default())
                .await
                .ok()?;
            (items.len() >= n).then_some(items)
        }
    })
    .await
}

fn ids(items: &[NotAccepted]) -> Vec<&str> {
    items.iter().map(|n| n.submission_id.as_str()).collect()
}

async fn deficient_submissions_are_listed_once_in_order(backend: Backend) {
    let (mut gw, time) = start(backend).await;
    let first = example("bdc-deficient");
    let t1 = time.load(Ordering::SeqCst);
    let notice = submit(&mut gw.client, &first).await.expect("a notice");
    // The same submission again is a replay: it writes nothing.
    assert!(submit(&mut gw.client, &first).await.is_some());
    // An accepted one is never listed.
    assert!(
        submit(&mut gw.client, &example("kai-canguan"))
            .await
            .is_none()
    );
    time.fetch_add(60_000, Ordering::SeqCst);
    let t2 = time.load(Ordering::SeqCst);
    let mut second = first.clone();
    second.submission_id = "640100-DT01-W11-20191021-0032".into();
    submit(&mut gw.client, &second).await.expect("a notice");

    let all = listed(&gw.client, 2).await;
    assert_eq!(
        ids(&all),
        [first.submission_id.as_str(), second.submission_id.as_str()]
    );
    let n = &all[0];
    assert!(n.id > 0 && n.id < all[1].id, "positions grow: {all:?}");
    assert_eq!(n.at, timestamp(t1));
    assert_eq!(
        (
            n.hall_code.as_str(),
            n.window_code.as_str(),
            n.clerk_staff_no.as_str()
        ),
        (HALL, "W11", "0511")
    );
    assert_eq!(n.deficiencies, notice.deficiencies);
    assert_eq!(n.deficiencies.len(), 3);
    let kept = n.submission.as_ref().expect("the submission");
    assert_eq!(kept.submission_id, first.submission_id);
    assert_eq!(kept.items, first.items);
    assert_eq!(n.items.len(), 1, "{:?}", n.items);
    let item = &n.items[0];
    assert_eq!(item.item_code, "BDC-ZY");
    assert_eq!(item.implementation_code.chars().count(), 31, "{item:?}");
    assert!(
        !item.item_name.is_empty() && !item.department.is_empty(),
        "{item:?}"
    );

    // The read is in the access log, naming how many were read (never their contents).
    let log = gw
        .gateway
        .store
        .access_log(yichuang::store::AccessQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let last = log.first().expect("an access record");
    assert_eq!(
        (last.method.as_str(), last.outcome.as_str()),
        ("CaseService/ListNotAccepted", "read"),
        "{last:?}"
    );
    assert!(last.target.contains("2 notices"), "{last:?}");

    // Pages: after a position, the ones after it.
    let page = |after, page_size| ListNotAcceptedRequest {
        after,
        page_size,
        ..Default::default()
    };
    let one = list(&mut gw.client, page(0, 1)).await.unwrap();
    assert_eq!(ids(&one), [first.submission_id.as_str()]);
    let two = list(&mut gw.client, page(one[0].id, 1)).await.unwrap();
    assert_eq!(ids(&two), [second.submission_id.as_str()]);
    assert!(
        list(&mut gw.client, page(two[0].id, 1))
            .await
            .unwrap()
            .is_empty()
    );
    let e = list(&mut gw.client, page(0, 501)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Instants: from is inclusive, to exclusive.
    let since = list(
        &mut gw.client,
        ListNotAcceptedRequest {
            from: timestamp(t2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&since), [second.submission_id.as_str()]);
    let before = list(
        &mut gw.client,
        ListNotAcceptedRequest {
            to: timestamp(t2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&before), [first.submission_id.as_str()]);
    gw.stop().await;
}

async fn a_window_sees_only_its_own_halls(backend: Backend) {
    let (mut gw, _) = start(backend).await;
    let s = example("bdc-deficient");
    submit(&mut gw.client, &s).await.expect("a notice");

    // The platform reads every hall, and can ask for one.
    let mut platform = connect_as(gw.addr, Some(&Who::Platform)).await;
    let all = listed(&platform, 1).await;
    assert_eq!(ids(&all), [s.submission_id.as_str()]);
    let elsewhere = ListNotAcceptedRequest {
        hall_code: "330102-ZW01".into(),
        ..Default::default()
    };
    assert!(
        list(&mut platform, elsewhere.clone())
            .await
            .unwrap()
            .is_empty()
    );

    // Another hall's window sees nothing of this hall, and may not ask for it.
    let mut other = connect_as(gw.addr, Some(&Who::Hall("330102-ZW01".into()))).await;
    assert!(
        list(&mut other, ListNotAcceptedRequest::default())
            .await
            .unwrap()
            .is_empty()
    );
    let e = list(
        &mut other,
        ListNotAcceptedRequest {
            hall_code: HALL.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The hall's own window sees its own.
    let own = list(&mut gw.client, ListNotAcceptedRequest::default())
        .await
        .unwrap();
    assert_eq!(ids(&own), [s.submission_id.as_str()]);
    gw.stop().await;
}

testkit::on_both_stores!(
    deficient_submissions_are_listed_once_in_order,
    a_window_sees_only_its_own_halls,
);
