//! The operations console: HTML pages for the hall's operations staff, served under `/console`
//! on the internal (admin) listener beside `AdminService` (docs/console.md). It owns the routes,
//! who may see them, and the headers every page carries; the pages are in `pages.rs`, their
//! markup in `view.rs`, the live flows in `flows.rs`, replays and purges in `jobs.rs`.
//!
//! - **Identity** is the gateway's own ([`crate::auth`]): a client certificate, a bearer token,
//!   or a token the operator signed in with (kept in an `HttpOnly`, `SameSite=Strict` cookie
//!   scoped to `/console`). Every page needs `admin.read`; replays and purges `admin.write`;
//!   showing one field of personal data `cases.unmask`, each time recorded in the access log.
//!   A refusal is a page, recorded like a refused call.
//! - **Requests from other sites** are refused: forms (`POST`) are taken only from the console's
//!   own pages (`Sec-Fetch-Site` / `Origin`, and neither is a refusal), and another site can
//!   link to a page but not load one, so it cannot make an operator's browser replay or search.
//!   A role limited to one hall is refused: the console shows every hall.
//! - **Headers**: a strict content security policy (scripts and styles from the console only, no
//!   inline script, no framing), `nosniff`, no referrer, no caching of pages.
//! - It changes nothing but dead queues, through [`crate::dlq`], the same code as
//!   `AdminService` and `yichuang dlq`; it never writes a case.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use maud::Markup;

use crate::auth::{Caller, IdentityError, Permission, Refusal};
use crate::gateway::Gateway;

mod flows;
mod jobs;
mod pages;
mod view;

pub use view::Lang;

/// The cookie holding a signed-in operator's token.
pub const TOKEN_COOKIE: &str = "yc_console";
/// The cookie holding the chosen language.
pub const LANG_COOKIE: &str = "yc_lang";

/// What every console handler shares.
#[derive(Clone)]
pub struct Console {
    pub(crate) gateway: Arc<Gateway>,
    flows: Arc<flows::Flows>,
    jobs: Arc<jobs::Jobs>,
}

/// The console's routes, to be merged into the internal listener's router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let console = Console {
        gateway,
        flows: Arc::default(),
        jobs: Arc::default(),
    };
    if !console.gateway.console.adapters.is_empty() {
        tokio::spawn(
            console
                .flows
                .clone()
                .watch_adapters(console.gateway.clone()),
        );
    }
    let guarded = Router::new()
        .route("/console", get(pages::flows_page))
        .route("/console/flows", get(pages::flows_rows))
        .route("/console/departments/{code}", get(pages::department_page))
        .route("/console/cases", get(pages::search).post(pages::find))
        .route("/console/cases/{number}", get(pages::case_page))
        .route("/console/cases/{number}/timeline", get(pages::timeline))
        .route(
            "/console/cases/{number}/unmask",
            post(pages::unmask).get(pages::unmasked_again),
        )
        .route("/console/dead-letters", get(pages::dead_letters))
        .route(
            "/console/dead-letters/{department}/messages/{id}",
            get(pages::dead_letter),
        )
        .route(
            "/console/dead-letters/{department}/replay",
            post(pages::replay),
        )
        .route(
            "/console/dead-letters/{department}/purge",
            post(pages::purge),
        )
        .route("/console/jobs/{id}", get(pages::job_page))
        .route("/console/jobs/{id}/progress", get(pages::job_progress))
        .route("/console/deadlines", get(pages::deadlines))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            require_operator,
        ));
    Router::new()
        .merge(guarded)
        .route("/console/login", get(pages::login_page).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .layer(axum::middleware::from_fn(same_origin))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

/// The caller of a console request: its client certificate, its bearer token, the token it
/// signed in with, or (on a plaintext development gateway) the development identity.
pub fn caller_of(
    gateway: &Gateway,
    extensions: &http::Extensions,
    headers: &HeaderMap,
) -> Result<Caller, IdentityError> {
    match signed_in_token(extensions, headers) {
        Some(token) => gateway.guard.authenticator.from_token(&token),
        None => crate::auth::identify_parts(&gateway.guard, extensions, headers),
    }
}

/// The token an operator signed in with, when the request brings no certificate and no
/// bearer token of its own (those come first).
fn signed_in_token(extensions: &http::Extensions, headers: &HeaderMap) -> Option<String> {
    let has_certificate = extensions
        .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_some_and(|c| !c.is_empty());
    if has_certificate || headers.contains_key(header::AUTHORIZATION) {
        return None;
    }
    cookie(headers, TOKEN_COOKIE)
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The page's language: `?lang=` first, then the cookie, then Chinese.
pub fn lang_of(headers: &HeaderMap, query: Option<&str>) -> Lang {
    let asked = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "lang")
            .map(|(_, v)| v.into_owned())
    });
    match asked.or_else(|| cookie(headers, LANG_COOKIE)).as_deref() {
        Some("en") => Lang::En,
        _ => Lang::Zh,
    }
}

