//! What the engine says about one request: its split, its verdict, its waits by stage, its
//! culprits, and (on request) its timeline. Read on the reply, in the `holdup-diagnosis`
//! header, on the span, in Prometheus and in the log.

use std::{sync::Arc, time::Duration};

use http::HeaderValue;

use super::{
    blame::Culprit,
    identity::Identity,
    occupancy::Holder,
    stage::StageKind,
    verdict::{NOT_LATE_BELOW, Verdict},
};

/// Culprits the header names; the reply and the span carry them all.
pub const HEADER_CULPRITS: usize = 4;

/// One request's time, in nanoseconds. `idle` is split by the kind of the stage open while the
/// request was parked (index 0: no kind); `queue` is `idle[queue]`, part of idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    pub total: u64,
    /// Polled: the request's code ran on a runtime worker.
    pub busy: u64,
    /// The part of `busy` the worker thread was on the CPU.
    pub on_cpu: u64,
    /// The part of `busy` the worker thread was runnable but the machine ran something else:
    /// the handler was computing, slowed by other processes.
    pub cpu_wait: u64,
    /// Ready (woken or handed over) but waiting for a worker.
    pub scheduled: u64,
    /// The part of `scheduled` during which culprits' polls ran.
    pub blamed: u64,
    pub idle: [u64; 6],
    pub polls: u64,
    pub max_poll: u64,
}

impl Split {
    /// All parked time, whatever the stage: `queue` is part of it.
    pub fn idle_total(&self) -> u64 {
        self.idle.iter().sum()
    }

    pub fn idle_in(&self, kind: Option<StageKind>) -> u64 {
        self.idle[StageKind::slot(kind)]
    }

    /// Parked in a stage of kind `queue`.
    pub fn queue(&self) -> u64 {
        self.idle_in(Some(StageKind::Queue))
    }

    /// Polled and computing: on the CPU, or runnable and waiting for one.
    pub fn computing(&self) -> u64 {
        self.on_cpu + self.cpu_wait
    }

    /// Polled but neither on the CPU nor waiting for one: a blocking call held the worker.
    pub fn blocked(&self) -> u64 {
        self.busy.saturating_sub(self.computing())
    }

    /// Each component with the verdict it stands for, in [`Verdict::ALL`] order.
    pub fn components(&self) -> [(Verdict, u64); 9] {
        let idle = |kind| self.idle_in(Some(kind));
        [
            (Verdict::OwnCpu, self.computing()),
            (Verdict::BlockingCall, self.blocked()),
            (Verdict::RuntimeContention, self.scheduled),
            (Verdict::ResourceQueue, idle(StageKind::Queue)),
            (Verdict::Backend, idle(StageKind::Backend)),
            (Verdict::Upstream, idle(StageKind::Upstream)),
            (Verdict::OffloadedCpu, idle(StageKind::Offloaded)),
            (Verdict::Timer, idle(StageKind::Timer)),
            (Verdict::Waiting, self.idle_in(None)),
        ]
    }

    /// The largest component (the first of equals), or `none` for a request that was not late.
    pub fn verdict(&self) -> Verdict {
        if self.total < super::clock::nanos(NOT_LATE_BELOW) {
            return Verdict::None;
        }
        let mut best = (Verdict::None, 0);
        for (verdict, ns) in self.components() {
            if ns > best.1 {
                best = (verdict, ns);
            }
        }
        best.0
    }
}

/// Parked time under one stage name (empty: no stage open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub stage: &'static str,
    pub kind: Option<StageKind>,
    pub ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Poll,
    Scheduled,
    Idle,
}

/// One stretch of the timeline (engine ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub from: u64,
    pub to: u64,
    /// For a poll: its on-CPU part.
    pub on_cpu: u64,
    /// For an idle stretch: the stage open (empty: none).
    pub stage: &'static str,
}

/// The engine's account of one request.
#[derive(Debug, Clone)]
pub struct Report {
    pub identity: Arc<Identity>,
    /// Engine time the request started (for relative timeline offsets).
    pub started: u64,
    pub split: Split,
    pub waits: Vec<Wait>,
    pub culprits: Vec<Culprit>,
    pub events: Vec<Event>,
    pub events_dropped: u64,
    /// Where the request's arrival, and so its first wait for a worker, was taken from: the
    /// kernel's receive timestamp of its bytes, the connection task's read, or (`None`) the
    /// layer itself, when the server does not stamp requests (then a wait before the layer
    /// ran is not seen).
    pub arrival: Option<crate::arrival::Source>,
}

