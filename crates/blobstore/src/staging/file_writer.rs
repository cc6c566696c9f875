//! The filesystem writer: a chunk's bytes gathered into batches of `FILE_BATCH` and handed to a task of the writer's
//! own (`write_behind`), which writes them and starts their writeback while the rest of the chunk arrives, and
//! syncs the file once at its end; a chunk shorter than one batch is written when it ends, in one trip to a blocking
//! thread (`flush_file`).

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use uuid::Uuid;

use super::fs::{blocking, join};
use super::lock::{open_patiently, open_staged, patiently};
use super::sync_dir;
use super::writer::{StageWriter, WriterKind};
use crate::{writeback, Error};

/// A filesystem writer hands its bytes to a task of its own, which writes them and starts their writeback while
/// more arrive, in batches of this many bytes (a chunk shorter than that is written in one call at its end)...
pub(super) const FILE_BATCH: usize = 1024 * 1024;
/// ... of which at most this many wait for that task...
const FILE_QUEUE: usize = 8;
/// ... and which leaves at most this many bytes written but not yet on the disk before it waits for the oldest: the
/// most dirty memory one upload holds, and the most the sync at the chunk's end waits for.
const WRITEBACK_WINDOW: u64 = 16 * 1024 * 1024;

/// A writer's own task (`write_behind`) and the queue of batches it writes.
#[derive(Debug)]
pub(super) struct Flight {
    batches: tokio::sync::mpsc::Sender<Vec<Bytes>>,
    done: tokio::task::JoinHandle<Result<std::fs::File, Error>>,
}

impl StageWriter {
    /// Queues the pending bytes for the writer's task, starting it (and handing it the file) the first time. The
    /// task writes whatever is queued and starts the disk writing it, again and again, so the disk works while the
    /// rest of the chunk arrives, and the sync that makes the chunk durable waits for its last bytes only.
    pub(super) async fn send_pending(&mut self) -> Result<(), Error> {
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
    pub(super) async fn drain(&mut self) -> Result<(), Error> {
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
    pub(super) async fn flush_file(&mut self, durable: bool) -> Result<(), Error> {
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
