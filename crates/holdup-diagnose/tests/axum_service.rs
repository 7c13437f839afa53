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
