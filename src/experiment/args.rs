//! `holdup experiment`'s flags, validated into an [`ExperimentConfig`].

use std::path::PathBuf;

use clap::Args;

use super::{ExperimentConfig, catalogue::Scale, selected};
use crate::config::{ConfigError, check_range};

/// Run the catalogue of delay causes, before and after each fix, with a Fast probe beside.
#[derive(Debug, Clone, Args)]
pub struct ExperimentArgs {
    /// Server to experiment on; default: a fresh in-process server per experiment.
    /// Experiments that need their own server configuration are skipped with a target.
    #[arg(long, env = "HOLDUP_TARGET")]
    pub target: Option<String>,
    /// A few seconds per experiment instead of about ten: for tests and a first look.
    #[arg(long)]
    pub quick: bool,
    /// Print the findings as JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML report with one latency plot per experiment to this file.
    #[arg(long, env = "HOLDUP_EXPERIMENT_REPORT")]
    pub report: Option<PathBuf>,
    /// Run only these experiments (ids or groups, comma separated), e.g. `cpu,sleep-async`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Lab workers of the in-process servers, or of the --target: blocking pressures run one
    /// caller per worker so that every worker is taken.
    #[arg(long, env = "HOLDUP_EXPERIMENT_WORKERS", default_value_t = 2)]
    pub workers: u32,
}

impl ExperimentArgs {
    /// # Errors
    /// A [`ConfigError`] for a bad target, worker count or unknown experiment name.
    pub fn validate(&self) -> Result<ExperimentConfig, ConfigError> {
        if let Some(url) = &self.target {
            crate::load::target::endpoint(url)
                .map_err(|e| ConfigError::new("--target", e.to_string()))?;
        }
        let workers = check_range("--workers", self.workers, 1, 64)?;
        for name in &self.only {
            if selected(std::slice::from_ref(name)).is_empty() {
                let known: Vec<&str> = super::catalogue::catalogue().iter().map(|e| e.id).collect();
                return Err(ConfigError::new(
                    "--only",
                    format!(
                        "{name:?} is neither an experiment nor a group; experiments: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(ExperimentConfig {
            target: self.target.clone(),
            scale: if self.quick {
                Scale::quick(workers)
            } else {
                Scale::full(workers)
            },
            only: self.only.clone(),
            json: self.json,
            report: self.report.clone(),
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
        args: ExperimentArgs,
    }

    fn parse(args: &[&str]) -> ExperimentArgs {
        let mut all = vec!["experiment"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("flags parse").args
    }

    #[test]
    fn only_takes_ids_and_groups_and_refuses_the_unknown() {
        let config = parse(&["--quick", "--only", "cpu,sleep-async"])
            .validate()
            .expect("valid");
        assert!(config.scale.quick);
        assert_eq!(super::super::selected(&config.only).len(), 5);
        let err = parse(&["--only", "gpu"]).validate().unwrap_err();
        assert_eq!(err.flag, "--only");
    }
}