/// Every guarded page: an operator with `admin.read`, or a sign-in page (no identity) or a
/// refusal page (an identity without the permission), recorded in the access log.
async fn require_operator(
    State(console): State<Console>,
    mut request: Request,
    next: Next,
) -> Response {
    let lang = lang_of(request.headers(), request.uri().query());
    let path = request.uri().path().to_string();
    let gateway = &console.gateway;
    let identified = caller_of(gateway, request.extensions(), request.headers());
    // A sign-in that lapsed (the token expired) is asked for again, like none at all.
    let by_cookie = signed_in_token(request.extensions(), request.headers()).is_some();
    let checked = identified
        .map_err(|e| {
            (
                by_cookie || matches!(e, IdentityError::Missing),
                Refusal::Unauthenticated(e.to_string()),
            )
        })
        .and_then(|caller| {
            gateway
                .guard
                .policy
                .allows(&caller, Permission::AdminRead)
                .map_err(|r| (false, r))?;
            match &caller.hall {
                // The console shows every hall's flows, queues and deadlines.
                Some(hall) => Err((
                    false,
                    Refusal::Denied(format!(
                        "{} (role {}) acts for hall {hall} only, and the console shows every hall: it is for roles with scope \"all\"",
                        caller.name, caller.role
                    )),
                )),
                None => Ok(caller),
            }
        });
    match checked {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err((true, _)) if request.method() == http::Method::GET => {
            let asked = request
                .uri()
                .path_and_query()
                .map_or(path.as_str(), |p| p.as_str());
            let back = form_urlencoded::byte_serialize(asked.as_bytes()).collect::<String>();
            let mut r = redirect(&format!("/console/login?next={back}"));
            if by_cookie {
                r.headers_mut()
                    .append(header::SET_COOKIE, clear_token_cookie(gateway));
            }
            r
        }
        Err((_, refusal)) => {
            let caller = caller_of(gateway, request.extensions(), request.headers()).ok();
            gateway
                .guard
                .auditor
                .refused(caller.as_ref(), "Console/page", &path, &refusal)
                .await;
            let (status, heading) = match refusal {
                Refusal::Unauthenticated(_) => (
                    StatusCode::UNAUTHORIZED,
                    lang.t("未能识别您的身份", "Not signed in"),
                ),
                Refusal::Denied(_) => (
                    StatusCode::FORBIDDEN,
                    lang.t("无权访问运维台", "Not allowed to use the console"),
                ),
            };
            html_page(
                status,
                view::page(
                    lang,
                    heading,
                    view::Section::None,
                    caller.as_ref(),
                    view::problem(lang, heading, refusal.reason()),
                ),
            )
        }
    }
}

/// Requests from other sites are refused before anything reads them: a `POST` (every form
/// that changes something, signing in included) only when the browser says it came from the
/// console's own page (`Sec-Fetch-Site: same-origin`, else an `Origin` of this host); a request
/// that says neither is refused too, since a client certificate goes with every request a
/// browser makes, as a cookie does. Another site may link to a page (a navigation), but not load
/// one into its own (an image, a script, a fetch).
async fn same_origin(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let mode = headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok());
    let allowed = if request.method() == http::Method::POST {
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        match (site, origin) {
            (Some(site), _) => site == "same-origin",
            (None, Some(origin)) => origin
                .split_once("://")
                .is_some_and(|(_, rest)| !host.is_empty() && rest == host),
            (None, None) => false,
        }
    } else {
        !matches!(site, Some("cross-site" | "same-site")) || mode == Some("navigate")
    };
    if allowed {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "refused: this request came from another site, or did not say where it came from; use the console's own pages",
        )
            .into_response()
    }
}

/// The headers every console response carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/console/assets/");
    let chosen = request.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "lang")
            .map(|(_, v)| if v == "en" { "en" } else { "zh" })
    });
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if let Some(lang) = chosen
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{LANG_COOKIE}={lang}; Path=/console; SameSite=Strict; Max-Age=31536000"
        ))
    {
        h.append(header::SET_COOKIE, v);
    }
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    set(h, "strict-transport-security", "max-age=31536000");
    if is_asset {
        set(h, "cache-control", "public, max-age=3600");
    } else {
        set(h, "cache-control", "no-store");
    }
    response
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}

/// An HTML response.
pub(crate) fn html_page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// `303 See Other` to `to` (a console path; the console's start when `to` cannot be a header).
pub(crate) fn redirect(to: &str) -> Response {
    let location =
        HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/console"));
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    r
}

/// The `Set-Cookie` that holds a signed-in operator's token.
pub(crate) fn token_cookie(gateway: &Gateway, token: &str) -> Option<HeaderValue> {
    let secure = if gateway.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// The `Set-Cookie` that forgets it.
pub(crate) fn clear_token_cookie(gateway: &Gateway) -> HeaderValue {
    let secure = if gateway.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("a fixed cookie")
}