/// A request that waited this long for a worker says where its arrival was taken from: only
/// then does it change what `scheduled` can show.
const ARRIVAL_SHOWN_FROM: u64 = 1_000_000;

/// Microseconds, for replies and attributes.
pub fn micros(ns: u64) -> u64 {
    ns / 1_000
}

/// `v` as a span attribute: signed, as OpenTelemetry has no unsigned integer (and
/// tracing-opentelemetry records a `u64` through `Debug`, as a string Jaeger cannot treat as a
/// number).
pub(crate) fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Appends `ns` as milliseconds with one decimal, rounded half up (`412.3ms`), for people.
/// Integer arithmetic and digits by hand: float formatting was most of the header's cost, and
/// `core::fmt` still about 500 instructions a field, eight fields on every request.
fn push_ms(out: &mut String, ns: u64) {
    let tenths = ns.saturating_add(50_000) / 100_000;
    push_u64(out, tenths / 10);
    out.push('.');
    push_u64(out, tenths % 10);
    out.push_str("ms");
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        self.split.verdict()
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.split.total)
    }

    /// Microseconds from the request's start to `ns` (negative before it).
    pub fn offset_us(&self, ns: u64) -> i64 {
        let d = i128::from(ns) - i128::from(self.started);
        i64::try_from(d / 1_000).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
    }

    /// The stage of the longest wait, if that wait had one. Not the longest *named* wait: a
    /// 200 ms sleep nothing could name, after a 1 ms query on sqlx's SQLite thread, read
    /// `waited_in=sqlx-sqlite-worker-0` (a held-out service, built without tokio_unstable).
    pub fn longest_wait(&self) -> Option<&Wait> {
        self.waits
            .iter()
            .max_by_key(|w| w.ns)
            .filter(|w| !w.stage.is_empty())
    }

    /// The `holdup-diagnosis` header: space-separated `key=value`, durations in ms.
    ///
    /// `verdict=runtime-contention total=412.3ms busy=0.2ms on_cpu=0.2ms cpu_wait=0.0ms
    /// blocked=0.0ms scheduled=410.1ms idle=2.0ms queue=0.0ms culprits=SayHello@4bf9…4736/205.0ms,…`
    ///
    /// `busy` is `on_cpu + cpu_wait + blocked`: computing, runnable while the machine ran
    /// something else, and holding the worker off the CPU.
    ///
    /// `waited_in=<stage>` names the stage of the longest wait when there is one; each culprit is
    /// `<method>[@<trace id>]/<share>`, or `task:<name>/<share>` (`task:[<crate>:]<file>:<line>#<id>`,
    /// where it was spawned, when it has no name) for a task that is not a request, largest
    /// share first, at most `HEADER_CULPRITS` of them (then `+N`).
    pub fn header_value(&self) -> String {
        let s = &self.split;
        let mut out = String::with_capacity(160);
        out.push_str("verdict=");
        out.push_str(self.verdict().as_str());
        for (name, ns) in [
            (" total=", s.total),
            (" busy=", s.busy),
            (" on_cpu=", s.on_cpu),
            (" cpu_wait=", s.cpu_wait),
            (" blocked=", s.blocked()),
            (" scheduled=", s.scheduled),
            (" idle=", s.idle_total()),
            (" queue=", s.queue()),
        ] {
            out.push_str(name);
            push_ms(&mut out, ns);
        }
        if let Some(source) = self.arrival
            && s.scheduled >= ARRIVAL_SHOWN_FROM
        {
            out.push_str(" arrival=");
            out.push_str(source.as_str());
        }
        if let Some(wait) = self.longest_wait() {
            out.push_str(" waited_in=");
            out.push_str(&visible(wait.stage));
        }
        // A culprit whose share shows as 0.0ms held nobody up that the header can show (a
        // connection task that relayed the reply): it stays in the report, not in the header.
        let shown: Vec<&Culprit> = self
            .culprits
            .iter()
            .filter(|c| c.share >= SHOWN_SHARE_FROM)
            .collect();
        if !shown.is_empty() {
            out.push_str(" culprits=");
            for (i, culprit) in shown.iter().take(HEADER_CULPRITS).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&culprit_label(culprit));
                out.push('/');
                push_ms(&mut out, culprit.share);
            }
            if shown.len() > HEADER_CULPRITS {
                out.push_str(",+");
                push_u64(&mut out, (shown.len() - HEADER_CULPRITS) as u64);
            }
        }
        out
    }

    /// The header of a request too quick to explain (see [`EngineConfig::detail_from`]): its
    /// verdict and total, `verdict=none total=0.3ms`.
    ///
    /// [`EngineConfig::detail_from`]: crate::EngineConfig::detail_from
    pub fn brief_header_value(&self) -> String {
        let mut out = String::with_capacity(32);
        out.push_str("verdict=");
        out.push_str(self.verdict().as_str());
        out.push_str(" total=");
        push_ms(&mut out, self.split.total);
        out
    }

    /// The brief header of a request under a millisecond, from a table: most responses carry
    /// one of these eleven values, and a `'static` one is neither formatted nor allocated.
    /// Validated once: `HeaderValue::from_static` checks every byte where it runs, so called
    /// per response it cost about 190 instructions.
    pub(crate) fn quick_header_value(&self) -> Option<HeaderValue> {
        static QUICK: [HeaderValue; 11] = [
            HeaderValue::from_static("verdict=none total=0.0ms"),
            HeaderValue::from_static("verdict=none total=0.1ms"),
            HeaderValue::from_static("verdict=none total=0.2ms"),
            HeaderValue::from_static("verdict=none total=0.3ms"),
            HeaderValue::from_static("verdict=none total=0.4ms"),
            HeaderValue::from_static("verdict=none total=0.5ms"),
            HeaderValue::from_static("verdict=none total=0.6ms"),
            HeaderValue::from_static("verdict=none total=0.7ms"),
            HeaderValue::from_static("verdict=none total=0.8ms"),
            HeaderValue::from_static("verdict=none total=0.9ms"),
            HeaderValue::from_static("verdict=none total=1.0ms"),
        ];
        if self.verdict() != Verdict::None {
            return None;
        }
        // Tenths of a millisecond, rounded half up as `push_ms` rounds.
        let tenths = self.split.total.saturating_add(50_000) / 100_000;
        QUICK.get(usize::try_from(tenths).ok()?).cloned()
    }
}

