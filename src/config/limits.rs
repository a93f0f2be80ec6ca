//! How much each caller may ask of the gateway, and how much the gateway takes on at once
//! (`[limits]`): call rates per caller identity, per hall and for the whole gateway, the bound
//! on calls in flight, the cap on each caller's open feed streams, the server's call timeout
//! and HTTP/2 keepalive. Shapes, defaults and their checks only: `crate::limits` enforces
//! them. The rates, the in-flight bound and the stream cap are read again without a restart
//! (every `check_secs`, and at once on `SIGHUP`); the timeout and keepalive take a restart.

use serde::Deserialize;

/// A token bucket: `per_second` calls on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Calls per second on average; 0: no limit.
    pub per_second: u32,
    /// Calls allowed at once after a quiet spell; 0: as many as `per_second`.
    #[serde(default)]
    pub burst: u32,
}

impl RateConfig {
    /// No limit.
    pub const OFF: RateConfig = RateConfig {
        per_second: 0,
        burst: 0,
    };
}

/// Fair share and overload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Each caller identity (a client certificate's or token's name): one window system or
    /// terminal cannot take the hall's share.
    #[serde(default = "default_per_caller")]
    pub per_caller: RateConfig,
    /// Each hall, all its callers together: one hall cannot take the gateway's share.
    #[serde(default = "default_per_hall")]
    pub per_hall: RateConfig,
    /// The whole gateway (this replica); 0: no limit beyond `max_in_flight`.
    #[serde(default = "default_global")]
    pub global: RateConfig,
    /// Calls being handled at once on the public listener (health excepted); more are shed at
    /// once with `UNAVAILABLE` rather than queued. Bounds memory too: at most this many
    /// requests of up to `[server] max_message_bytes` are held.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Feed streams (`WindowFeed`, `WatchCase`) one caller may hold open at once.
    #[serde(default = "default_feed_streams_per_caller")]
    pub feed_streams_per_caller: usize,
    /// A call not answered within this many seconds is cancelled (the client's own
    /// `grpc-timeout`, when shorter, wins). Feed streams are not cut by it once opened.
    #[serde(default = "default_call_timeout_secs")]
    pub call_timeout_secs: u64,
    /// Seconds between HTTP/2 pings on an idle connection; dead peers and their streams are
    /// found by it.
    #[serde(default = "default_keepalive_interval_secs")]
    pub keepalive_interval_secs: u64,
    /// Seconds a ping may go unanswered before the connection is closed.
    #[serde(default = "default_keepalive_timeout_secs")]
    pub keepalive_timeout_secs: u64,
    /// Seconds between looks at the configuration file for new `[limits]`; 0: on `SIGHUP` only.
    #[serde(default = "default_check_secs")]
    pub check_secs: u64,
}

fn default_per_caller() -> RateConfig {
    RateConfig {
        per_second: 50,
        burst: 100,
    }
}
fn default_per_hall() -> RateConfig {
    RateConfig {
        per_second: 200,
        burst: 400,
    }
}
fn default_global() -> RateConfig {
    RateConfig::OFF
}
fn default_max_in_flight() -> usize {
    256
}
fn default_feed_streams_per_caller() -> usize {
    8
}
fn default_call_timeout_secs() -> u64 {
    30
}
fn default_keepalive_interval_secs() -> u64 {
    30
}
fn default_keepalive_timeout_secs() -> u64 {
    10
}
fn default_check_secs() -> u64 {
    10
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_caller: default_per_caller(),
            per_hall: default_per_hall(),
            global: default_global(),
            max_in_flight: default_max_in_flight(),
            feed_streams_per_caller: default_feed_streams_per_caller(),
            call_timeout_secs: default_call_timeout_secs(),
            keepalive_interval_secs: default_keepalive_interval_secs(),
            keepalive_timeout_secs: default_keepalive_timeout_secs(),
            check_secs: default_check_secs(),
        }
    }
}

impl LimitsConfig {
    /// These limits with no call rates (test suites and benchmarks that drive one connection
    /// hard); the in-flight bound and the stream cap stay.
    pub fn without_rates(self) -> LimitsConfig {
        LimitsConfig {
            per_caller: RateConfig::OFF,
            per_hall: RateConfig::OFF,
            global: RateConfig::OFF,
            ..self
        }
    }

    /// What serde cannot check: `(key, message)` of the first problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_in_flight == 0 {
            return Err((
                "max_in_flight",
                "[limits] max_in_flight must be at least 1 (it bounds calls handled at once)"
                    .into(),
            ));
        }
        if self.feed_streams_per_caller == 0 {
            return Err((
                "feed_streams_per_caller",
                "[limits] feed_streams_per_caller must be at least 1".into(),
            ));
        }
        for (key, v) in [
            ("call_timeout_secs", self.call_timeout_secs),
            ("keepalive_interval_secs", self.keepalive_interval_secs),
            ("keepalive_timeout_secs", self.keepalive_timeout_secs),
        ] {
            if v == 0 {
                return Err((key, format!("[limits] {key} must be at least 1 second")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, GatewayConfig};

    #[test]
    fn a_limits_section_is_read_and_what_is_left_out_keeps_its_default() {
        let text = "[limits]\nper_caller = { per_second = 5, burst = 10 }\nglobal = { per_second = 1000 }\n";
        let config = GatewayConfig::parse(Path::new("g.toml"), text, |_| None).unwrap();
        let limits = config.limits;
        assert_eq!(
            (limits.per_caller.per_second, limits.per_caller.burst),
            (5, 10)
        );
        assert_eq!((limits.global.per_second, limits.global.burst), (1000, 0));
        assert_eq!(limits.per_hall, super::default_per_hall());
        assert_eq!(limits.max_in_flight, 256);
    }

    #[test]
    fn a_zero_bound_is_refused_with_its_line() {
        let text = "[limits]\ncheck_secs = 5\nmax_in_flight = 0\n";
        let Err(ConfigError::Invalid(problem)) =
            GatewayConfig::parse(Path::new("g.toml"), text, |_| None)
        else {
            panic!("max_in_flight = 0 is refused")
        };
        assert_eq!(problem.line, 3, "{problem}");
        assert!(problem.message.contains("max_in_flight"), "{problem}");
    }
}
