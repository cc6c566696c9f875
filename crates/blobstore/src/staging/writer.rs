//! A request's writer, `StageWriter`: opened on either store at the session's acknowledged length, appended to,
//! and finished into the session's new `StagingState`. On S3 it sends a part each time `PART_SIZE` bytes are
//! buffered and keeps a shorter tail as the session's pending object; on a filesystem it hands its bytes to a task
//! of its own (`file_writer`).

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use uuid::Uuid;

use super::file_writer::{Flight, FILE_BATCH};
use super::lock::open_patiently;
use super::StagingState;
use crate::store::Backend;
use crate::{BlobStore, Error};

/// S3 parts are sent once this much is buffered.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's smallest part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Appends one request's bytes to a session's staged upload; nothing counts until `finish` returns.
#[derive(Debug)]
pub struct StageWriter {
    pub(super) session: Uuid,
    /// The session's acknowledged length, where this writer starts.
    pub(super) start: u64,
    pub(super) written: u64,
    pub(super) kind: WriterKind,
}

#[derive(Debug)]
pub(super) enum WriterKind {
    File {
        path: PathBuf,
        /// The file, once the first bytes went out (it is opened then, on the same blocking thread).
        file: Option<std::fs::File>,
        /// Bytes received and not yet written.
        pending: Vec<Bytes>,
        /// How many bytes `pending` holds.
        pending_len: usize,
        /// The task writing and syncing earlier bytes, which holds the file meanwhile.
        flight: Option<Flight>,
    },
    S3 {
        store: std::sync::Arc<object_store::aws::AmazonS3>,
        data: Path,
        /// The full key of the session's staging prefix.
        dir: String,
        upload_id: String,
        parts: Vec<String>,
        /// Offset of the first buffered byte.
        buffer_start: u64,
        buffer: BytesMut,
    },
}

impl BlobStore {
    /// Starts staging for a new session.
    pub async fn stage_open(&self, session: Uuid) -> Result<StagingState, Error> {
        match &self.backend {
            // The file (and the staging directory, the first time) is created by the first chunk's writer.
            Backend::File { .. } => Ok(StagingState::File),
            Backend::S3 { store, .. } => {
                let data = self.key(&format!("{}/data", self.staging_dir(session)));
                let upload_id = store.create_multipart(&data).await?;
                Ok(StagingState::S3 { upload_id, parts: Vec::new(), pending_start: 0, pending_len: 0 })
            }
        }
    }

    /// Opens a writer that appends at `offset`, the session's acknowledged length; anything staged beyond it by an
    /// earlier request that did not finish is overwritten.
    pub async fn stage_writer(&self, session: Uuid, state: &StagingState, offset: u64) -> Result<StageWriter, Error> {
        let kind = match (&self.backend, state) {
            (Backend::File { root, .. }, StagingState::File) => {
                let path = Self::staging_file(root, session);
                // A session past offset 0 must have its staged bytes: find out before the body is read. The first
                // chunk's file is created with its first write.
                let file = match offset {
                    0 => None,
                    _ => Some(open_patiently(session, &path, offset).await?),
                };
                WriterKind::File { path, file, pending: Vec::new(), pending_len: 0, flight: None }
            }
            (Backend::S3 { store, .. }, StagingState::S3 { upload_id, parts, pending_start, pending_len }) => {
                let dir = self.staging_dir(session);
                let mut buffer = BytesMut::new();
                if *pending_len > 0 {
                    let key = self.key(&format!("{dir}/pending-{pending_start}-{pending_len}"));
                    let bytes = store.get(&key).await?.bytes().await?;
                    if bytes.len() as u64 != *pending_len {
                        return Err(Error::Staging {
                            session,
                            why: format!("the pending tail holds {} bytes, not {pending_len}", bytes.len()),
                        });
                    }
                    buffer.extend_from_slice(&bytes);
                }
                if pending_start + pending_len != offset {
                    return Err(Error::Staging {
                        session,
                        why: format!("staged {} bytes but {offset} were acknowledged", pending_start + pending_len),
                    });
                }
                WriterKind::S3 {
                    store: store.clone(),
                    data: self.key(&format!("{dir}/data")),
                    dir: self.key(&dir).to_string(),
                    upload_id: upload_id.clone(),
                    parts: parts.clone(),
                    buffer_start: *pending_start,
                    buffer,
                }
            }
            _ => return Err(Error::Staging { session, why: "the session was staged on another kind of store".into() }),
        };
        Ok(StageWriter { session, start: offset, written: 0, kind })
    }
}

impl StageWriter {
    /// The session this writer appends to.
    pub fn session(&self) -> Uuid {
        self.session
    }

    /// Bytes written by this writer so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk`.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        self.written += chunk.len() as u64;
        match &mut self.kind {
            WriterKind::File { pending, pending_len, .. } => {
                *pending_len += chunk.len();
                pending.push(chunk);
                if *pending_len >= FILE_BATCH {
                    self.send_pending().await?;
                }
                Ok(())
            }
            WriterKind::S3 { buffer, .. } => {
                buffer.extend_from_slice(&chunk);
                if buffer.len() >= PART_SIZE {
                    self.flush_part().await?;
                }
                Ok(())
            }
        }
    }

    async fn flush_part(&mut self) -> Result<(), Error> {
        if let WriterKind::S3 { store, data, upload_id, parts, buffer_start, buffer, .. } = &mut self.kind {
            let part = buffer.split().freeze();
            let len = part.len() as u64;
            let id = store.put_part(data, upload_id, parts.len(), PutPayload::from(part)).await?;
            parts.push(id.content_id);
            *buffer_start += len;
        }
        Ok(())
    }

    /// Ends the chunk and returns the session's new staging state; with `durable`, everything written survives a
    /// crash once this returns (a chunk that is committed at once needs no sync of its own: `stage_commit` syncs).
    pub async fn finish(mut self, durable: bool) -> Result<StagingState, Error> {
        if let WriterKind::S3 { buffer, .. } = &self.kind {
            if buffer.len() >= MIN_PART_SIZE {
                self.flush_part().await?;
            }
        }
        match self.kind {
            WriterKind::File { .. } => {
                // Closing the file (when `self` drops at the end of this arm) is cheap: nothing is buffered.
                self.flush_file(durable).await?;
                Ok(StagingState::File)
            }
            WriterKind::S3 { store, dir, upload_id, parts, buffer_start, buffer, .. } => {
                let pending_len = buffer.len() as u64;
                if pending_len > 0 {
                    let key = Path::from(format!("{dir}/pending-{buffer_start}-{pending_len}"));
                    store.put(&key, PutPayload::from(buffer.freeze())).await?;
                }
                Ok(StagingState::S3 { upload_id, parts, pending_start: buffer_start, pending_len })
            }
        }
    }
}
