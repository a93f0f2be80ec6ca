//! The RabbitMQ policies of the topology: what makes every hop the broker owns at-least-once.
//!
//! Quorum queues dead-letter *at most once* unless their `dead-letter-strategy` is
//! `at-least-once` (which needs `overflow = reject-publish`): a task waiting in a delay queue
//! whose TTL runs out while the broker restarts is otherwise dropped. These are set by policy, not
//! by queue arguments, so queues already declared change in place (a queue's arguments cannot
//! change without deleting it). Policies are applied over the management HTTP API
//! (`PUT /api/policies/<vhost>/<name>`), idempotently, by `yichuang bus declare` and by the
//! gateway's relay when it connects. docs/bus.md lists every hop with its guarantee.

use std::time::Duration;

use lapin::uri::AMQPUri;

use crate::config::BusConfig;

/// A policy to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    /// Regular expression on queue names.
    pub pattern: String,
    /// The highest-priority matching policy is the one applied to a queue.
    pub priority: i64,
    /// `(key, value)` of the definition.
    pub definition: Vec<(&'static str, serde_json::Value)>,
}

/// The policies of a prefix: every queue that dead-letters (task, delay and results queues)
/// dead-letters at least once; the results queue also gets its delivery limit, so a result the
/// gateway cannot apply ends in `<prefix>.dead.results` instead of blocking the consumer.
pub fn policies(config: &BusConfig) -> Vec<Policy> {
    let prefix = regex_escape(&config.prefix);
    let at_least_once = || {
        vec![
            ("dead-letter-strategy", serde_json::json!("at-least-once")),
            ("overflow", serde_json::json!("reject-publish")),
        ]
    };
    let mut results = at_least_once();
    results.push((
        "delivery-limit",
        serde_json::json!(config.results_delivery_limit),
    ));
    vec![
        Policy {
            name: format!("{}.at-least-once", config.prefix),
            pattern: format!(r"^{prefix}\.(tasks|retry)\."),
            priority: 10,
            definition: at_least_once(),
        },
        Policy {
            name: format!("{}.results", config.prefix),
            pattern: format!(r"^{prefix}\.results\.gateway$"),
            priority: 10,
            definition: results,
        },
    ]
}

pub(super) fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Why the policies could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("[bus] url cannot be read for the management API: {0}")]
    Url(String),
    #[error(
        "cannot apply policy {name} at {url}: {message} (enable the rabbitmq_management plugin, give the user the `policymaker` tag, or set [bus] management_url = \"off\" and apply the policies of docs/bus.md yourself)"
    )]
    Apply {
        name: String,
        url: String,
        message: String,
    },
}

/// RabbitMQ's management API for one `[bus]`: `[bus] management_url` when set, else
/// `http://<AMQP host>:15672` of each node (`[bus] url`, then `[bus] nodes`: in a cluster any
/// node answers for all), with the AMQP user and vhost.
pub(super) struct Management {
    client: reqwest::Client,
    bases: Vec<String>,
    pub(super) vhost: String,
    pub(super) user: String,
    pub(super) password: String,
}

impl Management {
    pub(super) fn new(config: &BusConfig) -> Result<Management, PolicyError> {
        // The parser's own message repeats the URL, password and all: not shown.
        let parse = |url: &str| -> Result<AMQPUri, PolicyError> {
            url.parse()
                .map_err(|_| PolicyError::Url(format!("{} is not an AMQP URL", super::redact(url))))
        };
        let uri = parse(&config.url)?;
        let mut bases = Vec::new();
        if config.management_url.is_empty() {
            for url in super::node_urls(config) {
                let node = parse(url)?;
                let base = format!("http://{}:15672", node.authority.host);
                if !bases.contains(&base) {
                    bases.push(base);
                }
            }
        } else {
            bases.push(config.management_url.trim_end_matches('/').to_string());
        }
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(config.timeout_secs));
        // An `https://` management API is trusted as the broker is: `[bus] ca_file`.
        let builder = config
            .tls()
            .reqwest(builder, "[bus] client_cert/client_key")
            .map_err(|e| PolicyError::Url(e.to_string()))?;
        let client = builder
            .build()
            .map_err(|e| PolicyError::Url(e.to_string()))?;
        Ok(Management {
            client,
            bases,
            vhost: uri.vhost,
            user: uri.authority.userinfo.username,
            password: uri.authority.userinfo.password,
        })
    }

    /// Sends an authenticated request for `/api/<what>/<vhost>/<name>` to the first node that
    /// can be reached; `body`: JSON to send.
    async fn send(
        &self,
        method: reqwest::Method,
        what: &str,
        name: &str,
        body: Option<String>,
    ) -> Result<reqwest::Response, PolicyError> {
        let path = format!("{what}/{}/{}", encode(&self.vhost), encode(name));
        self.request(method, &path, body)
            .await
            .map_err(|failures| self.failed(name, failures))
    }

    /// Sends an authenticated request for `/api/<path>` (its segments already encoded) to the
    /// first node that can be reached; the error says why each node could not be.
    pub(super) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<reqwest::Response, String> {
        let mut failures = Vec::new();
        for base in &self.bases {
            let url = format!("{base}/api/{path}");
            let mut request = self
                .client
                .request(method.clone(), url)
                .basic_auth(&self.user, Some(&self.password));
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            match request.send().await {
                Ok(answer) => return Ok(answer),
                Err(e) => failures.push(format!("{base}: {e}")),
            }
        }
        Err(failures.join("; "))
    }

    /// Where the API is (every node tried), for messages.
    pub(super) fn url(&self) -> String {
        self.bases.join(", ")
    }

    fn failed(&self, name: &str, message: String) -> PolicyError {
        PolicyError::Apply {
            name: name.to_string(),
            url: self.bases.join(", "),
            message,
        }
    }
}

