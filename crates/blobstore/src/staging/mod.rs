//! Staged uploads: bytes received for an upload session, kept in the store until they are committed at their
//! content address or aborted.
//!
//! On a filesystem store a session's bytes are one file, `staging/<session>`, appended to and renamed into place.
//! Each step on it (open and append, commit) is one trip to a blocking thread: on two cores a request that hops
//! threads a dozen times spends more time waking threads than moving bytes. A long chunk is written by a task of
//! the writer's own, a megabyte or more at a time, while the rest of it arrives; the task starts the disk writing
//! each batch at once (`writeback`), so the one sync that makes the chunk durable waits for its last bytes only.
//! Whoever opens a staged file holds a lock on it until it is closed: a request that was dropped mid-chunk may still
//! be writing its queued bytes, and the next request on the session cuts the file back to its acknowledged length
//! only after that write is over.
//! On S3 they are a multipart upload to `staging/<session>/data`; S3 wants every part but the last to be at least
//! 5 MiB, so a tail shorter than that waits in `staging/<session>/pending-<start>-<len>` until more bytes (or the
//! commit) arrive. Every object a session owns lies under `staging/<session>`, so abort and commit clear that prefix.
//!
//! Its files: `state` (what the caller keeps between requests, and what a commit or a listing answers), `writer` (a
//! request's `StageWriter` on either store, S3's parts included), `file_writer` (a filesystem writer's batches and
//! the task that writes them), `lock` (opening a staged file under its lock, cut to the acknowledged length),
//! `commit` (staged bytes put at their content address, or moved to another session), `reclaim` (abort, and the
//! list of sessions with bytes staged) and `fs` (the filesystem steps they share with the placing thread).

mod commit;
mod file_writer;
mod fs;
mod lock;
mod reclaim;
mod state;
mod writer;

use std::path::PathBuf;

use uuid::Uuid;

use crate::BlobStore;

// The filesystem steps the placing thread (`placement`) takes as well.
pub(crate) use file_writer::write_pending;
pub(crate) use fs::{ensure_dir, remove_if_stored, rename_synced, sync_dir};
pub use state::{Placed, StagedObject, StagingState};
pub use writer::{StageWriter, MIN_PART_SIZE, PART_SIZE};

impl BlobStore {
    fn staging_file(root: &std::path::Path, session: Uuid) -> PathBuf {
        root.join("staging").join(session.to_string())
    }

    fn staging_dir(&self, session: Uuid) -> String {
        format!("staging/{session}")
    }
}
