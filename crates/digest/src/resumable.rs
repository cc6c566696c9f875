//! BLAKE3 and SHA-256 states that can be saved between requests and restored elsewhere.
//!
//! Neither `blake3::Hasher` nor `sha2::Sha256` can be serialised, so both are rebuilt from public pieces:
//! SHA-256 from its block function (`sha2::compress256`) with a partial block and a length, BLAKE3 from the
//! chaining values of complete, aligned subtrees (`blake3::hazmat`) with a short tail of bytes not yet folded in.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt as _, Mode};
use block_buffer::EagerBuffer;
use sha2::digest::generic_array::typenum::U64;

/// BLAKE3's chunk length.
const CHUNK: u64 = 1024;
/// The tail's capacity: bytes are folded into the stack in aligned subtrees of this size (64 chunks) or larger.
pub(crate) const TAIL: usize = 64 * 1024;
/// The stack never holds more entries than a 64-bit chunk count has bits, plus one pending merge.
const MAX_STACK: usize = 65;

/// BLAKE3 over a stream, as a stack of subtree chaining values plus a tail.
///
/// Invariants: the stack covers chunks `0..chunks` as aligned power-of-two subtrees (merged lazily, as BLAKE3's own
/// hasher does); `chunks` is a multiple of 64; the tail holds the bytes after them, at most 64 KiB, and is never
/// empty once any byte has been seen, so the root is only ever computed by `finalize`.
#[derive(Clone, Default)]
pub(crate) struct Blake3State {
    pub(crate) stack: Vec<ChainingValue>,
    pub(crate) chunks: u64,
    pub(crate) tail: Vec<u8>,
}

impl Blake3State {
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.tail.len() == TAIL {
                // More bytes follow, so the full tail is a complete subtree that is not the root.
                let cv = subtree_cv(&self.tail, self.chunks * CHUNK);
                self.push(cv, TAIL as u64 / CHUNK);
                self.tail.clear();
            }
            if self.tail.is_empty() && data.len() > TAIL {
                // Hash the largest aligned subtree that leaves at least one byte behind, straight from the input.
                let offset = self.chunks * CHUNK;
                let available = data.len() as u64 - 1;
                let mut size = 1u64 << (63 - available.leading_zeros());
                if let Some(max) = blake3::hazmat::max_subtree_len(offset) {
                    size = size.min(max);
                }
                let size = size as usize;
                debug_assert!(size >= TAIL && size.is_multiple_of(TAIL));
                let cv = subtree_cv(&data[..size], offset);
                self.push(cv, size as u64 / CHUNK);
                data = &data[size..];
                continue;
            }
            let take = (TAIL - self.tail.len()).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    fn push(&mut self, cv: ChainingValue, chunks: u64) {
        self.merge_down(self.chunks);
        self.stack.push(cv);
        self.chunks += chunks;
    }

