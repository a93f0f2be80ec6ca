//! The gRPC API: `CaseService` (`cases.rs`), `HotlineService` (`hotline.rs`, the 12345
//! hotline's work orders) and the standard health service on the windows' listener ([`grpc`]),
//! beside the public item guide (`/guide`, [`crate::guide`]); `AdminService` (`admin.rs`),
//! server reflection and health on the internal one ([`admin_grpc`]); both over TLS and behind
//! the policy layer ([`crate::auth`]). Handlers translate between the
//! wire and intake, lifecycle and the store; they hold no business rules, and they never start
//! background work (that is [`crate::app`]). Errors become gRPC statuses here, in one place.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Status;
use tracing::warn;

use crate::gateway::Gateway;
use crate::intake::IntakeError;
use crate::proto::v1::admin_service_server::AdminServiceServer;
use crate::proto::v1::case_service_server::CaseServiceServer;
use crate::proto::v1::hotline_service_server::HotlineServiceServer;
use crate::store::StoreError;

mod admin;
mod cases;
mod hotline;
mod streams;

pub use admin::AdminApi;
pub use cases::CaseApi;
pub use hotline::HotlineApi;
pub use streams::{FeedStream, HELD_PER_STREAM};

/// Largest page of `ListCases`.
pub const MAX_PAGE_SIZE: i32 = 500;

/// Serves the windows' API (`CaseService` and health) and, unless `[guide] enabled = false`,
/// the public item guide (`/guide`) on `listener` until `shutdown` completes (then waits for
/// the calls in flight): over TLS unless `[development] plaintext`, every call through the
/// policy layer (which lets the guide's pages through without an identity).
pub async fn grpc(
    gateway: Arc<Gateway>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let limit = gateway.max_message_bytes;
    let cases = CaseServiceServer::new(CaseApi {
        gateway: gateway.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(64 * 1024 * 1024);
    let hotline = HotlineServiceServer::new(HotlineApi {
        gateway: gateway.clone(),
    })
    .max_decoding_message_size(limit);
    let bounds = gateway.limits.config();
    let mut routes = tonic::service::Routes::new(health_service)
        .add_service(cases)
        .add_service(hotline);
    if gateway.guide.enabled() {
        if let Ok(addr) = listener.local_addr() {
            gateway.guide.bind(addr, gateway.tls.is_some());
        }
        routes = routes
            .into_axum_router()
            .merge(crate::guide::router(gateway.clone()))
            .into();
    }
    builder(&gateway)?
        // Browsers reaching the guide over plain HTTP (a plaintext development gateway).
        .accept_http1(gateway.guide.enabled())
        .timeout(std::time::Duration::from_secs(bounds.call_timeout_secs))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(
            bounds.keepalive_interval_secs,
        )))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(
            bounds.keepalive_timeout_secs,
        )))
        // Outermost: a call shed under overload costs no span and no identity.
        .layer(crate::limits::LimitLayer::in_flight(gateway.limits.clone()))
        .layer(crate::observe::RpcLayer)
        .layer(tower::util::MapResponseLayer::new(move |r| {
            size_limit_status(r, limit)
        }))
        .layer(
            crate::auth::PolicyLayer::new(gateway.guard.clone())
                .with_guide(gateway.guide.enabled()),
        )
        // After the policy layer: the rates key on the identity it found (a guide page's
        // reader has none: its peer address).
        .layer(crate::limits::LimitLayer::rates(gateway.limits.clone()))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// Serves the internal API (`AdminService`, server reflection and health) and the operations
/// console (`/console`, [`crate::console`]) on `listener`, for operators and probes, with the
/// same TLS and policy as [`grpc`].
pub async fn admin_grpc(
    gateway: Arc<Gateway>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let mut routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(AdminServiceServer::new(AdminApi {
            gateway: gateway.clone(),
        }));
    if gateway.console.enabled {
        routes = routes
            .into_axum_router()
            .merge(crate::console::router(gateway.clone()))
            .into();
    }
    builder(&gateway)?
        // Browsers without TLS (a plaintext development gateway) speak HTTP/1.1 to the console.
        .accept_http1(true)
        .layer(crate::observe::RpcLayer)
        .layer(if gateway.console.enabled {
            crate::auth::PolicyLayer::with_console(gateway.guard.clone())
        } else {
            crate::auth::PolicyLayer::new(gateway.guard.clone())
        })
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// A server with the gateway's TLS, when it has one.
fn builder(gateway: &Gateway) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder();
    match &gateway.tls {
        Some(tls) => builder.tls_config(tls.clone()),
        None => Ok(builder),
    }
}

/// Accepted connections with Nagle's algorithm off: a response written in several small
/// frames must not wait for the client's delayed ACK (a 40 ms stall per answer otherwise).
pub fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|stream| {
        if let Ok(s) = &stream {
            let _ = s.set_nodelay(true);
        }
        stream
    })
}

/// tonic refuses an oversized request with `OUT_OF_RANGE`; gRPC clients expect
/// `RESOURCE_EXHAUSTED` naming the limit, so the status is rewritten here, in one place.
fn size_limit_status<B>(mut response: http::Response<B>, limit: usize) -> http::Response<B> {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.to_str().is_ok_and(|m| m.contains("too%20large")));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        let message = format!(
            "request: larger than the limit of {limit} bytes (server.max_message_bytes); send file references, not file contents"
        );
        let encoded: String = message
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b".-_();".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(v) = http::HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", v);
        }
    }
    response
}

fn intake_status(e: IntakeError) -> Status {
    match e {
        IntakeError::Calendar(c) => Status::failed_precondition(c.to_string()),
    }
}

/// No case has this number. The number is echoed masked: a clerk who typed an ID or mobile
/// number into the field does not see it come back in an error that may be logged.
fn not_found(case_number: &str) -> Status {
    Status::not_found(format!(
        "caseNumber: no case {}",
        crate::privacy::mask_free_text(case_number)
    ))
}

fn store_status(e: StoreError) -> Status {
    let db = match &e {
        StoreError::Postgres(pg) => pg
            .as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message())),
        _ => None,
    };
    warn!(error = %e, db = db.as_deref().unwrap_or(""), "store failed");
    match e {
        StoreError::SequenceExhausted { .. } => Status::resource_exhausted(e.to_string()),
        StoreError::Closed | StoreError::Pool(_) => {
            Status::unavailable(format!("{e}; retry later"))
        }
        _ => Status::internal(
            "the store failed; the submission may not have been recorded: retry with the same submissionId",
        ),
    }
}
