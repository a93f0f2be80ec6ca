//! Who may call: every call but the health checks needs an identity (a client certificate of the
//! gateway's CA, or a bearer token of its issuer and audience); a window acts only in its own
//! hall; the platform reads and changes nothing; operators' calls are on the internal listener.
//! Each refusal has its specific status, an audit record with the caller's identity and a
//! metric; each read of a case's personal data is recorded. Real TLS throughout.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use testkit::example;
use testkit::gateway::{Backend, TestGateway, connect_as};
use testkit::pki::Who;
use tonic::Code;
use yichuang::proto::v1::{
    AccessLogRequest, DeliverRequest, GetCaseRequest, ListCasesRequest, Mail, StatusRequest,
    SubmitRequest, WindowFeedRequest, deliver_request::How, submit_response::Outcome,
};

const SECRET: &str = "a test secret of at least thirty-two bytes";
const ISSUER: &str = "https://idp.hall.example";
const AUDIENCE: &str = "yichuang";

/// A gateway that takes client certificates and HS256 tokens of [`ISSUER`] for [`AUDIENCE`].
async fn gateway(backend: Backend) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(backend, dir.path());
    config.auth.jwt = Some(yichuang::config::JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        keys: vec![yichuang::config::JwtKey {
            kid: String::new(),
            algorithm: "HS256".into(),
            public_key: None,
            secret: Some(SECRET.into()),
        }],
        leeway_secs: 0,
    });
    TestGateway::start_with(config, dir).await
}

fn token(role: &str, hall: Option<&str>, audience: &str, expires_in: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = serde_json::json!({
        "sub": format!("{role}-by-token"),
        "role": role,
        "iss": ISSUER,
        "aud": audience,
        "exp": now + expires_in,
    });
    if let Some(h) = hall {
        claims["hall"] = h.into();
    }
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn last_one() -> yichuang::store::AccessQuery {
    yichuang::store::AccessQuery {
        limit: 1,
        ..Default::default()
    }
}

/// The newest access record, which must be a refusal of `method` with `caller`.
async fn refusal_recorded(gw: &TestGateway, method: &str, caller: &str) -> String {
    let log = gw.gateway.store.access_log(last_one()).await.unwrap();
    let last = log.first().expect("an access record");
    assert_eq!(
        (
            last.outcome.as_str(),
            last.method.as_str(),
            last.caller.as_str()
        ),
        ("refused", method, caller),
        "{last:?}"
    );
    last.reason.clone()
}

async fn an_accepted_case(gw: &mut TestGateway) -> String {
    let answer = gw
        .client
        .submit(SubmitRequest {
            submission: Some(example("kai-canguan")),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Receipt(receipt)) = answer.outcome else {
        panic!("kai-canguan is accepted: {answer:?}")
    };
    receipt.case_number
}

async fn callers_without_identity_or_with_a_bad_token_are_refused_and_recorded(backend: Backend) {
    let mut gw = gateway(backend).await;
    let number = an_accepted_case(&mut gw).await;
    let get = || GetCaseRequest {
        case_number: number.clone(),
    };

    // No certificate, no token: UNAUTHENTICATED, saying how to identify.
    let mut anonymous = connect_as(gw.addr, None).await;
    let e = anonymous.get_case(get()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains("client certificate"),
        "{}",
        e.message()
    );
    refusal_recorded(&gw, "CaseService/GetCase", "-").await;

    // An expired token, and a token for another audience.
    let expired = token("platform", None, AUDIENCE, -120);
    let e = anonymous
        .get_case(with_token(get(), &expired))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("expired"), "{}", e.message());
    refusal_recorded(&gw, "CaseService/GetCase", "-").await;
    let elsewhere = token("platform", None, "another-system", 600);
    let e = anonymous
        .get_case(with_token(get(), &elsewhere))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("audience"), "{}", e.message());
    // The token's text is never echoed.
    assert!(!e.message().contains(&elsewhere[..20]));

    // A good token is a caller like a certificate: the platform reads the case.
    let good = token("platform", None, AUDIENCE, 600);
    let case = anonymous
        .get_case(with_token(get(), &good))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(case.case.unwrap().case_number, number);

    // Health stays open to probes, with no identity.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        testkit::gateway::channel(gw.addr, None).await,
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");
    gw.stop().await;
}

/// Probes that cannot speak TLS (the kubelet's) read readiness at `/readyz` beside `/metrics`:
/// 200 while the store answers, 503 when the health watcher finds it does not.
#[tokio::test]
async fn readiness_is_served_beside_metrics_for_probes_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let gw = TestGateway::start_with(config, dir).await;
    let metrics = gw.gateway.metrics_addr.unwrap();
    let answer = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // What the health watcher sets when the store stops answering.
    gw.gateway
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let answer = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.text().await.unwrap().contains("store"));
    gw.stop().await;
}

