//! Dual BLAKE3 + SHA-256 digests for content addressing.
#![doc = include_str!("../README.md")]

mod digest;
mod hasher;
mod pipeline;
mod resumable;

pub use digest::{Algorithm, Digest, ParseDigestError};
pub use hasher::{DualDigest, DualHasher, PARALLEL_THRESHOLD};
pub use pipeline::{Pipeline, PipelineError, PIPELINE_BATCH};
pub use resumable::StateError;
