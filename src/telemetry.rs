//! Log setup: structured JSON lines for collectors or human-readable text for a terminal,
//! filtered by the configured level (`RUST_LOG` overrides). Callers log identifiers (case
//! numbers, submission ids), never personal data; see [`crate::privacy`] for masking.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber; a second call is a no-op (tests start several gateways).
pub fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
