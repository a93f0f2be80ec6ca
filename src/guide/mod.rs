//! The item guide (办事指南): public pages under `/guide` on the windows' listener, one for each
//! item of the acceptance list, with the QR code the hall prints (docs/guide.md).
//!
//! - **One source.** Every page is drawn at request time from the catalog intake holds
//!   ([`crate::intake::Intake::shared_catalog`]): a guide can never disagree with what intake
//!   checks. The markup is in `view.rs`.
//! - **Public.** The policy layer lets `/guide…` through without an identity
//!   ([`crate::auth::Need::Public`]), and metrics count every page as one (`Guide/page`). The
//!   pages hold acceptance-list data only, never anything of an applicant or a case.
//! - **Headers.** No script at all: a content security policy allowing only the guide's own
//!   stylesheet and images, no framing, `nosniff`, no referrer; cached for five minutes.
//! - **Addresses.** [`Site`] holds the base URL the public reaches the listener at
//!   (`[guide] public_url`, else the listener's address): QR codes and the links of
//!   `PreCheck`'s notices are `<base>/guide/<item>`.
//!
//! It owns the routes, the headers, the QR codes and the base URL; it never reads or writes a case.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

use crate::catalog::Catalog;
use crate::config::GuideConfig;
use crate::gateway::Gateway;
use crate::proto::v1::GuideLink;

mod view;

/// Where the guide is served: on or off, and the base URL its QR codes and links carry.
#[derive(Debug)]
pub struct Site {
    enabled: bool,
    configured: String,
    base: OnceLock<String>,
}

impl Site {
    pub fn new(config: &GuideConfig) -> Site {
        let base = OnceLock::new();
        if !config.public_url.is_empty() {
            let _ = base.set(config.public_url.clone());
        }
        Site {
            enabled: config.enabled,
            configured: config.public_url.clone(),
            base,
        }
    }

    /// Whether the windows' listener serves the guide.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Settles the base URL on the windows' listener's address when `[guide] public_url` is
    /// empty (an unspecified address such as `0.0.0.0` becomes `127.0.0.1`, with a warning:
    /// such a URL reaches this machine only). The first listener wins.
    pub fn bind(&self, addr: SocketAddr, tls: bool) {
        if !self.enabled || !self.configured.is_empty() {
            return;
        }
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            tracing::warn!(
                listen = %addr,
                "[guide] public_url is empty and the windows' listener listens on every address: the guide's QR codes point at 127.0.0.1; set [guide] public_url to the address the public reaches"
            );
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if tls { "https" } else { "http" };
        let _ = self.base.set(format!("{scheme}://{addr}"));
    }

    /// The base URL, once known (configured, or the listener bound).
    pub fn base(&self) -> Option<&str> {
        self.base.get().map(String::as_str)
    }

    /// The public URL of an item's guide page, when the guide is served.
    pub fn url_of(&self, item_code: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        self.base()
            .map(|base| format!("{base}{}", path_of(item_code)))
    }

    /// The links to the guides of `item_codes` that the catalog knows, each once, in order; none
    /// when the guide is not served.
    pub fn links<'a>(
        &self,
        catalog: &Catalog,
        item_codes: impl IntoIterator<Item = &'a str>,
    ) -> Vec<GuideLink> {
        let mut links: Vec<GuideLink> = Vec::new();
        for code in item_codes {
            let (Some(item), Some(url)) = (catalog.items.get(code), self.url_of(code)) else {
                continue;
            };
            if links.iter().any(|l| l.item_code == code) {
                continue;
            }
            links.push(GuideLink {
                item_code: code.to_string(),
                item_name: item.name.clone(),
                url,
            });
        }
        links
    }
}

/// `/guide/<item code>`, the code percent-encoded where it is not a plain URL character.
pub fn path_of(item_code: &str) -> String {
    let mut path = String::from("/guide/");
    for b in item_code.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// The guide's routes, to be merged into the windows' listener's router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/guide", get(index))
        .route("/guide/", get(index))
        .route("/guide/guide.css", get(css))
        .route("/guide/{item}", get(item_page))
        .route("/guide/{item}/qr.svg", get(qr))
        .layer(axum::middleware::from_fn(headers))
        .with_state(gateway)
}

async fn index(State(gateway): State<Arc<Gateway>>) -> Response {
    let catalog = gateway.intake.shared_catalog();
    html(StatusCode::OK, view::index(&catalog))
}

async fn item_page(State(gateway): State<Arc<Gateway>>, Path(item): Path<String>) -> Response {
    let catalog = gateway.intake.shared_catalog();
    match catalog.items.get(&item) {
        Some(found) => {
            let url = gateway
                .guide
                .url_of(&item)
                .unwrap_or_else(|| path_of(&item));
            html(StatusCode::OK, view::item(&catalog, found, &url))
        }
        None => not_found(&item),
    }
}

async fn qr(State(gateway): State<Arc<Gateway>>, Path(item): Path<String>) -> Response {
    let catalog = gateway.intake.shared_catalog();
    if !catalog.items.contains_key(&item) {
        return not_found(&item);
    }
    let url = gateway
        .guide
        .url_of(&item)
        .unwrap_or_else(|| path_of(&item));
    match qr_svg(&url) {
        Ok(svg) => (
            [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
            svg,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the QR code of {url} cannot be drawn ({e}); set a shorter [guide] public_url"),
        )
            .into_response(),
    }
}

/// The QR code of `text` as an SVG of black modules on white, with the quiet zone around it,
/// error correction level M (a printed code survives some wear).
pub fn qr_svg(text: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(232, 232)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// The 404 page: which item was not found (the code echoed masked, should someone have typed
/// personal data into the address), and the way to the index.
fn not_found(item: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        view::not_found(&crate::privacy::mask_free_text(item)),
    )
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        view::CSS,
    )
        .into_response()
}

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// The content security policy of every guide response: nothing but the guide's own
/// stylesheet and images; no script, no form, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The headers every guide response carries.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let success = response.status().is_success();
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // Public data that changes with the acceptance list only: a short cache is harmless.
    let cache = if success {
        "public, max-age=300"
    } else {
        "no-store"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
