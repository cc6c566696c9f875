//! Fresh databases for tests: a SQLite file or a PostgreSQL schema of their own.
#![doc = include_str!("../README.md")]

use std::path::{Path, PathBuf};

use artifactstore_db::{Backend, ConnectOptions, Database};

mod s3;

pub use s3::S3Server;

/// The PostgreSQL server the tests use unless `ARTIFACTSTORE_TEST_POSTGRES` names another.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://root@127.0.0.1:5432/test";

/// A migrated database that belongs to one test and is cleaned up after it.
#[derive(Debug)]
pub struct TestDb {
    /// The open database.
    pub db: Database,
    /// The URL another process (or a second instance) can open the same database with.
    pub url: String,
    /// The PostgreSQL schema, for PostgreSQL databases.
    pub schema: Option<String>,
    dir: tempfile::TempDir,
}

impl TestDb {
    /// A fresh SQLite database in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("registry.db").display());
        let db = Database::connect(&url, &ConnectOptions::default()).await.expect("open SQLite");
        db.migrate().await.expect("migrate SQLite");
        TestDb { db, url, schema: None, dir }
    }

    /// A fresh PostgreSQL schema, or `None` (after a loud message) when no server can be reached outside CI.
    pub async fn postgres() -> Option<TestDb> {
        let url = postgres_url();
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let options = ConnectOptions { postgres_schema: Some(schema.clone()), ..ConnectOptions::default() };
        let db = match Database::connect(&url, &options).await {
            Ok(db) => db,
            Err(err) => {
                skip_or_panic(&format!("PostgreSQL at {url} is unreachable: {err}"));
                return None;
            }
        };
        db.migrate().await.expect("migrate PostgreSQL");
        let dir = tempfile::tempdir().expect("create a temporary directory");
        Some(TestDb { db, url, schema: Some(schema), dir })
    }

    /// A fresh database of the given backend, `None` where `postgres()` would skip.
    pub async fn of(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb::sqlite().await),
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    /// Opens a second, independent pool on the same database, as another instance would.
    pub async fn connect_again(&self) -> Database {
        let options = ConnectOptions { postgres_schema: self.schema.clone(), ..ConnectOptions::default() };
        Database::connect(&self.url, &options).await.expect("open the database again")
    }

    /// A scratch directory that lives as long as this database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite file, for SQLite databases.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.schema.is_none().then(|| self.dir.path().join("registry.db"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.clone() else { return };
        let url = self.url.clone();
        // Drop the schema from a thread of its own: this may run inside a runtime that is shutting down, or one
        // this very drop blocks. A task of that runtime may hold a transaction open on the schema (a background
        // sweep in flight, a rollback sqlx has queued but not sent), and it cannot end it while we wait: so the
        // drop waits for locks a bounded time, then ends the sessions that hold them and tries again.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(drop_schema(&url, &schema))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                eprintln!("warning: could not drop test schema {}: {err}", self.schema.as_deref().unwrap_or(""))
            }
            Err(_) => eprintln!("warning: dropping test schema {} panicked", self.schema.as_deref().unwrap_or("")),
        }
    }
}

/// `DROP SCHEMA .. CASCADE`, ending the sessions that hold locks on its tables if it has to wait for them.
async fn drop_schema(url: &str, schema: &str) -> std::io::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.map_err(std::io::Error::other)?;
    sqlx::query("SET lock_timeout = '2s'").execute(&mut conn).await.map_err(std::io::Error::other)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await {
            Ok(_) => return Ok(()),
            // 55P03: lock_not_available.
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("55P03") && attempt < 5 => {
                let ended: Vec<(bool,)> = sqlx::query_as(
                    "SELECT pg_terminate_backend(pid) FROM (SELECT DISTINCT l.pid FROM pg_locks l \
                     JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()) holders",
                )
                .bind(schema)
                .fetch_all(&mut conn)
                .await
                .map_err(std::io::Error::other)?;
                eprintln!(
                    "note: test schema {schema} was still locked by {} session(s) of the finished test; ended them",
                    ended.len()
                );
            }
            Err(err) => return Err(std::io::Error::other(err)),
        }
    }
}

/// The PostgreSQL URL the tests use.
pub fn postgres_url() -> String {
    std::env::var("ARTIFACTSTORE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// Whether this run is CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Prints a loud skip message, or panics under CI.
pub fn skip_or_panic(why: &str) {
    if in_ci() {
        panic!("CI=true and a test dependency is missing: {why}");
    }
    eprintln!("\n!!!!!!!! SKIPPED: {why}\n!!!!!!!! (set CI=true to make this a failure)\n");
}

/// Every backend a behavioural test runs on.
pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];
