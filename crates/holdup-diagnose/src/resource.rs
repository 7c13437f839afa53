//! What a parked request waits *in*, from tokio's own instrumentation: built with
//! `--cfg tokio_unstable` and tokio's `tracing` feature (as tokio-console needs), every
//! `Sleep`, `Semaphore`, `Mutex`, `RwLock`, `Barrier` and oneshot channel has a
//! `runtime.resource` span, and each poll of an operation on it emits a
//! `runtime::resource::poll_op` event saying whether it was ready. The last operation that was
//! not ready in a request's poll is what the request parked on.
//!
//! For the locks (semaphores, mutexes, read-write locks) it also keeps who holds them: an
//! operation that completes in some request's or task's poll is an acquisition by it, and a
//! release of permits ends the oldest acquisition open (the releaser's own, when it holds
//! one). A request that waited on a lock then names the holders during its wait, with the
//! time each held it. A release by a third party (sqlx's pool returns a connection from a
//! task of its own) cannot say whose permit came back; ending the oldest one is exact for a
//! lock of one permit, and an approximation for more.
//!
//! Without that instrumentation none of these events exist, and the engine names waits from
//! who woke the request alone ([`crate::wake_source`]).

use std::{cell::Cell, collections::VecDeque, fmt};

use tracing::field::{Field, Visit};

use super::occupancy::Holder;

/// Acquisitions remembered per lock: more than any lock has holders at once.
const MAX_HOLDS: usize = 64;

/// The kind of a tokio resource, from its `concrete_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    /// `Sleep`, `Interval`: a timer.
    Timer,
    /// `Semaphore`, `Mutex`, `RwLock`: a lock some holder keeps others waiting for.
    Lock,
    /// `Barrier`, a oneshot channel: waits for another party, who is named by its wake.
    Other,
}

/// A tokio resource a request parked on: its span and its `concrete_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResourceRef {
    pub(crate) span: u64,
    pub(crate) name: &'static str,
    pub(crate) kind: ResourceKind,
}

/// In a `runtime.resource` span's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resource {
    pub(crate) this: ResourceRef,
    /// For a resource tokio builds inside another (the semaphore inside a `Mutex`): the outer
    /// one, which is what the user's code sees and what releases are counted against.
    pub(crate) outer: Option<ResourceRef>,
    /// Whether tokio marks it internal (`is_internal = true`).
    pub(crate) internal: bool,
}

impl Resource {
    /// What the user sees of this resource.
    pub(crate) fn visible(&self) -> ResourceRef {
        self.outer.unwrap_or(self.this)
    }
}

/// One acquisition of a lock.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub(crate) holder: Holder,
    pub(crate) from: u64,
    /// When it was released; `None` while held.
    pub(crate) to: Option<u64>,
}

/// In a lock's (outer) resource span's extensions: its recent acquisitions.
#[derive(Debug, Default)]
pub(crate) struct Holds(pub(crate) VecDeque<Hold>);

impl Holds {
    pub(crate) fn acquired(&mut self, holder: Holder, at: u64) {
        if self.0.len() == MAX_HOLDS {
            self.0.pop_front();
        }
        self.0.push_back(Hold {
            holder,
            from: at,
            to: None,
        });
    }

    /// Permits came back: ends the releaser's own oldest open hold, or else the oldest open.
    pub(crate) fn released(&mut self, by: Option<&Holder>, at: u64) {
        let open = |h: &&mut Hold| h.to.is_none();
        let own = by.and_then(|by| {
            self.0
                .iter()
                .position(|h| h.to.is_none() && h.holder.same_as(by))
        });
        let hold = match own {
            Some(i) => self.0.get_mut(i),
            None => self.0.iter_mut().find(|h| open(h)),
        };
        if let Some(hold) = hold {
            hold.to = Some(at);
        }
    }

    /// Who held the lock during `from..to`, other than `victim`, and for how long of it.
    pub(crate) fn during(&self, from: u64, to: u64, victim: &Holder) -> Vec<(Holder, u64)> {
        let mut out: Vec<(Holder, u64)> = Vec::new();
        for hold in &self.0 {
            if hold.holder.same_as(victim) {
                continue;
            }
            let a = hold.from.max(from);
            let b = hold.to.unwrap_or(to).min(to);
            if b <= a {
                continue;
            }
            match out.iter_mut().find(|(h, _)| h.same_as(&hold.holder)) {
                Some((_, ns)) => *ns += b - a,
                None => out.push((hold.holder.clone(), b - a)),
            }
        }
        out
    }
}

/// In a timer's resource span's extensions: its deadline (engine ns), from tokio's
/// `duration` state update when the timer is first polled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) u64);

