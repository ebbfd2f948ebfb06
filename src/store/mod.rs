//! Storage: the only module that speaks SQL.
//!
//! One [`Store`] wraps an sqlx `Any` pool, so the same statements (with `$1` placeholders and
//! UTC-millisecond `BIGINT` timestamps) serve SQLite and PostgreSQL. Where the backends truly
//! differ — how a write transaction starts, how the sender claims rows — the code branches
//! on [`Backend`] in one place. Each submodule owns one concern:
//!
//! * [`subscriptions`]: subscribers and confirm tokens — the web flow's writes;
//! * [`queue`]: mailings — planning and fan-out into deliveries;
//! * [`delivery`]: deliveries — claim, lease renewal and expiry;
//! * [`record`]: outcomes — the recorder, and on PostgreSQL the sent log and its fold;
//! * [`trainings`]: what was last announced about each training;
//! * [`state`]: facts about the installation (the key fingerprint, the relay state);
//! * [`relink`]: a token-key rotation's writes (links registered under the new key);
//! * [`bounces`]: what a report from the receiving side does, and [`bounce_report`]: those
//!   reports summed up for staff.

pub mod bounce_report;
pub mod bounces;
pub mod delivery;
pub mod queue;
pub mod record;
pub mod registrations;
pub mod relink;
pub mod report;
pub mod roster;
pub mod state;
pub mod subscriptions;
pub mod trainings;

use std::{
    path::Path,
    str::FromStr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use sqlx::{
    AnyPool, Transaction,
    any::{Any, AnyArguments, AnyConnectOptions, AnyPoolOptions},
    query::Query,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("could not prepare the database directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("could not create the database file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> std::result::Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(format!(
                "{:?} is not supported; use sqlite://path/to/file.db or postgres://user@host/db",
                url.split(':').next().unwrap_or("")
            ))
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where the sender records outcomes. On PostgreSQL its own small pool whose sessions
    /// commit without waiting for the WAL flush (see [`Store::connect`]); on SQLite the
    /// main pool.
    records: AnyPool,
    backend: Backend,
    /// Whether this process may have sent-log rows not yet folded into `deliveries`, so
    /// that an idle sender's poll costs no round trips for an empty log.
    unsettled: Arc<AtomicBool>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Opens the pool (creating a SQLite file and its directory if needed) and brings the
    /// schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).map_err(StoreError::Corrupt)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let records = match backend {
            Backend::Sqlite => None,
            // A delivery's outcome is the one write whose latency the sender waits on for
            // every message, and on PostgreSQL most of it was the WAL flush. These sessions
            // commit as soon as the server has the change (`synchronous_commit = off`). The
            // death of harborlist loses nothing: the server has the commit. A crash of the
            // server or its machine can lose the last few hundred milliseconds of records
            // (three times `wal_writer_delay` at most), and those messages are then sent again
            // when their lease runs out: a repeat, never a loss, the same bargain as SQLite's
            // `synchronous = NORMAL`. Everything else (subscriptions, unsubscribes, claims)
            // still commits durably. Lazy, so CLI commands open no connection here.
            Backend::Postgres => Some(
                AnyPoolOptions::new()
                    .max_connections(record::RECORD_SESSIONS)
                    .acquire_timeout(Duration::from_secs(30))
                    // No ping before each record, which would double its round trips. A
                    // session lost with the server fails its record, the recorder retries,
                    // and the retry gets a new session.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::raw_sql("SET synchronous_commit = off")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_lazy_with(options.clone()),
            ),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            // A SQLite connection is a local file handle with nothing to go stale; pinging
            // it before every use was a round trip to sqlx's SQLite thread per statement. A
            // PostgreSQL connection can die with the server, so it is still checked.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // NORMAL is durable under WAL except for the last transactions on an
                        // OS crash; the queue tolerates a replay, not a loss, and WAL never
                        // loses a committed transaction to a process crash.
                        sqlx::raw_sql(
                            "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000;",
                        )
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL;")
                .execute(&pool)
                .await?;
        }
        let records = records.unwrap_or_else(|| pool.clone());
        let store = Self {
            pool,
            records,
            backend,
            unsettled: Arc::new(AtomicBool::new(true)),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`):
    /// a deferred transaction that reads and then writes can fail with SQLITE_BUSY instead
    /// of waiting its turn.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.records.close().await;
        self.pool.close().await;
    }

    /// Cheap liveness probe for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Makes sure a SQLite file can be created: the directory exists (0700 if new), the file
/// exists (0600 if new) and `mode=rwc` is set.
fn sqlite_url(url: &str) -> Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split('?').next().unwrap_or("");
    if !path.is_empty()
        && path != ":memory:"
        && let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        crate::fsutil::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    // Created (0600) before SQLite opens it: SQLite gives the `-wal`, `-shm` and journal
    // the main file's mode, so they come out private too, whatever the umask.
    let creates = !url.contains("mode=") || url.contains("mode=rwc");
    if creates && !path.is_empty() && path != ":memory:" {
        crate::fsutil::ensure_private(Path::new(path)).map_err(|source| StoreError::File {
            path: path.to_owned(),
            source,
        })?;
        warn_if_shared(Path::new(path));
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// A database made by an older version (or by hand) keeps its mode, and SQLite gives its
/// `-wal` and `-shm` the same one: say so if other users can read it.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:03o}", meta.permissions().mode() & 0o777),
                "the database file can be read by other users; run chmod 600 on it and its -wal and -shm files"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// `$first, $first+1, …` for `n` values: the inside of an `IN (…)` list whose values are all
/// bound. Only placeholders are ever spliced into SQL this way.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    use std::fmt::Write;
    let mut list = String::with_capacity(n * 6);
    for i in first..first + n {
        let _ = write!(list, "{}${i}", if i == first { "" } else { ", " });
    }
    list
}

/// `ids`, bound in order: the values for an `IN (…)` list made by [`placeholders`].
pub(crate) fn bind_ids<'q>(
    mut query: Query<'q, Any, AnyArguments>,
    ids: &[i64],
) -> Query<'q, Any, AnyArguments> {
    for id in ids {
        query = query.bind(*id);
    }
    query
}

/// Whether an error is a unique-constraint race that the caller may simply retry.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
