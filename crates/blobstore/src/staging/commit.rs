//! Staged bytes put at their content address (`stage_commit`; `commit_writer` also ends a writer's chunk in the same
//! step), or made another session's (`stage_move`). On a filesystem the staged file reaches its address in a round
//! of the store's placing thread (`placement`); on S3 the multipart upload is completed and copied into place.

use std::path::PathBuf;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{ObjectStore, PutPayload};
use uuid::Uuid;

use super::fs::blocking;
use super::lock::{open_cut, patiently};
use super::writer::{StageWriter, WriterKind};
use super::{ensure_dir, remove_if_stored, rename_synced, write_pending, Placed, StagingState};
use crate::placement::Placer;
use crate::store::Backend;
use crate::{BlobStore, Error};

/// A blob's only chunk up to this long is written by the placing thread in the round that places it (`placement`);
/// a longer one is written on a blocking thread of its own first, so that rounds stay short.
const PLACER_WRITES: usize = 64 * 1024;

/// The BLAKE3 digest of no bytes at all.
const EMPTY_BLAKE3: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

impl BlobStore {
    /// Puts the session's first `size` staged bytes, its acknowledged length, at the blob's content address (unless
    /// the store holds it already), durably, and clears the session's staging. Bytes a broken request staged beyond
    /// `size` are cut off, never stored.
    pub async fn stage_commit(
        &self,
        session: Uuid,
        state: &StagingState,
        blake3_hex: &str,
        size: u64,
    ) -> Result<Placed, Error> {
        let blob_key = BlobStore::blob_key(blake3_hex);
        if let (Backend::File { root, placer, .. }, StagingState::File) = (&self.backend, state) {
            let (from, to) = (Self::staging_file(root, session), root.join(&blob_key));
            let empty = blake3_hex == EMPTY_BLAKE3;
            let ready = patiently(|| {
                let (from, to) = (from.clone(), to.clone());
                blocking(move || prepare_file(session, &from, &to, empty, size))
            })
            .await?;
            return complete(placer, ready, from, to).await;
        }
        if self.size_of(blake3_hex).await?.is_some() {
            self.stage_abort(session, state).await?;
            return Ok(Placed::AlreadyStored);
        }
        match (&self.backend, state) {
            (Backend::S3 { store, .. }, StagingState::S3 { upload_id, parts, pending_start, pending_len }) => {
                let dir = self.staging_dir(session);
                let data = self.key(&format!("{dir}/data"));
                let pending = if *pending_len > 0 {
                    let key = self.key(&format!("{dir}/pending-{pending_start}-{pending_len}"));
                    store.get(&key).await?.bytes().await?
                } else {
                    Bytes::new()
                };
                let target = self.key(&blob_key);
                if parts.is_empty() {
                    // Shorter than one part: a plain PUT.
                    store.put(&target, PutPayload::from(pending)).await?;
                    self.stage_abort(session, state).await?;
                    return Ok(Placed::Stored);
                }
                // A retried commit may find the multipart upload already completed.
                let completed = match store.head(&data).await {
                    Ok(_) => true,
                    Err(object_store::Error::NotFound { .. }) => false,
                    Err(err) => return Err(err.into()),
                };
                if !completed {
                    let mut ids: Vec<PartId> = parts.iter().map(|etag| PartId { content_id: etag.clone() }).collect();
                    if !pending.is_empty() {
                        ids.push(store.put_part(&data, upload_id, parts.len(), PutPayload::from(pending)).await?);
                    }
                    store.complete_multipart(&data, upload_id, ids).await?;
                }
                store.copy(&data, &target).await?;
                self.clear_prefix(&dir).await?;
                Ok(Placed::Stored)
            }
            _ => Err(Error::Staging { session, why: "the session was staged on another kind of store".into() }),
        }
    }

