//! A test's PostgreSQL schema goes away with its `TestDb`, even while the test still holds it.

use std::time::Duration;

use artifactstore_db::{sqlx, AsExec as _, Exec};
use artifactstore_testkit::{postgres_url, TestDb};
use sqlx::Connection as _;

async fn schema_exists(name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    found.is_some()
}

/// The drop blocks the test's only thread, so a transaction of that test can never end while it waits: a background
/// task caught mid-transaction when a test finishes (or panics) used to hang the whole run.
#[tokio::test]
async fn dropping_ends_a_transaction_left_open_on_the_same_thread() {
    let Some(test) = TestDb::postgres().await else { return };
    let schema = test.schema.clone().unwrap();
    let mut tx = test.db.begin_write().await.unwrap();
    let Exec::Postgres(conn) = tx.as_exec() else { unreachable!("a PostgreSQL test database") };
    sqlx::query("SELECT sequence FROM log_head FOR UPDATE").fetch_all(conn).await.unwrap();
    assert!(schema_exists(&schema).await);

    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(test);
        let _ = done.send(());
    });
    // Blocking here, as a drop at the end of a test does: the open transaction cannot move.
    finished.recv_timeout(Duration::from_secs(60)).expect("the schema drop finished although a transaction held it");
    assert!(!schema_exists(&schema).await, "schema {schema} is gone");
    drop(tx);
}
