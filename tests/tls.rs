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
