//! Placements made durable together: a filesystem store's blobs reach their content address in groups, each group
//! costing two syncs of the whole filesystem (each followed by an `fsync` of the store's root) instead of three
//! `fsync`s per blob.
//!
//! A blob is placed by renaming its staged file to its address. For the name to be trusted after a crash its bytes
//! must be on the disk before the rename, and the new name (with any directory created for it) after it. Each
//! `fsync` on this kind of disk is a flush of its write cache, so a small blob paid for three flushes of its own
//! (the file, the new leaf directory's parent, the directory it was renamed into) and many small blobs placed at
//! once queued for the disk one flush at a time.
//!
//! Here one thread places blobs for the whole store. It takes every placement asked for since its last round, syncs
//! the filesystem (`syncfs`: every staged file's bytes are on the disk), renames them all, and syncs the filesystem
//! again (every new name and directory is). A caller's answer comes only after the second sync, so an event that
//! records the blob commits only once the blob is durable at its address, as before. Whoever asks while a round runs
//! waits for the next: the longer the disk takes, the larger the groups. A placement that finds its blob already
//! stored asks for a round with nothing to rename, since the request that renamed it may not have synced yet.
//! A small blob sent whole in one request is even written by the round (its staged file created and written before
//! the first sync), which spares the request a trip to a blocking thread of its own. Each sync of the filesystem is
//! followed by an `fsync` of the store's root, which flushes the disk's cache once more after the sync's last
//! metadata writes (`place_group`). A failed sync stops the thread placing anything (`run`).
//!
//! `syncfs` writes out everything dirty on the filesystem, not only the store's files: a store sharing its
//! filesystem with a heavy writer waits for that writer's data as well (ADR 0020). Off Linux, each placement is
//! synced on its own, file and directories, as before.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use uuid::Uuid;

use crate::{Error, Placed};

/// Counts of a store's placements since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlacementStats {
    /// Placements that succeeded (renames, and placements that found their blob already stored).
    pub placements: u64,
    /// Rounds run: each made a group of placements durable with at most two syncs of the filesystem.
    pub rounds: u64,
}

/// A staged file to be placed at `to`, or a blob already at `to` whose name must be durable.
struct Job {
    staged: Staged,
    to: PathBuf,
    done: tokio::sync::oneshot::Sender<Result<Placed, Error>>,
}

/// What a job brings.
enum Staged {
    /// The staged file, open (and so still locked against a dropped request's late writes), and its path.
    File(std::fs::File, PathBuf),
    /// A small blob's bytes, not yet written: the round creates its staged file at `from` and writes them (unless
    /// the blob is at `to` already).
    Bytes { session: Uuid, from: PathBuf, bytes: Arc<Vec<Bytes>> },
    /// Nothing: the blob was found at `to`.
    Nothing,
}

/// The handle to a store's placing thread; the thread ends when the last handle is dropped.
pub(crate) struct Placer {
    jobs: mpsc::Sender<Job>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    placements: AtomicU64,
    rounds: AtomicU64,
}

