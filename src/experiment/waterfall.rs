//! The timeline of one request as a waterfall, the way Jaeger draws a trace: the request's own
//! row (its polls, its waits for a worker, its parked stretches with the stage they were in),
//! then one row per culprit with the polls that held the workers while it waited. [`draw`]
//! draws any such rows; `holdup explain` draws a trace's critical path with it.

use std::fmt::Write as _;

use super::svg::escape;
use crate::load::report::SlowestRequest;

const WIDTH: f64 = 720.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 22.0;
const BAR: f64 = 14.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 56.0;
/// Culprit rows drawn; the rest are summed in a note.
const MAX_CULPRIT_ROWS: usize = 6;

fn color(kind: &str) -> &'static str {
    match kind {
        "poll" => "#2ca02c",
        "scheduled" => "#d62728",
        "idle" => "#c7c7c7",
        _ => "#888",
    }
}

/// One row of a waterfall: a label on the left, bars along the time axis.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub bars: Vec<Bar>,
}

/// One stretch of time on a row; `tip` shows on hover.
#[derive(Debug, Clone)]
pub struct Bar {
    pub from_us: f64,
    pub to_us: f64,
    pub color: &'static str,
    pub tip: String,
}

/// The waterfall of `request`, or a note if it carried no timeline.
pub fn waterfall(title: &str, request: &SlowestRequest) -> String {
    if request.stretches.is_empty() {
        return "<p class=\"meta\">No timeline was recorded.</p>".to_owned();
    }
    let culprits = &request.culprits[..request.culprits.len().min(MAX_CULPRIT_ROWS)];
    let end_us = request
        .stretches
        .iter()
        .map(|s| s.to_us)
        .chain(culprits.iter().flat_map(|c| c.polls.iter().map(|p| p.1)))
        .max()
        .unwrap_or(1)
        .max(request.total_us as i64)
        .max(1) as f64;
    let start_us = culprits
        .iter()
        .flat_map(|c| c.polls.iter().map(|p| p.0))
        .min()
        .unwrap_or(0)
        .min(0) as f64;
    let mut rows = vec![Row {
        label: format!("this request ({})", request.verdict),
        bars: request
            .stretches
            .iter()
            .map(|stretch| {
                let tip = match stretch.kind.as_str() {
                    "idle" if !stretch.stage.is_empty() => format!("idle in {}", stretch.stage),
                    "poll" => format!("poll, {} us on CPU", stretch.on_cpu_us),
                    kind => kind.to_owned(),
                };
                Bar {
                    from_us: stretch.from_us as f64,
                    to_us: stretch.to_us as f64,
                    color: color(&stretch.kind),
                    tip: format!("{tip}: {}..{} us", stretch.from_us, stretch.to_us),
                }
            })
            .collect(),
    }];
    for culprit in culprits {
        rows.push(Row {
            label: format!("{} ({:.1} ms)", culprit.name, culprit.share_us as f64 / 1e3),
            bars: culprit
                .polls
                .iter()
                .map(|&(from, to)| Bar {
                    from_us: from as f64,
                    to_us: to as f64,
                    color: "#9467bd",
                    tip: format!("held a worker: {from}..{to} us"),
                })
                .collect(),
        });
    }
    let mut out = draw(
        title,
        &rows,
        (start_us, end_us),
        &[
            ("#2ca02c", "polled"),
            ("#d62728", "ready, waiting for a worker"),
            ("#999", "parked"),
            ("#9467bd", "a culprit's poll during the wait"),
        ],
    );
    if request.culprits.len() > MAX_CULPRIT_ROWS {
        let _ = write!(
            out,
            "<p class=\"meta\">and {} more culprits</p>",
            request.culprits.len() - MAX_CULPRIT_ROWS
        );
    }
    out
}

/// Draws `rows` over the time `range` (microseconds), the way Jaeger draws a trace, with a
/// legend of `(color, meaning)` under the axis.
pub fn draw(title: &str, rows: &[Row], range: (f64, f64), legend: &[(&str, &str)]) -> String {
    let (start_us, end_us) = range;
    let height = TOP + ROW * rows.len() as f64 + BOTTOM;
    let span = (end_us - start_us).max(1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |us: f64| LEFT + (us - start_us) / span * plot_w;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"{t}\" font-size=\"11\">\
         <text x=\"{LEFT}\" y=\"14\" font-weight=\"600\">{t}</text>",
        t = escape(title)
    );
    let row_y = |row: usize| TOP + ROW * row as f64;
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            row_y(i) + BAR - 3.0,
            escape(&row.label)
        );
        for bar in &row.bars {
            let (x0, x1) = (x(bar.from_us), x(bar.to_us));
            let _ = write!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{BAR}\" fill=\"{c}\">\
                 <title>{tip}</title></rect>",
                y = row_y(i),
                w = (x1 - x0).max(1.0),
                c = bar.color,
                tip = escape(&bar.tip),
            );
        }
    }
    let axis_y = row_y(rows.len()) + 4.0;
    let legend: Vec<String> = legend
        .iter()
        .map(|(color, text)| format!("<tspan fill=\"{color}\">■ {}</tspan>", escape(text)))
        .collect();
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{r}\" y2=\"{axis_y}\" stroke=\"#999\"/>\
         <text x=\"{LEFT}\" y=\"{ty}\">{a:.1} ms</text>\
         <text x=\"{r}\" y=\"{ty}\" text-anchor=\"end\">{b:.1} ms</text>\
         <text x=\"{LEFT}\" y=\"{ly}\">{legend}</text></svg>",
        r = WIDTH - RIGHT,
        ty = axis_y + 14.0,
        ly = axis_y + 32.0,
        a = start_us / 1e3,
        b = end_us / 1e3,
        legend = legend.join(" "),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::report::{CulpritPolls, Stretch};

    #[test]
    fn draws_the_request_and_each_culprit() {
        let request = SlowestRequest {
            trace_id: "t".into(),
            total_us: 400,
            verdict: "runtime-contention".into(),
            stretches: vec![
                Stretch {
                    kind: "scheduled".into(),
                    from_us: 0,
                    to_us: 380,
                    on_cpu_us: 0,
                    stage: String::new(),
                },
                Stretch {
                    kind: "poll".into(),
                    from_us: 380,
                    to_us: 400,
                    on_cpu_us: 20,
                    stage: String::new(),
                },
            ],
            culprits: vec![CulpritPolls {
                name: "CpuBound 4bf92f35".into(),
                share_us: 380,
                polls: vec![(-100, 380)],
            }],
        };
        let svg = waterfall("slowest", &request);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("CpuBound 4bf92f35 (0.4 ms)"));
        assert!(
            svg.contains("-0.1 ms"),
            "the culprit's poll began before the request"
        );
    }
}
