//! The error type of the database crate.

/// What can go wrong while opening or using the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL names no backend this registry speaks.
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// A schema name that is not a plain identifier.
    #[error("invalid PostgreSQL schema name `{0}`")]
    InvalidSchema(String),
    /// The database refused or failed a statement.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