    /// Ends a writer's chunk and puts everything the session staged, that chunk included, at the blob's content
    /// address: `finish` and `stage_commit` in one. On a filesystem it is one round of the store's placing thread
    /// (`placement`), which also writes a small blob's only chunk; a longer last chunk is written on a blocking thread
    /// first. A blob the store holds already costs no write of the bytes still pending (those of a long chunk already
    /// handed to the writer's task are written by then).
    pub async fn commit_writer(&self, mut writer: StageWriter, blake3_hex: &str) -> Result<Placed, Error> {
        writer.drain().await?;
        let (session, start) = (writer.session, writer.start);
        let (root, placer, (path, opened, pending, pending_len)) = match (&self.backend, writer.kind) {
            (Backend::File { root, placer, .. }, WriterKind::File { path, file, pending, pending_len, .. }) => {
                (root.clone(), placer, (path, file, pending, pending_len))
            }
            (_, kind) => {
                let size = writer.start + writer.written;
                let state = StageWriter { kind, ..writer }.finish(false).await?;
                return self.stage_commit(session, &state, blake3_hex, size).await;
            }
        };
        let to = root.join(BlobStore::blob_key(blake3_hex));
        let (mut opened, pending) = (opened, std::sync::Arc::new(pending));
        if opened.is_none() && start == 0 && pending_len <= PLACER_WRITES {
            // A small blob's only chunk: the placing thread writes it in its next round.
            match placer.write_and_place(session, path.clone(), pending.clone(), to.clone()).await {
                Err(Error::Busy { .. }) => {} // A dropped request still holds the file: wait for it below.
                placed => return placed,
            }
        }
        let ready = patiently(|| {
            // Only a writer that has not opened its file yet can find it busy, so a retry has no file to pass on.
            let (path, to, opened, pending) = (path.clone(), to.clone(), opened.take(), pending.clone());
            blocking(move || {
                if remove_if_stored(&path, &to)? {
                    return Ok(Ready::Stored);
                }
                Ok(Ready::File(write_pending(session, &path, start, opened, &pending)?))
            })
        })
        .await?;
        complete(placer, ready, path, to).await
    }

    /// Makes the bytes staged under `from` (a filesystem staging of one request's own) the staged bytes of session
    /// `to`, durably, replacing whatever `to` had staged.
    pub async fn stage_move(&self, from: Uuid, to: Uuid) -> Result<(), Error> {
        let Backend::File { root, .. } = &self.backend else {
            return Err(Error::Staging { session: to, why: "only a filesystem staging can be moved".into() });
        };
        let (source, target) = (Self::staging_file(root, from), Self::staging_file(root, to));
        blocking(move || move_durably(to, &source, &target, None)).await
    }
}

/// What a placement's trip to a blocking thread found.
enum Ready {
    /// The store holds the blob already; the staged file is gone.
    Stored,
    /// The staged file, written and cut to the session's length, open and locked, to be renamed into place.
    File(std::fs::File),
}

/// Readies a staged file to be moved to its content address (`complete` moves it); when the store holds the blob
/// already the staged file is dropped instead.
fn prepare_file(
    session: Uuid,
    from: &std::path::Path,
    to: &std::path::Path,
    empty: bool,
    size: u64,
) -> Result<Ready, Error> {
    if remove_if_stored(from, to)? {
        return Ok(Ready::Stored);
    }
    // A session that never received a byte has no staged file; only the empty blob has its address.
    if empty && !from.exists() {
        ensure_dir(from.parent().expect("a staging file has a directory"))?;
        std::fs::File::create(from).map_err(Error::io(format!("create {}", from.display())))?;
    }
    open_cut(session, from, Some(size)).map(Ready::File)
}

/// Puts a readied staged file at its address with the placing thread's next round, or when the store held the blob
/// already waits for that round to make its name durable (the request that renamed it may not have synced yet):
/// either way the blob is durable at its address once this returns.
async fn complete(placer: &Placer, ready: Ready, from: PathBuf, to: PathBuf) -> Result<Placed, Error> {
    match ready {
        Ready::Stored => {
            placer.settle(to).await?;
            Ok(Placed::AlreadyStored)
        }
        Ready::File(file) => placer.place(file, from, to).await,
    }
}

/// Renames a staged file to `to` durably: its bytes are synced before the rename and `to`'s directory after it.
/// With `size`, the session's acknowledged length, the file is locked and cut to it first.
fn move_durably(session: Uuid, from: &std::path::Path, to: &std::path::Path, size: Option<u64>) -> Result<(), Error> {
    rename_synced(open_cut(session, from, size)?, from, to)
}
