//! The console's weight and speed in a real browser (headless Chromium, testkit's `browser`)
//! with 10,000 cases in the store: every page under 200 KB, its first render within a second.
//! The cases are dispatched to RabbitMQ (no adapter takes them) and their 2019 deadlines passed
//! long ago, so the flows count dispatches and the deadlines board is full of red: the heavy
//! case, not the empty one. The operator's flows in a browser are
//! adapters/tests/console_browser.rs.

use std::time::{Duration, Instant};

use testkit::broker::Broker;
use testkit::browser::Browser;
use testkit::console::{shots, token, url, with_tokens};

const CASES: usize = 10_000;
const MAX_BYTES: u64 = 200 * 1024;
const MAX_FIRST_RENDER_MS: f64 = 1000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_under_200_kb_and_renders_within_a_second_with_ten_thousand_cases() {
    let bus = yichuang::config::BusConfig {
        url: testkit::broker::amqp_url(),
        prefix: testkit::broker::prefix(),
        relay: true,
        timeout_secs: 5,
        ..Default::default()
    };
    let harness = Broker::open(&bus).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(testkit::gateway::Backend::Sqlite, dir.path());
    config.bus = bus.clone();
    config.sla.sweep_secs = 1;
    with_tokens(&mut config);
    let gw = testkit::gateway::TestGateway::serve(&config).await;

    // 10,000 cases, eight windows at once; a day's numbers are 9,999 an item, so they are
    // spread over the week they were handed in.
    let started = Instant::now();
    let mut sending = tokio::task::JoinSet::new();
    for w in 0..8 {
        let mut client = gw.client.clone();
        sending.spawn(async move {
            let mut last = String::new();
            for i in (w..CASES).step_by(8) {
                let mut s = testkit::example("kai-canguan");
                s.submission_id = format!("console-load-{i}");
                if let Some(at) = s.submitted_at.as_mut() {
                    at.seconds += (i / 2000) as i64 * 86_400;
                }
                last = testkit::gateway::accept(&mut client, s).await;
            }
            last
        });
    }
    let mut numbers = Vec::new();
    while let Some(n) = sending.join_next().await {
        numbers.push(n.unwrap());
    }
    assert_eq!(gw.gateway.store.case_count().await.unwrap(), CASES as i64);
    eprintln!(
        "{CASES} cases accepted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Dispatched (the flows count them) and their clocks run (the board is red).
    testkit::until("every task is dispatched", Duration::from_secs(300), || {
        let g = gw.gateway.clone();
        async move { g.store.outbox_backlog().await.unwrap() == 0 }
    })
    .await;
    testkit::until(
        "the legal clock has turned tasks red",
        Duration::from_secs(120),
        || {
            let g = gw.gateway.clone();
            async move {
                let now = g.clocks.now().timestamp_millis();
                !g.store.deadline_board(now, 1).await.unwrap().is_empty()
            }
        },
    )
    .await;

    let browser = Browser::launch().await;
    let page = browser.page().await;
    page.set_extra_headers(&[("authorization", &format!("Bearer {}", token("operator")))])
        .await;
    let pages = [
        ("flows", "/console".to_string()),
        ("department", "/console/departments/scjg".to_string()),
        ("search", "/console/cases".to_string()),
        ("case-10000", format!("/console/cases/{}", numbers[0])),
        ("deadlines-10000", "/console/deadlines".to_string()),
        (
            "dead-letters-10000",
            "/console/dead-letters?department=scjg".to_string(),
        ),
    ];
    let mut report = Vec::new();
    for (name, path) in &pages {
        assert_eq!(page.goto(&url(gw.admin_addr, path)).await, 200, "{path}");
        let t = page.timing().await;
        page.screenshot(&shots().join(format!("{name}.png"))).await;
        report.push(format!(
            "{path}: {:.1} KB, first render {:.0} ms",
            t.bytes as f64 / 1024.0,
            t.first_render_ms
        ));
        assert!(
            t.bytes > 0 && t.bytes < MAX_BYTES,
            "{path} weighs {} bytes",
            t.bytes
        );
        assert!(
            t.first_render_ms > 0.0 && t.first_render_ms < MAX_FIRST_RENDER_MS,
            "{path} first rendered after {:.0} ms",
            t.first_render_ms
        );
    }
    assert_eq!(
        page.goto(&url(gw.admin_addr, "/console/deadlines")).await,
        200
    );
    assert!(
        page.eval("[...document.querySelectorAll('#deadline-summary td.red')].reduce((n, td) => n + Number(td.textContent), 0)")
            .await
            .as_u64()
            > Some(0),
        "the board counts red tasks"
    );
    eprintln!("{}", report.join("\n"));
    std::fs::write(shots().join("timings.txt"), report.join("\n") + "\n").unwrap();

    drop(page);
    drop(browser);
    gw.stop().await;
    harness.remove().await;
}
