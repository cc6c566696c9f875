//! Transactions and pooled connections of either backend.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection, Transaction};

use crate::Backend;

/// A borrowed connection of one backend, for the query macros.
#[derive(Debug)]
pub enum Exec<'a> {
    /// A SQLite connection.
    Sqlite(&'a mut SqliteConnection),
    /// A PostgreSQL connection.
    Postgres(&'a mut PgConnection),
}

/// Something the query macros can run statements on.
pub trait AsExec {
    /// Borrows the underlying connection.
    fn as_exec(&mut self) -> Exec<'_>;
}

/// An open transaction on either backend; dropped without `commit`, it rolls back.
#[derive(Debug)]
pub enum Tx {
    /// A SQLite transaction.
    Sqlite(Transaction<'static, Sqlite>),
    /// A PostgreSQL transaction.
    Postgres(Transaction<'static, Postgres>),
    /// A transaction on a connection its owner keeps between transactions (`Tx::adopt`).
    Kept(KeptTx),
}

/// A transaction its owner opened with statements of its own on a connection it keeps out of the pool, so that a
/// writer that runs transaction after transaction (the log's committer) pays no trip through the pool for each:
/// the pool pings every connection given back to it. Dropped while still open, the connection is closed rather
/// than reused, which ends the transaction without its changes.
#[derive(Debug)]
pub struct KeptTx {
    conn: Option<Conn>,
}

impl Drop for KeptTx {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

impl KeptTx {
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a kept transaction holds its connection until it ends")
    }
}

impl Tx {
    /// Wraps `conn`, on which the caller has just opened a transaction with its own statement (which may have
    /// carried the transaction's first query in the same round trip).
    pub fn adopt(conn: Conn) -> Tx {
        Tx::Kept(KeptTx { conn: Some(conn) })
    }

    /// Hands back the connection of an adopted transaction that the caller's own statement has just ended (a text
    /// that carried the transaction's last writes and its `COMMIT` in one round trip); any other transaction comes
    /// back unchanged.
    pub fn into_ended(self) -> Result<Conn, Tx> {
        match self {
            Tx::Kept(mut kept) => Ok(kept.conn.take().expect("a kept transaction holds its connection")),
            other => Err(other),
        }
    }

    /// The backend this transaction runs on.
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
            Tx::Kept(kept) => kept.conn.as_ref().map_or(Backend::Sqlite, Conn::backend),
        }
    }

    /// Makes every change of the transaction durable.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.commit_keeping().await.map(drop)
    }

    /// Makes every change of the transaction durable and hands back the connection of an adopted one.
    pub async fn commit_keeping(self) -> Result<Option<Conn>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await.map(|()| None),
            Tx::Postgres(tx) => tx.commit().await.map(|()| None),
            Tx::Kept(mut kept) => {
                raw(kept.conn(), "COMMIT").await?;
                Ok(kept.conn.take())
            }
        }
    }

    /// Undoes every change of the transaction.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
            Tx::Kept(mut kept) => {
                raw(kept.conn(), "ROLLBACK").await?;
                // Back to the pool: nothing is open on it any more.
                drop(kept.conn.take());
                Ok(())
            }
        }
    }

    /// Marks a point that `rollback_to_savepoint` can return to.
    pub async fn savepoint(&mut self, name: &str) -> Result<(), sqlx::Error> {
        self.raw(&format!("SAVEPOINT {}", ident(name))).await
    }

    /// Forgets the savepoint, keeping what was done since, and marks a new one of the same name: one round trip.
    pub async fn renew_savepoint(&mut self, name: &str) -> Result<(), sqlx::Error> {
        let name = ident(name);
        self.raw(&format!("RELEASE SAVEPOINT {name}; SAVEPOINT {name}")).await
    }

    /// Undoes everything since the savepoint and forgets it (one round trip).
    pub async fn rollback_to_savepoint(&mut self, name: &str) -> Result<(), sqlx::Error> {
        let name = ident(name);
        self.raw(&format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")).await
    }

    async fn raw(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        use sqlx::Executor as _;
        match self {
            Tx::Sqlite(tx) => tx.execute(sql).await.map(drop),
            Tx::Postgres(tx) => tx.execute(sql).await.map(drop),
            Tx::Kept(kept) => raw(kept.conn(), sql).await,
        }
    }
}

/// Runs statements without arguments on a connection.
async fn raw(conn: &mut Conn, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Executor as _;
    match conn {
        Conn::Sqlite(c) => c.execute(sql).await.map(drop),
        Conn::Postgres(c) => c.execute(sql).await.map(drop),
    }
}

/// Savepoint names are chosen by code, never by users; keep them to identifier characters anyway.
fn ident(name: &str) -> &str {
    assert!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "savepoint names are plain identifiers"
    );
    name
}

impl AsExec for Tx {
    fn as_exec(&mut self) -> Exec<'_> {
        match self {
            Tx::Sqlite(tx) => Exec::Sqlite(tx),
            Tx::Postgres(tx) => Exec::Postgres(tx),
            Tx::Kept(kept) => kept.conn().as_exec(),
        }
    }
}

/// A connection taken from the pool, outside any transaction.
#[derive(Debug)]
pub enum Conn {
    /// A SQLite connection.
    Sqlite(PoolConnection<Sqlite>),
    /// A PostgreSQL connection.
    Postgres(PoolConnection<Postgres>),
}

impl Conn {
    /// The backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the connection when it is dropped instead of giving it back to the pool (after a failure that may
    /// have left a transaction open on it).
    pub fn close_on_drop(&mut self) {
        match self {
            Conn::Sqlite(c) => c.close_on_drop(),
            Conn::Postgres(c) => c.close_on_drop(),
        }
    }
}

impl AsExec for Conn {
    fn as_exec(&mut self) -> Exec<'_> {
        match self {
            Conn::Sqlite(c) => Exec::Sqlite(c),
            Conn::Postgres(c) => Exec::Postgres(c),
        }
    }
}
