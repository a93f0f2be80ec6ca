//! 出件: a ready case is handed over at the window to the applicant, its legal representative or
//! the named agent — nobody else — or mailed; then it is closed. Bad requests change nothing.

use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use yichuang::proto::v1::{
    CaseStatus, DeliverRequest, GetCaseRequest, IdType, Mail, Pickup, SubmitRequest,
    deliver_request::How, submit_response::Outcome,
};

fn pickup(name: &str, id: &str) -> Option<How> {
    Some(How::Pickup(Pickup {
        collector_name: name.into(),
        collector_id_type: IdType::ResidentId as i32,
        collector_id_number: id.into(),
        staff_no: "0342".into(),
    }))
}

async fn a_ready_case_is_handed_over_only_to_whom_it_belongs(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(example("kai-canguan")),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted")
    };
    let number = receipt.case_number.clone();
    let deliver = |how: Option<How>| DeliverRequest {
        case_number: number.clone(),
        how,
    };

    // Not ready yet: the departments have not decided.
    let e = gw
        .client
        .deliver(deliver(pickup("马强", "64010419800315001X")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("ready for delivery"),
        "{}",
        e.message()
    );

    for item in &receipt.items {
        gw.gateway
            .store
            .approve_task(&item.task_id, vec![])
            .await
            .unwrap()
            .expect("approved");
    }

    // A stranger is refused, and the refusal does not print their number.
    let e = gw
        .client
        .deliver(deliver(pickup("张三", "640104199001011234")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        !e.message().contains("640104199001011234"),
        "{}",
        e.message()
    );
    // Incomplete requests say what is missing.
    let e = gw
        .client
        .deliver(deliver(Some(How::Mail(Mail {
            carrier: "EMS".into(),
            tracking_number: " ".into(),
        }))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("trackingNumber"), "{}", e.message());
    let e = gw.client.deliver(deliver(None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = gw
        .client
        .deliver(DeliverRequest {
            case_number: "nope".into(),
            how: pickup("马强", "64010419800315001X"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let got = gw
        .client
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.case.unwrap().status,
        CaseStatus::ReadyForDelivery as i32,
        "refusals changed nothing"
    );

    // The legal representative collects (a lower-case x is the same number).
    let delivered = gw
        .client
        .deliver(deliver(pickup("马强", "64010419800315001x")))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(delivered.status, CaseStatus::Delivered as i32);
    let got = gw
        .client
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let last = got.events.last().unwrap();
    assert_eq!(last.kind, "case-delivered");
    assert!(last.detail.contains("W03"), "{}", last.detail);
    assert!(
        !last.detail.contains("64010419800315001X"),
        "masked: {}",
        last.detail
    );
    // Once only.
    let e = gw
        .client
        .deliver(deliver(pickup("马强", "64010419800315001X")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    gw.stop().await;
}

testkit::on_both_stores!(a_ready_case_is_handed_over_only_to_whom_it_belongs);
