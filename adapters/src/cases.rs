//! Reading the gateway's cases as a role of one's own, shared by the processes that follow the
//! cases' history (the reporter, the notifier): the `[gateway]` settings (the windows' listener,
//! a client certificate naming the role, so every read is in the gateway's access log), the
//! lazy channel to it, the pace of calls, and one call asked again when the gateway says to wait.
//!
//! This module owns the client side of `CaseService` for them; what they do with a case is theirs.

use std::time::Duration;

use serde::Deserialize;
use tonic::transport::Channel;
use tracing::{debug, warn};
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{GetCaseRequest, GetCaseResponse};

fn default_calls_per_second() -> u32 {
    20
}

/// How a follower reaches the gateway (`GetCase`, `ListCases`): its windows' listener, with a
/// client certificate naming the follower's role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub url: String,
    /// Calls a second to the gateway at most (its `[limits] per_caller` is the ceiling; a call
    /// refused with RESOURCE_EXHAUSTED is asked again after the `retry-after` it names).
    #[serde(default = "default_calls_per_second")]
    pub calls_per_second: u32,
    #[serde(flatten)]
    pub tls: yichuang::tls::ClientTls,
}

impl GatewayConfig {
    /// A channel to the gateway, connected when first used.
    pub fn channel(&self) -> Result<Channel, String> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.url.clone())
            .map_err(|e| format!("[gateway] url: {e}"))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30));
        if self.url.starts_with("https://") {
            let ca = self.tls.ca_file.as_deref().ok_or(
                "[gateway] ca_file: the CA that signs the gateway's certificate is required for https",
            )?;
            let identity = self
                .tls
                .client_cert
                .as_deref()
                .zip(self.tls.client_key.as_deref());
            let host = endpoint.uri().host().unwrap_or("localhost").to_string();
            let tls = yichuang::auth::tls::client(ca, identity, &host)?;
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        Ok(endpoint.connect_lazy())
    }
}

/// A limit on the calls a second to the gateway.
pub type Pace = governor::DefaultDirectRateLimiter;

/// A pace of `per_second` calls (at least 1).
pub fn pace(per_second: u32) -> Pace {
    let n = std::num::NonZeroU32::new(per_second.max(1)).expect("at least 1");
    governor::RateLimiter::direct(governor::Quota::per_second(n))
}

/// How many times a call the gateway refused for its rate (or shed) is asked again.
const GATEWAY_TRIES: u32 = 8;

/// Calls the gateway at `pace`; a call refused for the gateway's rate (or shed under overload)
/// is asked again after the wait it names, a few times. The error names `what` and says the
/// gateway's words.
pub async fn call<T, F, Fut>(
    pace: &Pace,
    gateway: &CaseServiceClient<Channel>,
    what: &str,
    call: F,
) -> Result<T, String>
where
    F: Fn(CaseServiceClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    call_status(pace, gateway, what, call)
        .await
        .map_err(|s| format!("{what}: {}", s.message()))
}

/// Why a changed case could not be read again, and so how soon it is tried again.
#[derive(Debug)]
pub enum Unread {
    /// Not mended in seconds: the gateway knows no such case, or the follower's own settings
    /// cannot make what it derives from the case. Tried again after five minutes.
    Lasting(String),
    /// The gateway unreachable or refusing for now, the ledger busy: tried again in seconds.
    Passing(String),
}

impl Unread {
    /// How long before the case is tried again, in milliseconds.
    pub fn retry_in_ms(&self) -> i64 {
        match self {
            Unread::Lasting(_) => 300_000,
            Unread::Passing(_) => 5_000,
        }
    }
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Lasting(e) | Unread::Passing(e) => f.write_str(e),
        }
    }
}