/// The least share (ns) a culprit needs to be shown in the header: what rounds to 0.1 ms.
const SHOWN_SHARE_FROM: u64 = 50_000;

/// Where a task was spawned, as a reader can find it: `main.rs:68`, or with the crate for a
/// dependency's file (`hyper-util:tokio.rs:127`, not a bare `tokio.rs` that reads as tokio's).
/// No directories: a `/` would read as the header's separator.
fn spawn_site(path: &str, line: u32) -> String {
    let mut parts = path.rsplit(['/', '\\']);
    let file = parts.next().unwrap_or(path);
    // A dependency's source is under `<crate>-<version>/src/…` in cargo's registry.
    let krate = parts.skip_while(|p| *p != "src").nth(1).and_then(|dir| {
        let (name, version) = dir.rsplit_once('-')?;
        version
            .starts_with(|c: char| c.is_ascii_digit())
            .then_some(name)
    });
    match krate {
        Some(krate) => format!("{krate}:{file}:{line}"),
        None => format!("{file}:{line}"),
    }
}

/// The name of a wait that ended when a task (not a request) woke the request, and that
/// nothing else names (a `JoinHandle`, a `Notify`): `task:<spawn site>`, the code waited for.
/// Without the task's id, so that one name stands for every task spawned there.
pub(crate) fn task_site_name(spawned_at: &'static std::panic::Location<'static>) -> &'static str {
    let name = visible(&format!(
        "task:{}",
        spawn_site(spawned_at.file(), spawned_at.line())
    ));
    super::names::intern(&name, "task")
}

