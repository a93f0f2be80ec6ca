//! Brokers of each test's own: a prefix of its own on the RabbitMQ `make test` starts (every
//! queue, exchange and policy of a test is named under it), and [`Broker`], the broker as the
//! gateway sees it — it declares the topology, publishes tasks as the relay does, reads the
//! departments' queues and the gateway's results queue, and removes everything under its
//! prefix at the end, even when the test fails.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use prost::Message;
use yichuang::bus::{Names, Topology};
use yichuang::catalog::Catalog;
use yichuang::config::BusConfig;
use yichuang::proto::v1::{ResultKind, ResultMessage, TaskMessage};

use crate::{logs, root};

/// The AMQP URL that `make test` provides.
pub fn amqp_url() -> String {
    std::env::var("YICHUANG_TEST_AMQP_URL").expect(
        "YICHUANG_TEST_AMQP_URL is not set: run the suite with `make test`, which starts RabbitMQ and sets it",
    )
}

/// The AMQPS URL (RabbitMQ's TLS listener) that `make test` provides, and the CA file (PEM)
/// that signed the broker's development certificate.
pub fn amqps() -> (String, std::path::PathBuf) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the suite with `make test`, which starts RabbitMQ with TLS and sets it")
        })
    };
    (
        var("YICHUANG_TEST_AMQPS_URL"),
        var("YICHUANG_TEST_AMQP_CA").into(),
    )
}

/// A prefix no other test uses.
pub fn prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// A bus of its own for one test: a fresh prefix and short delay queues (1, 2, 4 s).
pub fn bus() -> BusConfig {
    logs();
    let mut bus: BusConfig = toml::from_str("").unwrap();
    bus.url = amqp_url();
    bus.prefix = prefix();
    bus.retry_delays_secs = vec![1, 2, 4];
    bus.timeout_secs = 5;
    bus
}

/// The acceptance list's whole topology under `bus`'s prefix: what a gateway's relay declares.
fn whole_topology(bus: &BusConfig) -> Topology {
    let catalog = Catalog::load(&root().join("config/catalog")).expect("the shipped catalog");
    Topology::for_catalog(&catalog, bus)
}

/// A result read from the gateway's results queue.
#[derive(Debug, Clone)]
pub struct Got {
    pub message_id: String,
    /// The publisher's RabbitMQ user, validated by the broker.
    pub user_id: String,
    pub routing_key: String,
    pub result: ResultMessage,
}

impl Got {
    pub fn kind(&self) -> ResultKind {
        ResultKind::try_from(self.result.kind).unwrap()
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self.kind(),
            ResultKind::Approved
                | ResultKind::Rejected
                | ResultKind::Supplement
                | ResultKind::Failed
        )
    }
}

/// The broker as the gateway sees it, under one test's prefix. [`Broker::remove`] removes what
/// the test declared at its end; a broker dropped without it (a failed test) is removed then.
pub struct Broker {
    pub bus: BusConfig,
    pub names: Names,
    pub connection: Connection,
    pub channel: Channel,
    pub topology: Topology,
    removed: bool,
}

impl Broker {
    /// The acceptance list's whole topology, declared (idempotent: the queues exist whether or
    /// not a gateway's relay got there first).
    pub async fn open(bus: &BusConfig) -> Broker {
        Self::declare(bus, whole_topology(bus)).await
    }

    /// The topology of `departments` (and the gateway's results queue), declared, and
    /// publisher confirms on: what an adapter serving them sees.
    pub async fn for_departments(bus: &BusConfig, departments: &[&str]) -> Broker {
        logs();
        let codes: Vec<String> = departments.iter().map(|d| d.to_string()).collect();
        let broker = Self::declare(bus, Topology::for_departments(&codes, bus)).await;
        broker
            .channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        broker
    }

