//! The critical path of a trace: the spans, and the stretches of each, that determine when
//! the root span ends. Walking back from the root's end, each span's time is either its own
//! (no child on the path runs then) or the time of the child that finished last, at or
//! before the point reached so far; that child is walked the same way, and the walk goes on
//! from where it started. A child still running at that point (it overlaps the child already
//! on the path) is off the path. This is the rule of Jaeger UI's critical path view; what
//! timing alone cannot tell (why a span took its time) is left to `cause`, which reads
//! holdup's attributes.
//!
//! A child that outlives its parent counts only up to the parent's end, one that starts
//! before it (clock skew between hosts) only from the parent's start.

use std::collections::HashMap;

use super::model::Trace;

/// How deep the walk goes: a real trace is a few dozen spans deep; a malformed one (a chain
/// of thousands) must not overflow the stack.
pub const MAX_DEPTH: usize = 128;

/// One span on the critical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathNode {
    /// Index into the trace's spans.
    pub span: usize,
    /// The part of the span on the path, in ns since the epoch: `from` is its start (or its
    /// parent's), `to` the end its parent waited for.
    pub from: i64,
    pub to: i64,
    /// The span's own stretches on the path (no child on the path ran), in time order.
    pub own: Vec<(i64, i64)>,
    /// The children on the path, in time order.
    pub children: Vec<PathNode>,
}

impl PathNode {
    /// Nanoseconds on the path.
    pub fn on_path_ns(&self) -> i64 {
        self.to - self.from
    }

    /// Nanoseconds of the span's own time on the path.
    pub fn own_ns(&self) -> i64 {
        self.own.iter().map(|(a, b)| b - a).sum()
    }

    /// This node and every node under it, depth first.
    pub fn walk(&self) -> Vec<&Self> {
        let mut out = vec![self];
        for child in &self.children {
            out.extend(child.walk());
        }
        out
    }
}

/// The spans of `trace` by parent index (spans whose parent is missing are under no one).
pub fn children_of(trace: &Trace) -> HashMap<usize, Vec<usize>> {
    let index: HashMap<&str, usize> = trace
        .spans
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, span) in trace.spans.iter().enumerate() {
        let parent = span.parent_id.as_deref().and_then(|p| index.get(p));
        if let Some(&parent) = parent
            && parent != i
        {
            children.entry(parent).or_default().push(i);
        }
    }
    children
}

/// The spans with no parent in the trace, latest end first (ties: earliest start first).
pub fn roots(trace: &Trace) -> Vec<usize> {
    let ids: std::collections::HashSet<&str> =
        trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut roots: Vec<usize> = trace
        .spans
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.parent_id
                .as_deref()
                .is_none_or(|p| p == s.span_id || !ids.contains(p))
        })
        .map(|(i, _)| i)
        .collect();
    roots.sort_by_key(|&i| (-trace.spans[i].end_ns, trace.spans[i].start_ns));
    roots
}

/// The critical path under span `root`.
pub fn critical_path(trace: &Trace, root: usize) -> PathNode {
    let children = children_of(trace);
    let span = &trace.spans[root];
    walk(trace, &children, root, span.start_ns, span.end_ns, 0)
}

