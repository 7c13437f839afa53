//! `SlowBackend`: a slow database and a full connection pool.
//!
//! The pool is a real sqlx pool of `--db-pool-size` connections to embedded SQLite (default)
//! or PostgreSQL. A request takes a connection (the wait is its *queue* time), keeps it busy
//! for `hold_ms` (PostgreSQL: `pg_sleep` in the server; SQLite: an open transaction) and runs
//! a real query against seeded rows: an indexed POINT lookup or an unindexed SCAN.

use std::time::{Duration, Instant};

use prometheus_client::{
    metrics::{gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use sqlx::{AnyPool, any::AnyPoolOptions};
use tempfile::TempDir;
use tokio::sync::OnceCell;
use tracing::Instrument;

use super::support::{error::LabError, validate};
use crate::{
    config::{Database, DatabaseConfig, Limits},
    lab::micros,
    proto::{Query, SlowBackendReply, SlowBackendRequest},
    telemetry::metrics::{latency_histogram, register_fields},
};

/// The pool in Prometheus: `holdup_db_pool_{size,in_use,waiters}` and
/// `holdup_db_pool_wait_seconds`.
#[derive(Debug, Clone)]
pub struct DbPoolMetrics {
    size: Gauge,
    /// Refreshed at scrape time: only the pool knows how many of its connections are idle.
    in_use: Gauge,
    /// Requests waiting for a connection, counted up and down as they wait.
    waiters: Gauge,
    /// Every pool wait, successful or not.
    wait: Histogram,
}

impl DbPoolMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            size: Gauge::default(),
            in_use: Gauge::default(),
            waiters: Gauge::default(),
            wait: latency_histogram(),
        };
        register_fields!(registry.sub_registry_with_prefix("holdup_db_pool"), metrics, {
            size: "Connections the pool may open",
            in_use: "Connections lent out",
            waiters: "Requests waiting for a connection",
            wait [Seconds]: "Time requests waited for a connection",
        });
        metrics
    }
}

/// SCAN counts the rows of one bucket; buckets are `id % BUCKETS`.
pub const BUCKETS: u32 = 1_000;
/// The indexed lookup (primary key).
const POINT_SQL: &str = "SELECT COUNT(*) FROM holdup_items WHERE id = $1";
/// The unindexed scan.
const SCAN_SQL: &str = "SELECT COUNT(*) FROM holdup_items WHERE bucket = $1";

trait QuerySql {
    fn sql(&self) -> &'static str;
}

