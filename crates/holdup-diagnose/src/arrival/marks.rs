//! The marks a connection's reads leave, in a cell other tasks can read: the kernel stamp of
//! the newest bytes of the latest read, when that read ran, and when the socket was last
//! found empty. The reading stream writes them; the service that stamps requests, and anyone
//! holding the cell (a watchdog, the engine), reads them.
//!
//! Atomics under a sequence counter (a seqlock): one writer (the connection task), readers
//! anywhere, and a reader never sees half of one read's marks with half of another's.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Arrival;
use crate::clock;

/// A connection's latest read marks, shared between its stream and whoever reads them.
/// Engine nanoseconds; 0 stands for "none yet".
#[derive(Debug, Default)]
pub struct ReadMarks {
    /// Odd while a write is under way; readers retry across a change.
    seq: AtomicU64,
    /// The kernel stamp of the newest bytes of the latest read that returned bytes.
    kernel: AtomicU64,
    /// When that read ran.
    read_at: AtomicU64,
    /// The last drain before that read: its bytes came after it.
    drained_before: AtomicU64,
    /// The latest drain (a read that found the socket empty).
    drained_at: AtomicU64,
    /// How long the connection's first bytes lay in the socket before its first read (kernel
    /// stamp to read; 0 when unknown).
    setup_wait: AtomicU64,
    /// How long the connection had waited in the accept queue when it was wrapped (`TCP_INFO`:
    /// the time since its last ACK), for a client that sent nothing meanwhile.
    accept_wait: AtomicU64,
    /// When the stream was wrapped, just after the accept (0: not recorded).
    wrapped_at: AtomicU64,
    /// When the connection's first read that returned bytes ran: a first request completed
    /// by a later read is one its client sent only after that read.
    first_read_at: AtomicU64,
    /// Whether a request has been handed on already: only the first carries the setup wait.
    handed_any: std::sync::atomic::AtomicBool,
}

/// One consistent reading of a [`ReadMarks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadSnapshot {
    /// The kernel stamp of the newest bytes of the latest read, in engine time.
    pub kernel: Option<u64>,
    /// When the latest read that returned bytes ran.
    pub read_at: Option<u64>,
    /// The last drain before that read.
    pub drained_before: Option<u64>,
    /// The latest drain.
    pub drained_at: Option<u64>,
}

/// How many times a reader retries a snapshot that a write overlapped before it gives up. The
/// writer writes four words; past [`SPIN_RETRIES`] the reader yields its thread, so a writer
/// preempted mid-write gets to finish. A reader that still loses this often (a writer in a
/// tight loop on a loaded machine: CI saw it) reads no marks at all rather than hang, or take
/// one read's stamp with another's time: a torn pair would make up a wait.
const MAX_RETRIES: usize = 1024;
/// Retries that spin before the reader starts yielding.
const SPIN_RETRIES: usize = 16;
/// A first request whose bytes came this soon (ns) after the accept answered the server's
/// first words (its settings), so its client was waiting for the accept.
const ANSWER_WITHIN: u64 = 20_000_000;
/// The least accept-queue wait (ns) counted: `TCP_INFO` says it in jiffies (4 ms at 250 Hz).
const ACCEPT_WAIT_FROM: u64 = 10_000_000;

fn some(ns: u64) -> Option<u64> {
    (ns != 0).then_some(ns)
}

impl ReadMarks {
    /// A cell with no read yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self, f: impl FnOnce(&Self)) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        f(self);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Records how long the connection waited to be accepted, as found when it was wrapped at
    /// `at` (see the fields).
    pub(crate) fn record_accept_wait(&self, ns: u64, at: u64) {
        self.accept_wait.store(ns, Ordering::Relaxed);
        self.wrapped_at.store(at, Ordering::Relaxed);
    }