/// The path through span `at`, for the stretch `lo..hi` its parent waited for.
fn walk(
    trace: &Trace,
    children: &HashMap<usize, Vec<usize>>,
    at: usize,
    lo: i64,
    hi: i64,
    depth: usize,
) -> PathNode {
    let span = &trace.spans[at];
    let from = span.start_ns.max(lo).min(hi);
    let mut cursor = hi;
    let mut own = Vec::new();
    let mut path = Vec::new();
    if depth < MAX_DEPTH {
        let mut kids: Vec<usize> = children.get(&at).cloned().unwrap_or_default();
        // Latest end first; of equal ends, the one that started last (the shorter wait).
        kids.sort_by_key(|&k| (-trace.spans[k].end_ns, -trace.spans[k].start_ns));
        for kid in kids {
            if cursor <= from {
                break;
            }
            let child = &trace.spans[kid];
            // Clipped to the parent's end; one that ends after the point reached (it overlaps
            // the child already on the path) is off the path, as in Jaeger UI.
            let end = child.end_ns.min(hi);
            if end > cursor || child.start_ns >= cursor || end <= from {
                continue;
            }
            if end < cursor {
                own.push((end, cursor));
            }
            let node = walk(trace, children, kid, from, end, depth + 1);
            cursor = node.from;
            path.push(node);
        }
    }
    if cursor > from {
        own.push((from, cursor));
    }
    own.reverse();
    path.reverse();
    PathNode {
        span: at,
        from,
        to: hi.max(from),
        own,
        children: path,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::explain::model::{Kind, Span};

    /// A span `id` under `parent`, from `start` to `end` ms.
    pub(crate) fn span(id: &str, parent: Option<&str>, start: i64, end: i64) -> Span {
        Span {
            trace_id: "1".repeat(32),
            span_id: id.to_owned(),
            parent_id: parent.map(str::to_owned),
            service: "svc".into(),
            operation: format!("op {id}"),
            kind: Kind::Server,
            start_ns: start * 1_000_000,
            end_ns: end * 1_000_000,
            attributes: Default::default(),
            links: Vec::new(),
        }
    }

    fn trace(spans: Vec<Span>) -> Trace {
        Trace {
            trace_id: "1".repeat(32),
            spans,
        }
    }

    /// (span id, from ms, to ms) of every node, depth first.
    fn shape(trace: &Trace, node: &PathNode) -> Vec<(String, i64, i64)> {
        node.walk()
            .iter()
            .map(|n| {
                (
                    trace.spans[n.span].span_id.clone(),
                    n.from / 1_000_000,
                    n.to / 1_000_000,
                )
            })
            .collect()
    }

    #[test]
    fn sequential_children_are_all_on_the_path() {
        let t = trace(vec![
            span("r", None, 0, 100),
            span("a", Some("r"), 10, 40),
            span("b", Some("r"), 50, 90),
        ]);
        let path = critical_path(&t, 0);
        assert_eq!(
            shape(&t, &path),
            [
                ("r".into(), 0, 100),
                ("a".into(), 10, 40),
                ("b".into(), 50, 90)
            ]
        );
        assert_eq!(path.own_ns(), 30 * 1_000_000);
        assert_eq!(path.own.len(), 3);
    }

    #[test]
    fn of_concurrent_siblings_the_last_to_finish_is_on_the_path() {
        // Two calls in parallel: b ends last, so a is off the path (jaeger-ui #2371's case
        // is the reverse: a sibling drawn on the path because of its position, not its end).
        let t = trace(vec![
            span("r", None, 0, 100),
            span("a", Some("r"), 10, 60),
            span("b", Some("r"), 20, 95),
        ]);
        let path = critical_path(&t, 0);
        assert_eq!(
            shape(&t, &path),
            [("r".into(), 0, 100), ("b".into(), 20, 95)]
        );
    }

    #[test]
    fn an_earlier_sibling_still_running_when_the_later_began_is_off_the_path() {
        // As in Jaeger UI: the stretch before b began is the parent's own.
        let t = trace(vec![
            span("r", None, 0, 100),
            span("a", Some("r"), 5, 50),
            span("b", Some("r"), 40, 90),
            span("c", Some("r"), 10, 30),
        ]);
        let path = critical_path(&t, 0);
        assert_eq!(
            shape(&t, &path),
            [
                ("r".into(), 0, 100),
                ("c".into(), 10, 30),
                ("b".into(), 40, 90)
            ]
        );
    }

    #[test]
    fn children_outside_the_parent_are_clipped_and_grandchildren_walked() {
        let t = trace(vec![
            span("r", None, 10, 100),
            span("a", Some("r"), 0, 120),
            span("g", Some("a"), 30, 80),
        ]);
        let path = critical_path(&t, 0);
        assert_eq!(
            shape(&t, &path),
            [
                ("r".into(), 10, 100),
                ("a".into(), 10, 100),
                ("g".into(), 30, 80)
            ]
        );
        assert_eq!(path.own_ns(), 0);
    }

    #[test]
    fn roots_are_spans_without_a_parent_in_the_trace_latest_end_first() {
        let t = trace(vec![
            span("a", Some("missing"), 0, 50),
            span("b", None, 0, 80),
            span("c", Some("b"), 0, 10),
            span("d", Some("d"), 0, 5),
        ]);
        assert_eq!(roots(&t), vec![1, 0, 3]);
    }

    #[test]
    fn a_chain_deeper_than_the_bound_stops_without_overflowing() {
        let mut spans = vec![span("0", None, 0, 10_000)];
        for i in 1..5_000 {
            spans.push(span(
                &i.to_string(),
                Some(&(i - 1).to_string()),
                i,
                10_000 - i,
            ));
        }
        let t = trace(spans);
        let path = critical_path(&t, 0);
        assert_eq!(path.walk().len(), MAX_DEPTH + 1);
    }
}
