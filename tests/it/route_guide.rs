//! The diagnosis on streams: gRPC's RouteGuide (`examples/route_guide.rs`, included as it is),
//! called through grpcurl `-v` as a user would, one call of each streaming kind.
//!
//! A call that goes on after its response head says `partial=head` in its header and carries
//! the whole call's diagnosis in its `holdup-diagnosis` trailer. A client-streaming call
//! answers once, at its end: its header is already the whole call.

use std::{io::Write, net::SocketAddr, process::Stdio};

#[allow(dead_code)] // the example's `main` and flags are not used here
#[path = "../../examples/route_guide.rs"]
mod example;

/// A RouteGuide on a random loopback port, stopped when dropped.
struct Guide {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Guide {
    crate::common::init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        example::serve(listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("route guide serves");
    });
    Guide { addr, _stop: stop }
}

/// What `grpcurl -v` printed: the headers block, the trailers block.
struct Verbose {
    headers: String,
    trailers: String,
    stdout: String,
}

impl Verbose {
    /// The `holdup-diagnosis` line of `block`, without its name.
    fn diagnosis<'a>(&self, block: &'a str) -> Option<&'a str> {
        block
            .lines()
            .find_map(|l| l.strip_prefix("holdup-diagnosis: "))
    }

    fn ms(value: &str, key: &str) -> f64 {
        value
            .split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim_end_matches("ms").parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {value}"))
    }
}

/// Runs `grpcurl -plaintext -v -d @ ADDR METHOD` with `input` on its standard input.
fn grpcurl(addr: SocketAddr, method: &str, input: &str) -> Option<Verbose> {
    let grpcurl = crate::common::require_tool("grpcurl", "tests/tools.sh grpcurl")?;
    let mut child = std::process::Command::new(grpcurl)
        .args(["-plaintext", "-v", "-max-time", "20", "-d", "@"])
        .arg(addr.to_string())
        .arg(format!("routeguide.RouteGuide/{method}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grpcurl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{method}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let block = |title: &str| {
        stdout
            .split(title)
            .nth(1)
            .map(|rest| rest.split("\n\n").next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    Some(Verbose {
        headers: block("Response headers received:"),
        trailers: block("Response trailers received:"),
        stdout,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_is_diagnosed_whole_in_its_trailers() {
    let guide = start().await;
    let addr = guide.addr;
    // Four features (a 2 x 2 corner of the grid), one per CURSOR_PACE.
    let rect =
        r#"{"lo":{"latitude":0,"longitude":0},"hi":{"latitude":10000000,"longitude":10000000}}"#;
    let Some(out) = tokio::task::spawn_blocking(move || grpcurl(addr, "ListFeatures", rect))
        .await
        .unwrap()
    else {
        return;
    };
    assert_eq!(out.stdout.matches("\"name\"").count(), 4, "{}", out.stdout);
    let head = out.diagnosis(&out.headers).expect("a header diagnosis");
    assert!(head.ends_with(" partial=head"), "{head}");
    let whole = out
        .diagnosis(&out.trailers)
        .unwrap_or_else(|| panic!("no trailer diagnosis:\n{}", out.stdout));
    assert!(!whole.contains("partial"), "{whole}");
    let pace = example::CURSOR_PACE.as_secs_f64() * 1e3;
    assert!(Verbose::ms(whole, "total") >= 3.5 * pace, "{whole}");
    assert!(
        Verbose::ms(whole, "idle") >= 3.0 * pace,
        "the call waited for its cursor: {whole}"
    );
    assert!(!whole.starts_with("verdict=none"), "{whole}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidi_stream_is_diagnosed_whole_in_its_trailers() {
    let guide = start().await;
    let addr = guide.addr;
    let notes = r#"{"location":{"latitude":1,"longitude":1},"message":"a"}
{"location":{"latitude":1,"longitude":1},"message":"b"}"#;
    let Some(out) = tokio::task::spawn_blocking(move || grpcurl(addr, "RouteChat", notes))
        .await
        .unwrap()
    else {
        return;
    };
    // "a"; then "a" and "b" at the same place.
    assert_eq!(
        out.stdout.matches("\"message\"").count(),
        3,
        "{}",
        out.stdout
    );
    let head = out.diagnosis(&out.headers).expect("a header diagnosis");
    assert!(head.ends_with(" partial=head"), "{head}");
    let whole = out
        .diagnosis(&out.trailers)
        .unwrap_or_else(|| panic!("no trailer diagnosis:\n{}", out.stdout));
    assert!(!whole.contains("partial"), "{whole}");
    assert!(
        Verbose::ms(whole, "total") >= Verbose::ms(head, "total"),
        "{head} / {whole}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_answers_whole_at_its_head() {
    let guide = start().await;
    let addr = guide.addr;
    let points = r#"{"latitude":0,"longitude":0}
{"latitude":10000000,"longitude":0}
{"latitude":5,"longitude":5}"#;
    let Some(out) = tokio::task::spawn_blocking(move || grpcurl(addr, "RecordRoute", points))
        .await
        .unwrap()
    else {
        return;
    };
    assert!(out.stdout.contains("\"pointCount\": 3"), "{}", out.stdout);
    assert!(out.stdout.contains("\"featureCount\": 2"), "{}", out.stdout);
    let head = out.diagnosis(&out.headers).expect("a header diagnosis");
    assert!(!head.contains("partial"), "answered at the end: {head}");
    assert!(head.starts_with("verdict="), "{head}");
}
