//! Callbacks from legacy systems (`POST /callback/<dept>`, served by [`crate::http`] on a
//! listener of their own): who may send one, and what it leads to.
//!
//! A callback must be signed: HMAC-SHA256 with the department's secret (`callbacks.secret`) over
//! `<timestamp>\n<nonce>\n<METHOD>\n<path>\n<body>`, in `X-Yichuang-Signature: sha256=<hex>`,
//! with `X-Yichuang-Timestamp` (Unix seconds) and `X-Yichuang-Nonce`. One that is unsigned,
//! badly signed, outside the freshness window (`callbacks.window_secs`) or a replay of a nonce
//! seen within it is refused ([`Refusal`]), before anything is read from it.
//!
//! A verified callback is, by default, only a reason to ask: the task it names is polled now
//! ([`super::worker`]'s poll, as if its scheduled poll had come), and what the legacy system
//! answers is published — so a forged or mistaken callback cannot decide a case. Only a
//! department whose callbacks are `trusted` has what the callback says published as its answer.
//! Either way the scheduled polling chain still runs (a callback may be lost).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use yichuang::proto::v1::{ResultKind, ResultMessage};

use super::department::Department;
use super::publisher::{Publisher, decided, now};
use super::worker::Worker;
use crate::system::Answer;

/// The header of a callback's Unix time, in seconds.
pub const TIMESTAMP: &str = "x-yichuang-timestamp";
/// The header of a callback's nonce (1 to 128 characters, letters, digits, `-` and `_`).
pub const NONCE: &str = "x-yichuang-nonce";
/// The header of a callback's signature, `sha256=<lowercase hex>`.
pub const SIGNATURE: &str = "x-yichuang-signature";

/// The signature of a callback, as the `X-Yichuang-Signature` value: `sha256=<hex>` of
/// HMAC-SHA256 with `secret` over `<timestamp>\n<nonce>\n<METHOD>\n<path>\n<body>`. Legacy
/// systems (and the simulators) sign this way.
pub fn sign(
    secret: &[u8],
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let mac = mac(secret, timestamp, nonce, method, path, body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn mac(
    secret: &[u8],
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    for part in [timestamp, nonce, &method.to_ascii_uppercase(), path] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.update(body);
    mac
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a callback carries to be checked.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
}

/// Why a callback was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The department has no `callbacks.secret`: it takes no callbacks.
    NoSecret,
    /// A signature, timestamp or nonce header is missing or malformed.
    Unsigned,
    /// The signature is not the department's.
    BadSignature,
    /// The timestamp is outside the freshness window.
    Stale,
    /// The nonce was seen within the window.
    Replayed,
    /// Too many nonces to remember within the window: refused rather than forgetting one.
    Busy,
}

impl Refusal {
    /// The reason's name, for the audit record and the metric.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NoSecret => "no_secret",
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::Busy => "busy",
        }
    }

    /// What the caller is told (no detail an attacker could use beyond the reason).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoSecret => "this department takes no callbacks (no callbacks.secret)",
            Refusal::Unsigned => {
                "unsigned: X-Yichuang-Timestamp, X-Yichuang-Nonce and X-Yichuang-Signature are required"
            }
            Refusal::BadSignature => "bad signature",
            Refusal::Stale => "timestamp outside the freshness window",
            Refusal::Replayed => "nonce already used",
            Refusal::Busy => "too many callbacks; send it again later",
        }
    }
}

/// Nonces seen within the freshness window, bounded: each is kept for twice the window after it
/// arrived (a timestamp may be up to a window ahead), then forgotten.
#[derive(Default)]
pub struct Nonces {
    seen: HashSet<String>,
    /// (forgotten after, nonce), in arrival order, so expiry is from the front.
    order: VecDeque<(i64, String)>,
}

impl Nonces {
    /// Nonces one department remembers at most; beyond it callbacks are refused ([`Refusal::Busy`]).
    pub const CAPACITY: usize = 100_000;

    /// Remembers `nonce` at `now` (Unix seconds) for `keep` seconds.
    fn remember(&mut self, nonce: &str, now: i64, keep: i64) -> Result<(), Refusal> {
        while let Some((until, _)) = self.order.front()
            && *until < now
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains(nonce) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= Self::CAPACITY {
            return Err(Refusal::Busy);
        }
        self.seen.insert(nonce.to_string());
        self.order.push_back((now + keep, nonce.to_string()));
        Ok(())
    }
}