/// A wake this close to a timer's deadline (ns) is the timer firing: tokio's timer wheel has
/// millisecond ticks, and the update gives the duration in whole milliseconds.
pub(crate) const FIRED_WITHIN: u64 = 2_000_000;

/// What a poll left pending: the last timer, and the last other resource. Kept apart because a
/// timeout wraps the operation it limits (`tokio::time::timeout`, sqlx's acquire timeout):
/// both are pending, and the wake tells which one the request waited for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) timer: Option<ResourceRef>,
    /// The timer pending before `timer`, if another (a sleep under a request's deadline).
    pub(crate) earlier_timer: Option<ResourceRef>,
    pub(crate) other: Option<ResourceRef>,
    /// Whether the timer had reached its deadline when the request was woken (`None`: not
    /// known). Set at the wake.
    pub(crate) timer_fired: Option<bool>,
}

thread_local! {
    /// The resource operations on this thread that were not ready: read and cleared around
    /// each measured poll.
    static PENDING_ON: Cell<Pending> = const {
        Cell::new(Pending {
            timer: None,
            earlier_timer: None,
            other: None,
            timer_fired: None,
        })
    };
}

/// Forgets any pending operation: a measured poll begins.
pub(crate) fn poll_begins() {
    PENDING_ON.with(|p| p.set(Pending::default()));
}

/// The resources the poll that just ended waited on, if tokio said.
pub(crate) fn pending_on() -> Pending {
    PENDING_ON.with(Cell::take)
}

/// An operation on `resource` was not ready: whoever polls on this thread now parks on it.
pub(crate) fn not_ready(resource: Resource) {
    let visible = resource.visible();
    PENDING_ON.with(|p| {
        let mut pending = p.get();
        if visible.kind == ResourceKind::Timer {
            if pending.timer.is_some_and(|t| t.span != visible.span) {
                pending.earlier_timer = pending.timer;
            }
            pending.timer = Some(visible);
        } else {
            pending.other = Some(visible);
        }
        p.set(pending);
    });
}

/// tokio's resources by `concrete_type`: the name a wait on one is given, and its kind.
const RESOURCES: [(&str, &str, ResourceKind); 7] = [
    ("Sleep", "Sleep", ResourceKind::Timer),
    ("Interval", "Interval", ResourceKind::Timer),
    ("Semaphore", "Semaphore", ResourceKind::Lock),
    ("Mutex", "Mutex", ResourceKind::Lock),
    ("RwLock", "RwLock", ResourceKind::Lock),
    ("Barrier", "Barrier", ResourceKind::Other),
    ("Sender|Receiver", "oneshot", ResourceKind::Other),
];
/// The name of a resource tokio reports that is none of [`RESOURCES`].
const OTHER_RESOURCE: &str = "resource";

/// The name of a wait for room in a bounded `mpsc` channel. tokio counts the room with a
/// semaphore it marks internal and builds outside any resource of its own: the only internal
/// semaphore with no outer resource (a `Mutex`'s, a `RwLock`'s and a `Semaphore`'s are built
/// inside theirs). Named as a lock, the wait read `resource-queue` in a `Semaphore` the
/// service does not have, with no holder; what it waits for is the receiver, whose taking a
/// message wakes it, so it is a channel wait ([`ResourceKind::Other`]), the waker the culprit.
const BOUNDED_CHANNEL: &str = "mpsc";

/// Whether `name` is one a wait on a tokio resource is given ([`classify`]).
pub(crate) fn is_resource_name(name: &str) -> bool {
    name == OTHER_RESOURCE
        || name == BOUNDED_CHANNEL
        || RESOURCES.iter().any(|(_, known, _)| *known == name)
}

/// The kind of a `concrete_type`, with its name as a `&'static str`.
fn classify(concrete_type: &str) -> (&'static str, ResourceKind) {
    RESOURCES
        .iter()
        .find(|(ty, _, _)| *ty == concrete_type)
        .map_or((OTHER_RESOURCE, ResourceKind::Other), |&(_, name, kind)| {
            (name, kind)
        })
}

