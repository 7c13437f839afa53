//! gRPC over TLS (rustls): a client that trusts the server's certificate gets answers; a
//! plaintext client does not.

use crate::common::spawn_with;
use holdup::{
    config::TlsFiles,
    proto::{FastRequest, lab_client::LabClient},
};
use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
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
    // Plaintext HTTP/2 is answered with a TLS alert record (content type 21, version 3.x),
    // not with HTTP/2 and not by a closed port.
    let mut tcp = TcpStream::connect(app.addr)
        .await
        .expect("the port is open");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface sent");
    let mut record = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut record))
        .await
        .expect("the server answers within 5 s")
        .expect("the server answers before closing");
    assert_eq!(record[..2], [21, 3], "not a TLS alert: {record:?}");
    // So a plaintext gRPC call fails in the transport, with no status from the service.
    let mut plaintext = app.client.clone();
    let refused = plaintext
        .fast(FastRequest::default())
        .await
        .expect_err("plaintext call answered");
    assert!(
        std::error::Error::source(&refused).is_some_and(|e| e.is::<tonic::transport::Error>()),
        "not a transport failure: {refused:?}"
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

/// The banner's first call works as printed, over TLS too: `-plaintext` would fail there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banners_first_call_works_over_tls() {
    let Some(grpcurl) = crate::common::require_tool("grpcurl", "tests/tools.sh grpcurl") else {
        return;
    };
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());
    let args = crate::common::process::serve_args(&["--tls-cert", cert_arg, "--tls-key", key_arg]);
    let holdup = crate::common::process::start(&args, &[], None);
    let try_line = holdup.banner.last().expect("a try line").clone();
    let _serve = crate::common::process::KillOnDrop(Some(holdup.child));
    let command = try_line
        .strip_prefix("try: grpcurl ")
        .expect("the try line is a grpcurl call")
        .replace("\"work_ms\":200", "\"work_ms\":1");
    assert!(
        command.contains(&format!("-cacert {cert_arg}")),
        "{try_line}"
    );
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("\"$0\" -max-time 10 {command}"))
        .arg(&grpcurl)
        .output()
        .expect("grpcurl runs");
    assert!(
        output.status.success(),
        "{try_line}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"digest\""));
}
