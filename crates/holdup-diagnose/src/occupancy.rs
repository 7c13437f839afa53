//! Who holds each runtime worker: the poll running on every worker thread now, and its recent
//! long polls. A request that waited for a worker asks this who ran during its wait.
//!
//! Each worker thread has a slot, written only by that thread (an uncontended lock) and read
//! only by a request that actually waited ([`holders_during`]). Requests mark their own polls
//! (the [`Measured`](super::measured::Measured) wrapper does it); the runtime's poll hooks
//! ([`install_hooks`], `tokio_unstable`) add every other task, so that a background task that
//! hogs a worker is named too (by its task id and spawn location, and by the name a service
//! gave it with [`name_task`]).

use std::{
    collections::{HashMap, VecDeque},
    panic::Location,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use super::{clock::nanos, identity::Identity};

/// Polls at least this long are remembered: shorter ones cannot make a wait worth blaming.
/// Scaled under valgrind ([`SLOWDOWN`](super::clock::SLOWDOWN)).
pub(crate) const RECORD_POLLS_FROM: Duration = Duration::from_micros(200 * super::clock::SLOWDOWN);
/// Long polls remembered per worker. Polls of [`RECORD_POLLS_FROM`] back to back fill it in
/// 200 ms, so a wait up to that long behind the shortest polls recorded is blamed in full (and
/// seconds of longer ones, such as the Lab's `CpuBound`); 128 covered only 26 ms of them. A
/// blamed wait scans every worker's list (about 40 KB a worker), which costs microseconds
/// against a wait of a millisecond or more.
pub(crate) const RECENT_POLLS: usize = 1_024;
/// Names of non-request tasks remembered: tasks a service names with [`name_task`] (holdup
/// itself names none, which keeps task ends free of the lock naming takes).
const MAX_TASK_NAMES: usize = 1_024;

/// What held a worker.
#[derive(Debug, Clone)]
pub enum Holder {
    /// A request measured by the engine.
    Request(Arc<Identity>),
    /// Any other task, seen by the runtime's poll hooks.
    Task {
        id: tokio::task::Id,
        spawned_at: &'static Location<'static>,
    },
}

impl Holder {
    /// Same holder (for merging one culprit's polls).
    pub fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Request(a), Self::Request(b)) => Arc::ptr_eq(a, b),
            (Self::Task { id: a, .. }, Self::Task { id: b, .. }) => a == b,
            _ => false,
        }
    }

    /// Whether this is the poll of request `who` (by pointer: no `Holder` is built to compare).
    pub(crate) fn is_request(&self, who: &Arc<Identity>) -> bool {
        matches!(self, Self::Request(r) if Arc::ptr_eq(r, who))
    }

    /// A task's name as given to [`name_task`], if any.
    pub fn task_name(&self) -> Option<String> {
        match self {
            Self::Request(_) => None,
            Self::Task { .. } if !ANY_NAMES.load(std::sync::atomic::Ordering::Relaxed) => None,
            Self::Task { id, .. } => NAMES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(id)
                .cloned(),
        }
    }
}

/// One poll: when it ran and who ran it.
#[derive(Debug, Clone)]
pub struct Held {
    pub start: u64,
    pub end: u64,
    pub holder: Holder,
}

#[derive(Debug)]
struct InProgress {
    start: u64,
    holder: Option<Holder>,
    /// Begun by a runtime hook (which will also end it), not by a request's wrapper.
    hooked: bool,
}

#[derive(Debug, Default)]
struct SlotState {
    current: Option<InProgress>,
    recent: VecDeque<Held>,
}

