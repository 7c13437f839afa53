//! `SlowBackend` on PostgreSQL: the same RPC, pool and contention as on embedded SQLite, with
//! the hold done by `pg_sleep` inside the database server.
//!
//! Needs a PostgreSQL server: `HOLDUP_TEST_DATABASE_URL=postgres://…` names a database on it
//! whose role may `CREATE DATABASE` (each test makes a fresh database of its own and drops it
//! at the end, so tests neither share seed rows nor race each other's seeding).
//! `tests/run.sh` starts a throwaway cluster on a loopback port and sets the variable. Without
//! it the tests skip with a note on stderr, or fail when `CI` is set.

use std::time::{Duration, Instant};

use crate::common::{TestApp, client, diagnostics, ms, spawn_with};
use holdup::{
    config::Database,
    proto::{Query, SlowBackendReply, SlowBackendRequest},
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tonic::Code;

const URL_VAR: &str = "HOLDUP_TEST_DATABASE_URL";

/// A database of its own for one test, on the server `HOLDUP_TEST_DATABASE_URL` points at.
struct TestDb {
    /// The URL the test was given: where the database is created from and dropped.
    admin_url: String,
    name: String,
    /// The new database's URL, for holdup.
    url: String,
}

impl TestDb {
    /// `None` (after a note on stderr) when no PostgreSQL is configured outside CI.
    async fn create(test: &str) -> Option<Self> {
        let Some(admin_url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{URL_VAR} is not set: these tests need a PostgreSQL server; \
                     tests/run.sh starts one and sets it"
                );
            }
            eprintln!(
                "SKIPPED {test}: {URL_VAR} is not set (tests/run.sh starts a throwaway \
                 PostgreSQL and sets it; or point it at postgres://… yourself)"
            );
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("holdup_{test}_{}_{nanos}", std::process::id());
        let mut admin = connect(&admin_url).await;
        // The name is ours: a static test name and digits, nothing from outside.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| {
                panic!("CREATE DATABASE {name} (the role in {URL_VAR} needs CREATEDB): {e}")
            });
        let url = with_database(&admin_url, &name);
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    async fn drop(self) {
        let mut admin = connect(&self.admin_url).await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("DROP DATABASE {}: {e}", self.name));
    }
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url} ({URL_VAR}): {e}"))
}

/// `url` with its database (the path) replaced by `name`, query parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let authority = base
        .find("://")
        .map(|i| i + 3)
        .unwrap_or_else(|| panic!("{URL_VAR} is not a URL: {url}"));
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{name}{query}", &base[..path])
}

async fn spawn_on(db: &TestDb, pool_size: u32, acquire_timeout: Duration) -> TestApp {
    let url = db.url.clone();
    spawn_with(move |c| {
        c.db.database = Database::Url(url);
        c.db.pool_size = pool_size;
        c.db.acquire_timeout = acquire_timeout;
    })
    .await
}

fn request(hold_ms: u32, query: Query, key: u32) -> SlowBackendRequest {
    SlowBackendRequest {
        hold_ms,
        query: query.into(),
        key,
    }
}

async fn call(app: &TestApp, req: SlowBackendRequest) -> SlowBackendReply {
    client(app.addr)
        .await
        .slow_backend(req)
        .await
        .unwrap_or_else(|s| panic!("SlowBackend {req:?}: {s}"))
        .into_inner()
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://u:p@127.0.0.1:5432/holdup_test", "x"),
        "postgres://u:p@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://h:1/db?sslmode=disable", "x"),
        "postgresql://h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_runs_on_postgres_against_the_seeded_rows() {
    let _serial = crate::common::serial().await;
    let Some(db) = TestDb::create("queries").await else {
        return;
    };
    let app = spawn_on(&db, 4, ms(2_000)).await;

    // 2000 seeded rows (the harness's seed) in 1000 buckets: two rows per bucket.
    for (query, key, rows) in [
        (Query::None, 0, 0),
        (Query::Point, 1, 1),
        (Query::Point, 2_000, 1),
        (Query::Scan, 7, 2),
        (Query::Scan, 0, 2),
    ] {
        let reply = call(&app, request(0, query, key)).await;
        assert_eq!(reply.rows, rows, "{query:?} key {key}: {reply:?}");
        assert_eq!(reply.backend, "postgres", "{reply:?}");
        assert_eq!(reply.pool_size, 4);
        let d = diagnostics(&reply.diagnostics);
        assert!(d.queue_us <= d.idle_us, "{d:?}");
    }

    // The rows really are in PostgreSQL, in this test's own database.
    let mut conn = connect(&db.url).await;
    let (seeded, bucket7): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE bucket = 7) FROM holdup_items")
            .fetch_one(&mut conn)
            .await
            .expect("the lab table exists in the test database");
    assert_eq!((seeded, bucket7), (2_000, 2));
    conn.close().await.expect("close");

    app.shutdown().await.expect("clean shutdown");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_is_pg_sleep_in_the_server() {
    let _serial = crate::common::serial().await;
    let Some(db) = TestDb::create("hold").await else {
        return;
    };
    let app = spawn_on(&db, 4, ms(2_000)).await;
    call(&app, request(0, Query::None, 0)).await; // seeded and connected before timing

    let hold_ms = 800u32;
    let addr = app.addr;
    let running = tokio::spawn(async move {
        client(addr)
            .await
            .slow_backend(request(hold_ms, Query::Point, 1))
            .await
            .expect("SlowBackend answers")
            .into_inner()
    });

    // While the call holds its connection, PostgreSQL itself shows the session asleep.
    let mut observer = connect(&db.admin_url).await;
    let started = Instant::now();
    let mut seen = None;
    while seen.is_none() && started.elapsed() < ms(u64::from(hold_ms)) {
        seen = sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT query, wait_event FROM pg_stat_activity \
             WHERE datname = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
        )
        .bind(&db.name)
        .fetch_optional(&mut observer)
        .await
        .expect("pg_stat_activity is readable");
        tokio::time::sleep(ms(20)).await;
    }
    let (query, wait_event) = seen.expect("an active pg_sleep session in pg_stat_activity");
    assert_eq!(query, "SELECT pg_sleep($1)");
    assert_eq!(wait_event.as_deref(), Some("PgSleep"));
    observer.close().await.expect("close");

    let reply = running.await.expect("call task");
    let hold = u64::from(hold_ms) * 1_000;
    assert!(
        reply.hold_us >= hold * 95 / 100,
        "hold_us {} for a {hold} us hold",
        reply.hold_us
    );
    assert!(reply.hold_us < hold * 5, "hold_us {}", reply.hold_us);
    assert_eq!(reply.rows, 1);
    let d = diagnostics(&reply.diagnostics);
    assert_eq!(d.verdict, "backend", "{d:?}");
    assert!(d.idle_us >= hold * 9 / 10, "the hold is idle time: {d:?}");
    assert!(d.busy_us < hold / 4, "the hold is not CPU: {d:?}");

    app.shutdown().await.expect("clean shutdown");
    db.drop().await;
}

