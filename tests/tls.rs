//! TLS on the hops the gateway opens itself: PostgreSQL with `sslmode` (and `sslrootcert`), the
//! platform push over `https://` to a receiver with a private CA, and AMQPS to RabbitMQ — each
//! with a certificate it must refuse, and the refusal's message.

use testkit::db::pg_url;

/// The suite's PostgreSQL URL with these query parameters instead of its own.
fn pg_url_with(params: &str) -> String {
    let url = pg_url();
    let base = url.split_once('?').map_or(url.as_str(), |(b, _)| b);
    format!("{base}?{params}")
}

/// Whether this session's backend sees TLS (`pg_stat_ssl`).
async fn backend_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn postgres_with_sslmode_require_is_encrypted() {
    testkit::logs();
    let client = yichuang::tls::connect_postgres(&pg_url_with("sslmode=require"))
        .await
        .expect("connect with sslmode=require");
    assert!(
        backend_ssl(&client).await,
        "pg_stat_ssl.ssl for our backend"
    );

    let plain = yichuang::tls::connect_postgres(&pg_url_with("sslmode=disable"))
        .await
        .expect("connect with sslmode=disable");
    assert!(!backend_ssl(&plain).await, "sslmode=disable is plaintext");

    // The suite's own URL (what every PostgreSQL test and the store use) asks for TLS too.
    let suite = testkit::db::connect().await;
    assert!(
        backend_ssl(&suite).await,
        "YICHUANG_TEST_PG_URL should carry sslmode=require (scripts/services.sh)"
    );
}

#[tokio::test]
async fn postgres_store_opens_over_tls_and_checks_the_server_against_sslrootcert() {
    testkit::logs();
    let schema = testkit::db::Schema::new("tls");
    // The store itself, over TLS.
    yichuang::store::postgres::PgStore::open(&pg_url_with("sslmode=require"), &schema.name, 2)
        .await
        .expect("the store opens with sslmode=require");

    // A CA that did not sign the server's certificate: verify-ca refuses, and says why.
    let dir = tempfile::tempdir().unwrap();
    let ca = yichuang_devcerts::Authority::new("not the database's CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    for mode in ["verify-ca", "require"] {
        let url = pg_url_with(&format!("sslmode={mode}&sslrootcert={}", ca_path.display()));
        let e = yichuang::tls::connect_postgres(&url)
            .await
            .err()
            .unwrap_or_else(|| panic!("sslmode={mode} with the wrong sslrootcert connects"));
        let message = e.to_string();
        assert!(
            message.contains("certificate") && !message.contains(":yichuang@"),
            "sslmode={mode}: {message}"
        );
    }
    schema.drop_now().await;
}

/// The server's own certificate as the root: Debian's cluster serves its self-signed snakeoil
/// certificate, issued to a host name (never to an IP address such as 127.0.0.1).
#[tokio::test]
async fn postgres_verify_ca_checks_the_chain_and_verify_full_the_name_too() {
    testkit::logs();
    let file: String = testkit::db::connect()
        .await
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("the server's certificate file")
        .get(0);
    let cert = std::path::Path::new(&file);
    if !cert.is_absolute() || std::fs::metadata(cert).is_err() {
        eprintln!("the server's certificate {file} cannot be read here: nothing to check");
        return;
    }
    let cert = cert.display();
    let client = yichuang::tls::connect_postgres(&pg_url_with(&format!(
        "sslmode=verify-ca&sslrootcert={cert}"
    )))
    .await
    .expect("verify-ca with the server's own certificate as root");
    assert!(backend_ssl(&client).await);
    let e = yichuang::tls::connect_postgres(&pg_url_with(&format!(
        "sslmode=verify-full&sslrootcert={cert}"
    )))
    .await
    .expect_err("127.0.0.1 is not the name in the certificate");
    assert!(
        e.to_string().contains("not valid for name \"127.0.0.1\""),
        "{e}"
    );
}

mod platform {
    //! The platform push to an `https://` receiver whose certificate a private CA signed, with
    //! the gateway's own client certificate (mTLS).

    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use testkit::gateway::{Backend, TestGateway};
    use yichuang::proto::v1::SubmitRequest;
    use yichuang_devcerts::Authority;

    const SECRET: &str = "platform-secret";

    struct Receiver {
        freshness: yichuang::feed::Freshness,
        taken: Mutex<Vec<String>>,
    }