#[derive(Debug)]
struct Slot {
    runtime: u64,
    /// A runtime worker: it parked in the scheduler. Until a worker first parks its polls are
    /// not recorded by the hooks (requests still mark their own), so that a thread that is not
    /// a worker is never taken for one.
    worker: std::sync::atomic::AtomicBool,
    state: Mutex<SlotState>,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SlotState {
    fn end(&mut self, end: u64) {
        let Some(poll) = self.current.take() else {
            return;
        };
        let Some(holder) = poll.holder else { return };
        if end.saturating_sub(poll.start) < nanos(RECORD_POLLS_FROM) {
            return;
        }
        if self.recent.len() == RECENT_POLLS {
            self.recent.pop_front();
        }
        self.recent.push_back(Held {
            start: poll.start,
            end,
            holder,
        });
    }
}

static SLOTS: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());
static NAMES: std::sync::LazyLock<Mutex<HashMap<tokio::task::Id, String>>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));
/// Whether [`name_task`] was ever called. Every task's end looks its name up to forget it, on
/// every worker of every hooked runtime: two a request in `holdup serve` (its HTTP/2 stream
/// and its handler). Without names there is nothing to forget, and the one process-wide lock
/// is not taken at all.
static ANY_NAMES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    static SLOT: Arc<Slot> = register();
    /// Whether this thread has a slot: asking who polls on a thread that has none (a library's
    /// own thread waking a request) must not register one for it.
    static HAS_SLOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The poll a runtime hook began on this thread is over: its after-poll hook ran. It stays
    /// the slot's `current` until the thread's next poll or park, whose clock read dates its
    /// end (see [`install_hooks_with`]); to the thread itself it is over now ([`role_here`]).
    /// Only this thread reads it, so it is not in the slot.
    static HOOKED_OVER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn register() -> Arc<Slot> {
    let slot = Arc::new(Slot {
        runtime: runtime_key(),
        worker: std::sync::atomic::AtomicBool::new(false),
        state: Mutex::new(SlotState::default()),
    });
    let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
    slots.retain(|s| s.strong_count() > 0);
    slots.push(Arc::downgrade(&slot));
    HAS_SLOT.with(|has| has.set(true));
    slot
}

/// What the thread running this code is to the runtime, for a wake: see
/// [`crate::wake_source`].
#[derive(Debug, Clone)]
pub(crate) enum ThreadRole {
    /// A request's or (hooked) task's poll runs on it now.
    Polling(Holder),
    /// A runtime worker between polls: its I/O driver or timer.
    Worker,
    /// A thread of a runtime that is not a worker: the blocking pool. Told apart from a
    /// worker only when the runtime has the engine's hooks (a worker's park marks it).
    Blocking,
    /// A thread no tokio runtime owns.
    Foreign,
}

/// See [`ThreadRole`].
pub(crate) fn role_here() -> ThreadRole {
    if HAS_SLOT.with(std::cell::Cell::get) {
        let (holder, worker) = SLOT.with(|slot| {
            let over = HOOKED_OVER.with(std::cell::Cell::get);
            let holder = slot
                .lock()
                .current
                .as_ref()
                .filter(|poll| !(poll.hooked && over))
                .and_then(|poll| poll.holder.clone());
            (
                holder,
                slot.worker.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        if let Some(holder) = holder {
            return ThreadRole::Polling(holder);
        }
        if worker || !HOOKED.load(std::sync::atomic::Ordering::Relaxed) {
            return ThreadRole::Worker;
        }
    }
    if tokio::runtime::Handle::try_current().is_err() {
        ThreadRole::Foreign
    } else if HOOKED.load(std::sync::atomic::Ordering::Relaxed) {
        ThreadRole::Blocking
    } else {
        ThreadRole::Worker
    }
}

/// The request or task polling on this thread now, if any.
pub(crate) fn current_holder() -> Option<Holder> {
    match role_here() {
        ThreadRole::Polling(holder) => Some(holder),
        _ => None,
    }
}

/// The runtime this thread works for (0 where tokio cannot say: all one runtime then).
pub fn runtime_key() -> u64 {
    #[cfg(tokio_unstable)]
    {
        use std::hash::{Hash, Hasher};
        tokio::runtime::Handle::try_current().map_or(0, |handle| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            handle.id().hash(&mut hasher);
            hasher.finish().max(1)
        })
    }
    #[cfg(not(tokio_unstable))]
    {
        0
    }
}

/// Marks the start of a request's poll on this worker, and says when it started. Returns
/// whether the mark is the request's own (no hook began this task's poll), in which case
/// [`request_poll_ended`] ends it.
///
/// The first request poll in a task's poll starts when the task's did (the hook read the
/// clock a moment ago: the task's own work before it, microseconds, counts as the
/// request's), but not before the request was `ready` (woken, or created inside this poll);
/// any other starts `now()`.
pub(crate) fn request_poll_started(
    who: &Arc<Identity>,
    ready: Option<u64>,
    now: impl Fn() -> u64,
) -> (bool, u64) {
    SLOT.with(|slot| {
        let over = HOOKED_OVER.with(std::cell::Cell::get);
        let mut state = slot.lock();
        if over && state.current.as_ref().is_some_and(|poll| poll.hooked) {
            // A request polled outside any task's poll, after the thread's last one: that
            // one ended by now.
            state.end(now());
        }
        match &mut state.current {
            Some(poll) if poll.hooked => {
                let start = match poll.holder {
                    Some(Holder::Task { .. }) => ready.map_or(poll.start, |r| r.max(poll.start)),
                    _ => now(),
                };
                poll.holder = Some(Holder::Request(Arc::clone(who)));
                (false, start)
            }
            _ => {
                let start = now();
                state.current = Some(InProgress {
                    start,
                    holder: Some(Holder::Request(Arc::clone(who))),
                    hooked: false,
                });
                (true, start)
            }
        }
    })
}

pub(crate) fn request_poll_ended(own: bool, end: u64) {
    if own {
        SLOT.with(|slot| slot.lock().end(end));
    }
}

/// Remembers `name` for a task that is not a request, so that blame can name it.
pub fn name_task(id: tokio::task::Id, name: &str) {
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    ANY_NAMES.store(true, std::sync::atomic::Ordering::Relaxed);
    if names.len() < MAX_TASK_NAMES {
        names.insert(id, name.to_owned());
    }
}

fn forget_task(id: tokio::task::Id) {
    // Relaxed: should a thread not see the first name yet, that name stays in the map, as a
    // name given after its task ended does; the map is capped at MAX_TASK_NAMES either way.
    if !ANY_NAMES.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    NAMES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
}

/// Whether any runtime got the engine's hooks: a service whose runtime did not is told once,
/// at its first request, what blame cannot name.
static HOOKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says once, at the first request, what the engine cannot measure in this build or runtime.
pub(crate) fn warn_once_if_unhooked() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        if !cfg!(tokio_unstable) {
            tracing::warn!(
                target: "holdup_diagnose",
                "built without `--cfg tokio_unstable`: tokio's poll hooks are not available, so \
                 blame names only requests, never other tasks that hold a worker; set \
                 RUSTFLAGS=\"--cfg tokio_unstable\" (or [build] rustflags in .cargo/config.toml) \
                 and build the runtime with holdup_diagnose::install_hooks"
            );
        } else if !HOOKED.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                target: "holdup_diagnose",
                "the runtime has no holdup_diagnose hooks: blame names only requests, never \
                 other tasks that hold a worker; build it with holdup_diagnose::install_hooks"
            );
        }
    });
}

