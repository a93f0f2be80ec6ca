//! The tower layers that apply [`Limits`] to every call of a gRPC server, in two places. The
//! in-flight bound ([`LimitLayer::in_flight`]) is the outermost layer, so a call shed under
//! overload costs as little as a call can: no span, no identity, no certificate read. The
//! rates and the callers' stream caps ([`LimitLayer::rates`]) come after the policy layer, since
//! they key on the identity it found. A refusal is answered before the request body is read;
//! what a call holds (its place in flight, its stream permit) rides on the response body and is
//! given back when the body is done or dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::metadata::MetadataValue;
use tracing::debug;

use super::{InFlight, Limits, Refusal, StreamPermit};
use crate::metrics::{ReasonLabels, meters};

/// Applies one part of the gateway's [`Limits`] to the services it wraps.
#[derive(Clone, Debug)]
pub struct LimitLayer {
    limits: Arc<Limits>,
    part: Part,
}

/// Which part of the limits a layer applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// `max_in_flight`, for every call but the exempt ones and the feed streams.
    InFlight,
    /// The call rates (per caller, per hall, global) and the callers' feed stream caps.
    Rates,
}

impl LimitLayer {
    /// The in-flight bound: the outermost layer.
    pub fn in_flight(limits: Arc<Limits>) -> LimitLayer {
        LimitLayer {
            limits,
            part: Part::InFlight,
        }
    }

    /// The rates and the stream caps: after the policy layer, whose identity they key on.
    pub fn rates(limits: Arc<Limits>) -> LimitLayer {
        LimitLayer {
            limits,
            part: Part::Rates,
        }
    }
}

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            inner,
            limits: self.limits.clone(),
            part: self.part,
        }
    }
}

/// A service wrapped by [`LimitLayer`].
#[derive(Clone, Debug)]
pub struct Limited<S> {
    inner: S,
    limits: Arc<Limits>,
    part: Part,
}

/// What a call is, for the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Health and reflection: never limited, so probes answer under any load.
    Exempt,
    /// A feed stream: capped per caller, not counted in flight once open.
    Stream,
    /// Everything else: rated and counted in flight.
    Call,
}

fn kind(path: &str) -> Kind {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        Kind::Exempt
    } else if matches!(
        path,
        "/yichuang.v1.CaseService/WindowFeed" | "/yichuang.v1.CaseService/WatchCase"
    ) {
        Kind::Stream
    } else {
        Kind::Call
    }
}

/// The caller's key and hall: its authenticated identity, or else its peer's IP address (a
/// reader of the public guide: each address is one caller, however many connections it opens).
fn identity<B>(request: &http::Request<B>) -> (String, Option<String>) {
    if let Some(caller) = request.extensions().get::<crate::auth::Caller>() {
        return (caller.name.clone(), caller.hall.clone());
    }
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        });
    match peer {
        // The address, not the connection: a client opening connection after connection is
        // still one caller.
        Some(addr) => (format!("peer {}", addr.ip()), None),
        None => ("unknown peer".to_string(), None),
    }
}

/// The answer to a refused call: its status, the retry hint in `retry-after` (whole seconds,
/// at least 1) and `grpc-retry-pushback-ms`, and the count in `yichuang_calls_refused_total`.
pub fn refused(refusal: &Refusal) -> http::Response<tonic::body::Body> {
    meters()
        .calls_refused
        .get_or_create(&ReasonLabels {
            reason: refusal.reason().to_string(),
        })
        .inc();
    let wait = refusal.retry_after();
    let mut status = tonic::Status::new(refusal.code(), refusal.to_string());
    let ms = wait.as_millis().max(1) as u64;
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let metadata = status.metadata_mut();
    metadata.insert("grpc-retry-pushback-ms", MetadataValue::from(ms));
    metadata.insert("retry-after", MetadataValue::from(secs.max(1)));
    debug!(reason = refusal.reason(), retry_ms = ms, "call refused");
    status.into_http()
}

impl<S, B> tower::Service<http::Request<B>> for Limited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let kind = kind(request.uri().path());
        if kind == Kind::Exempt {
            return Box::pin(self.inner.call(request));
        }
        let held = match (self.part, kind) {
            (Part::InFlight, Kind::Stream) => return Box::pin(self.inner.call(request)),
            (Part::InFlight, _) => self.limits.enter().map(Held::Call).inspect_err(|_| {
                // Shed before the layer that counts calls: counted here, as that one would.
                crate::observe::count_unserved(request.uri().path(), "UNAVAILABLE");
            }),
            (Part::Rates, _) => {
                let (caller, hall) = identity(&request);
                let checked = self.limits.check_rate(&caller, hall.as_deref());
                match (checked, kind) {
                    (Ok(()), Kind::Stream) => self.limits.open_stream(&caller).map(Held::Stream),
                    // Within its rates; its place in flight is the outer layer's.
                    (Ok(()), _) => return Box::pin(self.inner.call(request)),
                    (Err(refusal), _) => Err(refusal),
                }
            }
        };
        let held = match held {
            Ok(held) => held,
            Err(refusal) => {
                let response = refused(&refusal);
                return Box::pin(async move { Ok(response) });
            }
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| tonic::body::Body::new(Holding { body, _held: held })))
        })
    }
}

/// What an admitted call holds until its answer is sent.
#[derive(Debug)]
enum Held {
    Call(#[allow(dead_code)] InFlight),
    Stream(#[allow(dead_code)] StreamPermit),
}

/// A response body that gives back what its call held when it is done or dropped.
struct Holding {
    body: tonic::body::Body,
    _held: Held,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_reflection_are_exempt_and_feeds_are_streams() {
        assert_eq!(kind("/grpc.health.v1.Health/Check"), Kind::Exempt);
        assert_eq!(kind("/grpc.health.v1.Health/Watch"), Kind::Exempt);
        assert_eq!(
            kind("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Kind::Exempt
        );
        assert_eq!(kind("/yichuang.v1.CaseService/WindowFeed"), Kind::Stream);
        assert_eq!(kind("/yichuang.v1.CaseService/WatchCase"), Kind::Stream);
        assert_eq!(kind("/yichuang.v1.CaseService/Submit"), Kind::Call);
        assert_eq!(kind("/no.such.Service/Call"), Kind::Call);
    }

    #[test]
    fn a_refusal_carries_its_code_and_retry_hint() {
        let r = refused(&Refusal::Caller(std::time::Duration::from_millis(1500)));
        let h = r.headers();
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h["grpc-retry-pushback-ms"], "1500");
        let r = refused(&Refusal::Overloaded(4));
        assert_eq!(r.headers()["grpc-status"], "14");
    }
}
