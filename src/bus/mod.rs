//! The bus (RabbitMQ, AMQP 0-9-1 via lapin): its topology — exchanges, one quorum task queue
//! per department with its dead queue and delay queues, the gateway's results queue — derived
//! from the acceptance list and declared idempotently. This module owns names and arguments;
//! it never decides what is published. `docs/bus.md` documents every name and argument.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::catalog::Catalog;
use crate::config::BusConfig;
use crate::event::EventKind;

pub mod dead;
pub mod headers;
pub mod policy;
pub mod session;
pub mod users;

pub use crate::config::{redact, user};
pub use session::{Backoff, Ended, confirming_channel, reconnecting};

/// Why the bus could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach RabbitMQ at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("[bus] TLS settings: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no node of the RabbitMQ cluster could be reached: {0}")]
    Cluster(String),
    #[error("declaring {what}: {source}")]
    Declare { what: String, source: lapin::Error },
    #[error(
        "{what} is not on the broker ({source}): adapters do not declare the shared topology; run `yichuang bus declare`, or start the gateway with its relay on, and the adapter connects then"
    )]
    Missing { what: String, source: lapin::Error },
}

/// Kinds of exchanges the topology uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Topic,
}

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: String,
    pub kind: Kind,
}

/// A queue to declare, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    /// `x-` arguments, by name.
    pub arguments: Vec<(&'static str, Arg)>,
}

/// A queue argument value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
}

/// Everything the gateway and the adapters expect on the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<Queue>,
    pub bindings: Vec<Binding>,
    /// Bindings an earlier version declared and this one does not want: [`Topology::declare`]
    /// removes them (removing one that is not there changes nothing), so a deployment converges
    /// by declaring again.
    pub retired: Vec<Binding>,
}

/// The history entries the notifier reads a case again for (`adapters::notify`): the six that
/// make a notice, and a pause that moves the promised date (`task-deadline-moved`), which a
/// confirmed-deadline notice names, so a moved date is notified when it moves. Its queue is
/// bound to their routing keys alone: every other entry would be one more message through a
/// replicated quorum queue, and one more case read, for no notice.
pub const NOTIFY_EVENTS: &[EventKind] = &[
    EventKind::Accepted,
    EventKind::DeadlineConfirmed,
    EventKind::TaskSupplementRequired,
    EventKind::CaseClosedRejected,
    EventKind::CaseReadyForDelivery,
    EventKind::CaseDelivered,
    EventKind::TaskDeadlineMoved,
];

/// The names derived from a prefix (`yichuang` by default; tests use their own).
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    /// Direct exchange of tasks, routed by department code.
    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.prefix)
    }
    /// Topic exchange of results and progress, `<department>.<kind>`.
    pub fn results_exchange(&self) -> String {
        format!("{}.results", self.prefix)
    }
    /// Topic exchange of status changes, `case.<status>` / `task.<department>.<status>`.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// Direct exchange of delayed retries, `<department>.<delay>s`.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    /// Direct exchange of dead letters, by department code.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// A department's task queue.
    pub fn task_queue(&self, department: &str) -> String {
        format!("{}.tasks.{department}", self.prefix)
    }
    /// A department's dead queue.
    pub fn dead_queue(&self, department: &str) -> String {
        format!("{}.dead.{department}", self.prefix)
    }
    /// A department's delay queue for one delay.
    pub fn retry_queue(&self, department: &str, delay_secs: u64) -> String {
        format!("{}.retry.{department}.{delay_secs}s", self.prefix)
    }
    /// Routing key of a delay queue on the retry exchange.
    pub fn retry_key(&self, department: &str, delay_secs: u64) -> String {
        format!("{department}.{delay_secs}s")
    }
    /// The gateway's results queue.
    /// The reporter's queue on the events exchange (`[bus] report`).
    pub fn report_queue(&self) -> String {
        format!("{}.report", self.prefix)
    }
    /// The notifier's queue on the events exchange (`[bus] notify`).
    pub fn notify_queue(&self) -> String {
        format!("{}.notify", self.prefix)
    }

    pub fn results_queue(&self) -> String {
        format!("{}.results.gateway", self.prefix)
    }
}

