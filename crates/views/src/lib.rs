//! The event vocabulary and the materialised views over the event log.
#![doc = include_str!("../README.md")]

mod apply;
mod batch;
mod dump;
mod error;
mod fold;
mod history;
pub mod oci;
pub mod queries;
mod replay;
pub mod rows;
mod snapshot;
pub mod vocab;

pub use apply::{apply, record, record_all};
pub use dump::{diff, dump, Difference, ViewsDump};
pub use error::Error;
pub use history::file_subject_events;
pub use replay::{clear, mark_stale, rebuild, rebuild_in_log_order, stale_reason, verify, RebuildStats};
pub use rows::{
    BlobDeletedRow, FileRow, ManifestRefRow, ManifestRow, PackageFileRow, PackageRow, PolicyRow, RetentionRow,
    RetiredRow, StorageRow, TagRow,
};
pub use snapshot::{load, matches_log, rebuild_from, take, Snapshot, SNAPSHOT_FORMAT};
pub use vocab::RegistryEvent;
