//! Kernel-stamped arrivals on real sockets: the timestamps are on (a test that fails if they
//! are silently off on Linux), and the stamp sees a wait the reader could not.

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