impl Topology {
    /// The topology for every department of the catalog.
    pub fn for_catalog(catalog: &Catalog, config: &BusConfig) -> Topology {
        Self::for_departments(catalog.departments.keys(), config)
    }

    /// The exchanges, the gateway's results queue, and the queues of `departments` (what an
    /// adapter serving those departments declares).
    pub fn for_departments<'a>(
        departments: impl IntoIterator<Item = &'a String>,
        config: &BusConfig,
    ) -> Topology {
        let n = Names::new(&config.prefix);
        let exchanges = vec![
            Exchange {
                name: n.tasks_exchange(),
                kind: Kind::Direct,
            },
            Exchange {
                name: n.results_exchange(),
                kind: Kind::Topic,
            },
            Exchange {
                name: n.events_exchange(),
                kind: Kind::Topic,
            },
            Exchange {
                name: n.retry_exchange(),
                kind: Kind::Direct,
            },
            Exchange {
                name: n.dead_exchange(),
                kind: Kind::Direct,
            },
        ];
        let quorum = || ("x-queue-type", Arg::Text("quorum".into()));
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for department in departments {
            queues.push(Queue {
                name: n.task_queue(department),
                arguments: vec![
                    quorum(),
                    // Redeliveries beyond this go to the dead queue: a poison message cannot loop.
                    (
                        "x-delivery-limit",
                        Arg::Int(i64::from(config.delivery_limit)),
                    ),
                    ("x-dead-letter-exchange", Arg::Text(n.dead_exchange())),
                    ("x-dead-letter-routing-key", Arg::Text(department.clone())),
                ],
            });
            bindings.push(Binding {
                queue: n.task_queue(department),
                exchange: n.tasks_exchange(),
                routing_key: department.clone(),
            });
            queues.push(Queue {
                name: n.dead_queue(department),
                arguments: vec![quorum()],
            });
            bindings.push(Binding {
                queue: n.dead_queue(department),
                exchange: n.dead_exchange(),
                routing_key: department.clone(),
            });
            for &delay in &config.retry_delays_secs {
                // A delayed retry waits here for its TTL, then dead-letters back to the task queue.
                queues.push(Queue {
                    name: n.retry_queue(department, delay),
                    arguments: vec![
                        quorum(),
                        ("x-message-ttl", Arg::Int(delay as i64 * 1000)),
                        ("x-dead-letter-exchange", Arg::Text(n.tasks_exchange())),
                        ("x-dead-letter-routing-key", Arg::Text(department.clone())),
                    ],
                });
                bindings.push(Binding {
                    queue: n.retry_queue(department, delay),
                    exchange: n.retry_exchange(),
                    routing_key: n.retry_key(department, delay),
                });
            }
        }
        // A result the gateway refuses (unreadable, or from the wrong sender) is kept here.
        queues.push(Queue {
            name: n.results_queue(),
            arguments: vec![
                quorum(),
                ("x-dead-letter-exchange", Arg::Text(n.dead_exchange())),
                ("x-dead-letter-routing-key", Arg::Text("results".into())),
            ],
        });
        queues.push(Queue {
            name: n.dead_queue("results"),
            arguments: vec![quorum()],
        });
        bindings.push(Binding {
            queue: n.dead_queue("results"),
            exchange: n.dead_exchange(),
            routing_key: "results".into(),
        });
        bindings.push(Binding {
            queue: n.results_queue(),
            exchange: n.results_exchange(),
            routing_key: "#".into(),
        });
        if config.report {
            // The reporter's: every history entry, kept until the reporter has noted it.
            queues.push(Queue {
                name: n.report_queue(),
                arguments: vec![quorum()],
            });
            bindings.push(Binding {
                queue: n.report_queue(),
                exchange: n.events_exchange(),
                routing_key: "#".into(),
            });
        }
        let mut retired = Vec::new();
        if config.notify {
            // The notifier's: the entries that make a notice, kept until the notifier has
            // noted them. Earlier builds bound it to every entry (`#`).
            queues.push(Queue {
                name: n.notify_queue(),
                arguments: vec![quorum()],
            });
            for kind in NOTIFY_EVENTS {
                bindings.push(Binding {
                    queue: n.notify_queue(),
                    exchange: n.events_exchange(),
                    routing_key: crate::outbox::event_routing_key(kind.as_str()),
                });
            }
            retired.push(Binding {
                queue: n.notify_queue(),
                exchange: n.events_exchange(),
                routing_key: "#".into(),
            });
        }
        Topology {
            exchanges,
            queues,
            bindings,
            retired,
        }
    }

    /// Declares everything on `channel`; declaring twice changes nothing. Each broker call is
    /// bounded by `timeout`.
    pub async fn declare(&self, channel: &Channel, timeout: Duration) -> Result<(), BusError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for e in &self.exchanges {
            let kind = match e.kind {
                Kind::Direct => ExchangeKind::Direct,
                Kind::Topic => ExchangeKind::Topic,
            };
            bounded(
                timeout,
                &format!("exchange {}", e.name),
                channel.exchange_declare(
                    e.name.as_str().into(),
                    kind,
                    durable,
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        for q in &self.queues {
            let mut args = FieldTable::default();
            for (key, value) in &q.arguments {
                let value = match value {
                    Arg::Text(t) => AMQPValue::LongString(t.as_str().into()),
                    Arg::Int(i) => AMQPValue::LongLongInt(*i),
                };
                args.insert(ShortString::from(*key), value);
            }
            let options = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            bounded(
                timeout,
                &format!("queue {}", q.name),
                channel.queue_declare(q.name.as_str().into(), options, args),
            )
            .await?;
        }
        for b in &self.bindings {
            let what = format!("binding {} -> {} ({})", b.exchange, b.queue, b.routing_key);
            let bind = channel.queue_bind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            );
            bounded(timeout, &what, bind).await?;
        }
        for b in &self.retired {
            let what = format!(
                "removing binding {} -> {} ({})",
                b.exchange, b.queue, b.routing_key
            );
            let unbind = channel.queue_unbind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                FieldTable::default(),
            );
            bounded(timeout, &what, unbind).await?;
        }
        Ok(())
    }
}

