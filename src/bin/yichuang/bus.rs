//! `yichuang bus`: the topology declared (and its policies applied), and status events watched
//! as they are published.

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
