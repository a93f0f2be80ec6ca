//! Gateway settings (`config/gateway.toml`): typed, documented where declared, unknown keys
//! refused, `${VAR}` / `${VAR:-default}` interpolated from the environment before parsing.
//! Also the small helpers every TOML loader of the gateway shares (file:line locations).
//! This module never reaches the network or the database.
//!
//! Layout: the file as a whole, its loading and the checks that serde cannot make in
//! `gateway.rs` ([`GatewayConfig`], [`ConfigError`]); the text helpers every loader shares,
//! interpolation and problems at a file and line ([`ConfigProblem`], [`key_line`], [`line_at`],
//! [`toml_problem`], [`interpolate`]), in `source.rs`; the sections by concern in `server.rs`
//! (the gRPC server, the store), `trust.rs` (TLS, caller identity, roles, development switches), `limits.rs` (rates, in-flight bound, stream caps, timeouts), `bus.rs` (the RabbitMQ bus, the platform push), `intake.rs` (the
//! hall's offset, a submission's bounds), `clocks.rs` (calendar reloads, the SLA sweeper,
//! stalled tasks), `evaluation.rs` (好差评 indicators, rectification time), `console.rs` (the operations console), `guide.rs` (the public item guide), `hotline.rs` (the 12345 hotline's work orders) and `observe.rs` (log, metrics, span export). Every public name is
//! re-exported here, so callers write `crate::config::X`; a section knows nothing of the others
//! or of `gateway.rs`.

mod bus;
mod clocks;
mod console;
mod evaluation;
mod gateway;
mod guide;
mod hotline;
mod intake;
mod limits;
mod observe;
mod server;
mod source;
mod trust;

pub use bus::{BusConfig, PlatformConfig, redact, user};
pub use clocks::{CalendarConfig, SlaConfig, StallConfig};
pub use console::ConsoleConfig;
pub use evaluation::{EvaluationConfig, IndicatorSets};
pub use gateway::{ConfigError, GatewayConfig};
pub use guide::GuideConfig;
pub use hotline::HotlineConfig;
pub use intake::IntakeConfig;
pub use limits::{LimitsConfig, RateConfig};
pub use observe::{LogConfig, MetricsConfig, TracingConfig};
pub use server::{ServerConfig, StoreConfig};
pub use source::{ConfigProblem, interpolate, key_line, line_at, toml_problem};
pub use trust::{
    AuthConfig, DevelopmentConfig, JwtConfig, JwtKey, RoleConfig, Scope, TlsConfig, default_roles,
};
