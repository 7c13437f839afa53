//! Following culprits: each request blamed for holding a runtime worker is a span of another
//! trace (a link); its own trace says what it was doing then (its verdict: `own-cpu`,
//! `blocking-call`, …). One level only (a culprit's own culprits are not followed) and a
//! bounded number of traces per run, fetched a few at a time.

use std::collections::HashMap;

use tokio::task::JoinSet;

use super::{
    cause::{Culprit, Followed, Node, culprits_mut},
    error::ExplainError,
    jaeger::Jaeger,
    model::Trace,
};

/// Culprit traces fetched in one run at most: enough for every culprit of a hundred explained
/// traces on a two-worker server, and a bound on what one explain asks of Jaeger.
pub const DEFAULT_MAX_FOLLOWED: usize = 100;

/// Culprit traces fetched at once.
const CONCURRENT_FETCHES: usize = 4;

/// Fills in `followed` (or `note`) for every culprit under `roots`, fetching at most `limit`
/// traces.
pub async fn follow(jaeger: &Jaeger, roots: Vec<&mut Node>, limit: usize) {
    let mut culprits: Vec<&mut Culprit> = roots.into_iter().flat_map(culprits_mut).collect();
    let mut wanted: Vec<String> = Vec::new();
    for c in &culprits {
        if let Some(id) = &c.trace_id
            && !wanted.contains(id)
        {
            wanted.push(id.clone());
        }
    }
    let skipped = wanted.len().saturating_sub(limit);
    wanted.truncate(limit);
    let fetched = fetch_all(jaeger, wanted).await;
    for c in &mut culprits {
        let (Some(trace_id), Some(span_id)) = (&c.trace_id, &c.span_id) else {
            continue;
        };
        match fetched.get(trace_id) {
            None if skipped > 0 => {
                c.note = Some(format!("not followed: over the limit of {limit} traces"));
            }
            None => {}
            Some(Ok(trace)) => match trace.find(span_id) {
                Some(i) => {
                    let span = &trace.spans[i];
                    c.followed = Some(Followed {
                        start_unix_us: span.start_ns / 1_000,
                        service: span.service.clone(),
                        operation: span.operation.clone(),
                        duration_us: span.duration_ns() / 1_000,
                        verdict: span.text("holdup.verdict"),
                    });
                }
                None => c.note = Some("its span is not in its trace".to_owned()),
            },
            Some(Err(note)) => c.note = Some(note.clone()),
        }
    }
}

/// The traces `ids`, a few at a time; a trace that could not be had is the reason why.
async fn fetch_all(jaeger: &Jaeger, ids: Vec<String>) -> HashMap<String, Result<Trace, String>> {
    let mut out = HashMap::new();
    let mut pending = ids.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < CONCURRENT_FETCHES {
            let Some(id) = pending.next() else { break };
            let jaeger = jaeger.clone();
            running.spawn(async move {
                let got = jaeger
                    .trace(&id)
                    .await
                    .map(|(t, _)| t)
                    .map_err(|e| match e {
                        ExplainError::TraceNotFound { .. } => {
                            "its trace is not in Jaeger".to_owned()
                        }
                        other => other.to_string(),
                    });
                (id, got)
            });
        }
        match running.join_next().await {
            Some(Ok((id, got))) => {
                out.insert(id, got);
            }
            // A fetch task that panicked: its culprit stays unfollowed.
            Some(Err(_)) => {}
            None => break,
        }
    }
    out
}
