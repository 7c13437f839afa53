//! What every connection holdup accepts must have, and what no client may do to it: Nagle's
//! algorithm off; a cap on connections; no reader that never reads can pin memory for long;
//! silent, half-open and idle connections closed on every listener; an accept loop that backs
//! off at the descriptor limit instead of spinning; gzip; 415 for what is not gRPC.
//!
//! The hostile clients here are raw HTTP/2 (the `h2` crate: a zero receive window, streams
//! opened and left) and plain sockets, on loopback, bounded in count and time.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use holdup::proto::FastRequest;
use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

use crate::common::{
    client,
    process::{self, KillOnDrop},
    spawn_app, spawn_with,
};

/// Fresh connections tried; with Nagle on, a few of 40 first calls stall (2 of 20 when measured).
const FRESH_CONNECTIONS: usize = 40;
/// Well under the 40 ms delayed-ACK stall, far above a healthy first call (about 1 ms).
const STALL: Duration = Duration::from_millis(30);

/// Rounds tried: a round with Nagle on stalls nearly always (2 of 20 calls when measured), while
/// a loaded machine (other builds on two cores) can slow one round's calls past the bound; a
/// clean round among a few tells the two apart.
const ROUNDS: usize = 3;

/// How many of `FRESH_CONNECTIONS` first calls took `STALL` or more, and the slowest.
async fn stalled_first_calls(addr: std::net::SocketAddr) -> (usize, Duration) {
    let mut slowest = Duration::ZERO;
    let mut stalled = 0;
    for _ in 0..FRESH_CONNECTIONS {
        let mut fresh = client(addr).await;
        let started = Instant::now();
        fresh
            .fast(FastRequest {
                message: "first".into(),
            })
            .await
            .expect("Fast answers");
        let took = started.elapsed();
        slowest = slowest.max(took);
        stalled += usize::from(took >= STALL);
    }
    (stalled, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_calls_on_fresh_connections_do_not_wait_for_a_delayed_ack() {
    let _serial = crate::common::serial().await;
    let app = spawn_app().await;
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let round = stalled_first_calls(app.addr).await;
        rounds.push(round);
        if round.0 == 0 {
            break;
        }
    }
    assert!(
        rounds.iter().any(|(stalled, _)| *stalled == 0),
        "in every round some of {FRESH_CONNECTIONS} first calls took {STALL:?} or more \
         ((stalled, slowest) per round: {rounds:?}): is TCP_NODELAY set on accepted connections?"
    );
    app.shutdown().await.expect("clean shutdown");
}

/// A raw HTTP/2 connection: its request handle and the task driving it, which ends when
/// the server closes the connection.
struct RawH2 {
    send: h2::client::SendRequest<Bytes>,
    driver: JoinHandle<Result<(), h2::Error>>,
}

/// Connects with `window` as the initial stream window the client grants the server:
/// 0 is a reader that never reads.
async fn raw_h2(addr: SocketAddr, window: u32) -> Result<RawH2, h2::Error> {
    let tcp = TcpStream::connect(addr).await.expect("TCP connects");
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await?;
    Ok(RawH2 {
        send,
        driver: tokio::spawn(connection),
    })
}

/// A gRPC request's headers, with `content_type` (none: the header left out).
fn grpc_request(
    addr: SocketAddr,
    method: &str,
    content_type: Option<&str>,
) -> http::request::Builder {
    let mut request = http::Request::post(format!("http://{addr}/holdup.v1.Lab/{method}"))
        .header("te", "trailers");
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request
}

/// One uncompressed gRPC message frame.
fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&body);
    Bytes::from(frame)
}

/// Sends a whole unary request and returns the response (headers) future.
async fn send_unary(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    body: Bytes,
) -> Result<h2::client::ResponseFuture, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request, false)?;
    stream.send_data(body, true)?;
    Ok(response)
}

/// One whole unary call `Fast` on a raw connection; the reply's headers.
async fn raw_fast(raw: &RawH2, request: http::request::Builder) -> http::Response<h2::RecvStream> {
    let request = request.body(()).expect("request");
    send_unary(&raw.send, request, grpc_frame(&FastRequest::default()))
        .await
        .expect("sent")
        .await
        .expect("answered")
}

