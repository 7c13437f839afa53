//! gRPC over TLS (rustls): a client that trusts the server's certificate gets answers; a
//! plaintext client does not.

use crate::common::spawn_with;
use holdup::{
    config::TlsFiles,
    proto::{FastRequest, lab_client::LabClient},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    let app = spawn_with(|c| c.tls = Some(files.clone())).await;
    let mut plaintext = app.client.clone();
    assert!(
        plaintext.fast(FastRequest::default()).await.is_err(),
        "plaintext call answered"
    );

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake");
    let reply = LabClient::new(channel)
        .fast(FastRequest {
            message: "over tls".into(),
        })
        .await
        .expect("Fast over TLS")
        .into_inner();
    assert_eq!(reply.message, "over tls");
    app.shutdown().await.unwrap();
}