impl Topology {
    /// Checks, without declaring anything, that every exchange and queue exists (passive
    /// declarations, which need no `configure` permission): what an adapter does, since it may
    /// not change the topology. The first one missing is the error. A missing one closes
    /// `channel`.
    pub async fn check(&self, channel: &Channel, timeout: Duration) -> Result<(), BusError> {
        let missing = |what: String| {
            move |e: BusError| match e {
                BusError::Declare { source, .. } => BusError::Missing { what, source },
                e => e,
            }
        };
        for e in &self.exchanges {
            let what = format!("exchange {}", e.name);
            let passive = ExchangeDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            };
            let kind = match e.kind {
                Kind::Direct => ExchangeKind::Direct,
                Kind::Topic => ExchangeKind::Topic,
            };
            bounded(
                timeout,
                &what,
                channel.exchange_declare(
                    e.name.as_str().into(),
                    kind,
                    passive,
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(missing(what.clone()))?;
        }
        for q in &self.queues {
            let what = format!("queue {}", q.name);
            let passive = QueueDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            };
            bounded(
                timeout,
                &what,
                channel.queue_declare(q.name.as_str().into(), passive, FieldTable::default()),
            )
            .await
            .map_err(missing(what.clone()))?;
        }
        Ok(())
    }
}

async fn bounded<T>(
    timeout: Duration,
    what: &str,
    call: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(BusError::Declare {
            what: what.to_string(),
            source,
        }),
        Err(_) => Err(BusError::Timeout(timeout)),
    }
}