/// Reads case `case_number` (`GetCase`, at `pace`); a case the gateway does not know is a
/// lasting failure.
pub async fn get_case(
    pace: &Pace,
    gateway: &CaseServiceClient<Channel>,
    case_number: &str,
) -> Result<GetCaseResponse, Unread> {
    let request = GetCaseRequest {
        case_number: case_number.to_string(),
    };
    let what = format!("GetCase {case_number}");
    call_status(pace, gateway, &what, |mut g| {
        let r = request.clone();
        async move { g.get_case(r).await }
    })
    .await
    .map_err(|s| {
        let e = format!("{what}: {}", s.message());
        match s.code() {
            tonic::Code::NotFound => Unread::Lasting(e),
            _ => Unread::Passing(e),
        }
    })
}

/// [`call`], with the gateway's status as the error.
async fn call_status<T, F, Fut>(
    pace: &Pace,
    gateway: &CaseServiceClient<Channel>,
    what: &str,
    call: F,
) -> Result<T, tonic::Status>
where
    F: Fn(CaseServiceClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        pace.until_ready().await;
        match call(gateway.clone()).await {
            Ok(answer) => return Ok(answer.into_inner()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                ) && tries < GATEWAY_TRIES =>
            {
                tries += 1;
                let wait = s
                    .metadata()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(
                        Duration::from_millis(500 * u64::from(tries)),
                        Duration::from_secs,
                    );
                debug!(what, code = ?s.code(), wait_ms = wait.as_millis() as u64, "the gateway asks to wait");
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// Parses a hall's UTC offset as written in a follower's settings (`+08:00`).
pub fn offset(utc_offset: &str) -> Result<chrono::FixedOffset, String> {
    let t = chrono::DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{utc_offset}"))
        .map_err(|_| format!("utc_offset {utc_offset:?}: write +08:00"))?;
    Ok(*t.offset())
}

/// Consumes a follower's queue of history entries (`queue`, as `tag`): each entry marks its
/// case changed (`mark`, durable before it returns), then is acknowledged, so an entry is never
/// lost between the two; an entry given twice only marks its case again. Runs until the
/// future is dropped, connecting again after a loss.
pub async fn consume_history<M>(
    who: &'static str,
    bus: yichuang::config::BusConfig,
    queue: String,
    hint: &'static str,
    mark: M,
) where
    M: Fn(&str) -> Result<(), String> + Clone + Send + Sync + 'static,
{
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use prost::Message;
    use tokio_stream::StreamExt;
    use tracing::{info, warn};
    yichuang::bus::reconnecting(who, || {
        let bus = bus.clone();
        let queue = queue.clone();
        let mark = mark.clone();
        async move {
            use yichuang::bus::Ended;
            let connection = match yichuang::bus::connect(&bus).await {
                Ok(c) => c,
                Err(e) => return Ended::Unreachable(e.to_string()),
            };
            let channel = match connection.create_channel().await {
                Ok(c) => c,
                Err(e) => return Ended::Unreachable(e.to_string()),
            };
            if let Err(e) = channel.basic_qos(256, BasicQosOptions::default()).await {
                return Ended::Unreachable(e.to_string());
            }
            let mut consumer = match channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("yichuang-{who}").as_str().into(),
                    BasicConsumeOptions::default(),
                    lapin::types::FieldTable::default(),
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    return Ended::Unreachable(format!("{queue}: {e} ({hint})"));
                }
            };
            info!(queue = %queue, "{who} consuming");
            while let Some(delivery) = consumer.next().await {
                let delivery = match delivery {
                    Ok(d) => d,
                    Err(e) => return Ended::Lost(e.to_string()),
                };
                match yichuang::proto::v1::EventMessage::decode(delivery.data.as_slice()) {
                    Ok(m) if !m.case_number.is_empty() => {
                        if let Err(e) = mark(&m.case_number) {
                            // Not acknowledged: the broker gives it again.
                            warn!(error = %e, "cannot note a changed case");
                            return Ended::Lost(e);
                        }
                    }
                    _ => warn!(queue = %queue, "an entry that is not a case's history entry; dropped"),
                }
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    return Ended::Lost(e.to_string());
                }
            }
            Ended::Lost("consumer ended".into())
        }
    })
    .await
}

