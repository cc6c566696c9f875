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
}

impl Tx {
    /// The backend this transaction runs on.
    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    /// Makes every change of the transaction durable.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// Undoes every change of the transaction.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
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
        }
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

impl AsExec for Conn {
    fn as_exec(&mut self) -> Exec<'_> {
        match self {
            Conn::Sqlite(c) => Exec::Sqlite(c),
            Conn::Postgres(c) => Exec::Postgres(c),
        }
    }
}