async fn a_window_reaches_only_its_own_halls_cases(backend: Backend) {
    let mut gw = gateway(backend).await;
    let number = an_accepted_case(&mut gw).await;
    let other = Who::Hall("330102-ZW01".into());
    let mut elsewhere = connect_as(gw.addr, Some(&other)).await;
    let caller = "hall-330102-ZW01";

    let e = elsewhere
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("another hall"), "{}", e.message());
    refusal_recorded(&gw, "CaseService/GetCase", caller).await;

    let e = elsewhere
        .deliver(DeliverRequest {
            case_number: number.clone(),
            how: Some(How::Mail(Mail {
                carrier: "EMS".into(),
                tracking_number: "EMS0000000001".into(),
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    refusal_recorded(&gw, "CaseService/Deliver", caller).await;

    // A body naming the examples' hall is refused: the hall comes from the identity.
    let e = elsewhere
        .submit(SubmitRequest {
            submission: Some(example("qiye-kaiban")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("hallCode"), "{}", e.message());
    refusal_recorded(&gw, "CaseService/Submit", caller).await;

    // Its lists and feeds hold its own hall only, whatever it asks for.
    let e = elsewhere
        .list_cases(ListCasesRequest {
            hall_code: "640100-DT01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let own = elsewhere
        .list_cases(ListCasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(own.cases.is_empty(), "{:?}", own.cases);
    let e = elsewhere
        .window_feed(WindowFeedRequest {
            hall_code: "640100-DT01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The case's own hall reads it, and the read is recorded with who read which case.
    gw.client
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap();
    let last = gw
        .gateway
        .store
        .access_log(last_one())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (
            last.outcome.as_str(),
            last.caller.as_str(),
            last.hall.as_str(),
            last.target.as_str()
        ),
        ("read", "hall-640100-DT01", "640100-DT01", number.as_str())
    );

    // An operator asks who touched the case: the read, and the other hall's refused attempts.
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    let records = admin
        .access_log(AccessLogRequest {
            case_number: number.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let seen: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r.outcome.as_str(), r.caller.as_str(), r.method.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("read", "hall-640100-DT01", "CaseService/GetCase"),
            ("refused", "hall-330102-ZW01", "CaseService/Deliver"),
            ("refused", "hall-330102-ZW01", "CaseService/GetCase"),
        ],
        "{records:?}"
    );
    gw.stop().await;
}

async fn the_platform_reads_and_changes_nothing_and_operators_use_the_internal_listener(
    backend: Backend,
) {
    let mut gw = gateway(backend).await;
    let number = an_accepted_case(&mut gw).await;
    let mut platform = connect_as(gw.addr, Some(&Who::Platform)).await;
    platform
        .get_case(GetCaseRequest {
            case_number: number.clone(),
        })
        .await
        .unwrap();
    let e = platform
        .submit(SubmitRequest {
            submission: Some(example("qiye-kaiban")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("cases.submit"), "{}", e.message());
    refusal_recorded(&gw, "CaseService/Submit", "platform").await;

    // A window may not use the admin calls; an operator may, on the internal listener only.
    let mut window_admin = yichuang::proto::v1::admin_service_client::AdminServiceClient::new(
        testkit::gateway::channel(gw.admin_addr, Some(&Who::examples_hall())).await,
    );
    let e = window_admin.status(StatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    refusal_recorded(&gw, "AdminService/Status", "hall-640100-DT01").await;
    let mut admin = testkit::gateway::admin(gw.admin_addr).await;
    admin.status(StatusRequest {}).await.unwrap();
    let mut on_the_windows_listener =
        yichuang::proto::v1::admin_service_client::AdminServiceClient::new(
            testkit::gateway::channel(gw.addr, Some(&Who::Operator)).await,
        );
    let e = on_the_windows_listener
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    gw.stop().await;
}

testkit::on_both_stores!(
    callers_without_identity_or_with_a_bad_token_are_refused_and_recorded,
    a_window_reaches_only_its_own_halls_cases,
    the_platform_reads_and_changes_nothing_and_operators_use_the_internal_listener,
);

/// A client certificate the gateway's CA did not sign, or one that expired, ends at the TLS
/// handshake; a plaintext client gets nothing either.
#[tokio::test]
async fn foreign_and_expired_certificates_and_plaintext_get_no_answer() {
    let mut gw = TestGateway::start(Backend::Sqlite).await;
    let expired = testkit::pki::expired_client(&Who::examples_hall(), 3);
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            testkit::pki::ca_pem(),
        ))
        .domain_name("localhost")
        .identity(tonic::transport::Identity::from_pem(
            expired.cert_pem,
            expired.key_pem,
        ));
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", gw.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = channel {
        let mut client = yichuang::proto::v1::case_service_client::CaseServiceClient::new(channel);
        let e = client
            .list_cases(ListCasesRequest::default())
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }
    let foreign = yichuang_devcerts::Authority::new("someone else's CA").unwrap();
    let pair = foreign.client("intruder", "urn:yichuang:platform").unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            testkit::pki::ca_pem(),
        ))
        .domain_name("localhost")
        .identity(tonic::transport::Identity::from_pem(
            pair.cert_pem,
            pair.key_pem,
        ));
    if let Ok(channel) = tonic::transport::Channel::from_shared(format!("https://{}", gw.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
    {
        let mut client = yichuang::proto::v1::case_service_client::CaseServiceClient::new(channel);
        let e = client
            .list_cases(ListCasesRequest::default())
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok, "a foreign certificate is refused");
    }
    let plaintext = yichuang::proto::v1::case_service_client::CaseServiceClient::connect(format!(
        "http://{}",
        gw.addr
    ))
    .await;
    if let Ok(mut client) = plaintext {
        assert!(
            client
                .list_cases(ListCasesRequest::default())
                .await
                .is_err()
        );
    }
    // The gateway itself is fine.
    gw.client
        .list_cases(ListCasesRequest::default())
        .await
        .unwrap();
    gw.stop().await;
}

/// A gateway with no TLS material refuses to start, saying what to set; one with TLS but no
/// way for callers to identify themselves too.
#[tokio::test]
async fn a_gateway_without_tls_or_without_caller_identity_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.server.tls = Default::default();
    let e = yichuang::app::Gateway::from_config(&config)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("[server.tls] cert and key"), "{e}");
    let mut config = testkit::gateway::config(Backend::Sqlite, dir.path());
    config.server.tls.client_ca = Default::default();
    let e = yichuang::app::Gateway::from_config(&config)
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("client_ca"), "{e}");
}
