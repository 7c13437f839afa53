//! Kernel-stamped arrivals on real sockets: the timestamps are on (a test that fails if they
//! are silently off on Linux), the stamp sees a wait the reader could not, and through
//! `arrival::serve` a tonic service and an axum router get an `Arrival` in each request,
//! never later than the request's first poll.

#![cfg(feature = "arrival")]

use std::{
    io::Write,
    mem::MaybeUninit,
    pin::Pin,
    time::{Duration, Instant},
};

use holdup_diagnose::arrival::{self, Arrival, ReadSnapshot, TimestampedStream};
use tokio::{
    io::{AsyncRead, AsyncReadExt, ReadBuf},
    net::TcpListener,
};

const MS: u64 = 1_000_000;

/// A listener with timestamps on, a blocking client connected to it, and the accepted side
/// wrapped, once the kernel stamps packets.
///
/// The kernel turns stamping on for the whole system through a deferred static key (a work
/// item that patches code): the packets of the first milliseconds after the first `enable` go
/// unstamped. This waits, writing and reading, until a read brings a stamp, and fails if none
/// does within 2 s (receive timestamps silently off). While the returned sockets live, the
/// key stays on for the other tests of this process.
async fn connected() -> (std::net::TcpStream, TimestampedStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let support = arrival::enable(&listener).expect("setsockopt on a fresh listener");
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_nodelay(true).unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let mut pair = (client, TimestampedStream::new(accepted));
    if cfg!(target_os = "linux") {
        assert!(
            support.is_on(),
            "Linux refused receive timestamps: {support:?}"
        );
        let start = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            pair.0.write_all(b"warm").unwrap();
            let n = pair.1.read(&mut buf).await.unwrap();
            assert!(n > 0);
            if pair.1.marks().snapshot().kernel.is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "no kernel receive stamp 2 s after enable: timestamps are off"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    pair
}

/// The engine time now, on the clock arrivals are in.
#[track_caller]
fn engine_age(ns: u64) -> Duration {
    Instant::now().saturating_duration_since(Arrival::instant_of(ns))
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn receive_timestamps_are_on_and_reach_the_reader() {
    let (mut client, mut server) = connected().await;

    client.write_all(b"first").unwrap();
    let mut buf = [0u8; 64];
    let n = server.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"first");

    let marks: ReadSnapshot = server.marks().snapshot();
    let kernel = marks
        .kernel
        .expect("a kernel receive stamp on an accepted socket of an enabled listener");
    let read_at = marks.read_at.expect("the read is marked");
    assert!(kernel <= read_at, "stamp {kernel} after its read {read_at}");
    assert!(
        engine_age(kernel) < Duration::from_secs(5),
        "stamp {:?} old",
        engine_age(kernel)
    );

    // A read that finds the socket empty marks a drain; the next read keeps that drain as
    // the bound of its bytes.
    let nothing = tokio::time::timeout(Duration::from_millis(20), server.read(&mut buf)).await;
    assert!(nothing.is_err(), "nothing more was sent");
    let drained = server.marks().snapshot().drained_at.expect("a drain mark");
    assert!(drained > read_at);
    client.write_all(b"second").unwrap();
    let n = server.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"second");
    let marks = server.marks().snapshot();
    assert_eq!(marks.drained_before, Some(drained));
    let second = marks.kernel.expect("the second read is stamped too");
    assert!(
        drained <= second,
        "bytes sent after the drain stamped before it"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_kernel_stamp_sees_a_wait_the_reader_could_not() {
    let (mut client, mut server) = connected().await;
    client.write_all(b"waiting").unwrap();
    // The reader's thread is busy (this current-thread runtime's only worker): the bytes
    // wait in the socket.
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 64];
    let n = server.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"waiting");
    let marks = server.marks().snapshot();
    let (kernel, read_at) = (marks.kernel.unwrap(), marks.read_at.unwrap());
    assert!(
        read_at - kernel >= 90 * MS,
        "the stamp saw {} ms of the 100 ms wait",
        (read_at - kernel) / MS
    );
}

