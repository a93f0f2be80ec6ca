//! The gRPC API: `CaseService` (PreCheck, Submit, GetCase, ListCases), the standard health
//! service and server reflection. Handlers translate between the wire and intake/store; they
//! hold no business rules. Entry point: [`serve`], which takes its listener and a shutdown
//! future, so tests run the real server on `127.0.0.1:0`.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::calendar::LiveCalendar;
use crate::case;
use crate::catalog::Catalog;
use crate::config::GatewayConfig;
use crate::intake::normalise;
use crate::intake::{Intake, IntakeError, Outcome, content_hash};
use crate::proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use crate::proto::v1::case_service_server::{CaseService, CaseServiceServer};
use crate::proto::v1::{
    CaseStatus, GetCaseRequest, GetCaseResponse, ListCasesRequest, ListCasesResponse,
    PreCheckRequest, PreCheckResponse, Submission, SubmitRequest, SubmitResponse,
};
use crate::proto::v1::{StatusRequest, StatusResponse};
use crate::store::{Attempt, Evaluated, ListQuery, Store, StoreError, SubmitCommand, SubmitResult};
use crate::supervise::supervise;

/// How often health checks the store.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest page of `ListCases`.
pub const MAX_PAGE_SIZE: i32 = 500;

/// Everything the API needs: intake and the store.
pub struct Gateway {
    pub intake: Intake,
    pub store: Store,
    pub max_message_bytes: usize,
    /// The bus settings and topology when the outbox relay runs in this gateway.
    pub relay: Option<(crate::config::BusConfig, crate::bus::Topology)>,
    /// Wakes the relay when a case is accepted, so tasks leave without waiting for its poll.
    pub wake: Arc<tokio::sync::Notify>,
    /// The bus settings (also when the relay runs elsewhere): dead-letter operations use them.
    pub bus: crate::config::BusConfig,
    /// The relay's view of the broker.
    pub relay_status: Arc<crate::outbox::RelayStatus>,
    /// The platform push, when `[platform] push_url` is set.
    pub platform: Option<crate::config::PlatformConfig>,
    /// This gateway process, as the holder of leases (the platform push cursor).
    pub instance: String,
    /// The legal clock: calendar, zone, warning share and time source.
    pub clocks: crate::clock::Clocks,
    /// How often the SLA sweeper looks; `None`: this replica does not sweep.
    pub sweep_every: Option<std::time::Duration>,
    /// How often the calendar directory is looked at (`None`: on `SIGHUP` only).
    pub calendar_check: Option<std::time::Duration>,
    /// Stalled tasks: looked for when the relay runs here and `check_secs` is not 0.
    pub stall: crate::config::StallConfig,
    /// The background workers and their restarts.
    pub workers: Arc<crate::supervise::Workers>,
    /// The bound `/metrics` listener, taken by [`serve`]; its address.
    metrics: std::sync::Mutex<Option<TcpListener>>,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the acceptance list is invalid:\n{0}")]
    Catalog(#[from] crate::catalog::CatalogErrors),
    #[error("the calendar is invalid:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Calendar(Vec<crate::config::ConfigProblem>),
    #[error("intake settings: {0}")]
    Intake(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("[platform] {0}")]
    Platform(String),
    #[error("[metrics] {0}")]
    Metrics(String),
}

impl Gateway {
    /// Loads the catalog and calendar, opens the store. Refuses to start on an invalid catalog.
    pub async fn from_config(config: &GatewayConfig) -> Result<Gateway, StartError> {
        Self::with_clock(config, crate::clock::system_now()).await
    }

