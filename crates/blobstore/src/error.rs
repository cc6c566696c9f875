//! Errors of the blob store.

/// What can go wrong storing or reading blobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL cannot be used.
    #[error("store URL `{url}` cannot be used: {why}")]
    BadLocation {
        /// The URL as given.
        url: String,
        /// Why not.
        why: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The local filesystem failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A staged upload's bookkeeping does not fit this store.
    #[error("staged upload {session}: {why}")]
    Staging {
        /// The upload session.
        session: uuid::Uuid,
        /// What is wrong.
        why: String,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    NotFound(String),
    /// Another request (one that was dropped, its last writes still running) holds the session's staged bytes, or
    /// moved them between their opening and their locking.
    #[error("staged upload {session}: another request still holds its staged bytes")]
    Busy {
        /// The upload session.
        session: uuid::Uuid,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
