//! The HTML report of a catalogue run: one self-contained page (inline CSS and SVG, nothing
//! fetched) with a summary chart, the findings table, and per experiment its question,
//! computed conclusion, latency plot and delay split.

use std::fmt::Write as _;

use super::{
    findings::Finding,
    report::{self, ExperimentReport},
    svg::{Bar, Series, escape, latency_plot, summary_plot},
    waterfall::waterfall,
};
use crate::diagnose::Verdict;
use crate::load::{report::Stats, table::ms};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0}\
td,th{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.num{text-align:right;white-space:nowrap}.conclusion{font-weight:600}\
.experiment{border-top:2px solid #eee;margin-top:2em}.meta,.question{color:#555}\
.cause{color:#b00}.fix{color:#070}.baseline{color:#555}";

/// Renders the whole report.
pub fn render(report: &ExperimentReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>holdup experiment report</title><style>{STYLE}</style></head><body>\
         <h1>holdup: why is this response late?</h1>\
         <p class=\"meta\">{} run against {}, {} lab worker(s), {:.0} s, holdup {}. Latencies in \
         milliseconds. Every experiment runs a Fast probe (open loop, timed from its intended \
         send time) alone, then beside the pressure.</p>",
        if report.quick { "Quick" } else { "Full" },
        escape(&report.target),
        report.workers,
        report.elapsed_s,
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("<h2>Fast probe p99, alone and under pressure</h2>");
    let bars: Vec<Bar> = report
        .findings
        .iter()
        .map(|f| Bar {
            label: f.id.clone(),
            alone_ms: f.probe_alone_p99_ms,
            under_ms: f.probe_p99_ms,
        })
        .collect();
    out.push_str(&summary_plot(&bars));
    out.push_str("<h2>Findings</h2>");
    out.push_str(&findings_table(&report.findings));
    out.push_str(&confusion_matrices(&report.findings));
    if !report.skipped.is_empty() {
        out.push_str("<p>Skipped:</p><ul>");
        for s in &report.skipped {
            let _ = write!(out, "<li>{}: {}</li>", escape(&s.id), escape(&s.reason));
        }
        out.push_str("</ul>");
    }
    for finding in &report.findings {
        out.push_str(&section(finding));
    }
    out.push_str("</body></html>\n");
    out
}

fn findings_table(findings: &[Finding]) -> String {
    let mut out = String::from("<table><tr>");
    for column in report::COLUMNS {
        let _ = write!(out, "<th>{}</th>", escape(column));
    }
    out.push_str("</tr>");
    for f in findings {
        out.push_str("<tr>");
        for (i, (text, numeric)) in report::row(f).iter().zip(report::NUMERIC).enumerate() {
            let class = if numeric { " class=\"num\"" } else { "" };
            let text = escape(text);
            if i == 0 {
                let _ = write!(out, "<td><a href=\"#{text}\">{text}</a></td>");
            } else {
                let _ = write!(out, "<td{class}>{text}</td>");
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

fn section(f: &Finding) -> String {
    let role = match f.role {
        super::catalogue::Role::Baseline => "baseline",
        super::catalogue::Role::Cause => "cause",
        super::catalogue::Role::Fix => "fix",
    };
    let pressure_name = format!("pressure: {}", f.pressure_rpc);
    let plot = latency_plot(
        &format!("{}: latency by percentile", f.id),
        &[
            Series {
                name: "Fast alone",
                color: "#999",
                points: &f.probe_alone.curve,
            },
            Series {
                name: "Fast under pressure",
                color: "#d62728",
                points: &f.probe.curve,
            },
            Series {
                name: &pressure_name,
                color: "#1f77b4",
                points: &f.pressure.curve,
            },
        ],
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "<section class=\"experiment\" id=\"{id}\"><h3>{id}: {title} <span class=\"{role}\">({role})</span></h3>\
         <p class=\"question\">{question}</p><p class=\"conclusion\">{conclusion}</p>\
         <p>Pressure: {rpc}, {schedule}; {ok} OK at {rate:.1}/s, {errors} errors.</p>\
         <figure>{plot}<figcaption>Latency by percentile (log scales). Grey: the Fast probe \
         alone; red: the same probe beside the pressure; blue: the pressure calls.</figcaption></figure>",
        id = escape(&f.id),
        title = escape(&f.title),
        question = escape(&f.question),
        conclusion = escape(&f.conclusion),
        rpc = escape(&f.pressure_rpc),
        schedule = escape(&f.pressure_schedule),
        ok = f.pressure.ok,
        rate = f.pressure_throughput,
        errors = f.pressure_errors,
    );
    out.push_str(&split_table(&[
        ("Fast alone", &f.probe_alone),
        ("Fast under pressure", &f.probe),
        ("pressure", &f.pressure),
    ]));
    if let Some(slowest) = f.probe.split.as_ref().and_then(|s| s.slowest.as_ref()) {
        let _ = write!(
            out,
            "<figure>{}<figcaption>The slowest Fast probe under pressure (trace {}), as the \
             diagnosis engine recorded it: its polls, its waits for a worker and its parked \
             stretches, and below, the culprits' polls that held the workers meanwhile.\
             </figcaption></figure>",
            waterfall(&format!("{}: the slowest Fast probe", f.id), slowest),
            escape(&slowest.trace_id)
        );
    }
    for stats in [&f.probe, &f.pressure] {
        for warning in &stats.warnings {
            let _ = write!(
                out,
                "<p class=\"meta\">! {}: {}</p>",
                escape(&stats.label),
                escape(warning)
            );
        }
    }
    out.push_str("</section>");
    out
}

/// The measured verdicts against the expected ones, per experiment: one matrix for the pressure
/// calls and one for the probe. Rows are experiments with their expected verdict, columns the
/// verdicts measured, cells the share of replies; the expected cell is outlined.
fn confusion_matrices(findings: &[Finding]) -> String {
    let mut out = String::from(
        "<h2>Verdicts: expected against measured</h2><p class=\"meta\">The diagnosis engine's \
         verdict of every reply, against the catalogue's answer key. Each row sums to 100%; \
         the expected cell is outlined.</p>",
    );
    for (title, expected, stats) in [
        (
            "Pressure calls",
            (|f: &Finding| f.pressure_expected.clone()) as fn(&Finding) -> String,
            (|f: &Finding| &f.pressure) as fn(&Finding) -> &Stats,
        ),
        (
            "Fast probe under pressure",
            |f: &Finding| f.probe_expected.clone(),
            |f: &Finding| &f.probe,
        ),
    ] {
        let _ = write!(
            out,
            "<h3>{title}</h3><table><tr><th>experiment</th><th>expected</th>"
        );
        for verdict in Verdict::ALL {
            let _ = write!(out, "<th>{verdict}</th>");
        }
        out.push_str("</tr>");
        for f in findings {
            let want = expected(f);
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td>",
                escape(&f.id),
                escape(&want)
            );
            let counts = stats(f).split.as_ref().map(|s| &s.verdicts);
            let all: u64 = counts.map_or(0, |c| c.values().sum());
            for verdict in Verdict::ALL {
                let n = counts
                    .and_then(|c| c.get(verdict.as_str()))
                    .copied()
                    .unwrap_or(0);
                let style = if verdict.as_str() == want {
                    " style=\"outline:2px solid #070\""
                } else {
                    ""
                };
                let text = if n == 0 {
                    String::new()
                } else {
                    format!("{:.0}%", n as f64 * 100.0 / all.max(1) as f64)
                };
                let _ = write!(out, "<td class=\"num\"{style}>{text}</td>");
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
    }
    out
}

/// Latency and mean delay split of each stream.
fn split_table(rows: &[(&str, &Stats)]) -> String {
    let mut out = String::from(
        "<table><tr><th>stream</th><th>calls</th><th>p50</th><th>p99</th><th>max</th>\
         <th>busy</th><th>scheduled</th><th>idle</th><th>queue</th><th>outside</th>\
         <th>verdict</th></tr>",
    );
    for (name, s) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            escape(name),
            s.completed,
            ms(s.latency.p50_ms),
            ms(s.latency.p99_ms),
            ms(s.latency.max_ms)
        );
        match &s.split {
            Some(d) => {
                let _ = write!(
                    out,
                    "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                     <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    ms(d.means.busy_ms),
                    ms(d.means.scheduled_ms),
                    ms(d.means.idle_ms),
                    ms(d.means.queue_ms),
                    ms(d.means.outside_ms),
                    escape(&d.verdict)
                );
            }
            None => out.push_str("<td colspan=\"6\">no diagnostics</td></tr>"),
        }
    }
    out.push_str("</table>");
    out
}
