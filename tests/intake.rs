//! End-to-end intake through the real gRPC server, on SQLite and on PostgreSQL: the three
//! example submissions get exactly the answers `examples/README.md` gives, repeats are
//! idempotent, bad envelopes are refused with the field and the limit, nothing is stored
//! for a pre-check or a deficient submission but the attempt's audit record.

use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use tonic::Code;
use yichuang::proto::v1::{
    AcceptanceMode, CaseStatus, DeficiencyCode, GetCaseRequest, ListCasesRequest, PreCheckRequest,
    Receipt, Submission, SubmitRequest, SubmitResponse, TaskStatus, submit_response::Outcome,
};

async fn submit(gw: &mut TestGateway, s: &Submission) -> SubmitResponse {
    gw.client
        .submit(SubmitRequest {
            submission: Some(s.clone()),
        })
        .await
        .expect("submit")
        .into_inner()
}

fn receipt(r: &SubmitResponse) -> &Receipt {
    match &r.outcome {
        Some(Outcome::Receipt(r)) => r,
        other => panic!("expected a receipt, got {other:?}"),
    }
}

async fn kai_canguan_is_accepted_with_two_parallel_tasks(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let answer = submit(&mut gw, &example("kai-canguan")).await;
    let r = receipt(&answer);
    assert!(!answer.replayed);
    assert_eq!(r.case_number.len(), 43, "{}", r.case_number);
    // Lead item SP-JY: scjg's credit code + SP-JY's suffix, the acceptance date, the first sequence.
    assert_eq!(r.case_number, "1164010001013301851000112018000201910210001");
    let items: Vec<_> = r
        .items
        .iter()
        .map(|i| {
            (
                i.item_code.as_str(),
                i.department.as_str(),
                i.promised_deadline.as_str(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("SP-JY", "scjg", "2019-11-04"),
            ("XF-JC", "xf", "2019-11-04")
        ]
    );
    assert!(r.items.iter().all(|i| !i.waits_for_prerequisites));
    assert_eq!(r.promised_deadline, "2019-11-04");
    assert!(r.obligations.is_empty());

    let case = gw
        .client
        .get_case(GetCaseRequest {
            case_number: r.case_number.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let c = case.case.unwrap();
    assert_eq!(c.status, CaseStatus::Accepted as i32);
    let tasks: Vec<_> = c
        .tasks
        .iter()
        .map(|t| (t.department.as_str(), t.status, t.depends_on.len()))
        .collect();
    assert_eq!(
        tasks,
        [
            ("scjg", TaskStatus::Ready as i32, 0),
            ("xf", TaskStatus::Ready as i32, 0)
        ]
    );
    let kinds: Vec<_> = case.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["accepted", "task-ready", "task-ready"]);
    gw.stop().await;
}

async fn qiye_kaiban_is_accepted_under_tolerance_with_ordered_tasks(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let answer = submit(&mut gw, &example("qiye-kaiban")).await;
    let r = receipt(&answer);
    assert!(
        r.case_number
            .starts_with("116401000101330185100011200100020191021"),
        "lead item QY-SL: {}",
        r.case_number
    );
    // The missing 住所使用证明 is an obligation with a due date, not a deficiency.
    assert_eq!(r.obligations.len(), 1, "{:?}", r.obligations);
    let o = &r.obligations[0];
    assert_eq!(
        (
            o.item_code.as_str(),
            o.material_code.as_str(),
            o.due_date.as_str()
        ),
        ("QY-SL", "ZSZM", "2019-11-04")
    );

    let c = gw
        .client
        .get_case(GetCaseRequest {
            case_number: r.case_number.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let first = &c.tasks[0];
    assert_eq!(
        (first.item_code.as_str(), first.status),
        ("QY-SL", TaskStatus::Ready as i32)
    );
    assert_eq!(first.mode, AcceptanceMode::Tolerant as i32);
    assert_eq!(first.promised_deadline, "2019-10-22");
    let later: Vec<_> = c.tasks[1..].iter().map(|t| t.item_code.as_str()).collect();
    assert_eq!(later, ["GZ-KZ", "SW-XB", "SB-DJ", "GJJ-DJ"]);
    for t in &c.tasks[1..] {
        assert_eq!(
            t.status,
            TaskStatus::Waiting as i32,
            "{} must wait for QY-SL",
            t.item_code
        );
        assert_eq!(t.depends_on, std::slice::from_ref(&first.task_id));
        assert_eq!(
            t.inherited_materials,
            ["YYZZ"],
            "{} receives the 营业执照 of QY-SL",
            t.item_code
        );
    }
    // Deadlines of waiting items count from QY-SL's promised deadline.
    assert_eq!(
        c.tasks[4].promised_deadline, "2019-10-25",
        "GJJ-DJ: 3 working days after 2019-10-22"
    );
    assert_eq!(c.promised_deadline, "2019-10-25");
    gw.stop().await;
}

async fn bdc_deficient_gets_one_notice_with_every_deficiency(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let submission = example("bdc-deficient");
    let answer = submit(&mut gw, &submission).await;
    let Some(Outcome::Notice(notice)) = &answer.outcome else {
        panic!("expected a notice: {answer:?}")
    };
    let mut found: Vec<_> = notice
        .deficiencies
        .iter()
        .map(|d| {
            (
                DeficiencyCode::try_from(d.code).unwrap(),
                d.path.as_str(),
                d.material_code.as_str(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (DeficiencyCode::MaterialMissing, "materials", "MMHT"),
            (DeficiencyCode::MaterialMissing, "materials", "WSPZ"),
            (
                DeficiencyCode::IdNumberCheckDigit,
                "otherParties[0].idNumber",
                ""
            ),
        ]
    );
    for d in notice
        .deficiencies
        .iter()
        .filter(|d| d.code == DeficiencyCode::MaterialMissing as i32)
    {
        let name = if d.material_code == "MMHT" {
            "存量房买卖合同"
        } else {
            "契税完税凭证"
        };
        assert_eq!(d.material_name, name);
        assert!(
            d.legal_basis.starts_with('《'),
            "legal basis: {}",
            d.legal_basis
        );
        assert!(
            d.message.contains(name) && d.message.contains(&d.legal_basis),
            "{}",
            d.message
        );
    }
    let id = notice
        .deficiencies
        .iter()
        .find(|d| d.code == DeficiencyCode::IdNumberCheckDigit as i32)
        .unwrap();
    assert!(
        !id.message.contains("640104198003150011"),
        "personal data in a notice: {}",
        id.message
    );
    assert!(id.message.contains("6401**********0011"), "{}", id.message);

    // The full-width ID, the spaced mobile and the Chinese date are normalised, not rejected.
    let norm: Vec<_> = notice
        .normalisations
        .iter()
        .map(|n| (n.path.as_str(), n.rule.as_str(), n.to.as_str()))
        .collect();
    assert!(
        norm.contains(&("applicant.idNumber", "full-width", "6402**********1379")),
        "{norm:?}"
    );
    assert!(
        norm.contains(&("applicant.contact.mobile", "mobile", "139****7788")),
        "{norm:?}"
    );
    assert!(
        norm.contains(&("fields.contractDate", "date", "2019-10-08")),
        "{norm:?}"
    );

    // Nothing about the case is stored but the attempt's audit record.
    assert_eq!(gw.gateway.store.case_count().await.unwrap(), 0);
    assert_eq!(
        gw.gateway
            .store
            .attempt_count(&submission.submission_id)
            .await
            .unwrap(),
        1
    );
    gw.stop().await;
}

async fn repeated_submissions_return_the_first_answer(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    for name in ["kai-canguan", "qiye-kaiban", "bdc-deficient"] {
        let s = example(name);
        let first = submit(&mut gw, &s).await;
        let count = gw.gateway.store.case_count().await.unwrap();
        let second = submit(&mut gw, &s).await;
        assert!(second.replayed, "{name}: the repeat must say it replays");
        assert_eq!(
            second.outcome, first.outcome,
            "{name}: the repeat returns the first answer"
        );
        assert_eq!(
            gw.gateway.store.case_count().await.unwrap(),
            count,
            "{name}: the repeat creates nothing"
        );
    }
    assert_eq!(gw.gateway.store.case_count().await.unwrap(), 2);
    gw.stop().await;
}

async fn same_id_with_other_content_after_acceptance_is_refused(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let s = example("kai-canguan");
    let number = receipt(&submit(&mut gw, &s).await).case_number.clone();
    let mut changed = s.clone();
    changed.fields.insert("seats".into(), "120".into());
    let err = gw
        .client
        .submit(SubmitRequest {
            submission: Some(changed),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().contains(&number) && err.message().contains("submissionId"),
        "{}",
        err.message()
    );
    assert_eq!(gw.gateway.store.case_count().await.unwrap(), 1);
    gw.stop().await;
}

async fn corrected_resubmission_after_a_notice_is_accepted(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let mut s = example("bdc-deficient");
    assert!(matches!(
        submit(&mut gw, &s).await.outcome,
        Some(Outcome::Notice(_))
    ));
    // The applicant brings the contract and the tax receipt and the clerk corrects the seller's ID.
    let template = s.materials[0].clone();
    for code in ["MMHT", "WSPZ"] {
        let mut m = template.clone();
        m.material_code = code.into();
        s.materials.push(m);
    }
    s.other_parties[0].id_number = "64010419800315001X".into();
    let answer = submit(&mut gw, &s).await;
    let r = receipt(&answer);
    assert_eq!(r.items[0].item_code, "BDC-ZY");
    assert_eq!(
        r.items[0].promised_deadline, "2019-10-28",
        "5 working days from 2019-10-21"
    );
    assert_eq!(
        gw.gateway
            .store
            .attempt_count(&s.submission_id)
            .await
            .unwrap(),
        2
    );
    gw.stop().await;
}

async fn precheck_answers_without_storing(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let ok = gw
        .client
        .pre_check(PreCheckRequest {
            submission: Some(example("qiye-kaiban")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.acceptable);
    assert_eq!(ok.obligations.len(), 1);
    let bad = gw
        .client
        .pre_check(PreCheckRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!bad.acceptable);
    assert_eq!(bad.deficiencies.len(), 3);
    assert_eq!(gw.gateway.store.case_count().await.unwrap(), 0);
    assert_eq!(
        gw.gateway
            .store
            .attempt_count("640100-DT01-W11-20191021-0031")
            .await
            .unwrap(),
        0
    );
    gw.stop().await;
}

async fn list_cases_by_window_is_paged(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let base = example("kai-canguan");
    let mut accepted = Vec::new();
    for i in 0..5 {
        let mut s = base.clone();
        s.submission_id = format!("list-{i}");
        // One minute apart, so the order is by time.
        s.submitted_at.as_mut().unwrap().seconds += 60 * i;
        accepted.push((
            s.submitted_at.unwrap(),
            receipt(&submit(&mut gw, &s).await).case_number.clone(),
        ));
    }
    let mut other = example("qiye-kaiban");
    other.submission_id = "list-other-window".into();
    submit(&mut gw, &other).await;

    let list = |request: ListCasesRequest| {
        let mut client = gw.client.clone();
        async move { client.list_cases(request).await.unwrap().into_inner() }
    };
    let window = || ListCasesRequest {
        hall_code: "640100-DT01".into(),
        window_code: "W03".into(),
        ..Default::default()
    };

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(ListCasesRequest {
            page_size: 2,
            page_token: token.clone(),
            ..window()
        })
        .await;
        assert!(page.cases.len() <= 2);
        seen.extend(page.cases.into_iter().map(|c| c.case_number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = accepted.iter().rev().map(|(_, n)| n.clone()).collect();
    assert_eq!(seen, newest_first);

    // A time range: from the second acceptance (inclusive) to the fourth (exclusive).
    let page = list(ListCasesRequest {
        accepted_from: Some(accepted[1].0),
        accepted_to: Some(accepted[3].0),
        ..window()
    })
    .await;
    let numbers: Vec<_> = page.cases.iter().map(|c| c.case_number.clone()).collect();
    assert_eq!(numbers, [accepted[2].1.clone(), accepted[1].1.clone()]);

    let page = list(ListCasesRequest {
        status: CaseStatus::Accepted as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(page.cases.len(), 6, "every case is accepted");
    let page = list(ListCasesRequest {
        status: CaseStatus::Delivered as i32,
        ..Default::default()
    })
    .await;
    assert!(page.cases.is_empty(), "no case is delivered yet");

    let err = gw
        .client
        .list_cases(ListCasesRequest {
            page_size: 501,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("pageSize") && err.message().contains("500"),
        "{}",
        err.message()
    );
    gw.stop().await;
}

async fn bad_envelopes_are_refused_naming_field_and_limit(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let mut s = example("kai-canguan");
    s.submission_id.clear();
    let err = gw
        .client
        .submit(SubmitRequest {
            submission: Some(s),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("submissionId:"),
        "{}",
        err.message()
    );

    let mut s = example("kai-canguan");
    s.items = (0..21).map(|_| s.items[0].clone()).collect();
    let err = gw
        .client
        .submit(SubmitRequest {
            submission: Some(s),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("items") && err.message().contains("20"),
        "{}",
        err.message()
    );

    // The test gateway accepts at most 256 KiB per request.
    let mut s = example("kai-canguan");
    s.fields.insert("note".into(), "x".repeat(300 * 1024));
    let err = gw
        .client
        .submit(SubmitRequest {
            submission: Some(s),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("262144"), "{}", err.message());

    let err = gw
        .client
        .get_case(GetCaseRequest {
            case_number: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(gw.gateway.store.case_count().await.unwrap(), 0);
    gw.stop().await;
}

async fn daily_sequence_is_shared_by_concurrent_submissions(backend: Backend) {
    let gw = TestGateway::start(backend).await;
    let base = example("kai-canguan");
    let mut handles = Vec::new();
    for i in 0..40 {
        let mut client = gw.client.clone();
        let mut s = base.clone();
        s.submission_id = format!("concurrent-{i}");
        handles.push(tokio::spawn(async move {
            client
                .submit(SubmitRequest {
                    submission: Some(s),
                })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut numbers = Vec::new();
    for h in handles {
        numbers.push(receipt(&h.await.unwrap()).case_number.clone());
    }
    numbers.sort();
    let expected: Vec<String> = (1..=40)
        .map(|n| format!("116401000101330185100011201800020191021{n:04}"))
        .collect();
    assert_eq!(
        numbers, expected,
        "every case gets its own number, none skipped"
    );
    gw.stop().await;
}

/// One submission sent eight times at once (a window retrying over several connections): the
/// repeats race past the repeat check together, and still one case is created and every
/// answer carries its receipt.
async fn one_submission_sent_at_once_many_times_creates_one_case(backend: Backend) {
    let gw = TestGateway::start(backend).await;
    let mut s = example("kai-canguan");
    s.submission_id = "sent-at-once".into();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut client = gw.client.clone();
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            client
                .submit(SubmitRequest {
                    submission: Some(s),
                })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.unwrap());
    }
    let numbers: std::collections::HashSet<String> = answers
        .iter()
        .map(|a| receipt(a).case_number.clone())
        .collect();
    assert_eq!(
        numbers.len(),
        1,
        "one case number in every answer: {numbers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| !a.replayed).count(),
        1,
        "one first answer, the others replayed"
    );
    assert_eq!(gw.gateway.store.case_count().await.unwrap(), 1);
    gw.stop().await;
}

testkit::on_both_stores!(
    one_submission_sent_at_once_many_times_creates_one_case,
    kai_canguan_is_accepted_with_two_parallel_tasks,
    qiye_kaiban_is_accepted_under_tolerance_with_ordered_tasks,
    bdc_deficient_gets_one_notice_with_every_deficiency,
    repeated_submissions_return_the_first_answer,
    same_id_with_other_content_after_acceptance_is_refused,
    corrected_resubmission_after_a_notice_is_accepted,
    precheck_answers_without_storing,
    list_cases_by_window_is_paged,
    bad_envelopes_are_refused_naming_field_and_limit,
    daily_sequence_is_shared_by_concurrent_submissions,
);

#[tokio::test]
async fn gateway_refuses_to_start_on_an_invalid_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    std::fs::create_dir(&catalog).unwrap();
    for f in [
        "departments.toml",
        "materials.toml",
        "items.toml",
        "bundles.toml",
    ] {
        std::fs::copy(
            testkit::repo().join("config/catalog").join(f),
            catalog.join(f),
        )
        .unwrap();
    }
    let bundles = std::fs::read_to_string(catalog.join("bundles.toml")).unwrap();
    std::fs::write(
        catalog.join("bundles.toml"),
        bundles.replace("\"GJJ-DJ\"]", "\"GJJ-XX\"]"),
    )
    .unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.catalog_dir = catalog;
    let err = yichuang::app::Gateway::from_config(&config)
        .await
        .err()
        .expect("must refuse");
    let text = err.to_string();
    assert!(
        text.contains("bundles.toml:") && text.contains("missing item \"GJJ-XX\""),
        "{text}"
    );
}
