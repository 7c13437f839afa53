//! How a parked stretch that no stage span names is named, from measurement alone: what the
//! request parked on ([`crate::resource`]) and who woke it ([`crate::wake_source`]). The rules,
//! in order:
//!
//! 1. parked on a tokio timer (`Sleep`, `Interval`): `timer`;
//! 2. parked on a tokio lock (`Semaphore`, `Mutex`, `RwLock`): `resource-queue`, named by its
//!    type, its holders during the wait named as culprits (a full bounded `mpsc` channel's
//!    room is not a lock: it is named `mpsc` and goes on to the waker's rules);
//! 3. woken by the runtime's blocking pool: `offloaded-cpu` (`spawn_blocking`);
//! 4. woken by a thread no runtime owns: `backend` if it is a database's (sqlx's SQLite
//!    worker), else `offloaded-cpu`, named by the thread;
//! 5. woken by the I/O driver, or by a task that is not a request (a client's connection task,
//!    as hyper's and reqwest's are): a network wait if a connection the process *opened*
//!    received data at the moment of the wake and sent some since the request began (its
//!    call went out on it). It is `backend` if the peer's port is a
//!    database's ([`DATABASE_PORTS`], or one given to
//!    [`EngineConfig::backend_port`](crate::EngineConfig::backend_port)), else `upstream`;
//!    named `host:port`. Found at the request's next poll, for waits of a millisecond or more.
//!    A task's wake that no connection explains and nothing else names (a `JoinHandle`, a
//!    `Notify`) is `waiting`, named `task:<spawn site>`, that task the culprit;
//! 6. woken by another request: `waiting`, that request named as the culprit (it sent what
//!    this one received); woken by its own connection's task right after a stamped read of
//!    the client's bytes (a request body, a client stream): `waiting`, named `client`, nobody
//!    blamed;
//! 7. anything else: `waiting`.
//!
//! A stage span with a kind (`holdup.stage`, or OpenTelemetry conventions) wins over all of
//! these: what the service says it waits for is what it waits for.

use std::net::SocketAddr;

use super::{
    names,
    resource::{Pending, ResourceKind},
    stage::StageKind,
    wake_source::{WokenBy, is_database_thread},
};

/// The name of a wait for the request's own client (see [`WokenBy::Client`]).
pub(crate) const CLIENT: &str = "client";

/// The name of the time a request's task spent in tower layers in front of the engine's (a
/// concurrency limit's queue), before the layer was called: see
/// [`Timeline::outside_layers`](crate::timeline::Timeline::outside_layers).
pub(crate) const OUTER_LAYERS: &str = "outer-layers";

/// Well-known database ports: PostgreSQL, MySQL/MariaDB, Redis, MongoDB, SQL Server, Oracle,
/// Cassandra, CockroachDB, Memcached, Elasticsearch, CouchDB, ClickHouse (HTTP).
pub const DATABASE_PORTS: [u16; 12] = [
    5432, 3306, 6379, 27017, 1433, 1521, 9042, 26257, 11211, 9200, 5984, 8123,
];

/// A wake this far (ns) after the newest data on a connection can be that data's: the
/// kernel's last-receive time is counted in ticks (up to 4 ms), and the wake runs when the
/// driver gets to it.
const DATA_BEFORE_WAKE: u64 = 20_000_000;
/// And this far before it (the tick rounds either way).
const DATA_AFTER_WAKE: u64 = 5_000_000;
/// A connection's newest sent data this far (ns) before the request began still counts: the
/// kernel's tick rounds it (up to 4 ms).
const SENT_BEFORE_START: u64 = 10_000_000;

/// What is known of a stretch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Naming {
    /// Its kind (none: `waiting`) and name (empty: the stage's, if any).
    Known {
        kind: Option<StageKind>,
        name: &'static str,
    },
    /// A network wait if an opened connection received data at the wake (and sent some since
    /// the request began: [`network`]); else `otherwise`
    /// (`waiting`, or `timer` for a timeout that may have fired) under `name`.
    Network {
        name: &'static str,
        otherwise: Option<StageKind>,
    },
}

