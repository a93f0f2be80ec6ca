//! A headless Chromium driven over the Chrome DevTools Protocol (CDP), for tests of the pages a
//! gateway serves as a person sees them: what a page says, what a click or a filled form does,
//! which HTTP status a page came with, a screenshot, and how heavy and how fast a page is.
//!
//! This module owns the browser process (its own profile in a temporary directory, killed and
//! removed on drop), the one WebSocket connection to it, and the few CDP calls the tests use.
//! It holds no rule about any page: what a page must show stays in the suite that tests it.
//!
//! The browser is Debian's `chromium` (`YICHUANG_CHROMIUM`, else `chromium` on `PATH`);
//! `bash scripts/browser.sh` installs it, and `make test` runs that script. Every wait has a
//! deadline and fails saying what it waited for.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long the browser may take to start and print its DevTools address.
pub const LAUNCH: Duration = Duration::from_secs(20);
/// How long one CDP call may take to be answered.
pub const CALL: Duration = Duration::from_secs(30);
/// How long a navigation may take to reach its load event.
pub const LOAD: Duration = Duration::from_secs(30);
/// The viewport of every page: a common laptop screen.
pub const VIEWPORT: (u32, u32) = (1366, 768);

/// A headless Chromium of the test's own, with a fresh profile. Dropping it kills the browser
/// and removes the profile.
pub struct Browser {
    process: Child,
    cdp: Arc<Cdp>,
    router: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser. It accepts any certificate (`--ignore-certificate-errors`): the
    /// gateways under test serve certificates of the kit's own CA. Panics when the browser is
    /// missing or does not start within [`LAUNCH`].
    pub async fn launch() -> Browser {
        Self::start(&["--ignore-certificate-errors"]).await
    }

    /// Starts the browser accepting, beyond the public roots, precisely the certificates whose
    /// public key (SubjectPublicKeyInfo) has this SHA-256 digest, in standard base64.
    pub async fn launch_trusting(spki_sha256_base64: &str) -> Browser {
        let flag = format!("--ignore-certificate-errors-spki-list={spki_sha256_base64}");
        Self::start(&[&flag]).await
    }

    async fn start(extra: &[&str]) -> Browser {
        let program = std::env::var("YICHUANG_CHROMIUM")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "chromium".into());
        let profile = tempfile::tempdir().expect("a temporary directory for the profile");
        let mut process = Command::new(&program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the browser `{program}` ({e}): run `bash scripts/browser.sh` \
                     (it installs Debian's chromium), or set YICHUANG_CHROMIUM"
                )
            });
        // Chromium's stderr goes to the suite's log directory; its DevTools address comes back.
        let (address_tx, address_rx) = oneshot::channel();
        let stderr = process.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            let mut log = crate::child_log("chromium");
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(ws) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = address_tx.take()
                {
                    let _ = tx.send(ws.trim().to_string());
                }
            }
        });
        let address = match tokio::time::timeout(LAUNCH, address_rx).await {
            Ok(Ok(address)) => address,
            outcome => {
                let _ = process.kill();
                let status = process.wait().map(|s| s.to_string()).unwrap_or_default();
                let why = if outcome.is_err() {
                    "timed out"
                } else {
                    "exited"
                };
                panic!(
                    "the browser `{program}` printed no DevTools address within {LAUNCH:?} \
                     ({why}, {status}): see its log `chromium` in the suite's log directory"
                );
            }
        };
        let (socket, _) = tokio_tungstenite::connect_async(address.as_str())
            .await
            .unwrap_or_else(|e| panic!("connects to the browser at {address}: {e}"));
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let cdp = Arc::new(Cdp {
            out: out_tx,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            events: broadcast::channel(4096).0,
        });
        let router = tokio::spawn(route(socket, out_rx, cdp.clone()));
        Browser {
            process,
            cdp,
            router,
            _profile: profile,
        }
    }

    /// A new tab of [`VIEWPORT`] size on `about:blank`, with the page, runtime and network
    /// domains on and the HTTP cache off (so that every navigation loads, and weighs, the
    /// whole page).
    pub async fn page(&self) -> Page {
        let target = self
            .cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"].as_str().expect("a session id");
        let mut page = Page {
            cdp: self.cdp.clone(),
            session: session.to_string(),
            target,
            frame: String::new(),
            last_bytes: Mutex::new(0),
        };
        let (width, height) = VIEWPORT;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        for domain in ["Page", "Runtime", "Network"] {
            page.call(&format!("{domain}.enable"), json!({})).await;
        }
        page.call("Network.setCacheDisabled", json!({"cacheDisabled": true}))
            .await;
        let tree = page.call("Page.getFrameTree", json!({})).await;
        page.frame = tree["frameTree"]["frame"]["id"]
            .as_str()
            .expect("the main frame's id")
            .to_string();
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.router.abort();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// What the page's last navigation weighed and how soon it showed something.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageTiming {
    /// Bytes received over the network (headers and bodies, as sent: compressed when the server
    /// compressed) for the document and every subresource it loaded up to its load event:
    /// CDP's `encodedDataLength` summed over the requests of the navigation's document loader.
    /// Requests made after the load event, and those of frames inside the page, are not counted.
    pub bytes: u64,
    /// Milliseconds from the start of the navigation to the first contentful paint (first text
    /// or image drawn), from the Paint Timing API; for a page that paints nothing contentful
    /// within 3 s, the end of `DOMContentLoaded` instead.
    pub first_render_ms: f64,
}

