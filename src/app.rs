//! The composition root: [`Gateway`] (in [`crate::gateway`]) is built once from the
//! configuration (acceptance list, calendar, store, listeners, refusing to start on anything
//! invalid), and [`serve`] runs it —
//! the gRPC API (the windows' listener and the internal one), the `/metrics` endpoint and every background worker under supervision — until
//! its shutdown future completes. Then the gateway stops in order: no new calls, open feed
//! streams told to reconnect, each worker finishing its unit of work in hand within
//! [`SHUTDOWN_GRACE`], the platform-push lease released. It holds no business rule and handles
//! no request itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::supervise::supervise;

/// How often health checks the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// How long the workers have, once the gateway stops, to finish what they are doing (a batch
/// being confirmed, a result being applied); then they are cut, which every unit survives.
/// Kubernetes waits 30 s between SIGTERM and SIGKILL by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub use crate::gateway::{Gateway, StartError};

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
    if gateway.tls.is_none() {
        warn!(
            "DEVELOPMENT MODE: [development] plaintext is on: gRPC without TLS, and every caller without a token is trusted with every permission over every hall. Never run this with real applicants' data"
        );
    }
    let workers = start_workers(&gateway, health);
    let admin = gateway.admin.lock().expect("admin listener lock").take();
    let admin = admin.map(|listener| {
        let (g, stop) = (gateway.clone(), gateway.shutdown.clone());
        let health = health_service.clone();
        tokio::spawn(async move {
            let served =
                crate::api::admin_grpc(g, health, listener, async move { stop.stopped().await })
                    .await;
            if let Err(e) = served {
                warn!(error = %e, "the internal (admin) listener stopped");
            }
        })
    });
    let stop = gateway.shutdown.clone();
    let result = crate::api::grpc(gateway.clone(), health_service, listener, async move {
        shutdown.await;
        info!("gateway stopping: no new calls; workers finish what they are doing");
        // Open feed streams end now; tonic waits for the calls in flight.
        stop.stop();
    })
    .await;
    if let Some(admin) = admin {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, admin).await;
    }
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
            gateway.ready.clone(),
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
    if !gateway.hotline.reply_url.is_empty() {
        let g = gateway.clone();
        started.push(supervise(workers.clone(), stop, "hotline", move || {
            crate::hotline::deliver_replies(g.store.clone(), g.hotline.clone())
        }));
    }
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
            gateway
                .ready
                .store(ok, std::sync::atomic::Ordering::Relaxed);
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