/// Waits up to `limit` for the server to close a raw connection; how long it took.
async fn closed_within(
    driver: JoinHandle<Result<(), h2::Error>>,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, driver)
        .await
        .ok()
        .map(|_| started.elapsed())
}

/// Connections the stalled-reader attack opens (one more is refused at the cap).
const STALLED_CONNECTIONS: usize = 4;
/// Streams the attack opens per connection: the server's cap in this test.
const STALLED_STREAMS: u32 = 100;
/// Memory one stalled stream may pin, as this test sees it. 400 streams grow a debug build's
/// RSS by 12-15 MiB, 31-37 KB a stream, of which mimalloc's step-wise growth (segments of
/// a few MiB) makes several KB: measured 31.5 KB three times on 3a21709 and 36.9 KB once on
/// main since, above the 32 KiB this bound was; the per-stream cost itself is the guide's
/// (6.9 KiB over 10 000 streams, docs/reliability.md, "Transport limits"). 48 KiB leaves that noise room and still
/// fails a stream that pins its replies' worth several times over.
const STALLED_STREAM_BOUND: u64 = 48 * 1024;

/// Issue 11, item 1: a client that grants the server no window (SETTINGS_INITIAL_WINDOW_SIZE
/// = 0) and opens every stream it may, never reading a reply. Its connections are capped,
/// the memory they pin stays within streams × the per-stream bound, the server closes them
/// once a reply has waited --reply-send-timeout-ms, and Fast answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_are_capped_bounded_and_closed() {
    let _serial = crate::common::serial().await;
    let streams = STALLED_STREAMS.to_string();
    let connections = STALLED_CONNECTIONS.to_string();
    let (holdup, addr) = process::serve(
        &[
            "--max-connections",
            &connections,
            "--max-concurrent-streams",
            &streams,
            "--reply-send-timeout-ms",
            "2000",
        ],
        &[],
    );
    let pid = holdup.pid();
    let _guard = KillOnDrop(Some(holdup.child));
    let mut warm = client(addr).await;
    warm.fast(FastRequest::default())
        .await
        .expect("Fast answers");
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = process::rss_bytes(pid);

    let mut attackers = Vec::new();
    for _ in 0..STALLED_CONNECTIONS {
        let raw = raw_h2(addr, 0).await.expect("HTTP/2 handshake");
        let mut replies = Vec::new();
        for _ in 0..STALLED_STREAMS {
            let request = grpc_request(addr, "Fast", Some("application/grpc"))
                .body(())
                .expect("request");
            let body = grpc_frame(&FastRequest {
                message: "never read".into(),
            });
            replies.push(
                send_unary(&raw.send, request, body)
                    .await
                    .expect("stream opens"),
            );
        }
        let mut held = Vec::new();
        for reply in replies {
            // The headers need no window: the server has handled the call and holds its reply.
            // The reply is kept (dropping it would reset the stream) and never read.
            let reply = reply.await.expect("reply headers");
            assert_eq!(reply.status(), 200);
            held.push(reply);
        }
        attackers.push((raw, held));
    }
    let rss_peak = process::rss_bytes(pid);

    // One connection past the cap is closed at once.
    let refused = match raw_h2(addr, 0).await {
        Err(_) => true,
        Ok(raw) => closed_within(raw.driver, Duration::from_secs(2))
            .await
            .is_some(),
    };
    assert!(refused, "a connection past --max-connections was kept open");

    let started = Instant::now();
    for (raw, _held) in attackers {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        assert!(
            closed_within(raw.driver, left).await.is_some(),
            "a connection whose replies nobody reads was still open after {:?}",
            started.elapsed()
        );
    }
    let closed_after = started.elapsed();
    let streams_held = u64::from(STALLED_STREAMS) * STALLED_CONNECTIONS as u64;
    let grew = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "stalled readers: {streams_held} streams, RSS {} -> {} KiB (+{} B per stream); closed {:?} after the last",
        rss_before / 1024,
        rss_peak / 1024,
        grew / streams_held,
        closed_after
    );
    assert!(
        grew <= streams_held * STALLED_STREAM_BOUND,
        "RSS grew {grew} B for {streams_held} stalled streams, over {STALLED_STREAM_BOUND} B each"
    );

    let mut after = client(addr).await;
    after
        .fast(FastRequest::default())
        .await
        .expect("Fast answers after the attack");
}

