//! The cause of each segment of the critical path. A span that holdup's diagnosis engine
//! measured (`holdup.verdict` and the split on it) is explained by its split: own CPU,
//! blocking calls, runtime contention (with the culprits it links to), queues, and its idle
//! time by the kind of the stages on the path under it (an upstream call, a backend, a
//! timer). A stage span of such a request is named by its kind; any other span is
//! "uninstrumented: <service> <operation>", explained only by where its time went.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    critical_path::{PathNode, critical_path},
    model::{Kind, Span, Trace},
};

/// A whole explanation of one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub trace_id: String,
    /// Which of Jaeger's APIs the trace came from (`api/v3`, `api/traces`).
    pub api: &'static str,
    pub services: Vec<String>,
    pub spans: usize,
    /// When the root's part of the path began, in microseconds since the Unix epoch.
    pub start_unix_us: i64,
    /// Spans without a parent in the trace other than the root: off the path.
    pub other_roots: usize,
    /// The one line a person reads first.
    pub headline: String,
    /// The end-to-end time split by cause, largest first; adds up to the root's time.
    pub causes: Vec<Share>,
    /// The critical path, from the root.
    pub root: Node,
}

/// Part of a whole by cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub cause: String,
    pub us: i64,
}

/// One span on the critical path.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub trace_id: String,
    pub span_id: String,
    pub service: String,
    pub operation: String,
    pub kind: Kind,
    /// Start of its part of the path, from the root's start.
    pub start_us: i64,
    /// Start of the whole span, from the root's start.
    pub span_start_us: i64,
    /// Its part of the path.
    pub on_path_us: i64,
    /// The whole span.
    pub duration_us: i64,
    /// Its own time on the path (no child on the path ran).
    pub own_us: i64,
    /// Where that own time lies: `[from, to]` microseconds from the root's start.
    pub own_segments: Vec<[i64; 2]>,
    pub cause: Cause,
    /// The children on the path of a span that is not diagnosed (a diagnosed span's are in
    /// its parts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

/// Why a span took its time.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Cause {
    /// Measured by holdup's diagnosis engine.
    Diagnosed(Diagnosis),
    /// A stage of a diagnosed request: what it waited for, by kind.
    Stage { stage: String },
    /// No holdup attributes: only its place on the path says anything.
    Uninstrumented { label: String },
}

/// A request span's diagnosis, as its attributes say, and its time by cause.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub verdict: String,
    pub total_us: i64,
    pub busy_us: i64,
    pub on_cpu_us: i64,
    pub scheduled_us: i64,
    pub idle_us: i64,
    pub queue_us: i64,
    pub blamed_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_in: Option<String>,
    /// Largest first.
    pub parts: Vec<Part>,
}

/// One cause of a diagnosed request's time.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    /// A verdict word (`upstream`, `runtime-contention`, …) or `outside-handler`.
    pub cause: String,
    pub us: i64,
    /// For runtime contention: who held the workers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub culprits: Vec<Culprit>,
    /// The spans on the path this part waited on (an upstream call, a backoff).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<Node>,
}

