//! The gateway's parts, built once from its configuration: intake, the store, the bus settings,
//! the clocks, the workers' registry and the shutdown signal. Building refuses to start on an
//! invalid acceptance list, calendar or setting. It runs nothing: [`crate::app`] starts the
//! workers and the servers, and the handlers of [`crate::api`] read from it.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::calendar::LiveCalendar;
use crate::catalog::Catalog;
use crate::config::GatewayConfig;
use crate::intake::Intake;
use crate::store::{Store, StoreError};
use crate::supervise::Shutdown;

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
    /// Whether the store answers (health's `yichuang.v1.CaseService`), also served as
    /// `/readyz` beside `/metrics` for probes that cannot speak TLS.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The relay's view of the broker.
    pub relay_status: Arc<crate::outbox::RelayStatus>,
    /// The platform push, when `[platform] push_url` is set.
    pub platform: Option<crate::config::PlatformConfig>,
    /// This gateway process, as the holder of leases (the platform push cursor).
    pub instance: String,
    /// The legal clock: calendar, zone, warning share and time source.
    pub clocks: crate::clock::Clocks,
    /// 好差评: each channel's indicators and the rectification a 差评 opens (`[evaluation]`).
    pub evaluation: Arc<crate::evaluation::Rules>,
    /// The 12345 hotline's work orders (`[hotline]`).
    pub hotline: crate::config::HotlineConfig,
    /// The hotline's classification table (`[hotline] classification`), checked at start.
    pub hotline_classes: Arc<crate::hotline_classes::Classes>,
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
    /// Who may call and what they may do: the policy layer's role table, the authenticator
    /// and the access log.
    pub guard: crate::auth::Guard,
    /// TLS of both gRPC listeners; `None` only with `[development] plaintext`.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// The bound internal listener (AdminService, reflection, health), taken by
    /// [`crate::app::serve`]; its address.
    pub(crate) admin: std::sync::Mutex<Option<TcpListener>>,
    pub admin_addr: std::net::SocketAddr,
    /// The bound `/metrics` listener, taken by [`serve`]; its address.
    pub(crate) metrics: std::sync::Mutex<Option<TcpListener>>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Fair share and overload: call rates, calls in flight, feed streams ([`crate::limits`]).
    pub limits: Arc<crate::limits::Limits>,
    /// The operations console's settings (`[console]`), served on the internal listener.
    pub console: crate::config::ConsoleConfig,
    /// The public item guide (`[guide]`) on the windows' listener, and its base URL.
    pub guide: crate::guide::Site,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the acceptance list is invalid:\n{0}")]
    Catalog(#[from] crate::catalog::CatalogErrors),
    #[error("the calendar is invalid:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Calendar(Vec<crate::config::ConfigProblem>),
    #[error("the hotline's classification table is invalid ([hotline] classification):\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    HotlineClasses(Vec<crate::config::ConfigProblem>),
    #[error("intake settings: {0}")]
    Intake(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("[platform] {0}")]
    Platform(String),
    #[error("{0}")]
    Evaluation(String),
    #[error("[metrics] {0}")]
    Metrics(String),
    #[error("{0}")]
    Trust(String),
    #[error("[server] admin_listen: cannot listen on {0}")]
    Admin(String),
    #[error("[bus] {0}")]
    Bus(String),
}

impl Gateway {
    /// Loads the catalog, the hotline's classification table and the calendar, opens the store.
    /// Refuses to start on an invalid catalog or table.
    pub async fn from_config(config: &GatewayConfig) -> Result<Gateway, StartError> {
        Self::with_clock(config, crate::clock::system_now()).await
    }

