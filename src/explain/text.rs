//! The explanation as text a person reads in ten seconds: one headline ("UpstreamCall 812 ms:
//! 640 ms upstream (…), 150 ms runtime-contention blamed on CpuBound 4bf92f35 (own-cpu),
//! 22 ms own-cpu"), then the critical path as a tree, each span with its cause.

use std::fmt::Write as _;

use super::{
    cause::{Cause, Culprit, Explanation, Node, Part},
    summary::Summary,
};

/// Parts and culprits the headline names; the tree shows them all.
const HEADLINE_PARTS: usize = 4;
const HEADLINE_CULPRITS: usize = 2;
/// Parts smaller than this share of the span stay out of the headline.
const HEADLINE_MIN_SHARE: f64 = 0.01;
/// Parts under this many microseconds stay out of the tree (unless they name culprits); the
/// JSON has them all.
const TREE_MIN_US: i64 = 100;

/// Microseconds as milliseconds for people: `812 ms`, `22 ms`, `4.5 ms`, `0.3 ms`.
pub fn ms(us: i64) -> String {
    if us.abs() >= 10_000 {
        format!("{:.0} ms", us as f64 / 1e3)
    } else {
        format!("{:.1} ms", us as f64 / 1e3)
    }
}

/// `holdup.v1.Lab/UpstreamCall` as `UpstreamCall`; an operation with a space (`GET /work`)
/// as it is.
pub fn short_operation(operation: &str) -> &str {
    if operation.contains(' ') {
        return operation;
    }
    operation
        .rsplit_once('/')
        .map_or(operation, |(_, m)| m)
        .trim()
}

fn culprit_text(c: &Culprit) -> String {
    match c.followed.as_ref().and_then(|f| f.verdict.as_deref()) {
        Some(verdict) => format!("{} ({verdict})", c.label),
        None => c.label.clone(),
    }
}

/// The deepest informative span under `node`: where a part's time really went.
fn leaf(node: &Node) -> String {
    match &node.cause {
        Cause::Diagnosed(d) => format!(
            "{} {} {}, {}",
            node.service,
            short_operation(&node.operation),
            ms(node.on_path_us),
            d.verdict
        ),
        Cause::Stage { .. } => match node.children.iter().max_by_key(|c| c.on_path_us) {
            Some(child) => leaf(child),
            None => format!(
                "{} {} {}",
                node.service,
                node.operation,
                ms(node.on_path_us)
            ),
        },
        Cause::Uninstrumented { .. } => format!(
            "{} {} {}, uninstrumented",
            node.service,
            node.operation,
            ms(node.on_path_us)
        ),
    }
}

fn part_text(part: &Part) -> String {
    let mut out = format!("{} {}", ms(part.us), part.cause);
    if !part.culprits.is_empty() {
        let named: Vec<String> = part
            .culprits
            .iter()
            .take(HEADLINE_CULPRITS)
            .map(culprit_text)
            .collect();
        let _ = write!(out, " blamed on {}", named.join(", "));
        if part.culprits.len() > HEADLINE_CULPRITS {
            let _ = write!(out, " +{} more", part.culprits.len() - HEADLINE_CULPRITS);
        }
    }
    if let Some(biggest) = part.path.iter().max_by_key(|n| n.on_path_us) {
        let _ = write!(out, " ({})", leaf(biggest));
    }
    out
}

/// The one-line answer for the path from `node`.
pub fn headline(node: &Node) -> String {
    let name = short_operation(&node.operation);
    match &node.cause {
        Cause::Diagnosed(d) => {
            let items: Vec<String> = d
                .parts
                .iter()
                .filter(|p| p.us as f64 >= node.on_path_us as f64 * HEADLINE_MIN_SHARE)
                .take(HEADLINE_PARTS)
                .map(part_text)
                .collect();
            format!("{name} {}: {}", ms(node.on_path_us), items.join(", "))
        }
        Cause::Stage { stage } => format!("{name} {} ({stage} stage)", ms(node.on_path_us)),
        Cause::Uninstrumented { .. } => {
            let mut items: Vec<(i64, String)> = node
                .children
                .iter()
                .map(|c| {
                    (
                        c.on_path_us,
                        format!("{} {}", ms(c.on_path_us), summary_of(c)),
                    )
                })
                .collect();
            if node.own_us > 0 {
                items.push((node.own_us, format!("{} its own time", ms(node.own_us))));
            }
            items.sort_by_key(|x| std::cmp::Reverse(x.0));
            let items: Vec<String> = items.into_iter().map(|(_, t)| t).collect();
            format!(
                "{} {name} {} (uninstrumented): {}",
                node.service,
                ms(node.on_path_us),
                items.join(", ")
            )
        }
    }
}

/// A child of an uninstrumented span in its parent's headline.
fn summary_of(node: &Node) -> String {
    let name = short_operation(&node.operation);
    match &node.cause {
        Cause::Diagnosed(d) => {
            let top: Vec<String> = d
                .parts
                .iter()
                .take(2)
                .map(|p| format!("{} {}", ms(p.us), p.cause))
                .collect();
            format!("{} {name} ({})", node.service, top.join(", "))
        }
        Cause::Stage { stage } => format!("{} {name} ({stage})", node.service),
        Cause::Uninstrumented { .. } => format!("{} {name} (uninstrumented)", node.service),
    }
}