/// A request (or task) that held a runtime worker while this one waited for it.
#[derive(Debug, Clone, Serialize)]
pub struct Culprit {
    /// `CpuBound 4bf92f35` for a request, `task:<name>` for a task.
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// How long it held a worker during the wait (absent where the API drops link
    /// attributes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_us: Option<i64>,
    /// What its own trace says it was doing (filled in by `culprits::follow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub followed: Option<Followed>,
    /// Why it was not followed, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A culprit's own span.
#[derive(Debug, Clone, Serialize)]
pub struct Followed {
    /// When it started, in microseconds since the Unix epoch.
    pub start_unix_us: i64,
    pub service: String,
    pub operation: String,
    pub duration_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// The cause words of a split, in the order holdup's verdicts are listed.
pub const OWN_CPU: &str = "own-cpu";
pub const BLOCKING_CALL: &str = "blocking-call";
pub const RUNTIME_CONTENTION: &str = "runtime-contention";
pub const RESOURCE_QUEUE: &str = "resource-queue";
pub const WAITING: &str = "waiting";
/// Time in the server span outside the handler the engine measured (transport, codec).
pub const OUTSIDE_HANDLER: &str = "outside-handler";

/// The verdict word for idle time in a stage of `kind` (the engine's stage kinds).
pub fn stage_cause(kind: &str) -> &str {
    match kind {
        "queue" => RESOURCE_QUEUE,
        "offloaded" => "offloaded-cpu",
        "" => WAITING,
        other => other,
    }
}

/// What a span waits for, as the diagnosis engine would classify it: its `holdup.stage`,
/// else a database span is `backend`, a client span `upstream`.
fn stage_kind(span: &Span) -> Option<String> {
    if let Some(stage) = span.text("holdup.stage") {
        return Some(stage);
    }
    if span.attr("db.system").is_some() || span.attr("db.system.name").is_some() {
        return Some("backend".to_owned());
    }
    (span.kind == Kind::Client).then(|| "upstream".to_owned())
}

/// Explains `trace` along the critical path from span `root`.
pub fn explain(trace: &Trace, root: usize) -> Explanation {
    let path = critical_path(trace, root);
    let node = node(trace, &path, path.from, false);
    let mut totals = BTreeMap::new();
    shares(&node, &mut totals);
    let mut causes: Vec<Share> = totals
        .into_iter()
        .filter(|(_, us)| *us > 0)
        .map(|(cause, us)| Share { cause, us })
        .collect();
    causes.sort_by_key(|x| std::cmp::Reverse(x.us));
    let roots = super::critical_path::roots(trace);
    Explanation {
        trace_id: trace.trace_id.clone(),
        api: "",
        services: trace.services(),
        spans: trace.spans.len(),
        start_unix_us: us(path.from),
        other_roots: roots.len().saturating_sub(1),
        headline: super::text::headline(&node),
        causes,
        root: node,
    }
}

fn us(ns: i64) -> i64 {
    ns / 1_000
}

fn node(trace: &Trace, path: &PathNode, origin: i64, under_diagnosed: bool) -> Node {
    let span = &trace.spans[path.span];
    let diagnosed = span.attr("holdup.verdict").is_some();
    let children: Vec<Node> = path
        .children
        .iter()
        .map(|c| node(trace, c, origin, diagnosed))
        .collect();
    let stage = stage_kind(span).filter(|_| under_diagnosed || span.attr("holdup.stage").is_some());
    let (cause, children) = if diagnosed {
        (Cause::Diagnosed(diagnosis(span, children)), Vec::new())
    } else if let Some(stage) = stage {
        (Cause::Stage { stage }, children)
    } else {
        (
            Cause::Uninstrumented {
                label: format!("uninstrumented: {} {}", span.service, span.operation),
            },
            children,
        )
    };
    Node {
        trace_id: span.trace_id.clone(),
        span_id: span.span_id.clone(),
        service: span.service.clone(),
        operation: span.operation.clone(),
        kind: span.kind,
        start_us: us(path.from - origin),
        span_start_us: us(span.start_ns - origin),
        on_path_us: us(path.on_path_ns()),
        duration_us: us(span.duration_ns()),
        own_us: us(path.own_ns()),
        own_segments: path
            .own
            .iter()
            .map(|(a, b)| [us(a - origin), us(b - origin)])
            .collect(),
        cause,
        children,
    }
}

/// The cause a child on the path stands for in its diagnosed parent's split.
fn child_cause(child: &Node) -> String {
    match &child.cause {
        Cause::Stage { stage } => stage_cause(stage).to_owned(),
        // A request of another (or the same) service called in-process: the caller waited
        // on it as on an upstream.
        Cause::Diagnosed(_) if child.kind == Kind::Server => "upstream".to_owned(),
        _ => WAITING.to_owned(),
    }
}

fn diagnosis(span: &Span, children: Vec<Node>) -> Diagnosis {
    let get = |key: &str| span.micros(key).unwrap_or(0);
    let busy = get("holdup.busy_us");
    let on_cpu = span.micros("holdup.on_cpu_us").unwrap_or(busy);
    let computing = (on_cpu + get("holdup.cpu_wait_us")).min(busy);
    let scheduled = get("holdup.scheduled_us");
    let idle = get("holdup.idle_us");
    let queue = get("holdup.queue_us").min(idle);
    let total = span
        .micros("holdup.total_us")
        .unwrap_or(busy + scheduled + idle);

    // The children by the cause they stand for; idle time (less the queue, which the
    // engine measured itself) is handed to the kinds the path shows, largest first.
    let mut by_cause: BTreeMap<String, (i64, Vec<Node>)> = BTreeMap::new();
    for child in children {
        let entry = by_cause.entry(child_cause(&child)).or_default();
        entry.0 += child.on_path_us;
        entry.1.push(child);
    }
    let mut parts = vec![
        part(OWN_CPU, computing),
        part(BLOCKING_CALL, busy - computing),
        Part {
            culprits: culprits(span),
            ..part(RUNTIME_CONTENTION, scheduled)
        },
    ];
    let mut left = idle - queue;
    let queue_path = by_cause.remove(RESOURCE_QUEUE).map(|(_, p)| p);
    parts.push(Part {
        path: queue_path.unwrap_or_default(),
        ..part(RESOURCE_QUEUE, queue)
    });
    let waiting_path = by_cause.remove(WAITING).map(|(_, p)| p);
    let mut kinds: Vec<(String, (i64, Vec<Node>))> = by_cause.into_iter().collect();
    kinds.sort_by_key(|x| std::cmp::Reverse(x.1.0));
    for (cause, (seen, path)) in kinds {
        let given = seen.min(left).max(0);
        left -= given;
        parts.push(Part {
            path,
            ..part(&cause, given)
        });
    }
    parts.push(Part {
        path: waiting_path.unwrap_or_default(),
        ..part(WAITING, left.max(0))
    });
    parts.push(part(
        OUTSIDE_HANDLER,
        (us(span.duration_ns()) - total).max(0),
    ));
    parts.retain(|p| p.us > 0 || !p.path.is_empty() || !p.culprits.is_empty());
    parts.sort_by_key(|x| std::cmp::Reverse(x.us));
    Diagnosis {
        verdict: span.text("holdup.verdict").unwrap_or_default(),
        total_us: total,
        busy_us: busy,
        on_cpu_us: on_cpu,
        scheduled_us: scheduled,
        idle_us: idle,
        queue_us: queue,
        blamed_us: get("holdup.blamed_us"),
        waited_in: span.text("holdup.waited_in"),
        parts,
    }
}

fn part(cause: &str, us: i64) -> Part {
    Part {
        cause: cause.to_owned(),
        us: us.max(0),
        culprits: Vec::new(),
        path: Vec::new(),
    }
}

/// `CpuBound@4bf92f35…` as `CpuBound 4bf92f35`.
fn short_label(method: &str, trace_id: &str) -> String {
    let short: String = trace_id.chars().take(8).collect();
    if method.is_empty() {
        format!("request {short}")
    } else {
        format!("{method} {short}")
    }
}

/// The culprits of a span: its culprit links (with their share), named by the span's
/// `holdup.culprits` labels; culprits without a trace (tasks) by their label alone.
fn culprits(span: &Span) -> Vec<Culprit> {
    let labels: Vec<String> = span
        .text("holdup.culprits")
        .map(|l| {
            l.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let method_of = |trace_id: &str| {
        labels.iter().find_map(|l| {
            let (method, trace) = l.split_once('@')?;
            (trace.eq_ignore_ascii_case(trace_id)).then(|| method.to_owned())
        })
    };
    let mut out: Vec<Culprit> = span
        .links
        .iter()
        .filter(|l| {
            l.attributes.is_empty()
                || l.attributes
                    .get("holdup.link")
                    .is_some_and(|v| v.text() == "culprit")
        })
        .map(|l| Culprit {
            label: short_label(&method_of(&l.trace_id).unwrap_or_default(), &l.trace_id),
            trace_id: Some(l.trace_id.clone()),
            span_id: Some(l.span_id.clone()),
            share_us: l
                .attributes
                .get("holdup.share_us")
                .and_then(super::model::Value::as_i64)
                .map(super::model::clamp_micros),
            followed: None,
            note: None,
        })
        .collect();
    for label in &labels {
        let linked = label.split_once('@').is_some_and(|(_, t)| {
            out.iter().any(|c| {
                c.trace_id
                    .as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(t))
            })
        });
        if !linked {
            let label = match label.split_once('@') {
                Some((method, trace)) => short_label(method, trace),
                None => label.clone(),
            };
            out.push(Culprit {
                label,
                trace_id: None,
                span_id: None,
                share_us: None,
                followed: None,
                note: None,
            });
        }
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.share_us));
    out
}

/// Adds `node`'s time by cause to `totals`: a diagnosed span's parts (scaled to its part of
/// the path, so that the totals add up to the root's time), any other span's own time
/// under its stage's cause or its "uninstrumented" label, and its children's.
pub fn shares(node: &Node, totals: &mut BTreeMap<String, i64>) {
    match &node.cause {
        Cause::Diagnosed(d) => {
            let sum: i64 = d.parts.iter().map(|p| p.us).sum();
            for part in &d.parts {
                let us = if sum > node.on_path_us && sum > 0 {
                    (i128::from(part.us) * i128::from(node.on_path_us) / i128::from(sum)) as i64
                } else {
                    part.us
                };
                *totals.entry(part.cause.clone()).or_default() += us;
            }
        }
        Cause::Stage { stage } => {
            *totals.entry(stage_cause(stage).to_owned()).or_default() += node.own_us;
        }
        Cause::Uninstrumented { label } => {
            *totals.entry(label.clone()).or_default() += node.own_us;
        }
    }
    for child in &node.children {
        shares(child, totals);
    }
}

/// Every culprit in the explanation, for following.
pub fn culprits_mut(node: &mut Node) -> Vec<&mut Culprit> {
    let mut out = Vec::new();
    if let Cause::Diagnosed(d) = &mut node.cause {
        for part in &mut d.parts {
            out.extend(part.culprits.iter_mut());
            for child in &mut part.path {
                out.extend(culprits_mut(child));
            }
        }
    }
    for child in &mut node.children {
        out.extend(culprits_mut(child));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::critical_path::tests::span;
    use crate::explain::model::{Link, Value};

    fn int(v: i64) -> Value {
        Value::Int(v)
    }

    /// UpstreamCall (812 ms): 22 ms on CPU, 150 ms waiting for a worker blamed on a
    /// CpuBound, 640 ms idle in its upstream attempt, whose server is another service.
    fn upstream_trace() -> Trace {
        let mut server = span("aa", None, 0, 812);
        server.operation = "holdup.v1.Lab/UpstreamCall".into();
        server.service = "holdup".into();
        for (k, v) in [
            ("holdup.total_us", 812_000),
            ("holdup.busy_us", 22_000),
            ("holdup.on_cpu_us", 21_000),
            ("holdup.cpu_wait_us", 1_000),
            ("holdup.scheduled_us", 150_000),
            ("holdup.idle_us", 640_000),
            ("holdup.queue_us", 0),
            ("holdup.blamed_us", 148_000),
        ] {
            server.attributes.insert(k.into(), int(v));
        }
        server
            .attributes
            .insert("holdup.verdict".into(), Value::Str("upstream".into()));
        let culprit_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        server.attributes.insert(
            "holdup.culprits".into(),
            Value::Str(format!("CpuBound@{culprit_trace},task:conn")),
        );
        server.links.push(Link {
            trace_id: culprit_trace.into(),
            span_id: "00f067aa0ba902b7".into(),
            attributes: [
                ("holdup.link".to_owned(), Value::Str("culprit".into())),
                ("holdup.share_us".to_owned(), int(148_000)),
            ]
            .into(),
        });
        let mut attempt = span("bb", Some("aa"), 160, 800);
        attempt.operation = "GET /work".into();
        attempt.service = "holdup".into();
        attempt.kind = Kind::Client;
        let mut upstream = span("cc", Some("bb"), 170, 770);
        upstream.operation = "GET /work".into();
        upstream.service = "holdup-upstream".into();
        Trace {
            trace_id: "1".repeat(32),
            spans: vec![server, attempt, upstream],
        }
    }

    #[test]
    fn a_diagnosed_span_is_split_by_cause_with_its_stages_and_culprits() {
        let e = explain(&upstream_trace(), 0);
        let Cause::Diagnosed(d) = &e.root.cause else {
            panic!("diagnosed: {:?}", e.root.cause)
        };
        let parts: Vec<(&str, i64)> = d.parts.iter().map(|p| (p.cause.as_str(), p.us)).collect();
        assert_eq!(
            parts,
            [
                ("upstream", 640_000),
                ("runtime-contention", 150_000),
                ("own-cpu", 22_000)
            ]
        );
        let upstream = &d.parts[0].path[0];
        assert!(matches!(&upstream.cause, Cause::Stage { stage } if stage == "upstream"));
        let server = &upstream.children[0];
        assert!(
            matches!(&server.cause, Cause::Uninstrumented { label } if label == "uninstrumented: holdup-upstream GET /work")
        );
        let culprits = &d.parts[1].culprits;
        assert_eq!(culprits[0].label, "CpuBound 4bf92f35");
        assert_eq!(culprits[0].share_us, Some(148_000));
        assert_eq!(culprits[1].label, "task:conn");
        assert_eq!(
            e.headline,
            "UpstreamCall 812 ms: 640 ms upstream (holdup-upstream GET /work 600 ms, \
             uninstrumented), 150 ms runtime-contention blamed on CpuBound 4bf92f35, \
             task:conn, 22 ms own-cpu"
        );
        let total: i64 = e.causes.iter().map(|s| s.us).sum();
        assert_eq!(total, 812_000);
    }

    #[test]
    fn absurd_attributes_are_clamped_not_overflowed() {
        let mut trace = upstream_trace();
        for key in [
            "holdup.busy_us",
            "holdup.on_cpu_us",
            "holdup.cpu_wait_us",
            "holdup.scheduled_us",
            "holdup.idle_us",
            "holdup.total_us",
        ] {
            trace.spans[0].attributes.insert(key.into(), int(i64::MAX));
        }
        trace.spans[0].links[0]
            .attributes
            .insert("holdup.share_us".into(), int(i64::MAX));
        let e = explain(&trace, 0);
        assert!(e.causes.iter().all(|s| s.us >= 0));
        let total: i64 = e.causes.iter().map(|s| s.us).sum();
        assert!(total <= 812_000, "{total}");
    }

    #[test]
    fn an_uninstrumented_root_passes_its_time_to_the_path_under_it() {
        let mut trace = upstream_trace();
        for s in &mut trace.spans {
            s.start_ns += 50_000_000;
            s.end_ns += 50_000_000;
        }
        trace.spans[0].parent_id = Some("ee".into());
        let mut gateway = span("ee", None, 0, 900);
        gateway.service = "gateway".into();
        gateway.operation = "GET /checkout".into();
        trace.spans.push(gateway);
        let e = explain(&trace, 3);
        assert!(matches!(&e.root.cause, Cause::Uninstrumented { .. }));
        assert_eq!(e.root.own_us, 88_000);
        let causes: BTreeMap<&str, i64> =
            e.causes.iter().map(|s| (s.cause.as_str(), s.us)).collect();
        assert_eq!(causes["uninstrumented: gateway GET /checkout"], 88_000);
        assert_eq!(causes["upstream"], 640_000);
        assert!(
            e.headline
                .starts_with("gateway GET /checkout 900 ms (uninstrumented): "),
            "{}",
            e.headline
        );
    }
}
