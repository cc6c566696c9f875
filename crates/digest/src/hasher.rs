//! `DualHasher`: BLAKE3 and SHA-256 over one stream of chunks.

use sha2::Digest as _;

use crate::Digest;

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
#[derive(Clone, Default)]
pub struct DualHasher {
    blake3: blake3::Hasher,
    sha256: sha2::Sha256,
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
        if chunk.len() >= PARALLEL_THRESHOLD {
            let Self { blake3, sha256, .. } = self;
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    sha256.update(chunk);
                });
                blake3.update(chunk);
            });
        } else {
            self.blake3.update(chunk);
            self.sha256.update(chunk);
        }
        self.size += chunk.len() as u64;
    }

    /// How many bytes have been fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digests of everything fed so far.
    pub fn finalize(self) -> DualDigest {
        DualDigest {
            blake3: Digest::blake3(*self.blake3.finalize().as_bytes()),
            sha256: Digest::sha256(self.sha256.finalize().into()),
            size: self.size,
        }
    }
}