/// Checks a callback for `department` at `now` (Unix seconds): its signature, freshness and
/// nonce, in that order (a nonce is remembered only once the signature is the department's).
pub fn verify(department: &Department, signed: &Signed<'_>, now: i64) -> Result<(), Refusal> {
    let Some(secret) = department.callback_secret.as_deref() else {
        return Err(Refusal::NoSecret);
    };
    let (Some(timestamp), Some(nonce), Some(signature)) =
        (signed.timestamp, signed.nonce, signed.signature)
    else {
        return Err(Refusal::Unsigned);
    };
    let nonce_ok = (1..=128).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let Some(given) = signature.strip_prefix("sha256=").and_then(unhex) else {
        return Err(Refusal::Unsigned);
    };
    if !nonce_ok {
        return Err(Refusal::Unsigned);
    }
    let mac = mac(
        secret,
        timestamp,
        nonce,
        signed.method,
        signed.path,
        signed.body,
    );
    // Compared in constant time.
    mac.verify_slice(&given)
        .map_err(|_| Refusal::BadSignature)?;
    let window = i64::try_from(department.config.callbacks.window_secs).unwrap_or(i64::MAX);
    let at: i64 = timestamp.trim().parse().map_err(|_| Refusal::Unsigned)?;
    if (now - at).abs() > window {
        return Err(Refusal::Stale);
    }
    department
        .nonces
        .lock()
        .expect("nonces")
        .remember(nonce, now, window.saturating_mul(2))
}

/// What a verified callback led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Trusted: what it says was published.
    Published,
    /// The task was polled now; what was found.
    Polled(&'static str),
    /// No task of that id is being polled by this process (another replica polls it, or it
    /// has its outcome): its scheduled poll covers it.
    NotPolledHere,
}

/// Handles verified callbacks on the current session's publisher. Used by the HTTP endpoint.
pub struct Callbacks {
    pub(super) publisher: tokio::sync::RwLock<Option<Arc<Publisher>>>,
}

impl Callbacks {
    pub fn new() -> Arc<Callbacks> {
        Arc::new(Callbacks {
            publisher: tokio::sync::RwLock::new(None),
        })
    }

    async fn publisher(&self) -> Result<Arc<Publisher>, String> {
        self.publisher
            .read()
            .await
            .clone()
            .ok_or_else(|| "not connected to RabbitMQ".to_string())
    }

    /// What a verified callback about `task_id` leads to: published as it says when the
    /// department's callbacks are trusted, else the task polled now.
    pub async fn handle(
        &self,
        department: &Arc<Department>,
        task_id: &str,
        answer: &Answer,
    ) -> Result<Handled, String> {
        if department.config.callbacks.trusted {
            return self
                .publish(department, task_id, answer)
                .await
                .map(|()| Handled::Published);
        }
        let Some((message, at)) = department.polled.lock().expect("polled").get(task_id) else {
            return Ok(Handled::NotPolledHere);
        };
        let worker = Worker {
            department: department.clone(),
            publisher: self.publisher().await?,
        };
        Ok(Handled::Polled(worker.poll_now(message, at).await))
    }

    /// Publishes the step and decision a trusted callback carries; the polling chain still
    /// runs (a callback may be lost), and consumers drop the second copy by `message_id`. A
    /// callback does not say which supplement round it is about: its results are round 0,
    /// which the gateway takes as stale once the task resumed after a supplement — that
    /// round's results come from polling.
    async fn publish(
        &self,
        department: &Department,
        task_id: &str,
        answer: &Answer,
    ) -> Result<(), String> {
        let publisher = self.publisher().await?;
        let reading = department.read(answer);
        let base = ResultMessage {
            task_id: task_id.to_string(),
            case_number: super::case_of(task_id).to_string(),
            department: department.code().to_string(),
            department_case_number: reading.department_case_number.clone().unwrap_or_default(),
            at: Some(now()),
            ..Default::default()
        };
        if let Some(step) = reading.step {
            publisher
                .result(
                    ResultMessage {
                        kind: ResultKind::Progress as i32,
                        step,
                        ..base.clone()
                    },
                    None,
                )
                .await?;
        }
        let Some(decision) = reading.decision else {
            return Ok(());
        };
        publisher.result(decided(base, decision), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_again_within_its_time_and_memory_is_bounded_by_expiry() {
        let mut n = Nonces::default();
        assert_eq!(n.remember("a", 1000, 600), Ok(()));
        assert_eq!(n.remember("a", 1500, 600), Err(Refusal::Replayed));
        assert_eq!(n.remember("b", 1500, 600), Ok(()));
        // After its time "a" is forgotten (its timestamp is stale by then anyway).
        assert_eq!(n.remember("c", 1601, 600), Ok(()));
        assert_eq!(n.seen.len(), 2, "a expired: {:?}", n.order);
    }

    #[test]
    fn signatures_cover_timestamp_nonce_method_path_and_body() {
        let s = sign(b"k", "1700000000", "n1", "post", "/callback/scjg", b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_eq!(
            s,
            sign(b"k", "1700000000", "n1", "POST", "/callback/scjg", b"{}")
        );
        for other in [
            sign(b"k", "1700000001", "n1", "POST", "/callback/scjg", b"{}"),
            sign(b"k", "1700000000", "n2", "POST", "/callback/scjg", b"{}"),
            sign(b"k", "1700000000", "n1", "PUT", "/callback/scjg", b"{}"),
            sign(b"k", "1700000000", "n1", "POST", "/callback/xf", b"{}"),
            sign(b"k", "1700000000", "n1", "POST", "/callback/scjg", b"{ }"),
            sign(b"j", "1700000000", "n1", "POST", "/callback/scjg", b"{}"),
        ] {
            assert_ne!(s, other);
        }
    }
}
