//! `yichuang serve`: the gateway, until SIGTERM or Ctrl-C (then it stops in order: [`yichuang::app`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use yichuang::app::{Gateway, serve};
use yichuang::config::GatewayConfig;

use crate::Failure;

pub async fn run(path: &Path) -> Result<u8, Failure> {
    let config = GatewayConfig::load(path)?;
    let telemetry = yichuang::telemetry::init(&config.log, &config.tracing, "yichuang-gateway")
        .map_err(|e| anyhow::anyhow!(e))?;
    let gateway = Gateway::from_config(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "gateway serving");
    let gateway = Arc::new(gateway);
    // [limits] follows the file without a restart (every check_secs, and on SIGHUP).
    let every = (config.limits.check_secs > 0)
        .then(|| std::time::Duration::from_secs(config.limits.check_secs));
    let (limits, file) = (gateway.limits.clone(), path.to_path_buf());
    yichuang::supervise::supervise(
        gateway.workers.clone(),
        &gateway.shutdown,
        "limits",
        move || yichuang::limits::watch(limits.clone(), file.clone(), every),
    );
    serve(gateway, listener, yichuang::supervise::terminated()).await?;
    tracing::info!("gateway stopped");
    telemetry.flush();
    Ok(0)
}