/// Reads until the server closes the socket (EOF or reset); how long that took, if within
/// `limit`.
async fn socket_closed_within(socket: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// Issue 11, item 2: connections that never send a preface, or send half an HTTP/1 request,
/// are closed within the handshake timeout on every listener (gRPC, /metrics, simulator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_open_connections_are_closed_on_every_listener() {
    let app = spawn_with(|c| c.connections.handshake_timeout = Duration::from_millis(300)).await;
    let simulator: SocketAddr = app
        .upstream_url
        .trim_start_matches("http://")
        .parse()
        .expect("simulator address");
    for (listener, addr) in [
        ("gRPC", app.addr),
        ("metrics", app.metrics_addr),
        ("simulator", simulator),
    ] {
        let mut silent = TcpStream::connect(addr).await.expect("connects");
        let mut half = TcpStream::connect(addr).await.expect("connects");
        half.write_all(b"GET /metrics HTTP/1.1\r\nHost: holdup\r\n")
            .await
            .expect("writes");
        for (what, socket) in [("silent", &mut silent), ("half-sent headers", &mut half)] {
            let closed = socket_closed_within(socket, Duration::from_secs(5)).await;
            assert!(
                closed.is_some(),
                "{listener}: a {what} connection was still open after 5 s (handshake timeout 300 ms)"
            );
            eprintln!("{listener}: {what} connection closed after {closed:?}");
        }
    }
    assert!(
        app.sample(
            "holdup_transport_connections_closed_total{listener=\"grpc\",reason=\"handshake\"}"
        )
        .await
            >= 1.0,
        "{}",
        app.scrape().await
    );
    app.shutdown().await.expect("clean shutdown");
}

/// Issue 11, item 2: a connection with nothing in flight is closed after the idle timeout; one
/// with a call in flight longer than that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let idle = Duration::from_millis(500);
    let app = spawn_with(|c| c.connections.idle_timeout = idle).await;

    let raw = raw_h2(app.addr, 65_535).await.expect("handshake");
    let reply = raw_fast(
        &raw,
        grpc_request(app.addr, "Fast", Some("application/grpc")),
    )
    .await;
    let mut body = reply.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("reply data");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let closed = closed_within(raw.driver, Duration::from_secs(5)).await;
    eprintln!("idle connection closed {closed:?} after its last reply (idle timeout {idle:?})");
    let closed = closed.expect("an idle connection was still open after 5 s");
    assert!(
        closed >= idle / 2,
        "closed after {closed:?}, before it was idle for {idle:?}"
    );

    let mut busy = client(app.addr).await;
    busy.sleep(holdup::proto::SleepRequest {
        mode: holdup::proto::SleepMode::Async.into(),
        duration_ms: 1_500,
    })
    .await
    .expect("a call longer than the idle timeout keeps its connection");
    app.shutdown().await.expect("clean shutdown");
}