/// The SQLite file of a follower (the reporter's ledger, the notifier's): opened in WAL with
/// synchronous FULL (a case noted changed is on disk before its entry is acknowledged), with
/// the table of the cases whose history changed and must be read again, beside the follower's
/// own tables.
pub struct CaseLedger {
    connection: std::sync::Mutex<rusqlite::Connection>,
    /// Whose ledger, for errors (`reporter ledger: …`).
    what: &'static str,
}

const DIRTY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dirty (
    case_number TEXT PRIMARY KEY,
    since_ms    INTEGER NOT NULL,
    next_ms     INTEGER NOT NULL DEFAULT 0
);
";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CaseLedger {
    /// Opens (or makes) the file at `path` with the follower's `schema` and the dirty table.
    pub fn open(
        path: &std::path::Path,
        schema: &str,
        what: &'static str,
    ) -> Result<CaseLedger, String> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        }
        let c = rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        c.busy_timeout(Duration::from_secs(10))
            .and_then(|_| c.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| c.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| c.execute_batch(schema))
            .and_then(|_| c.execute_batch(DIRTY_SCHEMA))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(CaseLedger {
            connection: std::sync::Mutex::new(c),
            what,
        })
    }

    /// Runs `f` on the file. A write waits for its fsync (and for the file, while an operator's
    /// command holds it): on a multi-threaded runtime that wait is taken off the async workers,
    /// so the consumer and the sender go on meanwhile.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, String> {
        let run = || {
            let c = self.connection.lock().unwrap_or_else(|p| p.into_inner());
            f(&c).map_err(|e| format!("{}: {e}", self.what))
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    /// Notes that a case's history changed (kept until it is read again).
    pub fn mark_dirty(&self, case_number: &str) -> Result<(), String> {
        self.with(|c| {
            c.execute(
                "INSERT INTO dirty (case_number, since_ms, next_ms) VALUES (?1, ?2, 0)
                 ON CONFLICT (case_number) DO UPDATE SET since_ms = excluded.since_ms, next_ms = 0",
                rusqlite::params![case_number, now_ms()],
            )
            .map(drop)
        })
    }

    /// Up to `n` cases to read again, with the mark each was taken at.
    pub fn dirty(&self, n: i64) -> Result<Vec<(String, i64)>, String> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT case_number, since_ms FROM dirty WHERE next_ms <= ?1 ORDER BY since_ms LIMIT ?2",
            )?;
            s.query_map(rusqlite::params![now_ms(), n], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// The case was read at mark `since_ms`; a newer mark stays.
    pub fn clean(&self, case_number: &str, since_ms: i64) -> Result<(), String> {
        self.with(|c| {
            c.execute(
                "DELETE FROM dirty WHERE case_number = ?1 AND since_ms = ?2",
                rusqlite::params![case_number, since_ms],
            )
            .map(drop)
        })
    }

    /// One pass over up to `batch` changed cases: each is read again with `refresh` and marked
    /// read, or, when it could not be, tried again after [`Unread::retry_in_ms`]. How many
    /// cases the pass took.
    pub async fn refresh_dirty<F, Fut>(&self, batch: i64, refresh: F) -> Result<usize, String>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<usize, Unread>>,
    {
        let dirty = self.dirty(batch)?;
        let n = dirty.len();
        for (case_number, since) in dirty {
            match refresh(case_number.clone()).await {
                Ok(_) => self.clean(&case_number, since)?,
                Err(e) => {
                    let wait = e.retry_in_ms();
                    warn!(case = %case_number, error = %e, retry_in_ms = wait, "cannot read the case; trying again");
                    self.later(&case_number, wait)?;
                }
            }
        }
        Ok(n)
    }

    /// The case could not be read: try again after `delay_ms`.
    pub fn later(&self, case_number: &str, delay_ms: i64) -> Result<(), String> {
        self.with(|c| {
            c.execute(
                "UPDATE dirty SET next_ms = ?2 WHERE case_number = ?1",
                rusqlite::params![case_number, now_ms() + delay_ms],
            )
            .map(drop)
        })
    }
}
