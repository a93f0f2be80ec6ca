//! Tasks as the gateway's relay publishes them to the departments (a first delivery, and one
//! resumed after a supplement), and what every task's results must show.

use std::collections::{HashMap, HashSet};

use yichuang::proto::v1::{
    FileRef, Material, MaterialForm, ResultKind, Submission, SupplementDelivery, Task, TaskMessage,
    TaskStatus,
};

use crate::broker::{Got, amqp_url};

/// A task message as the gateway's relay sends it: item `item` of department `department`,
/// for the kai-canguan applicant, task id `<case>-NN`.
pub fn task(department: &str, item: &str, n: usize) -> TaskMessage {
    let submission: Submission = crate::example("kai-canguan");
    let case_number = format!("1164010001013301854{:012}{:010}", 0, n);
    TaskMessage {
        task: Some(Task {
            task_id: format!("{case_number}-01"),
            item_code: item.into(),
            item_name: format!("{item} 事项"),
            department: department.into(),
            implementation_code: "11640100010133018540011A000012".into(),
            status: TaskStatus::Dispatched as i32,
            ..Default::default()
        }),
        case_number,
        accepted_at: Some(pbjson_types::Timestamp {
            seconds: 1_571_625_000,
            nanos: 0,
        }),
        hall_code: submission.hall_code.clone(),
        window_code: submission.window_code.clone(),
        submission: Some(submission),
        prerequisites: Vec::new(),
        supplement: None,
    }
}

/// What the simulators ask for in a supplement request: exact names of the catalog's PMT and
/// ZSZM, in the order they give them.
pub const REQUESTED: [&str; 2] = ["经营场所平面图及设备布局图", "住所（经营场所）使用证明"];

/// The task message the gateway publishes when `task` resumes after its first supplement: the
/// department's case number from `ACCEPTED`, `supplement_round = 1`, and the supplement — the
/// floor plan the applicant brought at intake and the lease handed in now, for `requested`.
pub fn resumed(
    task: &TaskMessage,
    department_case_number: &str,
    requested: &[String],
) -> TaskMessage {
    let mut m = task.clone();
    let lease = Material {
        material_code: "ZSZM".into(),
        form: MaterialForm::Electronic as i32,
        copies: 1,
        file: Some(FileRef {
            uri: "s3://yichuang-materials/2019/10/28/zszm-8.pdf".into(),
            sha256: "9f".repeat(32),
            size_bytes: 48_213,
            media_type: "application/pdf".into(),
        }),
    };
    let submission = m.submission.as_mut().expect("a submission");
    submission.materials.push(lease);
    let materials: Vec<Material> = ["PMT", "ZSZM"]
        .iter()
        .map(|code| {
            submission
                .materials
                .iter()
                .find(|x| x.material_code == *code)
                .expect("the material in the submission")
                .clone()
        })
        .collect();
    let t = m.task.as_mut().unwrap();
    t.department_case_number = department_case_number.to_string();
    t.supplement_round = 1;
    t.materials_requested = requested.to_vec();
    t.status = TaskStatus::Dispatched as i32;
    m.supplement = Some(SupplementDelivery {
        round: 1,
        materials,
        requested: requested.to_vec(),
    });
    m
}

/// The task ids of task messages.
pub fn task_ids(tasks: &[TaskMessage]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t.task.as_ref().unwrap().task_id.clone())
        .collect()
}

/// Checks the results of tasks: each has exactly one final outcome (copies share one
/// `message_id`), an `ACCEPTED` before it unless the department refused the task, and the
/// department's case number on its outcome.
pub fn assert_one_outcome_each(results: &HashMap<String, Vec<Got>>, task_ids: &[String]) {
    assert_one_outcome_each_from(results, task_ids, &yichuang::bus::user(&amqp_url()))
}

/// [`assert_one_outcome_each`], the results published by the RabbitMQ user `user`.
pub fn assert_one_outcome_each_from(
    results: &HashMap<String, Vec<Got>>,
    task_ids: &[String],
    user: &str,
) {
    for id in task_ids {
        let got = &results[id];
        let finals: HashSet<&str> = got
            .iter()
            .filter(|g| g.is_final())
            .map(|g| g.message_id.as_str())
            .collect();
        assert_eq!(finals.len(), 1, "{id}: one outcome, got {got:#?}");
        let outcome = got.iter().find(|g| g.is_final()).unwrap();
        assert_eq!(
            outcome.user_id, user,
            "{id}: results carry the adapter's validated RabbitMQ user"
        );
        if outcome.kind() != ResultKind::Failed {
            assert!(
                got.iter().any(|g| g.kind() == ResultKind::Accepted),
                "{id}: accepted first: {got:#?}"
            );
            assert!(
                !outcome.result.department_case_number.is_empty(),
                "{id}: the department's case number: {outcome:#?}"
            );
        }
    }
}