    async fn push(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        match r.freshness.check(
            h("x-yichuang-timestamp"),
            h("x-yichuang-event-id"),
            h("x-yichuang-signature"),
            &body,
            chrono::Utc::now().timestamp(),
        ) {
            Ok(_) => {
                r.taken
                    .lock()
                    .unwrap()
                    .push(h("x-yichuang-event-id").unwrap().to_string());
                StatusCode::OK
            }
            Err(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// Writes the CA, and a client certificate it signed, to `dir`.
    fn write_certs(dir: &std::path::Path, ca: &Authority, name: &str) {
        std::fs::write(dir.join(format!("{name}-ca.pem")), ca.cert_pem()).unwrap();
        ca.client("gateway", "urn:yichuang:gateway")
            .unwrap()
            .write(dir, name)
            .unwrap();
    }

    fn gateway_config(
        dir: &std::path::Path,
        url: &str,
        certs: &std::path::Path,
        name: &str,
    ) -> yichuang::config::GatewayConfig {
        let mut config = testkit::gateway::config(Backend::Sqlite, dir);
        config.platform.push_url = url.to_string();
        config.platform.secret = SECRET.into();
        config.platform.ca_file = Some(certs.join(format!("{name}-ca.pem")));
        config.platform.client_cert = Some(certs.join(format!("{name}.pem")));
        config.platform.client_key = Some(certs.join(format!("{name}-key.pem")));
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_push_reaches_an_https_receiver_of_a_private_ca_and_refuses_an_untrusted_one() {
        testkit::logs();
        let certs = tempfile::tempdir().unwrap();
        let ca = Authority::new("platform CA").unwrap();
        write_certs(certs.path(), &ca, "good");
        let server = ca.server(&["localhost", "127.0.0.1"]).unwrap();
        let (listener, endpoint) = testkit::server::https(&server, Some(ca.cert_pem())).await;
        let failed = listener.failed_handshakes.clone();
        let receiver = Arc::new(Receiver {
            freshness: yichuang::feed::Freshness::new(SECRET, 300),
            taken: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/push", axum::routing::post(push))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("{endpoint}/push");

        let dir = tempfile::tempdir().unwrap();
        let mut gw =
            TestGateway::start_with(gateway_config(dir.path(), &url, certs.path(), "good"), dir)
                .await;
        gw.client
            .submit(SubmitRequest {
                submission: Some(testkit::example("kai-canguan")),
            })
            .await
            .unwrap();
        testkit::eventually(
            "the push arrives over https",
            Duration::from_secs(20),
            || {
                let r = receiver.clone();
                async move { (!r.taken.lock().unwrap().is_empty()).then_some(()) }
            },
        )
        .await;
        gw.stop().await;
        assert_eq!(failed.load(Ordering::SeqCst), 0, "every handshake passed");

        // A gateway trusting another CA: its handshakes fail and nothing arrives.
        let other = Authority::new("someone else's CA").unwrap();
        write_certs(certs.path(), &other, "other");
        let taken = receiver.taken.lock().unwrap().len();
        let dir = tempfile::tempdir().unwrap();
        let mut gw =
            TestGateway::start_with(gateway_config(dir.path(), &url, certs.path(), "other"), dir)
                .await;
        gw.client
            .submit(SubmitRequest {
                submission: Some(testkit::example("qiye-kaiban")),
            })
            .await
            .unwrap();
        testkit::eventually("refused handshakes", Duration::from_secs(20), || {
            let f = failed.clone();
            async move { (f.load(Ordering::SeqCst) >= 2).then_some(()) }
        })
        .await;
        gw.stop().await;
        assert_eq!(
            receiver.taken.lock().unwrap().len(),
            taken,
            "nothing arrived"
        );

        // What the push's client says when it does not trust the receiver: the reason, and
        // what to check.
        let tls = yichuang::tls::ClientTls {
            ca_file: Some(certs.path().join("other-ca.pem")),
            ..Default::default()
        };
        let client = tls
            .reqwest(reqwest::Client::builder(), "[platform]")
            .unwrap()
            .build()
            .unwrap();
        let e = client.post(&url).send().await.unwrap_err();
        let message = yichuang::tls::with_causes(&e);
        assert!(
            message.contains("UnknownIssuer") && message.contains("ca_file"),
            "{message}"
        );
    }
}

mod amqps {
    //! The gateway's relay and a test's session over `amqps://` with the development CA
    //! (`scripts/services.sh` makes RabbitMQ listen on TLS), and a CA that did not sign the
    //! broker's certificate refused with the reason.

    use std::time::Duration;

    use testkit::broker::Broker;
    use testkit::gateway::{Backend, TestGateway};
    use yichuang::proto::v1::SubmitRequest;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_relay_publishes_over_amqps_and_a_wrong_ca_is_refused() {
        let (url, ca) = testkit::broker::amqps();
        let mut bus = testkit::broker::bus();
        bus.url = url;
        bus.ca_file = Some(ca);
        bus.check_tls().expect("amqps with a CA file");

        let dir = tempfile::tempdir().unwrap();
        let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
        config.bus = bus.clone();
        config.bus.relay = true;
        let mut gw = TestGateway::start_with(config, dir).await;
        // The test's own session over TLS too.
        let broker = Broker::open(&bus).await;
        gw.client
            .submit(SubmitRequest {
                submission: Some(testkit::example("kai-canguan")),
            })
            .await
            .unwrap();
        let task = broker.next("scjg", Duration::from_secs(20)).await;
        assert!(task.is_some(), "the relay published the task over amqps");
        gw.stop().await;
        broker.remove().await;

        // A CA that did not sign the broker's certificate.
        let certs = tempfile::tempdir().unwrap();
        let other = yichuang_devcerts::Authority::new("not the broker's CA").unwrap();
        let other_ca = certs.path().join("ca.pem");
        std::fs::write(&other_ca, other.cert_pem()).unwrap();
        let mut wrong = bus.clone();
        wrong.ca_file = Some(other_ca);
        let e = yichuang::bus::connect(&wrong)
            .await
            .expect_err("a broker whose CA we do not trust is refused")
            .to_string();
        assert!(
            e.contains("UnknownIssuer") && e.contains("amqps://guest:***@"),
            "{e}"
        );

        // amqps:// with no CA file is refused when the settings are checked.
        let mut none = bus.clone();
        none.ca_file = None;
        let e = none.check_tls().unwrap_err();
        assert!(e.contains("ca_file"), "{e}");
    }
}