impl std::fmt::Debug for Placer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placer").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Placer {
    /// Starts the placing thread of the store at `root`.
    pub(crate) fn start(root: &Path) -> Result<Placer, Error> {
        let handle = std::fs::File::open(root).map_err(Error::io(format!("open {}", root.display())))?;
        let (jobs, queue) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let thread_counts = counts.clone();
        std::thread::Builder::new()
            .name("blob-placer".into())
            .spawn(move || {
                // A panic ends the thread: every placement waiting and every later one fails as "stopped". Say so
                // where the operator looks, not only on standard error.
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&handle, &queue, &thread_counts)));
                if ran.is_err() {
                    tracing::error!("the blob placing thread panicked: no blob is placed until the service restarts");
                }
            })
            .map_err(Error::io("start the blob placing thread"))?;
        Ok(Placer { jobs, counts })
    }

    /// Renames `file` (open at `from`) to `to` durably, together with whatever else is placed meanwhile; when a
    /// placement before it (in the same round, say) put the same blob there, the staged file is removed instead.
    pub(crate) async fn place(&self, file: std::fs::File, from: PathBuf, to: PathBuf) -> Result<Placed, Error> {
        self.ask(Staged::File(file, from), to).await
    }

    /// Creates a session's first staged file at `from`, writes a small blob's `bytes` to it and places it at `to`,
    /// all in the next round, which saves the trip to a blocking thread a write of its own would take. Answers
    /// `Error::Busy` if another request holds a file at `from`.
    pub(crate) async fn write_and_place(
        &self,
        session: Uuid,
        from: PathBuf,
        bytes: Arc<Vec<Bytes>>,
        to: PathBuf,
    ) -> Result<Placed, Error> {
        self.ask(Staged::Bytes { session, from, bytes }, to).await
    }

    /// Waits until the name `to`, found already in place, is durable.
    pub(crate) async fn settle(&self, to: PathBuf) -> Result<(), Error> {
        self.ask(Staged::Nothing, to).await.map(|_| ())
    }

    pub(crate) fn stats(&self) -> PlacementStats {
        PlacementStats {
            placements: self.counts.placements.load(Ordering::Relaxed),
            rounds: self.counts.rounds.load(Ordering::Relaxed),
        }
    }

    async fn ask(&self, staged: Staged, to: PathBuf) -> Result<Placed, Error> {
        let stopped = || Error::Io {
            what: "place a blob".into(),
            source: std::io::Error::other("the blob placing thread stopped"),
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        self.jobs.send(Job { staged, to, done }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The placing thread: one round per wake-up, taking every job queued by then.
///
/// Once a sync has failed the thread places nothing more: the kernel reports a lost write once, so a later sync
/// that succeeds proves nothing about the pages the failed one lost, and a blob named then might be recorded without
/// its bytes. Every later placement fails until the service is restarted (and `verify` run), as PostgreSQL stops on
/// a failed `fsync`.
fn run(root: &std::fs::File, queue: &mpsc::Receiver<Job>, counts: &Counts) {
    let mut broken: Option<String> = None;
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter());
        let was_broken = broken.is_some();
        let outcomes = match &broken {
            Some(why) => group.iter().map(|_| Err(refused(why))).collect(),
            None => place_group(root, &mut group, &mut broken),
        };
        if let (Some(why), false) = (&broken, was_broken) {
            tracing::error!(error = %why, "syncing the blob store failed: no blob is placed until the service restarts; run `artifactstore verify`");
        }
        counts.rounds.fetch_add(1, Ordering::Relaxed);
        let placed = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        counts.placements.fetch_add(placed as u64, Ordering::Relaxed);
        for (job, outcome) in group.into_iter().zip(outcomes) {
            // A caller that went away (its request dropped) needs no answer; its blob is placed all the same.
            let _ = job.done.send(outcome);
        }
    }
}

/// What a failed sync's errors say was being done.
const SYNC_FAILED: &str = "sync the blob store";

/// The answer to a placement once a sync has failed.
fn refused(why: &str) -> Error {
    Error::Io { what: SYNC_FAILED.into(), source: std::io::Error::other(format!("an earlier sync failed ({why})")) }
}

/// A failed sync's error for one job of its round, noting the failure in `broken` for the rounds after it.
#[cfg(target_os = "linux")]
fn sync_failed(err: &std::io::Error, broken: &mut Option<String>) -> Error {
    broken.get_or_insert_with(|| err.to_string());
    Error::io(SYNC_FAILED)(copy(err))
}

/// Writes the group's small blobs to their staged files, syncs the filesystem, renames every staged file of the
/// group, and syncs the filesystem again; one outcome per job. A failed sync fails every job it was to make durable
/// and is noted in `broken`.
///
/// Each `syncfs` is followed by an `fsync` of the store's root directory. On ext4 without a journal `syncfs` flushes
/// the disk's cache before its last metadata writes (inodes, directory blocks) rather than after them; the `fsync`
/// flushes again once they are written, so a staged file's inode is on the disk before any name points at it, and
/// every new name before its placement is answered.
#[cfg(target_os = "linux")]
fn place_group(root: &std::fs::File, group: &mut [Job], broken: &mut Option<String>) -> Vec<Result<Placed, Error>> {
    let mut written: Vec<Option<Error>> = group.iter_mut().map(write_staged).collect();
    if group.iter().any(|job| matches!(job.staged, Staged::File(..))) {
        if let Err(err) = sync_store(root) {
            return written
                .into_iter()
                .map(|failed| Err(failed.unwrap_or_else(|| sync_failed(&err, broken))))
                .collect();
        }
    }
    let mut outcomes: Vec<Result<Placed, Error>> = group
        .iter_mut()
        .zip(written.iter_mut())
        .map(|(job, failed)| match (failed.take(), std::mem::replace(&mut job.staged, Staged::Nothing)) {
            (Some(err), _) => Err(err),
            (None, Staged::File(file, from)) => {
                let placed = rename_into(&from, &job.to);
                drop(file);
                placed
            }
            (None, _) => Ok(Placed::AlreadyStored),
        })
        .collect();
    if let Err(err) = sync_store(root) {
        for outcome in &mut outcomes {
            if outcome.is_ok() {
                *outcome = Err(sync_failed(&err, broken));
            }
        }
    }
    outcomes
}

/// `syncfs` on the store's filesystem, then `fsync` of its root directory (see `place_group`).
#[cfg(target_os = "linux")]
fn sync_store(root: &std::fs::File) -> std::io::Result<()> {
    syncfs(root)?;
    root.sync_all()
}

/// Writes a job's bytes to its new staged file, making it a job with a file, or one with nothing when its blob is
/// in place already; a failure is kept for the job's answer.
fn write_staged(job: &mut Job) -> Option<Error> {
    let Staged::Bytes { session, from, bytes } = &job.staged else {
        return None;
    };
    match crate::staging::remove_if_stored(from, &job.to) {
        Ok(true) => {
            // A file a dropped request staged for the same session, if any, is gone too.
            job.staged = Staged::Nothing;
            return None;
        }
        Ok(false) => {}
        Err(err) => {
            job.staged = Staged::Nothing;
            return Some(err);
        }
    }
    match crate::staging::write_pending(*session, from, 0, None, bytes) {
        Ok(file) => {
            let from = from.clone();
            job.staged = Staged::File(file, from);
            None
        }
        Err(err) => {
            job.staged = Staged::Nothing;
            Some(err)
        }
    }
}

/// Off Linux there is no `syncfs`: each job syncs its own file and directories.
#[cfg(not(target_os = "linux"))]
fn place_group(_root: &std::fs::File, group: &mut [Job], _broken: &mut Option<String>) -> Vec<Result<Placed, Error>> {
    group
        .iter_mut()
        .map(|job| {
            if let Some(err) = write_staged(job) {
                return Err(err);
            }
            let dir = job.to.parent().expect("a blob path has a directory");
            match std::mem::replace(&mut job.staged, Staged::Nothing) {
                Staged::File(file, from) => {
                    if crate::staging::remove_if_stored(&from, &job.to)? {
                        crate::staging::sync_dir(dir)?;
                        return Ok(Placed::AlreadyStored);
                    }
                    crate::staging::ensure_dir(dir)?;
                    crate::staging::rename_synced(file, &from, &job.to).map(|()| Placed::Stored)
                }
                _ => crate::staging::sync_dir(dir).map(|()| Placed::AlreadyStored),
            }
        })
        .collect()
}

/// Renames `from` to `to`, creating `to`'s directory (and its missing parents) if need be, or removes `from` when
/// `to` is there already; nothing is synced.
#[cfg(target_os = "linux")]
fn rename_into(from: &Path, to: &Path) -> Result<Placed, Error> {
    if crate::staging::remove_if_stored(from, to)? {
        return Ok(Placed::AlreadyStored);
    }
    let rename = || std::fs::rename(from, to);
    match rename() {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && from.exists() => {
            let dir = to.parent().expect("a blob path has a directory");
            std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
            rename()
        }
        other => other,
    }
    .map_err(Error::io(format!("move {} to {}", from.display(), to.display())))?;
    Ok(Placed::Stored)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn syncfs(root: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: `root` is an open file for the whole call; `syncfs` reads nothing but the descriptor.
    match unsafe { libc::syncfs(root.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The same failure again, for each job a failed sync fails.
#[cfg(target_os = "linux")]
fn copy(err: &std::io::Error) -> std::io::Error {
    match err.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(err.kind(), err.to_string()),
    }
}
