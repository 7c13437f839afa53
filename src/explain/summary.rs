//! Many traces, one question: the explanations of the slowest traces of an operation, summed
//! by cause ("what share of the late time was upstream, contention, queue"), and the
//! culprits runtime contention was blamed on, summed by what they were.

use std::collections::BTreeMap;

use serde::Serialize;

use super::cause::{Cause, Culprit, Explanation, Node, Share};

/// The answer to `holdup explain --service S --operation O --slowest N`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `holdup holdup.v1.Lab/Fast`: what was searched for.
    pub what: String,
    pub since: String,
    pub jaeger: String,
    pub api: &'static str,
    /// Traces the search found, of which the slowest are explained.
    pub found: usize,
    /// The explained spans' time, added up.
    pub total_us: i64,
    /// That time by cause, largest first.
    pub causes: Vec<Portion>,
    /// Runtime contention by culprit (a request's method, or a task), largest first.
    pub blamed: Vec<Blamed>,
    /// Each explained trace, slowest first.
    pub traces: Vec<TraceLine>,
    /// The explanations themselves.
    pub explanations: Vec<Explanation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Portion {
    pub cause: String,
    pub us: i64,
    /// Of `total_us`, 0..=1.
    pub share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Blamed {
    pub culprit: String,
    /// Worker time held while the explained requests waited (0 where the API dropped it).
    pub us: i64,
    /// In how many explained traces.
    pub traces: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceLine {
    pub trace_id: String,
    pub duration_us: i64,
    pub headline: String,
}

/// Every culprit under `node`.
pub fn culprits(node: &Node) -> Vec<&Culprit> {
    let mut out = Vec::new();
    if let Cause::Diagnosed(d) = &node.cause {
        for part in &d.parts {
            out.extend(part.culprits.iter());
            for child in &part.path {
                out.extend(culprits(child));
            }
        }
    }
    for child in &node.children {
        out.extend(culprits(child));
    }
    out
}

/// What a culprit was, across requests: its method (`CpuBound`), or a task's label.
fn culprit_kind(label: &str) -> String {
    label.split_whitespace().next().unwrap_or(label).to_owned()
}

/// Sums `explanations` (slowest first).
pub fn summarize(
    what: String,
    since: String,
    jaeger: String,
    api: &'static str,
    found: usize,
    explanations: Vec<Explanation>,
) -> Summary {
    let mut causes: BTreeMap<String, i64> = BTreeMap::new();
    let mut blamed: BTreeMap<String, (i64, usize)> = BTreeMap::new();
    let mut total = 0;
    for e in &explanations {
        total += e.root.on_path_us;
        for Share { cause, us } in &e.causes {
            *causes.entry(cause.clone()).or_default() += us;
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in culprits(&e.root) {
            let kind = culprit_kind(&c.label);
            let entry = blamed.entry(kind.clone()).or_default();
            entry.0 += c.share_us.unwrap_or(0);
            if seen.insert(kind) {
                entry.1 += 1;
            }
        }
    }
    let mut causes: Vec<Portion> = causes
        .into_iter()
        .map(|(cause, us)| Portion {
            cause,
            us,
            share: if total > 0 {
                us as f64 / total as f64
            } else {
                0.0
            },
        })
        .collect();
    causes.sort_by_key(|x| std::cmp::Reverse(x.us));
    let mut blamed: Vec<Blamed> = blamed
        .into_iter()
        .map(|(culprit, (us, traces))| Blamed {
            culprit,
            us,
            traces,
        })
        .collect();
    blamed.sort_by(|a, b| b.us.cmp(&a.us).then(b.traces.cmp(&a.traces)));
    let traces = explanations
        .iter()
        .map(|e| TraceLine {
            trace_id: e.trace_id.clone(),
            duration_us: e.root.on_path_us,
            headline: e.headline.clone(),
        })
        .collect();
    Summary {
        what,
        since,
        jaeger,
        api,
        found,
        total_us: total,
        causes,
        blamed,
        traces,
        explanations,
    }
}