/// See the module docs (rules 1–7; 5 is resolved later by [`network`]). A timer pending with
/// something else (a timeout around a lock, a query, a `spawn_blocking`) did not fire unless
/// the driver woke the request: then it is the timer's wait, or, if a connection received data
/// at that moment, the network's.
pub(crate) fn name(pending: Pending, by: Option<&WokenBy>) -> Naming {
    let driver = matches!(by, Some(WokenBy::Driver));
    let fired = pending.timer_fired;
    let on = match (pending.timer, pending.other) {
        (Some(timer), _) if driver && fired == Some(true) => Some(timer),
        (Some(timer), Some(_)) if driver && fired.is_none() => Some(timer),
        (Some(timer), None) if driver && fired.is_none() => {
            return Naming::Network {
                name: timer.name,
                otherwise: Some(StageKind::Timer),
            };
        }
        (Some(timer), None) if by.is_none() => Some(timer),
        (_, other) => other,
    };
    let on_name = on.map_or("", |r| r.name);
    if let Some(resource) = on {
        match resource.kind {
            ResourceKind::Timer => return known(StageKind::Timer, resource.name),
            ResourceKind::Lock => return known(StageKind::Queue, resource.name),
            ResourceKind::Other => {}
        }
    }
    match by {
        Some(WokenBy::BlockingPool) => known(StageKind::Offloaded, "spawn_blocking"),
        Some(WokenBy::Thread(thread)) if is_database_thread(thread) => {
            known(StageKind::Backend, thread)
        }
        Some(WokenBy::Thread(thread)) => known(StageKind::Offloaded, thread),
        // Its client was slow to send (or to read): nobody in the process is to blame.
        Some(WokenBy::Client) => Naming::Known {
            kind: None,
            name: CLIENT,
        },
        Some(WokenBy::Driver | WokenBy::Poll(super::Holder::Task { .. })) => Naming::Network {
            name: on_name,
            otherwise: None,
        },
        Some(WokenBy::Poll(super::Holder::Request(_))) | None => Naming::Known {
            kind: None,
            name: on_name,
        },
    }
}

/// Whether a measured name only says what kind of thing was waited on (`Sleep`, `Semaphore`,
/// `spawn_blocking`), so that a span of the service's own open around it (with no kind) names
/// the wait better; a peer's address or a thread's name says more than any span.
pub(crate) fn is_generic(name: &str) -> bool {
    name == "spawn_blocking" || super::resource::is_resource_name(name)
}

fn known(kind: StageKind, name: &'static str) -> Naming {
    Naming::Known {
        kind: Some(kind),
        name,
    }
}

