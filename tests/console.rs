//! The operations console over HTTP, as a browser reaches it on the internal listener (real TLS,
//! HTTP/2): who may see it (an operator by certificate, token or signed-in cookie; a window
//! never), the headers every page carries, forms from another site refused, the exact search,
//! and one field of personal data unmasked only with its permission, each time recorded. The
//! pages in a real browser are tests/console_browser.rs.

use testkit::console::{token, with_tokens};
use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use testkit::pki::Who;
use yichuang::proto::v1::AccessLogRequest;

/// A gateway taking client certificates and the kit's tokens, with a `supervisor` role that may
/// also unmask, and trace ids linked to a tracing UI.
async fn gateway(backend: Backend) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(backend, dir.path());
    with_tokens(&mut config);
    config.console.trace_url = "https://tracing.example/trace/{trace_id}".into();
    TestGateway::start_with(config, dir).await
}

/// An HTTPS client trusting the kit's CA, presenting `who`'s certificate if given, following no
/// redirects (the tests look at them).
fn browser(who: Option<&Who>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(testkit::pki::ca_pem().as_bytes()).unwrap(),
        )
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(who) = who {
        let (cert, key) = testkit::pki::client_files(who);
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

fn url(gw: &TestGateway, path: &str) -> String {
    testkit::console::url(gw.admin_addr, path)
}

/// The `Origin` a browser sends with the console's own forms.
fn origin(gw: &TestGateway) -> String {
    url(gw, "")
}

async fn accepted(gw: &mut TestGateway) -> (String, yichuang::proto::v1::Submission) {
    let submission = example("kai-canguan");
    let number = testkit::gateway::accept(&mut gw.client, submission.clone()).await;
    (number, submission)
}

async fn access_log(gw: &TestGateway, caller: &str) -> Vec<yichuang::proto::v1::AccessRecord> {
    testkit::gateway::admin(gw.admin_addr)
        .await
        .access_log(AccessLogRequest {
            caller: caller.into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records
}

#[tokio::test]
async fn only_operators_see_the_console_and_every_page_carries_the_security_headers() {
    let gw = gateway(Backend::Sqlite).await;

    // No identity: sent to sign in, and back to the page asked for afterwards.
    let r = browser(None)
        .get(url(&gw, "/console/deadlines"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console/login?next=%2Fconsole%2Fdeadlines"
    );

    // A window's certificate: refused with a page saying why, and recorded.
    let window = Who::examples_hall();
    let r = browser(Some(&window))
        .get(url(&gw, "/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("admin.read"), "{page}");
    let refused = access_log(&gw, "hall-640100-DT01").await;
    assert!(
        refused.iter().any(|r| r.outcome == "refused"
            && r.method == "Console/page"
            && r.target == "/console"),
        "{refused:?}"
    );

    // An operator's certificate: the flows, every department of the acceptance list, and the
    // headers.
    let r = browser(Some(&Who::Operator))
        .get(url(&gw, "/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let h = r.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    for code in gw.gateway.intake.catalog().departments.keys() {
        assert!(
            page.contains(&format!("id=\"dept-{code}\"")),
            "{code} missing"
        );
    }
    // The script and the stylesheet are the console's own, cacheable.
    let js = browser(Some(&Who::Operator))
        .get(url(&gw, "/console/assets/console.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    gw.stop().await;
}

/// A role limited to one hall cannot use the console (it shows every hall), and the windows'
/// listener does not serve it: there `/console` is a path like any other, which needs an
/// identity.
#[tokio::test]
async fn a_hall_limited_role_is_refused_and_the_windows_listener_serves_no_console() {
    let gw = gateway(Backend::Sqlite).await;
    let r = browser(None)
        .get(url(&gw, "/console"))
        .header(
            "authorization",
            format!("Bearer {}", token("hall-operator")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("every hall"));
    let windows = browser(None)
        .get(format!("https://localhost:{}/console", gw.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        windows
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("16"),
        "UNAUTHENTICATED, as any path of that listener"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_operator_signs_in_with_a_token_into_a_strict_cookie_and_a_bad_token_is_refused() {
    let gw = gateway(Backend::Sqlite).await;
    let anonymous = browser(None);
    let bad = anonymous
        .post(url(&gw, "/console/login"))
        .header("origin", origin(&gw))
        .form(&[("token", "not-a-token"), ("next", "/console")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().get("set-cookie").is_none());

    // A token of a role without admin.read is no way in either.
    let window = anonymous
        .post(url(&gw, "/console/login"))
        .header("origin", origin(&gw))
        .form(&[("token", token("window").as_str()), ("next", "/console")])
        .send()
        .await
        .unwrap();
    assert_eq!(window.status(), 401);

    let r = anonymous
        .post(url(&gw, "/console/login"))
        .header("origin", origin(&gw))
        .form(&[
            ("token", token("operator").as_str()),
            ("next", "https://elsewhere.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console",
        "never sent to another site"
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in ["Path=/console", "HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = anonymous
        .get(url(&gw, "/console"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("operator-zhang"));

    // A sign-in whose token has expired is asked for again.
    let lapsed = format!(
        "{}={}",
        yichuang::console::TOKEN_COOKIE,
        testkit::console::token_valid_for("operator", -120)
    );
    let r = anonymous
        .get(url(&gw, "/console/deadlines"))
        .header("cookie", &lapsed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console/login?next=%2Fconsole%2Fdeadlines"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_form_sent_from_another_site_is_refused_before_anything_is_done() {
    let gw = gateway(Backend::Sqlite).await;
    let operator = browser(Some(&Who::Operator));
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://elsewhere.example"),
    ] {
        let r = operator
            .post(url(&gw, "/console/dead-letters/scjg/purge"))
            .header(name, value)
            .form(&[("all", "1"), ("note", "not from us")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        assert!(r.text().await.unwrap().contains("another site"));
    }
    // A form that does not say where it came from is refused too: the client certificate goes
    // with every request the browser makes.
    let r = operator
        .post(url(&gw, "/console/dead-letters/scjg/purge"))
        .form(&[("all", "1"), ("note", "says nothing")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let actions = gw.gateway.store.operator_actions(10).await.unwrap();
    assert!(actions.is_empty(), "{actions:?}");
    // Another site may link to a page, not load it into its own.
    let embedded = operator
        .get(url(&gw, "/console/deadlines"))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "no-cors")
        .send()
        .await
        .unwrap();
    assert_eq!(embedded.status(), 403);
    let linked = operator
        .get(url(&gw, "/console/deadlines"))
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn search_finds_a_case_by_each_of_its_numbers_exactly_and_the_id_search_is_recorded_sqlite() {
    search_finds_a_case_by_each_of_its_numbers_exactly(Backend::Sqlite).await;
}

#[tokio::test]
async fn search_finds_a_case_by_each_of_its_numbers_exactly_and_the_id_search_is_recorded_postgres()
{
    search_finds_a_case_by_each_of_its_numbers_exactly(Backend::Postgres).await;
}

/// Every page of the console answers on PostgreSQL as on SQLite: its own queries (flows,
/// deadlines, a department's tasks) run on both engines.
#[tokio::test]
async fn every_page_answers_on_postgresql() {
    let mut gw = gateway(Backend::Postgres).await;
    let (number, _) = accepted(&mut gw).await;
    let operator = browser(Some(&Who::Operator));
    for path in [
        "/console".to_string(),
        "/console/flows".to_string(),
        "/console/departments/scjg".to_string(),
        "/console/deadlines".to_string(),
        format!("/console/cases/{number}"),
        format!("/console/cases/{number}/timeline"),
    ] {
        let r = operator.get(url(&gw, &path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let page = r.text().await.unwrap();
        assert!(!page.contains("store:"), "{path}: {page}");
    }
    let department = operator
        .get(url(&gw, "/console/departments/scjg"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        department.contains(&number),
        "the department's latest tasks list the case"
    );
    gw.stop().await;
}

async fn search_finds_a_case_by_each_of_its_numbers_exactly(backend: Backend) {
    let mut gw = gateway(backend).await;
    let (number, submission) = accepted(&mut gw).await;
    let id = submission.applicant.as_ref().unwrap().id_number.clone();
    let operator = browser(Some(&Who::Operator));
    let find = async |q: &str| {
        operator
            .post(url(&gw, "/console/cases"))
            .header("origin", origin(&gw))
            .form(&[("q", q)])
            .send()
            .await
            .unwrap()
    };
    for q in [
        number.as_str(),
        submission.submission_id.as_str(),
        id.as_str(),
    ] {
        let r = find(q).await;
        assert_eq!(r.status(), 303, "{q}");
        assert_eq!(r.headers()["location"], format!("/console/cases/{number}"));
    }
    // Exact only: a prefix finds nothing.
    let r = find(&id[..10]).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("id=\"not-found\""));
    let log = access_log(&gw, "operator").await;
    let masked = yichuang::privacy::mask_id(&id);
    assert!(
        log.iter()
            .any(|r| r.method == "Console/search-by-id" && r.target == masked),
        "{log:?}"
    );
    assert!(
        !format!("{log:?}").contains(&id),
        "the log holds the number masked"
    );
    gw.stop().await;
}

#[tokio::test]
async fn one_field_is_unmasked_only_with_its_permission_and_each_view_is_recorded() {
    let mut gw = gateway(Backend::Sqlite).await;
    let (number, submission) = accepted(&mut gw).await;
    let id = submission.applicant.as_ref().unwrap().id_number.clone();
    let mobile = submission
        .applicant
        .as_ref()
        .unwrap()
        .contact
        .as_ref()
        .unwrap()
        .mobile
        .clone();
    let case_url = url(&gw, &format!("/console/cases/{number}"));

    // The operator sees the case masked, with its trace linked, and cannot unmask.
    let operator = browser(Some(&Who::Operator));
    let page = operator
        .get(&case_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&id) && !page.contains(&mobile), "masked");
    assert!(page.contains(&yichuang::privacy::mask_id(&id)));
    assert!(
        page.contains("https://tracing.example/trace/"),
        "trace linked"
    );
    let r = operator
        .post(format!("{case_url}/unmask"))
        .header("origin", origin(&gw))
        .form(&[("field", "id_number")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.text().await.unwrap().contains(&id));

    // A supervisor (cases.unmask) sees that one field, and the view is recorded.
    let supervisor = browser(None);
    let bearer = format!("Bearer {}", token("supervisor"));
    let r = supervisor
        .post(format!("{case_url}/unmask"))
        .header("origin", origin(&gw))
        .header("authorization", &bearer)
        .form(&[("field", "id_number")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains(&id), "the one field asked for");
    assert!(!page.contains(&mobile), "and no other");
    let log = access_log(&gw, "supervisor-zhang").await;
    assert!(
        log.iter().any(|r| r.method == "Console/unmask"
            && r.outcome == "read"
            && r.target == format!("{number} id_number")),
        "{log:?}"
    );
    gw.stop().await;
}