/// Sends 64 bytes and reads them, `rounds` times, each read into a fresh uninitialised
/// 8 KiB buffer (as hyper and h2 offer theirs); the median and the 10th percentile of the
/// reads' times. Loopback delivers the bytes within the `write` call, so the read finds them.
async fn time_reads<R: AsyncRead + Unpin>(
    client: &mut std::net::TcpStream,
    reader: &mut R,
    rounds: usize,
) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(rounds);
    let mut storage = [MaybeUninit::<u8>::uninit(); 8192];
    for _ in 0..rounds {
        client.write_all(&[7u8; 64]).unwrap();
        let mut buf = ReadBuf::uninit(&mut storage);
        let start = Instant::now();
        std::future::poll_fn(|cx| Pin::new(&mut *reader).poll_read(cx, &mut buf))
            .await
            .unwrap();
        took.push(start.elapsed());
        assert_eq!(buf.filled().len(), 64);
    }
    took.sort_unstable();
    (took[rounds / 2], took[rounds / 10])
}

#[tokio::test]
#[ignore = "a measurement, not a check: cargo test --release --all-features -- --ignored --nocapture"]
async fn cost_of_a_stamped_read_against_a_plain_one() {
    let (mut client, mut stamped) = connected().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut plain_client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    plain_client.set_nodelay(true).unwrap();
    let (mut plain, _) = listener.accept().await.unwrap();
    for _ in 0..3 {
        let (plain_median, plain_p10) = time_reads(&mut plain_client, &mut plain, 20_000).await;
        let (stamped_median, stamped_p10) = time_reads(&mut client, &mut stamped, 20_000).await;
        eprintln!(
            "read of 64 B, median (p10): plain read {plain_median:?} ({plain_p10:?}), \
             recvmsg with stamp {stamped_median:?} ({stamped_p10:?})"
        );
    }
}

#[cfg(feature = "serve")]
mod serve {
    use std::{
        net::SocketAddr,
        sync::{Arc, Mutex},
        task::{Context, Poll},
    };

    use holdup_diagnose::arrival::Source;
    use http::Request;
    use tonic::transport::Channel;
    use tonic_health::{
        ServingStatus,
        pb::{HealthCheckRequest, health_client::HealthClient},
    };

    use super::*;

    /// What the probe saw of one request: its arrival and when it was first polled.
    type Seen = Arc<Mutex<Vec<(Option<Arrival>, Instant)>>>;

    /// A tower service in front of the real one that notes each request's `Arrival` at its
    /// first poll (tower's `call` runs inside the first poll of hyper's request future).
    #[derive(Clone)]
    struct Probe<S> {
        inner: S,
        seen: Seen,
    }

