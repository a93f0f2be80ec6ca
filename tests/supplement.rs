//! 补正: a department asks for materials, the window hands them in with `Supplement`. They are
//! validated like intake — every problem at once, and nothing changes — and when complete the
//! task resumes at its department (READY again, in its next supplement round) and the 容缺
//! obligations they answer are fulfilled. Idempotent on the supplement id; a result about the
//! round before the supplement changes nothing.

use testkit::gateway::{Backend, TestGateway};
use testkit::{electronic, example};
use yichuang::lifecycle::TaskUpdate;
use yichuang::proto::v1::{
    CaseStatus, DeficiencyCode, GetCaseRequest, Material, SubmitRequest, SupplementRequest,
    TaskStatus, submit_response::Outcome,
};

fn request(number: &str, id: &str, materials: Vec<Material>) -> SupplementRequest {
    SupplementRequest {
        case_number: number.into(),
        supplement_id: id.into(),
        materials,
        task_ids: Vec::new(),
        staff_no: "0342".into(),
    }
}

async fn history_len(gw: &mut TestGateway, number: &str) -> usize {
    gw.client
        .get_case(GetCaseRequest {
            case_number: number.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .len()
}

async fn a_supplement_resumes_the_task_that_asked_for_it(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(example("qiye-kaiban")),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted")
    };
    let number = receipt.case_number.clone();
    let qy_sl = receipt.items[0].task_id.clone();
    let store = gw.gateway.store.clone();

    // Nothing is awaited yet but the 容缺 obligation (ZSZM): anything else is asked by nobody.
    let got = gw
        .client
        .supplement(request(&number, "S-0", vec![electronic("PMT")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.deficiencies.len(), 1, "{:?}", got.deficiencies);
    assert_eq!(
        got.deficiencies[0].code,
        DeficiencyCode::NotRequested as i32
    );
    assert_eq!(got.deficiencies[0].path, "materials[0].materialCode");

    // 市场监管 takes the task and asks for two materials, by name.
    store
        .record_result(
            &qy_sl,
            "scjg",
            0,
            TaskUpdate::Accepted {
                department_case_number: "SCJG001".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    let asked = vec![
        "经营场所平面图及设备布局图".to_string(),
        "住所（经营场所）使用证明".to_string(),
    ];
    store
        .record_result(
            &qy_sl,
            "scjg",
            0,
            TaskUpdate::Supplement {
                department_case_number: "SCJG001".into(),
                materials: asked.clone(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    let before = history_len(&mut gw, &number).await;

    // Deficient: one of the two is missing, a file reference is broken, and a material nobody
    // asked for is handed in — all reported at once, and nothing changes.
    let mut broken = electronic("ZSZM");
    broken.file.as_mut().unwrap().sha256 = "not-a-digest".into();
    let got = gw
        .client
        .supplement(request(
            &number,
            "S-1",
            vec![broken, electronic("ZC"), electronic("NOPE")],
        ))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<(i32, &str)> = got
        .deficiencies
        .iter()
        .map(|d| (d.code, d.path.as_str()))
        .collect();
    assert!(
        codes.contains(&(
            DeficiencyCode::FileReference as i32,
            "materials[0].file.sha256"
        )),
        "{codes:?}"
    );
    assert!(
        codes.contains(&(
            DeficiencyCode::MaterialUnknown as i32,
            "materials[2].materialCode"
        )),
        "{codes:?}"
    );
    assert!(
        codes.contains(&(
            DeficiencyCode::NotRequested as i32,
            "materials[1].materialCode"
        )),
        "{codes:?}"
    );
    let case = got.case.unwrap();
    assert_eq!(case.status, CaseStatus::AwaitingSupplement as i32);
    assert_eq!(case.acceptance_status_code, 3, "受理状态 3 补齐补正材料");
    assert!(got.record.is_none());
    assert_eq!(
        history_len(&mut gw, &number).await,
        before,
        "nothing recorded"
    );

    // Only one of the two asked for: the missing one is named, with the item.
    let got = gw
        .client
        .supplement(request(&number, "S-2", vec![electronic("PMT")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.deficiencies.len(), 1, "{:?}", got.deficiencies);
    let d = &got.deficiencies[0];
    assert_eq!(d.code, DeficiencyCode::MaterialMissing as i32);
    assert_eq!(
        (d.material_code.as_str(), d.item_code.as_str()),
        ("ZSZM", "QY-SL")
    );
    assert!(
        d.message.contains("住所（经营场所）使用证明"),
        "{}",
        d.message
    );

    // Complete: the task resumes in round 1 and the obligation for ZSZM is fulfilled too.
    let complete = request(&number, "S-3", vec![electronic("PMT"), electronic("ZSZM")]);
    let got = gw
        .client
        .supplement(complete.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(got.deficiencies.is_empty(), "{:?}", got.deficiencies);
    let record = got.record.unwrap();
    assert_eq!(record.resumed_task_ids, vec![qy_sl.clone()]);
    assert_eq!(record.fulfilled_obligations, ["ZSZM"]);
    let case = got.case.unwrap();
    let task = &case.tasks[0];
    assert_eq!(task.status, TaskStatus::Ready as i32);
    assert_eq!(task.supplement_round, 1);
    assert_eq!(
        task.materials_requested, asked,
        "what was asked stays on record"
    );
    assert_eq!(case.status, CaseStatus::InProgress as i32);
    assert_eq!(case.acceptance_status_code, 1);
    assert!(case.obligations.iter().all(|o| o.fulfilled));
    assert_eq!(case.obligations[0].fulfilled_by, "S-3");
    let kept: Vec<&str> = case
        .submission
        .as_ref()
        .unwrap()
        .materials
        .iter()
        .map(|m| m.material_code.as_str())
        .collect();
    assert!(kept.contains(&"PMT") && kept.contains(&"ZSZM"), "{kept:?}");
    let events = gw
        .client
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<&str> = events[before..].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "supplement-received",
            "task-resumed",
            "obligation-fulfilled",
            "case-in-progress"
        ]
    );

    // The same call again is a replay; the same id for other materials is a conflict.
    let again = gw.client.supplement(complete).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(again.record.unwrap().supplement_id, "S-3");
    let e = gw
        .client
        .supplement(request(&number, "S-3", vec![electronic("PMT")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert_eq!(history_len(&mut gw, &number).await, before + 4);

    // The supplement request redelivered from round 0 is stale; round 1's answer counts.
    let stale = store
        .record_result(
            &qy_sl,
            "scjg",
            0,
            TaskUpdate::Supplement {
                department_case_number: "SCJG001".into(),
                materials: asked.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        stale, None,
        "a round-0 result after the supplement is stale"
    );
    let applied = store
        .record_result(
            &qy_sl,
            "scjg",
            1,
            TaskUpdate::Progress {
                department_case_number: "SCJG001".into(),
                step: "审核".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(applied.status, TaskStatus::InReview);
    let case = gw
        .client
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(case.tasks[0].approval_stage_code, "2", "审批环节 2 审核");

    // Nothing is awaited any more.
    let got = gw
        .client
        .supplement(request(&number, "S-4", vec![electronic("PMT")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.deficiencies.len(), 1);
    assert_eq!(got.deficiencies[0].path, "caseNumber");

    // An unknown case is not found.
    let e = gw
        .client
        .supplement(request("NO-SUCH-CASE", "S-5", vec![electronic("PMT")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    gw.stop().await;
}

#[tokio::test]
async fn a_supplement_resumes_the_task_that_asked_for_it_sqlite() {
    a_supplement_resumes_the_task_that_asked_for_it(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_supplement_resumes_the_task_that_asked_for_it_postgres() {
    a_supplement_resumes_the_task_that_asked_for_it(Backend::Postgres).await;
}
