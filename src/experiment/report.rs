//! The whole catalogue run as data (serialised to JSON by `--json`) and as the Markdown
//! findings table printed on stdout.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::findings::Finding;
use crate::load::{report::SplitComponent, table::ms};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentReport {
    pub quick: bool,
    pub target: String,
    /// Lab workers of the server(s): the blocking pressures ran one caller per worker.
    pub workers: u32,
    pub elapsed_s: f64,
    pub findings: Vec<Finding>,
    pub skipped: Vec<Skipped>,
}

/// An experiment that could not run, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

impl ExperimentReport {
    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }
}

/// The findings table's columns, shared by the Markdown and the HTML report.
pub const COLUMNS: [&str; 13] = [
    "experiment",
    "pressure",
    "Fast p50 / p99 alone",
    "Fast p50 / p99 under pressure",
    "Fast p99 x",
    "pressure p50 / p99",
    "pressure ok/s",
    "Fast delay",
    "pressure delay / verdict",
    "pressure verdict: expected (measured share)",
    "late Fast verdict: expected (measured share)",
    "Fast wait blamed on pressure",
    "conclusion",
];

/// Which of [`COLUMNS`] hold numbers (right-aligned in HTML).
pub const NUMERIC: [bool; 13] = [
    false, false, true, true, true, true, true, false, false, false, false, true, false,
];

/// One finding as the text of each of [`COLUMNS`], unescaped.
pub fn row(f: &Finding) -> [String; 13] {
    [
        f.id.clone(),
        format!("{} ({})", f.pressure_rpc, f.pressure_schedule),
        format!(
            "{} / {}",
            ms(f.probe_alone_p50_ms),
            ms(f.probe_alone_p99_ms)
        ),
        format!("{} / {}", ms(f.probe_p50_ms), ms(f.probe_p99_ms)),
        format!("{:.1}", f.probe_p99_factor),
        format!("{} / {}", ms(f.pressure_p50_ms), ms(f.pressure_p99_ms)),
        format!("{:.0}", f.pressure_throughput),
        f.probe_dominant
            .map_or("-", SplitComponent::name)
            .to_owned(),
        format!(
            "{} / {}",
            f.pressure_dominant.map_or("-", SplitComponent::name),
            f.pressure_verdict
        ),
        format!(
            "{} ({:.0}%)",
            f.pressure_expected,
            f.pressure_verdict_share * 100.0
        ),
        format!(
            "{} ({:.0}%)",
            f.probe_expected,
            f.probe_verdict_share * 100.0
        ),
        f.blame_precision
            .map_or_else(|| "-".to_owned(), |p| format!("{:.0}%", p * 100.0)),
        f.conclusion.clone(),
    ]
}

/// Escapes the characters that would break a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The findings table, with a header saying how it was measured.
pub fn markdown(report: &ExperimentReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# holdup experiment findings\n\n{} run against {}, {} lab worker(s), {:.0} s. \
         Latencies in ms; the probe is Fast, open loop, timed from its intended send time.\n",
        if report.quick { "Quick" } else { "Full" },
        report.target,
        report.workers,
        report.elapsed_s
    );
    let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(COLUMNS.len()));
    for f in &report.findings {
        let cells: Vec<String> = row(f).iter().map(|c| cell(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if !report.skipped.is_empty() {
        out.push_str("\nSkipped:\n");
        for s in &report.skipped {
            let _ = writeln!(out, "- {}: {}", s.id, s.reason);
        }
    }
    out.push_str(
        "\nFast delay / pressure delay: the largest mean component of the replies' delay split \
         (busy = own polls, scheduled = waiting for a lab worker, queue = waiting for a pool slot, \
         waiting = the rest of idle: awaiting I/O or timers, outside = client latency not spent \
         in the handler).\n\
         Expected verdicts are the catalogue's answer key; the measured share is of pressure calls, \
         and of late Fast calls (or of all, where the answer is none). Blamed: the share of the \
         Fast probe's wait for a worker that the engine blamed on the pressure's RPC.\n",
    );
    out
}
