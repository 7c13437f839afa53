//! The real `holdup` binary as a child process: started on free loopback ports, signalled,
//! waited for, and measured (RSS and CPU from /proc) the way an operator would see it.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `holdup` and what it printed before it was ready.
pub struct Holdup {
    pub child: Child,
    /// The lines printed up to and including the `try:` line.
    pub banner: Vec<String>,
}

impl Holdup {
    /// The address that follows `prefix` on a banner line (`http://` and a path stripped).
    #[track_caller]
    pub fn addr_after(&self, prefix: &str) -> SocketAddr {
        self.banner
            .iter()
            .find_map(|line| {
                let rest = line.strip_prefix(prefix)?.trim_start_matches("http://");
                rest.split(['/', ' ']).next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {prefix:?} line in {:?}", self.banner))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `holdup ARGS` (under `sh -c 'ulimit -n N; exec …'` when `nofile` is set) and reads
/// its banner. Its stdout keeps being drained so the child never blocks on a full pipe.
pub fn start(args: &[&str], env: &[(&str, &str)], nofile: Option<u32>) -> Holdup {
    let program = env!("CARGO_BIN_EXE_holdup");
    let mut command = match nofile {
        None => Command::new(program),
        Some(limit) => {
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                program,
            ]);
            sh
        }
    };
    // No span export unless the test points the exporter somewhere.
    if !env.iter().any(|(k, _)| *k == "OTEL_EXPORTER_OTLP_ENDPOINT") {
        command.env("OTEL_TRACES_EXPORTER", "none");
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        // The child's logs show only when TEST_LOG is set (RUST_LOG picks what they hold).
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("holdup starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("stdout is text");
        let last = line.starts_with("try:");
        banner.push(line);
        if last {
            break;
        }
    }
    assert!(
        banner.last().is_some_and(|l| l.starts_with("try:")),
        "holdup exited before it was ready: {banner:?}"
    );
    std::thread::spawn(move || lines.for_each(drop));
    Holdup { child, banner }
}

/// `holdup serve` on free loopback ports, quiet, with a small seed; `extra` adds flags.
pub fn serve(extra: &[&str], env: &[(&str, &str)]) -> (Holdup, SocketAddr) {
    let holdup = start(&serve_args(extra), env, None);
    let addr = holdup.addr_after("holdup listening on ");
    (holdup, addr)
}

/// The arguments of [`serve`].
pub fn serve_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--no-console",
        "--seed-rows",
        "100",
    ];
    args.extend_from_slice(extra);
    args
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits up to `limit` for the child to exit; kills it and fails if it does not.
#[track_caller]
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("holdup did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmRSS line")
        * 1024
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in clock ticks of USER_HZ, 100 on every mainstream architecture.
    Duration::from_millis(ticks * 10)
}

/// Drop guard: kills the child if a test fails before it stops it.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How much of a [`Program`]'s output is kept for failure messages.
const MAX_KEPT_OUTPUT: usize = 64 * 1024;

/// An outside program a test runs beside holdup (Jaeger): its stdout and stderr kept (the last
/// 64 KiB) so that a failing test can show them, and killed when the handle drops.
pub struct Program {
    name: String,
    child: Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Program {
    #[track_caller]
    pub fn start(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let output = std::sync::Arc::default();
        keep(child.stdout.take(), &output);
        keep(child.stderr.take(), &output);
        Self {
            name: name.to_owned(),
            child,
            output,
        }
    }

    /// What the program wrote so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> String {
        self.output.lock().expect("not poisoned").clone()
    }

    /// Panics, with the output, if the program has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited ({status}); its output:\n{}",
                self.name,
                self.output()
            );
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drains `pipe` on a thread of its own (so the child never blocks on a full pipe), keeping
/// the tail in `output`.
fn keep(
    pipe: Option<impl std::io::Read + Send + 'static>,
    output: &std::sync::Arc<std::sync::Mutex<String>>,
) {
    let Some(pipe) = pipe else { return };
    let output = std::sync::Arc::clone(output);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut kept = output.lock().expect("not poisoned");
            kept.push_str(&line);
            kept.push('\n');
            if kept.len() > MAX_KEPT_OUTPUT {
                let cut = (kept.len() - MAX_KEPT_OUTPUT..kept.len())
                    .find(|&i| kept.is_char_boundary(i))
                    .unwrap_or(kept.len());
                kept.drain(..cut);
            }
        }
    });
}
