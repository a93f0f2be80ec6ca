//! Gateway settings (`config/gateway.toml`): typed, documented where declared, unknown keys
//! refused, `${VAR}` / `${VAR:-default}` interpolated from the environment before parsing.
//! Also the small helpers every TOML loader of the gateway shares (file:line locations).
//! This module never reaches the network or the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A problem found in a configuration file, located by file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

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

/// The line (from 1) where `key = …` is set, skipping comments that mention it; 1 when it is not.
pub fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// 1-based line number of a byte offset in `text`.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Turns a TOML parse error into a located problem, dropping toml's own multi-line rendering.
pub fn toml_problem(file: &Path, text: &str, err: &toml::de::Error) -> ConfigProblem {
    ConfigProblem {
        file: file.display().to_string(),
        line: err.span().map_or(1, |s| line_at(text, s.start)),
        message: err.message().trim().to_string(),
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` with the environment's value (or the default).
/// Comments are left alone. An unset variable without a default is an error naming the
/// variable and its line.
pub fn interpolate(
    file: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigProblem> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let problem = |message: String| ConfigProblem {
            file: file.display().to_string(),
            line: index + 1,
            message,
        };
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(problem("unterminated `${`: close it with `}`".into()));
            };
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match env(name)
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_string))
            {
                // Escaped so a value can hold quotes or backslashes without breaking its string.
                Some(value) => out.push_str(&escape_toml(&value)),
                None => {
                    return Err(problem(format!(
                        "environment variable {name} is not set: set it or write ${{{name}:-default}}"
                    )));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Escapes a value for a TOML basic string.
fn escape_toml(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// Byte offset where a TOML line's comment starts (the line's length when there is none).
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return i,
            _ => {}
        }
        escaped = false;
    }
    line.len()
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
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Export of spans to an OpenTelemetry collector.
    #[serde(default)]
    pub tracing: TracingConfig,
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

/// The working-day calendar at run time (docs/calendar.md): how often its directory is looked at
/// for a new or changed year file, and from when a missing next-year file is reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Seconds between looks at the calendar directory (default 30); 0: reload on `SIGHUP` only.
    #[serde(default = "default_calendar_check_secs")]
    pub check_secs: u64,
    /// From this day of each year (`MM-DD`, default `11-01`), a missing file for next year is
    /// reported: the `yichuang_calendar_next_year_missing` metric and `AdminService.Status`.
    #[serde(default = "default_calendar_warn_from")]
    pub warn_from: String,
}

fn default_calendar_check_secs() -> u64 {
    30
}

fn default_calendar_warn_from() -> String {
    "11-01".into()
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            check_secs: default_calendar_check_secs(),
            warn_from: default_calendar_warn_from(),
        }
    }
}

impl CalendarConfig {
    /// `warn_from` as (month, day).
    pub fn warn_from_day(&self) -> Result<(u32, u32), String> {
        let parsed = self.warn_from.split_once('-').and_then(|(m, d)| {
            let (m, d) = (m.parse::<u32>().ok()?, d.parse::<u32>().ok()?);
            // Any year with a 29 February will do to check the day exists.
            chrono::NaiveDate::from_ymd_opt(2024, m, d).map(|_| (m, d))
        });
        parsed.ok_or_else(|| {
            format!(
                "[calendar] warn_from = {:?}: write a day of the year as MM-DD, e.g. \"11-01\"",
                self.warn_from
            )
        })
    }
}

/// Stalled tasks (docs/bus.md): a task in a department's hands that the gateway hears nothing of
/// (no result, no `ALIVE` heartbeat) for longer than this is published again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StallConfig {
    /// Seconds of silence allowed (default 1800). Keep it well above the department's longest
    /// retry delay and its polling interval × `polling.alive_every`.
    #[serde(default = "default_stall_after")]
    pub after_secs: u64,
    /// Seconds between looks (default 30); 0: this replica does not look (another one does).
    #[serde(default = "default_stall_check")]
    pub check_secs: u64,
    /// After this many repairs of one task, a `task-stalled` entry in its case's history.
    #[serde(default = "default_stall_alert")]
    pub alert_after: u32,
    /// Per department, seconds of silence allowed instead of `after_secs`.
    #[serde(default)]
    pub departments: std::collections::BTreeMap<String, u64>,
}

fn default_stall_after() -> u64 {
    1800
}
fn default_stall_check() -> u64 {
    30
}
fn default_stall_alert() -> u32 {
    3
}

impl Default for StallConfig {
    fn default() -> Self {
        StallConfig {
            after_secs: default_stall_after(),
            check_secs: default_stall_check(),
            alert_after: default_stall_alert(),
            departments: Default::default(),
        }
    }
}

impl StallConfig {
    /// Seconds of silence allowed for `department`.
    pub fn allowance(&self, department: &str) -> u64 {
        self.departments
            .get(department)
            .copied()
            .unwrap_or(self.after_secs)
    }
}

/// The SLA sweeper: when the yellow warning comes and how often tasks are looked at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// Share of the promised time after which a task gets its yellow warning (0 < share < 1;
    /// default 0.8).
    #[serde(default = "default_warn_share")]
    pub warn_share: f64,
    /// How often the sweeper looks for tasks whose clock changed or whose warning or deadline
    /// came, in seconds (default 5); 0: this replica does not sweep (another one does).
    #[serde(default = "default_sweep_secs")]
    pub sweep_secs: u64,
}

fn default_warn_share() -> f64 {
    0.8
}

fn default_sweep_secs() -> u64 {
    5
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            warn_share: default_warn_share(),
            sweep_secs: default_sweep_secs(),
        }
    }
}

/// The HTTP push of every status change to the one-network platform (一网通办).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Where each status change is POSTed, in order; empty: no push.
    #[serde(default)]
    pub push_url: String,
    /// Key of the HMAC-SHA256 signature in `X-Yichuang-Signature` (from the environment).
    #[serde(default)]
    pub secret: String,
    /// Bound on one POST, in seconds (default 10).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Settings of the RabbitMQ bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// AMQP URL of the broker (the vhost is its path; `%2f` is `/`).
    #[serde(default = "default_amqp_url")]
    pub url: String,
    /// The other nodes of the same RabbitMQ cluster, as AMQP URLs with the user and vhost of
    /// `url`: a connection that cannot be made, or is lost, moves on to the next node
    /// (docs/bus.md, "A cluster"). Empty: one node.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Prefix of every exchange and queue name, so several installations (or tests) can share a broker.
    #[serde(default = "default_bus_prefix")]
    pub prefix: String,
    /// Deliveries of one task message before the broker dead-letters it (quorum `x-delivery-limit`).
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
    /// Delays of the retry queues, in seconds, shortest first.
    #[serde(default = "default_retry_delays")]
    pub retry_delays_secs: Vec<u64>,
    /// Bound on every broker call, in seconds.
    #[serde(default = "default_bus_timeout")]
    pub timeout_secs: u64,
    /// Whether the gateway talks to the bus: the outbox relay that publishes accepted tasks
    /// and status events, and the consumer of the departments' results.
    #[serde(default = "default_true")]
    pub relay: bool,
    /// The RabbitMQ user each department's adapter connects as (`scjg = "adapter-scjg"`): a
    /// result for a department listed here is refused unless the broker-validated `user_id`
    /// is that user. Departments not listed are not checked.
    #[serde(default)]
    pub department_users: std::collections::BTreeMap<String, String>,
    /// RabbitMQ's management API, where the policies that make dead-lettering at-least-once are
    /// applied (docs/bus.md): empty: `http://<host of url>:15672` with the user of `url`;
    /// `"off"`: not applied here (an operator applies them).
    #[serde(default)]
    pub management_url: String,
    /// Deliveries of one result before the broker dead-letters it to `<prefix>.dead.results`
    /// (a result the gateway cannot apply must not block the consumer).
    #[serde(default = "default_results_delivery_limit")]
    pub results_delivery_limit: u32,
}

impl BusConfig {
    /// The cluster's nodes are one broker seen through several doors: each URL of `nodes` must be
    /// an AMQP URL with the user and vhost of `url` (a different user would change what the
    /// broker lets the process do, and whom its results are from; a different vhost is another
    /// broker).
    pub fn check_nodes(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Ok(());
        }
        let parse = |url: &str| -> Result<lapin::uri::AMQPUri, String> {
            // The parser's own message repeats the URL, password and all: not shown.
            url.parse().map_err(|_| {
                format!(
                    "{} is not an AMQP URL; write amqp://user:password@host:port/vhost",
                    crate::bus::redact(url)
                )
            })
        };
        let first = parse(&self.url)?;
        for node in &self.nodes {
            let other = parse(node)?;
            if other.vhost != first.vhost
                || other.authority.userinfo.username != first.authority.userinfo.username
            {
                return Err(format!(
                    "node {} must have the user and vhost of url {} (user {:?}, vhost {:?}): every node of a cluster is the same broker",
                    crate::bus::redact(node),
                    crate::bus::redact(&self.url),
                    first.authority.userinfo.username,
                    first.vhost
                ));
            }
        }
        Ok(())
    }
}

