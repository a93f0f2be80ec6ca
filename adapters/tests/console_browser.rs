//! The operations console in a real browser: Debian's Chromium, headless, driven over the
//! DevTools protocol (testkit's `browser`), against a real gateway (TLS, SQLite), RabbitMQ, an
//! adapter and 市场监管's simulated system. An operator is refused without the role, signs in,
//! finds a case by its number and watches its timeline fill as the department answers, watches
//! the department's failure counter rise while its system answers 502, and replays the task
//! that died meanwhile, which then reaches the department exactly once. Each page is saved as
//! a screenshot under `target/console/` (docs/console.md shows them).

use std::sync::Arc;
use std::time::Duration;

use testkit::adapter::Adapter;
use testkit::broker::Broker;
use testkit::browser::{Browser, Page};
use testkit::console::{shots, token, url, with_tokens};
use testkit::example;
use yichuang::proto::v1::TaskStatus;
use yichuang_sim::http_json::{HttpJsonSim, Settings};

async fn submit(
    client: &mut yichuang::proto::v1::case_service_client::CaseServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
) -> String {
    let mut s = example("kai-canguan");
    s.submission_id = id.into();
    testkit::gateway::accept(client, s).await
}

async fn shot(page: &Page, name: &str) {
    page.screenshot(&shots().join(format!("{name}.png"))).await;
}

