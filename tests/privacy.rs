//! Personal data stays out of logs and errors: the list of names the suite's logs are scanned
//! for covers the examples, `yichuang logs scan` finds what is planted and prints it masked,
//! this process's own log is written and clean, and errors that echo what the window typed
//! mask it.

use std::process::Output;

use testkit::gateway::{Backend, TestGateway};
use testkit::{example, repo, text, yichuang};
use yichuang::privacy::{Kind, parse_names, scan};
use yichuang::proto::v1::{
    DeliverRequest, GetCaseRequest, IdType, Mail, Pickup, PreCheckRequest, SubmitRequest,
    SupplementRequest, WatchCaseRequest, deliver_request::How, submit_response::Outcome,
};

const ID: &str = "64010419800315001X";
const MOBILE: &str = "13909517788";
/// A valid resident ID number of nobody on the examples.
const OTHER_ID: &str = "64010419900101123X";

fn names_file() -> std::path::PathBuf {
    repo().join("tests/fixtures/personal-names.txt")
}

fn scan_command(args: &[&str]) -> Output {
    yichuang!(&[&["logs", "scan"], args].concat())
}

/// The names the scan looks for.
fn names() -> Vec<String> {
    parse_names(&std::fs::read_to_string(names_file()).unwrap()).unwrap()
}

/// Every natural person of the example submissions: the clerk, a person applying, the legal
/// representative, the contact, the agent, other parties that are persons, the recipient.
#[test]
fn the_names_list_covers_every_person_in_the_examples() {
    let listed = names();
    let mut persons = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples/cases")).unwrap() {
        let path = entry.unwrap().path();
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let a = &s["applicant"];
        let mut names = vec![
            &s["clerk"]["name"],
            &a["legalRepresentative"]["name"],
            &a["contact"]["name"],
            &s["agent"]["name"],
            &s["delivery"]["recipient"],
        ];
        if a["kind"] == "APPLICANT_KIND_PERSON" {
            names.push(&a["name"]);
        }
        for party in s["otherParties"].as_array().into_iter().flatten() {
            if party["idType"] != "ID_TYPE_USCC" {
                names.push(&party["name"]);
            }
        }
        for name in names.into_iter().filter_map(|n| n.as_str()) {
            persons.push((path.file_name().unwrap().to_owned(), name.to_string()));
        }
    }
    assert!(persons.len() >= 7, "{persons:?}");
    for (file, name) in persons {
        assert!(
            listed.contains(&name),
            "{file:?} names {} who is not in tests/fixtures/personal-names.txt",
            yichuang::privacy::mask_name(&name)
        );
    }
}