fn default_results_delivery_limit() -> u32 {
    10
}

fn default_true() -> bool {
    true
}

fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn default_bus_prefix() -> String {
    "yichuang".into()
}
fn default_delivery_limit() -> u32 {
    5
}
fn default_retry_delays() -> Vec<u64> {
    vec![10, 60, 600]
}
fn default_bus_timeout() -> u64 {
    10
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: default_amqp_url(),
            nodes: Vec::new(),
            prefix: default_bus_prefix(),
            delivery_limit: default_delivery_limit(),
            retry_delays_secs: default_retry_delays(),
            timeout_secs: default_bus_timeout(),
            relay: true,
            department_users: Default::default(),
            management_url: String::new(),
            results_delivery_limit: default_results_delivery_limit(),
        }
    }
}

/// Settings of the gRPC server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the gRPC API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request accepted, in bytes; larger requests get `RESOURCE_EXHAUSTED`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

/// Which store holds cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    /// Embedded SQLite file (one gateway node). WAL, `synchronous = FULL`: a commit survives power loss.
    Sqlite {
        /// Path of the database file; its directory is created if missing.
        path: PathBuf,
    },
    /// PostgreSQL, for several gateway replicas sharing one database.
    Postgres {
        /// Connection URL, e.g. `postgres://yichuang:${PGPASSWORD}@db:5432/yichuang`.
        url: String,
        /// Schema holding the gateway's tables (created if missing).
        #[serde(default = "default_schema")]
        schema: String,
        /// Connections in the pool.
        #[serde(default = "default_pool_size")]
        pool_size: usize,
    },
}