/// Reads a `runtime.resource` span's fields.
#[derive(Debug, Default)]
pub(crate) struct ResourceVisitor {
    concrete_type: Option<(&'static str, ResourceKind)>,
    internal: bool,
}

impl ResourceVisitor {
    pub(crate) fn resource(&self, span: u64, outer: Option<ResourceRef>) -> Resource {
        let (name, kind) = match self.concrete_type {
            Some(("Semaphore", _)) if self.internal && outer.is_none() => {
                (BOUNDED_CHANNEL, ResourceKind::Other)
            }
            Some(known) => known,
            None => (OTHER_RESOURCE, ResourceKind::Other),
        };
        Resource {
            this: ResourceRef { span, name, kind },
            outer: if self.internal { outer } else { None },
            internal: self.internal,
        }
    }
}

impl Visit for ResourceVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "concrete_type" {
            self.concrete_type = Some(classify(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "is_internal" {
            self.internal = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "concrete_type" {
            self.concrete_type = Some(classify(format!("{value:?}").trim_matches('"')));
        }
    }
}

/// What a resource event says.
#[derive(Debug, Default)]
pub(crate) struct EventVisitor {
    /// `poll_op`: `is_ready`.
    pub(crate) ready: Option<bool>,
    /// `state_update`: `permits.op = "add"` (permits given back).
    pub(crate) added: bool,
    /// `state_update` of a timer: `duration` (ms to its deadline).
    pub(crate) duration_ms: Option<u64>,
    /// An operation's `state_update`: `permits_obtained`, the permits assigned to the waiter.
    pub(crate) permits_obtained: Option<u64>,
}

impl Visit for EventVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "duration" => self.duration_ms = Some(value),
            "permits_obtained" => self.permits_obtained = Some(value),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "is_ready" {
            self.ready = Some(value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "permits.op" && value == "add" {
            self.added = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "permits.op" && format!("{value:?}").trim_matches('"') == "add" {
            self.added = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn request(name: &'static str) -> Holder {
        Holder::Request(Identity::untraced(name))
    }

    #[test]
    fn a_lock_of_one_names_each_holder_for_its_part_of_the_wait() {
        let (a, b, c) = (request("/s/A"), request("/s/B"), request("/s/C"));
        let mut holds = Holds::default();
        holds.acquired(a.clone(), 0);
        // B and C queue from 10; A gives its permit back at 200 (by a task of the pool's).
        holds.released(None, 200);
        holds.acquired(b.clone(), 200);
        holds.released(Some(&b), 400);
        holds.acquired(c.clone(), 400);
        let held = holds.during(10, 400, &c);
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held[0].0.same_as(&a) && held[0].1 == 190, "{held:?}");
        assert!(held[1].0.same_as(&b) && held[1].1 == 200, "{held:?}");
        assert!(
            holds
                .during(10, 400, &a)
                .iter()
                .all(|(h, _)| !h.same_as(&a))
        );
    }

    #[test]
    fn a_release_ends_the_releasers_own_hold_first() {
        let (a, b) = (request("/s/A"), request("/s/B"));
        let mut holds = Holds::default();
        holds.acquired(a.clone(), 0);
        holds.acquired(b.clone(), 5);
        holds.released(Some(&b), 50);
        let victim = request("/s/V");
        let held = holds.during(0, 100, &victim);
        let of = |who: &Holder| held.iter().find(|(h, _)| h.same_as(who)).map(|(_, ns)| *ns);
        assert_eq!(of(&a), Some(100));
        assert_eq!(of(&b), Some(45));
    }

    #[test]
    fn concrete_types_have_kinds() {
        assert_eq!(classify("Sleep").1, ResourceKind::Timer);
        assert_eq!(classify("Semaphore").1, ResourceKind::Lock);
        assert_eq!(classify("Mutex").1, ResourceKind::Lock);
        assert_eq!(
            classify("Sender|Receiver"),
            ("oneshot", ResourceKind::Other)
        );
        assert_eq!(classify("Whatever").0, "resource");
        for (_, name, _) in RESOURCES {
            assert!(is_resource_name(name), "{name}");
        }
        assert!(is_resource_name("resource"));
        assert!(!is_resource_name("127.0.0.1:5432"));
    }

    fn resource_of(concrete_type: &str, internal: bool, outer: Option<ResourceRef>) -> Resource {
        ResourceVisitor {
            concrete_type: Some(classify(concrete_type)),
            internal,
        }
        .resource(9, outer)
    }

    #[test]
    fn an_internal_semaphore_alone_is_a_bounded_channels_room() {
        let channel = resource_of("Semaphore", true, None);
        assert_eq!(channel.visible().name, "mpsc");
        assert_eq!(channel.visible().kind, ResourceKind::Other);
        assert!(is_resource_name("mpsc"));
        // The one inside a `Mutex` is the `Mutex`, a lock.
        let mutex = ResourceRef {
            span: 1,
            name: "Mutex",
            kind: ResourceKind::Lock,
        };
        let inner = resource_of("Semaphore", true, Some(mutex));
        assert_eq!(inner.visible(), mutex);
        assert_eq!(inner.this.kind, ResourceKind::Lock);
        // A service's own `Semaphore` is one.
        let own = resource_of("Semaphore", false, None);
        assert_eq!(own.visible().name, "Semaphore");
        assert_eq!(own.visible().kind, ResourceKind::Lock);
    }
}