/// One tab, attached through a session of its own. Dropping it closes the tab.
pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
    target: String,
    frame: String,
    last_bytes: Mutex<u64>,
}

impl Page {
    /// Goes to `url` (http or https) and waits up to [`LOAD`] for the new document's load event;
    /// returns the HTTP status of the document, so a test can assert 200, 401 or 403. Panics
    /// when no HTTP response came (a refused connection, a rejected certificate, `about:` and
    /// `data:` URLs), saying the browser's error, and when no load event comes (a link within
    /// the same document, `#part`, loads nothing).
    pub async fn goto(&self, url: &str) -> u16 {
        self.navigation(&format!("goto {url}"), async {
            let answer = self.call("Page.navigate", json!({"url": url})).await;
            answer["errorText"].as_str().map(String::from)
        })
        .await
    }

    /// Clicks `selector` as [`Page::click`] does and waits for the navigation it starts (a link,
    /// a form's submit button) to load; returns the new document's HTTP status.
    pub async fn click_and_wait_load(&self, selector: &str) -> u16 {
        self.navigation(&format!("click {selector}"), async {
            self.click(selector).await;
            None
        })
        .await
    }

    /// Submits the form `selector` as its submit button would (`requestSubmit`: the form's
    /// validation and submit handlers run) and waits for the next document to load; returns
    /// its HTTP status.
    pub async fn submit(&self, form: &str) -> u16 {
        let js = format!("{}.requestSubmit()", element(form));
        self.navigation(&format!("submit {form}"), async {
            self.eval(&js).await;
            None
        })
        .await
    }

    /// The value of the JavaScript expression `js` (a promise is awaited), as JSON; `undefined`
    /// is `null`. Panics with the exception's text when it throws.
    pub async fn eval(&self, js: &str) -> Value {
        self.try_eval(js)
            .await
            .unwrap_or_else(|e| panic!("`{js}` threw: {e}"))
    }

