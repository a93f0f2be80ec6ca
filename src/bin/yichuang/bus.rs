//! `yichuang bus`: the topology declared (and its policies applied), the adapters' users created
//! with least privilege, and status events watched as they are published.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use yichuang::catalog::Catalog;
use yichuang::config::GatewayConfig;

use crate::Failure;

#[derive(Subcommand)]
pub enum BusCommand {
    /// Declares the exchanges and queues for every department of the catalog (idempotent).
    Declare {
        /// Configuration file (its `[bus]` section and catalog).
        #[arg(long, default_value = "config/gateway.toml", env = "YICHUANG_CONFIG")]
        config: PathBuf,
    },
    /// Creates or updates each adapter's RabbitMQ user of `[bus.department_users]`, with only
    /// what it needs: read its departments' task and delay queues, write to the results, retry
    /// and dead exchanges, configure nothing (docs/bus.md, "Users and permissions"). Each
    /// password comes from `YICHUANG_BUS_PASSWORD_<USER>` (`adapter-scjg` →
    /// `YICHUANG_BUS_PASSWORD_ADAPTER_SCJG`) or the file `<passwords-dir>/<user>`; none is
    /// printed.
    Users {
        /// Configuration file (its `[bus]` section: url, prefix, department_users).
        #[arg(long, default_value = "config/gateway.toml", env = "YICHUANG_CONFIG")]
        config: PathBuf,
        /// Directory of password files, one per user, named for it (e.g. a mounted Secret).
        #[arg(long)]
        passwords_dir: Option<PathBuf>,
        /// The management API's user, when not the user of `[bus] url` (it needs the
        /// administrator tag); its password from `YICHUANG_BUS_ADMIN_PASSWORD`.
        #[arg(long)]
        admin_user: Option<String>,
    },
    /// Prints status events as they are published (a queue of its own, gone when it stops):
    /// one line each — time, case, event, task, detail.
    Watch {
        /// Configuration file (its `[bus]` section).
        #[arg(long, default_value = "config/gateway.toml", env = "YICHUANG_CONFIG")]
        config: PathBuf,
        /// Topic binding: `#` for everything, `case.*` for case events, `task.approved`…
        #[arg(long, default_value = "#")]
        binding: String,
    },
}

/// Runs a `bus` command.
pub async fn run(command: BusCommand) -> Result<u8, Failure> {
    match command {
        BusCommand::Declare { config } => declare(&config).await,
        BusCommand::Users {
            config,
            passwords_dir,
            admin_user,
        } => users(&config, passwords_dir.as_deref(), admin_user.as_deref()).await,
        BusCommand::Watch { config, binding } => {
            let config = GatewayConfig::load(&config)?;
            watch_events(&config.bus, &binding).await
        }
    }
}

