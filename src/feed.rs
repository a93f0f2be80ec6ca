//! The platform push: every status change, in feed order, POSTed to the one-network platform
//! (一网通办) — the same entries `WindowFeed` streams, for a platform that prefers to be called.
//! One pusher at a time holds the `platform` push cursor (a lease in the store, so with several
//! replicas exactly one pushes and another takes over when it stops); the cursor advances only
//! after the platform answers 2xx, so pushes survive a restart and are never reordered. A failed
//! POST is retried, the same entry, with backoff (0.5 s doubling to 30 s). An entry the platform
//! refuses permanently (a 4xx other than 408 and 429) `[platform] refused_tries` times is set
//! aside (the store's `push_dead`, with the platform's answer; logged and counted) and the push
//! moves on, so one bad entry does not hold back every later one.
//!
//! Each POST: `Content-Type: application/json`, the `FeedEvent` in its JSON form;
//! `X-Yichuang-Timestamp: <unix seconds>` (fresh on every try);
//! `X-Yichuang-Event-Id: <case number>:<seq>` (a receiver drops a repeat by it: after a crash
//! between the platform's 2xx and the cursor's move, the entry is sent again);
//! `X-Yichuang-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>\n<event id>\n<body>" with
//! [platform] secret>`; `X-Yichuang-Cursor: <position>`. [`Freshness`] is the receiver's check
//! (docs/api.md): a signature that matches, a timestamp within its window, an id not seen within
//! it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::{debug, info, warn};

use crate::config::PlatformConfig;
use crate::proto::v1::FeedEvent;
use crate::store::{FeedItem, FeedQuery, PushDead, Store};
use crate::supervise::idle;

const CURSOR: &str = "platform";
const LEASE_MS: i64 = 30_000;

/// Header of the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Yichuang-Timestamp";
/// Header of the event id, `<case number>:<seq>`.
pub const EVENT_ID_HEADER: &str = "X-Yichuang-Event-Id";
/// Header of the signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Yichuang-Signature";

/// Entries set aside since the process started (see [`set_aside_total`]).
static SET_ASIDE: AtomicU64 = AtomicU64::new(0);

/// Entries this process set aside because the platform refused them for good.
pub fn set_aside_total() -> u64 {
    SET_ASIDE.load(Ordering::Relaxed)
}

