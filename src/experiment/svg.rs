//! Hand-written SVG plots for the HTML report: latency by percentile (the classic HdrHistogram
//! plot, log-log) per experiment, and a summary bar chart of the probe's p99. Written by hand
//! because two small plot shapes do not justify a plotting library and its dependencies.

use std::fmt::Write as _;

use crate::load::table::ms;

/// One line on a latency plot.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    /// `[percentile, ms]` points, percentile in 0..=100.
    pub points: &'a [[f64; 2]],
}

/// Where the 100 % (max) point sits on the nines axis: a little right of 99.99 %.
const MAX_NINES: f64 = 4.4;
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 370.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 16.0;
/// Room under the plot for the axis title and a legend of three lines.
const BOTTOM: f64 = 100.0;
const LEGEND_LINE: f64 = 16.0;

/// Escapes text for SVG and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The "nines" of a percentile: 0 for 0 %, 1 for 90 %, 2 for 99 %, …
fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        MAX_NINES
    } else {
        (-(1.0 - percentile / 100.0).log10()).clamp(0.0, MAX_NINES)
    }
}

/// The label of the grid line at 10^exponent ms: `0.01 ms`, `1 ms`, `1 s`, `10 s`.
fn decade_label(exponent: i32) -> String {
    match exponent {
        e if e < 0 => {
            let digits = usize::try_from(-e).unwrap_or(0);
            format!("{:.digits$} ms", 10f64.powi(e))
        }
        e if e < 3 => format!("{} ms", 10u64.pow(e.unsigned_abs())),
        e => format!("{} s", 10u64.pow((e - 3).unsigned_abs())),
    }
}

/// The decades a log axis spans to hold every value of `series`.
fn decades(series: &[Series<'_>]) -> (i32, i32) {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p[1]))
        .filter(|v| *v > 0.0);
    let (min, max) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if min > max {
        return (-1, 1);
    }
    // Decade exponents of latencies in ms stay within a few units of zero.
    let lo = min.log10().floor() as i32;
    let hi = (max.log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

/// A latency-by-percentile plot of `series`, log latency over log "nines".
pub fn latency_plot(title: &str, series: &[Series<'_>]) -> String {
    let (lo, hi) = decades(series);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |p: f64| LEFT + nines(p) / MAX_NINES * plot_w;
    let y = |v: f64| {
        let v = v.max(10f64.powi(lo));
        TOP + plot_h - (v.log10() - f64::from(lo)) / f64::from(hi - lo) * plot_h
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="latency-plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img"><title>{}</title>"#,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#bbb"/>"##
    );
    for exponent in lo..=hi {
        let value = 10f64.powi(exponent);
        let yy = y(value);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            decade_label(exponent)
        );
    }
    for (p, label) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (100.0, "max"),
    ] {
        let xx = x(p);
        let _ = write!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" font-size="11" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">percentile of calls</text>"#,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 34.0
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1])))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            s.color,
            points.join(" "),
            escape(s.name)
        );
        let lx = LEFT;
        let ly = TOP + plot_h + 56.0 + i as f64 * LEGEND_LINE;
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" fill="{}"/><text x="{:.1}" y="{ly:.1}" font-size="12">{}</text>"#,
            ly - 6.0,
            s.color,
            lx + 18.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One row of the summary chart.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub alone_ms: f64,
    pub under_ms: f64,
}

/// Probe p99 alone and under pressure for every experiment, on a log scale.
pub fn summary_plot(bars: &[Bar]) -> String {
    const ROW: f64 = 28.0;
    const LABEL_W: f64 = 190.0;
    const VALUE_W: f64 = 70.0;
    let width = WIDTH + 80.0;
    let height = TOP + ROW * bars.len() as f64 + 40.0;
    let max = bars
        .iter()
        .map(|b| b.alone_ms.max(b.under_ms))
        .fold(0.01, f64::max);
    let min = bars
        .iter()
        .map(|b| b.alone_ms.min(b.under_ms))
        .filter(|v| *v > 0.0)
        .fold(max, f64::min);
    // Decade exponents of latencies in ms stay within a few units of zero.
    let lo = (min.log10().floor() as i32) - 1;
    let hi = (max.log10().ceil() as i32).max(lo + 1);
    let plot_w = width - LABEL_W - VALUE_W;
    let len =
        |v: f64| (v.max(10f64.powi(lo)).log10() - f64::from(lo)) / f64::from(hi - lo) * plot_w;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="summary-plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"><title>Fast probe p99, alone and under pressure</title>"#
    );
    for exponent in lo..=hi {
        let xx = LABEL_W + len(10f64.powi(exponent));
        let _ = write!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            height - 34.0,
            height - 20.0,
            decade_label(exponent)
        );
    }
    for (i, bar) in bars.iter().enumerate() {
        let top = TOP + ROW * i as f64;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            top + 15.0,
            escape(&bar.label)
        );
        for (offset, value, color) in [(2.0, bar.alone_ms, "#999"), (13.0, bar.under_ms, "#d62728")]
        {
            let w = len(value);
            let _ = write!(
                svg,
                r#"<rect x="{LABEL_W}" y="{:.1}" width="{w:.1}" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="10">{} ms</text>"#,
                top + offset,
                LABEL_W + w + 4.0,
                top + offset + 9.0,
                ms(value)
            );
        }
    }
    let _ = write!(
        svg,
        r##"<rect x="{LABEL_W}" y="{:.1}" width="12" height="8" fill="#999"/><text x="{:.1}" y="{:.1}" font-size="11">Fast p99 alone</text><rect x="{:.1}" y="{:.1}" width="12" height="8" fill="#d62728"/><text x="{:.1}" y="{:.1}" font-size="11">Fast p99 under pressure</text>"##,
        height - 12.0,
        LABEL_W + 16.0,
        height - 4.0,
        LABEL_W + 140.0,
        height - 12.0,
        LABEL_W + 156.0,
        height - 4.0
    );
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decade_labels() {
        assert_eq!(decade_label(-2), "0.01 ms");
        assert_eq!(decade_label(0), "1 ms");
        assert_eq!(decade_label(2), "100 ms");
        assert_eq!(decade_label(4), "10 s");
    }

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
    }

    #[test]
    fn a_latency_plot_has_one_line_per_series_and_escapes_names() {
        let a = [[0.0, 0.2], [99.0, 0.5], [100.0, 0.9]];
        let b = [[0.0, 40.0], [99.0, 90.0], [100.0, 120.0]];
        let svg = latency_plot(
            "cpu <inline>",
            &[
                Series {
                    name: "alone",
                    color: "#999",
                    points: &a,
                },
                Series {
                    name: "under & over",
                    color: "#d62728",
                    points: &b,
                },
            ],
        );
        assert!(svg.starts_with("<svg class=\"latency-plot\""));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("cpu &lt;inline&gt;"));
        assert!(svg.contains("under &amp; over"));
        assert!(
            svg.contains(">100 ms<") && svg.contains(">0.1 ms<"),
            "{svg}"
        );
    }

    #[test]
    fn the_summary_has_a_row_per_experiment() {
        let bars = vec![
            Bar {
                label: "cpu-inline".into(),
                alone_ms: 0.4,
                under_ms: 50.0,
            },
            Bar {
                label: "sleep-async".into(),
                alone_ms: 0.4,
                under_ms: 0.5,
            },
        ];
        let svg = summary_plot(&bars);
        assert_eq!(svg.matches(">cpu-inline<").count(), 1);
        assert_eq!(svg.matches("<rect").count(), 4 + 2);
    }
}
