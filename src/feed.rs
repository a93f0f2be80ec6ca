//! The platform push: every status change, in feed order, POSTed to the one-network platform
//! (一网通办) — the same entries `WindowFeed` streams, for a platform that prefers to be called.
//! One pusher at a time holds the `platform` push cursor (a lease in the store, so with several
//! replicas exactly one pushes and another takes over when it stops); the cursor advances only
//! after the platform answers 2xx, so pushes survive a restart and are never reordered. A failed
//! POST is retried, the same entry, with backoff (0.5 s doubling to 30 s).
//!
//! Each POST: `Content-Type: application/json`, the `FeedEvent` in its JSON form;
//! `X-Yichuang-Signature: sha256=<hex HMAC-SHA256 of the body with [platform] secret>`;
//! `X-Yichuang-Event-Id: <case number>:<seq>` (a receiver drops a repeat by it: after a crash
//! between the platform's 2xx and the cursor's move, the entry is sent again);
//! `X-Yichuang-Cursor: <position>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::{debug, info, warn};

use crate::config::PlatformConfig;
use crate::proto::v1::FeedEvent;
use crate::store::{FeedItem, FeedQuery, Store};
use crate::supervise::idle;

const CURSOR: &str = "platform";
const LEASE_MS: i64 = 30_000;

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
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
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "platform push cannot start");
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

/// POSTs one entry until the platform takes it; moves the cursor. False when the lease is gone.
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
    loop {
        let sent = client
            .post(&config.push_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Yichuang-Signature", signature(&config.secret, &body))
            .header("X-Yichuang-Event-Id", &id)
            .header("X-Yichuang-Cursor", item.position.to_string())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => break,
            Ok(r) => {
                warn!(event = %id, status = %r.status(), retry_in_ms = backoff.next().as_millis() as u64, "the platform refused a push; sending it again")
            }
            Err(e) => {
                warn!(event = %id, error = %e, retry_in_ms = backoff.next().as_millis() as u64, "the platform cannot be reached; sending again")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