/// Applies [`policies`] (idempotent: a policy is replaced by the same one). `Ok(false)`: turned
/// off (`[bus] management_url = "off"`): the operator applies them.
pub async fn apply(config: &BusConfig) -> Result<bool, PolicyError> {
    if config.management_url == "off" {
        return Ok(false);
    }
    let api = Management::new(config)?;
    for p in policies(config) {
        let definition: serde_json::Map<String, serde_json::Value> = p
            .definition
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let body = serde_json::json!({
            "pattern": p.pattern,
            "definition": definition,
            "priority": p.priority,
            "apply-to": "queues",
        });
        let answer = api
            .send(
                reqwest::Method::PUT,
                "policies",
                &p.name,
                Some(body.to_string()),
            )
            .await?;
        let status = answer.status();
        if !status.is_success() {
            let text = answer.text().await.unwrap_or_default();
            return Err(api.failed(
                &p.name,
                format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
            ));
        }
    }
    Ok(true)
}

/// Removes [`policies`] (uninstalling, or a test cleaning up after itself).
pub async fn remove(config: &BusConfig) -> Result<(), PolicyError> {
    let api = Management::new(config)?;
    for p in policies(config) {
        api.send(reqwest::Method::DELETE, "policies", &p.name, None)
            .await?;
    }
    Ok(())
}

/// The policy definition RabbitMQ applies to `queue` now (`effective_policy_definition`), as
/// JSON; `None` when the queue is not known to the management API yet.
pub async fn effective(
    config: &BusConfig,
    queue: &str,
) -> Result<Option<serde_json::Value>, PolicyError> {
    let api = Management::new(config)?;
    let answer = api
        .send(reqwest::Method::GET, "queues", queue, None)
        .await?;
    if !answer.status().is_success() {
        return Ok(None);
    }
    let text = answer
        .text()
        .await
        .map_err(|e| api.failed(queue, e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| api.failed(queue, e.to_string()))?;
    Ok(value.get("effective_policy_definition").cloned())
}

/// A path segment, percent-encoded (the default vhost `/` is `%2F`).
pub(super) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dead_lettering_queue_is_covered_and_dead_queues_are_not() {
        let config = BusConfig {
            prefix: "t1.x".into(),
            ..BusConfig::default()
        };
        let catalog = crate::catalog::Catalog::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog"),
        )
        .unwrap();
        let topology = crate::bus::Topology::for_catalog(&catalog, &config);
        let policies = policies(&config);
        // A naive matcher for the two shapes used: ^prefix\.(a|b)\. and ^prefix\.name$.
        let matches = |p: &Policy, name: &str| {
            let pat = p.pattern.replace(r"\.", ".");
            let pat = pat.trim_start_matches('^');
            if let Some(exact) = pat.strip_suffix('$') {
                return name == exact;
            }
            let (head, rest) = pat.split_once('(').unwrap();
            let (alts, tail) = rest.split_once(')').unwrap();
            alts.split('|')
                .any(|a| name.starts_with(&format!("{head}{a}{tail}")))
        };
        for q in &topology.queues {
            let dead_letters = q
                .arguments
                .iter()
                .any(|(k, _)| *k == "x-dead-letter-exchange");
            let covered: Vec<&Policy> = policies.iter().filter(|p| matches(p, &q.name)).collect();
            assert_eq!(
                covered.len(),
                usize::from(dead_letters),
                "{}: {covered:?}",
                q.name
            );
            if let Some(p) = covered.first() {
                assert!(
                    p.definition
                        .contains(&("dead-letter-strategy", serde_json::json!("at-least-once")))
                );
            }
        }
        assert_eq!(policies[0].pattern, r"^t1\.x\.(tasks|retry)\.");
        assert_eq!(encode("/"), "%2F");
    }
}