/// Settings of intake (normalisation and validation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// The hall's UTC offset (`+08:00` in China): case-number dates and deadlines are counted in it.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// How far in the future `submittedAt` may be, in seconds, to allow for window clocks that run fast.
    #[serde(default = "default_clock_skew")]
    pub max_clock_skew_secs: i64,
    /// Largest number of items in one submission.
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    /// Largest number of materials in one submission.
    #[serde(default = "default_max_materials")]
    pub max_materials: usize,
    /// Largest number of form fields in one submission.
    #[serde(default = "default_max_fields")]
    pub max_fields: usize,
    /// Largest number of other parties in one submission.
    #[serde(default = "default_max_parties")]
    pub max_parties: usize,
    /// Longest string value accepted anywhere in a submission, in characters.
    #[serde(default = "default_max_string_chars")]
    pub max_string_chars: usize,
    /// Largest electronic material accepted, in bytes.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: i64,
    /// Media types accepted for electronic materials.
    #[serde(default = "default_media_types")]
    pub media_types: Vec<String>,
    /// Largest number of materials handed in by one supplement (补正).
    #[serde(default = "default_max_supplement_materials")]
    pub max_supplement_materials: usize,
    /// Largest number of tasks one supplement names.
    #[serde(default = "default_max_supplement_tasks")]
    pub max_supplement_tasks: usize,
}

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