    /// [`Page::eval`], with what it threw as the error.
    pub async fn try_eval(&self, js: &str) -> Result<Value, String> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(details) = answer.get("exceptionDetails") {
            let description = details["exception"]["description"].as_str();
            return Err(description
                .or(details["text"].as_str())
                .unwrap_or("an exception")
                .to_string());
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Evaluates `js` every [`crate::wait::POLL`] until its value is truthy (as JavaScript
    /// judges it; a throw counts as not yet) and returns that value; panics with `what` and the
    /// last value when `within` passes first.
    pub async fn wait_for(&self, js: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let last = self.try_eval(js).await;
            if let Ok(value) = &last
                && truthy(value)
            {
                return value.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{what} within {within:?}: `{js}` last gave {last:?}"
            );
            tokio::time::sleep(crate::wait::POLL).await;
        }
    }

    /// The text the element `selector` shows (`innerText`). Panics when no element matches.
    pub async fn text(&self, selector: &str) -> String {
        let value = self.eval(&format!("{}.innerText", element(selector))).await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// Clicks the middle of the element `selector` with the mouse, as a person would: it is
    /// scrolled into view first, and the click fails when the element has no size or another
    /// element covers its middle.
    pub async fn click(&self, selector: &str) {
        let js = format!(
            "(() => {{ const e = {}; e.scrollIntoView({{block: 'center', inline: 'center'}});
               const r = e.getBoundingClientRect();
               if (r.width === 0 || r.height === 0) return 'it has no size';
               const x = r.left + r.width / 2, y = r.top + r.height / 2;
               const hit = document.elementFromPoint(x, y);
               if (!hit || !(hit === e || e.contains(hit)))
                 return 'its middle is covered by ' + (hit ? hit.outerHTML.slice(0, 120) : 'nothing');
               return [x, y]; }})()",
            element(selector)
        );
        let at = self.eval(&js).await;
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            panic!("cannot click {selector}: {}", at.as_str().unwrap_or("?"));
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let params = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
            self.call("Input.dispatchMouseEvent", params).await;
        }
    }

    /// Sets the value of the input `selector` (focused first) and dispatches `input` and
    /// `change`, as typing and leaving the field would.
    pub async fn fill(&self, selector: &str, value: &str) {
        let js = format!(
            "(() => {{ const e = {}; e.focus();
               const set = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(e), 'value')?.set;
               if (set) set.call(e, {value}); else e.value = {value};
               e.dispatchEvent(new Event('input', {{bubbles: true}}));
               e.dispatchEvent(new Event('change', {{bubbles: true}})); }})()",
            element(selector),
            value = json!(value),
        );
        self.eval(&js).await;
    }

    /// Sends these headers with every request of this page from now on (replacing the ones
    /// set before).
    pub async fn set_extra_headers(&self, headers: &[(&str, &str)]) {
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect();
        self.call("Network.setExtraHTTPHeaders", json!({"headers": headers}))
            .await;
    }

    /// Sets the cookie `name=value` for `url` (its host and path), in the browser's cookie jar.
    pub async fn set_cookie(&self, url: &str, name: &str, value: &str) {
        let answer = self
            .call(
                "Network.setCookie",
                json!({"url": url, "name": name, "value": value}),
            )
            .await;
        assert_ne!(answer["success"], false, "sets the cookie {name} for {url}");
    }

    /// A PNG of the viewport, written to `path` (its directories are made).
    pub async fn screenshot(&self, path: &Path) {
        let answer = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer["data"].as_str().expect("the screenshot's data"))
            .expect("the screenshot's base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The weight and first render of the page's last navigation ([`PageTiming`]).
    pub async fn timing(&self) -> PageTiming {
        let first_render = self
            .eval(
                "new Promise(resolve => {
                   const fcp = () => performance.getEntriesByName('first-contentful-paint')[0];
                   const dcl = () => performance.getEntriesByType('navigation')[0]?.domContentLoadedEventEnd ?? 0;
                   const until = Date.now() + 3000;
                   const look = () => fcp() ? resolve(fcp().startTime)
                     : Date.now() > until ? resolve(dcl()) : setTimeout(look, 50);
                   look(); })",
            )
            .await;
        PageTiming {
            bytes: *self.last_bytes.lock().expect("the page's counters"),
            first_render_ms: first_render.as_f64().unwrap_or(0.0),
        }
    }

    /// Runs `start` (which may give the browser's error for the navigation) and follows this
    /// page's events until the load event: the status of the main frame's document, and the
    /// bytes of the requests of its loader.
    async fn navigation(
        &self,
        what: &str,
        start: impl std::future::Future<Output = Option<String>>,
    ) -> u16 {
        let mut events = self.cdp.events.subscribe();
        let error = start.await;
        let deadline = tokio::time::Instant::now() + LOAD;
        let mut document: Option<(String, u16)> = None;
        let mut loader_of = HashMap::new();
        let mut bytes_of = HashMap::new();
        loop {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => panic!("{what}: no load event within {LOAD:?} (error: {error:?})"),
                // Events past 4,096 unread (far more than a page makes) are lost: at worst the
                // bytes are undercounted, or the wait times out saying so.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => panic!("{what}: browser gone"),
                Ok(Ok(event)) => event,
            };
            if event.session.as_deref() != Some(self.session.as_str()) {
                continue;
            }
            let p = &event.params;
            let request = p["requestId"].as_str().unwrap_or_default().to_string();
            match event.method.as_str() {
                "Network.requestWillBeSent" => {
                    if let Some(loader) = p["loaderId"].as_str() {
                        loader_of.insert(request, loader.to_string());
                    }
                }
                "Network.responseReceived"
                    if p["type"] == "Document" && p["frameId"] == self.frame.as_str() =>
                {
                    let status = p["response"]["status"].as_u64().unwrap_or(0) as u16;
                    document = Some((p["loaderId"].as_str().unwrap_or("").to_string(), status));
                }
                "Network.loadingFinished" => {
                    bytes_of.insert(request, p["encodedDataLength"].as_f64().unwrap_or(0.0));
                }
                "Page.loadEventFired" => break,
                _ => {}
            }
        }
        let Some((loader, status)) = document else {
            panic!("{what}: no HTTP response for the document (error: {error:?})");
        };
        let bytes: f64 = bytes_of
            .iter()
            .filter(|(request, _)| loader_of.get(*request) == Some(&loader))
            .map(|(_, bytes)| bytes)
            .sum();
        *self.last_bytes.lock().expect("the page's counters") = bytes as u64;
        status
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.call(Some(&self.session), method, params).await
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Not waited for: the answer, if any, finds no one waiting and is dropped.
        let id = self.cdp.next_id.fetch_add(1, Ordering::Relaxed);
        let params = json!({"targetId": self.target});
        self.cdp.send(id, None, "Target.closeTarget", params);
    }
}

