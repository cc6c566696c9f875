//! `DualHasher`: BLAKE3 and SHA-256 over one stream of chunks.

use crate::resumable::{self, Blake3State, Sha256State};
use crate::{Digest, StateError};

/// Chunks at least this long are hashed by BLAKE3 and SHA-256 on two threads at once.
pub const PARALLEL_THRESHOLD: usize = 256 * 1024;

/// The two digests and the length of one byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DualDigest {
    /// The BLAKE3 digest: the content address.
    pub blake3: Digest,
    /// The SHA-256 digest.
    pub sha256: Digest,
    /// The number of bytes hashed.
    pub size: u64,
}

impl DualDigest {
    /// The digests of a byte slice held whole in memory.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = DualHasher::new();
        hasher.update(bytes);
        hasher.finalize()
    }
}

/// A streaming hasher fed once per chunk that yields BLAKE3 and SHA-256 together.
///
/// Its state can be saved (`save`) and restored (`restore`), so a stream hashed in several requests can continue
/// in another process; a saved state is at most about 66 KiB.
#[derive(Clone, Default)]
pub struct DualHasher {
    blake3: Blake3State,
    sha256: Sha256State,
    size: u64,
}

impl std::fmt::Debug for DualHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualHasher").field("size", &self.size).finish_non_exhaustive()
    }
}

impl DualHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the stream to both hash functions.
    pub fn update(&mut self, chunk: &[u8]) {
        self.update_all(&[chunk]);
    }

    /// Feeds the next chunks of the stream, in order, to both hash functions: on two threads at once when together
    /// they are at least `PARALLEL_THRESHOLD` long, however short each one is.
    pub fn update_all<B: AsRef<[u8]> + Sync>(&mut self, chunks: &[B]) {
        let total: usize = chunks.iter().map(|c| c.as_ref().len()).sum();
        if total >= PARALLEL_THRESHOLD {
            let Self { blake3, sha256, .. } = self;
            std::thread::scope(|scope| {
                scope.spawn(|| chunks.iter().for_each(|c| sha256.update(c.as_ref())));
                chunks.iter().for_each(|c| blake3.update(c.as_ref()));
            });
        } else {
            for chunk in chunks {
                self.blake3.update(chunk.as_ref());
                self.sha256.update(chunk.as_ref());
            }
        }
        self.size += total as u64;
    }

    /// How many bytes have been fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of everything fed so far.
    pub fn finalize(self) -> DualDigest {
        DualDigest {
            blake3: Digest::blake3(self.blake3.finalize()),
            sha256: Digest::sha256(self.sha256.finalize()),
            size: self.size,
        }
    }

    /// The complete state, in a compact versioned binary form.
    pub fn save(&self) -> Vec<u8> {
        resumable::save(self.size, &self.sha256, &self.blake3)
    }

    /// A hasher continuing from a saved state; anything malformed is refused, never trusted.
    pub fn restore(state: &[u8]) -> Result<DualHasher, StateError> {
        let (size, sha256, blake3) = resumable::restore(state)?;
        Ok(DualHasher { blake3, sha256, size })
    }
}
