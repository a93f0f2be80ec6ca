//! The kinds of legacy system, registered in one list. A kind turns a department's settings
//! into a [`DepartmentSystem`]; everything else (queues, retries, limits) is the runtime's.
//! This module owns the registry (which kinds exist, how one is built) and the check of a
//! kind's `options`. It never reads a settings file: that is `config`'s, which is given the
//! kinds' names ([`names`]) and never imports this module.

use std::sync::Arc;

use crate::config::DepartmentConfig;
use crate::runtime::Department;
use crate::system::{DepartmentSystem, Gate};

pub mod exchange_db;
pub mod http;
pub mod manual;
pub mod xml;

/// How a kind builds its system from a department's settings.
pub type Build = fn(&DepartmentConfig, Gate) -> Result<Arc<dyn DepartmentSystem>, String>;

/// A kind of legacy system.
pub struct Kind {
    /// The name used in `kind:` of a department file.
    pub name: &'static str,
    /// One line for operators.
    pub about: &'static str,
    /// Builds the system from the department's settings; the error says what is wrong.
    /// Every request the system sends must first wait on the gate.
    pub build: Build,
}

/// Every kind this adapter knows.
pub const KINDS: &[Kind] = &[http::KIND, exchange_db::KIND, manual::KIND];

/// The kinds' names, for messages.
pub fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// Builds a department: its system, behind its gate.
pub fn department(config: DepartmentConfig) -> Result<Department, String> {
    let gate = Gate::new(config.limits.requests_per_second);
    let system = build(&config, gate.clone())?;
    let secret = match &config.callbacks.secret {
        Some(secret) => Some(
            secret
                .resolve()
                .map_err(|e| format!("callbacks.secret: {e}"))?
                .into_bytes(),
        ),
        None => None,
    };
    let mut department = Department::new(config, system, gate);
    department.callback_secret = secret;
    Ok(department)
}

/// Builds a department's system.
pub fn build(config: &DepartmentConfig, gate: Gate) -> Result<Arc<dyn DepartmentSystem>, String> {
    let kind = KINDS
        .iter()
        .find(|k| k.name == config.kind)
        .ok_or_else(|| {
            format!(
                "unknown kind {:?}; the kinds are: {}",
                config.kind,
                names().join(", ")
            )
        })?;
    (kind.build)(config, gate)
}

/// The HTTP client of a kind that calls an `http://` or `https://` endpoint: rustls, with the
/// department's `tls` (its own CA bundle, a client certificate for mTLS) and the connect
/// timeout of its limits.
pub fn http_client(config: &DepartmentConfig) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(config.limits.timeout_secs));
    config
        .tls
        .reqwest(builder, "tls")
        .map_err(|e| format!("tls: {e}"))?
        .build()
        .map_err(|e| format!("tls: {}", yichuang::tls::with_causes(&e)))
}

/// Reads a kind's options: every key must be known, required ones present.
pub fn options(
    config: &DepartmentConfig,
    known: &[&str],
    required: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, String> {
    for key in config.options.keys() {
        if !known.contains(&key.as_str()) {
            return Err(format!(
                "options.{key} is not an option of kind {:?} (options: {})",
                config.kind,
                known.join(", ")
            ));
        }
    }
    for key in required {
        if !config.options.contains_key(*key) {
            return Err(format!("kind {:?} needs options.{key}", config.kind));
        }
    }
    Ok(config.options.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DepartmentConfig, String> {
        DepartmentConfig::parse(std::path::Path::new("scjg.yaml"), text, &names())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_unknown_kind_names_the_valid_ones_and_its_line() {
        let e = parse("department: scjg\nkind: ftp\n").unwrap_err();
        assert!(e.contains("scjg.yaml:2"), "{e}");
        assert!(e.contains("http"), "{e}");
        assert!(e.contains("manual") && e.contains("exchange-db"), "{e}");
    }
}
