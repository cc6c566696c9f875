//! Staged uploads: bytes received for an upload session, kept in the store until they are committed at their
//! content address or aborted.
//!
//! On a filesystem store a session's bytes are one file, `staging/<session>`, appended to and renamed into place.
//! Each step on it (open and append, commit) is one trip to a blocking thread: on two cores a request that hops
//! threads a dozen times spends more time waking threads than moving bytes. A long chunk is written by a task of
//! the writer's own, a megabyte or more at a time, while the rest of it arrives; the task starts the disk writing
//! each batch at once (`writeback`), so the one sync that makes the chunk durable waits for its last bytes only.
//! Whoever opens a staged file holds a lock on it until it is closed: a request that was dropped mid-chunk may still
//! be writing its queued bytes, and the next request on the session cuts the file back to its acknowledged length
//! only after that write is over.
//! On S3 they are a multipart upload to `staging/<session>/data`; S3 wants every part but the last to be at least
//! 5 MiB, so a tail shorter than that waits in `staging/<session>/pending-<start>-<len>` until more bytes (or the
//! commit) arrive. Every object a session owns lies under `staging/<session>`, so abort and commit clear that prefix.

use std::path::PathBuf;
use std::time::SystemTime;

use std::io::{Seek, Write};

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::placement::Placer;
use crate::store::Backend;
use crate::{writeback, BlobStore, Error};

/// S3 parts are sent once this much is buffered.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's smallest part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// A filesystem writer hands its bytes to a task of its own, which writes them and starts their writeback while
/// more arrive, in batches of this many bytes (a chunk shorter than that is written in one call at its end)...
const FILE_BATCH: usize = 1024 * 1024;
/// ... of which at most this many wait for that task...
const FILE_QUEUE: usize = 8;
/// ... and which leaves at most this many bytes written but not yet on the disk before it waits for the oldest: the
/// most dirty memory one upload holds, and the most the sync at the chunk's end waits for.
const WRITEBACK_WINDOW: u64 = 16 * 1024 * 1024;
/// A blob's only chunk up to this long is written by the placing thread in the round that places it (`placement`);
/// a longer one is written on a blocking thread of its own first, so that rounds stay short.
const PLACER_WRITES: usize = 64 * 1024;
/// How long a request waits for the staged file while another holds it (a dropped request's last batches still
/// being written) before it gives up.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a session's bytes are, as its bookkeeping records it between requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StagingState {
    /// One file in the store's `staging` directory.
    File,
    /// An S3 multipart upload plus a short pending tail.
    S3 {
        /// The multipart upload's id.
        upload_id: String,
        /// The ETags of the parts acknowledged so far, in order.
        parts: Vec<String>,
        /// The offset at which the pending tail starts.
        pending_start: u64,
        /// The length of the pending tail (0: none).
        pending_len: u64,
    },
}

impl StagingState {
    /// The state as stored in the session's row.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a staging state always serialises")
    }

    /// Reads the state back from the session's row.
    pub fn from_json(session: Uuid, text: &str) -> Result<StagingState, Error> {
        serde_json::from_str(text).map_err(|err| Error::Staging { session, why: format!("unreadable state: {err}") })
    }
}

/// What a commit did with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The blob is now at its content address.
    Stored,
    /// The store already held the blob; the staged bytes were dropped.
    AlreadyStored,
}

/// A staged object found in the store, for reclaiming what no session owns any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedObject {
    /// The session it belongs to.
    pub session: Uuid,
    /// When it was last written.
    pub modified: SystemTime,
}

/// Appends one request's bytes to a session's staged upload; nothing counts until `finish` returns.
#[derive(Debug)]
pub struct StageWriter {
    session: Uuid,
    /// The session's acknowledged length, where this writer starts.
    start: u64,
    written: u64,
    kind: WriterKind,
}

