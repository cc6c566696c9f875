//! Content-addressed blob storage on `object_store`: the local filesystem by default, any S3-compatible service
//! at scale, and the staging of resumable uploads.
#![doc = include_str!("../README.md")]

mod error;
mod location;
mod placement;
mod staging;
mod store;
mod writeback;

pub use error::Error;
pub use location::Location;
pub use placement::PlacementStats;
pub use staging::{Placed, StageWriter, StagedObject, StagingState, MIN_PART_SIZE, PART_SIZE};
pub use store::{BlobStore, ByteStream};
pub use writeback::forget as forget_cached;
