//! When the bytes the running task just read reached the machine: what a wake it makes right
//! after the read was caused by.
//!
//! A request parked on its next message (a client stream, a bidirectional one, the second
//! request of grpcurl's reflection stream) is woken by its connection task once that task has
//! read the message. Dated at the wake, the time the message lay in the socket while the
//! connection task waited for a worker was counted idle, as if the client had been slow. A
//! connection read through [`TimestampedStream`](crate::arrival::TimestampedStream) leaves the
//! kernel's stamp of its newest bytes here; a wake that follows within
//! [`WAKE_FOLLOWS_READ`] in the same task is dated from that stamp instead, so the wait behind
//! the connection task is *scheduled* and blamed, as a request's first arrival is.
//!
//! The stamp is of the newest bytes of the read: a message that came earlier in the same read
//! waited longer than it shows (a lower bound, as for arrivals).

use std::cell::Cell;

/// A wake this soon after a read, in the task that read, is taken to be that read's doing:
/// the connection task decodes what it read and wakes the streams it fed within microseconds.
const WAKE_FOLLOWS_READ: u64 = 1_000_000;

#[derive(Clone, Copy)]
struct Read {
    task: tokio::task::Id,
    /// Engine time the newest bytes reached the machine (the kernel's stamp).
    kernel: u64,
    /// Engine time of the read.
    read_at: u64,
}

thread_local! {
    static LAST: Cell<Option<Read>> = const { Cell::new(None) };
}

/// The task running here read bytes stamped `kernel` at `read_at` (engine time).
#[cfg_attr(not(feature = "arrival"), allow(dead_code))]
pub(crate) fn record(kernel: u64, read_at: u64) {
    if let Some(task) = tokio::task::try_id() {
        LAST.with(|last| {
            last.set(Some(Read {
                task,
                kernel,
                read_at,
            }));
        });
    }
}

/// Whether a wake at `now` is the doing of what this task just read from a client's
/// connection (the client's next bytes: a request body, a client stream's next message, a
/// window update that lets a reply go on), and if so when those bytes reached the machine:
/// the stamp of the read, never after `now`. One look-up serves both questions a wake asks.
pub(crate) fn client_read_before(now: u64) -> Option<u64> {
    let read = LAST.with(Cell::get)?;
    (now.saturating_sub(read.read_at) <= WAKE_FOLLOWS_READ
        && tokio::task::try_id() == Some(read.task))
    .then(|| read.kernel.min(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_right_after_a_stamped_read_in_the_same_task_dates_from_the_stamp() {
        let wake = tokio::spawn(async {
            record(1_000, 5_000);
            (
                client_read_before(5_200),
                client_read_before(5_000 + WAKE_FOLLOWS_READ + 1),
            )
        })
        .await
        .unwrap();
        assert_eq!(wake, (Some(1_000), None), "late: the read is not the cause");
        // Another task on the same thread (a current-thread runtime) did not read it.
        let other = tokio::spawn(async { client_read_before(5_100) })
            .await
            .unwrap();
        assert_eq!(other, None);
    }
}
