//! The public item guide (办事指南) over HTTPS on the windows' listener (real TLS, the shipped
//! acceptance list): every item's page lists each of its materials as the catalog holds them,
//! with no identity asked and no personal data on it; an unknown item is a 404 page in Chinese;
//! the QR code is an SVG; a deficient `PreCheck` and `Submit` link the guide of their item.
//! The page in a real browser, its QR code decoded, is tests/guide_browser.rs.

use testkit::example;
use testkit::gateway::{Backend, TestGateway};
use yichuang::catalog::Catalog;
use yichuang::proto::v1::{PreCheckRequest, SubmitRequest, submit_response::Outcome};

/// An HTTPS client trusting the kit's CA and presenting no certificate: the public.
fn public() -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(testkit::pki::ca_pem().as_bytes()).unwrap(),
        )
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn catalog() -> Catalog {
    Catalog::load(&testkit::repo().join("config/catalog")).unwrap_or_else(|e| panic!("{e}"))
}

async fn get(url: &str) -> (u16, http::HeaderMap, String) {
    let r = public()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

#[tokio::test]
async fn every_item_page_lists_its_materials_to_anyone_without_personal_data() {
    let gw = TestGateway::start(Backend::Sqlite).await;
    let catalog = catalog();
    assert!(!catalog.items.is_empty());
    let (status, _, index) = get(&format!("{}/guide", gw.endpoint)).await;
    assert_eq!(status, 200, "{index}");
    for (code, item) in &catalog.items {
        assert!(
            index.contains(&format!("href=\"/guide/{code}\"")),
            "the index links {code}"
        );
        let (status, headers, page) = get(&format!("{}/guide/{code}", gw.endpoint)).await;
        assert_eq!(status, 200, "{code}: {page}");
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        let csp = header(&headers, "content-security-policy");
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(!csp.contains("script"), "no script allowed: {csp}");
        assert!(!page.contains("<script"), "{code}: the page has a script");
        assert!(page.contains(&item.name), "{code}: its name");
        for m in &item.materials {
            let name = catalog.material_name(m.code.get_ref());
            assert!(
                page.contains(&format!("<td class=\"name\">{name}</td>")),
                "{code}: material {name} listed"
            );
            assert!(
                page.contains(&m.legal_basis),
                "{code}: {name}'s legal basis"
            );
        }
        assert!(
            page.contains(&format!("{}个工作日", item.legal_working_days))
                && page.contains(&format!("{}个工作日", item.promised_working_days)),
            "{code}: its time limits"
        );
        for condition in &item.conditions {
            assert!(page.contains(condition.as_str()), "{code}: {condition}");
        }
        for fee in &item.fees {
            assert!(page.contains(&fee.amount), "{code}: fee {}", fee.name);
        }
        if item.fees.is_empty() {
            assert!(page.contains("本事项不收费"), "{code}: says it is free");
        }
        // Nothing on the page that masking would change: no ID or mobile number.
        assert_eq!(yichuang::privacy::mask_free_text(&page), page, "{code}");
    }
    // The sample's fees and conditions are where the catalog puts them.
    let (_, _, bdc) = get(&format!("{}/guide/BDC-ZY", gw.endpoint)).await;
    assert!(bdc.contains("每件80元") && bdc.contains("契税等税费已依法缴纳"));
    gw.stop().await;
}

#[tokio::test]
async fn an_unknown_item_is_a_chinese_404_linking_to_the_index_and_echoes_no_id_number() {
    let gw = TestGateway::start(Backend::Sqlite).await;
    let (status, headers, page) = get(&format!("{}/guide/NO-SUCH", gw.endpoint)).await;
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-store");
    assert!(page.contains("未找到该事项"), "{page}");
    assert!(
        page.contains("「NO-SUCH」"),
        "names what was not found: {page}"
    );
    assert!(page.contains("href=\"/guide\""), "links the index: {page}");
    // Someone typed an ID number into the address: it does not come back whole.
    let id = "11010519491231002X";
    let (status, _, page) = get(&format!("{}/guide/{id}", gw.endpoint)).await;
    assert_eq!(status, 404);
    assert!(!page.contains(id), "{page}");
    let (status, _, _) = get(&format!("{}/guide/NO-SUCH/qr.svg", gw.endpoint)).await;
    assert_eq!(status, 404);
    gw.stop().await;
}

#[tokio::test]
async fn the_qr_endpoint_returns_an_svg_and_the_page_shows_its_url() {
    let gw = TestGateway::start(Backend::Sqlite).await;
    let page_url = format!("{}/guide/QY-SL", gw.endpoint);
    let (status, headers, svg) = get(&format!("{page_url}/qr.svg")).await;
    assert_eq!(status, 200, "{svg}");
    assert_eq!(
        header(&headers, "content-type"),
        "image/svg+xml; charset=utf-8"
    );
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    let (_, _, page) = get(&page_url).await;
    assert!(page.contains("src=\"/guide/QY-SL/qr.svg\""), "{page}");
    assert!(
        page.contains(&page_url),
        "prints the URL under the code: {page}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_deficient_pre_check_and_its_notice_link_the_guide_of_their_item() {
    let mut gw = TestGateway::start(Backend::Sqlite).await;
    let catalog = catalog();
    let expected = format!("{}/guide/BDC-ZY", gw.endpoint);
    let bad = gw
        .client
        .pre_check(PreCheckRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!bad.acceptable);
    assert_eq!(bad.guides.len(), 1, "{:?}", bad.guides);
    assert_eq!(bad.guides[0].item_code, "BDC-ZY");
    assert_eq!(bad.guides[0].item_name, catalog.items["BDC-ZY"].name);
    assert_eq!(bad.guides[0].url, expected);
    let (status, _, page) = get(&bad.guides[0].url).await;
    assert_eq!(status, 200, "the link leads to the guide: {page}");
    // An acceptable submission needs no guide.
    let ok = gw
        .client
        .pre_check(PreCheckRequest {
            submission: Some(example("kai-canguan")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.acceptable && ok.guides.is_empty(), "{:?}", ok.guides);
    // Submit's one-time notice carries the same link.
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    match answer.outcome {
        Some(Outcome::Notice(notice)) => {
            assert_eq!(notice.guides, bad.guides);
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_gateway_without_the_guide_serves_no_page_and_links_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.guide.enabled = false;
    let mut gw = TestGateway::start_with(config, dir).await;
    let (status, headers, page) = get(&format!("{}/guide/BDC-ZY", gw.endpoint)).await;
    assert!(
        !page.contains("不动产") && headers.get("content-security-policy").is_none(),
        "{status} {headers:?} {page}"
    );
    let bad = gw
        .client
        .pre_check(PreCheckRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!bad.acceptable && bad.guides.is_empty(), "{:?}", bad.guides);
    gw.stop().await;
}

#[tokio::test]
async fn a_configured_public_url_is_what_the_links_carry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.guide.public_url = "https://zwfw.example.gov.cn".into();
    let mut gw = TestGateway::start_with(config, dir).await;
    let bad = gw
        .client
        .pre_check(PreCheckRequest {
            submission: Some(example("bdc-deficient")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bad.guides[0].url,
        "https://zwfw.example.gov.cn/guide/BDC-ZY"
    );
    let (_, _, page) = get(&format!("{}/guide/BDC-ZY", gw.endpoint)).await;
    assert!(
        page.contains("https://zwfw.example.gov.cn/guide/BDC-ZY"),
        "{page}"
    );
    gw.stop().await;
}
