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
    clock::{CpuMark, PollCpu},
    engine::Engine,
    identity::Identity,
    occupancy::{self, Holder},
    report::{Event, EventKind, Report, Split, Wait},
    resource::{Pending, ResourceKind, ResourceRef},
    stage::StageKind,
    wait_name::{self, Naming},
    wake_source::WokenBy,
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

/// The request is parked (waiting for a wake) since `since`; `depth` says which wrapper;
/// `on`: the tokio resources it parked on, if tokio said.
#[derive(Debug, Clone, Copy)]
struct Park {
    since: u64,
    depth: usize,
    on: Pending,
}

/// Parked stretches of a millisecond or more that may be network waits: named at the request's
/// next poll (or its report), from the connections that received data when they ended.
const NAME_NETWORK_FROM: u64 = 1_000_000;

/// A parked stretch to be named by [`wait_name::network`] at the next poll or the report.
#[derive(Debug, Clone)]
struct Unnamed {
    from: u64,
    to: u64,
    ns: u64,
    /// The stage open (no kind) or resource, for a stretch that turns out not to be one.
    name: &'static str,
    /// Its kind then (a timer that may have fired), if any.
    otherwise: Option<StageKind>,
    by: WokenBy,
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
    /// The CPU clocks of the thread running each of those polls at its start: a report taken
    /// inside a poll (a handler that builds its reply in the poll that did its work) splits
    /// the poll so far as a finished one would be split.
    running: [Option<(CpuMark, std::thread::ThreadId)>; 2],
    culprits: Vec<Culprit>,
    events: Vec<Event>,
    events_dropped: u64,
    unnamed: Vec<Unnamed>,
    /// The end of the latest stretch charged to the split. The request's own future and its
    /// handler task run on different threads, so their stretches can overlap (a wake of the
    /// future while the task computes, a poll of each at the hand-over); each instant is
    /// charged at most once, so that the parts never add up to more than the total. A stretch
    /// reported after a later one has been charged loses the part before that one's end even
    /// where nothing else covered it (a spurious poll of the outer future inside a parked
    /// stretch), so the parts can fall short of the total by such gaps.
    charged_to: u64,
}

impl State {
    /// Claims `from..to` for the split: the part not charged yet.
    fn claim(&mut self, from: u64, to: u64) -> u64 {
        let from = from.max(self.charged_to);
        self.charged_to = self.charged_to.max(to);
        to.saturating_sub(from)
    }

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

    /// Charges the parked stretch up to `until` to the innermost open stage, if that stage has
    /// a kind, or else to what measurement names ([`wait_name`]); `by`: who woke it, when a
    /// wake ends the stretch.
    fn charge_idle(
        &mut self,
        want_events: bool,
        until: u64,
        by: Option<&WokenBy>,
        victim: &Arc<Identity>,
    ) {
        let Some(park) = self.parked.as_mut() else {
            return;
        };
        let from = park.since;
        park.since = until;
        let mut on = park.on;
        if matches!(by, Some(WokenBy::Driver)) {
            // Of the timers pending (a sleep under a request deadline's), the one that fired.
            let fired = |timer: Option<ResourceRef>| {
                let deadline = super::stage_layer::deadline_of(timer?.span)?;
                Some(until.saturating_add(super::resource::FIRED_WITHIN) >= deadline)
            };
            match (fired(on.timer), fired(on.earlier_timer)) {
                (_, Some(true)) => {
                    on.timer = on.earlier_timer;
                    on.timer_fired = Some(true);
                }
                (latest, _) => on.timer_fired = latest,
            }
        }
        let ns = self.claim(from, until);
        if ns == 0 {
            return;
        }
        let stage = self.open.last().copied();
        let stage_name = stage.map_or("", |s| s.name);
        let naming = wait_name::name(on, by);
        let lock = on.other.filter(|r| r.kind == ResourceKind::Lock);
        // Only a lock the wake says was waited for (not a timeout around it that fired).
        let queued = matches!(
            naming,
            Naming::Known {
                kind: Some(StageKind::Queue),
                ..
            }
        );
        if let Some(resource) = lock.filter(|_| queued && by.is_some()) {
            let named = self.blame_holders(resource, from, until, ns, victim);
            // A permit taken with `try_acquire` (tower's concurrency limit takes its permits
            // so) is not instrumented by tokio, so its holder is not known; the one who gave
            // it back, and so woke this request, held it.
            if !named
                && let Some(WokenBy::Poll(holder)) = by
                && !holder.is_request(victim)
            {
                self.blame_waker(holder, ns, want_events);
            }
        }
        if let Some(kind) = stage.and_then(|s| s.kind) {
            self.add_idle(want_events, stage_name, Some(kind), ns, from, until);
            return;
        }
        let (kind, name) = match naming {
            Naming::Known { kind, name } => (kind, name),
            Naming::Network { name, otherwise } => {
                let name = if name.is_empty() { stage_name } else { name };
                if let Some(by) = by.filter(|_| ns >= NAME_NETWORK_FROM) {
                    self.unnamed.push(Unnamed {
                        from,
                        to: until,
                        ns,
                        name,
                        otherwise,
                        by: by.clone(),
                    });
                    return;
                }
                (otherwise, name)
            }
        };
        let name = if name.is_empty() || (wait_name::is_generic(name) && !stage_name.is_empty()) {
            stage_name
        } else {
            name
        };
        self.add_idle(want_events, name, kind, ns, from, until);
        if kind.is_none()
            && let Some(WokenBy::Poll(holder)) = by
        {
            self.blame_waker(holder, ns, want_events);
        }
    }