/// JavaScript for the element `selector`, throwing when none matches.
fn element(selector: &str) -> String {
    let s = json!(selector);
    format!(
        "(document.querySelector({s}) ?? (() => {{ throw new Error('no element matches ' + {s}); }})())"
    )
}

/// Whether JavaScript would take `value` for true.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// An event of the browser: its method, parameters, and the session (tab) it came from.
#[derive(Debug, Clone)]
struct Event {
    session: Option<String>,
    method: String,
    params: Value,
}

type Answer = Result<Value, String>;

/// The connection's shared half: messages to send, calls waiting for their answer by id, and
/// the events for whoever subscribed.
struct Cdp {
    out: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    events: broadcast::Sender<Event>,
}

impl Cdp {
    /// Queues the call `id` for the socket.
    fn send(&self, id: u64, session: Option<&str>, method: &str, params: Value) {
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let _ = self.out.send(message.to_string());
    }

    /// Calls `method` and returns its result; panics with the browser's error, or when no
    /// answer comes within [`CALL`].
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("the pending calls")
            .insert(id, tx);
        self.send(id, session, method, params);
        match tokio::time::timeout(CALL, rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(error))) => panic!("{method}: {error}"),
            Ok(Err(_)) => panic!("{method}: the connection to the browser closed"),
            Err(_) => {
                self.pending.lock().expect("the pending calls").remove(&id);
                panic!("{method}: no answer within {CALL:?}")
            }
        }
    }

    /// One message from the browser: an answer goes to its caller, an event to the subscribers.
    fn deliver(&self, text: &str) {
        let Ok(mut message) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(id) = message["id"].as_u64() {
            let waiting = self.pending.lock().expect("the pending calls").remove(&id);
            if let Some(tx) = waiting {
                let answer = match message.get("error") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(message["result"].take()),
                };
                let _ = tx.send(answer);
            }
        } else if let Some(method) = message["method"].as_str() {
            let _ = self.events.send(Event {
                session: message["sessionId"].as_str().map(String::from),
                method: method.to_string(),
                params: message["params"].take(),
            });
        }
    }
}

