//! Receiving a chunk: its body streamed into the session's staging and both hashers at once.

use artifactstore_blobstore::{BlobStore, Placed, StageWriter, StagingState};
use artifactstore_digest::{DualDigest, DualHasher, Pipeline};
use axum::body::Body;
use futures::StreamExt;
use uuid::Uuid;

use super::session::{ChunkStart, Session};
use super::Uploads;
use crate::api::broken_body;
use crate::problem::ApiError;

/// A chunk as a request brings it: where it says it starts, and its body.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) start: ChunkStart,
    pub(crate) body: Body,
}

/// A chunk streamed into staging, whose last frames may still be being hashed and written; not yet ended.
#[derive(Debug)]
pub(crate) struct Received {
    /// The session's length with the chunk.
    offset: u64,
    expires_ms: i64,
    hashing: Pipeline,
    /// The session's staging before the chunk.
    staging: StagingState,
    /// Holds the chunk's bytes; `None` when it carried none.
    writer: Option<StageWriter>,
}

/// A session's state after a chunk was staged and ended, for its row to record.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) offset: u64,
    pub(crate) expires_ms: i64,
    pub(crate) hasher: DualHasher,
    pub(crate) staging: StagingState,
}

impl Uploads {
    /// Streams the chunk's body into the staging `id` and the hashers of `row` at the chunk's start; the caller ends the
    /// chunk, to save it (`Received::finish`) or to commit (`Received::digest`, then `Received::place`).
    pub(crate) async fn receive(&self, row: &Session, id: Uuid, incoming: Incoming) -> Result<Received, ApiError> {
        let Incoming { start, body } = incoming;
        let limits = self.limits();
        let current = row.offset();
        row.check_chunk_start(limits, &start)?;
        let ceiling = row.ceiling(limits);
        let staging = StagingState::from_json(id, &row.staging)?;
        let mut hashing = Pipeline::new(DualHasher::restore(&row.hasher).map_err(|err| ApiError::internal(&err))?);
        let mut writer = None;
        let mut stream = body.into_data_stream();
        let mut received: u64 = 0;
        while let Some(frame) = stream.next().await {
            let frame = frame.map_err(|err| broken_body(&err))?;
            if frame.is_empty() {
                continue;
            }
            received += frame.len() as u64;
            if received > limits.max_chunk_bytes {
                return Err(ApiError::too_large(format!("a chunk may carry at most {} bytes", limits.max_chunk_bytes)));
            }
            if current + received > ceiling {
                return Err(row.too_big(limits));
            }
            if writer.is_none() {
                writer = Some(self.blobs().stage_writer(id, &staging, current).await?);
            }
            hashing.update(frame.clone()).await;
            writer.as_mut().expect("opened above").write(frame).await?;
        }
        // A bare session's row never expires before its id (whose time another instance's clock gave), so the
        // sweeper, which deletes rows without closed marks, cannot let the id open again.
        let expires_ms = (super::now_ms() + self.idle_ms()).max(row.bare_until_ms.unwrap_or(i64::MIN));
        Ok(Received { offset: current + received, expires_ms, hashing, staging, writer })
    }
}

impl Received {
    /// Whether the chunk carried bytes.
    pub(crate) fn has_bytes(&self) -> bool {
        self.writer.is_some()
    }

    /// The digests of the session's bytes with the chunk, once the hashing has taken in its last frames: a commit
    /// needs them before it places the bytes.
    pub(crate) async fn digest(&mut self) -> Result<DualDigest, ApiError> {
        let hasher = self.hashing.settle().await.map_err(|err| ApiError::internal(&err))?;
        Ok(hasher.clone().finalize())
    }

    /// Ends the chunk (with `durable`, it survives a crash once this returns) for the session row to record: the
    /// hashing of its last frames and the sync of its bytes at once, where one after the other would leave the disk
    /// idle while the hashing finishes.
    pub(crate) async fn finish(self, durable: bool) -> Result<Chunk, ApiError> {
        let Received { offset, expires_ms, hashing, staging, writer } = self;
        let hashed = async move { hashing.finish().await.map_err(|err| ApiError::internal(&err)) };
        let ended = async move {
            match writer {
                Some(writer) => Ok::<_, ApiError>(writer.finish(durable).await?),
                None => Ok(staging),
            }
        };
        let (hasher, staging) = tokio::try_join!(hashed, ended)?;
        Ok(Chunk { offset, expires_ms, hasher, staging })
    }

    /// Ends the chunk and puts everything staged under `id` at the blob's content address, durably (unless the
    /// store holds it already): bytes first, so a blob is durable at its address before the event that names it
    /// commits. On a filesystem the rename and its syncs are a round of the store's placing thread, shared with
    /// every placement queued meanwhile (ADR 0020).
    pub(crate) async fn place(self, store: &BlobStore, id: Uuid, computed: &DualDigest) -> Result<Placed, ApiError> {
        let blake3_hex = computed.blake3.hex();
        Ok(match self.writer {
            Some(writer) => store.commit_writer(writer, &blake3_hex).await?,
            None => store.stage_commit(id, &self.staging, &blake3_hex, computed.size).await?,
        })
    }
}
