//! `holdup experiment`: the catalogue of delay causes, each measured before and after its
//! fix with a `Fast` probe beside it, turned into a findings table (Markdown), JSON, and an
//! HTML report with one latency plot per experiment.
//!
//! - [`args`]: the flags, validated into an [`ExperimentConfig`].
//! - [`catalogue`](mod@catalogue): the experiments, their pressures and server configurations.
//! - [`runner`]: runs one experiment on a server of its own (or the `--target`).
//! - [`findings`]: one experiment's numbers and its computed conclusion.
//! - [`report`]: the whole run as data and as a Markdown table.
//! - [`html`], [`svg`]: the HTML report and its hand-written SVG plots.

pub mod args;
pub mod catalogue;
pub mod findings;
pub mod html;
pub mod report;
pub mod runner;
pub mod svg;
pub mod waterfall;

use std::{path::PathBuf, time::Instant};

use catalogue::{Experiment, Scale, catalogue};
use report::{ExperimentReport, Skipped};
use runner::Ran;

use crate::load::LoadError;

/// Why the catalogue could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no server to run against")]
    NoServer,
    #[error("experiment {0}: a load stream returned no statistics")]
    MissingStream(&'static str),
}

/// Everything `holdup experiment` needs, validated.
#[derive(Debug, Clone)]
pub struct ExperimentConfig {
    /// `None`: a fresh in-process server per experiment.
    pub target: Option<String>,
    pub scale: Scale,
    /// Run only experiments whose id or group is listed (all when empty).
    pub only: Vec<String>,
    pub json: bool,
    pub report: Option<PathBuf>,
}

/// The experiments `only` selects, in catalogue order.
pub fn selected(only: &[String]) -> Vec<Experiment> {
    catalogue()
        .into_iter()
        .filter(|e| only.is_empty() || only.iter().any(|o| o == e.id || o == e.group))
        .collect()
}

/// Runs the selected experiments one after another (they would load each other's cores if
/// run together) and concludes each. `starting(i, n, experiment, skipped)` is called before
/// each, with the reason it will be skipped if it will.
///
/// # Errors
/// An [`ExperimentError`] when a server cannot start or be reached.
pub async fn run_catalogue(
    config: &ExperimentConfig,
    mut starting: impl FnMut(usize, usize, &Experiment, Option<&str>),
) -> Result<ExperimentReport, ExperimentError> {
    let started = Instant::now();
    let experiments = selected(&config.only);
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    for (i, experiment) in experiments.iter().enumerate() {
        starting(
            i,
            experiments.len(),
            experiment,
            runner::skip_reason(experiment, config.target.as_deref()),
        );
        match runner::run_one(experiment, &config.scale, config.target.as_deref()).await? {
            Ran::Found(finding) => findings.push(*finding),
            Ran::Skipped(reason) => skipped.push(Skipped {
                id: experiment.id.to_owned(),
                reason,
            }),
        }
    }
    findings::conclude_all(&mut findings);
    Ok(ExperimentReport {
        quick: config.scale.quick,
        target: config
            .target
            .clone()
            .unwrap_or_else(|| "in-process (a fresh server per experiment)".into()),
        workers: config.scale.workers,
        elapsed_s: started.elapsed().as_secs_f64(),
        findings,
        skipped,
    })
}