/// A callback of a runtime builder.
type Callback = Arc<dyn Fn() + Send + Sync>;
/// A task callback of a runtime builder.
#[cfg(tokio_unstable)]
type TaskCallback = Arc<dyn Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync>;

/// Callbacks of your own for the runtime events the engine's hooks use. tokio keeps one
/// callback per event, so [`install_hooks`] would replace a callback set before it; given
/// here, yours runs right after the engine's.
///
/// ```
/// let mut builder = tokio::runtime::Builder::new_current_thread();
/// let hooks = holdup_diagnose::Hooks::new().on_thread_park(|| { /* yours */ });
/// holdup_diagnose::install_hooks_with(&mut builder, hooks);
/// ```
#[derive(Clone, Default)]
pub struct Hooks {
    thread_park: Option<Callback>,
    #[cfg(tokio_unstable)]
    before_poll: Option<TaskCallback>,
    #[cfg(tokio_unstable)]
    after_poll: Option<TaskCallback>,
    #[cfg(tokio_unstable)]
    terminate: Option<TaskCallback>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

impl Hooks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` whenever a worker thread parks (`Builder::on_thread_park`).
    #[must_use]
    pub fn on_thread_park(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.thread_park = Some(Arc::new(f));
        self
    }

    /// Runs `f` before each task poll (`Builder::on_before_task_poll`).
    #[cfg(tokio_unstable)]
    #[must_use]
    pub fn on_before_task_poll(
        mut self,
        f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.before_poll = Some(Arc::new(f));
        self
    }

    /// Runs `f` after each task poll (`Builder::on_after_task_poll`).
    #[cfg(tokio_unstable)]
    #[must_use]
    pub fn on_after_task_poll(
        mut self,
        f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.after_poll = Some(Arc::new(f));
        self
    }

    /// Runs `f` when a task terminates (`Builder::on_task_terminate`).
    #[cfg(tokio_unstable)]
    #[must_use]
    pub fn on_task_terminate(
        mut self,
        f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.terminate = Some(Arc::new(f));
        self
    }
}

/// Adds the engine's poll hooks to a runtime builder: every task's polls are then seen, not
/// only requests', and blame can name a background task that holds a worker. Needs
/// `--cfg tokio_unstable`; without it only the thread-park hook is set, blame names requests
/// only, and the first request logs a warning saying so.
///
/// It sets the builder's `on_thread_park`, `on_before_task_poll`, `on_after_task_poll` and
/// `on_task_terminate` callbacks, replacing any set before: to keep yours, pass them through
/// [`install_hooks_with`].
///
/// ```
/// let runtime = holdup_diagnose::install_hooks(&mut tokio::runtime::Builder::new_current_thread())
///     .enable_all()
///     .build()
///     .unwrap();
/// # drop(runtime);
/// ```
pub fn install_hooks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    install_hooks_with(builder, Hooks::default())
}