    /// [`Gateway::from_config`] with the legal clock's time taken from `now`.
    pub async fn with_clock(
        config: &GatewayConfig,
        now: crate::clock::Now,
    ) -> Result<Gateway, StartError> {
        let catalog = Arc::new(Catalog::load(&config.catalog_dir)?);
        let calendar = LiveCalendar::load(&config.calendar_dir)
            .map_err(StartError::Calendar)?
            .warning_from(
                config
                    .calendar
                    .warn_from_day()
                    .map_err(StartError::Intake)?,
            );
        let intake = Intake::new(catalog, calendar.clone(), config.intake.clone())
            .map_err(StartError::Intake)?;
        let clocks =
            crate::clock::Clocks::new(calendar, intake.offset(), config.sla.warn_share, now)
                .map_err(StartError::Intake)?;
        let p = &config.platform;
        if !p.push_url.is_empty() {
            if !p.push_url.starts_with("http://") && !p.push_url.starts_with("https://") {
                return Err(StartError::Platform(format!(
                    "push_url {:?} is not an http:// or https:// URL",
                    p.push_url
                )));
            }
            if p.secret.is_empty() {
                return Err(StartError::Platform(
                    "push_url is set but secret is empty: pushes are signed; set secret (e.g. \"${YICHUANG_PLATFORM_SECRET}\")".into(),
                ));
            }
        }
        let store = Store::open(&config.store).await?;
        let metrics = match config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Metrics(format!("cannot listen on {addr}: {e}")))?,
            ),
            None => None,
        };
        let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
        let relay = config.bus.relay.then(|| {
            let topology = crate::bus::Topology::for_catalog(intake.catalog(), &config.bus);
            (config.bus.clone(), topology)
        });
        Ok(Gateway {
            intake,
            store,
            max_message_bytes: config.server.max_message_bytes,
            relay,
            wake: Arc::new(tokio::sync::Notify::new()),
            relay_status: Arc::new(crate::outbox::RelayStatus::default()),
            bus: config.bus.clone(),
            platform: (!config.platform.push_url.is_empty()).then(|| config.platform.clone()),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            clocks,
            sweep_every: (config.sla.sweep_secs > 0)
                .then(|| std::time::Duration::from_secs(config.sla.sweep_secs)),
            stall: config.stall.clone(),
            workers: Arc::default(),
            calendar_check: (config.calendar.check_secs > 0)
                .then(|| std::time::Duration::from_secs(config.calendar.check_secs)),
            metrics: std::sync::Mutex::new(metrics),
            metrics_addr,
        })
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CaseServiceServer<CaseApi>>().await;
    // Health follows the store: a gateway that cannot record cases must not get traffic.
    let watcher = tokio::spawn({
        let (health, gateway) = (health.clone(), gateway.clone());
        async move {
            let mut serving = true;
            loop {
                tokio::time::sleep(HEALTH_INTERVAL).await;
                // `yichuang.bus` follows the relay's broker connection; Submit does not depend on it.
                if gateway.relay.is_some() {
                    let status = if gateway.relay_status.get().0 {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status("yichuang.bus", status).await;
                }
                let ok = matches!(
                    tokio::time::timeout(HEALTH_INTERVAL, gateway.store.ping()).await,
                    Ok(Ok(()))
                );
                if ok != serving {
                    serving = ok;
                    if ok {
                        info!("store answers again: serving");
                        health.set_serving::<CaseServiceServer<CaseApi>>().await;
                    } else {
                        warn!("store does not answer: not serving");
                        health.set_not_serving::<CaseServiceServer<CaseApi>>().await;
                    }
                }
            }
        }
    });
    let relay = gateway.relay.clone().map(|(config, topology)| {
        let g = gateway.clone();
        let bus = config.clone();
        let results = supervise(gateway.workers.clone(), "results", move || {
            crate::results::run(
                g.store.clone(),
                bus.clone(),
                g.wake.clone(),
                g.clocks.now_source(),
            )
        });
        let g = gateway.clone();
        let relay = supervise(gateway.workers.clone(), "relay", move || {
            crate::outbox::run(
                g.store.clone(),
                topology.clone(),
                config.clone(),
                g.wake.clone(),
                g.relay_status.clone(),
                g.clocks.now_source(),
            )
        });
        let stall = (gateway.stall.check_secs > 0).then(|| {
            let g = gateway.clone();
            supervise(gateway.workers.clone(), "stall", move || {
                crate::stall::run(
                    g.store.clone(),
                    g.stall.clone(),
                    g.wake.clone(),
                    g.clocks.now_source(),
                )
            })
        });
        (relay, results, stall)
    });
    let metrics = gateway
        .metrics
        .lock()
        .expect("metrics listener lock")
        .take()
        .map(|listener| {
            let router = crate::metrics::router(
                gateway.store.clone(),
                gateway.clocks.clone(),
                gateway.intake.shared_catalog(),
                gateway.relay.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    warn!(error = %e, "the metrics endpoint stopped");
                }
            })
        });
    let sweeper = gateway.sweep_every.map(|every| {
        let g = gateway.clone();
        supervise(gateway.workers.clone(), "sweeper", move || {
            crate::clock::run(g.store.clone(), g.clocks.clone(), every)
        })
    });
    // The calendar may have changed since these deadlines were counted (a file added while the
    // gateway was down): count the open tasks again, then follow the directory.
    let g = gateway.clone();
    let calendar_watch = supervise(gateway.workers.clone(), "calendar", move || {
        crate::calendar::watch(
            g.clocks.calendar().clone(),
            g.store.clone(),
            g.calendar_check,
            true,
        )
    });
    let (store_for_release, instance) = (gateway.store.clone(), gateway.instance.clone());
    let push = gateway.platform.clone().map(|config| {
        let g = gateway.clone();
        supervise(gateway.workers.clone(), "push", move || {
            crate::feed::run(g.store.clone(), config.clone(), g.instance.clone())
        })
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let limit = gateway.max_message_bytes;
    let admin_gateway = gateway.clone();
    let cases = CaseServiceServer::new(CaseApi { gateway })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(64 * 1024 * 1024);
    let result = tonic::transport::Server::builder()
        .layer(crate::observe::RpcLayer)
        .layer(tower::util::MapResponseLayer::new(move |r| {
            size_limit_status(r, limit)
        }))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(cases)
        .add_service(AdminServiceServer::new(AdminApi {
            gateway: admin_gateway,
        }))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await;
    watcher.abort();
    calendar_watch.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Some(push) = push {
        push.abort();
        // Another replica (or the next run) takes over at once.
        let _ = store_for_release
            .release_push(crate::feed::CURSOR_NAME, &instance)
            .await;
    }
    if let Some(relay) = relay {
        relay.0.abort();
        relay.1.abort();
        if let Some(stall) = relay.2 {
            stall.abort();
        }
    }
    result
}

/// Accepted connections with Nagle's algorithm off: a response written in several small
/// frames must not wait for the client's delayed ACK (a 40 ms stall per answer otherwise).
pub fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|stream| {
        if let Ok(s) = &stream {
            let _ = s.set_nodelay(true);
        }
        stream
    })
}

