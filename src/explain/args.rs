//! `holdup explain`'s flags, validated into an [`ExplainConfig`] before anything is asked of
//! Jaeger: one trace by id, or the slowest traces of a service (and operation) in a window.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use reqwest::Url;

use super::{
    ExplainConfig, Target,
    culprits::DEFAULT_MAX_FOLLOWED,
    jaeger::{Api, DEFAULT_JAEGER_URL, Search},
    model::{TRACE_ID_HEX, normalize_id},
};
use crate::{
    config::{ConfigError, check_range},
    load::args::parse_duration,
};

/// Traces `--slowest` explains when not told: a screenful of headlines.
pub const DEFAULT_SLOWEST: usize = 10;
/// Most traces one run explains: each may mean a culprit fetch, and the summary of a
/// thousand says no more than that of a hundred.
pub const MAX_SLOWEST: usize = 1_000;
/// Traces a search asks Jaeger for, of which the slowest are kept: Jaeger returns them
/// whole, so this bounds the answer (a few MiB for holdup's traces).
pub const DEFAULT_SEARCH_DEPTH: usize = 1_000;
pub const MAX_SEARCH_DEPTH: usize = 20_000;
/// Longest look back: Jaeger's in-memory store keeps far less; a week covers a real storage
/// backend's usual retention.
const MAX_SINCE: Duration = Duration::from_secs(7 * 86_400);

/// Explain a late request from its trace in Jaeger: the critical path, and the cause of each
/// segment from holdup's span attributes.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The trace to explain: its id in hex, as Jaeger and holdup's replies (`trace_id`,
    /// `x-trace-id`) show it.
    #[arg(value_name = "TRACE_ID", required_unless_present = "service")]
    pub trace_id: Option<String>,
    /// Jaeger's query service (where its UI is).
    #[arg(long, env = "HOLDUP_JAEGER_URL", default_value = DEFAULT_JAEGER_URL)]
    pub jaeger: String,
    /// Which query API to read: v3 (Jaeger v2), v1 (`/api/traces`), or auto (v3, else v1).
    #[arg(long, value_enum, env = "HOLDUP_JAEGER_API", default_value_t = Api::Auto)]
    pub api: Api,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML page with the waterfall of the (slowest) trace to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Many traces: explain the slowest traces of this service instead of one trace.
    #[arg(long, conflicts_with = "trace_id", env = "HOLDUP_EXPLAIN_SERVICE")]
    pub service: Option<String>,
    /// With --service: only traces with this operation (e.g. holdup.v1.Lab/Fast).
    #[arg(long, requires = "service", env = "HOLDUP_EXPLAIN_OPERATION")]
    pub operation: Option<String>,
    /// With --service: how far back to look, e.g. 15m, 1h, 30s.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub since: Duration,
    /// With --service: how many of the slowest traces to explain and sum.
    #[arg(long, default_value_t = DEFAULT_SLOWEST)]
    pub slowest: usize,
    /// With --service: how many traces to ask Jaeger for, of which the slowest are kept.
    #[arg(long, default_value_t = DEFAULT_SEARCH_DEPTH)]
    pub search_depth: usize,
    /// Most culprit traces to fetch (one level: a culprit's own culprits are not followed).
    #[arg(long, default_value_t = DEFAULT_MAX_FOLLOWED)]
    pub follow: usize,
    /// How long each request to Jaeger may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `15m`, `2h`, `90s`: a window as the user would write it.
fn window(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl ExplainArgs {
    /// # Errors
    /// A [`ConfigError`] naming the flag: a trace id that is not hex, a Jaeger URL that is
    /// not http(s), a count or window out of range.
    pub fn validate(&self) -> Result<ExplainConfig, ConfigError> {
        let jaeger = Url::parse(&self.jaeger)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::new(
                    "--jaeger",
                    format!("{:?} is not an http:// or https:// URL", self.jaeger),
                )
            })?;
        let target = match (&self.trace_id, &self.service) {
            (Some(id), _) => Target::Trace(normalize_id(id, TRACE_ID_HEX).ok_or_else(|| {
                ConfigError::new(
                    "TRACE_ID",
                    format!("{id:?} is not a trace id (1 to 32 hex digits)"),
                )
            })?),
            (None, Some(service)) => {
                let slowest = check_range("--slowest", self.slowest, 1, MAX_SLOWEST)?;
                let depth = check_range(
                    "--search-depth",
                    self.search_depth,
                    slowest,
                    MAX_SEARCH_DEPTH,
                )?;
                if self.since.is_zero() || self.since > MAX_SINCE {
                    return Err(ConfigError::new(
                        "--since",
                        format!("{} is outside 1s..=7d", window(self.since)),
                    ));
                }
                Target::Slowest {
                    search: Search {
                        service: service.clone(),
                        operation: self.operation.clone().filter(|o| !o.is_empty()),
                        since: self.since,
                        depth,
                    },
                    count: slowest,
                    since: window(self.since),
                }
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "TRACE_ID",
                    "give a trace id, or --service (and --operation) for the slowest traces",
                ));
            }
        };
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(600) {
            return Err(ConfigError::new("--timeout", "must be in 1ms..=10m"));
        }
        Ok(ExplainConfig {
            jaeger,
            api: self.api,
            target,
            json: self.json,
            html: self.html.clone(),
            follow: check_range("--follow", self.follow, 0, 10_000)?,
            timeout: self.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExplainArgs,
    }

    fn parse(args: &[&str]) -> Result<ExplainConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("explain").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.args.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn a_trace_id_is_padded_and_checked() {
        let config = parse(&["4BF92F35"]).expect("valid");
        assert!(
            matches!(config.target, Target::Trace(ref id) if id.ends_with("4bf92f35") && id.len() == 32)
        );
        assert!(parse(&["not-hex"]).unwrap_err().contains("TRACE_ID"));
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn many_traces_need_a_service_and_sane_bounds() {
        let config =
            parse(&["--service", "holdup", "--operation", "x", "--since", "1h"]).expect("valid");
        let Target::Slowest {
            search,
            count,
            since,
        } = config.target
        else {
            panic!("slowest")
        };
        assert_eq!((count, since.as_str(), search.depth), (10, "1h", 1_000));
        assert!(parse(&["--service", "s", "--slowest", "0"]).is_err());
        assert!(parse(&["--service", "s", "--slowest", "50", "--search-depth", "10"]).is_err());
        assert!(parse(&["abc", "--service", "s"]).is_err());
        assert!(
            parse(&["abc", "--jaeger", "ftp://x"])
                .unwrap_err()
                .contains("--jaeger")
        );
    }
}