/// [`install_hooks`], also running `yours` after each of the engine's callbacks.
pub fn install_hooks_with(
    builder: &mut tokio::runtime::Builder,
    yours: Hooks,
) -> &mut tokio::runtime::Builder {
    HOOKED.store(true, std::sync::atomic::Ordering::Relaxed);
    let park = yours.thread_park.clone();
    builder.on_thread_park(move || {
        SLOT.with(|slot| {
            slot.worker
                .store(true, std::sync::atomic::Ordering::Relaxed);
            // The last poll the hooks began before the park ended by now.
            if cfg!(tokio_unstable) {
                slot.lock().end(super::clock::now_ns());
            }
        });
        if let Some(park) = &park {
            park();
        }
    });
    #[cfg(tokio_unstable)]
    {
        let (before, after, terminate) = (yours.before_poll, yours.after_poll, yours.terminate);
        builder
            .on_before_task_poll(move |meta| {
                let holder = Holder::Task {
                    id: meta.id(),
                    spawned_at: meta.spawned_at(),
                };
                let now = super::clock::now_ns();
                SLOT.with(|slot| {
                    if !slot.worker.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let mut state = slot.lock();
                    // The poll before this one on the thread ended by now.
                    state.end(now);
                    state.current = Some(InProgress {
                        start: now,
                        holder: Some(holder),
                        hooked: true,
                    });
                });
                HOOKED_OVER.with(|over| over.set(false));
                if let Some(before) = &before {
                    before(meta);
                }
            })
            .on_after_task_poll(move |meta| {
                // No clock read and no lock: the poll's end is dated by the thread's next
                // poll or park, microseconds of scheduler work later (a poll counts only when
                // it lasts `RECORD_POLLS_FROM`). That halves the hooks' clock reads, which at
                // about 25 ns each were the largest part of what the hooks cost a worker.
                HOOKED_OVER.with(|over| over.set(true));
                if let Some(after) = &after {
                    after(meta);
                }
            })
            .on_task_terminate(move |meta| {
                forget_task(meta.id());
                if let Some(terminate) = &terminate {
                    terminate(meta);
                }
            });
    }
    #[cfg(not(tokio_unstable))]
    let _ = forget_task;
    builder
}

