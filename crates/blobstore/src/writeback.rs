//! Starting a file's writeback early, so that the sync that makes a chunk durable waits for little.
//!
//! A long chunk's bytes are written as they arrive. Syncing after each batch would keep the disk busy too, but
//! every sync of a growing file also commits the filesystem's journal and flushes the disk's cache, several times
//! per chunk. On Linux `sync_file_range` starts the writeback of a range without waiting for it and without
//! touching the journal: the disk writes while the rest of the chunk arrives, and the chunk pays for one journal
//! commit, in the `sync_data` at its end. Elsewhere each batch is synced, as before.
//!
//! `sync_file_range` makes nothing durable by itself (no metadata, no cache flush): callers always end with
//! `File::sync_data`, which waits for the writeback started here as well.
//!
//! Once streamed bytes are on the disk, their pages are let go (`forget`). They are not read back soon, and
//! writing each chunk into pages just let go recycles a few megabytes of memory instead of taking fresh pages for
//! every chunk. Fresh pages are what makes a streaming writer slow where memory that stood free is handed back to a
//! hypervisor (free page reporting): the first write to each page traps to the host, and on the machine in
//! docs/BENCHMARKS.md that made copying into new pages about 250 MiB/s instead of several GiB/s. Without it the
//! pages of a large upload also crowd out the pages that downloads are reading.

use std::fs::File;

/// Starts writing `len` bytes of `file` from `offset` to the disk, without waiting for them.
#[cfg(target_os = "linux")]
pub(crate) fn start(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    match range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE) {
        Ok(()) => Ok(()),
        // Refused (a filesystem or sandbox without it): a sync does the same and more.
        Err(_) => file.sync_data(),
    }
}

/// Syncs `file`: without `sync_file_range` there is no starting a writeback alone.
#[cfg(not(target_os = "linux"))]
pub(crate) fn start(file: &File, _offset: u64, _len: u64) -> std::io::Result<()> {
    file.sync_data()
}

/// Waits until the bytes of `file` from `offset` for `len` have reached the disk: bounds how much one writer leaves
/// in flight. Where the range cannot be waited for alone, the whole file is synced.
#[cfg(target_os = "linux")]
pub(crate) fn wait(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let all = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    match range(file, offset, len, all) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL | libc::ESPIPE)) => file.sync_data(),
        other => other,
    }
}

/// Nothing to wait for: `start` synced the bytes already.
#[cfg(not(target_os = "linux"))]
pub(crate) fn wait(_file: &File, _offset: u64, _len: u64) -> std::io::Result<()> {
    Ok(())
}

/// Lets the kernel drop the cached pages of `len` bytes of `file` from `offset`, which must be on the disk already
/// (written back or synced: dirty pages are not dropped). Advice only: a kernel or filesystem that keeps them
/// changes nothing but memory use, so nothing is reported.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn forget(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len @ 1..)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: `posix_fadvise` reads no memory of ours; the descriptor is open for the borrow of `file`.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
}

/// Keeps the pages: there is no portable advice to drop them.
#[cfg(not(target_os = "linux"))]
pub fn forget(_file: &File, _offset: u64, _len: u64) {}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn range(file: &File, offset: u64, len: u64, flags: std::ffi::c_uint) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: `sync_file_range` reads no memory of ours; the descriptor is open for the borrow of `file`.
    let done = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Seek as _, Write as _};

    use super::*;

    #[test]
    fn started_and_awaited_ranges_keep_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file =
            std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
        let mut expected = Vec::new();
        for n in 0u8..6 {
            let piece = vec![n; 300_000];
            let at = expected.len() as u64;
            file.write_all(&piece).unwrap();
            start(&file, at, piece.len() as u64).unwrap();
            if n >= 2 {
                wait(&file, 0, at).unwrap();
            }
            expected.extend_from_slice(&piece);
        }
        file.sync_data().unwrap();
        let mut read = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, expected);
        // A range past the end is no error; one that is no file offset is refused, and waiting on it syncs instead.
        start(&file, 10_000_000, 4096).unwrap();
        wait(&file, 10_000_000, 4096).unwrap();
        #[cfg(target_os = "linux")]
        {
            let refused = range(&file, u64::MAX, 1, libc::SYNC_FILE_RANGE_WRITE).unwrap_err();
            assert_eq!(refused.raw_os_error(), Some(libc::EINVAL));
            wait(&file, u64::MAX, 1).unwrap();
        }
    }
}