/// Issue 11, item 2: at the descriptor limit the accept loop backs off (counted, a few times a
/// second at most) instead of retrying at once, and accepts again once descriptors free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_backs_off_at_the_descriptor_limit() {
    let _serial = crate::common::serial().await;
    let holdup = process::start(
        &process::serve_args(&[
            "--max-connections",
            "10000",
            "--handshake-timeout-ms",
            "20000",
        ]),
        &[],
        Some(64),
    );
    let addr = holdup.addr_after("holdup listening on ");
    let metrics = holdup.addr_after("metrics at ");
    let pid = holdup.pid();
    let _guard = KillOnDrop(Some(holdup.child));

    // Hold connections until the server cannot accept another: the kernel still completes
    // the handshakes (the backlog), so keep going past the limit.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(
            TcpStream::connect(addr)
                .await
                .expect("kernel accepts into the backlog"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = process::cpu_time(pid);
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let cpu = process::cpu_time(pid).saturating_sub(cpu_before);
    let share = cpu.as_secs_f64() / window.as_secs_f64();
    eprintln!(
        "CPU at the descriptor limit: {cpu:?} in {window:?} ({:.0} % of a core)",
        share * 100.0
    );

    drop(held);
    // Accepting resumes: what was in the backlog is served or closed, then a new call answers.
    let mut fresh = tokio::time::timeout(Duration::from_secs(10), client(addr))
        .await
        .expect("a new connection is accepted once descriptors free up");
    fresh
        .fast(FastRequest::default())
        .await
        .expect("Fast answers after the exhaustion");
    let page = crate::common::scrape(metrics).await;
    let backoffs = crate::common::sample(
        &page,
        "holdup_transport_accept_backoffs_total{listener=\"grpc\"}",
    );
    assert!(backoffs >= 1.0, "no accept back-off counted: {page}");
    assert!(
        share < 0.5,
        "the server used {:.0} % of a core at the descriptor limit: is the accept loop spinning?",
        share * 100.0
    );
}

/// Issue 11, item 4: gzip on requests, and on replies when the client accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_requests_are_accepted_and_replies_compressed() {
    use tonic::codec::CompressionEncoding::{Deflate, Gzip};
    let app = spawn_app().await;
    for encoding in [Gzip, Deflate] {
        let mut compressing = client(app.addr)
            .await
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let reply = compressing
            .fast(FastRequest {
                message: "squeeze me".repeat(50),
            })
            .await
            .unwrap_or_else(|e| panic!("a {encoding:?} request is served: {e}"));
        assert_eq!(reply.get_ref().message, "squeeze me".repeat(50));
    }

    // The reply itself is compressed when the client says it accepts gzip.
    let raw = raw_h2(app.addr, 65_535).await.expect("handshake");
    let request = grpc_request(app.addr, "Fast", Some("application/grpc"))
        .header("grpc-accept-encoding", "gzip");
    let reply = raw_fast(&raw, request).await;
    assert_eq!(
        reply.headers().get("grpc-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..]),
        "{:?}",
        reply.headers()
    );
    app.shutdown().await.expect("clean shutdown");
}

/// Issue 11, item 5: a content-type that is not gRPC gets HTTP 415; gRPC's own forms do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_grpc_content_type_is_refused_with_415() {
    let app = spawn_app().await;
    let raw = raw_h2(app.addr, 65_535).await.expect("handshake");
    for (content_type, status) in [
        (Some("application/json"), 415),
        (Some("text/plain"), 415),
        (None, 415),
        (Some("application/grpc"), 200),
        (Some("application/grpc+proto"), 200),
    ] {
        let reply = raw_fast(&raw, grpc_request(app.addr, "Fast", content_type)).await;
        assert_eq!(
            reply.status().as_u16(),
            status,
            "content-type {content_type:?}"
        );
    }
    app.shutdown().await.expect("clean shutdown");
}

/// The gRPC status a raw reply carries: in its headers (trailers-only) or in its trailers.
async fn grpc_status(reply: http::Response<h2::RecvStream>) -> Option<String> {
    let text = |v: &http::HeaderValue| v.to_str().ok().map(str::to_owned);
    if let Some(status) = reply.headers().get("grpc-status") {
        return text(status);
    }
    let mut body = reply.into_body();
    while let Some(data) = body.data().await {
        let _ = data.ok()?;
    }
    body.trailers()
        .await
        .ok()??
        .get("grpc-status")
        .and_then(text)
}

