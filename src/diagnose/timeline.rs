//! One request's timeline: its polls, its waits for a worker, its parked stretches and the
//! stage open during each, and who held the workers while it waited. The wrappers that poll
//! the request ([`Measured`](super::measured::Measured)), its wakers and the stage spans it
//! opens ([`StageLayer`](super::stage_layer::StageLayer)) all write here; a [`Report`] reads it.

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use super::{
    blame::{self, Culprit},
    clock::PollCpu,
    engine::Engine,
    identity::Identity,
    occupancy,
    report::{Event, EventKind, Report, Split, Wait},
    stage::StageKind,
};

/// Distinct stage names a request's waits are listed under; more are summed under the last.
const MAX_WAITS: usize = 16;
/// Events kept when a request asks for its timeline: enough for any lab request; a request
/// with more polls keeps its first ones and counts the rest.
pub const MAX_EVENTS: usize = 512;

/// A stage span open now.
#[derive(Debug, Clone, Copy)]
struct OpenStage {
    span: u64,
    name: &'static str,
    kind: Option<StageKind>,
}

/// The request is parked (waiting for a wake) since `since`; `depth` says which wrapper.
#[derive(Debug, Clone, Copy)]
struct Park {
    since: u64,
    depth: usize,
}

#[derive(Debug, Default)]
struct State {
    split: Split,
    waits: Vec<Wait>,
    open: Vec<OpenStage>,
    parked: Option<Park>,
    /// Start of the poll running now at depth 0 (the request's own future) and deeper (its
    /// handler task), if any: a report taken inside one counts it so far.
    polling: [Option<u64>; 2],
    culprits: Vec<Culprit>,
    events: Vec<Event>,
    events_dropped: u64,
}

impl State {
    fn event(&mut self, want: bool, event: Event) {
        if !want {
            return;
        }
        if self.events.len() < MAX_EVENTS {
            self.events.push(event);
        } else {
            self.events_dropped += 1;
        }
    }

    /// Charges the parked stretch up to `until` to the innermost open stage.
    fn charge_idle(&mut self, want_events: bool, until: u64) {
        let Some(park) = self.parked.as_mut() else {
            return;
        };
        let from = park.since;
        let ns = until.saturating_sub(from);
        park.since = until;
        if ns == 0 {
            return;
        }
        let stage = self.open.last().copied();
        let (name, kind) = stage.map_or(("", None), |s| (s.name, s.kind));
        self.split.idle[StageKind::slot(kind)] += ns;
        let known = self.waits.iter().position(|w| w.stage == name);
        match known {
            Some(i) => self.waits[i].ns += ns,
            None if self.waits.len() < MAX_WAITS => self.waits.push(Wait {
                stage: name,
                kind,
                ns,
            }),
            None => {
                if let Some(last) = self.waits.last_mut() {
                    last.ns += ns;
                }
            }
        }
        self.event(
            want_events,
            Event {
                kind: EventKind::Idle,
                from,
                to: until,
                on_cpu: 0,
                stage: name,
            },
        );
    }
}

/// The shared record of one request. See the module docs.
#[derive(Debug)]
pub struct Timeline {
    pub(crate) identity: Arc<Identity>,
    /// The request's span: events about it (long polls, blame) and its report go here.
    pub(crate) span: tracing::Span,
    pub(crate) engine: Arc<Engine>,
    pub(crate) started: u64,
    want_events: bool,
    /// Wrappers (handler tasks) started inside the request's first one and not yet finished:
    /// while one runs, the outer wrapper's own parked time is the inner one's to account.
    delegates: AtomicUsize,
    state: Mutex<State>,
}

