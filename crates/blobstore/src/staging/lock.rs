//! Opening a staged file. Whoever opens one holds a lock on it until it is closed, and cuts it back to the
//! session's acknowledged length only once the lock is held, so a dropped request's writes still running end before
//! the cut, never after it; a request that finds the file busy tries again (`patiently`) for as long as it lives.

use std::io::Seek;

use uuid::Uuid;

use super::ensure_dir;
use super::fs::blocking;
use crate::Error;

/// How long a request waits for the staged file while another holds it (a dropped request's last batches still
/// being written) before it gives up.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens a session's staged file as `open_staged` does, waiting while another request holds it; the wait ends when
/// the request is dropped, so an abandoned request never cuts the file later.
pub(super) async fn open_patiently(session: Uuid, path: &std::path::Path, offset: u64) -> Result<std::fs::File, Error> {
    patiently(|| {
        let path = path.to_path_buf();
        blocking(move || open_staged(session, &path, offset))
    })
    .await
}

/// Runs `attempt` until it does not find the staged file busy, sleeping between tries, for at most
/// `LOCK_PATIENCE`.
pub(super) async fn patiently<T, F, Fut>(mut attempt: F) -> Result<T, Error>
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
pub(super) fn open_staged(session: Uuid, path: &std::path::Path, offset: u64) -> Result<std::fs::File, Error> {
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

/// Opens a staged file for its move and, with `size`, locks it and cuts it to that length.
pub(super) fn open_cut(session: Uuid, from: &std::path::Path, size: Option<u64>) -> Result<std::fs::File, Error> {
    let file = std::fs::OpenOptions::new().write(true).open(from).map_err(|err| Error::Staging {
        session,
        why: format!("the staged bytes at {} are gone: {err}", from.display()),
    })?;
    if let Some(size) = size {
        cut_locked(session, &file, from, size)?;
    }
    Ok(file)
}
