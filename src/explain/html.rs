//! `--html FILE`: one self-contained page (inline CSS and SVG, nothing fetched) with the
//! headline, a waterfall of the critical path drawn by the experiment report's SVG code
//! (each span's own time on the path coloured by its cause, its whole extent in grey
//! behind, each followed culprit's span in purple), the time by cause, and the text tree.

use std::fmt::Write as _;

use super::{
    cause::{Cause, Explanation, Node},
    summary::{Summary, culprits},
    text::{ms, render, render_summary, short_operation},
};
use crate::experiment::{
    svg::escape,
    waterfall::{Bar, Row, draw},
};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0}\
td,th{border:1px solid #ccc;padding:4px 6px;text-align:left}th{background:#f4f4f4}\
.num{text-align:right;white-space:nowrap}.headline{font-weight:600}pre{font-size:12px;\
background:#f8f8f8;padding:1em;overflow-x:auto}.meta{color:#555}";

/// Rows the waterfall draws; the text tree has them all.
const MAX_ROWS: usize = 40;
/// Characters of a row label (the rest is in the tooltip).
const LABEL_CHARS: usize = 28;

/// The colour of a cause on the waterfall.
fn color(cause: &str) -> &'static str {
    match cause {
        "own-cpu" => "#2ca02c",
        "blocking-call" => "#8c564b",
        "runtime-contention" => "#d62728",
        "resource-queue" => "#ff7f0e",
        "backend" => "#1f77b4",
        "upstream" => "#17becf",
        "offloaded-cpu" => "#bcbd22",
        "timer" => "#7f7f7f",
        "waiting" | "outside-handler" => "#c7c7c7",
        _ => "#555",
    }
}

/// The legend's word for a colour.
fn meaning(color: &str) -> &'static str {
    match color {
        "#2ca02c" => "own-cpu",
        "#8c564b" => "blocking-call",
        "#d62728" => "runtime-contention",
        "#ff7f0e" => "queue",
        "#1f77b4" => "backend",
        "#17becf" => "upstream",
        "#bcbd22" => "offloaded-cpu",
        "#7f7f7f" => "timer",
        "#c7c7c7" => "waiting",
        "#9467bd" => "culprit",
        _ => "uninstrumented",
    }
}

/// The cause a node's own time on the path is coloured by: for a diagnosed span, its largest
/// part that no span under it accounts for; for a stage, its kind; for any other span, the
/// cause of the diagnosed part it lies under (an upstream's server is `upstream` to its
/// caller), or "uninstrumented".
fn own_cause<'a>(node: &'a Node, inherited: Option<&'a str>) -> &'a str {
    match &node.cause {
        Cause::Diagnosed(d) => d
            .parts
            .iter()
            .filter(|p| p.path.is_empty())
            .max_by_key(|p| p.us)
            .map_or(d.verdict.as_str(), |p| p.cause.as_str()),
        Cause::Stage { stage } => super::cause::stage_cause(stage),
        Cause::Uninstrumented { .. } => inherited.unwrap_or("uninstrumented"),
    }
}

/// A row per node on the path, in time order, each with its whole span in grey and its own
/// time on the path in the colour of its cause.
fn rows_of(node: &Node, inherited: Option<&str>, rows: &mut Vec<Row>) {
    if rows.len() >= MAX_ROWS {
        return;
    }
    let cause = own_cause(node, inherited);
    let name = format!("{} {}", node.service, short_operation(&node.operation));
    let mut bars = vec![Bar {
        from_us: node.span_start_us as f64,
        to_us: (node.span_start_us + node.duration_us) as f64,
        color: "#e4e4e4",
        tip: format!("{name}: the whole span, {}", ms(node.duration_us)),
    }];
    for [from, to] in &node.own_segments {
        bars.push(Bar {
            from_us: *from as f64,
            to_us: *to as f64,
            color: color(cause),
            tip: format!(
                "{name}: {} of its own on the critical path, {cause}",
                ms(to - from)
            ),
        });
    }
    rows.push(Row {
        label: label(&name),
        bars,
    });
    match &node.cause {
        Cause::Diagnosed(d) => {
            let mut under: Vec<(&Node, &str)> = d
                .parts
                .iter()
                .flat_map(|p| p.path.iter().map(move |n| (n, p.cause.as_str())))
                .collect();
            under.sort_by_key(|(n, _)| n.start_us);
            for (child, cause) in under {
                rows_of(child, Some(cause), rows);
            }
        }
        Cause::Stage { .. } => {
            for child in &node.children {
                rows_of(child, Some(cause), rows);
            }
        }
        Cause::Uninstrumented { .. } => {
            for child in &node.children {
                rows_of(child, inherited, rows);
            }
        }
    }
}

