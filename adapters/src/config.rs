//! Adapter settings: the process file (`config/adapter.toml`: bus, HTTP endpoint, where the
//! departments are) and one YAML file per department (`config/departments/<code>.yaml`: kind,
//! endpoint, credentials by reference, mapping, limits, retry policy, maintenance windows).
//! Everything is validated at start; a problem names its file and line.
//!
//! This module owns the settings' shape, their defaults and their checks. It never builds a
//! department's system or reaches one, and it does not know the kinds of legacy system: a
//! department file's reader is given their names (`kinds::names()`), so that `kinds`, which
//! builds from these settings, depends on this module and not the other way round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use yichuang::config::{BusConfig, ConfigError, ConfigProblem};

use crate::mapping::{ResultMapping, Template};

/// The adapter process's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Directory of the department files, relative to this file.
    #[serde(default = "default_departments_dir")]
    pub departments_dir: PathBuf,
    /// The acceptance list (the gateway's catalog directory), relative to this file; optional.
    /// When given, the materials of a supplement are handed over with their names, not only
    /// their codes.
    #[serde(default)]
    pub catalog_dir: Option<PathBuf>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default = "default_bus")]
    pub bus: BusConfig,
    #[serde(default = "default_log")]
    pub log: yichuang::config::LogConfig,
    /// Export of spans to an OpenTelemetry collector (off without an endpoint).
    #[serde(default)]
    pub tracing: yichuang::config::TracingConfig,
}

fn default_log() -> yichuang::config::LogConfig {
    toml::from_str("").expect("log defaults")
}

fn default_departments_dir() -> PathBuf {
    "departments".into()
}

fn default_bus() -> BusConfig {
    toml::from_str("").expect("bus defaults")
}

/// The HTTP endpoints: health, readiness, status and metrics on one listener (internal: probes
/// and Prometheus), callbacks from legacy systems on another (reached from the departments'
/// networks), so neither exposes the other.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Health, readiness, status and metrics.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Signed callbacks from legacy systems (`POST /callback/<department>`); empty: no
    /// callbacks are taken.
    #[serde(default)]
    pub callbacks_listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            callbacks_listen: String::new(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9180".into()
}

impl AdapterConfig {
    /// Reads the file, with `${VAR:-default}` taken from the environment.
    pub fn load(path: &Path) -> Result<AdapterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let text = yichuang::config::interpolate(path, &text, |v| std::env::var(v).ok())
            .map_err(ConfigError::Invalid)?;
        let mut config: AdapterConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Invalid(yichuang::config::toml_problem(path, &text, &e)))?;
        if let Err(message) = config.bus.check_nodes() {
            let line = yichuang::config::key_line(&text, "nodes");
            return Err(ConfigError::Invalid(yichuang::config::ConfigProblem {
                file: path.display().to_string(),
                line,
                message: format!("[bus] nodes: {message}"),
            }));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        if config.departments_dir.is_relative() {
            config.departments_dir = base.join(&config.departments_dir);
        }
        if let Some(dir) = config.catalog_dir.as_mut()
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        // The broker's TLS files, relative to this file as the other paths are.
        let tls = config.bus.tls().relative_to(base);
        (
            config.bus.ca_file,
            config.bus.client_cert,
            config.bus.client_key,
        ) = (tls.ca_file, tls.client_cert, tls.client_key);
        if let Err(message) = config.bus.check_tls() {
            let key = if config.bus.ca_file.is_some() {
                "ca_file"
            } else {
                "url"
            };
            return Err(ConfigError::Invalid(yichuang::config::ConfigProblem {
                file: path.display().to_string(),
                line: yichuang::config::key_line(&text, key),
                message: format!("[bus] {message}"),
            }));
        }

        Ok(config)
    }

    /// Material kind code → name from the acceptance list at `catalog_dir`; empty when none is
    /// given. The error lists every problem of the catalog.
    pub fn material_names(&self) -> Result<BTreeMap<String, String>, String> {
        let Some(dir) = &self.catalog_dir else {
            return Ok(BTreeMap::new());
        };
        let catalog = yichuang::catalog::Catalog::load(dir).map_err(|e| e.to_string())?;
        Ok(catalog
            .materials
            .iter()
            .map(|(code, m)| (code.clone(), m.name.clone()))
            .collect())
    }
}

