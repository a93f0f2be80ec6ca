//! The bus topology on a real RabbitMQ (started by `make test`): declared twice without
//! complaint, tasks routed to their department's quorum queue, a rejected task dead-lettered to
//! the department's dead queue, a delayed retry back on the task queue after its TTL.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::{BasicProperties, Channel};
use testkit::broker::{Broker, amqp_url};
use testkit::gateway::{Backend, TestGateway};
use testkit::yichuang;
use yichuang::bus::{Names, Topology, connect};
use yichuang::catalog::Catalog;
use yichuang::config::BusConfig;

/// Waits until a message is on `queue`, up to a deadline.
async fn get_within(
    channel: &Channel,
    queue: &str,
    deadline: Duration,
) -> Option<lapin::message::BasicGetMessage> {
    let until = Instant::now() + deadline;
    loop {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic_get");
        if got.is_some() || Instant::now() >= until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn topology_routes_dead_letters_and_delays_on_a_real_broker() {
    let config = BusConfig {
        url: amqp_url(),
        prefix: testkit::broker::prefix(),
        retry_delays_secs: vec![1],
        ..BusConfig::default()
    };
    let catalog = Catalog::load(&testkit::repo().join("config/catalog")).unwrap();
    let topology = Topology::for_catalog(&catalog, &config);
    let connection = connect(&config).await.expect("connects to RabbitMQ");
    let channel = connection.create_channel().await.unwrap();
    let timeout = Duration::from_secs(10);
    topology
        .declare(&channel, timeout)
        .await
        .expect("first declaration");
    topology
        .declare(&channel, timeout)
        .await
        .expect("declaring again changes nothing");

    let names = Names::new(&config.prefix);
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publish = |exchange: String, key: &str, body: &'static [u8]| {
        let channel = channel.clone();
        let key = key.to_string();
        async move {
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            assert!(confirm.await.unwrap().is_ack(), "the broker confirms");
        }
    };

    // Routed by department code to the department's queue, and only there.
    publish(names.tasks_exchange(), "scjg", b"task-1").await;
    let got = get_within(&channel, &names.task_queue("scjg"), Duration::from_secs(5))
        .await
        .expect("on scjg's queue");
    assert_eq!(got.delivery.data, b"task-1");
    assert!(
        get_within(&channel, &names.task_queue("xf"), Duration::ZERO)
            .await
            .is_none(),
        "not on xf's queue"
    );

    // Rejected without requeue: dead-lettered to scjg's dead queue.
    channel
        .basic_nack(
            got.delivery.delivery_tag,
            BasicNackOptions {
                requeue: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dead = get_within(&channel, &names.dead_queue("scjg"), Duration::from_secs(5))
        .await
        .expect("on scjg's dead queue");
    assert_eq!(dead.delivery.data, b"task-1");

    // A delayed retry waits for its TTL, then comes back to the task queue.
    let sent = Instant::now();
    publish(
        names.retry_exchange(),
        &names.retry_key("scjg", 1),
        b"retry-1",
    )
    .await;
    let back = get_within(&channel, &names.task_queue("scjg"), Duration::from_secs(10))
        .await
        .expect("back on scjg's queue");
    assert_eq!(back.delivery.data, b"retry-1");
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "came back after the delay, not at once: {:?}",
        sent.elapsed()
    );

    for q in &topology.queues {
        channel
            .queue_delete(q.name.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for e in &topology.exchanges {
        channel
            .exchange_delete(e.name.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
}

/// The topology of a fresh prefix, declared, with two dead letters on scjg's dead queue
/// (`dead-1`, `dead-2`, both "gave up after 8 attempts").
async fn two_dead_letters() -> Broker {
    let config = BusConfig {
        url: amqp_url(),
        prefix: testkit::broker::prefix(),
        retry_delays_secs: vec![1],
        ..BusConfig::default()
    };
    let broker = Broker::open(&config).await;
    broker
        .channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for id in ["dead-1", "dead-2"] {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            yichuang::bus::headers::REASON.into(),
            lapin::types::AMQPValue::LongString("gave up after 8 attempts".into()),
        );
        broker
            .channel
            .basic_publish(
                broker.names.dead_exchange().as_str().into(),
                "scjg".into(),
                BasicPublishOptions::default(),
                b"not a task",
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.into())
                    .with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    broker
}

/// A gateway (SQLite, no relay) on `bus`, whose AdminService runs the dead-letter operations
/// and whose store records them.
async fn gateway_on(bus: &BusConfig) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.bus = BusConfig {
        relay: false,
        ..bus.clone()
    };
    TestGateway::start_with(config, dir).await
}

/// `yichuang dlq`: a dead task is listed with its reason, replayed back to its department's
/// queue exactly once (a second replay finds nothing) and recorded in the audit of operators'
/// actions, and a purge empties the queue.
// Several threads: the command runs as a child process while this thread waits for it, and the
// gateway it calls must go on serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_once_and_purged() {
    let broker = two_dead_letters().await;
    let (names, channel) = (&broker.names, broker.channel.clone());
    // The gateway whose AdminService the command calls, and whose store records the action.
    let gw = gateway_on(&broker.bus).await;
    let server = format!("https://{}", gw.admin_addr);
    let dlq = |args: &[&str]| {
        let mut all = vec!["dlq", "--server", server.as_str()];
        all.extend_from_slice(args);
        yichuang!(&all)
    };

    let out = dlq(&["list", "scjg"]);
    assert_eq!(out.status.code(), Some(0), "{}", testkit::text(&out.stderr));
    let listed = testkit::text(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("dead-1") && listed.contains("gave up after 8 attempts"));

    let out = dlq(&["replay", "scjg", "dead-1"]);
    assert_eq!(out.status.code(), Some(0), "{}", testkit::text(&out.stderr));
    assert!(testkit::text(&out.stderr).contains("recorded in the audit"));
    let actions = gw.gateway.store.operator_actions(10).await.unwrap();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(
        (actions[0].action.as_str(), actions[0].message_ids.clone()),
        ("dlq-replay", vec!["dead-1".to_string()])
    );
    assert!(
        actions[0].origin.starts_with("grpc@127.0.0.1"),
        "{actions:?}"
    );
    assert_eq!(actions[0].target, names.dead_queue("scjg"));
    let out = dlq(&["replay", "scjg", "dead-1"]);
    assert_eq!(out.status.code(), Some(0), "{}", testkit::text(&out.stderr));
    assert_eq!(
        testkit::text(&out.stdout).trim(),
        "",
        "nothing left to move"
    );

    // On the task queue once, with fresh attempts; dead-2 still dead.
    let back = get_within(&channel, &names.task_queue("scjg"), Duration::from_secs(5))
        .await
        .expect("moved back");
    assert_eq!(
        back.delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        "dead-1"
    );
    back.delivery
        .ack(lapin::options::BasicAckOptions::default())
        .await
        .unwrap();
    assert!(
        get_within(
            &channel,
            &names.task_queue("scjg"),
            Duration::from_millis(500)
        )
        .await
        .is_none(),
        "moved once"
    );
    let out = dlq(&["list", "scjg"]);
    let listed = testkit::text(&out.stdout);
    assert!(
        listed.contains("dead-2") && !listed.contains("dead-1"),
        "{listed}"
    );

    let out = dlq(&["purge", "scjg"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a purge names its messages, a reason or says --all"
    );
    let out = dlq(&["purge", "scjg", "--all"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a purge says why: {}",
        testkit::text(&out.stderr)
    );
    assert!(
        testkit::text(&dlq(&["list", "scjg"]).stdout).contains("dead-2"),
        "a refused purge discards nothing"
    );
    let out = dlq(&[
        "purge",
        "scjg",
        "--all",
        "--note",
        "test: replaced by a new task",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", testkit::text(&out.stderr));
    assert_eq!(testkit::text(&dlq(&["list", "scjg"]).stdout).trim(), "");
    gw.stop().await;
    broker.remove().await;
}

/// The same operations through `AdminService`: listed by department and reason, one message
/// replayed by its id exactly once, recorded with the authenticated caller, the person it names
/// and the caller's address; a request that names no selection or an unknown department changes
/// nothing.
#[tokio::test]
async fn dead_letters_through_the_admin_service_are_replayed_once_and_audited() {
    use yichuang::proto::v1::{
        DeadLetterActionRequest, ListDeadLettersRequest, ShowDeadLetterRequest,
    };
    let broker = two_dead_letters().await;
    let (names, channel) = (&broker.names, broker.channel.clone());
    let gw = gateway_on(&broker.bus).await;
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let listed = admin
        .list_dead_letters(ListDeadLettersRequest {
            department: "scjg".into(),
            reason_contains: "gave up".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let none = admin
        .list_dead_letters(ListDeadLettersRequest {
            department: "scjg".into(),
            reason_contains: "delivery_limit".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(none.is_empty(), "{none:?}");
    // One message in full: its headers (the reason among them) and its body, said for what it
    // is; an id not in the queue is NOT_FOUND.
    let shown = admin
        .show_dead_letter(ShowDeadLetterRequest {
            department: "scjg".into(),
            message_id: "dead-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.dead_letter.unwrap().message_id, "dead-2");
    assert!(
        shown
            .headers
            .iter()
            .any(|h| h.name == yichuang::bus::headers::REASON && h.value.contains("gave up")),
        "{:?}",
        shown.headers
    );
    assert_eq!(
        shown.body,
        "(10 bytes that are neither a task nor a result)"
    );
    let missing = admin
        .show_dead_letter(ShowDeadLetterRequest {
            department: "scjg".into(),
            message_id: "dead-9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    let request = |f: fn(&mut DeadLetterActionRequest)| {
        let mut r = DeadLetterActionRequest {
            department: "scjg".into(),
            message_ids: vec!["dead-2".into()],
            operator: "ops-li".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    for (bad, what) in [
        (request(|r| r.message_ids.clear()), "no selection"),
        (request(|r| r.all = true), "two selections"),
        (
            request(|r| r.department = "nosuch".into()),
            "unknown department",
        ),
    ] {
        let status = admin.replay_dead_letters(bad).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
    }
    let moved = admin
        .replay_dead_letters(request(|_| {}))
        .await
        .unwrap()
        .into_inner()
        .moved;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].message_id, "dead-2");
    let again = admin.replay_dead_letters(request(|_| {})).await.unwrap();
    assert!(again.into_inner().moved.is_empty(), "moved once");
    let back = get_within(&channel, &names.task_queue("scjg"), Duration::from_secs(5))
        .await
        .expect("moved back");
    assert_eq!(
        back.delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        "dead-2"
    );
    assert!(
        get_within(
            &channel,
            &names.task_queue("scjg"),
            Duration::from_millis(500)
        )
        .await
        .is_none(),
        "on the task queue once"
    );

    let actions = gw.gateway.store.operator_actions(10).await.unwrap();
    assert_eq!(actions.len(), 2, "both replays recorded: {actions:?}");
    assert_eq!(actions[1].message_ids, vec!["dead-2".to_string()]);
    assert!(
        actions[0].message_ids.is_empty(),
        "the second moved nothing"
    );
    assert!(
        actions
            .iter()
            .all(|a| a.operator == "operator for ops-li" && a.origin.starts_with("grpc@127.0.0.1")),
        "{actions:?}"
    );
    gw.stop().await;
    broker.remove().await;
}

/// Least privilege on a real broker, in a vhost of the test's own with real users made by
/// `yichuang::bus::users` (as `yichuang bus users` makes them): 市场监管's adapter user can
/// consume its own task queue, check that its queues exist, and publish results, retries and
/// dead letters; it cannot consume 消防's task queue, drain the gateway's results queue, publish a
/// result routed as 消防's, publish a task or declare anything (each refused with
/// ACCESS_REFUSED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_user_reads_only_its_own_queues_and_cannot_publish_a_task() {
    use lapin::options::BasicConsumeOptions;
    let mut vhost = testkit::broker::Vhost::create().await;
    let mut bus = vhost.bus.clone();
    let scjg_user = format!("{}-scjg", vhost.name);
    let xf_user = format!("{}-xf", vhost.name);
    bus.department_users
        .insert("scjg".into(), scjg_user.clone());
    bus.department_users.insert("xf".into(), xf_user.clone());
    vhost.owns_user(&scjg_user);
    vhost.owns_user(&xf_user);
    // The shared topology, declared by the suite's user as the gateway's relay does.
    let broker = Broker::open(&bus).await;
    // The users, made by `yichuang bus users` with passwords from the environment.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\nurl = \"{}\"\nprefix = \"{}\"\n[bus.department_users]\nscjg = \"{scjg_user}\"\nxf = \"{xf_user}\"\n",
            bus.url, bus.prefix
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_yichuang"));
    command.args(["bus", "users", "--config", config.to_str().unwrap()]);
    for user in [&scjg_user, &xf_user] {
        command.env(
            yichuang::bus::users::password_variable(user),
            "adapter-secret",
        );
    }
    let out = command.output().unwrap();
    testkit::keep_stderr("yichuang", &out);
    let printed = testkit::text(&out.stdout) + &testkit::text(&out.stderr);
    assert!(out.status.success(), "bus users: {printed}");
    assert!(
        printed.contains(&scjg_user) && !printed.contains("adapter-secret"),
        "names the users, never a password: {printed}"
    );
    let names = Names::new(&bus.prefix);
    let as_scjg = BusConfig {
        url: vhost.url_as(&scjg_user, "adapter-secret"),
        ..bus.clone()
    };
    let connection = connect(&as_scjg).await.expect("scjg's user connects");
    let refused = |what: &str, e: &dyn std::fmt::Debug| {
        let text = format!("{e:?}");
        assert!(
            text.contains("ACCESS_REFUSED") || text.contains("AccessRefused"),
            "{what} refused with ACCESS_REFUSED: {text}"
        );
    };

    // What it needs: its queues exist (checked passively), it consumes its own task queue, and
    // publishes results (as itself), retries and dead letters, each confirmed.
    let channel = connection.create_channel().await.unwrap();
    let written = [
        names.results_exchange(),
        names.retry_exchange(),
        names.dead_exchange(),
    ];
    let own = Topology {
        exchanges: broker
            .topology
            .exchanges
            .iter()
            .filter(|e| written.contains(&e.name))
            .cloned()
            .collect(),
        queues: broker
            .topology
            .queues
            .iter()
            .filter(|q| {
                q.name == names.task_queue("scjg") || q.name == names.retry_queue("scjg", 1)
            })
            .cloned()
            .collect(),
        bindings: vec![],
        retired: vec![],
    };
    assert_eq!((own.exchanges.len(), own.queues.len()), (3, 2));
    own.check(&channel, Duration::from_secs(5))
        .await
        .expect("its queues can be checked");
    channel
        .basic_consume(
            names.task_queue("scjg").as_str().into(),
            "own".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect("consumes its own task queue");
    let publishing = connection.create_channel().await.unwrap();
    publishing
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (exchange, key) in [
        (names.results_exchange(), "scjg.accepted".to_string()),
        (names.retry_exchange(), names.retry_key("scjg", 1)),
        (names.dead_exchange(), "scjg".to_string()),
    ] {
        let confirm = publishing
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                Default::default(),
                b"x",
                BasicProperties::default().with_user_id(scjg_user.as_str().into()),
            )
            .await
            .unwrap_or_else(|e| panic!("publishes to {exchange}: {e}"));
        assert!(
            confirm.await.unwrap().is_ack(),
            "{exchange} takes its message"
        );
    }

    // What it must not do, each on a channel of its own (a refusal closes the channel).
    let other = connection.create_channel().await.unwrap();
    let e = other
        .basic_consume(
            names.task_queue("xf").as_str().into(),
            "not-mine".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect_err("消防's task queue cannot be consumed");
    refused("consuming another department's task queue", &e);
    let other = connection.create_channel().await.unwrap();
    let e = other
        .basic_get(
            names.results_queue().as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect_err("the gateway's results queue cannot be read");
    refused("reading the results queue", &e);
    let other = connection.create_channel().await.unwrap();
    let e = other
        .queue_declare(
            format!("{}.mine", bus.prefix).as_str().into(),
            Default::default(),
            Default::default(),
        )
        .await
        .expect_err("nothing can be declared");
    refused("declaring a queue", &e);
    // A result routed as another department's (topic permissions on the results exchange).
    let results = connection.create_channel().await.unwrap();
    results
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let published = match results
        .basic_publish(
            names.results_exchange().as_str().into(),
            "xf.approved".into(),
            Default::default(),
            b"a result for another department",
            BasicProperties::default().with_user_id(scjg_user.as_str().into()),
        )
        .await
    {
        Ok(confirm) => confirm.await.map(|c| c.is_ack()),
        Err(e) => Err(e),
    };
    refused(
        "publishing a result routed as another department's",
        &published.expect_err("routed as xf's, refused"),
    );
    let task = connection.create_channel().await.unwrap();
    task.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let published = match task
        .basic_publish(
            names.tasks_exchange().as_str().into(),
            "xf".into(),
            Default::default(),
            b"a forged task",
            BasicProperties::default(),
        )
        .await
    {
        Ok(confirm) => confirm.await.map(|c| c.is_ack()),
        Err(e) => Err(e),
    };
    refused(
        "publishing a task",
        &published.expect_err("a task cannot be published"),
    );
    assert!(
        broker
            .next("xf", Duration::from_millis(500))
            .await
            .is_none(),
        "no forged task reached 消防's queue"
    );
    let _ = connection.close(200, "done".into()).await;
    broker.remove().await;
    vhost.remove().await;
}

/// An adapter checks the topology instead of declaring it: on a prefix nothing was declared
/// under, the check names what is missing and how to declare it.
#[tokio::test]
async fn checking_a_topology_not_declared_says_how_to_declare_it() {
    let bus = testkit::broker::bus();
    let connection = connect(&bus).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let e = Topology::for_departments(&["scjg".to_string()], &bus)
        .check(&channel, Duration::from_secs(5))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&bus.prefix)
            && e.contains("is not on the broker")
            && e.contains("yichuang bus declare"),
        "{e}"
    );
    let _ = connection.close(200, "done".into()).await;
}

/// `yichuang bus users` with a password missing changes nothing and names where each password
/// is read from.
#[test]
fn bus_users_without_a_password_names_where_it_is_read_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[bus]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\n[bus.department_users]\nscjg = \"adapter-scjg-nopass\"\n",
    )
    .unwrap();
    let out = yichuang!(&[
        "bus",
        "users",
        "--config",
        config.to_str().unwrap(),
        "--passwords-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = testkit::text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("YICHUANG_BUS_PASSWORD_ADAPTER_SCJG_NOPASS")
            && stderr.contains("adapter-scjg-nopass")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
}

/// The notifier's queue hears only the history entries that make a notice, and a queue an
/// earlier build bound to every entry (`#`) loses that binding when the topology is declared
/// again.
#[tokio::test]
async fn the_notify_queue_takes_only_the_entries_that_make_a_notice() {
    let mut bus = testkit::broker::bus();
    bus.notify = true;
    let broker = Broker::open(&bus).await;
    let (queue, events) = (broker.names.notify_queue(), broker.names.events_exchange());
    // As an earlier build left it.
    broker
        .channel
        .queue_bind(
            queue.as_str().into(),
            events.as_str().into(),
            "#".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    broker
        .topology
        .declare(&broker.channel, Duration::from_secs(10))
        .await
        .expect("declared again");
    broker
        .channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for kind in yichuang::event::EventKind::ALL {
        let key = yichuang::outbox::event_routing_key(kind.as_str());
        let confirm = broker
            .channel
            .basic_publish(
                events.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                kind.as_str().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack(), "the broker confirms {key}");
    }
    // Every publish is confirmed, so whatever was routed is on the queue now.
    let mut heard = Vec::new();
    while let Some(m) = get_within(&broker.channel, &queue, Duration::ZERO).await {
        heard.push(String::from_utf8(m.delivery.data).unwrap());
    }
    let mut wanted: Vec<String> = yichuang::bus::NOTIFY_EVENTS
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    heard.sort();
    wanted.sort();
    assert_eq!(
        heard, wanted,
        "only the entries that make a notice, once each"
    );
}