#[derive(Debug)]
enum WriterKind {
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

/// A writer's own task (`write_behind`) and the queue of batches it writes.
#[derive(Debug)]
struct Flight {
    batches: tokio::sync::mpsc::Sender<Vec<Bytes>>,
    done: tokio::task::JoinHandle<Result<std::fs::File, Error>>,
}

/// The BLAKE3 digest of no bytes at all.
const EMPTY_BLAKE3: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

impl BlobStore {
    fn staging_file(root: &std::path::Path, session: Uuid) -> PathBuf {
        root.join("staging").join(session.to_string())
    }

    fn staging_dir(&self, session: Uuid) -> String {
        format!("staging/{session}")
    }

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

    /// Frees everything staged for a session; aborting twice, or a session with nothing staged, succeeds.
    pub async fn stage_abort(&self, session: Uuid, state: &StagingState) -> Result<(), Error> {
        match &self.backend {
            Backend::File { root, .. } => {
                let path = Self::staging_file(root, session);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(Error::Io { what: format!("remove {}", path.display()), source: err }),
                }
            }
            Backend::S3 { store, .. } => {
                let dir = self.staging_dir(session);
                if let StagingState::S3 { upload_id, .. } = state {
                    let data = self.key(&format!("{dir}/data"));
                    if let Err(err) = store.abort_multipart(&data, upload_id).await {
                        tracing::debug!(%session, error = %err, "aborting the multipart upload failed; it may be gone");
                    }
                }
                self.clear_prefix(&dir).await
            }
        }
    }

