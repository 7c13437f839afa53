//! Flags read from `HOLDUP_*` environment variables, as a manifest or a shell sets them: the
//! real binary, its exit code and message.

use std::process::Command;

/// Runs `holdup args…` with `env` and an out-of-range `flag` that makes it exit before it
/// binds anything; what it printed on stderr, after checking it exited on `flag`, not on an
/// environment variable clap refused.
fn refused_on(args: &[&str], env: &[(&str, &str)], flag: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_holdup"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run holdup");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(64),
        "usage error expected:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("invalid value for {flag}")),
        "holdup should have got as far as checking {flag}:\n{stderr}"
    );
    stderr
}

/// Every boolean flag with a variable takes 1/0, yes/no, true/false (a Kubernetes manifest's
/// `value: "1"`), where clap's default took only true/false.
#[test]
fn boolean_variables_take_one_and_zero() {
    for (yes, no) in [("1", "0"), ("yes", "no"), ("true", "false")] {
        refused_on(
            &["serve", "--db-pool-size", "0"],
            &[
                ("HOLDUP_REFUSE_BLOCKING_MODES", yes),
                ("HOLDUP_NO_METRICS", no),
                ("HOLDUP_NO_CONSOLE", yes),
            ],
            "--db-pool-size",
        );
        refused_on(
            &["upstream", "--sim-latency-ms", "600000"],
            &[("HOLDUP_NO_CONSOLE", no)],
            "--sim-latency-ms",
        );
    }
}

/// A rate that is not a number is refused, from the flag or from the variable.
#[test]
fn a_rate_that_is_not_a_number_is_refused() {
    refused_on(
        &["upstream", "--sim-error-rate", "NaN"],
        &[],
        "--sim-error-rate",
    );
    refused_on(
        &["serve"],
        &[("HOLDUP_SIM_STALL_RATE", "NaN")],
        "--sim-stall-rate",
    );
}
