//! Who woke a parked request, recorded by its waker: the thread the wake ran on, and what that
//! thread was doing. With what the request parked on ([`crate::resource`]) this names waits
//! that no span labels:
//!
//! - another request's or task's poll: it released what the request waited for, or sent what
//!   it received; it is named as the wait's culprit;
//! - a runtime worker between polls: the I/O driver (a socket became readable) or the timer;
//! - the runtime's blocking pool: `spawn_blocking` work finished;
//! - a thread no runtime owns: a library's own thread (sqlx runs each SQLite connection on
//!   one), or the service's.

use super::{
    names,
    occupancy::{self, Holder, ThreadRole},
};

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) enum WokenBy {
    Poll(Holder),
    Driver,
    BlockingPool,
    /// A thread outside the runtime, by name (`thread` when it has none).
    Thread(&'static str),
    /// The request's client: its connection's task woke it right after reading the client's
    /// next bytes from an accepted, stamped connection ([`crate::read_stamp`]).
    Client,
}

impl WokenBy {
    /// The wake running on this thread now.
    pub(crate) fn here() -> Self {
        match occupancy::role_here() {
            ThreadRole::Polling(holder) => Self::Poll(holder),
            ThreadRole::Worker => Self::Driver,
            ThreadRole::Blocking => Self::BlockingPool,
            ThreadRole::Foreign => Self::Thread(names::intern(
                std::thread::current().name().unwrap_or("thread"),
                "thread",
            )),
        }
    }
}

/// Whether a thread of this name runs a database for the service: sqlx's SQLite connections
/// each run on a `sqlx-sqlite-worker-N` thread.
pub(crate) fn is_database_thread(name: &str) -> bool {
    name.starts_with("sqlx-sqlite")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_outside_any_runtime_is_named() {
        let woken = std::thread::Builder::new()
            .name("sqlx-sqlite-worker-7".into())
            .spawn(WokenBy::here)
            .unwrap()
            .join()
            .unwrap();
        match woken {
            WokenBy::Thread(name) => {
                assert_eq!(name, "sqlx-sqlite-worker-7");
                assert!(is_database_thread(name));
            }
            other => panic!("{other:?}"),
        }
    }
}
