//! The empty `CaseService` the benchmarks measure the gateway against: it decodes the same
//! requests and answers at once, so the gap to it is the gateway's own work. Included by path
//! (`#[path = "support/empty.rs"] mod empty;`).

use tonic::{Request, Response, Status};
use yichuang::proto::v1::case_service_server::{CaseService, CaseServiceServer};
use yichuang::proto::v1::*;

/// The baseline: a CaseService that decodes the same requests and answers at once.
pub struct Empty;

#[tonic::async_trait]
impl CaseService for Empty {
    async fn pre_check(
        &self,
        _: Request<PreCheckRequest>,
    ) -> Result<Response<PreCheckResponse>, Status> {
        Ok(Response::new(PreCheckResponse::default()))
    }
    async fn submit(&self, _: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        Ok(Response::new(SubmitResponse::default()))
    }
    async fn get_case(
        &self,
        _: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        Ok(Response::new(GetCaseResponse::default()))
    }
    async fn list_cases(
        &self,
        _: Request<ListCasesRequest>,
    ) -> Result<Response<ListCasesResponse>, Status> {
        Ok(Response::new(ListCasesResponse::default()))
    }
    async fn deliver(
        &self,
        _: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        Ok(Response::new(DeliverResponse::default()))
    }
    async fn evaluate(
        &self,
        _: Request<yichuang::proto::v1::EvaluateRequest>,
    ) -> Result<Response<yichuang::proto::v1::EvaluateResponse>, Status> {
        Ok(Response::new(
            yichuang::proto::v1::EvaluateResponse::default(),
        ))
    }
    async fn list_not_accepted(
        &self,
        _: Request<ListNotAcceptedRequest>,
    ) -> Result<Response<ListNotAcceptedResponse>, Status> {
        Ok(Response::new(ListNotAcceptedResponse::default()))
    }
    async fn supplement(
        &self,
        _: Request<yichuang::proto::v1::SupplementRequest>,
    ) -> Result<Response<yichuang::proto::v1::SupplementResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    // The feeds are not measured here: an empty stream each.
    type WindowFeedStream = tokio_stream::wrappers::ReceiverStream<Result<FeedEvent, Status>>;
    type WatchCaseStream = tokio_stream::wrappers::ReceiverStream<Result<FeedEvent, Status>>;
    async fn window_feed(
        &self,
        _: Request<WindowFeedRequest>,
    ) -> Result<Response<Self::WindowFeedStream>, Status> {
        let (_, rx) = tokio::sync::mpsc::channel(1);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
    async fn watch_case(
        &self,
        _: Request<WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        let (_, rx) = tokio::sync::mpsc::channel(1);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

/// The empty handler on a free local port, in plaintext or (`tls`) over TLS with client
/// certificates as the gateway serves; its address.
pub async fn start_empty(tls: Option<tonic::transport::ServerTlsConfig>) -> std::net::SocketAddr {
    let (listener, _) = testkit::server::listener().await;
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).expect("TLS settings");
    }
    tokio::spawn(async move {
        builder
            .add_service(CaseServiceServer::new(Empty))
            .serve_with_incoming(yichuang::api::incoming(listener))
            .await
            .unwrap();
    });
    addr
}
