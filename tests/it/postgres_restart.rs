//! The database dies and comes back: while PostgreSQL is down SlowBackend is UNAVAILABLE with
//! the cause and everything else keeps answering; once it is back, SlowBackend recovers
//! without a restart of holdup.
//!
//! Needs `HOLDUP_TEST_DATABASE_URL` and `HOLDUP_TEST_PG_CTL` (a `pg_ctl` command line for that
//! server, without its action), both set by tests/run.sh. Kept in a test binary of its own:
//! it stops the server that tests/postgres.rs uses, and cargo runs test binaries one at a time.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::common::{ms, spawn_with};
use holdup::{
    config::Database,
    proto::{FastRequest, Query, SlowBackendRequest},
};
use tonic::Code;

fn env_or_skip(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set: tests/run.sh starts a throwaway PostgreSQL and sets it")
        }
        Err(_) => {
            eprintln!("SKIPPED: {var} is not set (tests/run.sh sets it)");
            None
        }
    }
}

fn pg_ctl(command: &str, action: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("{command} {action} >/dev/null")])
        .status()
        .expect("sh runs");
    assert!(status.success(), "pg_ctl {action} failed");
}

/// Starts PostgreSQL again when dropped, so that a failing assertion never leaves it down.
struct RestartOnDrop<'a>(&'a str, bool);

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if !self.1 {
            pg_ctl(self.0, "start");
        }
    }
}

fn point() -> SlowBackendRequest {
    SlowBackendRequest {
        hold_ms: 1,
        query: Query::Point.into(),
        key: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_recovers_when_postgres_comes_back() {
    // It stops the PostgreSQL server the tests in postgres.rs use, which take `serial` too:
    // since the tests share one binary, they would otherwise see their connections reset.
    let _serial = crate::common::serial().await;
    let (Some(url), Some(ctl)) = (
        env_or_skip("HOLDUP_TEST_DATABASE_URL"),
        env_or_skip("HOLDUP_TEST_PG_CTL"),
    ) else {
        return;
    };
    let mut app = spawn_with(|c| {
        c.db.database = Database::Url(url);
        c.db.pool_size = 2;
        c.db.acquire_timeout = ms(1_000);
        c.db.seed_rows = 100;
    })
    .await;
    app.client
        .slow_backend(point())
        .await
        .expect("PostgreSQL up");

    pg_ctl(&ctl, "stop");
    let mut guard = RestartOnDrop(&ctl, false);
    let started = Instant::now();
    let status = app.client.slow_backend(point()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("database"),
        "{}",
        status.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    app.client
        .fast(FastRequest::default())
        .await
        .expect("the rest of the service answers with the database down");

    pg_ctl(&ctl, "start");
    guard.1 = true;
    // Connections of the old server are dead; the pool replaces them on the next calls.
    let deadline = Instant::now() + Duration::from_secs(15);
    let recovered = loop {
        match app.client.slow_backend(point()).await {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "not recovered: {status:?}");
                tokio::time::sleep(ms(200)).await;
            }
        }
    };
    assert_eq!(recovered.rows, 1);
    assert_eq!(recovered.backend, "postgres");
    app.shutdown().await.unwrap();
}
