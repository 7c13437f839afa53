//! Runs one experiment: a server of its own (or the `--target`), the probe alone, then the
//! pressure with the probe beside it, and the finding made of the three measurements.

use std::time::Duration;

use super::{
    ExperimentError,
    catalogue::{Experiment, Scale, base_config, probe},
    findings::Finding,
};
use crate::load::{
    self, Stream, Window,
    progress::Progress,
    target::{InProcessServer, connect},
};

/// Connections the pressure is spread over (the probe always has one of its own).
const PRESSURE_CONNECTIONS: usize = 2;
/// Warm-up of the probe-alone run: lets a server that has just started settle (threads
/// spawned, first requests through) before its quiet baseline is measured.
const ALONE_WARMUP: Duration = Duration::from_millis(300);

/// What became of one experiment.
#[derive(Debug)]
pub enum Ran {
    Found(Box<Finding>),
    /// It could not run here, and why (e.g. it needs a server configuration a `--target`
    /// does not have).
    Skipped(String),
}

/// Why `experiment` cannot run against `target`, if it cannot.
pub fn skip_reason(experiment: &Experiment, target: Option<&str>) -> Option<&'static str> {
    (target.is_some() && experiment.server.is_some())
        .then_some("needs its own server configuration; runs only in-process (without --target)")
}

/// Runs `experiment` against `target`, or against a fresh in-process server.
///
/// # Errors
/// An [`ExperimentError`] when the server cannot start or be reached.
pub async fn run_one(
    experiment: &Experiment,
    scale: &Scale,
    target: Option<&str>,
) -> Result<Ran, ExperimentError> {
    if let Some(reason) = skip_reason(experiment, target) {
        return Ok(Ran::Skipped(reason.into()));
    }
    let server = match (target, experiment.server) {
        (Some(_), _) => None,
        (None, adjust) => {
            let mut config = base_config(scale);
            if let Some(adjust) = adjust {
                adjust(&mut config);
            }
            Some(InProcessServer::start(config).await?)
        }
    };
    let url = match (target, &server) {
        (Some(url), _) => url.to_owned(),
        (None, Some(server)) => server.url(),
        (None, None) => return Err(ExperimentError::NoServer),
    };
    let measured = measure(experiment, scale, &url).await;
    if let Some(server) = server {
        server.stop().await?;
    }
    Ok(Ran::Found(Box::new(measured?)))
}

async fn measure(
    experiment: &Experiment,
    scale: &Scale,
    url: &str,
) -> Result<Finding, ExperimentError> {
    let probe_channels = connect(url, 1).await?;
    let pressure_channels = connect(url, PRESSURE_CONNECTIONS).await?;
    let probe_stream = Stream {
        label: "probe".into(),
        plan: probe(scale),
        channels: probe_channels,
        // The slowest probe's timeline is drawn in the report.
        timeline: true,
    };
    let quiet = Progress::hidden();

    let alone_window = Window {
        warmup: ALONE_WARMUP,
        duration: scale.alone,
    };
    let mut alone = load::run(alone_window, vec![probe_stream.clone()], &quiet).await;

    let pressure_window = Window {
        warmup: scale.warmup,
        duration: scale.duration,
    };
    let pressure_stream = Stream {
        label: "pressure".into(),
        plan: (experiment.pressure)(scale),
        channels: pressure_channels,
        timeline: false,
    };
    let mut under = load::run(pressure_window, vec![pressure_stream, probe_stream], &quiet)
        .await
        .into_iter();
    let (Some(probe_alone), Some(pressure), Some(probe_under)) =
        (alone.pop(), under.next(), under.next())
    else {
        return Err(ExperimentError::MissingStream(experiment.id));
    };
    Ok(Finding::new(experiment, probe_alone, probe_under, pressure))
}
