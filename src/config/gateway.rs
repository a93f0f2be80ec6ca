//! The gateway's file (`config/gateway.toml`) as a whole: [`GatewayConfig`], the sections it
//! holds and their defaults, loaded in one pass (read, `${VAR}` interpolated, parsed with
//! unknown keys refused) and then held to the rules serde cannot express (the hall's offset,
//! the log format and filter, the bus's prefix, delays and nodes, the bound on a request), each
//! reported at the line of its key ([`ConfigError`]). The sections' shapes are in their own
//! files. It never reaches the network or the database and never starts anything it configures.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::bus::{BusConfig, PlatformConfig};
use super::clocks::{CalendarConfig, SlaConfig, StallConfig};
use super::console::ConsoleConfig;
use super::evaluation::EvaluationConfig;
use super::guide::GuideConfig;
use super::hotline::HotlineConfig;
use super::intake::IntakeConfig;
use super::limits::LimitsConfig;
use super::observe::{LogConfig, MetricsConfig, TracingConfig};
use super::server::{ServerConfig, StoreConfig};
use super::source::{ConfigProblem, interpolate, key_line, toml_problem};
use super::trust::{AuthConfig, DevelopmentConfig};

/// Why the gateway configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(ConfigProblem),
}

/// The gateway's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The gRPC server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where cases are stored.
    #[serde(default)]
    pub store: StoreConfig,
    /// The acceptance list (受理清单) directory.
    #[serde(default = "default_catalog_dir")]
    pub catalog_dir: PathBuf,
    /// The working-day calendar directory, one file per year.
    #[serde(default = "default_calendar_dir")]
    pub calendar_dir: PathBuf,
    /// Reloading the calendar at run time, and the warning about next year's file.
    #[serde(default)]
    pub calendar: CalendarConfig,
    /// The hall's clock and intake rules.
    #[serde(default)]
    pub intake: IntakeConfig,
    /// Log format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// The RabbitMQ bus.
    #[serde(default)]
    pub bus: BusConfig,
    /// The one-network platform's HTTP push.
    #[serde(default)]
    pub platform: PlatformConfig,
    /// The legal clock's supervision.
    #[serde(default)]
    pub sla: SlaConfig,
    /// Stalled tasks: how long a department's adapter may be silent about a task.
    #[serde(default)]
    pub stall: StallConfig,
    /// 好差评: each channel's indicators, the rectification a 差评 opens.
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    /// The 12345 hotline's work orders.
    #[serde(default)]
    pub hotline: HotlineConfig,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Export of spans to an OpenTelemetry collector.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Caller identity and roles.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Protections turned off for development (each logged loudly at start).
    #[serde(default)]
    pub development: DevelopmentConfig,
    /// Fair share and overload: call rates, in-flight bound, stream caps, timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The operations console on the internal listener.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The public item guide (办事指南) on the windows' listener.
    #[serde(default)]
    pub guide: GuideConfig,
}

