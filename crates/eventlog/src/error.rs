//! The error type of the event log.

use std::sync::Arc;

/// What can go wrong while appending to or reading the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed a statement.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// An event type that is not a lowercase, dotted `v1.*` name.
    #[error("invalid event type `{0}`: expected a lowercase dotted name starting with `v1.`")]
    InvalidEventType(String),
    /// An actor that is empty or too long.
    #[error("invalid actor: it must be 1 to 256 bytes")]
    InvalidActor,
    /// A payload that is not canonical CBOR.
    #[error("event payload is not canonical CBOR: {0}")]
    NonCanonicalPayload(#[from] artifactstore_cbor::DecodeError),
    /// The stored log does not have the shape this code expects.
    #[error("event log is corrupt: {0}")]
    Corrupt(String),
    /// The transaction that carried this unit of work failed as a whole.
    #[error("the write transaction failed: {0}")]
    Batch(Arc<Error>),
    /// A unit of work panicked; its changes were rolled back.
    #[error("a unit of work panicked; its changes were rolled back")]
    WorkPanicked,
    /// The log's committer has stopped (the process is shutting down).
    #[error("the event log is closed")]
    Closed,
}

impl Error {
    /// Whether the database refused a statement (a constraint, a type, a conflict), which then undid whatever it
    /// had changed: the transaction it ran in holds nothing of it and may go on.
    ///
    /// Any other failure of a statement (its answer lost, the connection gone, the transaction ended) may have left
    /// changes behind.
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(_)))
    }
}
