//! What the gRPC server records about every call: a server span continuing the caller's W3C
//! trace context (`traceparent` metadata), and the call counter and latency histogram of
//! [`crate::metrics::meters`]. A tower layer, so every service gets the same; the health
//! checks and reflection are counted but get no span (probes every few seconds would bury the
//! windows' calls).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument;

use crate::metrics::{MethodLabels, RpcLabels, meters};

/// Which paths are served, and their metric labels, are the policy's list (`auth::need_of`).
pub use crate::auth::{OTHER, method_of};

/// Wraps a gRPC server's services.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcLayer;

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc { inner }
    }
}

/// A service wrapped by [`RpcLayer`].
#[derive(Clone, Debug)]
pub struct Rpc<S> {
    inner: S,
}

/// The gRPC status name of a numeric code.
pub fn code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Rpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = method_of(request.uri().path());
        let probe = service == "Health" || service.starts_with("ServerReflection");
        let span = if probe {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(
                "rpc",
                otel.name = %format!("{service}/{method}"),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
                case.number = tracing::field::Empty,
                task.ids = tracing::field::Empty,
                submission.id = tracing::field::Empty,
            );
            if let Some(parent) = request
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
            {
                crate::trace::continue_in(&span, parent);
            }
            span
        };
        let started = Instant::now();
        let future = {
            let _inside = span.enter();
            self.inner.call(request)
        };
        let recorded = span.clone();
        // Counted even when the call is dropped unanswered (the server's timeout, a client
        // that reset the stream): then as CANCELLED, which is what the client sees.
        let mut call = Counted {
            service,
            method,
            started,
            counted: false,
        };
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    // A failed call answers "trailers-only": the status is in the headers. A
                    // successful one has it in the trailers, after the body; absent here: OK.
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map_or("OK", code_name),
                    Err(_) => "UNAVAILABLE",
                };
                recorded.record("rpc.grpc.status_code", code);
                call.count(code);
                result
            }
            .instrument(span),
        )
    }
}

/// Counts a call answered before this layer saw it (shed by the in-flight bound, which runs
/// first, `crate::limits`) in `yichuang_grpc_requests_total` with `code`, as every other call
/// is; it has no duration worth a histogram's bucket.
pub fn count_unserved(path: &str, code: &str) {
    let (service, method) = method_of(path);
    meters()
        .rpc_requests
        .get_or_create(&RpcLabels {
            service,
            method,
            code: code.to_string(),
        })
        .inc();
}

/// One call's count and duration, recorded once: when it is answered, or when it is dropped.
struct Counted {
    service: String,
    method: String,
    started: Instant,
    counted: bool,
}

impl Counted {
    fn count(&mut self, code: &str) {
        self.counted = true;
        let m = meters();
        m.rpc_requests
            .get_or_create(&RpcLabels {
                service: self.service.clone(),
                method: self.method.clone(),
                code: code.to_string(),
            })
            .inc();
        m.rpc_duration
            .get_or_create(&MethodLabels {
                service: self.service.clone(),
                method: self.method.clone(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if !self.counted {
            self.count("CANCELLED");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_give_the_short_service_and_the_method() {
        assert_eq!(
            method_of("/yichuang.v1.CaseService/Submit"),
            ("CaseService".to_string(), "Submit".to_string())
        );
        assert_eq!(
            method_of("/grpc.health.v1.Health/Check"),
            ("Health".to_string(), "Check".to_string())
        );
        assert_eq!(
            method_of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").0,
            "ServerReflection"
        );
        assert_eq!(code_name("3"), "INVALID_ARGUMENT");
        assert_eq!(code_name("x"), "UNKNOWN");
    }

    #[test]
    fn unknown_paths_collapse_to_other() {
        let other = (OTHER.to_string(), OTHER.to_string());
        assert_eq!(method_of("/yichuang.v1.CaseService/NoSuchMethod"), other);
        assert_eq!(method_of("/evil.Service/Submit"), other);
        assert_eq!(method_of("/x"), other);
        assert_eq!(method_of(""), other);
    }

    #[test]
    fn every_guide_page_counts_as_one() {
        let page = ("Guide".to_string(), "page".to_string());
        assert_eq!(method_of("/guide"), page);
        assert_eq!(method_of("/guide/QY-SL"), page);
        assert_eq!(method_of("/guide/any-code-anyone-types/qr.svg"), page);
    }

    /// Every service and method of `proto/yichuang/v1` is known, so none is counted as `other`.
    #[test]
    fn every_method_of_the_protos_is_known() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/yichuang/v1");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let mut service = String::new();
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.trim_end_matches('{').trim().to_string();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap().trim();
                    let path = format!("/yichuang.v1.{service}/{method}");
                    assert_eq!(method_of(&path).1, method, "{path} is not in auth::need_of");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 13, "only {seen} methods found in proto/");
    }
}