/// How a culprit is named in the header and the log.
pub fn culprit_label(culprit: &Culprit) -> String {
    match &culprit.holder {
        Holder::Request(identity) => {
            let trace = identity.trace_id();
            // A path of another shape than `/package.Service/Method` (an axum route) is named
            // whole, as `Identity`'s `Display` names it.
            let method = match identity.method() {
                "" => identity.full_method(),
                method => method,
            };
            let method = visible(method);
            if trace.is_empty() {
                method
            } else {
                format!("{method}@{trace}")
            }
        }
        Holder::Task { id, spawned_at } => match culprit.holder.task_name() {
            Some(name) => format!("task:{}", visible(&name.replace(' ', "_"))),
            // Where it was spawned, which a reader can act on (an id alone said nothing):
            // the file's name without its directories, which would read as separators.
            None => visible(&format!(
                "task:{}#{id}",
                spawn_site(spawned_at.file(), spawned_at.line())
            )),
        },
    }
}

/// A description of a non-request culprit: its name if known, its id and where it was spawned.
pub fn task_description(holder: &Holder) -> String {
    match holder {
        Holder::Request(identity) => identity.to_string(),
        Holder::Task { id, spawned_at } => {
            let name = holder
                .task_name()
                .map(|n| format!("{n} "))
                .unwrap_or_default();
            format!("{name}(task {id}, spawned at {spawned_at})")
        }
    }
}

/// Longest name a header shows for a culprit or a stage: a made-up method of kilobytes, named
/// as a culprit in an innocent request's header, could push that reply past its client's
/// header-list limit.
const MAX_NAME_CHARS: usize = 64;

