//! Every wait named, without labels, on PostgreSQL: a handler that awaits `pg_sleep` through a
//! `PgPool` is waiting for its backend, and the engine says so from the socket alone (the
//! handler is ordinary code: no span, no label). `tests/waits.rs` has the other waits.
//!
//! Needs a PostgreSQL server: `HOLDUP_TEST_DATABASE_URL=postgres://…`. `tests/run.sh` starts a
//! throwaway cluster on a random loopback port and sets it. Because that port is not 5432, the
//! layer is told the database's port (`EngineConfig::backend_port`). Without the variable the
//! test skips with a note on stderr, or fails when `CI` is set.

mod waits_support;

use std::{str::FromStr, time::Duration};

use axum::{Router, extract::State, routing::get};
use holdup_diagnose::{DiagnoseLayer, EngineConfig};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use waits_support::{Served, hooked_runtime, setup};

const URL_VAR: &str = "HOLDUP_TEST_DATABASE_URL";

/// The PostgreSQL URL, or `None` (after a note on stderr) when none is configured outside CI.
fn database_url(test: &str) -> Option<String> {
    let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{URL_VAR} is not set: {test} needs a PostgreSQL server; \
                 tests/run.sh starts a throwaway one and sets it"
            );
        }
        eprintln!(
            "SKIPPED {test}: {URL_VAR} is not set (tests/run.sh starts a throwaway \
             PostgreSQL and sets it; or point it at postgres://… yourself)"
        );
        return None;
    };
    Some(url)
}

/// The handler awaits `select pg_sleep(0.3)` on a pool: the time is the database's.
#[test]
fn a_postgres_query_is_the_backend() {
    let _serial = setup();
    let Some(url) = database_url("a_postgres_query_is_the_backend") else {
        return;
    };
    let port = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("{URL_VAR}={url}: {e}"))
        .get_port();
    let runtime = hooked_runtime();
    let pool = runtime.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{URL_VAR}={url}: {e}"));
        // The connection is open before the request: the request's wait is the query's.
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        pool
    });
    let app = Router::new()
        .route(
            "/sleep",
            get(|State(pool): State<PgPool>| async move {
                sqlx::query("select pg_sleep(0.3)")
                    .execute(&pool)
                    .await
                    .unwrap();
                "slept"
            }),
        )
        .with_state(pool)
        .layer(DiagnoseLayer::new().with_config(EngineConfig::default().backend_port(port)));
    let server = Served::on(runtime, app);
    let reply = server.get("/sleep");
    let d = &reply.diagnosis;
    assert!(d.ms("total") >= 200.0, "total < 200ms: {d}");
    assert!(d.ms("idle") >= 200.0, "idle < 200ms: {d}");
    assert_eq!(
        d.verdict(),
        "backend",
        "pg_sleep is the database's time: {d}"
    );
}