    async fn clear_prefix(&self, dir: &str) -> Result<(), Error> {
        let store = self.objects();
        let prefix = self.key(dir);
        let keys: Vec<Path> = store.list(Some(&prefix)).map_ok(|meta| meta.location).try_collect().await?;
        for key in keys {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Every session that has bytes staged, with when they were last written, for reclaiming orphans.
    pub async fn staged(&self) -> Result<Vec<StagedObject>, Error> {
        let mut found: Vec<StagedObject> = Vec::new();
        match &self.backend {
            Backend::File { root, .. } => {
                let dir = root.join("staging");
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(entries) => entries,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
                    Err(err) => return Err(Error::Io { what: format!("list {}", dir.display()), source: err }),
                };
                while let Some(entry) = entries.next_entry().await.map_err(Error::io("list the staging directory"))? {
                    let Some(session) = entry.file_name().to_str().and_then(|n| Uuid::parse_str(n).ok()) else {
                        continue;
                    };
                    let modified = entry
                        .metadata()
                        .await
                        .and_then(|m| m.modified())
                        .map_err(Error::io("inspect a staged file"))?;
                    found.push(StagedObject { session, modified });
                }
            }
            Backend::S3 { store, .. } => {
                let prefix = self.key("staging");
                let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
                for meta in metas {
                    let mut parts = meta.location.parts();
                    let Some(session) = parts
                        .find_map(|p| Uuid::parse_str(p.as_ref()).ok())
                        .filter(|_| meta.location.as_ref().contains("staging/"))
                    else {
                        continue;
                    };
                    let modified = SystemTime::from(meta.last_modified);
                    match found.iter_mut().find(|f| f.session == session) {
                        Some(f) => f.modified = f.modified.max(modified),
                        None => found.push(StagedObject { session, modified }),
                    }
                }
            }
        }
        Ok(found)
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

    /// Queues the pending bytes for the writer's task, starting it (and handing it the file) the first time. The
    /// task writes whatever is queued and starts the disk writing it, again and again, so the disk works while the
    /// rest of the chunk arrives, and the sync that makes the chunk durable waits for its last bytes only.
    async fn send_pending(&mut self) -> Result<(), Error> {
        let (session, start) = (self.session, self.start);
        let WriterKind::File { path, file, pending, pending_len, flight } = &mut self.kind else {
            return Ok(());
        };
        let batch = std::mem::take(pending);
        *pending_len = 0;
        if flight.is_none() {
            // The file is opened (and cut) while the request is alive, never by a task that outlives it.
            let opened = match file.take() {
                Some(opened) => opened,
                None => open_patiently(session, path, start).await?,
            };
            let (batches, queue) = tokio::sync::mpsc::channel(FILE_QUEUE);
            let done = tokio::spawn(write_behind(session, path.clone(), start, opened, queue));
            *flight = Some(Flight { batches, done });
        }
        let flight = flight.as_mut().expect("started above");
        if flight.batches.send(batch).await.is_ok() {
            return Ok(());
        }
        // The task stopped before its queue closed: it failed, and says why.
        self.land().await?;
        Err(Error::Io { what: "write a staged file".into(), source: std::io::Error::other("the writer stopped") })
    }

    /// Hands the pending bytes to the writer's task, if it runs, and waits for it to write and sync everything.
    async fn drain(&mut self) -> Result<(), Error> {
        if let WriterKind::File { pending_len, flight: Some(_), .. } = &self.kind {
            if *pending_len > 0 {
                self.send_pending().await?;
            }
            self.land().await?;
        }
        Ok(())
    }

    /// Closes the writer task's queue, if it runs, and takes the file back once everything queued is written and
    /// synced.
    async fn land(&mut self) -> Result<(), Error> {
        if let WriterKind::File { file, flight, .. } = &mut self.kind {
            if let Some(Flight { batches, done }) = flight.take() {
                drop(batches);
                *file = Some(join(done).await?);
            }
        }
        Ok(())
    }

    /// Writes the pending bytes to the staged file (opening it first, the first time), and with `durable` syncs
    /// them, all in one trip to a blocking thread.
    async fn flush_file(&mut self, durable: bool) -> Result<(), Error> {
        let (session, start) = (self.session, self.start);
        if let WriterKind::File { flight: Some(_), path, .. } = &self.kind {
            // The writer's task writes the rest and syncs the file.
            let (path, created) = (path.clone(), start == 0);
            self.drain().await?;
            if durable && created {
                // This writer created the file: its directory entry must be durable too.
                blocking(move || sync_dir(path.parent().expect("a staging file has a directory"))).await?;
            }
            return Ok(());
        }
        if let WriterKind::File { path, file, pending, pending_len, .. } = &mut self.kind {
            *pending_len = 0;
            let (batch, mut opened) = (std::sync::Arc::new(std::mem::take(pending)), file.take());
            let written = patiently(|| {
                // Only a writer that has not opened its file yet can find it busy: a retry has no file to pass on.
                let (path, opened, batch) = (path.clone(), opened.take(), batch.clone());
                blocking(move || {
                    let file = write_pending(session, &path, start, opened, &batch)?;
                    if durable {
                        file.sync_data().map_err(Error::io(format!("sync {}", path.display())))?;
                        if start == 0 {
                            // This writer created the file: its directory entry must be durable too.
                            sync_dir(path.parent().expect("a staging file has a directory"))?;
                        }
                    }
                    Ok(file)
                })
            })
            .await?;
            *file = Some(written);
        }
        Ok(())
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

/// Runs filesystem work on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    join(tokio::task::spawn_blocking(work)).await
}

/// Waits for filesystem work on a blocking thread.
async fn join<T>(handle: tokio::task::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    match handle.await {
        Ok(result) => result,
        Err(err) => Err(Error::Io { what: "filesystem work".into(), source: std::io::Error::other(err) }),
    }
}

/// Writes a writer's pending bytes to its staged file, opening the file first if this writer has not yet.
pub(crate) fn write_pending(
    session: Uuid,
    path: &std::path::Path,
    start: u64,
    opened: Option<std::fs::File>,
    pending: &[Bytes],
) -> Result<std::fs::File, Error> {
    let mut file = match opened {
        Some(file) => file,
        None => open_staged(session, path, start)?,
    };
    for bytes in pending {
        file.write_all(bytes).map_err(Error::io(format!("write {}", path.display())))?;
    }
    Ok(file)
}

/// The task behind a filesystem writer: writes whatever batches are queued and starts their writeback
/// (`writeback::start`), in one call on a blocking thread, again and again until the queue is closed; then syncs
/// the file once and returns it with everything synced. At most `WRITEBACK_WINDOW` bytes are left on their way to
/// the disk: beyond that it waits for the oldest. Bytes on the disk have their pages let go (`writeback::forget`).
/// It holds no blocking thread while it waits for bytes, so a client that stalls mid-chunk ties up none.
async fn write_behind(
    session: Uuid,
    path: PathBuf,
    start: u64,
    mut file: std::fs::File,
    mut queue: tokio::sync::mpsc::Receiver<Vec<Bytes>>,
) -> Result<std::fs::File, Error> {
    // The end of what was written, and below it the end of what is known to have reached the disk.
    let (mut end, mut landed) = (start, start);
    while let Some(mut batch) = queue.recv().await {
        while let Ok(more) = queue.try_recv() {
            batch.extend(more);
        }
        let len: u64 = batch.iter().map(|bytes| bytes.len() as u64).sum();
        let (from, to) = (end, end + len);
        let land_to = to.saturating_sub(WRITEBACK_WINDOW).max(landed);
        let (path, landed_from) = (path.clone(), landed);
        file = blocking(move || {
            let file = write_pending(session, &path, start, Some(file), &batch)?;
            writeback::start(&file, from, len).map_err(Error::io(format!("write back {}", path.display())))?;
            if land_to > landed_from {
                writeback::wait(&file, landed_from, land_to - landed_from)
                    .map_err(Error::io(format!("write back {}", path.display())))?;
                writeback::forget(&file, landed_from, land_to - landed_from);
            }
            Ok(file)
        })
        .await?;
        (end, landed) = (to, land_to);
    }
    blocking(move || {
        file.sync_data().map_err(Error::io(format!("sync {}", path.display())))?;
        writeback::forget(&file, landed, end - landed);
        Ok(file)
    })
    .await
}

/// Opens a session's staged file as `open_staged` does, waiting while another request holds it; the wait ends when
/// the request is dropped, so an abandoned request never cuts the file later.
async fn open_patiently(session: Uuid, path: &std::path::Path, offset: u64) -> Result<std::fs::File, Error> {
    patiently(|| {
        let path = path.to_path_buf();
        blocking(move || open_staged(session, &path, offset))
    })
    .await
}

/// Runs `attempt` until it does not find the staged file busy, sleeping between tries, for at most
/// `LOCK_PATIENCE`.
async fn patiently<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match attempt().await {
            Err(Error::Busy { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// Opens a session's staged file to append at `offset`, its acknowledged length: anything staged beyond it by an
/// earlier request that did not finish is cut off. Only the first chunk (offset 0) may find no file.
///
/// The file is locked for as long as it is open, so that an earlier request's writes still running after the
/// request was dropped (a broken connection) end before the cut, never after it; while they run this fails with
/// `Error::Busy`, and the caller tries again (`patiently`) for as long as it is alive.
fn open_staged(session: Uuid, path: &std::path::Path, offset: u64) -> Result<std::fs::File, Error> {
    let mut file = if offset == 0 {
        // Not truncated on opening: only once the lock is held.
        let create = || std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path);
        let file = match create() {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().expect("a staging file has a directory");
                ensure_dir(dir)?;
                create()
            }
            other => other,
        };
        file.map_err(Error::io(format!("create {}", path.display())))?
    } else {
        std::fs::OpenOptions::new().write(true).open(path).map_err(|err| Error::Staging {
            session,
            why: format!("the staged bytes at {} are gone: {err}", path.display()),
        })?
    };
    cut_locked(session, &file, path, offset)?;
    file.seek(std::io::SeekFrom::Start(offset)).map_err(Error::io(format!("seek {}", path.display())))?;
    Ok(file)
}

/// Locks a staged file and checks that `path` still names it (`Error::Busy` if another holds it or moved it away
/// since it was opened: the caller opens it again), and cuts it to `len`, the session's acknowledged
/// length: a file shorter than that has lost acknowledged bytes.
fn cut_locked(session: Uuid, file: &std::fs::File, path: &std::path::Path, len: u64) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt as _;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Busy { session }),
        // A filesystem without locks: nothing else can be done, and a dropped request's late write stays possible.
        Err(std::fs::TryLockError::Error(err)) if err.kind() == std::io::ErrorKind::Unsupported => {}
        Err(std::fs::TryLockError::Error(err)) => return Err(Error::io(format!("lock {}", path.display()))(err)),
    }
    let meta = file.metadata().map_err(Error::io(format!("inspect {}", path.display())))?;
    let named = std::fs::metadata(path).ok();
    if named.is_none_or(|named| (named.dev(), named.ino()) != (meta.dev(), meta.ino())) {
        // Another request moved or removed the file between the open and the lock: open again, as when it is busy.
        return Err(Error::Busy { session });
    }
    let held = meta.len();
    if held < len {
        return Err(Error::Staging {
            session,
            why: format!("{} holds {held} bytes but {len} were acknowledged", path.display()),
        });
    }
    if held > len {
        file.set_len(len).map_err(Error::io(format!("truncate {}", path.display())))?;
    }
    Ok(())
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

/// When the store holds the blob at `to` already, removes the staged file at `from` and answers true.
pub(crate) fn remove_if_stored(from: &std::path::Path, to: &std::path::Path) -> Result<bool, Error> {
    if !std::fs::metadata(to).is_ok_and(|meta| meta.is_file()) {
        return Ok(false);
    }
    match std::fs::remove_file(from) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(err) => Err(Error::io(format!("remove {}", from.display()))(err)),
    }
}

/// Renames a staged file to `to` durably: its bytes are synced before the rename and `to`'s directory after it.
/// With `size`, the session's acknowledged length, the file is locked and cut to it first.
fn move_durably(session: Uuid, from: &std::path::Path, to: &std::path::Path, size: Option<u64>) -> Result<(), Error> {
    rename_synced(open_cut(session, from, size)?, from, to)
}

/// Opens a staged file for its move and, with `size`, locks it and cuts it to that length.
fn open_cut(session: Uuid, from: &std::path::Path, size: Option<u64>) -> Result<std::fs::File, Error> {
    let file = std::fs::OpenOptions::new().write(true).open(from).map_err(|err| Error::Staging {
        session,
        why: format!("the staged bytes at {} are gone: {err}", from.display()),
    })?;
    if let Some(size) = size {
        cut_locked(session, &file, from, size)?;
    }
    Ok(file)
}

/// Syncs `file`, open at `from`, renames it to `to` and syncs `to`'s directory.
pub(crate) fn rename_synced(file: std::fs::File, from: &std::path::Path, to: &std::path::Path) -> Result<(), Error> {
    file.sync_data().map_err(Error::io(format!("sync {}", from.display())))?;
    drop(file);
    std::fs::rename(from, to).map_err(Error::io(format!("move {} to {}", from.display(), to.display())))?;
    sync_dir(to.parent().expect("a moved file has a directory"))
}

/// Creates `dir` (and its missing parents) durably: each new directory's entry is synced in its parent. A directory
/// that exists costs one failed `mkdir`.
pub(crate) fn ensure_dir(dir: &std::path::Path) -> Result<(), Error> {
    let create = || match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err),
    };
    let created = match create() {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            ensure_dir(dir.parent().expect("a missing directory has a parent"))?;
            create()
        }
        other => other,
    };
    if created.map_err(Error::io(format!("create {}", dir.display())))? {
        sync_dir(dir.parent().expect("a created directory has a parent"))?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), Error> {
    let handle = std::fs::File::open(dir).map_err(Error::io(format!("open {}", dir.display())))?;
    handle.sync_all().map_err(Error::io(format!("sync {}", dir.display())))
}