/// tonic refuses an oversized request with `OUT_OF_RANGE`; gRPC clients expect
/// `RESOURCE_EXHAUSTED` naming the limit, so the status is rewritten here, in one place.
fn size_limit_status<B>(mut response: http::Response<B>, limit: usize) -> http::Response<B> {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.to_str().is_ok_and(|m| m.contains("too%20large")));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        let message = format!(
            "request: larger than the limit of {limit} bytes (server.max_message_bytes); send file references, not file contents"
        );
        let encoded: String = message
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b".-_();".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(v) = http::HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", v);
        }
    }
    response
}

/// The `AdminService` implementation.
pub struct AdminApi {
    gateway: Arc<Gateway>,
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let store = &self.gateway.store;
        let backlogs = async { Ok((store.outbox_backlog().await?, store.events_backlog().await?)) };
        let (store_ok, store_error, (backlog, events_backlog)) =
            match backlogs.await as Result<_, crate::store::StoreError> {
                Ok(n) => (true, String::new(), n),
                Err(e) => (false, e.to_string(), (-1, -1)),
            };
        let (broker_connected, broker_error) = self.gateway.relay_status.get();
        let clocks = &self.gateway.clocks;
        let live = clocks.calendar();
        let (now, zone) = (clocks.now(), clocks.zone());
        let (loaded_at, reload_problems) = live.loaded();
        let calendar = crate::proto::v1::CalendarStatus {
            years: live.current().years().collect(),
            next_year_missing: live.next_year_missing(now, zone),
            warning: live.warning(now, zone).unwrap_or_default(),
            provisional_deadlines: store.provisional_open().await.unwrap_or(-1),
            loaded_at: Some(case::timestamp(loaded_at)),
            reload_problems,
        };
        Ok(Response::new(StatusResponse {
            store_ok,
            store_error,
            relay_enabled: self.gateway.relay.is_some(),
            broker_connected,
            broker_error,
            outbox_backlog: backlog,
            events_backlog,
            calendar: Some(calendar),
            workers: self
                .gateway
                .workers
                .states()
                .into_iter()
                .map(|(name, s)| crate::proto::v1::WorkerStatus {
                    name: name.to_string(),
                    running: s.running,
                    restarts: s.restarts as i64,
                    last_failure: s.last_failure,
                    last_progress: chrono::DateTime::from_timestamp_millis(s.last_progress_ms)
                        .filter(|_| s.last_progress_ms > 0)
                        .map(crate::case::timestamp),
                })
                .collect(),
        }))
    }

    async fn on_time_rates(
        &self,
        request: Request<crate::proto::v1::OnTimeRatesRequest>,
    ) -> Result<Response<crate::proto::v1::OnTimeRatesResponse>, Status> {
        let r = request.into_inner();
        let rows = self
            .gateway
            .store
            .on_time(
                r.department.trim(),
                r.item_code.trim(),
                self.gateway.clocks.now(),
            )
            .await
            .map_err(store_status)?;
        let rates = rows
            .into_iter()
            .map(|row| crate::proto::v1::OnTimeRate {
                rate: if row.decided > 0 {
                    row.on_time as f64 / row.decided as f64
                } else {
                    0.0
                },
                department: row.department,
                item_code: row.item_code,
                decided: row.decided,
                on_time: row.on_time,
                open_overdue: row.open_overdue,
            })
            .collect();
        Ok(Response::new(crate::proto::v1::OnTimeRatesResponse {
            rates,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<crate::proto::v1::ListDeadLettersRequest>,
    ) -> Result<Response<crate::proto::v1::ListDeadLettersResponse>, Status> {
        let r = request.into_inner();
        let department = self.dead_queue_owner(&r.department)?;
        let limit = match r.limit {
            0 => 100,
            n @ 1..=1000 => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is out of range: give 1 to 1000, or 0 for 100"
                )));
            }
        };
        let letters = crate::dlq::list(&self.gateway.bus, &department, limit, &r.reason_contains)
            .await
            .map_err(dlq_status)?;
        Ok(Response::new(crate::proto::v1::ListDeadLettersResponse {
            dead_letters: letters.into_iter().map(dead_letter).collect(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<crate::proto::v1::DeadLetterActionRequest>,
    ) -> Result<Response<crate::proto::v1::DeadLetterActionResponse>, Status> {
        self.dead_letter_action(request, crate::bus::dead::Action::Replay)
            .await
    }

    async fn purge_dead_letters(
        &self,
        request: Request<crate::proto::v1::DeadLetterActionRequest>,
    ) -> Result<Response<crate::proto::v1::DeadLetterActionResponse>, Status> {
        self.dead_letter_action(request, crate::bus::dead::Action::Purge)
            .await
    }
}

impl AdminApi {
    /// The department (or `results`) whose dead queue is asked for, checked against the
    /// acceptance list.
    fn dead_queue_owner(&self, department: &str) -> Result<String, Status> {
        let department = department.trim();
        let known = department == "results"
            || self
                .gateway
                .intake
                .catalog()
                .departments
                .contains_key(department);
        if known {
            Ok(department.to_string())
        } else {
            Err(Status::invalid_argument(format!(
                "department {department:?} has no dead queue: give a department code of the acceptance list, or `results`"
            )))
        }
    }

    async fn dead_letter_action(
        &self,
        request: Request<crate::proto::v1::DeadLetterActionRequest>,
        action: crate::bus::dead::Action,
    ) -> Result<Response<crate::proto::v1::DeadLetterActionResponse>, Status> {
        let origin = request
            .remote_addr()
            .map_or_else(|| "grpc".to_string(), |a| format!("grpc@{a}"));
        let r = request.into_inner();
        let department = self.dead_queue_owner(&r.department)?;
        let operator = r.operator.trim();
        if operator.is_empty() {
            return Err(Status::invalid_argument(
                "operator is empty: name who does this (their account), for the audit of operators' actions",
            ));
        }
        let selection = crate::dlq::selection(r.message_ids, &r.reason_contains, r.all)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let moved = crate::dlq::act(
            &self.gateway.bus,
            &self.gateway.store,
            &department,
            selection,
            action,
            r.rate,
            operator,
            &origin,
        )
        .await
        .map_err(dlq_status)?;
        Ok(Response::new(crate::proto::v1::DeadLetterActionResponse {
            moved: moved.into_iter().map(dead_letter).collect(),
        }))
    }
}

fn dead_letter(d: crate::bus::dead::DeadLetter) -> crate::proto::v1::DeadLetter {
    crate::proto::v1::DeadLetter {
        message_id: d.message_id,
        case_number: d.case_number,
        task_id: d.task_id,
        reason: d.reason,
        attempt: d.attempt.unwrap_or(0),
        trace_id: d.trace_id,
        dead_at: d.dead_at,
        bytes: d.bytes as i64,
    }
}

fn dlq_status(e: crate::dlq::DlqError) -> Status {
    match e {
        crate::dlq::DlqError::Selection(m) => Status::invalid_argument(m),
        crate::dlq::DlqError::Bus(e) => Status::unavailable(e.to_string()),
        e @ (crate::dlq::DlqError::Unrecorded { .. } | crate::dlq::DlqError::Stopped(_)) => {
            Status::internal(e.to_string())
        }
    }
}

/// A feed: history entries in commit order, then new ones as they are committed.
pub type FeedStream =
    tokio_stream::wrappers::ReceiverStream<Result<crate::proto::v1::FeedEvent, Status>>;

/// How often an idle feed looks for new entries.
const FEED_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Streams `query`'s entries until the client goes away. Entries are read in pages of 500;
/// a slow client holds the reader back (the channel is bounded), it never skips.
fn feed_stream(store: Store, mut query: crate::store::FeedQuery) -> FeedStream {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    query.limit = 500;
    tokio::spawn(async move {
        loop {
            let page = match store.feed(query.clone()).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(store_status(e))).await;
                    return;
                }
            };
            let full = page.len() == query.limit;
            for item in page {
                query.after = item.position;
                let event = crate::proto::v1::FeedEvent {
                    cursor: item.position,
                    case_number: item.case_number,
                    hall_code: item.hall_code,
                    window_code: item.window_code,
                    event: Some(item.event),
                };
                if tx.send(Ok(event)).await.is_err() {
                    return; // the client went away
                }
            }
            if !full {
                tokio::select! {
                    _ = tokio::time::sleep(FEED_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The `CaseService` implementation.
pub struct CaseApi {
    gateway: Arc<Gateway>,
}

fn intake_status(e: IntakeError) -> Status {
    match e {
        IntakeError::Calendar(c) => Status::failed_precondition(c.to_string()),
    }
}

/// No case has this number. The number is echoed masked: a clerk who typed an ID or mobile
/// number into the field does not see it come back in an error that may be logged.
fn not_found(case_number: &str) -> Status {
    Status::not_found(format!(
        "caseNumber: no case {}",
        crate::privacy::mask_free_text(case_number)
    ))
}

fn store_status(e: StoreError) -> Status {
    let db = match &e {
        StoreError::Postgres(pg) => pg
            .as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message())),
        _ => None,
    };
    warn!(error = %e, db = db.as_deref().unwrap_or(""), "store failed");
    match e {
        StoreError::SequenceExhausted { .. } => Status::resource_exhausted(e.to_string()),
        StoreError::Closed | StoreError::Pool(_) => {
            Status::unavailable(format!("{e}; retry later"))
        }
        _ => Status::internal(
            "the store failed; the submission may not have been recorded: retry with the same submissionId",
        ),
    }
}

impl CaseApi {
    fn submission(&self, s: Option<Submission>) -> Result<Submission, Status> {
        let s = s.ok_or_else(|| Status::invalid_argument("submission: is required"))?;
        self.gateway
            .intake
            .check_envelope(&s)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(s)
    }
}

#[tonic::async_trait]
impl CaseService for CaseApi {
    async fn pre_check(
        &self,
        request: Request<PreCheckRequest>,
    ) -> Result<Response<PreCheckResponse>, Status> {
        let s = self.submission(request.into_inner().submission)?;
        let outcome = self
            .gateway
            .intake
            .evaluate(s, self.gateway.clocks.now())
            .map_err(intake_status)?;
        let response = match outcome {
            Outcome::Acceptable(plan) => PreCheckResponse {
                acceptable: true,
                deficiencies: Vec::new(),
                normalisations: plan.changes.iter().map(|c| c.to_masked_proto()).collect(),
                obligations: plan.obligations,
            },
            Outcome::Deficient {
                changes,
                deficiencies,
                ..
            } => PreCheckResponse {
                acceptable: false,
                deficiencies,
                normalisations: changes.iter().map(|c| c.to_masked_proto()).collect(),
                obligations: Vec::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        // The call's span (crate::observe) continues the window's trace when spans are
        // exported; the case keeps its trace and span ids, so every hop after joins them.
        let span = tracing::Span::current();
        let (trace_id, trace_span_id) = match crate::trace::ids_of(&span) {
            // Children only of a sampled span: an unsampled one is never exported.
            Some((trace, id, sampled)) => (trace, if sampled { id } else { String::new() }),
            None => (
                request
                    .metadata()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::trace::trace_id_of)
                    .map_or_else(crate::trace::new_trace_id, str::to_string),
                String::new(),
            ),
        };
        let s = self.submission(request.into_inner().submission)?;
        span.record(
            "submission.id",
            crate::privacy::mask_free_text(&s.submission_id).as_str(),
        );
        let now = self.gateway.clocks.now();
        // Identifiers as normalisation writes them on the case, so that lists and the audit
        // trail find them by their clean value.
        let code = |v: &str| normalise::to_half_width(v).trim().to_string();
        let attempt = Attempt {
            submission_id: code(&s.submission_id),
            content_hash: content_hash(&s),
            hall_code: code(&s.hall_code),
            window_code: code(&s.window_code),
            clerk_staff_no: s
                .clerk
                .as_ref()
                .map(|c| code(&c.staff_no))
                .unwrap_or_default(),
            trace_id,
            trace_span_id,
            at: now,
        };
        let submission_id = attempt.submission_id.clone();
        // A repeat gets the first answer without being evaluated again: the catalog, the
        // calendar or the limits may have changed since.
        let recorded = match self
            .gateway
            .store
            .replay(&attempt)
            .await
            .map_err(store_status)?
        {
            Some(result) => result,
            None => {
                let evaluated = match self
                    .gateway
                    .intake
                    .evaluate(s, now)
                    .map_err(intake_status)?
                {
                    Outcome::Acceptable(plan) => Evaluated::Accept(plan),
                    Outcome::Deficient {
                        submission_id,
                        changes,
                        deficiencies,
                    } => Evaluated::Deficient(case::notice(
                        &submission_id,
                        &changes,
                        deficiencies,
                        now,
                    )),
                };
                self.gateway
                    .store
                    .submit(SubmitCommand { attempt, evaluated })
                    .await
                    .map_err(store_status)?
            }
        };
        match recorded {
            SubmitResult::Answer(response) => {
                match &response.outcome {
                    Some(crate::proto::v1::submit_response::Outcome::Receipt(r)) => {
                        span.record("case.number", r.case_number.as_str());
                        let task_ids: Vec<&str> =
                            r.items.iter().map(|i| i.task_id.as_str()).collect();
                        span.record("task.ids", task_ids.join(",").as_str());
                        let m = crate::metrics::meters();
                        if !response.replayed {
                            self.gateway.wake.notify_one();
                            for item in &r.items {
                                m.items_accepted
                                    .get_or_create(&crate::metrics::ItemLabels {
                                        department: item.department.clone(),
                                        item: item.item_code.clone(),
                                    })
                                    .inc();
                            }
                        }
                        m.submissions
                            .get_or_create(&outcome_label(response.replayed, "accepted"))
                            .inc();
                        info!(submission = %crate::privacy::mask_free_text(&submission_id), case = %r.case_number, replayed = response.replayed, "case accepted");
                    }
                    Some(crate::proto::v1::submit_response::Outcome::Notice(n)) => {
                        let m = crate::metrics::meters();
                        if !response.replayed {
                            for d in &n.deficiencies {
                                let code = crate::proto::v1::DeficiencyCode::try_from(d.code)
                                    .unwrap_or(crate::proto::v1::DeficiencyCode::Unspecified);
                                m.deficiencies
                                    .get_or_create(&crate::metrics::CodeLabels {
                                        code: code
                                            .as_str_name()
                                            .trim_start_matches("DEFICIENCY_CODE_")
                                            .to_lowercase(),
                                    })
                                    .inc();
                            }
                        }
                        m.submissions
                            .get_or_create(&outcome_label(response.replayed, "deficient"))
                            .inc();
                        info!(submission = %crate::privacy::mask_free_text(&submission_id), deficiencies = n.deficiencies.len(), replayed = response.replayed, "deficiency notice issued");
                    }
                    None => {}
                }
                Ok(Response::new(*response))
            }
            SubmitResult::Conflict { case_number } => Err(Status::already_exists(format!(
                "submissionId: {} already created case {case_number} from different content; use a new submissionId for a new application",
                crate::privacy::mask_free_text(&submission_id)
            ))),
        }
    }

    async fn get_case(
        &self,
        request: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        let number = request.into_inner().case_number.trim().to_string();
        if number.is_empty() {
            return Err(Status::invalid_argument("caseNumber: is required"));
        }
        match self
            .gateway
            .store
            .get_case(&number)
            .await
            .map_err(store_status)?
        {
            Some((case, events)) => Ok(Response::new(GetCaseResponse {
                case: Some(case),
                events,
            })),
            None => Err(not_found(&number)),
        }
    }

    type WindowFeedStream = FeedStream;
    type WatchCaseStream = FeedStream;

    async fn window_feed(
        &self,
        request: Request<crate::proto::v1::WindowFeedRequest>,
    ) -> Result<Response<FeedStream>, Status> {
        let r = request.into_inner();
        if r.hall_code.is_empty() && !r.window_code.is_empty() {
            return Err(Status::invalid_argument(
                "windowCode: a window is named within its hall; give hallCode too",
            ));
        }
        if r.cursor < 0 {
            return Err(Status::invalid_argument(
                "cursor: a cursor from a previous event, or 0 from the beginning",
            ));
        }
        Ok(Response::new(feed_stream(
            self.gateway.store.clone(),
            crate::store::FeedQuery {
                hall_code: r.hall_code,
                window_code: r.window_code,
                after: r.cursor,
                ..Default::default()
            },
        )))
    }

    async fn watch_case(
        &self,
        request: Request<crate::proto::v1::WatchCaseRequest>,
    ) -> Result<Response<FeedStream>, Status> {
        let r = request.into_inner();
        if r.case_number.is_empty() || r.cursor < 0 {
            return Err(Status::invalid_argument(
                "caseNumber is required, and cursor is 0 or a cursor from a previous event",
            ));
        }
        if self
            .gateway
            .store
            .get_case(&r.case_number)
            .await
            .map_err(store_status)?
            .is_none()
        {
            return Err(not_found(&r.case_number));
        }
        Ok(Response::new(feed_stream(
            self.gateway.store.clone(),
            crate::store::FeedQuery {
                case_number: r.case_number,
                after: r.cursor,
                ..Default::default()
            },
        )))
    }

    async fn supplement(
        &self,
        request: Request<crate::proto::v1::SupplementRequest>,
    ) -> Result<Response<crate::proto::v1::SupplementResponse>, Status> {
        use crate::intake::SupplementAnswer;
        use crate::proto::v1::SupplementResponse;
        let mut r = request.into_inner();
        r.case_number = r.case_number.trim().to_string();
        // The envelope, as for Submit: bounded, so a broken window system cannot bloat a case.
        let too_long =
            |v: &str, max: usize| v.chars().count() > max || v.chars().any(char::is_control);
        if too_long(&r.supplement_id, 64) || too_long(&r.staff_no, 32) {
            return Err(Status::invalid_argument(
                "supplementId (at most 64 characters) and staffNo (at most 32) must be short and without control characters",
            ));
        }
        if r.materials.len() > 100 || r.task_ids.len() > 50 {
            return Err(Status::invalid_argument(
                "a supplement takes at most 100 materials and names at most 50 tasks",
            ));
        }
        if r.case_number.is_empty() {
            return Err(Status::invalid_argument(
                "caseNumber: the national case number of the case the materials are for is required",
            ));
        }
        let intake = self.gateway.intake.clone();
        let number = r.case_number.clone();
        let now = self.gateway.clocks.now();
        let (case, answer) = self
            .gateway
            .store
            .edit_case_at(&number, now, move |case, last_seq, _at| {
                intake.supplement(case, &r, last_seq, now)
            })
            .await
            .map_err(store_status)?
            .ok_or_else(|| not_found(&number))?;
        let mut response = SupplementResponse {
            case: Some(case),
            ..Default::default()
        };
        match answer {
            SupplementAnswer::Recorded(record) => {
                info!(case = %number, resumed = record.resumed_task_ids.len(), fulfilled = record.fulfilled_obligations.len(), "supplement recorded");
                if !record.resumed_task_ids.is_empty() {
                    self.gateway.wake.notify_one();
                }
                response.record = Some(record);
            }
            SupplementAnswer::Replayed(record) => {
                response.record = Some(record);
                response.replayed = true;
            }
            SupplementAnswer::Deficient(deficiencies) => {
                info!(case = %number, deficiencies = deficiencies.len(), "supplement deficient; nothing recorded");
                response.deficiencies = deficiencies;
            }
            SupplementAnswer::Conflict(message) => return Err(Status::already_exists(message)),
        }
        Ok(Response::new(response))
    }

    async fn deliver(
        &self,
        request: Request<crate::proto::v1::DeliverRequest>,
    ) -> Result<Response<crate::proto::v1::DeliverResponse>, Status> {
        use crate::privacy::{mask_id, mask_name};
        use crate::proto::v1::deliver_request::How;
        let r = request.into_inner();
        let clean = |v: &str| normalise::to_half_width(v).trim().to_uppercase();
        let Some(how) = r.how else {
            return Err(Status::invalid_argument(
                "how: give pickup (who collected) or mail (carrier and tracking number)",
            ));
        };
        let case = self
            .gateway
            .store
            .get_case(&r.case_number)
            .await
            .map_err(store_status)?
            .ok_or_else(|| not_found(&r.case_number))?
            .0;
        let detail = match how {
            How::Pickup(p) => {
                let id = clean(&p.collector_id_number);
                if id.is_empty() || p.collector_name.trim().is_empty() {
                    return Err(Status::invalid_argument(
                        "pickup: collectorName and collectorIdNumber are required (from the identity document checked)",
                    ));
                }
                // The collector must be the applicant, its legal representative or the agent.
                let s = case.submission.clone().unwrap_or_default();
                let applicant = s.applicant.unwrap_or_default();
                let entitled: Vec<String> = [
                    Some(applicant.id_number.as_str()),
                    applicant
                        .legal_representative
                        .as_ref()
                        .map(|p| p.id_number.as_str()),
                    s.agent.as_ref().map(|a| a.id_number.as_str()),
                ]
                .into_iter()
                .flatten()
                .map(clean)
                .filter(|v| !v.is_empty())
                .collect();
                if !entitled.contains(&id) {
                    return Err(Status::failed_precondition(format!(
                        "pickup: {} ({}) is not the applicant, its legal representative or the agent named on the case; results are handed only to them",
                        mask_name(p.collector_name.trim()),
                        mask_id(&id)
                    )));
                }
                format!(
                    "picked up at window {} by {} ({}), handed over by {}",
                    case.submission
                        .as_ref()
                        .map_or("", |s| s.window_code.as_str()),
                    mask_name(p.collector_name.trim()),
                    mask_id(&id),
                    p.staff_no.trim()
                )
            }
            How::Mail(m) => {
                if m.carrier.trim().is_empty() || m.tracking_number.trim().is_empty() {
                    return Err(Status::invalid_argument(
                        "mail: carrier and trackingNumber are required",
                    ));
                }
                format!(
                    "mailed by {} with tracking number {}",
                    m.carrier.trim(),
                    m.tracking_number.trim()
                )
            }
        };
        match self
            .gateway
            .store
            .deliver(&r.case_number, detail)
            .await
            .map_err(store_status)?
        {
            None => Err(not_found(&r.case_number)),
            Some(Err(refused)) => Err(Status::failed_precondition(refused.to_string())),
            Some(Ok(case)) => Ok(Response::new(crate::proto::v1::DeliverResponse {
                case: Some(case),
            })),
        }
    }

    async fn list_cases(
        &self,
        request: Request<ListCasesRequest>,
    ) -> Result<Response<ListCasesResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.page_size {
            0 => 50,
            n if !(1..=MAX_PAGE_SIZE).contains(&n) => {
                return Err(Status::invalid_argument(format!(
                    "pageSize: {n} is outside 1–{MAX_PAGE_SIZE}"
                )));
            }
            n => n as usize,
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(parse_page_token(&r.page_token).ok_or_else(|| {
                Status::invalid_argument(
                    "pageToken: not a token from a previous page; start again without it",
                )
            })?)
        };
        let status = match CaseStatus::try_from(r.status) {
            Ok(CaseStatus::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "status: unknown value {}",
                    r.status
                )));
            }
        };
        let ms = |t: Option<pbjson_types::Timestamp>| {
            t.map(|t| {
                t.seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(t.nanos) / 1_000_000)
            })
        };
        let query = ListQuery {
            hall_code: Some(r.hall_code).filter(|s| !s.is_empty()),
            window_code: Some(r.window_code).filter(|s| !s.is_empty()),
            status,
            from_ms: ms(r.accepted_from),
            to_ms: ms(r.accepted_to),
            limit: limit + 1,
            after,
        };
        let mut rows = self
            .gateway
            .store
            .list_cases(query)
            .await
            .map_err(store_status)?;
        let next_page_token = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|(ms, c)| format!("{ms}.{}", c.case_number))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListCasesResponse {
            cases: rows.into_iter().map(|(_, c)| c).collect(),
            next_page_token,
        }))
    }
}

fn parse_page_token(token: &str) -> Option<(i64, String)> {
    let (ms, number) = token.split_once('.')?;
    Some((ms.parse().ok()?, number.to_string()))
}

/// The `outcome` label of a Submit answer.
fn outcome_label(replayed: bool, outcome: &str) -> crate::metrics::OutcomeLabels {
    crate::metrics::OutcomeLabels {
        outcome: if replayed { "replayed" } else { outcome }.to_string(),
    }
}