/// The number in `#dept-scjg`'s `data-<what>`.
fn figure(what: &str) -> String {
    format!("Number(document.querySelector('#dept-scjg')?.dataset.{what} ?? -1)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_follows_a_case_sees_a_department_fail_and_replays_its_dead_letter_once() {
    let bus = testkit::broker::bus();
    let harness = Broker::for_departments(&bus, &["scjg", "xf"]).await;
    let dir = tempfile::tempdir().unwrap();
    // 市场监管's system decides 4 s after a submission; it is taken down and brought back below.
    let (listener, endpoint) = testkit::server::listener().await;
    let sim = HttpJsonSim::new(Settings {
        behaviour: yichuang_sim::core::Behaviour {
            department: "scjg".into(),
            decision_delay_ms: 4000,
            reject: 0.0,
            supplement: 0.0,
            ..Default::default()
        },
        ..Default::default()
    });
    tokio::spawn(Arc::clone(&sim).serve(listener));
    let mut scjg = testkit::adapter::scjg(&dir, &endpoint);
    // Gives up after three calls: the task that meets the outage reaches the dead queue.
    scjg.retry.max_attempts = 3;
    // 消防 has no adapter here: its tasks wait in its queue.
    let adapter = Adapter::start(&bus, vec![scjg]).await;

    let mut config = testkit::gateway::with_bus(dir.path(), &bus);
    with_tokens(&mut config);
    config.console.adapters = vec![format!("http://{}/status", adapter.http)];
    config.console.refresh_secs = 1;
    config.console.trace_url = "https://tracing.example/trace/{trace_id}".into();
    let serving = testkit::gateway::TestGateway::serve(&config).await;
    let (gateway, mut client) = (serving.gateway.clone(), serving.client.clone());
    let console = |path: &str| url(gateway.admin_addr, path);

    let browser = Browser::launch().await;
    let page = browser.page().await;

    // Without the operator role: sent to sign in, and a window's token is refused there.
    assert_eq!(page.goto(&console("/console")).await, 200);
    assert_eq!(page.eval("location.pathname").await, "/console/login");
    page.fill("#login textarea[name=token]", &token("window"))
        .await;
    assert_eq!(
        page.submit("#login").await,
        401,
        "a window may not use the console"
    );
    assert!(
        page.text("#login-error").await.contains("admin.read"),
        "says which permission is missing"
    );
    shot(&page, "refused").await;
    page.fill("#login textarea[name=token]", &token("operator"))
        .await;
    assert_eq!(page.submit("#login").await, 200);
    assert_eq!(page.eval("location.pathname").await, "/console");
    assert!(page.text("#operator").await.contains("operator-zhang"));

    // A case found by its number; its timeline fills as 市场监管 answers, with no reload.
    let number = submit(&mut client, "console-1").await;
    assert_eq!(page.goto(&console("/console/cases")).await, 200);
    page.fill("#search input[name=q]", &number).await;
    assert_eq!(page.submit("#search").await, 200);
    assert_eq!(
        page.eval("location.pathname").await,
        format!("/console/cases/{number}").as_str()
    );
    page.eval("window.sameDocument = true").await;
    let approved = "document.querySelectorAll('#timeline tr[data-kind=\"task-approved\"]').length";
    assert_eq!(
        page.eval(approved).await,
        0,
        "not decided when the page opened"
    );
    page.wait_for(
        &format!("{approved} === 1 && window.sameDocument === true"),
        Duration::from_secs(60),
        "the timeline shows 市场监管's approval without a reload",
    )
    .await;
    assert!(
        page.eval("document.querySelector('#timeline a.trace').href")
            .await
            .as_str()
            .unwrap()
            .starts_with("https://tracing.example/trace/"),
        "trace ids link to the tracing UI"
    );
    shot(&page, "case").await;

    // 市场监管's system answers 502 to everything: the flows page counts the failures live.
    assert_eq!(page.goto(&console("/console")).await, 200);
    page.eval("window.sameDocument = true").await;
    let before = page.eval(&figure("failed")).await.as_i64().unwrap();
    assert!(before >= 0, "the row of 市场监管 is there");
    sim.sim.set_outage(true);
    let failing = submit(&mut client, "console-2").await;
    page.wait_for(
        &format!(
            "{} > {before} && window.sameDocument === true",
            figure("failed")
        ),
        Duration::from_secs(60),
        "市场监管's failure counter rises while its system answers 502",
    )
    .await;
    page.wait_for(
        &format!("{} >= 1", figure("dead")),
        Duration::from_secs(90),
        "the failing task reaches the dead queue after its three attempts",
    )
    .await;
    shot(&page, "flows").await;

    // The system is back; the operator replays the dead letter from the console.
    sim.sim.set_outage(false);
    assert_eq!(
        page.goto(&console("/console/dead-letters?department=scjg"))
            .await,
        200
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#letters tr.dead').length")
            .await,
        1
    );
    let (case, _) = gateway.store.get_case(&failing).await.unwrap().unwrap();
    let task_id = case
        .tasks
        .iter()
        .find(|t| t.department == "scjg")
        .unwrap()
        .task_id
        .clone();
    assert!(page.text("#letters").await.contains(&failing));
    shot(&page, "dead-letters").await;
    page.click("#letters tr.dead input[name=id]").await;
    page.fill("#dead-form input[name=rate]", "2").await;
    assert_eq!(page.click_and_wait_load("#replay-selected").await, 200);
    page.wait_for(
        "document.querySelector('#job')?.dataset.state === 'done'",
        Duration::from_secs(30),
        "the replay job finishes",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('#job').dataset.moved")
            .await,
        "1"
    );
    shot(&page, "replay").await;

    // It reaches 市场监管 once: one case of that serial in its system, decided, no duplicate.
    testkit::until(
        "the replayed task is approved",
        Duration::from_secs(60),
        || {
            let (gateway, failing) = (gateway.clone(), failing.clone());
            async move {
                let (case, _) = gateway.store.get_case(&failing).await.unwrap().unwrap();
                case.tasks
                    .iter()
                    .any(|t| t.department == "scjg" && t.status == TaskStatus::Approved as i32)
            }
        },
    )
    .await;
    let cases = sim
        .sim
        .cases()
        .into_iter()
        .filter(|c| c.serial == task_id)
        .count();
    assert_eq!(cases, 1, "one case of {task_id} in 市场监管's system");
    assert_eq!(sim.sim.stats().duplicates, 0);
    let actions = gateway.store.operator_actions(10).await.unwrap();
    assert!(
        actions.iter().any(|a| a.action == "dlq-replay"
            && a.operator == "operator-zhang"
            && a.message_ids.len() == 1),
        "{actions:?}"
    );

    // The deadlines board and a department's page, for the record.
    assert_eq!(page.goto(&console("/console/deadlines")).await, 200);
    shot(&page, "deadlines").await;
    assert_eq!(
        page.goto(&console("/console/departments/scjg?lang=en"))
            .await,
        200
    );
    assert!(page.text("h2").await.contains("Tasks of the latest cases"));
    shot(&page, "department-en").await;

    drop(page);
    drop(browser);
    serving.stop().await;
    adapter.task.abort();
    harness.remove().await;
}