fn default_catalog_dir() -> PathBuf {
    "config/catalog".into()
}
fn default_calendar_dir() -> PathBuf {
    "config/calendar".into()
}
fn default_listen() -> SocketAddr {
    "127.0.0.1:50051".parse().expect("literal address")
}
fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_schema() -> String {
    "yichuang".into()
}
fn default_pool_size() -> usize {
    16
}
fn default_utc_offset() -> String {
    "+08:00".into()
}
fn default_clock_skew() -> i64 {
    300
}
fn default_max_items() -> usize {
    20
}
fn default_max_materials() -> usize {
    200
}
fn default_max_fields() -> usize {
    100
}
fn default_max_parties() -> usize {
    20
}
fn default_max_supplement_materials() -> usize {
    100
}
fn default_max_supplement_tasks() -> usize {
    50
}
fn default_max_string_chars() -> usize {
    2000
}
fn default_max_file_bytes() -> i64 {
    100 * 1024 * 1024
}
fn default_media_types() -> Vec<String> {
    [
        "application/pdf",
        "image/jpeg",
        "image/png",
        "application/ofd",
    ]
    .map(String::from)
    .to_vec()
}
fn default_log_format() -> String {
    "json".into()
}
fn default_log_level() -> String {
    "info".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite {
            path: "data/yichuang.db".into(),
        }
    }
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            utc_offset: default_utc_offset(),
            max_clock_skew_secs: default_clock_skew(),
            max_items: default_max_items(),
            max_materials: default_max_materials(),
            max_fields: default_max_fields(),
            max_parties: default_max_parties(),
            max_string_chars: default_max_string_chars(),
            max_file_bytes: default_max_file_bytes(),
            media_types: default_media_types(),
            max_supplement_materials: default_max_supplement_materials(),
            max_supplement_tasks: default_max_supplement_tasks(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
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
            intake: IntakeConfig::default(),
            log: LogConfig::default(),
            bus: BusConfig::default(),
            platform: PlatformConfig::default(),
            sla: SlaConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

impl IntakeConfig {
    /// The hall's UTC offset, parsed.
    pub fn offset(&self) -> Result<chrono::FixedOffset, String> {
        parse_offset(&self.utc_offset)
    }
}

fn parse_offset(text: &str) -> Result<chrono::FixedOffset, String> {
    let bad = || format!("utc_offset {text:?} is not of the form +08:00");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let secs =
        h.parse::<i32>().map_err(|_| bad())? * 3600 + m.parse::<i32>().map_err(|_| bad())? * 60;
    chrono::FixedOffset::east_opt(sign * secs).ok_or_else(bad)
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
    fn cluster_nodes_must_share_the_user_and_vhost_of_url() {
        let bus = |nodes: &[&str]| BusConfig {
            url: "amqp://adapter-scjg:pw@mq1:5672/hall".into(),
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            ..BusConfig::default()
        };
        assert!(bus(&[]).check_nodes().is_ok());
        assert!(
            bus(&[
                "amqp://adapter-scjg:pw@mq2:5672/hall",
                "amqp://adapter-scjg:pw@mq3/hall"
            ])
            .check_nodes()
            .is_ok()
        );
        let other_vhost = bus(&["amqp://adapter-scjg:pw@mq2:5672/other"]).check_nodes();
        assert!(
            other_vhost.as_ref().unwrap_err().contains("mq2"),
            "{other_vhost:?}"
        );
        let other_user = bus(&["amqp://guest:secret@mq2:5672/hall"]).check_nodes();
        let message = other_user.unwrap_err();
        assert!(message.contains("the user and vhost"), "{message}");
        assert!(!message.contains("secret"), "no password in it: {message}");
        assert!(bus(&["not a url"]).check_nodes().is_err());
    }

    #[test]
    fn interpolation_uses_environment_then_default() {
        let env = |n: &str| (n == "SET").then(|| "value".to_string());
        let out = interpolate(
            Path::new("x.toml"),
            "a = \"${SET}\"\nb = \"${UNSET:-fallback}\"",
            env,
        )
        .unwrap();
        assert_eq!(out, "a = \"value\"\nb = \"fallback\"");
    }

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
    fn comments_are_not_interpolated() {
        let out = interpolate(
            Path::new("x.toml"),
            "a = \"#${UNSET:-x}\" # ${NOPE}\n",
            |_| None,
        )
        .unwrap();
        assert_eq!(out, "a = \"#x\" # ${NOPE}\n");
    }

    #[test]
    fn unset_variable_without_default_names_variable_and_line() {
        let err = interpolate(Path::new("g.toml"), "a = 1\nb = \"${NOPE}\"", |_| None).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("NOPE"), "{}", err.message);
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
    fn shipped_gateway_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
        let config = GatewayConfig::load_with_env(&path, |_| None).expect("config/gateway.toml");
        assert!(matches!(config.store, StoreConfig::Sqlite { .. }));
    }
}