#[test]
fn logs_scan_prints_each_finding_masked_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("gateway")).unwrap();
    std::fs::write(
        dir.path().join("gateway/a.jsonl"),
        format!(
            "{{\"message\":\"case accepted\",\"case\":\"1164010001013301851000112001000201910210001\"}}\n{{\"collector\":\"马强\",\"id\":\"{ID}\"}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("adapter.log"),
        format!("WARN department refused: 电话{MOBILE}\n"),
    )
    .unwrap();
    let names = names_file();
    let out = scan_command(&[
        "--names",
        names.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let d = dir.path().display();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("{d}/adapter.log:1:28 mobile WARN department refused: 电话139****7788"),
            format!(
                "{d}/gateway/a.jsonl:2:15 name {{\"collector\":\"马*\",\"id\":\"6401**********001X\"}}"
            ),
            format!(
                "{d}/gateway/a.jsonl:2:25 resident-id {{\"collector\":\"马*\",\"id\":\"6401**********001X\"}}"
            ),
        ]
    );
    assert!(
        text(&out.stderr).contains("scanned 3 lines in 2 files (9 names listed): 3 unmasked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn logs_scan_passes_masked_logs_and_refuses_to_prove_anything_with_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    std::fs::write(
        &log,
        "collector 马* (6401**********001X), mobile 139****7788\n",
    )
    .unwrap();
    let out = scan_command(&[log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("scanned 1 lines in 1 files"));

    let empty = tempfile::tempdir().unwrap();
    let out = scan_command(&[empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("scanned 0 lines in 0 files"),
        "{}",
        text(&out.stderr)
    );

    let out = scan_command(&[dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read"));
}

/// The harness sends this process's log to the suite's log directory; what a gateway logs while
/// it accepts the example with its legal representative's ID and mobile number is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_test_process_logs_to_the_suite_directory_without_personal_data() {
    let mut gw = TestGateway::start(Backend::Sqlite).await;
    let mut s = example("kai-canguan");
    s.submission_id = format!("privacy-{}", uuid::Uuid::new_v4());
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(s),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(answer.outcome, Some(Outcome::Receipt(_))));
    gw.stop().await;
    let path = testkit::logfile::init_suite().expect("the harness installed the log");
    assert!(path.starts_with(testkit::logfile::suite_dir()));
    let log = std::fs::read_to_string(path).unwrap();
    assert!(log.lines().any(|l| l.contains("case accepted")), "{log}");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("one JSON object per line");
    }
    let names = names();
    let found = scan(&log, &names);
    assert!(found.is_empty(), "{found:#?}");
}

/// A clerk may type an ID or mobile number where a case number or submission id belongs; the
/// error names the field and echoes the value masked.
async fn errors_echo_what_was_typed_masked(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let mut messages = Vec::new();
    let e = gw
        .client
        .get_case(GetCaseRequest {
            case_number: ID.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(
        e.message().contains("caseNumber") && e.message().contains("6401**********001X"),
        "{}",
        e.message()
    );
    messages.push(e.message().to_string());
    let e = gw
        .client
        .watch_case(WatchCaseRequest {
            case_number: MOBILE.into(),
            cursor: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    messages.push(e.message().to_string());
    let e = gw
        .client
        .supplement(SupplementRequest {
            case_number: ID.into(),
            supplement_id: "s-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    messages.push(e.message().to_string());
    let e = gw
        .client
        .deliver(DeliverRequest {
            case_number: ID.into(),
            how: Some(How::Mail(Mail {
                carrier: "EMS".into(),
                tracking_number: "1190000000001".into(),
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    messages.push(e.message().to_string());

    // The same submission id with other content: the id is echoed masked.
    let mut s = example("kai-canguan");
    s.submission_id = format!("{MOBILE}-{}", uuid::Uuid::new_v4().simple());
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(s.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("accepted: {answer:?}")
    };
    let number = receipt.case_number;
    s.fields.insert("seats".into(), "120".into());
    let e = gw
        .client
        .submit(SubmitRequest {
            submission: Some(s),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(e.message().contains("submissionId"), "{}", e.message());
    messages.push(e.message().to_string());

    // A collector who is not entitled: named and identified, masked.
    let e = gw
        .client
        .deliver(DeliverRequest {
            case_number: number,
            how: Some(How::Pickup(Pickup {
                collector_name: "张三".into(),
                collector_id_type: IdType::ResidentId as i32,
                collector_id_number: OTHER_ID.into(),
                staff_no: "0342".into(),
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("张*") && e.message().contains("6401**********123X"),
        "{}",
        e.message()
    );
    messages.push(e.message().to_string());

    let names = names();
    for m in &messages {
        let found = scan(m, &names);
        assert!(found.is_empty(), "{m}: {found:#?}");
        assert!(!m.contains(ID) && !m.contains(MOBILE), "{m}");
    }
    // And the scanner would have found them.
    assert_eq!(
        scan(&format!("no case {ID} ({MOBILE})"), &[])
            .iter()
            .map(|f| f.kind)
            .collect::<Vec<_>>(),
        [Kind::ResidentId, Kind::Mobile]
    );
    gw.stop().await;
}

testkit::on_both_stores!(errors_echo_what_was_typed_masked);

/// The one-time notice goes back to the window and is kept in the attempt's audit record: the
/// deficient example's full-width ID number, spaced mobile number and the seller's ID number
/// that fails its check digit appear in it masked, and no name of a person.
async fn the_deficiency_notice_carries_nothing_unmasked(backend: Backend) {
    let mut gw = TestGateway::start(backend).await;
    let names = names();
    let pre = gw
        .client
        .pre_check(PreCheckRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Notice(notice)) = &answer.outcome else {
        panic!("not accepted: {answer:?}")
    };
    assert_eq!(notice.deficiencies.len(), 3);
    for text in [
        serde_json::to_string(&pre).unwrap(),
        serde_json::to_string(&answer).unwrap(),
    ] {
        let found = scan(&text, &names);
        assert!(found.is_empty(), "{found:#?}");
        assert!(!text.contains("640104198003150011"), "{text}");
        assert!(text.contains("6401**********0011"), "{text}");
    }
    gw.stop().await;
}

testkit::on_both_stores!(the_deficiency_notice_carries_nothing_unmasked);
