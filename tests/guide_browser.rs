//! The item guide in a real browser (headless Chromium, testkit's `browser`) on the windows'
//! listener over TLS: each item's page shows the materials the acceptance list holds (read from
//! the DOM, checked against the catalog loaded with the crate's own loader), and the QR code the
//! browser draws decodes (rqrr, from the pixels) back to the page's own URL. Each page's
//! screenshot is left in `target/guide/`.

use serde_json::Value;
use testkit::browser::Browser;
use testkit::gateway::{Backend, TestGateway};
use yichuang::catalog::{Catalog, Form};

/// The materials table as the browser shows it: code, name, forms, copies, legal basis.
const MATERIALS_JS: &str = "Array.from(document.querySelectorAll('#materials tbody tr')).map(r => [\
    r.dataset.material, r.querySelector('.name').innerText, r.querySelector('.forms').innerText, \
    r.querySelector('.copies').innerText, r.querySelector('.basis').innerText])";

/// Draws the page's QR image into a canvas at twice its size on white and returns its pixels as
/// greyscale: `{w, h, px}`.
const QR_PIXELS_JS: &str = "(async () => {\
    const img = document.querySelector('.qr img');\
    await img.decode();\
    const w = img.naturalWidth * 2, h = img.naturalHeight * 2;\
    const c = document.createElement('canvas'); c.width = w; c.height = h;\
    const g = c.getContext('2d');\
    g.fillStyle = '#fff'; g.fillRect(0, 0, w, h);\
    g.imageSmoothingEnabled = false;\
    g.drawImage(img, 0, 0, w, h);\
    const d = g.getImageData(0, 0, w, h).data;\
    const px = new Array(w * h);\
    for (let i = 0; i < w * h; i++) px[i] = Math.round((d[4*i] + d[4*i+1] + d[4*i+2]) / 3);\
    return {w, h, px};\
})()";

fn form_name(f: Form) -> &'static str {
    match f {
        Form::Original => "原件",
        Form::Copy => "复印件",
        Form::Electronic => "电子件",
    }
}

/// The text a QR code in `pixels` holds.
fn decode(pixels: &Value) -> String {
    let w = pixels["w"].as_u64().expect("a width") as usize;
    let h = pixels["h"].as_u64().expect("a height") as usize;
    let px: Vec<u8> = pixels["px"]
        .as_array()
        .expect("pixels")
        .iter()
        .map(|v| v.as_u64().expect("a grey level") as u8)
        .collect();
    assert_eq!(px.len(), w * h);
    assert!(w > 0 && h > 0, "the QR image has a size");
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| px[y * w + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (_, text) = grids[0].decode().expect("the QR code decodes");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_guide_shows_the_catalogs_materials_and_its_qr_code_decodes_to_its_url() {
    let gw = TestGateway::start(Backend::Sqlite).await;
    let catalog =
        Catalog::load(&testkit::repo().join("config/catalog")).unwrap_or_else(|e| panic!("{e}"));
    let browser = Browser::launch().await;
    let page = browser.page().await;
    for (code, item) in &catalog.items {
        let url = format!("{}/guide/{code}", gw.endpoint);
        assert_eq!(page.goto(&url).await, 200, "{url}");
        assert_eq!(page.text("h1").await, item.name);
        let shown = page.eval(MATERIALS_JS).await;
        let shown: Vec<Vec<String>> = serde_json::from_value(shown).expect("rows of text");
        let expected: Vec<Vec<String>> = item
            .materials
            .iter()
            .map(|m| {
                vec![
                    m.code.get_ref().clone(),
                    catalog.material_name(m.code.get_ref()).to_string(),
                    m.forms
                        .iter()
                        .map(|f| form_name(*f))
                        .collect::<Vec<_>>()
                        .join("或"),
                    m.copies.to_string(),
                    m.legal_basis.clone(),
                ]
            })
            .collect();
        assert_eq!(
            shown, expected,
            "{code}: the materials as the catalog holds them"
        );
        // As docs/guide.md shows it (target/guide/, copied there by hand when the page changes).
        page.screenshot(&testkit::repo().join(format!("target/guide/{code}.png")))
            .await;
        let pixels = page.eval(QR_PIXELS_JS).await;
        assert_eq!(
            decode(&pixels),
            url,
            "{code}: the QR code leads back to the page"
        );
    }
    drop(page);
    drop(browser);
    gw.stop().await;
}
