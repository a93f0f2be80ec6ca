//! The composition root: [`Gateway`] is built once from the configuration (acceptance list,
//! calendar, store, listeners, refusing to start on anything invalid), and [`serve`] runs it —
//! the gRPC API, the `/metrics` endpoint and every background worker under supervision — until
//! its shutdown future completes. Then the gateway stops in order: no new calls, open feed
//! streams told to reconnect, each worker finishing its unit of work in hand within
//! [`SHUTDOWN_GRACE`], the platform-push lease released. It holds no business rule and handles
//! no request itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::calendar::LiveCalendar;
use crate::catalog::Catalog;
use crate::config::GatewayConfig;
use crate::intake::Intake;
use crate::store::{Store, StoreError};
use crate::supervise::{Shutdown, supervise};

/// How often health checks the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How long the workers have, once the gateway stops, to finish what they are doing (a batch
/// being confirmed, a result being applied); then they are cut, which every unit survives.
/// Kubernetes waits 30 s between SIGTERM and SIGKILL by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    /// Sent when the gateway stops: every worker and every open feed stream ends.
    pub shutdown: Shutdown,
    /// The bound `/metrics` listener, taken by [`serve`]; its address.
    pub(crate) metrics: std::sync::Mutex<Option<TcpListener>>,
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
            shutdown: Shutdown::default(),
            calendar_check: (config.calendar.check_secs > 0)
                .then(|| std::time::Duration::from_secs(config.calendar.check_secs)),
            metrics: std::sync::Mutex::new(metrics),
            metrics_addr,
        })
    }
}

/// Serves the gateway on `listener` until `shutdown` completes, then stops it in order.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<crate::proto::v1::case_service_server::CaseServiceServer<crate::api::CaseApi>>()
        .await;
    let workers = start_workers(&gateway, health);
    let stop = gateway.shutdown.clone();
    let result = crate::api::grpc(gateway.clone(), health_service, listener, async move {
        shutdown.await;
        info!("gateway stopping: no new calls; workers finish what they are doing");
        // Open feed streams end now; tonic waits for the calls in flight.
        stop.stop();
    })
    .await;
    gateway.shutdown.finish(workers, SHUTDOWN_GRACE).await;
    if gateway.platform.is_some() {
        // Another replica (or the next run) takes over at once.
        let _ = gateway
            .store
            .release_push(crate::feed::CURSOR_NAME, &gateway.instance)
            .await;
    }
    result
}

/// Starts every background worker this gateway runs, each supervised under its shutdown.
fn start_workers(
    gateway: &Arc<Gateway>,
    health: tonic_health::server::HealthReporter,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (workers, stop) = (gateway.workers.clone(), &gateway.shutdown);
    let mut started = Vec::new();
    let g = gateway.clone();
    started.push(supervise(workers.clone(), stop, "health", move || {
        watch_health(g.clone(), health.clone())
    }));
    if let Some((config, topology)) = gateway.relay.clone() {
        let (g, bus) = (gateway.clone(), config.clone());
        started.push(supervise(workers.clone(), stop, "results", move || {
            crate::results::run(
                g.store.clone(),
                bus.clone(),
                g.wake.clone(),
                g.clocks.now_source(),
            )
        }));
        let g = gateway.clone();
        started.push(supervise(workers.clone(), stop, "relay", move || {
            crate::outbox::run(
                g.store.clone(),
                topology.clone(),
                config.clone(),
                g.wake.clone(),
                g.relay_status.clone(),
                g.clocks.now_source(),
            )
        }));
        if gateway.stall.check_secs > 0 {
            let g = gateway.clone();
            started.push(supervise(workers.clone(), stop, "stall", move || {
                crate::stall::run(
                    g.store.clone(),
                    g.stall.clone(),
                    g.wake.clone(),
                    g.clocks.now_source(),
                )
            }));
        }
    }
    if let Some(listener) = gateway
        .metrics
        .lock()
        .expect("metrics listener lock")
        .take()
    {
        let router = crate::metrics::router(
            gateway.store.clone(),
            gateway.clocks.clone(),
            gateway.intake.shared_catalog(),
            gateway.relay.clone(),
        );
        let stop = stop.clone();
        started.push(tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.stopped().await })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "the metrics endpoint stopped");
            }
        }));
    }
    if let Some(every) = gateway.sweep_every {
        let g = gateway.clone();
        started.push(supervise(workers.clone(), stop, "sweeper", move || {
            crate::clock::run(g.store.clone(), g.clocks.clone(), every)
        }));
    }
    // The calendar may have changed since these deadlines were counted (a file added while the
    // gateway was down): count the open tasks again, then follow the directory.
    let g = gateway.clone();
    started.push(supervise(workers.clone(), stop, "calendar", move || {
        crate::calendar::watch(
            g.clocks.calendar().clone(),
            g.store.clone(),
            g.calendar_check,
            true,
        )
    }));
    if let Some(config) = gateway.platform.clone() {
        let g = gateway.clone();
        started.push(supervise(workers, stop, "push", move || {
            crate::feed::run(g.store.clone(), config.clone(), g.instance.clone())
        }));
    }
    started
}

/// Health follows the store: a gateway that cannot record cases must not get traffic; and
/// `yichuang.bus` follows the relay's broker connection (Submit does not depend on it).
async fn watch_health(gateway: Arc<Gateway>, health: tonic_health::server::HealthReporter) {
    use crate::proto::v1::case_service_server::CaseServiceServer;
    let mut serving = true;
    while crate::supervise::idle(tokio::time::sleep(HEALTH_INTERVAL))
        .await
        .is_some()
    {
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
                health
                    .set_serving::<CaseServiceServer<crate::api::CaseApi>>()
                    .await;
            } else {
                warn!("store does not answer: not serving");
                health
                    .set_not_serving::<CaseServiceServer<crate::api::CaseApi>>()
                    .await;
            }
        }
    }
}