/// Only visible ASCII, as a header value allows, and at most [`MAX_NAME_CHARS`] of it (then
/// `..`).
fn visible(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_NAME_CHARS)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if s.chars().nth(MAX_NAME_CHARS).is_some() {
        out.push_str("..");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_ns(total: u64) -> Split {
        Split {
            total,
            ..Split::default()
        }
    }

    fn split(total_ms: u64) -> Split {
        split_ns(total_ms * 1_000_000)
    }

    #[test]
    fn the_largest_component_decides() {
        let mut s = split(500);
        s.busy = 10_000_000;
        s.on_cpu = 10_000_000;
        s.scheduled = 480_000_000;
        assert_eq!(s.verdict(), Verdict::RuntimeContention);

        let mut blocked = split(200);
        blocked.busy = 200_000_000;
        blocked.on_cpu = 1_000_000;
        assert_eq!(blocked.verdict(), Verdict::BlockingCall);

        let mut queued = split(300);
        queued.idle[StageKind::slot(Some(StageKind::Queue))] = 200_000_000;
        queued.idle[StageKind::slot(Some(StageKind::Backend))] = 99_000_000;
        assert_eq!(queued.verdict(), Verdict::ResourceQueue);
        assert_eq!(queued.queue(), 200_000_000);
        assert_eq!(queued.idle_total(), 299_000_000);

        let mut nowhere = split(50);
        nowhere.idle[0] = 49_000_000;
        assert_eq!(nowhere.verdict(), Verdict::Waiting);
    }

    #[test]
    fn milliseconds_have_one_decimal_rounded_half_up() {
        let shown = |ns| {
            let mut out = String::new();
            push_ms(&mut out, ns);
            out
        };
        assert_eq!(shown(0), "0.0ms");
        assert_eq!(shown(49_999), "0.0ms");
        assert_eq!(shown(50_000), "0.1ms");
        assert_eq!(shown(412_349_999), "412.3ms");
        assert_eq!(shown(412_350_000), "412.4ms");
        assert_eq!(shown(10_000_000_000), "10000.0ms");
        assert_eq!(shown(u64::MAX), "18446744073709.5ms");
    }

    #[test]
    fn a_quick_request_is_not_late() {
        let mut s = Split {
            total: 300_000,
            ..Split::default()
        };
        s.scheduled = 250_000;
        assert_eq!(s.verdict(), Verdict::None);
    }

    /// A task with no name is named by where it was spawned (file, line) and its id; a
    /// request by its method and trace id, or its whole path when it has no method (axum).
    #[test]
    fn culprits_are_named_by_what_a_reader_can_find() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let spawned_here = std::panic::Location::caller();
        let id =
            runtime.block_on(async { tokio::spawn(async { tokio::task::id() }).await.unwrap() });
        let culprit = |holder| Culprit {
            holder,
            overlap: 0,
            share: 0,
            polls: Vec::new(),
        };
        let task = culprit(Holder::Task {
            id,
            spawned_at: spawned_here,
        });
        assert_eq!(
            culprit_label(&task),
            format!("task:report.rs:{}#{id}", spawned_here.line())
        );
        assert_eq!(
            spawn_site(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-util-0.1.17/src/rt/tokio.rs",
                127
            ),
            "hyper-util:tokio.rs:127",
            "a dependency's file says its crate"
        );
        assert_eq!(spawn_site("src/main.rs", 68), "main.rs:68");
        let route = culprit(Holder::Request(Identity::untraced("/hold")));
        let label = culprit_label(&route);
        assert!(
            label.starts_with("hold@") && label.len() == 5 + 32,
            "{label}"
        );
        let rpc = culprit(Holder::Request(Identity::untraced("/test.Svc/Call")));
        assert!(culprit_label(&rpc).starts_with("Call@"));

        // A share that shows as 0.0ms stays out of the header.
        let mut r = report(split(5));
        r.culprits = vec![Culprit {
            share: 40_000,
            ..task.clone()
        }];
        assert!(
            !r.header_value().contains("culprits="),
            "{}",
            r.header_value()
        );
        r.culprits[0].share = 2_000_000;
        assert!(
            r.header_value().contains("culprits=task:"),
            "{}",
            r.header_value()
        );
    }

    #[test]
    fn the_longest_wait_is_named_only_if_it_had_a_name() {
        let wait = |stage, ns| Wait {
            stage,
            kind: None,
            ns,
        };
        let mut r = report(split(200));
        r.waits = vec![
            wait("sqlx-sqlite-worker-0", 1_000_000),
            wait("", 200_000_000),
        ];
        assert!(r.longest_wait().is_none(), "{:?}", r.longest_wait());
        r.waits.push(wait("cache.refresh", 300_000_000));
        assert_eq!(r.longest_wait().map(|w| w.stage), Some("cache.refresh"));
    }

    fn report(split: Split) -> Report {
        Report {
            identity: Identity::untraced("/test.Svc/Call"),
            started: 0,
            split,
            waits: Vec::new(),
            culprits: Vec::new(),
            events: Vec::new(),
            events_dropped: 0,
            arrival: None,
        }
    }

    #[test]
    fn the_brief_header_has_verdict_and_total_the_full_one_the_split() {
        let mut quick = Split {
            total: 340_000,
            busy: 120_000,
            on_cpu: 120_000,
            ..Split::default()
        };
        quick.idle[0] = 220_000;
        assert_eq!(
            report(quick).brief_header_value(),
            "verdict=none total=0.3ms"
        );
        // Each quick value is the one formatting would give.
        for ns in (0..1_000_000).step_by(25_000) {
            let quick = report(split_ns(ns));
            let mut formatted = String::from("verdict=none total=");
            push_ms(&mut formatted, ns);
            assert_eq!(
                quick.quick_header_value(),
                Some(HeaderValue::from_str(&formatted).unwrap()),
                "{ns} ns"
            );
        }
        assert_eq!(report(split(2)).quick_header_value(), None);

        let mut late = split(5);
        late.busy = 5_000_000;
        late.on_cpu = 5_000_000;
        assert_eq!(
            report(late).header_value(),
            "verdict=own-cpu total=5.0ms busy=5.0ms on_cpu=5.0ms cpu_wait=0.0ms blocked=0.0ms \
             scheduled=0.0ms idle=0.0ms queue=0.0ms"
        );
    }

    #[test]
    fn every_verdict_but_none_is_a_component() {
        let split = Split::default();
        let named: Vec<_> = split.components().iter().map(|(v, _)| *v).collect();
        for verdict in Verdict::ALL {
            assert_eq!(
                named.contains(&verdict),
                verdict != Verdict::None,
                "{verdict}"
            );
        }
    }

    #[test]
    fn header_names_are_visible_ascii_and_bounded() {
        assert_eq!(visible("Fast"), "Fast");
        assert_eq!(visible("a b\u{e9}"), "a?b?");
        let long = visible(&"m".repeat(16 * 1024));
        assert_eq!(long.len(), MAX_NAME_CHARS + 2);
        assert!(long.ends_with(".."));
    }
}
