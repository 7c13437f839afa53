//! When a request's task first ran its service stack, for the layer to tell a wait for a
//! worker from a wait in the layers in front of it.
//!
//! From its arrival to the layer's `call`, a request is in one of two places: waiting for its
//! task's first poll (a wait for a worker), or in that task, inside tower layers that come
//! before the engine's (a concurrency limit waiting for a permit, a rate limit). Both end at
//! the `call`, so the layer alone cannot tell them apart: a request queued 250 ms for a
//! concurrency limit on an idle server read `runtime-contention scheduled=250ms`. The stamping
//! service wraps the whole stack's future ([`Stamped`]), notes its first poll, and, once the
//! stack has returned `Pending`, says it around each poll in a thread-local that the layer
//! reads in its `call`.

use std::cell::Cell;

thread_local! {
    /// The first poll of the request future being polled on this thread (engine ns); 0: none
    /// is known.
    static FIRST_POLLED: Cell<u64> = const { Cell::new(0) };
}

/// When the request whose stack is being polled here first ran, if a [`Stamped`] future
/// said (`arrival::serve`, or a connection-level service built on [`Stamp`]).
///
/// [`Stamped`]: super::stamp::Stamped
/// [`Stamp`]: super::Stamp
pub(crate) fn task_first_polled() -> Option<u64> {
    let at = FIRST_POLLED.with(Cell::get);
    (at != 0).then_some(at)
}

/// Says `at` (0: nothing) to [`task_first_polled`] until dropped, then what was said before.
#[cfg(feature = "serve")]
pub(crate) struct Scope(u64);

#[cfg(feature = "serve")]
impl Scope {
    pub(crate) fn enter(at: u64) -> Self {
        Self(FIRST_POLLED.with(|cell| cell.replace(at)))
    }
}

#[cfg(feature = "serve")]
impl Drop for Scope {
    fn drop(&mut self) {
        FIRST_POLLED.with(|cell| cell.set(self.0));
    }
}

#[cfg(all(test, feature = "serve"))]
mod tests {
    use super::*;

    #[test]
    fn a_scope_says_its_time_and_restores_the_one_before() {
        assert_eq!(task_first_polled(), None);
        {
            let _outer = Scope::enter(5);
            assert_eq!(task_first_polled(), Some(5));
            {
                let _inner = Scope::enter(9);
                assert_eq!(task_first_polled(), Some(9));
            }
            assert_eq!(task_first_polled(), Some(5));
        }
        assert_eq!(task_first_polled(), None);
    }
}