/// One department's connection to its legacy system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentConfig {
    /// Department code, as in the acceptance list (`scjg`).
    pub department: String,
    /// Kind of legacy system: one of the kinds the file's reader is given (`kinds::KINDS`).
    pub kind: String,
    /// Where the legacy system is (URL, or a PostgreSQL URL for table exchange).
    #[serde(default)]
    pub endpoint: String,
    /// Secrets by reference: `{ env: VAR }` or `{ file: /run/secrets/x }`, never inline.
    #[serde(default)]
    pub credentials: BTreeMap<String, SecretRef>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The circuit breaker (`crate::breaker`).
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub polling: Polling,
    /// Daily windows (hall time, UTC+8) when the legacy system is not called.
    #[serde(default)]
    pub maintenance: Vec<Window>,
    #[serde(default)]
    pub mapping: Mapping,
    /// TLS to an `https://` endpoint: the CA bundle that signed the legacy system's
    /// certificate (`ca_file`; government intranets run their own CAs; when set, only it is
    /// trusted) and, for mTLS, `client_cert` and `client_key`. PEM paths, relative to the
    /// department file. A PostgreSQL endpoint takes `sslmode` and `sslrootcert` in its URL.
    #[serde(default)]
    pub tls: yichuang::tls::ClientTls,
    /// Callbacks from the legacy system: how they are authenticated, and whether what they say
    /// is taken as the system's answer or only as a reason to ask it now.
    #[serde(default)]
    pub callbacks: CallbackConfig,
    /// The description of a legacy HTTP system (`kind: http`, `crate::describe`).
    #[serde(default)]
    pub http: Option<crate::describe::Described>,
    /// Settings of the kind (paths, SOAP action, table names…), checked by the kind.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Material kind code → name, from the acceptance list when the adapter is given it
    /// (`catalog_dir`), not from the department file: supplements name what they hand over.
    #[serde(skip)]
    pub material_names: BTreeMap<String, String>,
}

/// A secret's source.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawSecret")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

/// `{ env: VAR }` or `{ file: PATH }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<RawSecret> for SecretRef {
    type Error = String;

    fn try_from(raw: RawSecret) -> Result<Self, String> {
        match (raw.env, raw.file) {
            (Some(var), None) => Ok(SecretRef::Env(var)),
            (None, Some(path)) => Ok(SecretRef::File(path)),
            _ => Err("a secret is `{ env: VARIABLE }` or `{ file: PATH }`, one of the two".into()),
        }
    }
}

impl SecretRef {
    /// The secret's value; the error names the variable or file, never a value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end().to_string())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// Callbacks from a department's legacy system (`POST /callback/<department>`, docs/adapters.md).
/// Each carries an HMAC-SHA256 signature with this department's secret over its timestamp,
/// nonce, method, path and body; one that is unsigned, badly signed, outside the freshness
/// window or replayed is refused (401).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// The shared secret, by reference (`{ env: VAR }` or `{ file: PATH }`). Without one, every
    /// callback for the department is refused.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// `false` (the default): a verified callback only makes the adapter ask the legacy system
    /// about the task now (the poll the worker would make later), and what the system answers
    /// is published. `true`: what a verified callback says is published as the system's answer.
    #[serde(default)]
    pub trusted: bool,
    /// How far a callback's timestamp may be from the adapter's clock, in seconds (default
    /// 300); its nonce is remembered for twice as long, so a copy within the window is refused.
    #[serde(default = "default_callback_window")]
    pub window_secs: u64,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            secret: None,
            trusted: false,
            window_secs: default_callback_window(),
        }
    }
}

fn default_callback_window() -> u64 {
    300
}

/// How hard the legacy system may be pushed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Calls per second, evenly spaced (no bursts).
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Tasks handled at once (also the consumer's prefetch).
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
    /// Bound on one call, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_second: default_rps(),
            concurrency: default_concurrency(),
            timeout_secs: default_timeout(),
        }
    }
}

fn default_rps() -> u32 {
    5
}
fn default_concurrency() -> u16 {
    4
}
fn default_timeout() -> u64 {
    10
}

/// The circuit breaker of a department (`crate::breaker`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Transient failures in a row that open it (default 10); 0: no breaker.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// How long it stays open before one probe (default 30 s).
    #[serde(default = "default_breaker_open")]
    pub open_secs: u64,
    /// The longest it stays open after failed probes (doubling; default 600 s).
    #[serde(default = "default_breaker_max_open")]
    pub max_open_secs: u64,
    /// The department it guards (set from the department file, for the metrics).
    #[serde(skip)]
    pub department: String,
}

fn default_breaker_failures() -> u32 {
    10
}
fn default_breaker_open() -> u64 {
    30
}
fn default_breaker_max_open() -> u64 {
    600
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_breaker_failures(),
            open_secs: default_breaker_open(),
            max_open_secs: default_breaker_max_open(),
            department: String::new(),
        }
    }
}

/// Retries of transient failures: exponential backoff with jitter through the delay queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts before the task is dead-lettered with its last failure.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial")]
    pub initial_backoff_secs: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_attempts(),
            initial_backoff_secs: default_initial(),
            max_backoff_secs: default_max_backoff(),
        }
    }
}

