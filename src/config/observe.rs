//! What the gateway tells its operators, as configured: the log's format and filter, the
//! Prometheus endpoint, and span export over OTLP. Shapes and defaults only: it never installs a
//! subscriber or opens a port (`crate::telemetry` and `crate::metrics` do).

use std::net::SocketAddr;

use serde::Deserialize;

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object per line, for collectors) or `text` (for a terminal).
    #[serde(default = "default_log_format")]
    pub format: String,
    /// Filter in `tracing` syntax, e.g. `info,yichuang=debug`; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_format() -> String {
    "json".into()
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

/// Export of spans over OTLP/gRPC (docs/observability.md). Off unless an endpoint is given;
/// off costs nothing beyond the log lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC endpoint of a collector, e.g. `http://otel-collector:4317`; empty: no export.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// Share of new traces sampled, 0.0 to 1.0. A trace begun by the window (a sampled
    /// `traceparent`) follows the window's decision.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// `service.name` of the spans; empty: the binary's own (`yichuang-gateway`, `yichuang-adapter`).
    #[serde(default)]
    pub service_name: String,
}

fn default_sampling_ratio() -> f64 {
    1.0
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sampling_ratio: default_sampling_ratio(),
            service_name: String::new(),
        }
    }
}

/// Where the gateway serves `/metrics` (Prometheus text format) over HTTP/1.1.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on; absent: no metrics endpoint.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}