/// A passed deadline is answered DEADLINE_EXCEEDED by the server itself (as the gRPC spec
/// asks), never CANCELLED. tonic's transport runs a timer of its own on `grpc-timeout` and
/// answers CANCELLED "Timeout expired" when it fires first; the Lab's timer must not be the
/// later of the two. A raw HTTP/2 client sends the header and never enforces it, so what it
/// reads is the server's answer; many calls at once, because the race is decided per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_is_answered_deadline_exceeded_by_the_server() {
    use holdup::proto::{SleepMode, SleepRequest};
    const CALLS: u64 = 40;
    let app = spawn_app().await;
    let raw = raw_h2(app.addr, 65_535).await.expect("handshake");
    let body = grpc_frame(&SleepRequest {
        mode: SleepMode::Async.into(),
        duration_ms: 5_000,
    });
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..CALLS {
        let request = grpc_request(app.addr, "Sleep", Some("application/grpc"))
            .header("grpc-timeout", format!("{}m", 50 + n))
            .body(())
            .expect("request");
        let (send, body) = (raw.send.clone(), body.clone());
        calls.spawn(async move {
            let reply = send_unary(&send, request, body).await.ok()?.await.ok()?;
            grpc_status(reply).await
        });
    }
    let statuses = calls.join_all().await;
    let not_deadline: Vec<_> = statuses
        .iter()
        .filter(|s| s.as_deref() != Some("4"))
        .collect();
    assert!(
        not_deadline.is_empty(),
        "{} of {CALLS} calls past their deadline were not answered DEADLINE_EXCEEDED (4): \
         {not_deadline:?}",
        not_deadline.len()
    );
    app.shutdown().await.expect("clean shutdown");
}