    /// The wait before the connection's first request could be sent, for a request handed on
    /// with `kernel`'s stamp: what the client's own bytes cannot date.
    ///
    /// - A request whose bytes came after the connection's first read was sent in answer to it
    ///   (the preface read, then the request): it waited that read's wait too.
    /// - A request whose bytes came just after the accept, from a client that sent nothing
    ///   before the server spoke (grpc-go, so grpcurl: it waits for our settings), waited in
    ///   the accept queue: `TCP_INFO`'s time since the handshake's ACK. Counted only above the
    ///   kernel's tick (it is in whole jiffies: a few ms on an idle server would be made up),
    ///   and only for bytes that came soon after the accept (a client that connected early
    ///   and sent its first call later did not wait for us).
    /// - A request whose bytes were in the socket already at the first read (hyper and tonic
    ///   send it behind the preface; a first read may take only part of them, as hyper-util's
    ///   version sniff does) has the whole wait in its own stamp: adding a setup wait counted
    ///   it twice (a held-out service: totals up to twice the client's).
    fn setup_wait_for(&self, kernel: Option<u64>) -> Option<u64> {
        let kernel = kernel?;
        let first_read_at = self.first_read_at.load(Ordering::Relaxed);
        let after_first_read = if kernel > first_read_at {
            self.setup_wait.load(Ordering::Relaxed)
        } else {
            0
        };
        let wrapped_at = self.wrapped_at.load(Ordering::Relaxed);
        let accept_wait = self.accept_wait.load(Ordering::Relaxed);
        let answered_the_accept =
            wrapped_at != 0 && kernel >= wrapped_at && kernel - wrapped_at <= ANSWER_WITHIN;
        let in_accept_queue = if answered_the_accept && accept_wait >= ACCEPT_WAIT_FROM {
            accept_wait
        } else {
            0
        };
        Some(after_first_read.max(in_accept_queue)).filter(|&wait| wait > 0)
    }

    /// Records a read that returned bytes at `read_at`, with the kernel's stamp of the newest
    /// of them (already in engine time) if there was one.
    pub(crate) fn record_read(&self, kernel: Option<u64>, read_at: u64) {
        if self.read_at.load(Ordering::Relaxed) == 0 {
            self.first_read_at.store(read_at, Ordering::Relaxed);
            if let Some(kernel) = kernel {
                self.setup_wait
                    .store(read_at.saturating_sub(kernel), Ordering::Relaxed);
            }
        }
        self.write(|m| {
            let drained = m.drained_at.load(Ordering::Relaxed);
            m.drained_before.store(drained, Ordering::Relaxed);
            m.kernel.store(kernel.unwrap_or(0), Ordering::Relaxed);
            m.read_at.store(read_at, Ordering::Relaxed);
        });
    }

    /// Records that a read at `at` found the socket empty.
    pub(crate) fn record_drain(&self, at: u64) {
        self.write(|m| m.drained_at.store(at, Ordering::Relaxed));
    }

