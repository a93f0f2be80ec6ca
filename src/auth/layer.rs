//! The policy layer: in front of every gRPC service of both listeners, before anything else
//! reads the request. It establishes the caller ([`super::identity`]), checks the method's
//! permission against the role table ([`super::Policy`]), and either puts the [`Caller`] into
//! the request's extensions for the handlers, or answers `UNAUTHENTICATED` /
//! `PERMISSION_DENIED` itself, with an audit record and a metric. Health checks pass untouched
//! (probes carry no identity), and so do the public item guide's pages where it is served.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{Caller, Guard, IdentityError, Need, Refusal, method_name, need_of};

/// Wraps a gRPC server's services with the policy.
#[derive(Clone)]
pub struct PolicyLayer {
    guard: Guard,
    console: bool,
    guide: bool,
}

impl PolicyLayer {
    pub fn new(guard: Guard) -> PolicyLayer {
        PolicyLayer {
            guard,
            console: false,
            guide: false,
        }
    }

    /// With `serves` true, the policy of a listener that also serves the public item guide:
    /// its pages (`/guide…`) pass without an identity ([`crate::guide`]). Elsewhere they are
    /// paths like any other the listener does not serve.
    pub fn with_guide(mut self, serves: bool) -> PolicyLayer {
        self.guide = serves;
        self
    }

    /// The policy of a listener that also serves the operations console: its pages
    /// (`/console…`) go to the console, which identifies their callers itself. Elsewhere they
    /// are paths like any other the listener does not serve.
    pub fn with_console(guard: Guard) -> PolicyLayer {
        PolicyLayer {
            guard,
            console: true,
            guide: false,
        }
    }
}

impl<S> tower::Layer<S> for PolicyLayer {
    type Service = Policed<S>;

    fn layer(&self, inner: S) -> Policed<S> {
        Policed {
            inner,
            guard: self.guard.clone(),
            console: self.console,
            guide: self.guide,
        }
    }
}

/// A service behind [`PolicyLayer`].
#[derive(Clone)]
pub struct Policed<S> {
    inner: S,
    guard: Guard,
    console: bool,
    guide: bool,
}

impl<S, B, R> tower::Service<http::Request<B>> for Policed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was not polled ready stays; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_string();
        let permission = match need_of(&path) {
            Need::Nothing => return Box::pin(inner.call(request)),
            Need::Page if self.console => return Box::pin(inner.call(request)),
            Need::Public if self.guide => return Box::pin(inner.call(request)),
            Need::Permission(p) => Some(p),
            Need::Identity | Need::Page | Need::Public => None,
        };
        let guard = self.guard.clone();
        let identified = identify(&guard, &request);
        Box::pin(async move {
            let method = method_name(&path);
            let checked = identified
                .map_err(|e| Refusal::Unauthenticated(e.to_string()))
                .and_then(|caller| match permission {
                    Some(p) => guard.policy.allows(&caller, p).map(|()| caller),
                    // Not served here: tonic answers UNIMPLEMENTED to an identified caller.
                    None => Ok(caller),
                });
            match checked {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(refusal) => {
                    let caller = identify(&guard, &request).ok();
                    guard
                        .auditor
                        .refused(caller.as_ref(), &method, &path, &refusal)
                        .await;
                    Ok(refusal.status().into_http())
                }
            }
        })
    }
}

/// The caller of `request`: its client certificate, else its bearer token; on a plaintext
/// development gateway a caller with neither is [`Caller::development`].
pub fn identify<B>(guard: &Guard, request: &http::Request<B>) -> Result<Caller, IdentityError> {
    identify_parts(guard, request.extensions(), request.headers())
}

/// [`identify`] from a request's parts: its extensions (the TLS peer) and headers.
pub fn identify_parts(
    guard: &Guard,
    extensions: &http::Extensions,
    headers: &http::HeaderMap,
) -> Result<Caller, IdentityError> {
    let certificate = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .and_then(|certs| certs.first().cloned());
    if let Some(der) = certificate {
        return guard.authenticator.from_certificate(der.as_ref());
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    IdentityError::Token("the authorization header is not `Bearer <token>`".into())
                })
        })
        .transpose()?;
    match bearer {
        Some(token) => guard.authenticator.from_token(token),
        None if guard.development => Ok(Caller::development()),
        None => Err(IdentityError::Missing),
    }
}
