//! The results consumer on a real RabbitMQ: results published as a department's adapter does
//! move the case through its state machine; duplicates and stale progress change nothing; a
//! result sent by another department's broker user is refused and kept in the results dead
//! queue, and so is a result for a department no user is listed for.

use std::process::Command;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::ConfirmSelectOptions;
use prost::Message;
use testkit::broker::{Broker, amqp_url};
use testkit::example;
use testkit::gateway::Backend;
use yichuang::proto::v1::{
    CaseStatus, GetCaseRequest, ResultDocument, ResultKind, ResultMessage, SubmitRequest,
    TaskStatus, submit_response::Outcome,
};

/// A broker user of the department's own, as deployments give each adapter.
const USER: &str = "yichuang-test-scjg";

fn ensure_user() {
    // Idempotent: an existing user only gets its password and permissions set again.
    let _ = Command::new("rabbitmqctl")
        .args(["-q", "add_user", USER, "secret"])
        .output();
    let ok = Command::new("rabbitmqctl")
        .args(["-q", "change_password", USER, "secret"])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("rabbitmqctl")
            .args(["-q", "set_permissions", "-p", "/", USER, ".*", ".*", ".*"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "rabbitmqctl creates the test user");
}

fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:secret@{host}")
}

/// Publishes a result as an adapter connected with `url` does.
async fn publish(url: &str, prefix: &str, r: &ResultMessage) {
    let config = yichuang::config::BusConfig {
        url: url.to_string(),
        prefix: prefix.to_string(),
        ..Default::default()
    };
    let connection = yichuang::bus::connect(&config).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let kind =
        ResultKind::try_from(r.kind).unwrap().as_str_name()["RESULT_KIND_".len()..].to_lowercase();
    let confirm = channel
        .basic_publish(
            yichuang::bus::Names::new(prefix)
                .results_exchange()
                .as_str()
                .into(),
            format!("{}.{kind}", r.department).as_str().into(),
            Default::default(),
            &r.encode_to_vec(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(format!("{}:{kind}", r.task_id).into())
                .with_user_id(yichuang::bus::user(url).into()),
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());
    let _ = connection.close(200, "done".into()).await;
}

async fn case_until(
    gw: &mut testkit::gateway::TestGateway,
    number: &str,
    what: &str,
    done: impl Fn(&yichuang::proto::v1::Case) -> bool,
) -> yichuang::proto::v1::Case {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let case = gw
            .client
            .get_case(GetCaseRequest {
                case_number: number.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .case
            .unwrap();
        if done(&case) {
            return case;
        }
        assert!(Instant::now() < deadline, "{what}: {case:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_results_move_the_case_and_forged_ones_are_refused() {
    ensure_user();
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.bus.url = url.clone();
    config.bus.prefix = testkit::broker::prefix();
    config.bus.relay = true;
    config.bus.timeout_secs = 5;
    config
        .bus
        .department_users
        .insert("scjg".into(), USER.into());
    // 消防's results come from the guest user here.
    config
        .bus
        .department_users
        .insert("xf".into(), yichuang::bus::user(&url));
    let bus = config.bus.clone();
    let mut gw = testkit::gateway::TestGateway::start_with(config, dir).await;
    let broker = Broker::open(&bus).await;

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
    let sp_jy = receipt
        .items
        .iter()
        .find(|i| i.item_code == "SP-JY")
        .unwrap()
        .task_id
        .clone();
    let number = receipt.case_number.clone();
    case_until(&mut gw, &number, "dispatched", |c| {
        c.tasks
            .iter()
            .all(|t| t.status == TaskStatus::Dispatched as i32)
    })
    .await;

    let scjg = as_user(&url, USER);
    let result = |kind: ResultKind| ResultMessage {
        task_id: sp_jy.clone(),
        case_number: number.clone(),
        department: "scjg".into(),
        kind: kind as i32,
        department_case_number: "SCJG20191021000001".into(),
        ..Default::default()
    };
    // Sent by the guest user, not scjg's: refused, and kept in the results dead queue.
    publish(&url, &bus.prefix, &result(ResultKind::Accepted)).await;
    let names = yichuang::bus::Names::new(&bus.prefix);
    let dead = broker
        .next_on(&names.dead_queue("results"), Duration::from_secs(20))
        .await
        .expect("the forged result is dead-lettered");
    assert_eq!(
        ResultMessage::decode(dead.delivery.data.as_slice())
            .unwrap()
            .task_id,
        sp_jy
    );

    // From scjg's own user, but for 公积金 (gjj), which has no user in [bus.department_users]:
    // refused too (the check fails closed), and kept in the results dead queue.
    publish(
        &scjg,
        &bus.prefix,
        &ResultMessage {
            department: "gjj".into(),
            ..result(ResultKind::Approved)
        },
    )
    .await;
    let unlisted = broker
        .next_on(&names.dead_queue("results"), Duration::from_secs(20))
        .await
        .expect("the result for an unlisted department is dead-lettered");
    let reason = testkit::broker::text_header(&unlisted, yichuang::bus::headers::REASON);
    assert!(
        reason.contains("names no user for gjj") && reason.contains(USER),
        "dead-lettered with the reason: {reason}"
    );
    let unlisted = ResultMessage::decode(unlisted.delivery.data.as_slice()).unwrap();
    assert_eq!(
        (unlisted.department.as_str(), unlisted.kind),
        ("gjj", ResultKind::Approved as i32)
    );

    // Accepted, a step, the same step again, approval, then a stale step: from scjg's user.
    publish(&scjg, &bus.prefix, &result(ResultKind::Accepted)).await;
    let step = |s: &str| ResultMessage {
        step: s.into(),
        ..result(ResultKind::Progress)
    };
    publish(&scjg, &bus.prefix, &step("审核")).await;
    publish(&scjg, &bus.prefix, &step("审核")).await;
    publish(
        &scjg,
        &bus.prefix,
        &ResultMessage {
            documents: vec![ResultDocument {
                material_code: "SPJYXKZ".into(),
                name: "食品经营许可证".into(),
                number: "JY16401040012345".into(),
                file: None,
            }],
            ..result(ResultKind::Approved)
        },
    )
    .await;
    publish(&scjg, &bus.prefix, &step("承办")).await;
    // Results are handled in queue order: once this later one (xf's, sent by its user here)
    // is recorded, everything before it has been handled.
    let xf_jc = receipt
        .items
        .iter()
        .find(|i| i.item_code == "XF-JC")
        .unwrap()
        .task_id
        .clone();
    publish(
        &url,
        &bus.prefix,
        &ResultMessage {
            task_id: xf_jc.clone(),
            department: "xf".into(),
            ..result(ResultKind::Accepted)
        },
    )
    .await;
    let case = case_until(&mut gw, &number, "every result handled", |c| {
        c.tasks
            .iter()
            .any(|t| t.task_id == xf_jc && t.status == TaskStatus::AcceptedByDepartment as i32)
    })
    .await;
    assert!(
        case.tasks
            .iter()
            .any(|t| t.task_id == sp_jy && t.status == TaskStatus::Approved as i32),
        "SP-JY approved: {case:#?}"
    );
    let task = case.tasks.iter().find(|t| t.task_id == sp_jy).unwrap();
    assert_eq!(task.department_case_number, "SCJG20191021000001");
    assert_eq!(
        task.step, "审核",
        "the stale step after the decision changed nothing"
    );
    assert_eq!(task.results[0].number, "JY16401040012345");
    assert_eq!(
        case.status,
        CaseStatus::InProgress as i32,
        "XF-JC is still open"
    );
    let history = gw
        .client
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let kinds: Vec<&str> = history
        .iter()
        .filter(|e| e.task_id == sp_jy)
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "task-ready",
            "task-dispatched",
            "task-accepted-by-department",
            "task-progress",
            "task-approved"
        ],
        "each result once, in order"
    );
    broker.remove().await;
    gw.stop().await;
}

/// A result the store can never apply (its case record is unreadable) is dead-lettered at once,
/// with the results behind it applied: one poison result does not stall the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_result_is_dead_lettered_without_stalling_the_consumer() {
    let url = amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("yichuang.db");
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.bus.url = url.clone();
    config.bus.prefix = testkit::broker::prefix();
    config.bus.relay = true;
    config.bus.timeout_secs = 5;
    let bus = config.bus.clone();
    let mut gw = testkit::gateway::TestGateway::start_with(config, dir).await;
    let broker = Broker::open(&bus).await;

    let mut numbers = Vec::new();
    let mut sp_jy = Vec::new();
    for id in ["poison-a", "poison-b"] {
        let mut s = example("kai-canguan");
        s.submission_id = id.into();
        let answer = gw
            .client
            .submit(SubmitRequest {
                submission: Some(s),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(Outcome::Receipt(receipt)) = answer.outcome else {
            panic!("accepted")
        };
        sp_jy.push(
            receipt
                .items
                .iter()
                .find(|i| i.item_code == "SP-JY")
                .unwrap()
                .task_id
                .clone(),
        );
        numbers.push(receipt.case_number);
    }
    for n in &numbers {
        case_until(&mut gw, n, "dispatched", |c| {
            c.tasks
                .iter()
                .all(|t| t.status == TaskStatus::Dispatched as i32)
        })
        .await;
    }
    // Case A's record becomes unreadable (a disk fault, a bad migration).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute(
        "UPDATE cases SET body = x'00ff' WHERE case_number = ?1",
        [&numbers[0]],
    )
    .unwrap();
    drop(conn);

    let accepted = |i: usize| ResultMessage {
        task_id: sp_jy[i].clone(),
        case_number: numbers[i].clone(),
        department: "scjg".into(),
        kind: ResultKind::Accepted as i32,
        department_case_number: format!("SCJG2019102100000{i}"),
        ..Default::default()
    };
    publish(&url, &bus.prefix, &accepted(0)).await;
    publish(&url, &bus.prefix, &accepted(1)).await;

    // B's result, behind the poison one, is applied …
    case_until(
        &mut gw,
        &numbers[1],
        "B accepted behind the poison result",
        |c| {
            c.tasks
                .iter()
                .any(|t| t.status == TaskStatus::AcceptedByDepartment as i32)
        },
    )
    .await;
    // … and A's is in the results dead queue.
    let names = yichuang::bus::Names::new(&bus.prefix);
    let dead = broker
        .next_on(&names.dead_queue("results"), Duration::from_secs(20))
        .await
        .expect("the poison result is dead-lettered");
    assert_eq!(
        ResultMessage::decode(dead.delivery.data.as_slice())
            .unwrap()
            .task_id,
        sp_jy[0]
    );
    broker.remove().await;
    gw.stop().await;
}