impl QuerySql for Query {
    fn sql(&self) -> &'static str {
        match self {
            Query::Point => POINT_SQL,
            Query::Scan => SCAN_SQL,
            Query::None => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// The lab database: a bounded pool plus what it needs to seed itself.
#[derive(Debug)]
pub struct Backend {
    pool: AnyPool,
    dialect: Dialect,
    config: DatabaseConfig,
    /// Seeding happens once, on start-up or, if the database was down then, on first use.
    seeded: OnceCell<()>,
    metrics: DbPoolMetrics,
    /// Keeps the embedded database's directory alive; removed when the backend is dropped.
    _dir: Option<TempDir>,
}

/// A gauge that counts itself down when the wait ends, however it ends.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn start(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Backend {
    /// Builds the pool (lazily: a database that is down at start-up does not stop the server)
    /// and tries to seed it once.
    ///
    /// # Errors
    /// An I/O error creating the embedded database's directory, or an invalid URL.
    pub async fn connect(
        config: &DatabaseConfig,
        metrics: DbPoolMetrics,
    ) -> Result<Self, LabError> {
        sqlx::any::install_default_drivers();
        let (url, dialect, dir) = match &config.database {
            Database::EmbeddedSqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("holdup-db-")
                    .tempdir()
                    .map_err(|e| {
                        LabError::Internal(format!("creating the SQLite directory: {e}"))
                    })?;
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("lab.db").display());
                (url, Dialect::Sqlite, Some(dir))
            }
            Database::Url(url) if url.starts_with("sqlite:") => {
                (url.clone(), Dialect::Sqlite, None)
            }
            Database::Url(url) => (url.clone(), Dialect::Postgres, None),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.pool_size)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            // Waiting for a connection is what this RPC demonstrates and measures itself;
            // sqlx's own slow-acquire warning would only repeat it in the log.
            .acquire_slow_threshold(Duration::from_secs(3600))
            .connect_lazy(&url)?;
        let backend = Self {
            pool,
            dialect,
            config: config.clone(),
            seeded: OnceCell::new(),
            metrics,
            _dir: dir,
        };
        backend
            .metrics
            .size
            .set(i64::from(backend.config.pool_size));
        if let Err(e) = backend.ensure_seeded().await {
            tracing::warn!(error = %e, "database not ready at start-up; SlowBackend will retry on first use");
        }
        Ok(backend)
    }

    pub fn kind(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// The OpenTelemetry `db.system.name` of the backend.
    fn system(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgresql",
        }
    }

    /// Mirrors the connections lent out into `holdup_db_pool_in_use`, before a scrape.
    pub fn sample_gauges(&self) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        let in_use = self.pool.size().saturating_sub(idle);
        self.metrics.in_use.set(i64::from(in_use));
    }

    pub fn seed_rows(&self) -> u32 {
        self.config.seed_rows
    }

    async fn ensure_seeded(&self) -> Result<(), LabError> {
        self.seeded
            .get_or_try_init(|| async {
                let started = Instant::now();
                let mut conn = self.pool.acquire().await?;
                if self.dialect == Dialect::Sqlite {
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&mut *conn)
                        .await?;
                }
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS holdup_items (\
                     id BIGINT PRIMARY KEY, bucket BIGINT NOT NULL, payload TEXT NOT NULL)",
                )
                .execute(&mut *conn)
                .await?;
                let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM holdup_items")
                    .fetch_one(&mut *conn)
                    .await?;
                let want = i64::from(self.config.seed_rows);
                if have < want {
                    let insert = match self.dialect {
                        Dialect::Sqlite => {
                            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $1) \
                             INSERT OR IGNORE INTO holdup_items (id, bucket, payload) \
                             SELECT n, n % 1000, hex(randomblob(16)) FROM seq"
                        }
                        Dialect::Postgres => {
                            "INSERT INTO holdup_items (id, bucket, payload) \
                             SELECT g, g % 1000, md5(g::text) FROM generate_series(1, $1) AS g \
                             ON CONFLICT (id) DO NOTHING"
                        }
                    };
                    sqlx::query(insert).bind(want).execute(&mut *conn).await?;
                }
                tracing::info!(
                    backend = self.kind(),
                    rows = want,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "lab table ready"
                );
                Ok::<(), LabError>(())
            })
            .await
            .map(|_| ())
    }

    /// Takes a connection, holds it, runs the query. The wait for a connection is parked inside
    /// the `pool.acquire` span, a stage of kind `queue`: the diagnosis engine counts it as queue
    /// time; `db.hold` and `db.query` carry `db.system.name`, so their waits are `backend`.
    ///
    /// # Errors
    /// UNAVAILABLE when no connection frees within the acquire timeout or the database fails.
    pub async fn run(&self, plan: BackendPlan) -> Result<SlowBackendReply, LabError> {
        self.ensure_seeded().await?;
        let asked = Instant::now();
        let acquired = async {
            let _waiting = Waiting::start(&self.metrics.waiters);
            self.pool.acquire().await
        }
        .instrument(tracing::info_span!(
            target: "holdup::db",
            "pool.acquire",
            holdup.stage = "queue",
            db.system.name = self.system(),
            holdup.pool_size = i64::from(self.config.pool_size),
            holdup.waiting = self.metrics.waiters.get(),
        ))
        .await;
        let pool_wait = asked.elapsed();
        self.metrics.wait.observe(pool_wait.as_secs_f64());
        let mut conn = acquired.map_err(|e| match e {
            sqlx::Error::PoolTimedOut => LabError::PoolTimeout {
                timeout_ms: self.config.acquire_timeout.as_millis(),
                pool_size: self.config.pool_size,
            },
            other => LabError::Database(other),
        })?;

        let held = Instant::now();
        let hold_span = tracing::info_span!(
            target: "holdup::db",
            "db.hold",
            db.system.name = self.system(),
            holdup.hold_ms = i64::try_from(plan.hold.as_millis()).unwrap_or(i64::MAX),
        );
        async {
            match self.dialect {
                Dialect::Postgres => {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    // The server stops the sleep at the caller's deadline too: dropping the
                    // future alone would leave PostgreSQL sleeping on a connection whose
                    // next user then waits for it.
                    if let Some(deadline) = plan.deadline {
                        let left = deadline.saturating_duration_since(Instant::now());
                        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                            .bind(statement_timeout_ms(left).to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("SELECT pg_sleep($1)")
                        .bind(plan.hold.as_secs_f64())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
                Dialect::Sqlite => {
                    // SQLite has no server to sleep in; an open transaction keeps the
                    // connection just as unavailable to anyone else. If the caller goes away
                    // mid-hold, dropping the transaction rolls it back before the connection
                    // serves anyone else.
                    let tx = sqlx::Connection::begin(&mut *conn).await?;
                    tokio::time::sleep(plan.hold).await;
                    tx.commit().await?;
                }
            }
            Ok::<(), sqlx::Error>(())
        }
        .instrument(hold_span)
        .await
        .map_err(|e| hold_failed(e, plan.deadline))?;
        let hold = held.elapsed();

        let queried = Instant::now();
        let key = i64::from(plan.key);
        let query_span = tracing::info_span!(
            target: "holdup::db",
            "db.query",
            db.system.name = self.system(),
            db.operation.name = "SELECT",
            db.query.text = plan.query.sql(),
        );
        let rows: i64 = async {
            Ok::<i64, sqlx::Error>(match plan.query {
                Query::Point => {
                    sqlx::query_scalar(POINT_SQL)
                        .bind(key)
                        .fetch_one(&mut *conn)
                        .await?
                }
                // `bucket` has no index: this reads every row.
                Query::Scan => {
                    sqlx::query_scalar(SCAN_SQL)
                        .bind(key)
                        .fetch_one(&mut *conn)
                        .await?
                }
                Query::None => 0,
            })
        }
        .instrument(query_span)
        .await?;
        let query = queried.elapsed();

        Ok(SlowBackendReply {
            rows: u64::try_from(rows).unwrap_or(0),
            pool_wait_us: micros(pool_wait),
            hold_us: micros(hold),
            query_us: micros(query),
            backend: self.kind().to_owned(),
            pool_size: self.config.pool_size,
            diagnostics: None,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BackendPlan {
    pub hold: Duration,
    pub query: Query,
    pub key: u32,
    /// The caller's deadline, passed on to PostgreSQL as `statement_timeout`.
    pub deadline: Option<Instant>,
}

impl BackendPlan {
    /// # Errors
    /// INVALID_ARGUMENT for a hold over the cap, an unknown query, or a key out of range.
    pub fn new(
        request: &SlowBackendRequest,
        limits: &Limits,
        seed_rows: u32,
    ) -> Result<Self, LabError> {
        let hold = validate::in_range(
            "hold_ms",
            request.hold_ms,
            0,
            limits.max_hold_ms,
            Some("--max-hold-ms"),
        )?;
        let query = validate::choice(
            "query",
            request.query,
            &[Query::None, Query::Point, Query::Scan],
        )?;
        let key = match query {
            Query::Point => validate::in_range("key", request.key, 1, seed_rows, None)?,
            Query::Scan => validate::in_range("key", request.key, 0, BUCKETS - 1, None)?,
            Query::None => validate::in_range("key", request.key, 0, 0, None)?,
        };
        Ok(Self {
            hold: Duration::from_millis(u64::from(hold)),
            query,
            key,
            deadline: None,
        })
    }
}

/// The largest `statement_timeout` PostgreSQL takes, in ms: the setting is a C `int`.
const MAX_STATEMENT_TIMEOUT_MS: u128 = i32::MAX as u128;

/// `statement_timeout` for a caller with `left` before its deadline: at least 1 ms (0 would
/// turn the timeout off), at most what PostgreSQL takes. A deadline further away than that
/// (`grpc-timeout: 1000H` is 41 days) is clamped to 24 days, far past the longest hold,
/// instead of making `set_config` fail and the call UNAVAILABLE.
fn statement_timeout_ms(left: Duration) -> u128 {
    left.as_millis().clamp(1, MAX_STATEMENT_TIMEOUT_MS)
}

/// PostgreSQL's `query_canceled` SQLSTATE: what `statement_timeout` ends a statement with.
const QUERY_CANCELED: &str = "57014";

/// The hold failed. With a deadline, a cancelled statement is the `statement_timeout` set from
/// it running out: the caller's deadline passed, which is what the caller must hear (it often
/// comes back from PostgreSQL a moment before the caller's own timer fires).
fn hold_failed(err: sqlx::Error, deadline: Option<Instant>) -> LabError {
    let canceled = err
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == QUERY_CANCELED);
    if canceled && deadline.is_some() {
        LabError::DeadlineExceeded {
            during: "during the database hold (PostgreSQL's statement_timeout, set to the \
                     caller's deadline, stopped it)"
                .into(),
        }
    } else {
        LabError::Database(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeout_stays_inside_postgres_range() {
        assert_eq!(
            statement_timeout_ms(Duration::ZERO),
            1,
            "0 would disable it"
        );
        assert_eq!(statement_timeout_ms(Duration::from_millis(1_500)), 1_500);
        // grpc-timeout's largest unit: 1000 hours.
        let far = Duration::from_secs(1_000 * 3_600);
        assert_eq!(statement_timeout_ms(far), 2_147_483_647);
        assert_eq!(statement_timeout_ms(Duration::MAX), 2_147_483_647);
    }
}