/// The peer of the opened connection whose newest data (`received`: peer, last received,
/// last sent, engine ns) is nearest the wake at `woken`, within the tick's slack, and that
/// sent data since the request began at `request_start`; with its kind by port
/// (`backend_ports` as [`EngineConfig::backend_ports`](crate::EngineConfig::backend_ports)
/// keeps them: a 0 is unset, and never a connected peer's port).
///
/// Why the send: a request's call to a peer sends during the request. A connection that only
/// received (a stream the process reads elsewhere, another part of the service's traffic)
/// said nothing of this wait: a timer's wake that happened to fall beside its data was named
/// after it (an axum handler's 100 ms `sleep` read `upstream` while a client in the same
/// process read a stream, 6 runs of 6). Since the request began, not since the stretch did:
/// one call parks more than once (a reply's head, then its body; rows of a query; messages
/// of a stream), and sends nothing before the later stretches. An HTTP/2 connection's
/// control frames (`WINDOW_UPDATE`, `PING`) are data to the kernel, so a stream read over
/// HTTP/2 elsewhere in the process can still pass.
pub(crate) fn network(
    request_start: u64,
    woken: u64,
    received: &[(SocketAddr, u64, u64)],
    backend_ports: &[u16],
) -> Option<(StageKind, &'static str)> {
    let (peer, _, _) = received
        .iter()
        .filter(|(_, at, sent)| {
            *at + DATA_BEFORE_WAKE >= woken
                && *at <= woken.saturating_add(DATA_AFTER_WAKE)
                && *sent + SENT_BEFORE_START >= request_start
        })
        .min_by_key(|(_, at, _)| at.abs_diff(woken))?;
    let kind = if DATABASE_PORTS.contains(&peer.port()) || backend_ports.contains(&peer.port()) {
        StageKind::Backend
    } else {
        StageKind::Upstream
    };
    Some((kind, names::intern(&peer.to_string(), "peer")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{identity::Identity, occupancy::Holder};

    use crate::resource::ResourceRef;

    fn lock() -> ResourceRef {
        ResourceRef {
            span: 1,
            name: "Semaphore",
            kind: ResourceKind::Lock,
        }
    }

    fn on(timer: Option<ResourceRef>, other: Option<ResourceRef>) -> Pending {
        Pending {
            timer,
            other,
            ..Pending::default()
        }
    }

    #[test]
    fn a_tokio_resource_names_the_wait_before_the_waker_does() {
        let sleep = ResourceRef {
            span: 2,
            name: "Sleep",
            kind: ResourceKind::Timer,
        };
        let fired = Pending {
            timer_fired: Some(true),
            ..on(Some(sleep), None)
        };
        assert_eq!(
            name(fired, Some(&WokenBy::Driver)),
            known(StageKind::Timer, "Sleep")
        );
        // Woken by the driver before the deadline: not the timer.
        let early = Pending {
            timer_fired: Some(false),
            ..on(Some(sleep), None)
        };
        assert_eq!(
            name(early, Some(&WokenBy::Driver)),
            Naming::Network {
                name: "",
                otherwise: None
            }
        );
        let by = WokenBy::Poll(Holder::Request(Identity::untraced("/s/A")));
        assert_eq!(
            name(on(None, Some(lock())), Some(&by)),
            known(StageKind::Queue, "Semaphore")
        );
        // A lock under a timeout: released by its holder, or timed out.
        let both = on(Some(sleep), Some(lock()));
        assert_eq!(name(both, Some(&by)), known(StageKind::Queue, "Semaphore"));
        assert_eq!(
            name(both, Some(&WokenBy::Driver)),
            known(StageKind::Timer, "Sleep")
        );
        // A timeout around `spawn_blocking` or a query: the waker says which ended it.
        let timeout = on(Some(sleep), None);
        assert_eq!(
            name(timeout, Some(&WokenBy::BlockingPool)),
            known(StageKind::Offloaded, "spawn_blocking")
        );
        assert_eq!(
            name(timeout, Some(&WokenBy::Driver)),
            Naming::Network {
                name: "Sleep",
                otherwise: Some(StageKind::Timer)
            }
        );
    }

    #[test]
    fn the_waking_thread_names_offloaded_and_database_work() {
        assert_eq!(
            name(Pending::default(), Some(&WokenBy::BlockingPool)),
            known(StageKind::Offloaded, "spawn_blocking")
        );
        assert_eq!(
            name(
                Pending::default(),
                Some(&WokenBy::Thread("sqlx-sqlite-worker-0"))
            ),
            known(StageKind::Backend, "sqlx-sqlite-worker-0")
        );
        assert_eq!(
            name(Pending::default(), Some(&WokenBy::Thread("my-pool-3"))),
            known(StageKind::Offloaded, "my-pool-3")
        );
        assert_eq!(
            name(Pending::default(), Some(&WokenBy::Driver)),
            Naming::Network {
                name: "",
                otherwise: None
            }
        );
        let by = WokenBy::Poll(Holder::Request(Identity::untraced("/s/Sender")));
        assert_eq!(
            name(Pending::default(), Some(&by)),
            Naming::Known {
                kind: None,
                name: ""
            }
        );
    }

    #[test]
    fn the_connection_that_received_at_the_wake_is_the_peer() {
        let ms = 1_000_000;
        let db: SocketAddr = "10.0.0.5:5432".parse().unwrap();
        let api: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        // Each sent its request at 50 ms; the request began at 40.
        let received = [
            (db, 100 * ms, 50 * ms),
            (api, 498 * ms, 50 * ms),
            (other, 300 * ms, 50 * ms),
        ];
        assert_eq!(
            network(40 * ms, 500 * ms, &received, &[]),
            Some((StageKind::Upstream, "127.0.0.1:8080"))
        );
        assert_eq!(
            network(40 * ms, 101 * ms, &received, &[]),
            Some((StageKind::Backend, "10.0.0.5:5432"))
        );
        assert_eq!(
            network(40 * ms, 301 * ms, &received, &[9999]),
            Some((StageKind::Backend, "127.0.0.1:9999")),
            "a port the service names as its database's"
        );
        assert_eq!(
            network(40 * ms, 900 * ms, &received, &[]),
            None,
            "nothing received then"
        );
    }

    #[test]
    fn a_connection_that_only_received_is_not_what_the_request_waited_for() {
        let ms = 1_000_000;
        let stream: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let api: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        // The stream sent its one request at 10 ms and has received ever since; the request
        // began at 400 ms.
        let received = [(stream, 499 * ms, 10 * ms)];
        assert_eq!(
            network(400 * ms, 500 * ms, &received, &[]),
            None,
            "a wake beside a stream's data, with nothing sent during the request"
        );
        // The request's call went out on `api` as it began, or a little after.
        for sent in [395 * ms, 420 * ms] {
            let received = [(stream, 499 * ms, 10 * ms), (api, 498 * ms, sent)];
            assert_eq!(
                network(400 * ms, 500 * ms, &received, &[]),
                Some((StageKind::Upstream, "127.0.0.1:8080")),
                "sent at {sent}"
            );
        }
    }

    #[test]
    fn a_calls_later_stretches_keep_its_peer_though_nothing_more_was_sent() {
        let ms = 1_000_000;
        let db: SocketAddr = "10.0.0.5:5432".parse().unwrap();
        // A query sent at 101 ms; its rows arrive at 150 and, after a second park, at 300.
        let at_first_rows = [(db, 150 * ms, 101 * ms)];
        let at_last_rows = [(db, 300 * ms, 101 * ms)];
        for (woken, received) in [(150 * ms, &at_first_rows), (300 * ms, &at_last_rows)] {
            assert_eq!(
                network(100 * ms, woken, received, &[]),
                Some((StageKind::Backend, "10.0.0.5:5432")),
                "woken at {woken}"
            );
        }
    }
}