impl Timeline {
    pub(crate) fn new(
        identity: Arc<Identity>,
        span: tracing::Span,
        engine: Arc<Engine>,
        started: u64,
        want_events: bool,
    ) -> Self {
        Self {
            identity,
            span,
            engine,
            started,
            want_events,
            delegates: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn delegate_started(&self) -> usize {
        self.delegates.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(crate) fn delegate_finished(&self) {
        self.delegates.fetch_sub(1, Ordering::AcqRel);
    }

    /// A wrapper at `depth` was polled at `now` after being ready since `ready_since` (woken,
    /// or handed over). Records the wait for a worker, blames it if long enough, and ends any
    /// parked stretch the poll ends.
    pub(crate) fn poll_started(&self, depth: usize, ready_since: u64, now: u64) {
        // While a handler task the request handed its work to is running, that task's waits
        // are the request's; the outer future's own wait is not counted twice.
        let covered = self.delegates.load(Ordering::Acquire) > depth;
        let waited = if covered {
            0
        } else {
            now.saturating_sub(ready_since)
        };
        // Blame outside the lock: it reads every worker's slot.
        let blamed = (waited >= super::clock::nanos(self.engine.config.blame_from)).then(|| {
            let during = |runtime| {
                blame::blame(occupancy::holders_during(
                    runtime,
                    ready_since,
                    now,
                    &self.identity,
                ))
            };
            let own = during(Some(occupancy::runtime_key()));
            // A wait its own runtime does not explain was a wait for a CPU: the worker was free
            // but the cores ran other threads, such as another runtime's long polls.
            if own.1 * 2 < waited {
                let any = during(None);
                if any.1 > own.1 {
                    return any;
                }
            }
            own
        });
        let mut state = self.lock();
        if state.parked.is_some_and(|p| p.depth == depth) {
            // Polled without a wake of ours (a spurious poll): parked until now.
            state.charge_idle(self.want_events, now);
            state.parked = None;
        }
        state.split.scheduled += waited;
        state.polling[depth.min(1)] = Some(now);
        if waited > 0 {
            state.event(
                self.want_events,
                Event {
                    kind: EventKind::Scheduled,
                    from: ready_since,
                    to: now,
                    on_cpu: 0,
                    stage: "",
                },
            );
        }
        if let Some((culprits, blamed)) = blamed {
            state.split.blamed += blamed;
            blame::merge(&mut state.culprits, culprits);
        }
    }

    /// A poll at `depth` ran from `start` to `end` and used the CPU as `used` says.
    pub(crate) fn poll_ended(&self, depth: usize, start: u64, end: u64, used: PollCpu) {
        let mut state = self.lock();
        state.polling[depth.min(1)] = None;
        let ns = end.saturating_sub(start);
        state.split.busy += ns;
        state.split.on_cpu += used.on_cpu;
        state.split.cpu_wait += used.cpu_wait;
        state.split.polls += 1;
        state.split.max_poll = state.split.max_poll.max(ns);
        state.event(
            self.want_events,
            Event {
                kind: EventKind::Poll,
                from: start,
                to: end,
                on_cpu: used.on_cpu,
                stage: "",
            },
        );
    }

    /// The wrapper at `depth` returned `Pending` at `end`. Unless its waker was already called
    /// (`woken_at` set, during the poll or since), or an inner wrapper accounts for this time,
    /// the request is parked. Checked under the lock that [`Timeline::woken`] takes, so a wake
    /// racing with the park is counted once.
    pub(crate) fn park(&self, depth: usize, end: u64, woken_at: &AtomicU64) {
        let mut state = self.lock();
        let woken = woken_at.load(Ordering::Acquire);
        if woken != 0 {
            // Ready again, but not before the poll that was running ended.
            if woken < end {
                woken_at.store(end, Ordering::Release);
            }
            return;
        }
        if self.delegates.load(Ordering::Acquire) > depth {
            return;
        }
        state.parked = Some(Park { since: end, depth });
    }

    /// The wrapper at `depth` was woken at `now`: its parked stretch ends.
    pub(crate) fn woken(&self, depth: usize, now: u64) {
        let mut state = self.lock();
        if state.parked.is_some_and(|p| p.depth == depth) {
            state.charge_idle(self.want_events, now);
            state.parked = None;
        }
    }

    /// A stage span opened inside the request.
    pub(crate) fn stage_opened(&self, span: u64, name: &'static str, kind: Option<StageKind>) {
        let now = super::clock::now_ns();
        let mut state = self.lock();
        state.charge_idle(self.want_events, now);
        state.open.push(OpenStage { span, name, kind });
    }

    /// A stage span closed.
    pub(crate) fn stage_closed(&self, span: u64) {
        let now = super::clock::now_ns();
        let mut state = self.lock();
        if let Some(i) = state.open.iter().rposition(|s| s.span == span) {
            state.charge_idle(self.want_events, now);
            state.open.remove(i);
        }
    }

    /// What the request has measured up to `now`. A poll still running (the one taking the
    /// report, typically) counts as busy and computing so far.
    pub fn report(&self, now: u64) -> Report {
        let mut state = self.lock();
        state.charge_idle(self.want_events, now);
        let mut split = state.split;
        for &start in state.polling.iter().flatten() {
            let so_far = now.saturating_sub(start);
            split.busy += so_far;
            split.on_cpu += so_far;
            split.polls += 1;
            split.max_poll = split.max_poll.max(so_far);
        }
        split.total = now.saturating_sub(self.started);
        Report {
            identity: Arc::clone(&self.identity),
            started: self.started,
            split,
            waits: state.waits.clone(),
            culprits: state.culprits.clone(),
            events: state.events.clone(),
            events_dropped: state.events_dropped,
        }
    }
}
