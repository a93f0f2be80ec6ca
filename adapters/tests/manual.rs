//! The manual re-entry kind on a real RabbitMQ: tasks wait on the worklist, the clerk sees them
//! with `yichuang-adapter manual list` (the real binary, personal data masked) and records
//! outcomes with `manual complete`, which reach the results queue once each; bad input is
//! refused with a specific error and exit code and changes nothing.

use testkit::tasks::task_ids as ids_of;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::adapter::{Adapter, department};
use testkit::broker::{Broker, bus};
use testkit::repo;
use testkit::tasks::{assert_one_outcome_each, task};
use yichuang::proto::v1::ResultKind;

/// A clerk's settings file: the shipped department files, the worklist from the environment.
struct Clerk {
    config: PathBuf,
    worklist: PathBuf,
}

impl Clerk {
    fn new(dir: &Path) -> Clerk {
        let config = dir.join("adapter.toml");
        std::fs::write(
            &config,
            format!(
                "departments_dir = {:?}\n",
                repo().join("config/departments").display().to_string()
            ),
        )
        .unwrap();
        Clerk {
            config,
            worklist: dir.join("gjj-worklist.db"),
        }
    }

    /// Runs `yichuang-adapter <args>`: exit code, stdout, stderr.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_yichuang-adapter"))
            .args(args)
            .env("GJJ_WORKLIST", &self.worklist)
            .env_remove("YICHUANG_ADAPTER_CONFIG")
            .output()
            .expect("the adapter binary runs");
        testkit::keep_stderr("adapter", &out);
        // The clerk's listing is masked by design: it is scanned with the logs.
        if args.first() == Some(&"manual") && args.get(1) == Some(&"list") {
            testkit::keep("manual-list", &out.stdout);
        }
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn manual(&self, action: &str, extra: &[&str]) -> (i32, String, String) {
        let config = self.config.display().to_string();
        let mut args = vec![
            "manual",
            action,
            "--config",
            config.as_str(),
            "--department",
            "gjj",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The pending tasks, as listed.
    fn list(&self) -> Vec<serde_json::Value> {
        let (code, out, err) = self.manual("list", &[]);
        assert_eq!(code, 0, "manual list: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// Waits until `n` tasks are listed.
    fn wait_listed(&self, n: usize, within: Duration) -> (Vec<serde_json::Value>, String) {
        let deadline = Instant::now() + within;
        loop {
            let (_, out, _) = self.manual("list", &[]);
            if out.lines().count() == n {
                return (self.list(), out);
            }
            assert!(
                Instant::now() < deadline,
                "{n} tasks listed within {within:?}: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn start(bus: &yichuang::config::BusConfig, clerk: &Clerk) -> Adapter {
    let mut c = department("gjj", "");
    c.options
        .insert("worklist".into(), clerk.worklist.display().to_string());
    Adapter::start(bus, vec![c]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerks_records_reach_the_results_queue_once_each() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["gjj"]).await;
    let dir = tempfile::tempdir().unwrap();
    let clerk = Clerk::new(dir.path());
    let adapter = start(&bus, &clerk).await;

    let tasks: Vec<_> = (0..20).map(|n| task("gjj", "GJJ-DJ", n)).collect();
    let ids = ids_of(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let (listed, raw) =
        tokio::task::block_in_place(|| clerk.wait_listed(20, Duration::from_secs(30)));
    let mut listed_ids: Vec<String> = listed
        .iter()
        .map(|l| l["task_id"].as_str().unwrap().to_string())
        .collect();
    listed_ids.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(listed_ids, sorted);
    assert_eq!(listed[0]["item_code"], "GJJ-DJ");
    assert!(listed[0]["fields"]["tyslbh"].as_str().unwrap().len() > 20);
    // Personal data never appears unmasked in the listing.
    for secret in [
        "马强",
        "64010419800315001X",
        "13909510000",
        "91640104MA76L8Q23H",
    ] {
        assert!(!raw.contains(secret), "{secret} unmasked in: {raw}");
    }
    assert_eq!(listed[0]["fields"]["lxdh"], "139****0000");

    // The clerk keys each case in and records what the centre's system said.
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    for (i, id) in ids.iter().enumerate() {
        let number = format!("GJJ2019{i:04}");
        let doc = format!("GJJDJ{i:04}");
        let mut args = vec!["--task", id, "--case-number", &number, "--clerk", "0342"];
        match i % 3 {
            0 => args.extend([
                "--outcome",
                "approved",
                "--document-number",
                &doc,
                "--document-name",
                "住房公积金单位登记证明",
            ]),
            1 => args.extend([
                "--outcome",
                "rejected",
                "--reason",
                "缴存基数低于最低标准",
                "--reason",
                "经办人未授权",
            ]),
            _ => args.extend([
                "--outcome",
                "supplement",
                "--material",
                "住房公积金单位缴存登记表",
                "--material",
                "授权委托书",
            ]),
        }
        let (code, out, err) = tokio::task::block_in_place(|| clerk.manual("complete", &args));
        assert_eq!(code, 0, "{id}: {err}");
        assert!(out.starts_with("recorded"), "{out}");
    }
    let results = harness.results_for(&ids, Duration::from_secs(60)).await;
    assert_one_outcome_each(&results, &ids);
    for (i, id) in ids.iter().enumerate() {
        let finals: Vec<_> = results[id].iter().filter(|g| g.is_final()).collect();
        assert_eq!(finals.len(), 1, "{id}: published once: {finals:#?}");
        let r = &finals[0].result;
        assert_eq!(r.department_case_number, format!("GJJ2019{i:04}"));
        let at = r.at.as_ref().unwrap();
        let hall = (chrono::DateTime::from_timestamp(at.seconds, 0).unwrap()
            + chrono::Duration::hours(8))
        .date_naive();
        assert_eq!(hall, today, "{id}: dated the day the clerk recorded");
        match i % 3 {
            0 => {
                assert_eq!(finals[0].kind(), ResultKind::Approved, "{id}");
                assert_eq!(r.documents[0].number, format!("GJJDJ{i:04}"));
                assert_eq!(r.documents[0].name, "住房公积金单位登记证明");
            }
            1 => {
                assert_eq!(finals[0].kind(), ResultKind::Rejected, "{id}");
                assert_eq!(r.reasons, ["缴存基数低于最低标准", "经办人未授权"]);
            }
            _ => {
                assert_eq!(finals[0].kind(), ResultKind::Supplement, "{id}");
                assert_eq!(r.materials, ["住房公积金单位缴存登记表", "授权委托书"]);
            }
        }
        // It waited for the clerk first: the step the window saw.
        assert!(
            results[id]
                .iter()
                .any(|g| g.kind() == ResultKind::Progress && g.result.step == "待录入"),
            "{id}"
        );
    }
    tokio::task::block_in_place(|| {
        assert!(clerk.list().is_empty(), "nothing left pending");
        // The same record again changes nothing and says so.
        let number = "GJJ20190000".to_string();
        let (code, out, err) = clerk.manual(
            "complete",
            &[
                "--task",
                &ids[0],
                "--case-number",
                &number,
                "--outcome",
                "approved",
                "--document-number",
                "GJJDJ0000",
                "--document-name",
                "住房公积金单位登记证明",
            ],
        );
        assert_eq!(
            (code, out.starts_with("already recorded")),
            (0, true),
            "{out}{err}"
        );
    });
    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_complete_is_refused_specifically_and_changes_nothing() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["gjj"]).await;
    let dir = tempfile::tempdir().unwrap();
    let clerk = Clerk::new(dir.path());
    let adapter = start(&bus, &clerk).await;
    let t = task("gjj", "GJJ-DJ", 7);
    let id = t.task.as_ref().unwrap().task_id.clone();
    harness.publish(&t).await;
    tokio::task::block_in_place(|| clerk.wait_listed(1, Duration::from_secs(30)));

    let config = clerk.config.display().to_string();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "--task",
                "NOPE-01",
                "--case-number",
                "G1",
                "--outcome",
                "approved",
            ],
            4,
            "task NOPE-01 is not on the worklist",
        ),
        (
            vec!["--task", &id, "--case-number", "G1", "--outcome", "maybe"],
            2,
            "invalid value 'maybe'",
        ),
        (
            vec![
                "--task",
                &id,
                "--case-number",
                "G1",
                "--outcome",
                "rejected",
            ],
            2,
            "a rejection needs at least one --reason",
        ),
        (
            vec![
                "--task",
                &id,
                "--case-number",
                "G1",
                "--outcome",
                "supplement",
            ],
            2,
            "needs at least one --material",
        ),
        (
            vec![
                "--task",
                &id,
                "--case-number",
                "G1",
                "--outcome",
                "approved",
                "--reason",
                "x",
            ],
            2,
            "--reason and --material go with rejected and supplement",
        ),
        (
            vec![
                "--task",
                &id,
                "--case-number",
                "G1",
                "--outcome",
                "approved",
                "--document-number",
                "D1",
            ],
            2,
            "both --document-number and --document-name",
        ),
        (
            vec!["--task", &id, "--case-number", " ", "--outcome", "approved"],
            2,
            "--case-number is empty",
        ),
        (
            vec!["--task", &id, "--outcome", "approved"],
            2,
            "--case-number",
        ),
    ];
    tokio::task::block_in_place(|| {
        for (args, code, says) in &cases {
            let (got, out, err) = clerk.manual("complete", args);
            assert_eq!(got, *code, "{args:?}: {out}{err}");
            assert!(err.contains(says), "{args:?}: {err:?} should say {says:?}");
            let pending = clerk.list();
            assert_eq!(pending.len(), 1, "{args:?} changed nothing");
            assert_eq!(pending[0]["task_id"], id.as_str());
        }
        // A department that is not manual has no worklist.
        let (got, _, err) = clerk.run(&[
            "manual",
            "list",
            "--config",
            &config,
            "--department",
            "scjg",
        ]);
        assert_eq!(got, 2, "{err}");
        assert!(err.contains("not manual"), "{err}");
    });

    // The proper record goes through, once.
    let (code, _, err) = tokio::task::block_in_place(|| {
        clerk.manual(
            "complete",
            &[
                "--task",
                &id,
                "--case-number",
                "GJJ7",
                "--outcome",
                "rejected",
                "--reason",
                "单位已注销",
            ],
        )
    });
    assert_eq!(code, 0, "{err}");
    let results = harness
        .results_for(std::slice::from_ref(&id), Duration::from_secs(30))
        .await;
    assert_one_outcome_each(&results, std::slice::from_ref(&id));
    let outcome = results[&id].iter().find(|g| g.is_final()).unwrap();
    assert_eq!(outcome.kind(), ResultKind::Rejected);
    assert_eq!(outcome.result.reasons, ["单位已注销"]);

    // A different record afterwards is refused and the recorded one stands.
    let (code, _, err) = tokio::task::block_in_place(|| {
        clerk.manual(
            "complete",
            &[
                "--task",
                &id,
                "--case-number",
                "GJJ8",
                "--outcome",
                "approved",
            ],
        )
    });
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("already completed as rejected with case number GJJ7"),
        "{err}"
    );
    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplement_puts_the_task_back_on_the_worklist_for_its_round() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["gjj"]).await;
    let dir = tempfile::tempdir().unwrap();
    let clerk = Clerk::new(dir.path());
    let adapter = start(&bus, &clerk).await;
    let t = task("gjj", "GJJ-DJ", 3);
    let id = t.task.as_ref().unwrap().task_id.clone();
    harness.publish(&t).await;
    tokio::task::block_in_place(|| clerk.wait_listed(1, Duration::from_secs(30)));

    // The centre asks for a supplement.
    let asked_for = [
        "--task",
        &id,
        "--case-number",
        "GJJ2019S1",
        "--outcome",
        "supplement",
        "--material",
        testkit::tasks::REQUESTED[0],
        "--material",
        testkit::tasks::REQUESTED[1],
    ];
    let (code, _, err) = tokio::task::block_in_place(|| clerk.manual("complete", &asked_for));
    assert_eq!(code, 0, "{err}");
    let first = harness
        .results_until(Duration::from_secs(30), Duration::from_millis(300), |g| {
            g.kind() == ResultKind::Supplement
        })
        .await;
    let asked = first
        .iter()
        .find(|g| g.kind() == ResultKind::Supplement)
        .unwrap();
    assert_eq!(asked.result.materials, testkit::tasks::REQUESTED);

    // The gateway resumes the task (a copy comes too): it is back on the worklist, once, with
    // its round and what was handed in.
    let again = testkit::tasks::resumed(&t, "GJJ2019S1", &asked.result.materials);
    harness.publish(&again).await;
    harness.publish(&again).await;
    let (listed, _) = tokio::task::block_in_place(|| clerk.wait_listed(1, Duration::from_secs(30)));
    assert_eq!(listed[0]["task_id"], id.as_str());
    assert_eq!(listed[0]["round"], 1);
    let handed_in = &listed[0]["supplement"];
    assert_eq!(handed_in["requested"][1], testkit::tasks::REQUESTED[1]);
    assert_eq!(
        handed_in["materials"][0]["name"],
        testkit::tasks::REQUESTED[0]
    );
    assert_eq!(handed_in["materials"][1]["code"], "ZSZM");
    assert_eq!(
        handed_in["materials"][1]["uri"],
        "s3://yichuang-materials/2019/10/28/zszm-8.pdf"
    );

    // It waits for the clerk again, in its round.
    let waiting = format!("{id}:progress:待录入:s1");
    let mut second = harness
        .results_until(Duration::from_secs(30), Duration::ZERO, |g| {
            g.message_id == waiting
        })
        .await;

    tokio::task::block_in_place(|| {
        // Without the round, the clerk is told to name it; the round-0 command again records
        // nothing new; a round that is not the task's is refused.
        let approve = [
            "--task",
            &id,
            "--case-number",
            "GJJ2019S1",
            "--outcome",
            "approved",
            "--document-number",
            "GJJDJS1",
            "--document-name",
            "住房公积金单位登记证明",
        ];
        let (code, _, err) = clerk.manual("complete", &approve);
        assert_eq!(code, 6, "{err}");
        assert!(err.contains("--round 1"), "{err}");
        let mut old = asked_for.to_vec();
        old.extend(["--round", "0"]);
        let (code, out, err) = clerk.manual("complete", &old);
        assert_eq!(
            (code, out.starts_with("already recorded")),
            (0, true),
            "{out}{err}"
        );
        let mut wrong = approve.to_vec();
        wrong.extend(["--round", "2"]);
        let (code, _, err) = clerk.manual("complete", &wrong);
        assert_eq!(code, 6, "{err}");
        assert_eq!(clerk.list().len(), 1, "nothing recorded for round 1 yet");
        let mut right = approve.to_vec();
        right.extend(["--round", "1"]);
        let (code, out, err) = clerk.manual("complete", &right);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("recorded"), "{out}");
    });
    second.extend(
        harness
            .results_until(Duration::from_secs(30), Duration::from_millis(1500), |g| {
                g.result.round == 1 && g.is_final()
            })
            .await,
    );
    let approved = testkit::conformance::assert_supplement_round_trip(&id, &first, &second);
    assert_eq!(approved.result.documents[0].number, "GJJDJS1");
    tokio::task::block_in_place(|| assert!(clerk.list().is_empty()));
    adapter.task.abort();
    harness.remove().await;
}

#[test]
fn the_run_command_is_the_default_and_checks_settings() {
    let dir = tempfile::tempdir().unwrap();
    let clerk = Clerk::new(dir.path());
    let config = clerk.config.display().to_string();
    for args in [
        vec![
            "--config",
            config.as_str(),
            "--department",
            "gjj",
            "--check",
        ],
        vec![
            "run",
            "--config",
            config.as_str(),
            "--department",
            "gjj",
            "--check",
        ],
    ] {
        let (code, out, err) = clerk.run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("ok: 1 department(s)"), "{out}");
    }
    let (code, _, err) = clerk.run(&["--config", config.as_str(), "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--department"), "{err}");
}
