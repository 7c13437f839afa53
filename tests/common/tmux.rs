//! A terminal program run the way a user runs it, in a real terminal: a tmux server of the
//! test's own (private socket, no user config), one window of a fixed size, read back with
//! `tmux capture-pane -p`. The server is killed when the handle drops.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// How the tests get tmux (Debian's package; `tests/run.sh` installs it).
pub const INSTALL: &str = "apt-get install tmux";

/// Makes each test's socket name unique within the process.
static SESSIONS: AtomicU32 = AtomicU32::new(0);

pub struct Tmux {
    tmux: PathBuf,
    socket: String,
}

impl Tmux {
    /// Runs `program args…` in a detached `columns`×`rows` window. `None` (the test skips)
    /// when tmux is missing outside CI.
    #[track_caller]
    pub fn start(
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        columns: u16,
        rows: u16,
    ) -> Option<Self> {
        let tmux = super::require_tool("tmux", INSTALL)?;
        let socket = format!(
            "holdup-test-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let session = Self { tmux, socket };
        let mut command = session.command();
        command.args(["new-session", "-d", "-s", "test"]).args([
            "-x",
            &columns.to_string(),
            "-y",
            &rows.to_string(),
        ]);
        for (key, value) in env {
            command.args(["-e", &format!("{key}={value}")]);
        }
        command.arg("--").arg(program).args(args);
        let status = command.status().expect("tmux runs");
        assert!(status.success(), "tmux new-session failed: {status}");
        Some(session)
    }

    /// `tmux -L <socket> -f /dev/null`: this test's server, no user configuration.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.tmux);
        command.args(["-L", &self.socket, "-f", "/dev/null"]);
        command
    }

    /// The window's text as it is on screen now.
    #[track_caller]
    pub fn capture(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-t", "test"])
            .output()
            .expect("tmux capture-pane runs");
        assert!(
            output.status.success(),
            "tmux capture-pane failed (did the program exit?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Captures the window every 200 ms until `ready` accepts it; panics with the last
    /// screen after `limit`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        ready: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.capture();
            if let Some(found) = ready(&screen) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on screen within {limit:?}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .command()
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
    }
}