    /// Merges the stack down to one entry per set bit of `chunks`.
    fn merge_down(&mut self, chunks: u64) {
        while self.stack.len() > chunks.count_ones() as usize {
            let right = self.stack.pop().expect("the stack has two entries");
            let left = self.stack.pop().expect("the stack has two entries");
            self.stack.push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
    }

    pub(crate) fn finalize(&self) -> [u8; 32] {
        if self.stack.is_empty() {
            return *blake3::hash(&self.tail).as_bytes();
        }
        let mut stack = self.clone();
        stack.merge_down(stack.chunks);
        let mut right = subtree_cv(&stack.tail, stack.chunks * CHUNK);
        while stack.stack.len() > 1 {
            let left = stack.stack.pop().expect("checked above");
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
        let left = stack.stack.pop().expect("the stack is not empty");
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
    }
}

fn subtree_cv(bytes: &[u8], offset: u64) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// SHA-256's initial state.
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// SHA-256 over a stream: the chaining state, a partial block (the buffer `sha2` itself uses, always shorter than a
/// block) and the length.
#[derive(Clone)]
pub(crate) struct Sha256State {
    pub(crate) h: [u32; 8],
    pub(crate) block: EagerBuffer<U64>,
    pub(crate) len: u64,
}

impl Default for Sha256State {
    fn default() -> Self {
        Self { h: SHA256_IV, block: EagerBuffer::default(), len: 0 }
    }
}

impl Sha256State {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        // Whole blocks reach the block function straight from `data`, in one call, never copied: copying them into a
        // batch first halved the speed.
        self.block.digest_blocks(data, |blocks| sha2::compress256(&mut self.h, blocks));
    }

    pub(crate) fn finalize(&self) -> [u8; 32] {
        let (mut h, mut last) = (self.h, self.block.clone());
        last.len64_padding_be(self.len.wrapping_mul(8), |block| sha2::compress256(&mut h, std::slice::from_ref(block)));
        let mut out = [0; 32];
        for (word, bytes) in h.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Why a saved state cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// It does not start with this format's magic and version.
    #[error("not a saved hasher state of a version this build reads")]
    UnknownFormat,
    /// It ends before its fields do.
    #[error("the saved hasher state is truncated")]
    Truncated,
    /// Bytes follow the last field.
    #[error("the saved hasher state has trailing bytes")]
    TrailingBytes,
    /// The fields contradict each other.
    #[error("the saved hasher state is inconsistent: {0}")]
    Inconsistent(&'static str),
}

const MAGIC: &[u8; 4] = b"ASDH";
const VERSION: u8 = 1;

/// Layout (little-endian): magic, version, size u64, SHA-256 words 8×u32, partial block length u8 and bytes,
/// BLAKE3 chunk count u64, stack length u8 and 32-byte values, tail length u32 and bytes.
pub(crate) fn save(size: u64, sha: &Sha256State, b3: &Blake3State) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + sha.block.get_pos() + b3.stack.len() * 32 + b3.tail.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&size.to_le_bytes());
    for word in sha.h {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.push(sha.block.get_pos() as u8);
    out.extend_from_slice(sha.block.get_data());
    out.extend_from_slice(&b3.chunks.to_le_bytes());
    out.push(b3.stack.len() as u8);
    for cv in &b3.stack {
        out.extend_from_slice(cv);
    }
    out.extend_from_slice(&(b3.tail.len() as u32).to_le_bytes());
    out.extend_from_slice(&b3.tail);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }
}

pub(crate) fn restore(bytes: &[u8]) -> Result<(u64, Sha256State, Blake3State), StateError> {
    let mut r = Reader(bytes);
    if r.take(4).map_err(|_| StateError::UnknownFormat)? != MAGIC
        || r.u8().map_err(|_| StateError::UnknownFormat)? != VERSION
    {
        return Err(StateError::UnknownFormat);
    }
    let size = r.u64()?;
    let mut h = [0u32; 8];
    for word in &mut h {
        *word = r.u32()?;
    }
    let block_len = usize::from(r.u8()?);
    if block_len >= 64 {
        return Err(StateError::Inconsistent("a partial SHA-256 block is shorter than 64 bytes"));
    }
    let block = EagerBuffer::new(r.take(block_len)?);
    if size % 64 != block_len as u64 {
        return Err(StateError::Inconsistent("the partial SHA-256 block does not fit the size"));
    }
    let chunks = r.u64()?;
    let stack_len = usize::from(r.u8()?);
    if stack_len > MAX_STACK {
        return Err(StateError::Inconsistent("the BLAKE3 stack is too deep"));
    }
    let mut stack = Vec::with_capacity(stack_len);
    for _ in 0..stack_len {
        stack.push(<[u8; 32]>::try_from(r.take(32)?).expect("32 bytes"));
    }
    let tail_len = r.u32()? as usize;
    if tail_len > TAIL {
        return Err(StateError::Inconsistent("the BLAKE3 tail is too long"));
    }
    let tail = r.take(tail_len)?.to_vec();
    if !r.0.is_empty() {
        return Err(StateError::TrailingBytes);
    }
    if chunks % (TAIL as u64 / CHUNK) != 0 {
        return Err(StateError::Inconsistent("the BLAKE3 stack ends off a subtree boundary"));
    }
    if chunks.checked_mul(CHUNK).and_then(|b| b.checked_add(tail_len as u64)) != Some(size) {
        return Err(StateError::Inconsistent("the BLAKE3 stack and tail do not add up to the size"));
    }
    if (chunks == 0) != stack.is_empty() || stack.len() < chunks.count_ones() as usize || (size > 0 && tail.is_empty())
    {
        return Err(StateError::Inconsistent("the BLAKE3 stack does not match its chunk count"));
    }
    Ok((size, Sha256State { h, block, len: size }, Blake3State { stack, chunks, tail }))
}