    /// [`Gateway::from_config`] with the legal clock's time taken from `now`.
    pub async fn with_clock(
        config: &GatewayConfig,
        now: crate::clock::Now,
    ) -> Result<Gateway, StartError> {
        let catalog = Arc::new(Catalog::load(&config.catalog_dir)?);
        let hotline_classes = Arc::new(
            crate::hotline_classes::Classes::load(&config.hotline.classification)
                .map_err(StartError::HotlineClasses)?,
        );
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
        let evaluation = Arc::new(
            crate::evaluation::Rules::new(&config.evaluation, config.sla.warn_share)
                .map_err(|(_, m)| StartError::Evaluation(m))?,
        );
        let clocks = clocks.with_evaluation(evaluation.clone());
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
            if p.refused_tries == 0 {
                return Err(StartError::Platform(
                    "refused_tries must be at least 1 (default 5)".into(),
                ));
            }
            p.tls()
                .check("[platform] client_cert/client_key")
                .map_err(|e| StartError::Platform(e.to_string()))?;
        }
        let policy = crate::auth::Policy::new(&config.auth).map_err(StartError::Trust)?;
        let authenticator =
            crate::auth::Authenticator::new(config.auth.jwt.as_ref()).map_err(StartError::Trust)?;
        let tls = if config.development.plaintext {
            None
        } else {
            let tls = crate::auth::tls::server(&config.server.tls).map_err(StartError::Trust)?;
            if config.server.tls.client_ca.as_os_str().is_empty() && !authenticator.takes_tokens() {
                return Err(StartError::Trust(
                    "no way for callers to identify themselves: set [server.tls] client_ca (client certificates) or [auth.jwt] (bearer tokens)".into(),
                ));
            }
            Some(tls)
        };
        let store = Store::open(&config.store).await?;
        let admin_listen = config.server.admin_listen;
        let admin = TcpListener::bind(admin_listen)
            .await
            .map_err(|e| StartError::Admin(format!("{admin_listen}: {e}")))?;
        let admin_addr = admin
            .local_addr()
            .map_err(|e| StartError::Admin(format!("{admin_listen}: {e}")))?;
        let guard = crate::auth::Guard {
            policy: Arc::new(policy),
            authenticator: Arc::new(authenticator),
            auditor: crate::auth::Auditor::new(store.clone()),
            development: config.development.plaintext,
        };
        let metrics = match config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Metrics(format!("cannot listen on {addr}: {e}")))?,
            ),
            None => None,
        };
        let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
        let bus = senders_checked(config, intake.catalog())?;
        let relay = bus.relay.then(|| {
            let topology = crate::bus::Topology::for_catalog(intake.catalog(), &bus);
            (bus.clone(), topology)
        });
        Ok(Gateway {
            intake,
            store,
            max_message_bytes: config.server.max_message_bytes,
            relay,
            wake: Arc::new(tokio::sync::Notify::new()),
            relay_status: Arc::new(crate::outbox::RelayStatus::default()),
            ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            bus,
            platform: (!config.platform.push_url.is_empty()).then(|| config.platform.clone()),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            clocks,
            evaluation,
            hotline: config.hotline.clone(),
            hotline_classes,
            sweep_every: (config.sla.sweep_secs > 0)
                .then(|| std::time::Duration::from_secs(config.sla.sweep_secs)),
            stall: config.stall.clone(),
            workers: Arc::default(),
            shutdown: Shutdown::default(),
            calendar_check: (config.calendar.check_secs > 0)
                .then(|| std::time::Duration::from_secs(config.calendar.check_secs)),
            metrics: std::sync::Mutex::new(metrics),
            metrics_addr,
            guard,
            tls,
            admin: std::sync::Mutex::new(Some(admin)),
            admin_addr,
            limits: Arc::new(crate::limits::Limits::new(&config.limits)),
            console: config.console.clone(),
            guide: crate::guide::Site::new(&config.guide),
        })
    }
}

/// The bus settings with the results sender check decided: a relaying gateway takes results only
/// from the users `[bus.department_users]` names, so an empty list refuses to start, unless
/// `[development] unchecked_results` says otherwise (logged loudly). Departments of the catalog
/// with no user are named in a warning: their results will be refused.
fn senders_checked(
    config: &GatewayConfig,
    catalog: &Catalog,
) -> Result<crate::config::BusConfig, StartError> {
    let mut bus = config.bus.clone();
    bus.unchecked_results = config.development.unchecked_results;
    if !bus.relay {
        return Ok(bus);
    }
    if bus.unchecked_results {
        tracing::warn!(
            "[development] unchecked_results = true: departments' results are taken from any RabbitMQ user; a compromised adapter can decide any department's cases. Never in production"
        );
        return Ok(bus);
    }
    if bus.department_users.is_empty() {
        return Err(StartError::Bus(
            "department_users is empty: with the relay on, results are taken only from the RabbitMQ user listed for their department. List each adapter's user under [bus.department_users] (`scjg = \"adapter-scjg\"`; `yichuang bus users` creates them), or, for development only, set [development] unchecked_results = true".into(),
        ));
    }
    let missing: Vec<&str> = catalog
        .departments
        .keys()
        .filter(|d| !bus.department_users.contains_key(*d))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            departments = %missing.join(", "),
            "[bus.department_users] names no user for these departments: their results will be refused"
        );
    }
    Ok(bus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog"))
            .unwrap()
    }

    #[test]
    fn a_relaying_gateway_with_no_department_users_refuses_to_start_unless_told_it_is_development()
    {
        let mut config = GatewayConfig::default();
        config.bus.relay = true;
        let refused = senders_checked(&config, &catalog())
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("[bus] department_users is empty")
                && refused.contains("[bus.department_users]")
                && refused.contains("unchecked_results"),
            "names the key and what to do: {refused}"
        );
        config.development.unchecked_results = true;
        assert!(
            senders_checked(&config, &catalog())
                .unwrap()
                .unchecked_results
        );
        config.development.unchecked_results = false;
        config
            .bus
            .department_users
            .insert("scjg".into(), "adapter-scjg".into());
        let bus = senders_checked(&config, &catalog()).unwrap();
        assert!(!bus.unchecked_results);
        config.bus.relay = false;
        config.bus.department_users.clear();
        assert!(
            senders_checked(&config, &catalog()).is_ok(),
            "no relay, no results consumed"
        );
    }
}
