//! Shared by the tests that need a real RabbitMQ: a gateway whose relay publishes under a
//! prefix of its own, and a broker handle to read the departments' queues.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::AMQPValue;
use yichuang::bus::{Names, Topology};
use yichuang::config::BusConfig;

use crate::common::{self, Backend, TestGateway};

pub fn amqp_url() -> String {
    std::env::var("YICHUANG_TEST_AMQP_URL")
        .expect("YICHUANG_TEST_AMQP_URL is not set: run the suite with `make test`, which starts RabbitMQ and sets it")
}

/// A gateway whose relay publishes under a prefix of its own.
pub async fn start(backend: Backend, url: String) -> (TestGateway, BusConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(backend, dir.path());
    config.bus = BusConfig {
        url,
        prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        relay: true,
        timeout_secs: 5,
        ..BusConfig::default()
    };
    let bus = config.bus.clone();
    (TestGateway::start_with(config, dir).await, bus)
}

pub struct Broker {
    pub bus: BusConfig,
    pub connection: lapin::Connection,
    pub channel: lapin::Channel,
    pub names: Names,
    pub topology: Topology,
}

impl Broker {
    pub async fn open(bus: &BusConfig) -> Broker {
        let connection = yichuang::bus::connect(bus)
            .await
            .expect("connects to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        let catalog =
            yichuang::catalog::Catalog::load(&common::repo().join("config/catalog")).unwrap();
        let topology = Topology::for_catalog(&catalog, bus);
        // Declaring is idempotent: the queues exist whether or not the relay got there first.
        topology
            .declare(&channel, Duration::from_secs(10))
            .await
            .expect("declares the topology");
        Broker {
            bus: bus.clone(),
            connection,
            channel,
            names: Names::new(&bus.prefix),
            topology,
        }
    }

    /// The next message on a department's task queue, waiting up to `within`.
    pub async fn next(
        &self,
        department: &str,
        within: Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let until = Instant::now() + within;
        loop {
            let queue = self.names.task_queue(department);
            let got = self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await;
            match got {
                Ok(Some(m)) => return Some(m),
                Ok(None) if Instant::now() >= until => return None,
                Err(e) if Instant::now() >= until => panic!("cannot read {queue}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn remove(self) {
        // The relay under this prefix applied its policies; they go with the queues.
        let _ = yichuang::bus::policy::remove(&self.bus).await;
        for q in &self.topology.queues {
            let _ = self
                .channel
                .queue_delete(q.name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for e in &self.topology.exchanges {
            let _ = self
                .channel
                .exchange_delete(e.name.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

pub fn header<'a>(m: &'a lapin::message::BasicGetMessage, name: &str) -> Option<&'a AMQPValue> {
    m.delivery.properties.headers().as_ref()?.inner().get(name)
}

pub fn text_header(m: &lapin::message::BasicGetMessage, name: &str) -> String {
    match header(m, name) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}
