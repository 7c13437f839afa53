//! What `tests/tonic_service.rs` and `tests/otel_span.rs` share: gRPC health served by tonic
//! with the engine's layer on a random loopback port, and tonic's own client for it.

use std::net::SocketAddr;

use holdup_diagnose::DiagnoseLayer;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic_health::{ServingStatus, pb::health_client::HealthClient, server::HealthReporter};

/// Serves gRPC health with `layer` on a random loopback port. The reporter sets what `Watch`
/// streams: keep it for as long as the server is called.
pub async fn serve_with(layer: DiagnoseLayer) -> (SocketAddr, HealthReporter) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (addr, reporter)
}

pub async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}