/// The attack of issue 11 item 1 at full size, for the numbers in docs/reliability.md and the issue
/// note; not part of the suite (it runs for a minute and loads the machine). Run with
/// `cargo test --test it transport::stalled_reader_attack -- --ignored --nocapture`;
/// `ATTACK_BIN` picks another binary (an older build, to compare), `ATTACK_CONNECTIONS` and
/// `ATTACK_STREAMS` the size (default 40 × 1 000, as reported), `ATTACK_ARGS` extra server
/// flags (`--reply-send-timeout-ms 600000` holds every stream at once, to measure the bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: about a minute of load"]
async fn stalled_reader_attack() {
    let _serial = crate::common::serial().await;
    let env_usize = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let connections = env_usize("ATTACK_CONNECTIONS", 40);
    let streams = env_usize("ATTACK_STREAMS", 1_000);
    let bin = std::env::var("ATTACK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_holdup").into());
    let mut child = std::process::Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-console",
            "--no-metrics",
            "--seed-rows",
            "100",
        ])
        .args(
            std::env::var("ATTACK_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("OTEL_TRACES_EXPORTER", "none")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let addr: SocketAddr = lines
        .by_ref()
        .find_map(|l| {
            l.ok()?
                .strip_prefix("holdup listening on ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("a listening line");
    std::thread::spawn(move || lines.for_each(drop));
    let pid = child.id();
    let _guard = KillOnDrop(Some(child));
    client(addr)
        .await
        .fast(FastRequest::default())
        .await
        .expect("Fast");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = process::rss_bytes(pid);

    let started = Instant::now();
    let (mut opened, mut refused) = (0usize, 0usize);
    let mut attackers = Vec::new();
    for _ in 0..connections {
        let Ok(Ok(raw)) = tokio::time::timeout(Duration::from_secs(2), raw_h2(addr, 0)).await
        else {
            refused += 1;
            continue;
        };
        let mut held = Vec::new();
        for _ in 0..streams {
            let request = grpc_request(addr, "Fast", Some("application/grpc"))
                .body(())
                .expect("request");
            let body = grpc_frame(&FastRequest {
                message: "never read".into(),
            });
            match tokio::time::timeout(
                Duration::from_millis(300),
                send_unary(&raw.send, request, body),
            )
            .await
            {
                Ok(Ok(reply)) => held.push(reply),
                _ => break,
            }
        }
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        for reply in held {
            if let Ok(Ok(reply)) = tokio::time::timeout_at(deadline, reply).await {
                replies.push(reply);
            }
        }
        if replies.is_empty() && raw.driver.is_finished() {
            refused += 1;
            continue;
        }
        opened += replies.len();
        attackers.push((raw, replies));
    }
    let rss_peak = process::rss_bytes(pid);
    let setup = started.elapsed();
    let fast_started = Instant::now();
    let fast = tokio::time::timeout(Duration::from_secs(3), async {
        client(addr).await.fast(FastRequest::default()).await
    })
    .await;
    let fast_took = fast_started.elapsed();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let still_open = attackers
        .iter()
        .filter(|(raw, _)| !raw.driver.is_finished())
        .count();
    let rss_30s = process::rss_bytes(pid);
    eprintln!(
        "attack on {bin}: {connections} connections × {streams} streams asked, {} connections kept \
         ({refused} refused), {opened} stalled streams, set up in {setup:?}\n\
         RSS before {} MiB, at peak {} MiB (+{} B per stream), 30 s later {} MiB; \
         {still_open} of {} connections still open 30 s later; a fresh Fast during the attack: {} in {fast_took:?}",
        attackers.len(),
        rss_before >> 20,
        rss_peak >> 20,
        rss_peak.saturating_sub(rss_before) / opened.max(1) as u64,
        rss_30s >> 20,
        attackers.len(),
        match fast {
            Ok(Ok(_)) => "answered".to_owned(),
            Ok(Err(e)) => format!("failed ({})", e.code()),
            Err(_) => "no answer within 3 s".to_owned(),
        },
    );
}

/// Connections the unfinished-request attack opens.
const UNFINISHED_CONNECTIONS: usize = 2;
/// Streams it opens on each: the server's default cap.
const UNFINISHED_STREAMS: usize = 256;
/// The length the attack's message prefix declares (the server's largest request), and how
/// much of it is sent.
const DECLARED_BYTES: u32 = 16 * 1024;
const SENT_BYTES: usize = 16_000;
/// Memory one unfinished stream may pin: the guide's bound (about 60 KiB measured in a debug
/// build, see docs/reliability.md, "Transport limits"), with room for allocator noise.
const UNFINISHED_STREAM_BOUND: u64 = 96 * 1024;

/// A request stream whose message never completes: headers, then one DATA frame with a gRPC
/// prefix declaring `DECLARED_BYTES` and `SENT_BYTES` of them; the stream is left open.
async fn send_unfinished(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request, false)?;
    let mut frame = vec![0u8];
    frame.extend_from_slice(&DECLARED_BYTES.to_be_bytes());
    frame.resize(5 + SENT_BYTES, b'x');
    stream.send_data(Bytes::from(frame), false)?;
    Ok((response, stream))
}

/// A client that opens streams and never finishes their request message (the watchdog
/// counts them in flight, so the idle timeout never applies): each is answered
/// DEADLINE_EXCEEDED once its message has waited --request-body-timeout-ms, the timeouts
/// are counted, and Fast answers on the same connection afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_requests_are_ended_after_the_request_body_timeout() {
    let _serial = crate::common::serial().await;
    let holdup = process::start(
        &process::serve_args(&["--request-body-timeout-ms", "2000"]),
        &[],
        None,
    );
    let addr = holdup.addr_after("holdup listening on ");
    let metrics = holdup.addr_after("metrics at ");
    let pid = holdup.pid();
    let _guard = KillOnDrop(Some(holdup.child));
    client(addr)
        .await
        .fast(FastRequest::default())
        .await
        .expect("Fast answers");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = process::rss_bytes(pid);

    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..UNFINISHED_CONNECTIONS {
        let raw = raw_h2(addr, 65_535).await.expect("HTTP/2 handshake");
        let mut streams = Vec::new();
        for _ in 0..UNFINISHED_STREAMS {
            let request = grpc_request(addr, "Fast", Some("application/grpc"))
                .body(())
                .expect("request");
            streams.push(
                send_unfinished(&raw.send, request)
                    .await
                    .expect("stream opens"),
            );
        }
        attackers.push((raw, streams));
    }
    // Let the server take in what was sent before measuring what it holds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_peak = process::rss_bytes(pid);
    let streams_held = (UNFINISHED_CONNECTIONS * UNFINISHED_STREAMS) as u64;

    let mut ended = 0;
    for (raw, streams) in &mut attackers {
        for (response, _stream) in streams.drain(..) {
            let left = Duration::from_secs(15).saturating_sub(started.elapsed());
            let response = tokio::time::timeout(left, response)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "an unfinished request was still held {:?} after it was sent",
                        started.elapsed()
                    )
                });
            // Trailers-only: the status is in the headers. A reset would also free the
            // stream, but tonic answers first.
            let response = response.expect("answered, not reset");
            assert_eq!(
                response
                    .headers()
                    .get("grpc-status")
                    .and_then(|s| s.to_str().ok()),
                Some("4"),
                "DEADLINE_EXCEEDED expected: {:?}",
                response.headers()
            );
            ended += 1;
        }
        assert!(!raw.driver.is_finished(), "the connection itself stays up");
    }
    let ended_after = started.elapsed();
    assert_eq!(ended, streams_held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = process::rss_bytes(pid);
    eprintln!(
        "unfinished requests: {streams_held} streams, RSS {} -> {} -> {} KiB \
         (+{} B per stream at the peak); all ended {ended_after:?} after the first was sent",
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024,
        rss_peak.saturating_sub(rss_before) / streams_held,
    );
    assert!(
        ended_after < Duration::from_secs(15),
        "held {ended_after:?} with a 2 s timeout"
    );
    let grew = rss_peak.saturating_sub(rss_before);
    assert!(
        grew <= streams_held * UNFINISHED_STREAM_BOUND,
        "RSS grew {grew} B for {streams_held} unfinished streams, over {UNFINISHED_STREAM_BOUND} B each"
    );
    let scrape = crate::common::scrape(metrics).await;
    let counted = crate::common::sample(
        &scrape,
        "holdup_transport_request_body_timeouts_total{listener=\"grpc\"}",
    );
    assert_eq!(counted, streams_held as f64, "{scrape}");

    // The connection that sent them is still usable.
    let (raw, _) = attackers.pop().expect("an attacker");
    let reply = raw_fast(&raw, grpc_request(addr, "Fast", Some("application/grpc"))).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.headers().get("grpc-status").map(|s| s.as_bytes()),
        None,
        "Fast answers with a body, not a trailers-only error"
    );
}