/// The connection's background task: sends what the callers queue, and routes what the browser
/// sends, until either side closes. Calls still waiting then fail.
async fn route(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut out: mpsc::UnboundedReceiver<String>,
    cdp: Arc<Cdp>,
) {
    loop {
        tokio::select! {
            message = out.recv() => match message {
                Some(text) => {
                    if socket.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => cdp.deliver(text.as_str()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    cdp.pending.lock().expect("the pending calls").clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PAGE: &str = r#"<!doctype html>
<html><head><title>console</title><link rel="stylesheet" href="/style.css"></head>
<body>
<h1>Operations</h1>
<p id="late">waiting</p>
<button id="press" onclick="document.querySelector('#out').textContent = 'pressed'">Press</button>
<p id="out">not pressed</p>
<input id="name" oninput="document.querySelector('#echo').textContent = 'typed ' + this.value">
<p id="echo"></p>
<form action="/done" method="get"><input name="q" value="1"><button id="go">Go</button></form>
<script>setTimeout(() => { document.querySelector('#late').textContent = 'ready'; }, 300);</script>
</body></html>"#;
    const STYLE: &str = "body { font-family: sans-serif; background: #eef; } h1 { color: #235; }";

    /// A server of a few fixed answers, one request per connection; `/headers` echoes the
    /// request's head.
    async fn serve() -> String {
        let (listener, address) = crate::server::listener().await;
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let (status, kind, body) = match path.split('?').next().unwrap_or("/") {
                        "/" => ("200 OK", "text/html", PAGE.to_string()),
                        "/style.css" => ("200 OK", "text/css", STYLE.to_string()),
                        "/done" => ("200 OK", "text/html", "<p id=done>done</p>".into()),
                        "/headers" => ("200 OK", "text/plain", head.clone()),
                        "/forbidden" => ("403 Forbidden", "text/html", "<p>forbidden</p>".into()),
                        "/forbidden-empty" => ("403 Forbidden", "text/html", String::new()),
                        _ => ("404 Not Found", "text/plain", "not found".into()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {kind}; charset=utf-8\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(response.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn a_page_is_loaded_read_clicked_filled_photographed_and_weighed() {
        let site = serve().await;
        let browser = Browser::launch().await;
        let page = browser.page().await;

        assert_eq!(page.goto(&format!("{site}/")).await, 200);
        let ready = "document.querySelector('#late').textContent === 'ready'";
        page.wait_for(ready, Duration::from_secs(5), "the late text")
            .await;
        assert_eq!(page.text("h1").await, "Operations");

        page.click("#press").await;
        assert_eq!(page.text("#out").await, "pressed");
        page.fill("#name", "Lin \"Mei\"").await;
        assert_eq!(page.text("#echo").await, "typed Lin \"Mei\"");
        let styled = page
            .eval("getComputedStyle(document.body).backgroundColor")
            .await;
        assert_eq!(styled, "rgb(238, 238, 255)", "the stylesheet applied");

        let dir = tempfile::tempdir().unwrap();
        let shot = dir.path().join("shots/console.png");
        page.screenshot(&shot).await;
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");

        let timing = page.timing().await;
        let bodies = (PAGE.len() + STYLE.len()) as u64;
        assert!(
            timing.bytes >= bodies && timing.bytes < bodies + 4096,
            "the page and its stylesheet with their headers: {timing:?}"
        );
        assert!(
            timing.first_render_ms > 0.0 && timing.first_render_ms < 10_000.0,
            "{timing:?}"
        );

        assert_eq!(page.click_and_wait_load("#go").await, 200);
        assert_eq!(page.text("#done").await, "done");
        assert!(page.timing().await.bytes < bodies, "only /done's bytes");

        page.set_extra_headers(&[("X-Console-Test", "yes")]).await;
        page.set_cookie(&site, "session", "abc").await;
        assert_eq!(page.goto(&format!("{site}/headers")).await, 200);
        let head = page.text("body").await;
        assert!(head.contains("x-console-test: yes"), "{head}");
        assert!(head.contains("cookie: session=abc"), "{head}");

        assert_eq!(page.goto(&format!("{site}/forbidden")).await, 403);
        assert_eq!(page.goto(&format!("{site}/forbidden-empty")).await, 403);
        let thrown = page.try_eval("nothing.here").await.unwrap_err();
        assert!(thrown.contains("ReferenceError"), "{thrown}");
    }
}
