//! The event vocabulary and the materialised views over the event log.
#![doc = include_str!("../README.md")]

mod apply;
mod dump;
mod error;
mod replay;
pub mod vocab;

pub use apply::{apply, record};
pub use dump::{diff, dump, Difference, FileRow, PackageFileRow, PackageRow, RetentionRow, StorageRow, ViewsDump};
pub use error::Error;
pub use replay::{clear, rebuild, verify, RebuildStats};
pub use vocab::RegistryEvent;
