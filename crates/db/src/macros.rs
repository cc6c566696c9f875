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

/// Executes a statement whose argument list is built from `$items`: `$sql` is the text for a backend
/// (`|backend| ...`, for backend-specific placeholders), and `|$query, $item| ...` binds one item's arguments.
/// Evaluates to `Result<u64, sqlx::Error>` (rows affected).
#[macro_export]
macro_rules! execute_each {
    ($target:expr, $sql:expr, $items:expr, |$query:ident, $item:pat_param| $bind:expr $(,)?) => {
        match $crate::AsExec::as_exec(&mut *$target) {
            $crate::Exec::Sqlite(c) => {
                let sql = ($sql)($crate::Backend::Sqlite);
                $items
                    .into_iter()
                    .fold($crate::sqlx::query(&sql), |$query, $item| $bind)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            }
            $crate::Exec::Postgres(c) => {
                let sql = ($sql)($crate::Backend::Postgres);
                $items
                    .into_iter()
                    .fold($crate::sqlx::query(&sql), |$query, $item| $bind)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            }
        }
    };
}

/// Fetches every row as `$row` of a statement whose argument list is built from `$items`, as `execute_each!`.
#[macro_export]
macro_rules! fetch_all_each {
    ($target:expr, $row:ty, $sql:expr, $items:expr, |$query:ident, $item:pat_param| $bind:expr $(,)?) => {
        match $crate::AsExec::as_exec(&mut *$target) {
            $crate::Exec::Sqlite(c) => {
                let sql = ($sql)($crate::Backend::Sqlite);
                $items
                    .into_iter()
                    .fold($crate::sqlx::query_as::<_, $row>(&sql), |$query, $item| $bind)
                    .fetch_all(c)
                    .await
            }
            $crate::Exec::Postgres(c) => {
                let sql = ($sql)($crate::Backend::Postgres);
                $items
                    .into_iter()
                    .fold($crate::sqlx::query_as::<_, $row>(&sql), |$query, $item| $bind)
                    .fetch_all(c)
                    .await
            }
        }
    };
}
