//! The text form of a load report: one column per stream (main load, probe), one row per
//! figure, then the warnings. Meant for a terminal; `--json` gives the same data whole.

use std::fmt::Write as _;

use super::report::{LoadReport, Stats};

/// Milliseconds with as many decimals as their size deserves.
pub fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// Renders the whole report.
pub fn render(report: &LoadReport) -> String {
    let streams: Vec<&Stats> = std::iter::once(&report.main)
        .chain(report.probe.as_ref())
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "holdup load -> {} | {} connection(s) | {:.1} s warm-up, {:.1} s measured\n",
        report.target, report.connections, report.warmup_s, report.duration_s
    );
    out.push_str(&columns(&streams));
    for stats in &streams {
        for warning in &stats.warnings {
            let _ = writeln!(out, "! {}: {warning}", stats.label);
        }
    }
    out
}

fn columns(streams: &[&Stats]) -> String {
    let rows: Vec<(&str, Vec<String>)> = vec![
        ("", streams.iter().map(|s| s.label.clone()).collect()),
        ("rpc", streams.iter().map(|s| s.rpc.clone()).collect()),
        (
            "schedule",
            streams.iter().map(|s| s.schedule.clone()).collect(),
        ),
        ("calls", streams.iter().map(|s| calls(s)).collect()),
        ("errors", streams.iter().map(|s| errors(s)).collect()),
        ("rate", streams.iter().map(|s| rate(s)).collect()),
        (
            "slowest 100 ms",
            streams
                .iter()
                .map(|s| format!("{:.0}/s", s.timeline.min_rate))
                .collect(),
        ),
        (
            "longest gap",
            streams
                .iter()
                .map(|s| format!("{} ms", ms(s.timeline.longest_gap_ms)))
                .collect(),
        ),
        ("latency from", streams.iter().map(|s| origin(s)).collect()),
        ("p50", latency(streams, |s| s.latency.p50_ms)),
        ("p90", latency(streams, |s| s.latency.p90_ms)),
        ("p99", latency(streams, |s| s.latency.p99_ms)),
        ("p99.9", latency(streams, |s| s.latency.p999_ms)),
        ("max", latency(streams, |s| s.latency.max_ms)),
        ("mean", latency(streams, |s| s.latency.mean_ms)),
        ("delay split", streams.iter().map(|s| split(s)).collect()),
        ("dominant", streams.iter().map(|s| dominant(s)).collect()),
    ];
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..streams.len())
        .map(|i| {
            rows.iter()
                .map(|(_, cells)| cells.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (label, cells) in &rows {
        let _ = write!(out, "{label:<label_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {cell:<width$}");
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

fn calls(s: &Stats) -> String {
    let mut text = format!("sent {}, ok {}", s.sent, s.ok);
    if s.offered_rate.is_some() {
        let _ = write!(text, ", due {}, unsent {}", s.due, s.unsent);
    }
    text
}

fn errors(s: &Stats) -> String {
    if s.errors.is_empty() {
        return "none".into();
    }
    s.errors
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rate(s: &Stats) -> String {
    match (s.offered_rate, s.achieved_share()) {
        (Some(offered), Some(share)) => format!(
            "{:.1}/s of {offered}/s offered ({:.0}%)",
            s.throughput,
            share * 100.0
        ),
        _ => format!("{:.1}/s", s.throughput),
    }
}

fn origin(s: &Stats) -> String {
    if s.offered_rate.is_some() {
        format!("intended send (max lag {} ms)", ms(s.max_send_lag_ms))
    } else {
        "actual send (closed loop)".into()
    }
}

fn latency(streams: &[&Stats], pick: impl Fn(&Stats) -> f64) -> Vec<String> {
    streams
        .iter()
        .map(|s| format!("{} ms", ms(pick(s))))
        .collect()
}

fn split(s: &Stats) -> String {
    s.split.as_ref().map_or_else(
        || "-".into(),
        |d| {
            format!(
                "busy {} | sched {} | idle {} (queue {} of it) | outside {} ms",
                ms(d.means.busy_ms),
                ms(d.means.scheduled_ms),
                ms(d.means.idle_ms),
                ms(d.means.queue_ms),
                ms(d.means.outside_ms)
            )
        },
    )
}

fn dominant(s: &Stats) -> String {
    s.split.as_ref().map_or_else(
        || "-".into(),
        |d| {
            let share =
                d.verdicts.get(&d.verdict).copied().unwrap_or(0) as f64 / d.replies.max(1) as f64;
            format!(
                "{}; verdict {} ({:.0}%)",
                d.dominant,
                d.verdict,
                share * 100.0
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_three_significant_figures() {
        assert_eq!(ms(0.4567), "0.46");
        assert_eq!(ms(45.67), "45.7");
        assert_eq!(ms(456.7), "457");
    }
}
