//! `holdup load`: a load generator for the Lab service.
//!
//! A run sends one or more *streams* of calls at the same server over the same measured
//! window: the main load and, beside it, a `Fast` probe at a fixed rate whose latency is the
//! victim's view of what the main load costs everyone else. Each stream is open loop (fixed
//! arrival rate, latency measured from each call's *intended* send time so that a stalled
//! server cannot hide behind a slowed generator) or closed loop (fixed concurrency), records
//! into HDR histograms, and ends in a [`report::Stats`].
//!
//! - [`args`]: the flags, validated into a [`LoadConfig`].
//! - [`rpc`]: the call each stream repeats, and its outcome.
//! - [`schedule`], [`worker`]: when calls are sent, and the tasks that send them.
//! - [`recorder`], [`histogram`]: what a stream records.
//! - [`report`], [`table`]: the results as data (JSON) and as a text table.
//! - [`target`]: connections to `--target`, or an in-process server.
//! - [`progress`]: the terminal progress bar.

pub mod args;
pub mod histogram;
pub mod progress;
pub mod recorder;
pub mod report;
pub mod rpc;
pub mod schedule;
pub mod table;
pub mod target;
pub mod worker;

use std::{sync::Arc, time::Duration};

use tokio::{task::JoinSet, time::Instant};
use tonic::transport::Channel;

use crate::{config::ServeConfig, server::ServeError};
use progress::Progress;
use recorder::{Recorder, lock};
use report::{LoadReport, Stats};
use rpc::RpcSpec;
use schedule::{Clock, Schedule};
use target::InProcessServer;

/// Why a load run could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid target {url:?}: {reason}")]
    Target { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("in-process server: {0}")]
    Server(#[from] ServeError),
    #[error("cannot start the in-process server's thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the in-process server stopped unexpectedly")]
    ServerGone,
}

/// What one stream sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub call: RpcSpec,
    pub schedule: Schedule,
    /// The deadline sent with every call; the client gives up shortly after it.
    pub timeout: Duration,
}

/// The time line shared by every stream of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Sent but not recorded: connections warm up, pools fill, caches load.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// One stream: a label for the report, its plan and the connections it uses.
#[derive(Debug, Clone)]
pub struct Stream {
    pub label: String,
    pub plan: Plan,
    pub channels: Vec<Channel>,
    /// Ask for each reply's whole timeline (`holdup-timeline: 1`), and keep the slowest.
    pub timeline: bool,
}

/// Everything `holdup load` needs, validated.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `None`: start a server in-process with `server`.
    pub target: Option<String>,
    pub server: ServeConfig,
    pub main: Plan,
    /// The `Fast` probe, on a connection of its own.
    pub probe: Option<Plan>,
    pub window: Window,
    pub connections: usize,
}

/// Delay before the first call, so that every stream's tasks are spawned before the clock
/// starts and none begins late.
const START_DELAY: Duration = Duration::from_millis(20);

/// Runs `streams` together over `window` and returns their statistics, in order.
pub async fn run(window: Window, streams: Vec<Stream>, progress: &Progress) -> Vec<Stats> {
    let clock = Clock::new(Instant::now() + START_DELAY, window.warmup, window.duration);
    let mut drivers = JoinSet::new();
    let mut recorders = Vec::with_capacity(streams.len());
    for stream in &streams {
        let recorder = Recorder::shared(clock);
        recorders.push(Arc::clone(&recorder));
        let caller = stream.plan.call.caller(
            stream.channels.clone(),
            stream.plan.timeout,
            stream.timeline,
        );
        drivers.spawn(worker::drive(caller, stream.plan.schedule, clock, recorder));
    }
    let mut ticker = tokio::time::interval(progress::REFRESH);
    loop {
        tokio::select! {
            joined = drivers.join_next() => match joined {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "a load stream failed"),
            },
            _ = ticker.tick(), if progress.is_visible() => {
                if Instant::now() >= clock.end {
                    progress.draining();
                } else {
                    progress.update(recorders.iter().map(|r| lock(r).progress()).sum());
                }
            }
        }
    }
    progress.finish();
    streams
        .iter()
        .zip(&recorders)
        .map(|(stream, recorder)| {
            lock(recorder).finish(
                &stream.label,
                stream.plan.call.describe(),
                &stream.plan.schedule,
            )
        })
        .collect()
}

/// Runs `holdup load`: connects (starting a server first when there is no target), runs the
/// main load with the probe beside it, and stops the in-process server.
///
/// # Errors
/// A [`LoadError`] when the target cannot be reached or the in-process server fails.
pub async fn run_command(config: LoadConfig, show_progress: bool) -> Result<LoadReport, LoadError> {
    let (server, url, described) = match &config.target {
        Some(url) => (None, url.clone(), url.clone()),
        None => {
            let server = InProcessServer::start(config.server.clone()).await?;
            let url = server.url();
            let described = format!("{url} (in-process)");
            (Some(server), url, described)
        }
    };
    let result = run_against(&config, &url, described, show_progress).await;
    if let Some(server) = server {
        server.stop().await?;
    }
    result
}

async fn run_against(
    config: &LoadConfig,
    url: &str,
    described: String,
    show_progress: bool,
) -> Result<LoadReport, LoadError> {
    let mut streams = vec![Stream {
        label: "main".into(),
        plan: config.main.clone(),
        channels: target::connect(url, config.connections).await?,
        timeline: false,
    }];
    if let Some(probe) = &config.probe {
        streams.push(Stream {
            label: "probe".into(),
            plan: probe.clone(),
            channels: target::connect(url, 1).await?,
            timeline: false,
        });
    }
    let progress = Progress::new(config.window.warmup + config.window.duration, show_progress);
    let mut stats = run(config.window, streams, &progress).await.into_iter();
    let main = stats
        .next()
        .expect("run returns one Stats per stream, and there is a main stream");
    Ok(LoadReport {
        target: described,
        warmup_s: config.window.warmup.as_secs_f64(),
        duration_s: config.window.duration.as_secs_f64(),
        connections: config.connections,
        main,
        probe: stats.next(),
    })
}