    /// The marks as they are now; none (the request is dated from its stamping, as an
    /// unstamped one is) if writes kept overlapping the reading.
    pub fn snapshot(&self) -> ReadSnapshot {
        for attempt in 0..MAX_RETRIES {
            let before = self.seq.load(Ordering::Acquire);
            let snapshot = ReadSnapshot {
                kernel: some(self.kernel.load(Ordering::Relaxed)),
                read_at: some(self.read_at.load(Ordering::Relaxed)),
                drained_before: some(self.drained_before.load(Ordering::Relaxed)),
                drained_at: some(self.drained_at.load(Ordering::Relaxed)),
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if before.is_multiple_of(2) && self.seq.load(Ordering::Relaxed) == before {
                return snapshot;
            }
            if attempt < SPIN_RETRIES {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        ReadSnapshot::default()
    }

    /// The [`Arrival`] of a request handed on now, by the connection that left these marks:
    /// what a connection-level service inserts into the request's extensions.
    pub fn arrival_now(&self) -> Arrival {
        let stamped_at = clock::now_ns();
        let marks = self.snapshot();
        let first = !self.handed_any.swap(true, Ordering::Relaxed);
        let setup_wait = if first {
            self.setup_wait_for(marks.kernel)
        } else {
            None
        };
        Arrival {
            kernel: marks.kernel,
            read_at: marks.read_at.unwrap_or(stamped_at),
            drained_at: marks.drained_before,
            stamped_at,
            setup_wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// The preface waited 30 ms for the first read; the client sent its request only then.
    #[test]
    fn only_the_first_request_of_a_connection_carries_its_setup_wait() {
        let marks = ReadMarks::new();
        marks.record_read(Some(10 * MS), 40 * MS);
        marks.record_read(Some(41 * MS), 42 * MS);
        assert_eq!(marks.arrival_now().setup_wait, Some(30 * MS));
        marks.record_read(Some(45 * MS), 46 * MS);
        assert_eq!(
            marks.arrival_now().setup_wait,
            None,
            "only the first request"
        );
    }

    /// grpc-go: nothing sent until the server spoke, so the request's bytes came just after
    /// the accept; the 300 ms in the accept queue was its wait. A client that connected early
    /// and sent later, or an accept wait within the kernel's tick, adds nothing.
    #[test]
    fn a_client_that_waited_for_the_accept_counts_its_time_in_the_queue() {
        let marks = ReadMarks::new();
        marks.record_accept_wait(300 * MS, 1_000 * MS);
        marks.record_read(Some(1_001 * MS), 1_001 * MS + 100_000);
        let arrival = marks.arrival_now();
        assert_eq!(arrival.setup_wait, Some(300 * MS));
        assert_eq!(arrival.arrival().0, 701 * MS);

        let later = ReadMarks::new();
        later.record_accept_wait(300 * MS, 1_000 * MS);
        later.record_read(Some(2_000 * MS), 2_000 * MS + 100_000);
        assert_eq!(later.arrival_now().setup_wait, None, "sent a second after");

        let tick = ReadMarks::new();
        tick.record_accept_wait(4 * MS, 1_000 * MS);
        tick.record_read(Some(1_001 * MS), 1_001 * MS + 100_000);
        assert_eq!(tick.arrival_now().setup_wait, None, "within a jiffy");

        // hyper/tonic: the request was in the socket before the accept; its stamp has it all.
        let queued = ReadMarks::new();
        queued.record_accept_wait(300 * MS, 1_000 * MS);
        queued.record_read(Some(700 * MS), 1_000 * MS + 100_000);
        let arrival = queued.arrival_now();
        assert_eq!(arrival.setup_wait, None);
        assert_eq!(arrival.arrival().0, 700 * MS);
    }

    /// The request came with the preface: its own stamp has the wait, whether the first read
    /// took all of its bytes or (a version sniff) only some.
    #[test]
    fn a_first_request_already_there_at_the_first_read_has_no_setup_wait() {
        let marks = ReadMarks::new();
        marks.record_read(Some(10 * MS), 40 * MS);
        let arrival = marks.arrival_now();
        assert_eq!(arrival.setup_wait, None);
        assert_eq!(arrival.arrival().0, 10 * MS, "counted once, from the stamp");

        let sniffed = ReadMarks::new();
        sniffed.record_read(Some(10 * MS), 40 * MS);
        sniffed.record_read(Some(10 * MS), 40 * MS + 40_000);
        assert_eq!(sniffed.arrival_now().setup_wait, None);
    }

    #[test]
    fn a_read_keeps_the_drain_before_it_not_the_one_after() {
        let marks = ReadMarks::new();
        marks.record_drain(10);
        marks.record_read(Some(15), 20);
        marks.record_drain(25);
        assert_eq!(
            marks.snapshot(),
            ReadSnapshot {
                kernel: Some(15),
                read_at: Some(20),
                drained_before: Some(10),
                drained_at: Some(25),
            }
        );
        let arrival = marks.arrival_now();
        assert_eq!(arrival.drained_at, Some(10));
        assert_eq!(arrival.kernel, Some(15));
        assert_eq!(arrival.read_at, 20);
    }

    #[test]
    fn a_read_without_a_stamp_forgets_the_previous_stamp() {
        let marks = ReadMarks::new();
        marks.record_read(Some(15), 20);
        marks.record_read(None, 30);
        assert_eq!(marks.snapshot().kernel, None);
        assert_eq!(marks.snapshot().drained_before, None);
    }

    /// A writer in a tight loop, as no connection writes: the reader may give up, and then
    /// reads nothing, never one read's stamp with another's time.
    #[test]
    fn snapshots_from_another_thread_are_never_torn() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let marks = Arc::new(ReadMarks::new());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (marks, stop) = (Arc::clone(&marks), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 1;
                while !stop.load(Ordering::Relaxed) {
                    marks.record_read(Some(i), i);
                    i += 1;
                }
            })
        };
        while marks.read_at.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let mut read = 0;
        for _ in 0..20_000 {
            let s = marks.snapshot();
            assert_eq!(s.kernel, s.read_at, "torn snapshot {s:?}");
            read += usize::from(s.kernel.is_some());
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("the writer does not panic");
        assert!(read > 0, "no snapshot read the writer's marks");
    }
}
