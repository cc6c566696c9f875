//! The SQLite traps the database layer exists to avoid, each shown and each avoided.

use std::time::Duration;

use artifactstore_db::{execute, fetch_one};
use artifactstore_testkit::TestDb;

#[tokio::test]
async fn every_connection_is_wal_with_full_sync() {
    let test = TestDb::sqlite().await;
    // Several connections at once, so more than the first one is checked.
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = test.db.acquire().await.unwrap();
        let (mode,): (String,) = fetch_one!(&mut conn, (String,), "PRAGMA journal_mode").unwrap();
        let (sync,): (i64,) = fetch_one!(&mut conn, (i64,), "PRAGMA synchronous").unwrap();
        let (timeout,): (i64,) = fetch_one!(&mut conn, (i64,), "PRAGMA busy_timeout").unwrap();
        let (checkpoint,): (i64,) = fetch_one!(&mut conn, (i64,), "PRAGMA wal_autocheckpoint").unwrap();
        assert_eq!(checkpoint, i64::from(artifactstore_db::WAL_AUTOCHECKPOINT_PAGES), "checkpoints every 40 MiB");
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert!(timeout >= 1_000, "a busy timeout is set: {timeout}");
        conns.push(conn);
    }
}

async fn make_counter(test: &TestDb) {
    let mut tx = test.db.begin_write().await.unwrap();
    execute!(&mut tx, "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)").unwrap();
    execute!(&mut tx, "INSERT INTO counter VALUES (1, 0)").unwrap();
    tx.commit().await.unwrap();
}

/// The trap: two deferred transactions read, one writes and commits, the other's write fails at once
/// with SQLITE_BUSY, whatever the busy timeout, because its snapshot is stale.
#[tokio::test]
async fn deferred_read_then_write_fails_with_busy() {
    let test = TestDb::sqlite().await;
    make_counter(&test).await;
    let pool = test.db.as_sqlite().unwrap();
    let mut a = pool.begin().await.unwrap();
    let mut b = pool.begin().await.unwrap();
    let (na,): (i64,) = sqlx::query_as("SELECT n FROM counter").fetch_one(&mut *a).await.unwrap();
    let (_nb,): (i64,) = sqlx::query_as("SELECT n FROM counter").fetch_one(&mut *b).await.unwrap();
    sqlx::query("UPDATE counter SET n = $1").bind(na + 1).execute(&mut *a).await.unwrap();
    a.commit().await.unwrap();
    let started = std::time::Instant::now();
    let err = sqlx::query("UPDATE counter SET n = n + 1").execute(&mut *b).await.unwrap_err();
    let text = err.to_string().to_lowercase();
    assert!(text.contains("locked") || text.contains("busy"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "the busy timeout does not help here");
}

/// The cure: `begin_write` is `BEGIN IMMEDIATE`, so the second writer waits for the lock and then reads fresh data.
#[tokio::test]
async fn immediate_write_transactions_serialize_instead_of_failing() {
    let test = TestDb::sqlite().await;
    make_counter(&test).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = test.db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let mut tx = db.begin_write().await.unwrap();
                let (n,): (i64,) = fetch_one!(&mut tx, (i64,), "SELECT n FROM counter").unwrap();
                tokio::task::yield_now().await;
                execute!(&mut tx, "UPDATE counter SET n = $1", n + 1).unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut conn = test.db.acquire().await.unwrap();
    let (n,): (i64,) = fetch_one!(&mut conn, (i64,), "SELECT n FROM counter").unwrap();
    assert_eq!(n, 80, "no lost update and no SQLITE_BUSY");
}

/// The write-ahead log is truncated by a checkpoint, so it cannot grow without bound.
#[tokio::test]
async fn checkpoint_truncates_the_write_ahead_log() {
    let test = TestDb::sqlite().await;
    make_counter(&test).await;
    let wal = test.sqlite_path().unwrap().with_extension("db-wal");
    let blob = vec![7u8; 4096];
    for i in 0..300 {
        let mut tx = test.db.begin_write().await.unwrap();
        execute!(&mut tx, "INSERT INTO counter VALUES ($1, $2)", i + 2, i).unwrap();
        execute!(&mut tx, "CREATE TABLE IF NOT EXISTS pad (b BLOB)").unwrap();
        execute!(&mut tx, "INSERT INTO pad VALUES ($1)", blob.as_slice()).unwrap();
        tx.commit().await.unwrap();
    }
    let before = std::fs::metadata(&wal).unwrap().len();
    assert!(before > 1_000_000, "the log grew: {before} bytes");
    let stats = test.db.checkpoint().await.unwrap().unwrap();
    assert!(!stats.busy, "{stats:?}");
    let after = std::fs::metadata(&wal).unwrap().len();
    assert_eq!(after, 0, "TRUNCATE empties the log file");
}

/// A pragma such as journal_mode cannot change inside a transaction: the layer sets them per connection instead.
#[tokio::test]
async fn journal_mode_cannot_change_inside_a_transaction() {
    let test = TestDb::sqlite().await;
    let mut tx = test.db.begin_write().await.unwrap();
    let result = fetch_one!(&mut tx, (String,), "PRAGMA journal_mode = DELETE");
    match result {
        Ok((mode,)) => assert_eq!(mode, "wal", "SQLite ignores the change inside a transaction"),
        Err(err) => assert!(err.to_string().contains("transaction"), "{err}"),
    }
    tx.rollback().await.unwrap();
}
