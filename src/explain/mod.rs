//! `holdup explain`: why a request was late across services, from its trace in Jaeger.
//!
//! Jaeger shows when each span ran and can infer a critical path from timing alone; holdup's
//! spans carry what timing cannot show (the verdict, the split, the culprits as links to
//! other traces). This module puts the two together, reading from Jaeger's query API rather
//! than keeping traces of its own.
//!
//! - [`args`]: the flags, validated into an [`ExplainConfig`].
//! - [`jaeger`]: the query API client (`/api/v3/traces`, or `/api/traces` where that is what
//!   the server has); [`otlp_json`] and [`ui_json`] read their answers into the [`model`].
//! - [`critical_path`]: the spans that determine the end-to-end time.
//! - [`cause`]: the cause of each segment, from holdup's attributes; [`culprits`] follows
//!   each culprit link one level into its own trace.
//! - [`summary`]: many traces, one question: the late time of the slowest, by cause.
//! - [`text`], [`html`] (and JSON through serde): the outputs.

pub mod args;
pub mod cause;
pub mod critical_path;
pub mod culprits;
pub mod error;
pub mod html;
pub mod jaeger;
pub mod model;
pub mod otlp_json;
pub mod summary;
pub mod text;
pub mod ui_json;

use std::{path::PathBuf, time::Duration};

use reqwest::Url;

pub use cause::Explanation;
pub use error::ExplainError;
use jaeger::{Api, Jaeger, Search};
use model::Trace;
pub use summary::Summary;

/// Everything `holdup explain` needs, validated.
#[derive(Debug, Clone)]
pub struct ExplainConfig {
    pub jaeger: Url,
    pub api: Api,
    pub target: Target,
    pub json: bool,
    pub html: Option<PathBuf>,
    /// Most culprit traces fetched.
    pub follow: usize,
    /// Per request to Jaeger.
    pub timeout: Duration,
}

/// What to explain.
#[derive(Debug, Clone)]
pub enum Target {
    /// One trace, by its (normalised, 32-digit) id.
    Trace(String),
    /// The `count` slowest traces a search finds; `since` as the user wrote it.
    Slowest {
        search: Search,
        count: usize,
        since: String,
    },
}

/// What `holdup explain` found.
#[derive(Debug, Clone)]
pub enum Outcome {
    One(Box<Explanation>),
    Many(Box<Summary>),
}

/// The span a search asked about in `trace`: the longest of `service` (and `operation`).
fn searched_span(trace: &Trace, search: &Search) -> Option<usize> {
    trace
        .spans
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.service == search.service
                && search.operation.as_ref().is_none_or(|o| &s.operation == o)
        })
        .max_by_key(|(_, s)| s.duration_ns())
        .map(|(i, _)| i)
}

/// Reads from Jaeger and explains.
///
/// # Errors
/// An [`ExplainError`] naming the Jaeger URL (and trace id) when the trace cannot be had or
/// read; culprits that cannot be followed are noted in the output instead.
pub async fn run(config: &ExplainConfig) -> Result<Outcome, ExplainError> {
    let jaeger = Jaeger::new(config.jaeger.clone(), config.api, config.timeout)?;
    match &config.target {
        Target::Trace(trace_id) => {
            let (trace, api) = jaeger.trace(trace_id).await?;
            let root = critical_path::roots(&trace)
                .first()
                .copied()
                .ok_or_else(|| {
                    ExplainError::malformed(&jaeger.url(), "every span of the trace has a parent")
                })?;
            let mut explanation = cause::explain(&trace, root);
            explanation.api = api;
            culprits::follow(&jaeger, vec![&mut explanation.root], config.follow).await;
            explanation.headline = text::headline(&explanation.root);
            Ok(Outcome::One(Box::new(explanation)))
        }
        Target::Slowest {
            search,
            count,
            since,
        } => {
            let (traces, api) = jaeger.search(search).await?;
            let what = match &search.operation {
                Some(o) => format!("{} {o}", search.service),
                None => search.service.clone(),
            };
            let mut found: Vec<(Trace, usize)> = traces
                .into_iter()
                .filter_map(|t| searched_span(&t, search).map(|i| (t, i)))
                .collect();
            if found.is_empty() {
                return Err(ExplainError::NoTraces {
                    what,
                    since: since.clone(),
                    url: jaeger.url(),
                });
            }
            let total = found.len();
            found.sort_by_key(|(t, i)| std::cmp::Reverse(t.spans[*i].duration_ns()));
            found.truncate(*count);
            let mut explanations: Vec<Explanation> = found
                .iter()
                .map(|(t, i)| {
                    let mut e = cause::explain(t, *i);
                    e.api = api;
                    e
                })
                .collect();
            culprits::follow(
                &jaeger,
                explanations.iter_mut().map(|e| &mut e.root).collect(),
                config.follow,
            )
            .await;
            for e in &mut explanations {
                e.headline = text::headline(&e.root);
            }
            Ok(Outcome::Many(Box::new(summary::summarize(
                what,
                since.clone(),
                jaeger.url(),
                api,
                total,
                explanations,
            ))))
        }
    }
}

/// What to print and what to write: standard output, and the HTML page if one was asked for.
///
/// # Errors
/// JSON encoding failed (it does not for these types).
pub fn render(
    config: &ExplainConfig,
    outcome: &Outcome,
) -> serde_json::Result<(String, Option<String>)> {
    let url = config.jaeger.as_str().trim_end_matches('/');
    let stdout = match (outcome, config.json) {
        (Outcome::One(e), true) => serde_json::to_string_pretty(e)? + "\n",
        (Outcome::Many(s), true) => serde_json::to_string_pretty(s)? + "\n",
        (Outcome::One(e), false) => text::render(e, url),
        (Outcome::Many(s), false) => text::render_summary(s),
    };
    let page = config.html.as_ref().map(|_| match outcome {
        Outcome::One(e) => html::render_one(e, url),
        Outcome::Many(s) => html::render_many(s),
    });
    Ok((stdout, page))
}