    impl<S, B> tower_service::Service<Request<B>> for Probe<S>
    where
        S: tower_service::Service<Request<B>>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: Request<B>) -> Self::Future {
            let first_poll = Instant::now();
            let arrival = request.extensions().get::<Arrival>().copied();
            self.seen.lock().unwrap().push((arrival, first_poll));
            self.inner.call(request)
        }
    }

    #[track_caller]
    fn assert_stamped_before_first_poll(seen: &Seen, expected: usize) {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), expected, "{seen:?}");
        for (arrival, first_poll) in seen.iter() {
            let arrival = arrival.expect("every request carries an Arrival");
            let (at, source) = arrival.instant();
            if cfg!(target_os = "linux") {
                assert_eq!(source, Source::Kernel, "{arrival:?}");
                assert!(arrival.kernel.is_some());
            }
            assert!(at <= *first_poll, "arrival after first poll: {arrival:?}");
            assert!(
                Arrival::instant_of(arrival.stamped_at) <= *first_poll,
                "stamped after first poll: {arrival:?}"
            );
            assert!(arrival.read_at <= arrival.stamped_at, "{arrival:?}");
        }
    }

    async fn spawn_serve<S, B>(
        service: S,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )
    where
        S: tower_service::Service<
                Request<hyper::body::Incoming>,
                Response = http::Response<B>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(arrival::serve(listener, service, stopped));
        (addr, stop, server)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tonic_service_gets_kernel_arrivals_and_drains_on_shutdown() {
        // Keeps the kernel's stamping on from before the first request.
        let _stamping = connected().await;
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        let seen = Seen::default();
        let probe = Probe {
            inner: tonic::service::Routes::new(health),
            seen: Arc::clone(&seen),
        };
        let (addr, stop, server) = spawn_serve(probe).await;

        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        for _ in 0..3 {
            let reply = client
                .check(HealthCheckRequest::default())
                .await
                .expect("Check answers over h2c");
            assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
        }
        assert_stamped_before_first_poll(&seen, 3);

        stop.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns once its connections drain, the client still open");
        ended.unwrap().unwrap();
        drop(client);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_axum_router_over_http1_gets_them_too() {
        async fn arrival_source(request: axum::extract::Request) -> String {
            match request.extensions().get::<Arrival>() {
                Some(arrival) => arrival.arrival().1.as_str().to_owned(),
                None => "none".to_owned(),
            }
        }
        let _stamping = connected().await;
        let seen = Seen::default();
        let probe = Probe {
            inner: axum::Router::new().route("/", axum::routing::get(arrival_source)),
            seen: Arc::clone(&seen),
        };
        let (addr, stop, server) = spawn_serve(probe).await;

        let body = reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let expected = if cfg!(target_os = "linux") {
            "kernel"
        } else {
            "connection-task"
        };
        assert_eq!(body, expected);
        assert_stamped_before_first_poll(&seen, 1);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// A diagnosed axum app served by `arrival::serve` on a runtime of its own, with the
    /// kernel's stamping kept on while it lives.
    struct Served {
        runtime: tokio::runtime::Runtime,
        addr: SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
        server: tokio::task::JoinHandle<std::io::Result<()>>,
        _stamping: (std::net::TcpStream, TimestampedStream),
    }

    impl Served {
        /// `/upload` (reads its whole body), `/fast`, and `/block` (holds its worker 300 ms in
        /// a thread sleep), on a runtime of `workers`.
        fn upload_fast_and_block(workers: usize) -> Self {
            let app = axum::Router::new()
                .route(
                    "/upload",
                    axum::routing::post(|body: axum::body::Body| async move {
                        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
                        bytes.len().to_string()
                    }),
                )
                .route("/fast", axum::routing::get(|| async { "fast" }))
                .route(
                    "/block",
                    axum::routing::get(|| async {
                        std::thread::sleep(Duration::from_millis(300));
                        "blocked"
                    }),
                )
                .layer(holdup_diagnose::DiagnoseLayer::new());
            Self::serving(workers, app)
        }

        /// `app` served on a runtime of `workers`.
        fn serving(workers: usize, app: axum::Router) -> Self {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
                .unwrap();
            let stamping = runtime.block_on(connected());
            let (addr, stop, server) = runtime.block_on(spawn_serve(app));
            Self {
                runtime,
                addr,
                stop,
                server,
                _stamping: stamping,
            }
        }

        fn connect(&self) -> std::net::TcpStream {
            std::net::TcpStream::connect(self.addr).unwrap()
        }

        /// Stops serving and waits (up to 5 s) for the server to return cleanly.
        fn stop(self) {
            self.stop.send(()).unwrap();
            let server = self.server;
            self.runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await })
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }

    /// Reads one HTTP/1.1 response's head: its `x-trace-id` and `holdup-diagnosis`.
    fn head(stream: &std::net::TcpStream) -> (String, String) {
        use std::io::{BufRead, BufReader};
        let mut reader = BufReader::new(stream);
        let (mut trace_id, mut diagnosis) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                return (trace_id, diagnosis);
            }
            if let Some(v) = line.strip_prefix("x-trace-id: ") {
                trace_id = v.to_owned();
            }
            if let Some(v) = line.strip_prefix("holdup-diagnosis: ") {
                diagnosis = v.to_owned();
            }
        }
    }

    /// `key=value` of a diagnosis header.
    fn field<'a>(diagnosis: &'a str, key: &str) -> Option<&'a str> {
        diagnosis
            .split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// A duration field of a diagnosis header, in ms; fails the test if it is missing.
    fn ms(diagnosis: &str, key: &str) -> f64 {
        field(diagnosis, key)
            .unwrap_or_else(|| panic!("no {key} in {diagnosis:?}"))
            .trim_end_matches("ms")
            .parse()
            .unwrap()
    }

    /// The head and first chunk of a chunked `/upload`; [`UPLOAD_REST`] ends it.
    const UPLOAD_START: &[u8] =
        b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    const UPLOAD_REST: &[u8] = b"5\r\nworld\r\n0\r\n\r\n";
    const BLOCK: &[u8] = b"GET /block HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    /// A request parked on its next body chunk, whose chunk then lies in the socket while the
    /// only worker is held by another request, waited for that worker, not for its client:
    /// the wake its connection task makes after reading the chunk is dated from the chunk's
    /// kernel stamp, so the wait is scheduled and blamed on the holder (a client stream's
    /// later message, as grpcurl's reflection sends its second request).
    #[test]
    fn a_later_chunk_that_waited_for_the_connection_task_is_a_wait_for_a_worker() {
        use std::io::Read;

        let served = Served::upload_fast_and_block(1);
        let sleep = |d| std::thread::sleep(Duration::from_millis(d));
        let mut upload = served.connect();
        upload.write_all(UPLOAD_START).unwrap();
        sleep(50); // the handler reads the first chunk and parks on the next
        let mut block = served.connect();
        block.write_all(BLOCK).unwrap();
        sleep(50); // the only worker sleeps in /block for 300 ms from about here
        upload.write_all(UPLOAD_REST).unwrap();
        let sent = Instant::now();
        let (_, diagnosis) = head(&upload);
        let waited = sent.elapsed();
        let (blocker, _) = head(&block);
        let mut rest = Vec::new();
        let _ = block.read_to_end(&mut rest);

        assert!(
            waited >= Duration::from_millis(150),
            "premise: the chunk waited behind /block ({waited:?}); {diagnosis}"
        );
        assert!(
            ms(&diagnosis, "scheduled") >= 0.6 * waited.as_secs_f64() * 1e3,
            "the chunk's wait for the connection task ({waited:?}) is scheduled: {diagnosis}"
        );
        assert_eq!(
            field(&diagnosis, "verdict"),
            Some("runtime-contention"),
            "{diagnosis}"
        );
        assert!(
            blocker.len() == 32
                && field(&diagnosis, "culprits").is_some_and(|c| c.contains(&blocker)),
            "the holder, /block ({blocker}), is blamed: {diagnosis}"
        );
        drop(upload);
        served.stop();
    }

    /// A request sent with its connection's first bytes (as hyper and tonic clients send it,
    /// behind the preface), while the only worker is held: its wait is counted once, from
    /// its own kernel stamp. Counting the connection's setup wait too doubled it.
    #[test]
    fn a_request_in_its_connections_first_read_counts_its_wait_once() {
        use std::io::Read;

        let served = Served::upload_fast_and_block(1);
        let mut block = served.connect();
        block.write_all(BLOCK).unwrap();
        std::thread::sleep(Duration::from_millis(50)); // the only worker sleeps from about here
        let sent = Instant::now();
        let mut fast = served.connect();
        fast.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let (_, diagnosis) = head(&fast);
        let waited = sent.elapsed().as_secs_f64() * 1e3;
        let mut rest = Vec::new();
        let _ = block.read_to_end(&mut rest);

        assert!(
            waited >= 150.0,
            "premise: /fast waited behind /block ({waited:.1} ms); {diagnosis}"
        );
        let total = ms(&diagnosis, "total");
        assert!(
            total <= waited + 30.0,
            "counted once: total {total} ms against {waited:.1} ms at the client: {diagnosis}"
        );
        assert!(
            total >= 0.6 * waited,
            "the wait behind /block is counted: {total} ms against {waited:.1} ms: {diagnosis}"
        );
        drop(fast);
        served.stop();
    }

    /// A client slow to send its body (a chunk, then another 200 ms later) on an idle server:
    /// the request waited for its client, which the wake by its connection task's read says;
    /// the connection task is not blamed for the client's pace.
    #[test]
    fn a_body_the_client_was_slow_to_send_is_a_wait_for_the_client() {
        let served = Served::upload_fast_and_block(2);
        let mut upload = served.connect();
        upload.write_all(UPLOAD_START).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        upload.write_all(UPLOAD_REST).unwrap();
        let (_, diagnosis) = head(&upload);

        assert_eq!(field(&diagnosis, "verdict"), Some("waiting"), "{diagnosis}");
        assert_eq!(
            field(&diagnosis, "waited_in"),
            Some("client"),
            "{diagnosis}"
        );
        assert!(
            field(&diagnosis, "culprits").is_none_or(|c| !c.contains("serve.rs")),
            "the connection task relayed the client's bytes; it held nobody up: {diagnosis}"
        );
        drop(upload);
        served.stop();
    }

    /// A tower concurrency limit of one in front of the layer, as a user stacks it: a request
    /// that waited for the limit's permit waited in a layer outside the engine's, with every
    /// worker free. That wait is named `outer-layers`, not counted as a wait for a worker
    /// (it read `scheduled=250ms` and blamed whoever ran then).
    #[test]
    fn a_wait_in_a_layer_outside_the_engines_is_not_a_wait_for_a_worker() {
        use std::sync::atomic::{AtomicBool, Ordering};

        // Set once /hold is in its handler, holding the permit: /fast is sent only then.
        let holding = Arc::new(AtomicBool::new(false));
        let app = axum::Router::new()
            .route(
                "/hold",
                axum::routing::get(
                    |axum::extract::State(holding): axum::extract::State<Arc<AtomicBool>>| async move {
                        holding.store(true, Ordering::Release);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "held"
                    },
                ),
            )
            .route("/fast", axum::routing::get(|| async { "fast" }))
            .with_state(Arc::clone(&holding))
            .layer(holdup_diagnose::DiagnoseLayer::new())
            // Outside the engine's layer (axum's later layer is the outer one), and one for
            // both routes (axum wraps each route apart).
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(1));
        let served = Served::serving(2, app);
        let mut hold = served.connect();
        hold.write_all(b"GET /hold HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let asked = Instant::now();
        while !holding.load(Ordering::Acquire) {
            assert!(
                asked.elapsed() < Duration::from_secs(3),
                "/hold never reached its handler"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let sent = Instant::now();
        let mut fast = served.connect();
        fast.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let (_, diagnosis) = head(&fast);
        let waited = sent.elapsed().as_secs_f64() * 1e3;
        let _ = head(&hold);

        assert!(
            waited >= 150.0,
            "premise: /fast waited for the permit ({waited:.1} ms); {diagnosis}"
        );
        assert!(
            ms(&diagnosis, "total") >= 0.6 * waited,
            "the wait is in the request's time: {diagnosis}"
        );
        assert!(
            ms(&diagnosis, "scheduled") < 0.2 * waited,
            "every worker was free: not a wait for one: {diagnosis}"
        );
        assert_eq!(field(&diagnosis, "verdict"), Some("waiting"), "{diagnosis}");
        assert_eq!(
            field(&diagnosis, "waited_in"),
            Some("outer-layers"),
            "{diagnosis}"
        );
        drop((hold, fast));
        served.stop();
    }
}