/// `bus declare`: exchanges, queues and bindings for every department, then the policies.
async fn declare(config: &Path) -> Result<u8, Failure> {
    let config = GatewayConfig::load(config)?;
    let catalog = Catalog::load(&config.catalog_dir)?;
    let topology = yichuang::bus::Topology::for_catalog(&catalog, &config.bus);
    let connection = yichuang::bus::connect(&config.bus).await?;
    let channel = connection
        .create_channel()
        .await
        .context("cannot open a channel")?;
    topology
        .declare(
            &channel,
            std::time::Duration::from_secs(config.bus.timeout_secs),
        )
        .await?;
    println!(
        "{}: {} exchanges, {} queues, {} bindings declared",
        yichuang::bus::redact(&config.bus.url),
        topology.exchanges.len(),
        topology.queues.len(),
        topology.bindings.len()
    );
    for b in &topology.retired {
        println!(
            "binding {} -> {} ({}) of an earlier build removed, if it was there",
            b.exchange, b.queue, b.routing_key
        );
    }
    if yichuang::bus::policy::apply(&config.bus).await? {
        println!(
            "{} policies applied: dead-lettering at least once (docs/bus.md)",
            yichuang::bus::policy::policies(&config.bus).len()
        );
    } else {
        println!(
            "policies not applied ([bus] management_url = \"off\"): apply those of docs/bus.md"
        );
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(0)
}

/// `bus users`: every adapter user of `[bus.department_users]`, created or updated with its
/// permissions. Every missing password is reported before anything is changed.
async fn users(
    config: &Path,
    passwords_dir: Option<&Path>,
    admin_user: Option<&str>,
) -> Result<u8, Failure> {
    use yichuang::bus::users;
    let config = GatewayConfig::load(config)?;
    let adapter_users = users::users(&config.bus);
    if adapter_users.is_empty() {
        return Err(anyhow::anyhow!(
            "[bus.department_users] is empty: list each department's adapter user (`scjg = \"adapter-scjg\"`), then run this again"
        )
        .into());
    }
    let admin_password = match admin_user {
        Some(user) => Some((
            user,
            std::env::var("YICHUANG_BUS_ADMIN_PASSWORD").map_err(|_| {
                anyhow::anyhow!(
                    "--admin-user {user}: its password is read from YICHUANG_BUS_ADMIN_PASSWORD, which is not set"
                )
            })?,
        )),
        None => None,
    };
    let admin = admin_password.as_ref().map(|(u, p)| (*u, p.as_str()));
    let mut passwords = Vec::new();
    let mut missing = Vec::new();
    for user in &adapter_users {
        let variable = users::password_variable(&user.name);
        let from_file = passwords_dir.map(|d| d.join(&user.name));
        let password = std::env::var(&variable).ok().or_else(|| {
            from_file
                .as_ref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .map(|p| p.trim_end().to_string())
        });
        match password.filter(|p| !p.is_empty()) {
            Some(p) => passwords.push(p),
            None => missing.push(format!(
                "  {}: set {variable}{}",
                user.name,
                from_file.map_or(String::new(), |f| format!(" or write {}", f.display()))
            )),
        }
    }
    if !missing.is_empty() {
        return Err(anyhow::anyhow!(
            "no password for these adapter users (nothing was changed):\n{}",
            missing.join("\n")
        )
        .into());
    }
    for (user, password) in adapter_users.iter().zip(&passwords) {
        users::apply(&config.bus, admin, user, password).await?;
        let serves = if user.departments.is_empty() && user.name == config.bus.notify_user {
            "the notifier".to_string()
        } else if user.departments.is_empty() {
            "the reporter".to_string()
        } else {
            format!("departments {}", user.departments.join(", "))
        };
        println!(
            "{}: {serves}; read {:?}, write {:?}, configure nothing",
            user.name, user.permissions.read, user.permissions.write
        );
    }
    Ok(0)
}

/// Binds an exclusive, auto-deleted queue to the events exchange and prints each event.
async fn watch_events(bus: &yichuang::config::BusConfig, binding: &str) -> Result<u8, Failure> {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use prost::Message;
    use tokio_stream::StreamExt;
    let connection = yichuang::bus::connect(bus).await?;
    let channel = connection
        .create_channel()
        .await
        .context("cannot open a channel")?;
    let names = yichuang::bus::Names::new(&bus.prefix);
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .context("cannot declare a queue to watch from")?;
    channel
        .queue_bind(
            queue.name().clone(),
            names.events_exchange().as_str().into(),
            binding.into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot bind to {} (declare the topology first)",
                names.events_exchange()
            )
        })?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "yichuang-watch".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .context("cannot consume")?;
    eprintln!(
        "watching {} ({binding}) on {}; Ctrl-C to stop",
        names.events_exchange(),
        yichuang::bus::redact(&bus.url)
    );
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("the broker ended the watch")?;
        let Ok(m) = yichuang::proto::v1::EventMessage::decode(delivery.data.as_slice()) else {
            continue;
        };
        let Some(e) = m.event else { continue };
        let at =
            e.at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                .map(|t| {
                    (t + chrono::Duration::hours(8))
                        .format("%H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
        println!(
            "{at}  {}  {:<28} {:<46} {}",
            m.case_number,
            e.kind,
            e.task_id,
            yichuang::privacy::mask_free_text(&e.detail)
        );
    }
    Ok(0)
}