    /// Adds `ns` of parked time under `name` and `kind`.
    fn add_idle(
        &mut self,
        want_events: bool,
        name: &'static str,
        kind: Option<StageKind>,
        ns: u64,
        from: u64,
        until: u64,
    ) {
        self.split.idle[StageKind::slot(kind)] += ns;
        let known = self
            .waits
            .iter()
            .position(|w| w.stage == name && w.kind == kind);
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

    /// The holders of the lock `resource` during the wait `from..until` (`ns` of it charged
    /// here) are its culprits, each with the time it held the lock then. Returns whether any
    /// holder was known.
    fn blame_holders(
        &mut self,
        resource: ResourceRef,
        from: u64,
        until: u64,
        ns: u64,
        victim: &Arc<Identity>,
    ) -> bool {
        let victim = Holder::Request(Arc::clone(victim));
        let held = super::stage_layer::holders_of(resource.span, from, until, &victim);
        if held.is_empty() {
            return false;
        }
        let total: u64 = held.iter().map(|(_, held)| *held).sum();
        let culprits = held
            .into_iter()
            .map(|(holder, held)| Culprit {
                holder,
                overlap: held,
                share: if total > ns {
                    u64::try_from(u128::from(held) * u128::from(ns) / u128::from(total))
                        .unwrap_or(held)
                } else {
                    held
                },
                polls: Vec::new(),
            })
            .collect();
        blame::merge(&mut self.culprits, culprits, false);
        true
    }

    /// The request or task whose poll woke this one after it waited `ns` on nothing named
    /// (a channel it sent on): the wait's culprit.
    fn blame_waker(&mut self, holder: &Holder, ns: u64, want_events: bool) {
        let culprit = Culprit {
            holder: holder.clone(),
            overlap: ns,
            share: ns,
            polls: Vec::new(),
        };
        blame::merge(&mut self.culprits, vec![culprit], want_events);
    }

    /// Names the stretches left for the report: finds the opened connection each ended on.
    fn name_network_waits(
        &mut self,
        want_events: bool,
        started: u64,
        now: u64,
        config: &super::engine::EngineConfig,
    ) {
        if self.unnamed.is_empty() {
            return;
        }
        let woken = self.unnamed.iter().map(|u| u.to).max().unwrap_or(now);
        let received: Vec<_> = super::tcp_info::opened_connections(woken, now)
            .into_iter()
            .map(|o| {
                let ago = |d| now.saturating_sub(super::clock::nanos(d));
                (o.peer, ago(o.since_data), ago(o.since_sent))
            })
            .collect();
        for stretch in std::mem::take(&mut self.unnamed) {
            match wait_name::network(started, stretch.to, &received, &config.backend_ports) {
                Some((kind, peer)) => self.add_idle(
                    want_events,
                    peer,
                    Some(kind),
                    stretch.ns,
                    stretch.from,
                    stretch.to,
                ),
                None => {
                    let name = match &stretch.by {
                        WokenBy::Poll(Holder::Task { spawned_at, .. })
                            if stretch.name.is_empty() =>
                        {
                            super::report::task_site_name(spawned_at)
                        }
                        _ => stretch.name,
                    };
                    self.add_idle(
                        want_events,
                        name,
                        stretch.otherwise,
                        stretch.ns,
                        stretch.from,
                        stretch.to,
                    );
                    if stretch.otherwise.is_none()
                        && let WokenBy::Poll(holder) = &stretch.by
                    {
                        self.blame_waker(holder, stretch.ns, want_events);
                    }
                }
            }
        }
    }
}

/// Whether polls that ran `blamed` ns of a `waited` ns wait explain it: at least half. A wait
/// its own runtime's polls do not explain was a wait for a CPU (the worker was free but the
/// cores ran other threads, such as another runtime's long polls), and those are named
/// instead, but only if they explain it: a wait behind many polls too short to be remembered
/// is left unexplained (blamed well under scheduled) rather than pinned on a bystander.
fn explains(blamed: u64, waited: u64) -> bool {
    blamed.saturating_mul(2) >= waited
}

/// The shared record of one request. See the module docs.
#[derive(Debug)]
pub struct Timeline {
    pub(crate) identity: Arc<Identity>,
    /// The request's span: events about it (long polls, blame) and its report go here.
    pub(crate) span: tracing::Span,
    pub(crate) engine: Arc<Engine>,
    pub(crate) started: u64,
    /// Where `started` came from (see [`Report::arrival`]).
    pub(crate) arrival: Option<crate::arrival::Source>,
    /// The request span's OpenTelemetry context, when an OpenTelemetry layer gave it one: the
    /// report goes on that span directly ([`crate::otel::record`]).
    #[cfg(feature = "opentelemetry")]
    pub(crate) otel: Option<opentelemetry::Context>,
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
            arrival: None,
            #[cfg(feature = "opentelemetry")]
            otel: None,
            want_events,
            delegates: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        }
    }

    #[cfg(feature = "opentelemetry")]
    pub(crate) fn otel_context(&self) -> Option<&opentelemetry::Context> {
        self.otel.as_ref()
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
    /// `mark`: the thread's CPU clocks at the poll's start, for a report taken inside it.
    pub(crate) fn poll_started(
        &self,
        depth: usize,
        ready_since: u64,
        now: u64,
        mark: Option<CpuMark>,
    ) {
        // While a handler task the request handed its work to is running, that task's waits
        // are the request's; the outer future's own wait is not counted twice.
        let covered = self.delegates.load(Ordering::Acquire) > depth;
        let waited = if covered {
            0
        } else {
            now.saturating_sub(ready_since)
        };
        // Blame outside the lock: it reads every worker's slot.
        let blame_from = super::clock::nanos(self.engine.config.blame_from);
        let blamed = (waited > 0 && waited >= blame_from).then(|| {
            let during = |runtime| {
                blame::blame(occupancy::holders_during(
                    runtime,
                    ready_since,
                    now,
                    &self.identity,
                ))
            };
            let own = during(Some(occupancy::runtime_key()));
            if explains(own.1, waited) {
                return own;
            }
            let any = during(None);
            if explains(any.1, waited) { any } else { own }
        });
        let mut state = self.lock();
        if state.parked.is_some_and(|p| p.depth == depth) {
            // Polled without a wake of ours (a spurious poll): parked until now.
            state.charge_idle(self.want_events, now, None, &self.identity);
            state.parked = None;
        }
        // A wait that may have been the network's is named now, on the request's thread just
        // after its wake, while the connection it ended on is surely open: a client made for
        // one call (`reqwest::get`) has closed it by the time the report is taken (a held-out
        // service: 26 of 30 such calls read `waiting`).
        if !state.unnamed.is_empty() {
            state.name_network_waits(self.want_events, self.started, now, &self.engine.config);
        }
        let waited = if waited > 0 {
            state.claim(ready_since, now)
        } else {
            0
        };
        state.split.scheduled += waited;
        state.polling[depth.min(1)] = Some(now);
        state.running[depth.min(1)] = mark.map(|mark| (mark, std::thread::current().id()));
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
        if let Some((mut culprits, blamed)) = blamed {
            // Only the part of the wait not charged already counts; the shares shrink with it.
            if blamed > waited {
                blame::scale_shares(&mut culprits, waited, blamed);
            }
            state.split.blamed += blamed.min(waited);
            blame::merge(&mut state.culprits, culprits, self.want_events);
        }
    }

    /// The request's task first ran at `first_polled` and reached the layer at `called`,
    /// having spent the time between in the layers in front of it (waiting for a concurrency
    /// limit's permit, typically). Until `first_polled` it waited for a worker, measured and
    /// blamed as a first poll's wait is; from then on it is idle, named
    /// [`OUTER_LAYERS`](wait_name::OUTER_LAYERS), with nobody blamed: those layers are not
    /// measured, so their polls (a few microseconds each) are counted in that time too.
    pub(crate) fn outside_layers(&self, first_polled: u64, called: u64) {
        self.poll_started(0, self.started, first_polled, None);
        let mut state = self.lock();
        state.polling[0] = None;
        let ns = state.claim(first_polled, called);
        if ns > 0 {
            state.add_idle(
                self.want_events,
                wait_name::OUTER_LAYERS,
                None,
                ns,
                first_polled,
                called,
            );
        }
    }

    /// A poll at `depth` ran from `start` to `end` and used the CPU as `used` says.
    pub(crate) fn poll_ended(&self, depth: usize, start: u64, end: u64, used: PollCpu) {
        let mut state = self.lock();
        state.polling[depth.min(1)] = None;
        state.running[depth.min(1)] = None;
        let ns = end.saturating_sub(start);
        let charged = state.claim(start, end);
        state.split.busy += charged;
        // A poll partly charged already keeps its measured proportions.
        let part = |x: u64| {
            if charged == ns {
                x
            } else {
                u64::try_from(u128::from(x) * u128::from(charged) / u128::from(ns.max(1)))
                    .unwrap_or(x)
            }
        };
        state.split.on_cpu += part(used.on_cpu);
        state.split.cpu_wait += part(used.cpu_wait);
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
    pub(crate) fn park(&self, depth: usize, end: u64, woken_at: &AtomicU64, on: Pending) {
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
        state.parked = Some(Park {
            since: end,
            depth,
            on,
        });
    }

    /// The wrapper at `depth` was woken at `at`, on this thread (or its cause reached the
    /// machine then: see [`crate::read_stamp`]): its parked stretch ends, and who woke it says
    /// what it waited for. Returns when it became ready: `at`, but never before it parked.
    pub(crate) fn woken(&self, depth: usize, at: u64, by_client: bool) -> u64 {
        let mut state = self.lock();
        let Some(park) = state.parked.filter(|p| p.depth == depth) else {
            return at;
        };
        let at = at.max(park.since);
        let by = if by_client {
            WokenBy::Client
        } else {
            WokenBy::here()
        };
        state.charge_idle(self.want_events, at, Some(&by), &self.identity);
        state.parked = None;
        at
    }

    /// A stage span opened inside the request.
    pub(crate) fn stage_opened(&self, span: u64, name: &'static str, kind: Option<StageKind>) {
        let now = super::clock::now_ns();
        let mut state = self.lock();
        state.charge_idle(self.want_events, now, None, &self.identity);
        state.open.push(OpenStage { span, name, kind });
    }

    /// A stage span closed.
    pub(crate) fn stage_closed(&self, span: u64) {
        let now = super::clock::now_ns();
        let mut state = self.lock();
        if let Some(i) = state.open.iter().rposition(|s| s.span == span) {
            state.charge_idle(self.want_events, now, None, &self.identity);
            state.open.remove(i);
        }
    }

    /// What the request has measured up to `now`. A poll still running (the one taking the
    /// report, typically) counts as busy and computing so far.
    pub fn report(&self, now: u64) -> Report {
        let mut state = self.lock();
        state.charge_idle(self.want_events, now, None, &self.identity);
        state.name_network_waits(self.want_events, self.started, now, &self.engine.config);
        let mut split = state.split;
        if let Some(&earliest) = state.polling.iter().flatten().min() {
            // Running polls, counted once however many run at once, as far as not charged.
            let so_far = now.saturating_sub(earliest.max(state.charged_to));
            split.busy += so_far;
            // Split as a finished poll is, when the report is taken on the polling thread;
            // from elsewhere the poll counts as computing so far.
            let here = std::thread::current().id();
            let used =
                state
                    .polling
                    .iter()
                    .zip(&state.running)
                    .find_map(|(start, running)| match (start, running) {
                        (Some(start), Some((mark, thread))) if *thread == here => {
                            Some(super::clock::poll_cpu(*mark, *start, now))
                        }
                        _ => None,
                    });
            match used {
                Some(used) => {
                    let on_cpu = used.on_cpu.min(so_far);
                    split.on_cpu += on_cpu;
                    split.cpu_wait += used.cpu_wait.min(so_far - on_cpu);
                }
                None => split.on_cpu += so_far,
            }
            for &start in state.polling.iter().flatten() {
                split.polls += 1;
                split.max_poll = split.max_poll.max(now.saturating_sub(start));
            }
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
            arrival: self.arrival,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(started: u64) -> Timeline {
        let identity = Identity::untraced("/t.S/M");
        let engine = Engine {
            config: super::super::engine::EngineConfig::default(),
            #[cfg(feature = "prometheus")]
            metrics: None,
        };
        Timeline::new(
            identity,
            tracing::Span::none(),
            Arc::new(engine),
            started,
            false,
        )
    }

    fn cpu(on_cpu: u64) -> PollCpu {
        PollCpu {
            on_cpu,
            cpu_wait: 0,
        }
    }

    /// The request's future, woken while its handler task computes on another thread, waits
    /// for a worker during the task's poll: each instant is charged once.
    #[test]
    fn overlapping_stretches_are_charged_once() {
        let t = timeline(0);
        let outer_woken = AtomicU64::new(0);
        t.poll_started(0, 0, 0, None);
        let depth = t.delegate_started();
        t.poll_ended(0, 0, 1_000, cpu(1_000));
        t.park(0, 1_000, &outer_woken, Pending::default());
        // The handler task: waits 1 µs for a worker, computes 10 µs.
        t.poll_started(depth, 1_000, 2_000, None);
        t.poll_ended(depth, 2_000, 12_000, cpu(10_000));
        t.delegate_finished();
        // The outer future was ready since 5 µs (woken mid-task), polled at 13 µs.
        t.poll_started(0, 5_000, 13_000, None);
        t.poll_ended(0, 13_000, 14_000, cpu(1_000));
        let split = t.report(14_000).split;
        assert_eq!(split.total, 14_000);
        let parts = split.busy + split.scheduled + split.idle_total();
        assert!(parts <= split.total, "{split:?}");
        assert_eq!(split.busy, 12_000, "{split:?}");
        assert_eq!(split.scheduled, 2_000, "{split:?}");
        assert!(split.on_cpu <= split.busy, "{split:?}");
    }

    #[test]
    fn only_polls_that_cover_half_a_wait_explain_it() {
        assert!(explains(5_000, 10_000));
        assert!(!explains(4_999, 10_000));
        assert!(
            !explains(1_000, 10_000),
            "a bystander's 1 ms in a 10 ms wait"
        );
        assert!(explains(u64::MAX, u64::MAX));
    }

    /// A poll half charged already keeps its on-CPU share.
    #[test]
    fn a_partly_charged_poll_keeps_its_proportions() {
        let t = timeline(0);
        t.poll_started(0, 0, 0, None);
        t.poll_ended(0, 0, 4_000, cpu(4_000));
        t.poll_started(1, 0, 2_000, None);
        t.poll_ended(1, 2_000, 6_000, cpu(1_000));
        let split = t.report(6_000).split;
        assert_eq!(split.busy, 6_000, "{split:?}");
        assert_eq!(split.on_cpu, 4_500, "{split:?}");
        assert_eq!(split.polls, 2);
        assert_eq!(split.max_poll, 4_000);
    }
}
