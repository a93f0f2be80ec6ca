//! How news of a case leaves the gateway: the RabbitMQ bus (broker and cluster nodes, names,
//! retries, delivery limits, the departments' users, the management API) and the HTTP push of
//! each status change to the one-network platform. Shapes, defaults and the rule that a cluster's
//! nodes are one broker: it never connects to a broker or a platform.

use serde::Deserialize;

/// The HTTP push of every status change to the one-network platform (一网通办).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Where each status change is POSTed, in order; empty: no push.
    #[serde(default)]
    pub push_url: String,
    /// Key of the HMAC-SHA256 signature in `X-Yichuang-Signature` (from the environment); it
    /// covers the timestamp, the event id and the body (docs/api.md, "Platform push").
    #[serde(default)]
    pub secret: String,
    /// Bound on one POST, in seconds (default 10).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Times an event is sent while the platform refuses it permanently (a 4xx other than 408
    /// and 429) before it is set aside (the store's `push_dead`, logged) and the push moves on
    /// to the next event. Other failures (5xx, 408, 429, no answer) are retried without bound,
    /// in order. At least 1; default 5.
    #[serde(default = "default_refused_tries")]
    pub refused_tries: u32,
    /// CA certificates (PEM) the platform's `https://` certificate must chain to; when set,
    /// only these are trusted. Empty: the public (webpki) roots.
    #[serde(default, deserialize_with = "crate::tls::optional_path")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mTLS to the platform; with `client_key`.
    #[serde(default, deserialize_with = "crate::tls::optional_path")]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, deserialize_with = "crate::tls::optional_path")]
    pub client_key: Option<std::path::PathBuf>,
}

impl PlatformConfig {
    /// The TLS settings of the push.
    pub fn tls(&self) -> crate::tls::ClientTls {
        crate::tls::ClientTls {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            push_url: String::new(),
            secret: String::new(),
            timeout_secs: None,
            refused_tries: default_refused_tries(),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

fn default_refused_tries() -> u32 {
    5
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
    /// The RabbitMQ user each department's adapter connects as (`scjg = "adapter-scjg"`;
    /// several departments served by one adapter process name the same user). A result is
    /// taken only when the broker-validated `user_id` is the user listed for its department: a
    /// department not listed has no results taken (fails closed). A gateway with the relay on
    /// and this empty refuses to start, unless `[development] unchecked_results = true`.
    /// `yichuang bus users` creates these users with only the permissions they need.
    #[serde(default)]
    pub department_users: std::collections::BTreeMap<String, String>,
    /// Results taken from any sender: `[development] unchecked_results`, copied here by the
    /// gateway when it starts (not a `[bus]` key).
    #[serde(skip)]
    pub unchecked_results: bool,
    /// RabbitMQ's management API, where the policies that make dead-lettering at-least-once are
    /// applied (docs/bus.md): empty: `http://<host of url>:15672` with the user of `url`;
    /// `"off"`: not applied here (an operator applies them).
    #[serde(default)]
    pub management_url: String,
    /// Deliveries of one result before the broker dead-letters it to `<prefix>.dead.results`
    /// (a result the gateway cannot apply must not block the consumer).
    #[serde(default = "default_results_delivery_limit")]
    pub results_delivery_limit: u32,
    /// CA certificates (PEM) the broker's certificate must chain to, for `amqps://` URLs
    /// (required with them: no public roots are trusted for the broker). Checked at load.
    #[serde(default, deserialize_with = "crate::tls::optional_path")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) presented to the broker over `amqps://`; with `client_key`.
    #[serde(default, deserialize_with = "crate::tls::optional_path")]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, deserialize_with = "crate::tls::optional_path")]
    pub client_key: Option<std::path::PathBuf>,
    /// Whether the reporter's queue `<prefix>.report` is declared, bound to every history entry
    /// on the events exchange (docs/reporting.md). Only with a reporter consuming it: an
    /// unconsumed queue grows without end.
    #[serde(default)]
    pub report: bool,
    /// The reporter's RabbitMQ user: `yichuang bus users` creates it, allowed only to consume
    /// `<prefix>.report` (docs/reporting.md). Empty: none is made.
    #[serde(default)]
    pub report_user: String,
    /// Whether the notifier's queue `<prefix>.notify` is declared, bound to the history entries
    /// that can make a notice on the events exchange (`crate::bus::NOTIFY_EVENTS`,
    /// docs/notifications.md). Only with a notifier consuming it.
    #[serde(default)]
    pub notify: bool,
    /// The notifier's RabbitMQ user: `yichuang bus users` creates it, allowed only to consume
    /// `<prefix>.notify` (docs/notifications.md). Empty: none is made.
    #[serde(default)]
    pub notify_user: String,
}

impl BusConfig {
    /// The TLS settings of `amqps://` connections.
    pub fn tls(&self) -> crate::tls::ClientTls {
        crate::tls::ClientTls {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    /// The TLS files can be read and parsed; an `amqps://` URL (of `url` or `nodes`) has a
    /// `ca_file`.
    pub fn check_tls(&self) -> Result<(), String> {
        let tls = self.tls();
        tls.check("[bus] client_cert/client_key")
            .map_err(|e| e.to_string())?;
        let amqps = std::iter::once(&self.url)
            .chain(&self.nodes)
            .any(|u| u.starts_with("amqps://"));
        if amqps && self.ca_file.is_none() {
            return Err(
                "an amqps:// URL needs ca_file, the CA (PEM) that signed the broker's certificate"
                    .into(),
            );
        }
        Ok(())
    }

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
                    redact(url)
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
                    redact(node),
                    redact(&self.url),
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
            unchecked_results: false,
            management_url: String::new(),
            results_delivery_limit: default_results_delivery_limit(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            report: false,
            report_user: String::new(),
            notify: false,
            notify_user: String::new(),
        }
    }
}

/// The user name in an AMQP URL (`guest` when there is none, as RabbitMQ assumes), which
/// RabbitMQ checks against a message's `user_id`.
pub fn user(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => url[scheme + 3..at]
            .split(':')
            .next()
            .unwrap_or("guest")
            .to_string(),
        _ => "guest".into(),
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
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
}