    async fn declare(bus: &BusConfig, topology: Topology) -> Broker {
        let connection = yichuang::bus::connect(bus)
            .await
            .expect("connects to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        topology
            .declare(&channel, Duration::from_secs(10))
            .await
            .expect("declares the topology");
        Broker {
            bus: bus.clone(),
            names: Names::new(&bus.prefix),
            connection,
            channel,
            topology,
            removed: false,
        }
    }

    /// The next message on a department's task queue, waiting up to `within`.
    pub async fn next(&self, department: &str, within: Duration) -> Option<BasicGetMessage> {
        self.next_on(&self.names.task_queue(department), within)
            .await
    }

    /// The next message on `queue` (any queue of this prefix: a dead queue, the results),
    /// waiting up to `within`.
    pub async fn next_on(&self, queue: &str, within: Duration) -> Option<BasicGetMessage> {
        let until = Instant::now() + within;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await;
            match got {
                Ok(Some(m)) => return Some(m),
                Ok(None) if Instant::now() >= until => return None,
                Err(e) if Instant::now() >= until => panic!("cannot read {queue}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Publishes a task as the gateway's relay does.
    pub async fn publish(&self, task: &TaskMessage) {
        let t = task.task.as_ref().unwrap();
        let mut headers = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(v.into());
        headers.insert(ShortString::from("case-id"), text(&task.case_number));
        headers.insert(ShortString::from("task-id"), text(&t.task_id));
        headers.insert(ShortString::from("department"), text(&t.department));
        headers.insert(ShortString::from("attempt"), AMQPValue::LongInt(1));
        headers.insert(
            ShortString::from("traceparent"),
            text(&yichuang::trace::traceparent("")),
        );
        // As the gateway names it: `:s<round>` once a supplement resumed the task.
        let message_id = if t.supplement_round > 0 {
            format!("{}:s{}", t.task_id, t.supplement_round)
        } else {
            t.task_id.clone()
        };
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_content_type(yichuang::outbox::TASK_CONTENT_TYPE.into())
            .with_headers(headers);
        self.raw(&t.department, &task.encode_to_vec(), properties)
            .await;
    }

    /// Publishes any body to a department's queue, confirmed.
    pub async fn raw(&self, department: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                self.names.tasks_exchange().as_str().into(),
                department.into(),
                Default::default(),
                body,
                properties,
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack());
    }

    /// Reads results until every one of `task_ids` has a final result, or the deadline.
    pub async fn results_for(
        &self,
        task_ids: &[String],
        within: Duration,
    ) -> HashMap<String, Vec<Got>> {
        let mut got: HashMap<String, Vec<Got>> = HashMap::new();
        let deadline = Instant::now() + within;
        loop {
            let finished = task_ids
                .iter()
                .filter(|id| got.get(*id).is_some_and(|g| g.iter().any(Got::is_final)))
                .count();
            if finished == task_ids.len() {
                // Anything already queued behind (a duplicate) is read too.
                while let Some(g) = self.next_result().await {
                    got.entry(g.result.task_id.clone()).or_default().push(g);
                }
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {finished} of {} tasks have a final result within {within:?}",
                task_ids.len()
            );
            match self.next_result().await {
                Some(g) => got.entry(g.result.task_id.clone()).or_default().push(g),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Reads results until one satisfies `done`, or the deadline; then whatever arrives in
    /// the next `settle` too (copies, stragglers).
    pub async fn results_until(
        &self,
        within: Duration,
        settle: Duration,
        done: impl Fn(&Got) -> bool,
    ) -> Vec<Got> {
        let mut got = Vec::new();
        let deadline = Instant::now() + within;
        while !got.iter().any(&done) {
            assert!(
                Instant::now() < deadline,
                "no awaited result within {within:?}; got {got:#?}"
            );
            match self.next_result().await {
                Some(g) => got.push(g),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let until = Instant::now() + settle;
        while Instant::now() < until {
            match self.next_result().await {
                Some(g) => got.push(g),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        got
    }

    /// Every result that arrives within `within` (none awaited: for tests that something is
    /// not published).
    pub async fn results_within(&self, within: Duration) -> Vec<Got> {
        let mut got = Vec::new();
        let until = Instant::now() + within;
        while Instant::now() < until {
            match self.next_result().await {
                Some(g) => got.push(g),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        got
    }

    async fn next_result(&self) -> Option<Got> {
        let m = self
            .channel
            .basic_get(
                self.names.results_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()?;
        let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.to_string()).unwrap_or_default();
        Some(Got {
            message_id: text(m.delivery.properties.message_id()),
            routing_key: m.delivery.routing_key.to_string(),
            user_id: text(m.delivery.properties.user_id()),
            result: ResultMessage::decode(m.delivery.data.as_slice()).expect("a ResultMessage"),
        })
    }

    /// The next dead letter of a department, with its text headers, waiting up to `within`.
    pub async fn dead_letter(
        &self,
        department: &str,
        within: Duration,
    ) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
        let deadline = Instant::now() + within;
        loop {
            let got = self
                .channel
                .basic_get(
                    self.names.dead_queue(department).as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap();
            if let Some(m) = got {
                let headers = m
                    .delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(|h| {
                        h.inner()
                            .iter()
                            .filter_map(|(k, v)| match v {
                                AMQPValue::LongString(s) => Some((k.to_string(), s.to_string())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                return Some((headers, m.delivery.data.to_vec()));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes everything under the test's prefix and closes the connection.
    pub async fn remove(mut self) {
        remove_all(&self.bus, &self.channel, &self.topology).await;
        let _ = self.connection.close(200, "done".into()).await;
        self.removed = true;
    }
}

/// Removes what a test left under `bus`'s prefix: the policies a relay applied, the queues of
/// `declared` and of the whole acceptance list (a gateway's relay declares every department's,
/// not only those the test named), and the exchanges.
async fn remove_all(bus: &BusConfig, channel: &Channel, declared: &Topology) {
    let _ = yichuang::bus::policy::remove(bus).await;
    let everything = whole_topology(bus);
    for q in declared.queues.iter().chain(&everything.queues) {
        let _ = channel
            .queue_delete(q.name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in declared.exchanges.iter().chain(&everything.exchanges) {
        let _ = channel
            .exchange_delete(e.name.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // A test that failed, or never said: on a connection of its own.
        let bus = self.bus.clone();
        let declared = self.topology.clone();
        crate::clean_up_on_a_thread(move || async move {
            let connected = yichuang::bus::connect(&bus);
            let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_secs(10), connected).await
            else {
                return;
            };
            if let Ok(channel) = connection.create_channel().await {
                remove_all(&bus, &channel, &declared).await;
            }
            let _ = connection.close(200, "done".into()).await;
        });
    }
}

/// A header of a message read from a queue.
pub fn header<'a>(m: &'a BasicGetMessage, name: &str) -> Option<&'a AMQPValue> {
    m.delivery.properties.headers().as_ref()?.inner().get(name)
}

/// A text header of a message read from a queue; panics when it is missing or not text.
pub fn text_header(m: &BasicGetMessage, name: &str) -> String {
    match header(m, name) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

/// A RabbitMQ vhost of one test's own, made over the management API of the suite's broker (as
/// its user, `guest`, given every permission on it), with the adapter users the test creates:
/// [`Vhost::remove`] deletes the vhost (and everything in it) and those users at the end, and a
/// vhost dropped without it (a failed test) is removed then.
pub struct Vhost {
    pub name: String,
    /// A fresh prefix and short timeouts, connecting as the suite's user to this vhost.
    pub bus: BusConfig,
    users: Vec<String>,
    removed: bool,
}

/// The suite broker's management API: its base URL and the suite user's credentials.
fn management() -> (String, String, String) {
    let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("an AMQP URL");
    (
        format!("http://{}:15672/api", uri.authority.host),
        uri.authority.userinfo.username,
        uri.authority.userinfo.password,
    )
}

async fn manage(method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> u16 {
    let (base, user, password) = management();
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}/{path}"))
        .basic_auth(user, Some(password))
        .timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("the management API at {base}: {e}"))
        .status()
        .as_u16()
}

impl Vhost {
    pub async fn create() -> Vhost {
        logs();
        let name = prefix();
        let status = manage(reqwest::Method::PUT, &format!("vhosts/{name}"), None).await;
        assert!(status < 300, "vhost {name} created: HTTP {status}");
        let (_, user, _) = management();
        let all = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        let status = manage(
            reqwest::Method::PUT,
            &format!("permissions/{name}/{user}"),
            Some(all),
        )
        .await;
        let vhost = Vhost {
            bus: BusConfig {
                url: Self::url(&name, &user, &management().2),
                ..bus()
            },
            name,
            users: Vec::new(),
            removed: false,
        };
        assert!(
            status < 300,
            "permissions on {} set: HTTP {status}",
            vhost.name
        );
        vhost
    }

    fn url(vhost: &str, user: &str, password: &str) -> String {
        let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("an AMQP URL");
        format!(
            "amqp://{user}:{password}@{}:{}/{vhost}",
            uri.authority.host, uri.authority.port
        )
    }

    /// The AMQP URL of this vhost as `user`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        Self::url(&self.name, user, password)
    }

    /// A user the test creates, removed with the vhost.
    pub fn owns_user(&mut self, user: &str) {
        self.users.push(user.to_string());
    }

    /// Deletes the vhost and the test's users.
    pub async fn remove(mut self) {
        remove_vhost(&self.name, &self.users).await;
        self.removed = true;
    }
}

async fn remove_vhost(name: &str, users: &[String]) {
    for user in users {
        let _ = manage(reqwest::Method::DELETE, &format!("users/{user}"), None).await;
    }
    let _ = manage(reqwest::Method::DELETE, &format!("vhosts/{name}"), None).await;
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (name, users) = (self.name.clone(), self.users.clone());
        crate::clean_up_on_a_thread(move || async move { remove_vhost(&name, &users).await });
    }
}
