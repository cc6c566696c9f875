//! Filesystem steps: work run on a blocking thread, and what staging shares with the store's placing thread
//! (`placement`): a staged file dropped when its blob is stored already, a rename made durable, directories created
//! durably.

use crate::Error;

/// Runs filesystem work on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    join(tokio::task::spawn_blocking(work)).await
}

/// Waits for filesystem work on a blocking thread.
pub(super) async fn join<T>(handle: tokio::task::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    match handle.await {
        Ok(result) => result,
        Err(err) => Err(Error::Io { what: "filesystem work".into(), source: std::io::Error::other(err) }),
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