fn default_catalog_dir() -> PathBuf {
    "config/catalog".into()
}
fn default_calendar_dir() -> PathBuf {
    "config/calendar".into()
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            catalog_dir: default_catalog_dir(),
            calendar_dir: default_calendar_dir(),
            calendar: CalendarConfig::default(),
            stall: StallConfig::default(),
            evaluation: EvaluationConfig::default(),
            hotline: HotlineConfig::default(),
            intake: IntakeConfig::default(),
            log: LogConfig::default(),
            bus: BusConfig::default(),
            platform: PlatformConfig::default(),
            sla: SlaConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            auth: AuthConfig::default(),
            development: DevelopmentConfig::default(),
            limits: LimitsConfig::default(),
            console: ConsoleConfig::default(),
            guide: GuideConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Loads and validates a configuration file, with the process environment for `${VAR}`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// Loads and validates a configuration file; `env` answers `${VAR}` lookups.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(path, &text, env)
    }

    /// Parses configuration text. Relative paths in it are relative to the working directory
    /// (the repository root for `make demo`), as a shell user expects of command-line tools.
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let text = interpolate(path, text, env).map_err(ConfigError::Invalid)?;
        let config: GatewayConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid(toml_problem(path, &text, &e)))?;
        let problem = |key: &str, message: String| {
            let line = key_line(&text, key);
            ConfigError::Invalid(ConfigProblem {
                file: path.display().to_string(),
                line,
                message,
            })
        };
        config
            .intake
            .offset()
            .map_err(|m| problem("utc_offset", m))?;
        if !matches!(config.log.format.as_str(), "json" | "text") {
            return Err(problem(
                "format",
                format!("log format {:?} must be json or text", config.log.format),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
            return Err(problem(
                "level",
                format!(
                    "log level {:?} is not a tracing filter: {e}",
                    config.log.level
                ),
            ));
        }
        let prefix_ok = !config.bus.prefix.is_empty()
            && config
                .bus
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !prefix_ok {
            return Err(problem(
                "prefix",
                format!(
                    "bus prefix {:?} must be letters, digits, '.', '_' or '-'",
                    config.bus.prefix
                ),
            ));
        }
        if config.bus.retry_delays_secs.is_empty()
            || config
                .bus
                .retry_delays_secs
                .windows(2)
                .any(|w| w[0] >= w[1])
        {
            return Err(problem(
                "retry_delays_secs",
                "retry_delays_secs must list increasing delays, e.g. [10, 60, 600]".into(),
            ));
        }
        config
            .bus
            .check_nodes()
            .map_err(|m| problem("nodes", format!("[bus] nodes: {m}")))?;
        config.bus.check_tls().map_err(|m| {
            let key = if config.bus.ca_file.is_some() {
                "ca_file"
            } else {
                "url"
            };
            problem(key, format!("[bus] {m}"))
        })?;
        config.limits.check().map_err(|(key, m)| problem(key, m))?;
        // An [sla] warn_share out of range is the legal clock's to report (at start).
        let sla_share = config.sla.warn_share.clamp(f64::MIN_POSITIVE, 0.99);
        crate::evaluation::Rules::new(&config.evaluation, sla_share).map_err(|(key, m)| {
            // The key as set in the [evaluation] tables, not in an earlier section.
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("[evaluation"))
                .map_or(1, |start| {
                    let rest = text.lines().skip(start).collect::<Vec<_>>().join("\n");
                    start + key_line(&rest, key)
                });
            ConfigError::Invalid(ConfigProblem {
                file: path.display().to_string(),
                line,
                message: m,
            })
        })?;
        config.console.check().map_err(|(key, m)| problem(key, m))?;
        config.guide.check().map_err(|(key, m)| problem(key, m))?;
        config.hotline.check().map_err(|(key, m)| problem(key, m))?;
        if config.server.max_message_bytes < 1024 {
            return Err(problem(
                "max_message_bytes",
                "max_message_bytes must be at least 1024".into(),
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_quotes_and_backslashes_stay_inside_their_string() {
        let env = |_: &str| Some(r#"p"w\d"#.to_string());
        let config = GatewayConfig::parse(
            Path::new("g.toml"),
            "[store]\nkind = \"postgres\"\nurl = \"postgres://u:${PW}@h/db\"\n",
            env,
        )
        .unwrap();
        let StoreConfig::Postgres { url, .. } = config.store else {
            panic!("postgres")
        };
        assert_eq!(url, r#"postgres://u:p"w\d@h/db"#);
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err = GatewayConfig::parse(
            Path::new("g.toml"),
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            |_| None,
        )
        .unwrap_err();
        let ConfigError::Invalid(problem) = err else {
            panic!("expected invalid")
        };
        assert_eq!(problem.line, 3, "{problem}");
        assert!(problem.message.contains("lisen"), "{problem}");
    }

    #[test]
    fn a_bad_evaluation_setting_is_refused_at_its_line() {
        let err = GatewayConfig::parse(
            Path::new("g.toml"),
            "[sla]\nwarn_share = 0.8\n\n[evaluation]\nwarn_share = 1.5\n",
            |_| None,
        )
        .unwrap_err();
        let ConfigError::Invalid(problem) = err else {
            panic!("expected invalid")
        };
        assert_eq!(problem.line, 5, "{problem}");
        assert!(
            problem.message.contains("[evaluation] warn_share"),
            "{problem}"
        );
    }

    #[test]
    fn shipped_gateway_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
        let config = GatewayConfig::load_with_env(&path, |_| None).expect("config/gateway.toml");
        assert!(matches!(config.store, StoreConfig::Sqlite { .. }));
        assert_eq!(config.bus.ca_file, None, "an empty ca_file is none");
        assert_eq!(config.platform.refused_tries, 5);
    }

    #[test]
    fn amqps_without_a_ca_file_is_refused_at_the_url() {
        let err = GatewayConfig::parse(
            Path::new("g.toml"),
            "[bus]\nprefix = \"y\"\nurl = \"amqps://gw:secret@mq:5671/%2f\"\n",
            |_| None,
        )
        .unwrap_err();
        let ConfigError::Invalid(problem) = err else {
            panic!("expected invalid")
        };
        assert_eq!(problem.line, 3, "{problem}");
        assert!(problem.message.contains("ca_file"), "{problem}");
        assert!(!problem.message.contains("secret"), "{problem}");
    }
}
