//! Macros that run one SQL text with one argument list on either backend.

/// Executes a statement on a `Tx` or `Conn`; evaluates to `Result<u64, sqlx::Error>` (rows affected).
#[macro_export]
macro_rules! execute {
    ($target:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $crate::AsExec::as_exec(&mut *$target) {
            $crate::Exec::Sqlite(c) => $crate::sqlx::query($sql)$(.bind($arg))*.execute(c).await.map(|r| r.rows_affected()),
            $crate::Exec::Postgres(c) => $crate::sqlx::query($sql)$(.bind($arg))*.execute(c).await.map(|r| r.rows_affected()),
        }
    };
}

/// Fetches every row as `$row` (a `sqlx::FromRow` type for both backends).
#[macro_export]
macro_rules! fetch_all {
    ($target:expr, $row:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $crate::AsExec::as_exec(&mut *$target) {
            $crate::Exec::Sqlite(c) => $crate::sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.fetch_all(c).await,
            $crate::Exec::Postgres(c) => $crate::sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.fetch_all(c).await,
        }
    };
}

/// Fetches at most one row as `$row`.
#[macro_export]
macro_rules! fetch_optional {
    ($target:expr, $row:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $crate::AsExec::as_exec(&mut *$target) {
            $crate::Exec::Sqlite(c) => $crate::sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.fetch_optional(c).await,
            $crate::Exec::Postgres(c) => $crate::sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.fetch_optional(c).await,
        }
    };
}

/// Fetches exactly one row as `$row`.
#[macro_export]
macro_rules! fetch_one {
    ($target:expr, $row:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $crate::AsExec::as_exec(&mut *$target) {
            $crate::Exec::Sqlite(c) => $crate::sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.fetch_one(c).await,
            $crate::Exec::Postgres(c) => $crate::sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.fetch_one(c).await,
        }
    };
}
