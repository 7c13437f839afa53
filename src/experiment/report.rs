//! The whole catalogue run as data (serialised to JSON by `--json`) and as the Markdown
//! findings table printed on stdout.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::findings::Finding;
use crate::load::table::ms;

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
    out.push_str(
        "| experiment | pressure | Fast p50 / p99 alone | Fast p50 / p99 under pressure | Fast p99 x | \
         pressure p50 / p99 | pressure ok/s | Fast delay | pressure delay / verdict | conclusion |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for f in &report.findings {
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} / {} | {} / {} | {:.1} | {} / {} | {:.0} | {} | {} / {} | {} |",
            cell(&f.id),
            cell(&f.pressure_rpc),
            cell(&f.pressure_schedule),
            ms(f.probe_alone_p50_ms),
            ms(f.probe_alone_p99_ms),
            ms(f.probe_p50_ms),
            ms(f.probe_p99_ms),
            f.probe_p99_factor,
            ms(f.pressure_p50_ms),
            ms(f.pressure_p99_ms),
            f.pressure_throughput,
            cell(&f.probe_dominant),
            cell(&f.pressure_dominant),
            cell(&f.pressure_verdict),
            cell(&f.conclusion),
        );
    }
    if !report.skipped.is_empty() {
        out.push_str("\nSkipped:\n");
        for s in &report.skipped {
            let _ = writeln!(out, "- {}: {}", s.id, s.reason);
        }
    }
    out.push_str(
        "\nFast delay / pressure delay: the largest mean component of the replies' delay split \
         (busy = own polls, scheduled = waiting for a lab worker, idle = awaiting I/O or timers, \
         queue = waiting for a pool slot, outside = client latency not spent in the handler).\n",
    );
    out
}