fn label(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The waterfall of one explanation.
fn waterfall(e: &Explanation) -> String {
    let mut rows = Vec::new();
    let mut end = e.root.on_path_us as f64;
    let mut start = 0.0_f64;
    rows_of(&e.root, None, &mut rows);
    for row in &rows {
        for bar in &row.bars {
            start = start.min(bar.from_us);
            end = end.max(bar.to_us);
        }
    }
    for c in culprits(&e.root)
        .into_iter()
        .take(MAX_ROWS.saturating_sub(rows.len()))
    {
        let Some(f) = &c.followed else { continue };
        let from = (f.start_unix_us - e.start_unix_us) as f64;
        let to = from + f.duration_us as f64;
        start = start.min(from);
        end = end.max(to);
        let verdict = f.verdict.as_deref().unwrap_or("no verdict");
        rows.push(Row {
            label: label(&format!("culprit {}", c.label)),
            bars: vec![Bar {
                from_us: from,
                to_us: to,
                color: "#9467bd",
                tip: format!(
                    "{}: {} {} {}, {verdict}",
                    c.label,
                    f.service,
                    f.operation,
                    ms(f.duration_us)
                ),
            }],
        });
    }
    let title = format!("trace {}: critical path", &e.trace_id);
    let mut legend: Vec<(&str, &str)> = Vec::new();
    for bar in rows.iter().flat_map(|r| r.bars.iter()) {
        if bar.color != "#e4e4e4" && !legend.iter().any(|(c, _)| *c == bar.color) {
            legend.push((bar.color, meaning(bar.color)));
        }
    }
    legend.push(("#bbb", "the whole span"));
    draw(&title, &rows, (start, end.max(1.0)), &legend)
}

fn causes_table(rows: &[(String, i64, f64)]) -> String {
    let mut out = String::from("<table><tr><th>cause</th><th>time</th><th>share</th></tr>");
    // Causes that round to 0.0 ms say nothing.
    for (cause, us, share) in rows.iter().filter(|(_, us, _)| *us >= 50) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1} %</td></tr>",
            escape(cause),
            ms(*us),
            share * 100.0
        );
    }
    out.push_str("</table>");
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// The page for one trace.
pub fn render_one(e: &Explanation, jaeger: &str) -> String {
    let total = e.root.on_path_us.max(1) as f64;
    let rows: Vec<(String, i64, f64)> = e
        .causes
        .iter()
        .map(|s| (s.cause.clone(), s.us, s.us as f64 / total))
        .collect();
    let body = format!(
        "<h1>Why was trace {id} late?</h1><p class=\"headline\">{headline}</p>\
         <p class=\"meta\">From Jaeger at {jaeger} ({api}); {spans} spans, services: {services}.\
         </p>{svg}<h2>Time by cause</h2>{table}<h2>Critical path</h2><pre>{tree}</pre>",
        id = escape(&e.trace_id),
        headline = escape(&e.headline),
        jaeger = escape(jaeger),
        api = e.api,
        spans = e.spans,
        services = escape(&e.services.join(", ")),
        svg = waterfall(e),
        table = causes_table(&rows),
        tree = escape(&render(e, jaeger)),
    );
    page(&format!("holdup explain {}", e.trace_id), &body)
}

/// The page for many traces: the sum by cause, then the slowest trace's waterfall.
pub fn render_many(s: &Summary) -> String {
    let rows: Vec<(String, i64, f64)> = s
        .causes
        .iter()
        .map(|p| (p.cause.clone(), p.us, p.share))
        .collect();
    let mut body = format!(
        "<h1>Why were the slowest {what} late?</h1><p class=\"meta\">The {n} slowest of {found} \
         traces since {since}, from Jaeger at {jaeger} ({api}): {total} in all.</p>\
         <h2>Late time by cause</h2>{table}",
        what = escape(&s.what),
        n = s.traces.len(),
        found = s.found,
        since = escape(&s.since),
        jaeger = escape(&s.jaeger),
        api = s.api,
        total = ms(s.total_us),
        table = causes_table(&rows),
    );
    if let Some(slowest) = s.explanations.first() {
        let _ = write!(
            body,
            "<h2>The slowest</h2><p class=\"headline\">{}</p>{}",
            escape(&slowest.headline),
            waterfall(slowest)
        );
    }
    let _ = write!(
        body,
        "<h2>Summary</h2><pre>{}</pre>",
        escape(&render_summary(s))
    );
    page(&format!("holdup explain {}", s.what), &body)
}
