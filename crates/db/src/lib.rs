//! One database handle over SQLite or PostgreSQL.
#![doc = include_str!("../README.md")]

mod database;
mod error;
mod macros;
mod tx;

pub use database::{redact_url, Backend, CheckpointStats, ConnectOptions, Database, WAL_AUTOCHECKPOINT_PAGES};
pub use error::Error;
pub use tx::{AsExec, Conn, Exec, KeptTx, Tx};

#[doc(hidden)]
pub use sqlx;

/// The verb of a bulk multi-row `INSERT` whose failure always rolls back the whole transaction it runs in.
///
/// On SQLite `INSERT OR FAIL`: a failing statement stops at the failing row and keeps the rows before it, which spares
/// SQLite a statement journal (a copy, made before the statement changes it, of every page the statement touches).
/// Only for statements no caller recovers from while the transaction goes on (ADR 0012,
/// `docs/adr/0012-sqlite-bulk-writes.md`). PostgreSQL has no such clause and needs none: `INSERT`.
pub fn bulk_insert(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INSERT OR FAIL",
        Backend::Postgres => "INSERT",
    }
}

/// The `(..), (..)` value lists of a multi-row `INSERT` of `rows` rows of `columns` parameters.
///
/// PostgreSQL takes numbered parameters (`$1`); SQLite gets anonymous ones (`?`), which it binds in order: numbered
/// ones cost a scan of the statement's parameter list per bind, quadratic in the size of a large statement.
pub fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    placeholders_after(backend, 0, rows, columns)
}

/// As `placeholders`, for a statement that binds `before` parameters ahead of these (PostgreSQL numbers on from there).
pub fn placeholders_after(backend: Backend, before: usize, rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        out.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => out.push_str(&format!("${}", before + row * columns + column + 1)),
            }
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_postgres_and_not_sqlite() {
        assert_eq!(placeholders(Backend::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(placeholders(Backend::Sqlite, 0, 2), "");
        assert_eq!(placeholders_after(Backend::Postgres, 4, 1, 2), "($5, $6)");
        assert_eq!(placeholders_after(Backend::Sqlite, 4, 1, 2), "(?, ?)");
    }
}
