//! Log and span setup, shared by the gateway and the adapters: structured JSON lines for
//! collectors or human-readable text for a terminal, filtered by the configured level
//! (`RUST_LOG` overrides), and — when `[tracing] otlp_endpoint` is set — every span exported
//! over OTLP/gRPC with its W3C trace context (docs/observability.md). Callers log identifiers
//! (case numbers, task ids), never personal data; see [`crate::privacy`] for masking.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, TracingConfig};

/// Keeps the span exporter alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard stops the span export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every finished span now (tests and shutdown call it).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Checks the tracing settings without starting anything.
pub fn validate(config: &TracingConfig) -> Result<(), String> {
    if !(0.0..=1.0).contains(&config.sampling_ratio) {
        return Err(format!(
            "[tracing] sampling_ratio = {} is outside 0.0 to 1.0; give the share of traces to keep, e.g. 0.1",
            config.sampling_ratio
        ));
    }
    let endpoint = config.otlp_endpoint.trim();
    let url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
    if !endpoint.is_empty() && !url {
        return Err(format!(
            "[tracing] otlp_endpoint = {endpoint:?} is not an http:// or https:// URL; give the collector's OTLP/gRPC address, e.g. http://otel-collector:4317"
        ));
    }
    Ok(())
}

/// The span exporter and its provider, or `None` when no endpoint is set. With an endpoint it
/// must run inside a Tokio runtime (the gRPC client lives there).
pub fn provider(
    config: &TracingConfig,
    service: &str,
) -> Result<Option<SdkTracerProvider>, String> {
    validate(config)?;
    let endpoint = config.otlp_endpoint.trim();
    if endpoint.is_empty() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("[tracing] otlp_endpoint = {endpoint:?}: {e}"))?;
    let name = if config.service_name.is_empty() {
        service.to_string()
    } else {
        config.service_name.clone()
    };
    Ok(Some(
        SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(name)
                    .build(),
            )
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// Installs the global subscriber: the log lines, and the span export when configured. A
/// second call installs nothing (tests start several gateways) but still returns a guard.
/// With an endpoint it must run inside a Tokio runtime.
pub fn init(log: &LogConfig, tracing: &TracingConfig, service: &str) -> Result<Telemetry, String> {
    let provider = provider(tracing, service)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let otel = provider.as_ref().map(|p| {
        // Per span, only what a backend shows: no busy/idle timings (two clock reads and a
        // lock on every poll of an instrumented future) and no OpenTelemetry context made
        // current on every enter (nothing here reads `Context::current`: the trace ids come
        // from the span itself, `crate::trace::ids_of`). Measured in benches/intake.rs.
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("yichuang"))
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = if log.format == "json" {
        registry.with(fmt.json().flatten_event(true)).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_with_the_key_named() {
        let bad = TracingConfig {
            sampling_ratio: 1.5,
            ..TracingConfig::default()
        };
        assert!(validate(&bad).unwrap_err().contains("sampling_ratio"));
        let bad = TracingConfig {
            otlp_endpoint: "collector:4317".into(),
            ..TracingConfig::default()
        };
        assert!(validate(&bad).unwrap_err().contains("otlp_endpoint"));
        assert!(validate(&TracingConfig::default()).is_ok());
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        assert!(
            provider(&TracingConfig::default(), "yichuang-gateway")
                .unwrap()
                .is_none()
        );
    }
}