/// Past `--max-open-requests` on a listener (all connections together), a request is refused
/// at once with RESOURCE_EXHAUSTED naming the flag, and counted; once the open ones end,
/// calls are served again. This cap is what bounds the memory unfinished requests can pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_open_request_cap_are_refused_at_once() {
    let holdup = process::start(
        &process::serve_args(&[
            "--max-open-requests",
            "4",
            "--request-body-timeout-ms",
            "1500",
        ]),
        &[],
        None,
    );
    let addr = holdup.addr_after("holdup listening on ");
    let metrics = holdup.addr_after("metrics at ");
    let _guard = KillOnDrop(Some(holdup.child));
    let raw = raw_h2(addr, 65_535).await.expect("HTTP/2 handshake");
    let mut held = Vec::new();
    for _ in 0..4 {
        let request = grpc_request(addr, "Fast", Some("application/grpc"))
            .body(())
            .expect("request");
        held.push(
            send_unfinished(&raw.send, request)
                .await
                .expect("stream opens"),
        );
    }
    // Let the server take in the four before the fifth arrives on another connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lab = client(addr).await;
    let refused = lab
        .fast(FastRequest::default())
        .await
        .expect_err("a fifth open request is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-open-requests"),
        "{refused:?}"
    );
    let scrape = crate::common::scrape(metrics).await;
    let counted = crate::common::sample(
        &scrape,
        "holdup_transport_requests_refused_total{listener=\"grpc\"}",
    );
    assert_eq!(counted, 1.0, "{scrape}");
    // The four end at their request-body timeout; then calls are served again.
    for (response, _stream) in held {
        let _ = tokio::time::timeout(Duration::from_secs(10), response).await;
    }
    lab.fast(FastRequest::default())
        .await
        .expect("served once the open requests ended");
}
