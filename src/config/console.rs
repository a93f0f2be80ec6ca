//! The operations console's settings (`[console]`): whether the internal listener serves it, the
//! tracing UI its trace ids link to, and the adapters whose status it shows. Shapes and defaults
//! only: the console itself is `crate::console`.

use serde::Deserialize;

/// The operations console (docs/console.md), served under `/console` on the internal listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (default true). Off, `/console` is not served at all.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The tracing UI's page of one trace, with `{trace_id}` where the id goes, e.g.
    /// `https://jaeger.example/trace/{trace_id}`; empty: trace ids are shown without a link.
    #[serde(default)]
    pub trace_url: String,
    /// The adapters' status endpoints (`http://adapter:9090/status`), asked every
    /// `refresh_secs` for their readiness, circuit breakers and call counts.
    #[serde(default)]
    pub adapters: Vec<String>,
    /// How often the flows are sampled (store, broker, adapters), in seconds (default 5).
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
}

fn default_enabled() -> bool {
    true
}
fn default_refresh_secs() -> u64 {
    5
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            trace_url: String::new(),
            adapters: Vec::new(),
            refresh_secs: default_refresh_secs(),
        }
    }
}

impl ConsoleConfig {
    /// The rules serde cannot express: a trace link with its placeholder, adapters' status
    /// endpoints as http(s) URLs, a refresh of at least one second. Errors name the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.trace_url.is_empty() && !self.trace_url.contains("{trace_id}") {
            return Err((
                "trace_url",
                format!(
                    "[console] trace_url {:?} has no {{trace_id}}: write where the id goes, e.g. https://jaeger.example/trace/{{trace_id}}",
                    self.trace_url
                ),
            ));
        }
        if let Some(bad) = self
            .adapters
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err((
                "adapters",
                format!(
                    "[console] adapters: {bad:?} is not an http(s) URL; give each adapter's status endpoint, e.g. http://adapter:9090/status"
                ),
            ));
        }
        if self.refresh_secs == 0 {
            return Err((
                "refresh_secs",
                "[console] refresh_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