fn default_attempts() -> u32 {
    8
}
fn default_initial() -> u64 {
    10
}
fn default_max_backoff() -> u64 {
    600
}

/// How often a submitted task's outcome is asked for, through the delay queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Polling {
    #[serde(default = "default_poll")]
    pub interval_secs: u64,
    /// Polls before the task is dead-lettered as undecided.
    #[serde(default = "default_max_polls")]
    pub max_polls: u32,
    /// Every this many polls without news, the gateway is told the task is still followed (an
    /// `ALIVE` result), so its stall detector leaves it alone (docs/bus.md). Every retry tells it
    /// too.
    #[serde(default = "default_alive_every")]
    pub alive_every: u32,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            interval_secs: default_poll(),
            max_polls: default_max_polls(),
            alive_every: default_alive_every(),
        }
    }
}

fn default_alive_every() -> u32 {
    5
}

fn default_poll() -> u64 {
    60
}
fn default_max_polls() -> u32 {
    20_000
}

/// A daily window, `HH:MM` to `HH:MM` in hall time; it may cross midnight.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: String,
    pub to: String,
}

impl Window {
    fn minutes(v: &str) -> Option<u32> {
        let (h, m) = v.split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && v.len() == 5).then_some(h * 60 + m)
    }

    /// Seconds until the window ends, when `now` (hall time) is inside it.
    pub fn remaining(&self, now: chrono::NaiveTime) -> Option<u64> {
        use chrono::Timelike;
        let (from, to) = (Self::minutes(&self.from)?, Self::minutes(&self.to)?);
        let secs = now.num_seconds_from_midnight();
        let (from, to) = (from * 60, to * 60);
        let inside = if from <= to {
            secs >= from && secs < to
        } else {
            secs >= from || secs < to
        };
        inside.then(|| u64::from((to + 86_400 - secs) % 86_400))
    }
}

/// The department's field mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Legacy field → template over the canonical task.
    #[serde(default)]
    pub request: BTreeMap<String, Template>,
    #[serde(default)]
    pub result: ResultMapping,
}

impl DepartmentConfig {
    /// Reads `<dir>/<code>.yaml`; its kind must be one of `kinds` (the adapter's are
    /// `kinds::names()`).
    pub fn load(dir: &Path, code: &str, kinds: &[&str]) -> Result<DepartmentConfig, ConfigError> {
        let path = dir.join(format!("{code}.yaml"));
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&path, &text, kinds)?;
        config.tls = config.tls.relative_to(dir);
        if let Err(e) = config.tls.check("tls") {
            return Err(problem(&path, line_of(&text, "tls:"), format!("tls: {e}")));
        }
        if config.department != code {
            return Err(problem(
                &path,
                line_of(&text, "department:"),
                format!(
                    "department is {:?} but the file is named for {code:?}",
                    config.department
                ),
            ));
        }
        Ok(config)
    }

    /// Parses and checks one department file; its kind must be one of `kinds`.
    pub fn parse(path: &Path, text: &str, kinds: &[&str]) -> Result<DepartmentConfig, ConfigError> {
        let text = yichuang::config::interpolate(path, text, |v| std::env::var(v).ok())
            .map_err(ConfigError::Invalid)?;
        let config: DepartmentConfig = yaml_serde::from_str(&text).map_err(|e| {
            let line = e.location().map_or(1, |l| l.line());
            // The message without yaml's own " at line N column M" suffix: we say the line.
            let message = e.to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            problem(path, source_line(&text, line, &message), message)
        })?;
        let at = |key: &str| line_of(&text, key);
        if !kinds.contains(&config.kind.as_str()) {
            return Err(problem(
                path,
                at("kind:"),
                format!(
                    "unknown kind {:?}; the kinds are: {}",
                    config.kind,
                    kinds.join(", ")
                ),
            ));
        }
        if (config.kind == "http") != config.http.is_some() {
            return Err(problem(
                path,
                if config.http.is_some() {
                    at("http:")
                } else {
                    at("kind:")
                },
                if config.http.is_some() {
                    format!(
                        "an `http:` description is for kind http, not {:?}",
                        config.kind
                    )
                } else {
                    "kind http needs an `http:` section describing the system (docs/adapters.md)"
                        .into()
                },
            ));
        }
        if let Some(d) = &config.http {
            for (name, template) in d.0.credentials_used() {
                if !config.credentials.contains_key(&name) {
                    return Err(problem(
                        path,
                        at_text(&text, &format!("credentials.{name}")),
                        format!(
                            "credentials.{name} is used ({template:?}) but not given: add it under credentials as {{ env: VAR }} or {{ file: PATH }}"
                        ),
                    ));
                }
            }
        }
        if config.limits.requests_per_second == 0 || config.limits.concurrency == 0 {
            return Err(problem(
                path,
                at("limits:"),
                "limits.requests_per_second and limits.concurrency must be at least 1".into(),
            ));
        }
        if !config.tls.is_empty() && !config.endpoint.starts_with("https://") {
            return Err(problem(
                path,
                at("tls:"),
                format!(
                    "tls is set but endpoint {:?} is not https://; write https://, or for a PostgreSQL endpoint put sslmode and sslrootcert in its URL",
                    config.endpoint
                ),
            ));
        }
        if config.callbacks.trusted && config.callbacks.secret.is_none() {
            return Err(problem(
                path,
                at("callbacks:"),
                "callbacks.trusted needs callbacks.secret: only a signed callback can be trusted"
                    .into(),
            ));
        }
        if config.callbacks.window_secs == 0 {
            return Err(problem(
                path,
                at("callbacks:"),
                "callbacks.window_secs must be at least 1".into(),
            ));
        }
        for w in &config.maintenance {
            if Window::minutes(&w.from).is_none() || Window::minutes(&w.to).is_none() {
                return Err(problem(
                    path,
                    at("maintenance:"),
                    format!(
                        "maintenance window {:?}–{:?}: times are HH:MM, 00:00 to 23:59",
                        w.from, w.to
                    ),
                ));
            }
        }
        Ok(config)
    }
}