/// The node of `[bus] url` + `[bus] nodes` the last connection of this process was made to:
/// the next connection tries it first, then the others in turn.
static LAST_NODE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Every node the bus may be reached at: `[bus] url`, then `[bus] nodes`.
pub fn node_urls(config: &BusConfig) -> Vec<&str> {
    std::iter::once(config.url.as_str())
        .chain(config.nodes.iter().map(String::as_str))
        .collect()
}

/// Connects to the broker, each attempt bounded by the configured timeout. With a cluster
/// (`[bus] nodes`), the node that answered last is tried first and the others after it, so a
/// node that is down costs one refused (or timed-out) attempt, not the connection.
pub async fn connect(config: &BusConfig) -> Result<Connection, BusError> {
    let urls = node_urls(config);
    let first = LAST_NODE.load(std::sync::atomic::Ordering::Relaxed) % urls.len();
    let mut failures = Vec::new();
    for k in 0..urls.len() {
        let i = (first + k) % urls.len();
        match connect_to(urls[i], config).await {
            Ok(c) => {
                LAST_NODE.store(i, std::sync::atomic::Ordering::Relaxed);
                return Ok(c);
            }
            Err(e) if urls.len() == 1 => return Err(e),
            Err(e) => failures.push(match e {
                BusError::Timeout(t) => format!("{}: no answer within {t:?}", redact(urls[i])),
                e => e.to_string(),
            }),
        }
    }
    Err(BusError::Cluster(failures.join("; ")))
}

async fn connect_to(url: &str, config: &BusConfig) -> Result<Connection, BusError> {
    let timeout = Duration::from_secs(config.timeout_secs);
    let properties = ConnectionProperties::default().with_connection_name("yichuang".into());
    // An `amqps://` URL is TLS with `[bus] ca_file` as the trusted CA (and the client
    // certificate, when set); the settings are read again on every connection, so renewed
    // certificates are picked up by the next reconnect.
    let tls = if url.starts_with("amqps://") {
        config.tls().amqp("[bus] client_cert/client_key")?
    } else {
        lapin::tcp::OwnedTLSConfig::default()
    };
    let runtime = lapin::runtime::default_runtime().map_err(|e| BusError::Connect {
        url: redact(url),
        reason: e.to_string(),
    })?;
    match tokio::time::timeout(
        timeout,
        Connection::connect_with_config(url, properties, tls, runtime),
    )
    .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(source)) => {
            let mut reason = crate::tls::with_causes(&source);
            if url.starts_with("amqps://") && config.ca_file.is_none() {
                reason.push_str(
                    " (an amqps:// URL needs [bus] ca_file: the CA that signed the broker's certificate)",
                );
            }
            Err(BusError::Connect {
                url: redact(url),
                reason,
            })
        }
        Err(_) => Err(BusError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_department_gets_a_quorum_queue_with_dead_lettering_and_delays() {
        let catalog =
            Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog")).unwrap();
        let topology = Topology::for_catalog(&catalog, &BusConfig::default());
        let scjg = topology
            .queues
            .iter()
            .find(|q| q.name == "yichuang.tasks.scjg")
            .expect("scjg queue");
        assert!(
            scjg.arguments
                .contains(&("x-queue-type", Arg::Text("quorum".into())))
        );
        assert!(
            scjg.arguments
                .contains(&("x-dead-letter-exchange", Arg::Text("yichuang.dead".into())))
        );
        // 7 departments × (task + dead + 3 delays) + the results queue and its dead queue.
        assert_eq!(topology.queues.len(), 7 * 5 + 2);
        assert!(topology.bindings.contains(&Binding {
            queue: "yichuang.retry.xf.60s".into(),
            exchange: "yichuang.retry".into(),
            routing_key: "xf.60s".into(),
        }));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqp://gw:s3cret@mq:5672/%2f"),
            "amqp://gw:***@mq:5672/%2f"
        );
        assert_eq!(redact("amqp://mq:5672"), "amqp://mq:5672");
    }
}