/// The signature header's value: HMAC-SHA256 of `<timestamp>\n<event id>\n<body>`, so that
/// neither the time nor the id can be changed on a captured push.
pub fn signature(secret: &str, timestamp: i64, event_id: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(event_id.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Why a receiver refuses a push ([`Freshness::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("header {0} is missing or not text")]
    Missing(&'static str),
    #[error("X-Yichuang-Timestamp is not unix seconds")]
    BadTimestamp,
    #[error("the signature does not match (check [platform] secret on both sides)")]
    BadSignature,
    #[error(
        "the push was signed {skew_secs} s away from now, outside the {window_secs} s window (a replay, or a clock to fix)"
    )]
    Stale { skew_secs: i64, window_secs: i64 },
}

/// What a receiver does with a push [`Freshness::check`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// First sight of this event id within the window: apply it.
    New,
    /// The id was seen within the window (a resend or a replay): answer 2xx, apply nothing.
    Repeat,
}

/// The receiver's check of a push, as docs/api.md describes it: the signature over the
/// timestamp, id and body; `|now − timestamp| ≤ window`; ids remembered for the window, so a
/// replay inside it is a repeat and one outside it is stale. A platform written in Rust can use
/// it as is; the tests' receivers do.
#[derive(Debug)]
pub struct Freshness {
    secret: String,
    window_secs: i64,
    /// Event id → the newest timestamp it came with, for `window_secs`.
    seen: Mutex<HashMap<String, i64>>,
}

impl Freshness {
    /// A receiver sharing `secret` with the gateway, accepting timestamps `window_secs` away
    /// from its clock (300 is usual).
    pub fn new(secret: &str, window_secs: i64) -> Freshness {
        Freshness {
            secret: secret.to_string(),
            window_secs,
            seen: Mutex::default(),
        }
    }

    /// Checks one push: its headers' values (`None` when absent), body and the receiver's
    /// clock, unix seconds.
    pub fn check(
        &self,
        timestamp: Option<&str>,
        event_id: Option<&str>,
        signature_value: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Fresh, Refusal> {
        let timestamp = timestamp.ok_or(Refusal::Missing(TIMESTAMP_HEADER))?;
        let id = event_id.ok_or(Refusal::Missing(EVENT_ID_HEADER))?;
        let given = signature_value.ok_or(Refusal::Missing(SIGNATURE_HEADER))?;
        let ts: i64 = timestamp.parse().map_err(|_| Refusal::BadTimestamp)?;
        let expected = signature(&self.secret, ts, id, body);
        // Constant time: a byte-by-byte comparison would tell an attacker how much matched.
        let same = expected.len() == given.len()
            && expected
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(Refusal::BadSignature);
        }
        let skew = now - ts;
        if skew.abs() > self.window_secs {
            return Err(Refusal::Stale {
                skew_secs: skew,
                window_secs: self.window_secs,
            });
        }
        let mut seen = self.seen.lock().expect("not poisoned");
        seen.retain(|_, at| now - *at <= self.window_secs);
        match seen.insert(id.to_string(), ts) {
            Some(_) => Ok(Fresh::Repeat),
            None => Ok(Fresh::New),
        }
    }

    /// Forgets `event_id`: for a receiver that refuses a push [`Freshness::check`] let through
    /// (its content is wrong), so that the next try is checked again instead of being taken for
    /// a repeat.
    pub fn forget(&self, event_id: &str) {
        self.seen.lock().expect("not poisoned").remove(event_id);
    }
}

/// The JSON body of one entry.
pub fn body(item: &FeedItem) -> Vec<u8> {
    let event = FeedEvent {
        cursor: item.position,
        case_number: item.case_number.clone(),
        hall_code: item.hall_code.clone(),
        window_code: item.window_code.clone(),
        event: Some(item.event.clone()),
    };
    serde_json::to_vec(&event).expect("a FeedEvent serialises")
}

/// The push cursor's name in the store.
pub const CURSOR_NAME: &str = CURSOR;

/// Pushes until the task is dropped, as `owner` of the push cursor (the gateway's instance id;
/// the gateway releases the cursor when it stops).
pub async fn run(store: Store, config: PlatformConfig, owner: String) {
    let timeout = Duration::from_secs(config.timeout_secs.unwrap_or(10));
    let builder = reqwest::Client::builder().timeout(timeout);
    let client = match config
        .tls()
        .reqwest(builder, "[platform] client_cert/client_key")
        .map_err(|e| e.to_string())
        .and_then(|b| b.build().map_err(|e| crate::tls::with_causes(&e)))
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "platform push cannot start: fix [platform] ca_file, client_cert, client_key");
            return;
        }
    };
    info!(url = %config.push_url, "platform push starting");
    loop {
        if crate::supervise::stopping() {
            return;
        }
        let cursor = match store.lease_push(CURSOR, &owner, LEASE_MS).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                // Another replica pushes; take over if its lease runs out. Standing by is this
                // worker's work here.
                crate::supervise::progressed();
                if idle(tokio::time::sleep(Duration::from_secs(5)))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
            Err(e) => {
                warn!(error = %e, "platform push cannot read its cursor");
                if idle(tokio::time::sleep(Duration::from_secs(1)))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
        };
        let page = match store
            .feed(FeedQuery {
                after: cursor,
                limit: 100,
                ..Default::default()
            })
            .await
        {
            Ok(page) => {
                crate::supervise::progressed();
                page
            }
            Err(e) => {
                warn!(error = %e, "platform push cannot read the feed");
                if idle(tokio::time::sleep(Duration::from_secs(1)))
                    .await
                    .is_none()
                {
                    return;
                }
                continue;
            }
        };
        if page.is_empty() {
            if idle(tokio::time::sleep(Duration::from_millis(200)))
                .await
                .is_none()
            {
                return;
            }
            continue;
        }
        for item in page {
            if !deliver(&store, &client, &config, &owner, &item).await {
                break; // the lease was lost: start over from the stored cursor
            }
        }
    }
}

/// Whether an answer refuses the entry itself, so sending it again will not help: a 4xx other
/// than 408 (timeout) and 429 (slow down).
fn refused_for_good(status: reqwest::StatusCode) -> bool {
    status.is_client_error()
        && status != reqwest::StatusCode::REQUEST_TIMEOUT
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// POSTs one entry until the platform takes it, or has refused it for good `refused_tries`
/// times (then sets it aside); moves the cursor. False when the lease is gone.
async fn deliver(
    store: &Store,
    client: &reqwest::Client,
    config: &PlatformConfig,
    owner: &str,
    item: &FeedItem,
) -> bool {
    let body = body(item);
    let id = format!("{}:{}", item.case_number, item.event.seq);
    let mut backoff = crate::bus::Backoff::default();
    let mut tries = 0u32;
    let mut refusals = 0u32;
    loop {
        tries += 1;
        let timestamp = chrono::Utc::now().timestamp();
        let sent = client
            .post(&config.push_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(EVENT_ID_HEADER, &id)
            .header(
                SIGNATURE_HEADER,
                signature(&config.secret, timestamp, &id, &body),
            )
            .header("X-Yichuang-Cursor", item.position.to_string())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => break,
            Ok(r) if refused_for_good(r.status()) => {
                refusals += 1;
                let status = r.status();
                // The platform's words, shortened and masked: they may quote the entry.
                let text = r.text().await.unwrap_or_default();
                let reason =
                    crate::privacy::mask_free_text(&text.chars().take(300).collect::<String>());
                if refusals >= config.refused_tries.max(1) {
                    return set_aside(store, owner, item, &id, status, reason, tries).await;
                }
                warn!(event = %id, status = %status, refusals, refused_tries = config.refused_tries, reason = %reason, retry_in_ms = backoff.next().as_millis() as u64, "the platform refused a push; sending it again");
            }
            Ok(r) => {
                warn!(event = %id, status = %r.status(), retry_in_ms = backoff.next().as_millis() as u64, "the platform could not take a push; sending it again")
            }
            Err(e) => {
                warn!(event = %id, error = %crate::tls::with_causes(&e), retry_in_ms = backoff.next().as_millis() as u64, "the platform cannot be reached; sending again")
            }
        }
        if idle(backoff.wait()).await.is_none() {
            return false;
        }
        // Keep the lease while waiting for the platform; stop if another holder moved on.
        match store.lease_push(CURSOR, owner, LEASE_MS).await {
            Ok(Some(position)) if position < item.position => {}
            _ => return false,
        }
    }
    debug!(event = %id, "pushed to the platform");
    // Moving the cursor renews the lease: a long page never outlives it.
    matches!(
        store
            .advance_push(CURSOR, owner, item.position, LEASE_MS)
            .await,
        Ok(true)
    )
}

/// Records the entry as set aside and moves the cursor past it, in one transaction.
async fn set_aside(
    store: &Store,
    owner: &str,
    item: &FeedItem,
    id: &str,
    status: reqwest::StatusCode,
    reason: String,
    tries: u32,
) -> bool {
    let dead = PushDead {
        position: item.position,
        event_id: id.to_string(),
        status: i32::from(status.as_u16()),
        reason: reason.clone(),
        tries: tries as i32,
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    match store.set_aside_push(CURSOR, owner, dead, LEASE_MS).await {
        Ok(true) => {
            SET_ASIDE.fetch_add(1, Ordering::Relaxed);
            warn!(event = %id, status = %status, tries, reason = %reason, "the platform refused an entry for good; set aside in push_dead, pushing the next");
            true
        }
        Ok(false) => false,
        Err(e) => {
            warn!(event = %id, error = %e, "cannot set a refused entry aside; it is sent again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_the_id_and_the_body() {
        // RFC 4231 test case 2, with the message split as "<timestamp>\n<id>\n<body>".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000\nA:1\nwhat do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let s = signature(
            "Jefe",
            1_700_000_000,
            "A:1",
            b"what do ya want for nothing?",
        );
        assert_eq!(s, format!("sha256={hex}"));
        // The same value Python's hmac gives (scripts/chaos_platform.py checks this way).
        assert_eq!(
            s,
            "sha256=1b1193774c999640608f6c731966f256c29d96f29ff6cea3fee086e556b14f27"
        );
        assert_ne!(
            s,
            signature(
                "Jefe",
                1_700_000_001,
                "A:1",
                b"what do ya want for nothing?"
            )
        );
        assert_ne!(
            s,
            signature(
                "Jefe",
                1_700_000_000,
                "A:2",
                b"what do ya want for nothing?"
            )
        );
    }

    #[test]
    fn a_receiver_refuses_stale_and_forged_pushes_and_sees_repeats() {
        let f = Freshness::new("k", 300);
        let sig = signature("k", 1000, "A:1", b"{}");
        let check =
            |ts: &str, sig: &str, now| f.check(Some(ts), Some("A:1"), Some(sig), b"{}", now);
        assert_eq!(check("1000", &sig, 1100), Ok(Fresh::New));
        assert_eq!(check("1000", &sig, 1200), Ok(Fresh::Repeat));
        assert_eq!(
            check("1000", &sig, 1301),
            Err(Refusal::Stale {
                skew_secs: 301,
                window_secs: 300
            })
        );
        assert_eq!(check("1001", &sig, 1100), Err(Refusal::BadSignature));
        assert_eq!(
            f.check(None, Some("A:1"), Some(&sig), b"{}", 1000),
            Err(Refusal::Missing(TIMESTAMP_HEADER))
        );
    }

    #[test]
    fn only_a_refusal_of_the_entry_itself_is_for_good() {
        use reqwest::StatusCode as S;
        assert!(refused_for_good(S::BAD_REQUEST));
        assert!(refused_for_good(S::UNAUTHORIZED));
        assert!(refused_for_good(S::UNPROCESSABLE_ENTITY));
        assert!(!refused_for_good(S::REQUEST_TIMEOUT));
        assert!(!refused_for_good(S::TOO_MANY_REQUESTS));
        assert!(!refused_for_good(S::SERVICE_UNAVAILABLE));
    }
}