/// The line of a bad template or expression: YAML reports the map that holds it, so the line
/// from there on where its source (quoted in `message` after `template ` or `expression `)
/// begins.
fn source_line(text: &str, reported: usize, message: &str) -> usize {
    let quoted = ["expression \"", "template \""]
        .iter()
        .find_map(|m| message.find(m).map(|i| &message[i + m.len()..]));
    let Some(quoted) = quoted else {
        return reported;
    };
    // The first line of the source, as Rust's `{:?}` wrote it (quotes and backslashes escaped).
    let first: String = quoted
        .split("\\n")
        .next()
        .unwrap_or_default()
        .split('"')
        .next()
        .unwrap_or_default()
        .replace("\\'", "'");
    if first.trim().is_empty() {
        return reported;
    }
    text.lines()
        .enumerate()
        .skip(reported.saturating_sub(1))
        .find(|(_, l)| l.contains(first.trim()))
        .map_or(reported, |(i, _)| i + 1)
}

/// The line where `needle` first appears.
fn at_text(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map_or(1, |i| i + 1)
}

fn problem(path: &Path, line: usize, message: String) -> ConfigError {
    ConfigError::Invalid(ConfigProblem {
        file: path.display().to_string(),
        line,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DepartmentConfig, String> {
        DepartmentConfig::parse(Path::new("scjg.yaml"), text, &["http-json"])
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_bad_template_is_reported_at_its_line() {
        let e = parse(
            "department: scjg\nkind: http-json\nmapping:\n  request:\n    qymc: \"{{ submission.applicant.name | lowr }}\"\n",
        )
        .unwrap_err();
        assert!(e.contains("scjg.yaml:5"), "{e}");
        assert!(e.contains("unknown filter `lowr`"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let e = parse("department: scjg\nkind: http-json\nlimit:\n  requests_per_second: 5\n")
            .unwrap_err();
        assert!(e.contains("scjg.yaml:3") && e.contains("limit"), "{e}");
    }

    /// The description docs/adapters.md walks an integration team through reads, and builds.
    #[test]
    fn the_walkthroughs_description_reads_and_builds() {
        let docs = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/adapters.md"),
        )
        .unwrap();
        let start = docs
            .find("```yaml\ndepartment: mz")
            .expect("the walkthrough")
            + 8;
        let text = &docs[start..start + docs[start..].find("```").unwrap()];
        let text = text.replace("${MZ_ENDPOINT}", "http://127.0.0.1:1");
        let c = DepartmentConfig::parse(Path::new("mz.yaml"), &text, &crate::kinds::names())
            .unwrap_or_else(|e| panic!("{e}"));
        // The credentials from files, not the environment.
        let dir = std::env::temp_dir().join(format!("mz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = c;
        for name in ["user", "pwd"] {
            std::fs::write(dir.join(name), "x").unwrap();
            c.credentials
                .insert(name.into(), SecretRef::File(dir.join(name)));
        }
        crate::kinds::build(&c, crate::system::Gate::new(1)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn maintenance_windows_may_cross_midnight() {
        let w = Window {
            from: "23:30".into(),
            to: "06:00".into(),
        };
        let t = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert_eq!(w.remaining(t(23, 45)), Some(6 * 3600 + 15 * 60));
        assert_eq!(w.remaining(t(5, 59)), Some(60));
        assert_eq!(w.remaining(t(6, 0)), None);
        assert_eq!(w.remaining(t(12, 0)), None);
    }
}