/// The polls that held a worker of `runtime` (of any runtime of the process, with `None`)
/// between `from` and `to`, clipped to that window, other than the victim's own. The poll now
/// running on this thread is the victim's and is left out.
pub(crate) fn holders_during(
    runtime: Option<u64>,
    from: u64,
    to: u64,
    victim: &Arc<Identity>,
) -> Vec<Held> {
    let mine = SLOT.with(Arc::clone);
    let slots: Vec<Arc<Slot>> = SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|slot| runtime.is_none_or(|r| slot.runtime == r))
        .collect();
    let mut held = Vec::new();
    for slot in slots {
        let state = slot.lock();
        // Newest first, and no further back than the window: a worker's polls end in the
        // order they are recorded, so the rest ended before it. (A full scan of the 1 024 was
        // 1 % of `holdup serve`'s CPU under load, where most requests wait a millisecond.)
        for poll in state.recent.iter().rev().take_while(|poll| poll.end > from) {
            // `from < to` too: a wake stamped on another thread can land after the poll began.
            if poll.start < to && from < to && !poll.holder.is_request(victim) {
                held.push(Held {
                    start: poll.start.max(from),
                    end: poll.end.min(to),
                    holder: poll.holder.clone(),
                });
            }
        }
        if Arc::ptr_eq(&slot, &mine) {
            continue;
        }
        // A poll that began only just now is not what the victim waited for.
        if let Some(InProgress {
            start,
            holder: Some(holder),
            ..
        }) = &state.current
            && to.saturating_sub(*start) >= nanos(RECORD_POLLS_FROM)
            && (*start).max(from) < to
            && !holder.is_request(victim)
        {
            held.push(Held {
                start: (*start).max(from),
                end: to,
                holder: holder.clone(),
            });
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks `polls` (start, end) of a request on a worker thread of their own, then runs
    /// `check` with a look-up that keeps only that request's polls found by [`holders_during`]
    /// (for a bystander), while the thread still lives and keeps its slot.
    fn with_polls_on_a_worker(
        polls: Vec<(u64, u64)>,
        check: impl FnOnce(&dyn Fn(u64, u64) -> Vec<(u64, u64)>),
    ) {
        let culprit = Identity::untraced("/test.occupancy.Svc/Culprit");
        let on_worker = Arc::clone(&culprit);
        let (marked, marked_rx) = std::sync::mpsc::channel();
        let (done, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            for (start, end) in polls {
                let (own, _) = request_poll_started(&on_worker, None, || start);
                request_poll_ended(own, end);
            }
            marked.send(()).unwrap();
            let _ = done_rx.recv();
        });
        marked_rx.recv().unwrap();
        let bystander = Identity::untraced("/test.occupancy.Svc/Bystander");
        let ours = |from: u64, to: u64| {
            holders_during(None, from, to, &bystander)
                .iter()
                .filter(|h| h.holder.is_request(&culprit))
                .map(|h| (h.start, h.end))
                .collect::<Vec<_>>()
        };
        check(&ours);
        done.send(()).unwrap();
        worker.join().unwrap();
    }

    /// In a task's poll that the runtime's hook began, a request's first poll starts when the
    /// task's did (not before the request was ready), and a second one in the same task poll
    /// reads the clock.
    #[cfg(tokio_unstable)]
    #[test]
    fn a_requests_first_poll_in_a_task_starts_with_the_tasks() {
        use std::sync::atomic::Ordering;

        use crate::clock::now_ns;
        let runtime = install_hooks(&mut tokio::runtime::Builder::new_multi_thread())
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let who = Identity::untraced("/test.occupancy.Svc/First");
        let ms = 1_000_000;
        // A worker's polls are hooked once it has parked.
        let key = runtime.block_on(async { runtime_key() });
        let parked = || {
            SLOTS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter_map(Weak::upgrade)
                .any(|slot| slot.runtime == key && slot.worker.load(Ordering::Relaxed))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !parked() {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never parked"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (first, second, body_began) = runtime
            .block_on(runtime.spawn(async move {
                let body_began = now_ns();
                std::thread::sleep(std::time::Duration::from_millis(2));
                let first = request_poll_started(&who, None, now_ns);
                let second = request_poll_started(&who, None, now_ns);
                (first, second, body_began)
            }))
            .unwrap();
        assert!(
            !first.0 && !second.0,
            "the hook's marks, not the request's own"
        );
        assert!(
            first.1 <= body_began,
            "the task poll's start: {first:?}, {body_began}"
        );
        assert!(
            second.1 >= body_began + 2 * ms,
            "read after the sleep: {second:?}"
        );
        let who = Identity::untraced("/test.occupancy.Svc/Ready");
        let (started, ready) = runtime
            .block_on(runtime.spawn(async move {
                let ready = now_ns();
                (request_poll_started(&who, Some(ready), now_ns), ready)
            }))
            .unwrap();
        assert_eq!(started, (false, ready), "not before the request was ready");
    }

    /// A wake stamped on another thread can land after the victim's poll began: a window that
    /// ends before it starts holds no poll (clipped, it would have a negative length).
    #[test]
    fn an_inverted_window_holds_nothing() {
        with_polls_on_a_worker(vec![(1_000, 1_000_000)], |ours| {
            assert_eq!(ours(500_000, 600_000), [(500_000, 600_000)]);
            assert_eq!(ours(600_000, 500_000), []);
        });
    }

    /// The look-up reads a worker's polls newest first and stops at the window's start: a
    /// window over older polls still finds them, and one after them finds none.
    #[test]
    fn a_window_finds_the_polls_it_overlaps_among_many() {
        let ms = 1_000_000;
        // Ten polls of 1 ms, one every 10 ms: 10..11 ms, 20..21 ms, ... 100..101 ms.
        let polls = (1..=10).map(|i| (i * 10 * ms, i * 10 * ms + ms)).collect();
        with_polls_on_a_worker(polls, |ours| {
            assert_eq!(
                ours(15 * ms, 35 * ms),
                [(30 * ms, 31 * ms), (20 * ms, 21 * ms)]
            );
            assert_eq!(ours(0, 200 * ms).len(), 10);
            assert_eq!(ours(102 * ms, 200 * ms), []);
        });
    }
}
