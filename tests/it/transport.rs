//! What every connection holdup accepts must have: Nagle's algorithm off.
//!
//! With Nagle on, a reply written as several small segments waits for the client's delayed
//! ACK (about 40 ms on Linux) on a fresh connection: every grpcurl call is one.

use std::time::{Duration, Instant};

use crate::common::{client, spawn_app};
use holdup::proto::FastRequest;

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
