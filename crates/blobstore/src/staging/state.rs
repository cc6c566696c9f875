//! What a session's staging looks like from outside: the state its caller keeps between requests (as JSON in the
//! session's row), what a commit did with the bytes, and the staged objects found when reclaiming orphans.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// Where a session's bytes are, as its bookkeeping records it between requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StagingState {
    /// One file in the store's `staging` directory.
    File,
    /// An S3 multipart upload plus a short pending tail.
    S3 {
        /// The multipart upload's id.
        upload_id: String,
        /// The ETags of the parts acknowledged so far, in order.
        parts: Vec<String>,
        /// The offset at which the pending tail starts.
        pending_start: u64,
        /// The length of the pending tail (0: none).
        pending_len: u64,
    },
}

impl StagingState {
    /// The state as stored in the session's row.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a staging state always serialises")
    }

    /// Reads the state back from the session's row.
    pub fn from_json(session: Uuid, text: &str) -> Result<StagingState, Error> {
        serde_json::from_str(text).map_err(|err| Error::Staging { session, why: format!("unreadable state: {err}") })
    }
}

/// What a commit did with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The blob is now at its content address.
    Stored,
    /// The store already held the blob; the staged bytes were dropped.
    AlreadyStored,
}

/// A staged object found in the store, for reclaiming what no session owns any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedObject {
    /// The session it belongs to.
    pub session: Uuid,
    /// When it was last written.
    pub modified: SystemTime,
}