/// The same shape as `contention.rs`'s SQLite test: with one connection, the second of two
/// holds (400 ms, then 100 ms started 50 ms later) queues for the first one's hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_makes_the_second_caller_queue_for_the_first_ones_hold() {
    let _serial = crate::common::serial().await;
    let Some(db) = TestDb::create("contention").await else {
        return;
    };
    let app = spawn_on(&db, 1, ms(2_000)).await;
    call(&app, request(0, Query::None, 0)).await; // seeded before the race starts

    let (_first, second) = crate::common::two_holds_on_one_connection(app.addr, 400).await;
    let d = diagnostics(&second.diagnostics);
    // Its queue (the first one's 400 ms hold, less the 50 ms it started later) is longer than
    // its own 100 ms hold.
    assert_eq!(d.verdict, "resource-queue", "{d:?}");
    assert_eq!(second.backend, "postgres");
    app.shutdown().await.expect("clean shutdown");
    db.drop().await;
}

/// Past the acquire timeout the waiting caller is refused with UNAVAILABLE naming the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_the_acquire_timeout_is_unavailable() {
    let _serial = crate::common::serial().await;
    let Some(db) = TestDb::create("timeout").await else {
        return;
    };
    let app = spawn_on(&db, 1, ms(200)).await;
    call(&app, request(0, Query::None, 0)).await;

    let addr = app.addr;
    let holder = tokio::spawn(async move {
        client(addr)
            .await
            .slow_backend(request(1_000, Query::None, 0))
            .await
            .expect("the holder answers")
            .into_inner()
    });
    tokio::time::sleep(ms(150)).await;
    let started = Instant::now();
    let status = client(app.addr)
        .await
        .slow_backend(request(0, Query::Point, 1))
        .await
        .expect_err("no connection frees within 200 ms");
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("pool") && status.message().contains("--db-pool-size"),
        "{}",
        status.message()
    );
    assert!(
        waited >= ms(180) && waited < ms(900),
        "refused after {waited:?}"
    );
    assert!(holder.await.expect("holder task").hold_us >= 950_000);
    app.shutdown().await.expect("clean shutdown");
    db.drop().await;
}

/// A deadline stops the hold in PostgreSQL too (`statement_timeout`), so the connection is
/// free for the next caller at once instead of after the rest of the `pg_sleep`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_pg_sleep_in_the_server() {
    let _serial = crate::common::serial().await;
    let Some(db) = TestDb::create("deadline").await else {
        return;
    };
    let app = spawn_on(&db, 1, ms(5_000)).await;
    call(&app, request(0, Query::None, 0)).await; // seeded and connected before timing

    let mut held = tonic::Request::new(request(5_000, Query::Point, 1));
    held.set_timeout(ms(300));
    let status = client(app.addr)
        .await
        .slow_backend(held)
        .await
        .expect_err("the deadline ends the call");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    // Without statement_timeout the only connection would stay asleep ~4.7 s more.
    let started = Instant::now();
    let reply = call(&app, request(0, Query::Point, 1)).await;
    assert!(
        started.elapsed() < ms(2_000),
        "next call took {:?}",
        started.elapsed()
    );
    assert_eq!(reply.rows, 1);
    app.shutdown().await.expect("clean shutdown");
    db.drop().await;
}

/// A deadline further away than PostgreSQL's `statement_timeout` can hold (a C `int` of ms,
/// about 24.8 days) is clamped, not passed on: `grpc-timeout: 1000H` made `set_config` fail
/// and the call UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_weeks_away_still_holds() {
    let Some(db) = TestDb::create("far_deadline").await else {
        return;
    };
    let app = spawn_on(&db, 1, ms(5_000)).await;
    let mut far = tonic::Request::new(request(10, Query::Point, 1));
    far.set_timeout(Duration::from_secs(1_000 * 3_600));
    let reply = client(app.addr)
        .await
        .slow_backend(far)
        .await
        .expect("a deadline 1000 hours away is no reason to fail")
        .into_inner();
    assert_eq!(reply.rows, 1);
    app.shutdown().await.expect("clean shutdown");
    db.drop().await;
}
