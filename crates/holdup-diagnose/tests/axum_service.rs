//! The layer on an axum router: any tower HTTP service gets the diagnosis, not only tonic.
//! A real axum server on a loopback port, called by a real HTTP client.

use std::time::{Duration, Instant};

use axum::{Router, routing::get};
use holdup_diagnose::DiagnoseLayer;
use tokio::net::TcpListener;

/// Spins the CPU for `d`: the handler computes.
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

async fn serve() -> String {
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/spin",
            get(|| async {
                spin(Duration::from_millis(100));
                "spun"
            }),
        )
        .route(
            "/wait",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                "waited"
            }),
        )
        .layer(DiagnoseLayer::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn diagnosis(url: &str) -> String {
    let response = reqwest::get(url).await.expect("the server answers");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    assert_eq!(
        response.headers()["x-trace-id"].len(),
        32,
        "every request has an id"
    );
    response.headers()["holdup-diagnosis"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn verdict(diagnosis: &str) -> &str {
    diagnosis
        .split(' ')
        .find_map(|kv| kv.strip_prefix("verdict="))
        .unwrap_or_else(|| panic!("no verdict in {diagnosis}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_gets_its_measured_verdict() {
    let base = serve().await;
    let fast = diagnosis(&format!("{base}/fast")).await;
    assert_eq!(verdict(&fast), "none", "{fast}");
    // The layer reads a reply's first frames ahead of its head: the body must still arrive.
    let body = reqwest::get(format!("{base}/spin")).await.unwrap();
    assert_eq!(body.content_length(), Some(4), "{:?}", body.headers());
    assert_eq!(body.text().await.unwrap(), "spun");
    let spun = diagnosis(&format!("{base}/spin")).await;
    assert_eq!(verdict(&spun), "own-cpu", "{spun}");
    let waited = diagnosis(&format!("{base}/wait")).await;
    assert!(
        ["waiting", "timer"].contains(&verdict(&waited)),
        "an awaited sleep is idle time, not CPU: {waited}"
    );
}

/// Serves, behind `layer`, `/stream`: an ordinary streaming body (no trailers of its own) of
/// four chunks 40 ms apart. Returns its response, read raw over HTTP/1.1 by a client that
/// asked for trailers (`TE: trailers`), as its head and what follows the last chunk, in lower
/// case.
async fn stream_through(layer: DiagnoseLayer) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    let app = Router::new()
        .route(
            "/stream",
            get(|| async {
                let chunks = tokio_stream::iter(0..4).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    Ok::<_, std::io::Error>(format!("chunk {i}\n"))
                });
                axum::body::Body::from_stream(chunks)
            }),
        )
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\nte: trailers\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("the response ends")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).to_lowercase();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let (_, trailers) = body
        .split_once("\r\n0\r\n")
        .unwrap_or_else(|| panic!("a chunked body's last chunk: {body:?}"));
    (head.to_owned(), trailers.to_owned())
}

/// The `holdup-diagnosis` trailer: the whole call's, with its total of at least 150 ms.
fn whole_call_trailer(trailers: &str) -> &str {
    let trailer = trailers
        .lines()
        .find_map(|line| line.strip_prefix("holdup-diagnosis: "))
        .unwrap_or_else(|| panic!("no holdup-diagnosis trailer: {trailers:?}"));
    assert!(!trailer.contains("partial"), "the whole call: {trailer}");
    let total: f64 = trailer
        .split(' ')
        .find_map(|kv| kv.strip_prefix("total="))
        .and_then(|ms| ms.trim_end_matches("ms").parse().ok())
        .unwrap_or_else(|| panic!("no total in {trailer}"));
    assert!(total >= 150.0, "four chunks 40 ms apart: {trailer}");
    trailer
}

/// An ordinary streaming body: its head says it is partial and declares the trailer, and the
/// whole call's diagnosis comes in trailers the layer adds, which hyper sends over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_streaming_body_gets_its_diagnosis_in_a_trailer() {
    let (head, trailers) = stream_through(DiagnoseLayer::new()).await;
    assert!(head.contains("holdup-diagnosis: verdict="), "{head}");
    assert!(head.contains("partial=head"), "{head}");
    assert!(head.contains("trailer: holdup-diagnosis"), "{head}");
    assert!(head.contains("x-trace-id: "), "{head}");
    whole_call_trailer(&trailers);
}

/// With `ResponseHeaders::WhenLate` a stream's head has neither header (it cannot know yet
/// whether the call will be late); a late one's trailers have the diagnosis and the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_headers_when_late_a_late_streams_trailers_have_them() {
    let (head, trailers) = stream_through(when_late(Duration::from_millis(1))).await;
    assert!(!head.contains("holdup-diagnosis: "), "{head}");
    assert!(!head.contains("x-trace-id: "), "{head}");
    assert!(
        head.contains("trailer: holdup-diagnosis, x-trace-id"),
        "both declared: {head}"
    );
    whole_call_trailer(&trailers);
    let id = trailers
        .lines()
        .find_map(|line| line.strip_prefix("x-trace-id: "))
        .unwrap_or_else(|| panic!("no x-trace-id trailer: {trailers:?}"));
    assert_eq!(id.len(), 32, "{id}");
}

/// With `ResponseHeaders::WhenLate` and a `detail_from` no call reaches, a stream's head and
/// trailers have neither header (the head still declares them: HTTP/1.1 sends no trailer it
/// did not declare, and the head cannot know).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_headers_when_late_a_quick_streams_trailers_have_neither() {
    let (head, trailers) = stream_through(when_late(Duration::from_secs(3600))).await;
    assert!(!head.contains("holdup-diagnosis: "), "{head}");
    assert!(!head.contains("x-trace-id: "), "{head}");
    assert!(!trailers.contains("holdup-diagnosis"), "{trailers:?}");
    assert!(!trailers.contains("x-trace-id"), "{trailers:?}");
}

/// The layer with `ResponseHeaders::WhenLate` from `detail_from`.
fn when_late(detail_from: Duration) -> DiagnoseLayer {
    let config = holdup_diagnose::EngineConfig {
        detail_from,
        ..Default::default()
    };
    DiagnoseLayer::new()
        .with_config(config.response_headers(holdup_diagnose::ResponseHeaders::WhenLate))
}
