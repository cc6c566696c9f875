//! Opening the database, migrations, and SQLite housekeeping.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::{Conn, Error, Tx};

/// Which database engine a `Database` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: one file, the embedded default.
    Sqlite,
    /// PostgreSQL: shared by several instances.
    Postgres,
}

impl Backend {
    /// The backend a URL names, from its scheme.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::UnsupportedUrl(redact_url(url)))
        }
    }
}

/// How to open the database, beyond its URL.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The most connections the pool keeps open.
    pub max_connections: u32,
    /// On PostgreSQL, the schema every connection works in (created if absent).
    pub postgres_schema: Option<String>,
    /// How long a SQLite statement waits for another writer's lock before giving up.
    pub busy_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { max_connections: 8, postgres_schema: None, busy_timeout: Duration::from_secs(30) }
    }
}

/// The figures SQLite reports for a write-ahead log checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Whether a reader or writer kept the checkpoint from finishing.
    pub busy: bool,
    /// Frames in the log when the checkpoint ran.
    pub log_frames: i64,
    /// Frames copied back into the database file.
    pub checkpointed_frames: i64,
}

/// How many pages SQLite's write-ahead log holds before the commit that reaches it copies them into the database.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A pool of connections to the registry's database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: Pool,
}

impl Database {
    /// Opens the database a URL names (`sqlite://PATH` or `postgres://...`).
    ///
    /// A SQLite file is created if missing and put in WAL mode with `synchronous=FULL`, so a commit that returned is on disk.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self, Error> {
        let pool = match Backend::from_url(url)? {
            Backend::Sqlite => {
                let connect = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(options.busy_timeout)
                    .foreign_keys(true)
                    // Truncate the write-ahead log back to this size after each checkpoint.
                    .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
                    // Copy the log into the database once it holds 10,000 pages (40 MiB), not SQLite's 1,000: a page
                    // that several commits changed is copied once per checkpoint, and the log's indexes (by subject,
                    // by type) change pages all over it with every group (ADR 0016).
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string());
                // A connection to a local file cannot go stale between uses: no ping before each acquire (a round trip
                // to the connection's thread that every read, and every group the committer writes, would pay).
                let pool = SqlitePoolOptions::new()
                    .max_connections(options.max_connections.max(2))
                    .test_before_acquire(false)
                    .connect_with(connect)
                    .await?;
                Pool::Sqlite(pool)
            }
            Backend::Postgres => {
                // No JIT: the registry's statements are short, and compiling one costs more than running it.
                let mut connect = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
                if let Some(schema) = &options.postgres_schema {
                    if schema.is_empty()
                        || !schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        return Err(Error::InvalidSchema(schema.clone()));
                    }
                    let admin = PgPoolOptions::new().max_connections(1).connect_with(connect.clone()).await?;
                    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&admin).await?;
                    admin.close().await;
                    connect = connect.options([("search_path", schema.as_str())]);
                }
                // The log's committer keeps one connection for itself: leave at least one for everything else.
                let pool =
                    PgPoolOptions::new().max_connections(options.max_connections.max(2)).connect_with(connect).await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self { pool })
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match &self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies every migration this build carries that the database has not seen yet.
    pub async fn migrate(&self) -> Result<(), Error> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("../../migrations/sqlite").run(pool).await?,
            Pool::Postgres(pool) => sqlx::migrate!("../../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Opens a transaction that will write: `BEGIN IMMEDIATE` on SQLite, so it holds the write lock from its first statement.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Opens a transaction that only reads, on one consistent snapshot.
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => {
                Tx::Postgres(pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?)
            }
        })
    }

    /// Takes a connection from the pool, outside any transaction.
    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Conn::Sqlite(pool.acquire().await?),
            Pool::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }

    /// Answers whether the database takes a trivial query.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Pool::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
    }

    /// Copies the SQLite write-ahead log into the database file and truncates it; `None` on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<Option<CheckpointStats>, sqlx::Error> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                // Copy what the log holds without stopping writers first; the truncating pass, which holds writers
                // off while it runs, then has only the frames committed in between left to copy (the log may hold
                // up to `WAL_AUTOCHECKPOINT_PAGES` of them).
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(pool).await?;
                let (busy, log_frames, checkpointed_frames): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(pool).await?;
                Ok(Some(CheckpointStats { busy: busy != 0, log_frames, checkpointed_frames }))
            }
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// The SQLite pool, for the few places that need backend-specific calls.
    pub fn as_sqlite(&self) -> Option<&SqlitePool> {
        match &self.pool {
            Pool::Sqlite(pool) => Some(pool),
            Pool::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, for the few places that need backend-specific calls.
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Sqlite(_) => None,
            Pool::Postgres(pool) => Some(pool),
        }
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        match &self.pool {
            Pool::Sqlite(pool) => pool.is_closed(),
            Pool::Postgres(pool) => pool.is_closed(),
        }
    }

    /// Resolves once `close` is called (at once if it was): a holder of a connection kept out of the pool gives it
    /// back then, since `close` waits for every connection.
    pub async fn closed(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close_event().await,
            Pool::Postgres(pool) => pool.close_event().await,
        }
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// A URL with any password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_backend_from_the_scheme() {
        assert_eq!(Backend::from_url("sqlite://data/a.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::from_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::from_url("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::from_url("postgresql://u@h/db").unwrap(), Backend::Postgres);
        let err = Backend::from_url("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(err.contains("mysql://u:***@h/db"), "{err}");
        assert!(!err.contains("secret"));
    }
}
