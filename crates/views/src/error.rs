//! The error type of the views.

/// What can go wrong while applying events or comparing views.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] artifactstore_eventlog::Error),
    /// The database failed a statement.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// An event's payload does not match its type's schema.
    #[error("event {sequence} ({event_type}) has a payload that does not fit its type: {reason}")]
    BadPayload {
        /// The event's sequence (0 before it is appended).
        sequence: u64,
        /// The event's type.
        event_type: String,
        /// What is wrong.
        reason: String,
    },
    /// An event names a subject the views do not hold.
    #[error("event {sequence} ({event_type}) names a subject the views do not hold: {subject}")]
    MissingSubject {
        /// The event's sequence.
        sequence: u64,
        /// The event's type.
        event_type: String,
        /// The subject that was looked for.
        subject: String,
    },
    /// A snapshot cannot be read or does not fit this log.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A replay's temporary files (records spilled from memory) could not be written or read.
    #[error("replay's temporary files: {0}")]
    Spill(String),
}

impl Error {
    /// Whether the database refused a statement (a constraint, a type, a conflict), which then undid whatever it
    /// had changed: the transaction it ran in holds nothing of it and may go on.
    ///
    /// Any other failure of a statement (its answer lost, the connection gone, the transaction ended) may have left
    /// changes behind.
    pub fn is_refused(&self) -> bool {
        match self {
            Error::Database(err) => matches!(err, sqlx::Error::Database(_)),
            Error::Log(err) => err.is_refused(),
            _ => false,
        }
    }
}