/// The whole explanation: a header, the headline, the tree.
pub fn render(e: &Explanation, jaeger: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {} ({} spans, services: {}; Jaeger {jaeger}, {})",
        e.trace_id,
        e.spans,
        e.services.join(", "),
        e.api
    );
    let _ = writeln!(out, "{}", e.headline);
    out.push_str("\ncritical path:\n");
    tree(&mut out, &e.root, "", "");
    if e.other_roots > 0 {
        let _ = writeln!(
            out,
            "({} more span(s) without a parent in this trace are off the path)",
            e.other_roots
        );
    }
    out
}

/// One node and what is under it. `first` prefixes its own line, `rest` the lines under it.
fn tree(out: &mut String, node: &Node, first: &str, rest: &str) {
    let _ = write!(
        out,
        "{first}{} {}  {}",
        node.service,
        node.operation,
        ms(node.on_path_us)
    );
    match &node.cause {
        Cause::Diagnosed(d) => {
            let _ = write!(out, "  verdict {}", d.verdict);
            if let Some(stage) = &d.waited_in {
                let _ = write!(out, ", waited in {stage}");
            }
            out.push('\n');
            let parts: Vec<&Part> = d
                .parts
                .iter()
                .filter(|p| p.us >= TREE_MIN_US || !p.culprits.is_empty())
                .collect();
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let (branch, under) = if last {
                    ("└─ ", "   ")
                } else {
                    ("├─ ", "│  ")
                };
                let _ = writeln!(out, "{rest}{branch}{} {}", ms(part.us), part.cause);
                let inner = format!("{rest}{under}");
                let count = part.culprits.len() + part.path.len();
                let mut k = 0;
                for culprit in &part.culprits {
                    k += 1;
                    let (b, _) = if k == count {
                        ("└─ ", "   ")
                    } else {
                        ("├─ ", "│  ")
                    };
                    let _ = writeln!(out, "{inner}{b}{}", culprit_line(culprit));
                }
                for child in &part.path {
                    k += 1;
                    let (b, u) = if k == count {
                        ("└─ ", "   ")
                    } else {
                        ("├─ ", "│  ")
                    };
                    tree(out, child, &format!("{inner}{b}"), &format!("{inner}{u}"));
                }
            }
        }
        Cause::Stage { stage } => {
            let _ = writeln!(out, "  {stage} stage");
            own_time(out, node, rest);
            children(out, node, rest);
        }
        Cause::Uninstrumented { label } => {
            let _ = writeln!(out, "  {label}");
            own_time(out, node, rest);
            children(out, node, rest);
        }
    }
}

/// The time a span with children on the path spent outside them: for a client span, what
/// the server it called does not account for (the network, the client, the caller's runtime).
fn own_time(out: &mut String, node: &Node, rest: &str) {
    if !node.children.is_empty() && node.own_us >= TREE_MIN_US {
        let _ = writeln!(
            out,
            "{rest}│  ({} its own time, outside the spans under it)",
            ms(node.own_us)
        );
    }
}

fn children(out: &mut String, node: &Node, rest: &str) {
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == node.children.len();
        let (branch, under) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        tree(
            out,
            child,
            &format!("{rest}{branch}"),
            &format!("{rest}{under}"),
        );
    }
}

fn culprit_line(c: &Culprit) -> String {
    let mut line = format!("blamed on {}", c.label);
    if let Some(share) = c.share_us {
        let _ = write!(line, ", held a worker {}", ms(share));
    }
    match (&c.followed, &c.note) {
        (Some(f), _) => {
            let _ = write!(
                line,
                ": {} {} {}",
                f.service,
                f.operation,
                ms(f.duration_us)
            );
            if let Some(verdict) = &f.verdict {
                let _ = write!(line, ", {verdict}");
            }
        }
        (None, Some(note)) => {
            let _ = write!(line, " ({note})");
        }
        (None, None) => {}
    }
    line
}

/// Many traces, one question: the late time by cause, then each trace's headline.
pub fn render_summary(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "the {} slowest of {} traces of {} since {} (Jaeger {}, {}): {} in all",
        s.traces.len(),
        s.found,
        s.what,
        s.since,
        s.jaeger,
        s.api,
        ms(s.total_us)
    );
    out.push_str("\nlate time by cause:\n");
    // Causes that round to 0.0 ms say nothing.
    for share in s.causes.iter().filter(|c| c.us >= 50) {
        let _ = writeln!(
            out,
            "  {:>5.1} %  {:>9}  {}",
            share.share * 100.0,
            ms(share.us),
            share.cause
        );
    }
    if !s.blamed.is_empty() {
        out.push_str("\nruntime contention blamed on:\n");
        for b in &s.blamed {
            let _ = writeln!(out, "  {:>9}  {}", ms(b.us), b.culprit);
        }
    }
    out.push_str("\nslowest:\n");
    for t in &s.traces {
        let _ = writeln!(out, "  {}  {}", &t.trace_id, t.headline);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_for_people() {
        assert_eq!(ms(812_345), "812 ms");
        assert_eq!(ms(22_000), "22 ms");
        assert_eq!(ms(4_449), "4.4 ms");
        assert_eq!(ms(0), "0.0 ms");
    }

    #[test]
    fn short_operations() {
        assert_eq!(short_operation("holdup.v1.Lab/Fast"), "Fast");
        assert_eq!(short_operation("GET /work"), "GET /work");
        assert_eq!(short_operation("plain"), "plain");
    }
}
