//! Staging and committing blobs, on a filesystem store and on a real S3 server (moto).

use artifactstore_blobstore::{BlobStore, Location, Placed, StagingState};
use artifactstore_testkit::S3Server;
use bytes::Bytes;
use futures::TryStreamExt;
use uuid::Uuid;

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8).collect()
}

async fn read_all(store: &BlobStore, hex: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let chunks: Vec<Bytes> = store.read(hex, range).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

/// Appends `data` in `pieces`, as separate requests, and returns the final state.
async fn stage(store: &BlobStore, session: Uuid, data: &[u8], piece: usize) -> StagingState {
    let mut state = store.stage_open(session).await.unwrap();
    let mut offset = 0u64;
    for chunk in data.chunks(piece) {
        let mut writer = store.stage_writer(session, &state, offset).await.unwrap();
        for frame in chunk.chunks(64 * 1024) {
            writer.write(Bytes::copy_from_slice(frame)).await.unwrap();
        }
        state = writer.finish(true).await.unwrap();
        offset += chunk.len() as u64;
    }
    state
}

async fn exercise(store: BlobStore) {
    let data = bytes(13 * 1024 * 1024 + 5, 1);
    let hex = blake3::hash(&data).to_hex().to_string();
    assert_eq!(store.size_of(&hex).await.unwrap(), None);

    // A writer that never finishes leaves the acknowledged state valid, and its bytes are overwritten.
    let session = Uuid::now_v7();
    let state = stage(&store, session, &data[..4 * 1024 * 1024], 3 * 1024 * 1024).await;
    {
        let mut abandoned = store.stage_writer(session, &state, 4 * 1024 * 1024).await.unwrap();
        abandoned.write(Bytes::from(vec![0xee; 9 * 1024 * 1024])).await.unwrap();
    }
    let mut writer = store.stage_writer(session, &state, 4 * 1024 * 1024).await.unwrap();
    writer.write(Bytes::copy_from_slice(&data[4 * 1024 * 1024..])).await.unwrap();
    let state = writer.finish(true).await.unwrap();
    assert_eq!(store.staged().await.unwrap().iter().filter(|s| s.session == session).count(), 1);

    assert_eq!(store.stage_commit(session, &state, &hex, data.len() as u64).await.unwrap(), Placed::Stored);
    assert_eq!(store.size_of(&hex).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(&store, &hex, 0..data.len() as u64).await, data);
    assert_eq!(read_all(&store, &hex, 100..200).await, &data[100..200]);
    assert!(read_all(&store, &hex, 5..5).await.is_empty());
    assert!(store.staged().await.unwrap().is_empty(), "commit clears staging");

    // The same bytes again are not written twice.
    let again = Uuid::now_v7();
    let state = stage(&store, again, &data, 8 * 1024 * 1024).await;
    assert_eq!(store.stage_commit(again, &state, &hex, data.len() as u64).await.unwrap(), Placed::AlreadyStored);
    assert!(store.staged().await.unwrap().is_empty());

    // A commit right after an abandoned writer stores the acknowledged bytes and none of the abandoned ones.
    let head = &data[..2 * 1024 * 1024 + 9];
    let head_hex = blake3::hash(head).to_hex().to_string();
    let session = Uuid::now_v7();
    let state = stage(&store, session, head, 1024 * 1024).await;
    {
        let mut abandoned = store.stage_writer(session, &state, head.len() as u64).await.unwrap();
        for _ in 0..3 {
            abandoned.write(Bytes::from(vec![0xee; 1024 * 1024])).await.unwrap();
        }
    }
    let placed = store.stage_commit(session, &state, &head_hex, head.len() as u64).await.unwrap();
    assert_eq!(placed, Placed::Stored);
    assert_eq!(read_all(&store, &head_hex, 0..head.len() as u64).await, head);
    assert_eq!(store.size_of(&head_hex).await.unwrap(), Some(head.len() as u64));

    // Small blobs, an empty blob, and abort.
    for len in [0, 1, 1000] {
        let small = bytes(len, 2);
        let small_hex = blake3::hash(&small).to_hex().to_string();
        let session = Uuid::now_v7();
        let state = stage(&store, session, &small, 300).await;
        assert_eq!(store.stage_commit(session, &state, &small_hex, len as u64).await.unwrap(), Placed::Stored);
        assert_eq!(read_all(&store, &small_hex, 0..len as u64).await, small);
    }
    // A last chunk ended and placed in one step, after earlier chunks; the same bytes again are not written.
    let small = bytes(300_000, 3);
    let small_hex = blake3::hash(&small).to_hex().to_string();
    for expected in [Placed::Stored, Placed::AlreadyStored] {
        let session = Uuid::now_v7();
        let state = stage(&store, session, &small[..100_000], 100_000).await;
        let mut writer = store.stage_writer(session, &state, 100_000).await.unwrap();
        writer.write(Bytes::copy_from_slice(&small[100_000..])).await.unwrap();
        assert_eq!(store.commit_writer(writer, &small_hex).await.unwrap(), expected);
        assert_eq!(read_all(&store, &small_hex, 0..small.len() as u64).await, small);
        assert!(store.staged().await.unwrap().is_empty(), "placing clears the session's staging");
    }
    // A whole blob in one writer, and the empty blob from a writer that received nothing.
    for data in [bytes(4096, 4), Vec::new()] {
        let hex = blake3::hash(&data).to_hex().to_string();
        let session = Uuid::now_v7();
        let state = store.stage_open(session).await.unwrap();
        let mut writer = store.stage_writer(session, &state, 0).await.unwrap();
        if !data.is_empty() {
            writer.write(Bytes::copy_from_slice(&data)).await.unwrap();
        }
        store.commit_writer(writer, &hex).await.unwrap();
        assert_eq!(store.size_of(&hex).await.unwrap(), Some(data.len() as u64));
        assert_eq!(read_all(&store, &hex, 0..data.len() as u64).await, data);
        assert!(store.staged().await.unwrap().is_empty());
    }
    let aborted = Uuid::now_v7();
    // A short tail after a full part: on S3 the part is invisible until completed, the pending tail is not.
    let state = stage(&store, aborted, &data[..6 * 1024 * 1024 + 10], 6 * 1024 * 1024).await;
    assert!(!store.staged().await.unwrap().is_empty());
    store.stage_abort(aborted, &state).await.unwrap();
    store.stage_abort(aborted, &state).await.unwrap();
    assert!(store.staged().await.unwrap().is_empty());

    // Small named objects (snapshots, archive segments) and listings by directory.
    store.put_object("archive/log-a/0001.cborseq", b"one".to_vec()).await.unwrap();
    store.put_object("archive/log-a/0002.cborseq", b"two".to_vec()).await.unwrap();
    store.put_object("archive/log-b/0001.cborseq", b"three".to_vec()).await.unwrap();
    assert_eq!(store.get_object("archive/log-a/0002.cborseq").await.unwrap().as_ref(), b"two");
    assert!(matches!(store.get_object("archive/none").await, Err(artifactstore_blobstore::Error::NotFound(_))));
    assert_eq!(store.list_names("archive/log-a").await.unwrap(), ["0001.cborseq", "0002.cborseq"]);
    assert_eq!(store.list_dirs("archive").await.unwrap(), ["log-a", "log-b"]);
    assert!(store.list_names("archive/nothing").await.unwrap().is_empty());
    let listed = store.list_blobs().await.unwrap();
    assert!(listed.iter().any(|(h, size)| *h == hex && *size == data.len() as u64), "{listed:?}");
    let digest = store.digest_of(&hex, data.len() as u64).await.unwrap();
    assert_eq!(digest.blake3.hex(), hex);

    // Missing blobs are NotFound; removal is idempotent.
    let missing = "00".repeat(32);
    assert!(matches!(store.read(&missing, 0..1).await, Err(artifactstore_blobstore::Error::NotFound(_))));
    store.remove(&hex).await.unwrap();
    store.remove(&hex).await.unwrap();
    assert_eq!(store.size_of(&hex).await.unwrap(), None);
    store.ready().await.unwrap();
}

#[tokio::test]
async fn filesystem_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&Location::File(dir.path().join("blobs"))).unwrap();
    exercise(store).await;
}

/// A chunk longer than what one writer leaves on its way to the disk (16 MiB), at an offset: the writer waits for
/// its oldest bytes while the rest arrives, and every byte ends up where it belongs.
#[tokio::test]
async fn filesystem_chunks_longer_than_the_writeback_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&Location::File(dir.path().join("blobs"))).unwrap();
    let data = bytes(43 * 1024 * 1024 + 17, 7);
    let hex = blake3::hash(&data).to_hex().to_string();
    let session = Uuid::now_v7();
    let head = 3 * 1024 * 1024 + 1;
    let state = stage(&store, session, &data[..head], head).await;
    let mut writer = store.stage_writer(session, &state, head as u64).await.unwrap();
    for frame in data[head..].chunks(256 * 1024) {
        writer.write(Bytes::copy_from_slice(frame)).await.unwrap();
    }
    let state = writer.finish(true).await.unwrap();
    assert_eq!(store.stage_commit(session, &state, &hex, data.len() as u64).await.unwrap(), Placed::Stored);
    assert_eq!(read_all(&store, &hex, 0..data.len() as u64).await, data);
}

/// Many blobs placed at once, some of them the same blob: each distinct blob is stored once and the others find it,
/// every one reads back whole, nothing is left staged, and the placements share rounds of syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_placements_at_once_share_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&Location::File(dir.path().join("blobs"))).unwrap();
    let blobs: Vec<Vec<u8>> = (0..48u8).map(|n| bytes(4096 + usize::from(n), n)).collect();
    let same = bytes(10_000, 200);
    let mut tasks = Vec::new();
    for data in blobs.iter().cloned().chain(std::iter::repeat_n(same.clone(), 16)) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let hex = blake3::hash(&data).to_hex().to_string();
            let session = Uuid::now_v7();
            let state = store.stage_open(session).await.unwrap();
            let mut writer = store.stage_writer(session, &state, 0).await.unwrap();
            writer.write(Bytes::from(data)).await.unwrap();
            let placed = store.commit_writer(writer, &hex).await.unwrap();
            (hex, placed)
        }));
    }
    let mut placed = Vec::new();
    for task in tasks {
        placed.push(task.await.unwrap());
    }
    assert!(placed[..48].iter().all(|(_, p)| *p == Placed::Stored), "{placed:?}");
    let stored_same = placed[48..].iter().filter(|(_, p)| *p == Placed::Stored).count();
    assert_eq!(stored_same, 1, "one of the same blob's placements stores it, the others find it: {placed:?}");
    for data in blobs.iter().chain([&same]) {
        let hex = blake3::hash(data).to_hex().to_string();
        assert_eq!(read_all(&store, &hex, 0..data.len() as u64).await, *data);
    }
    assert!(store.staged().await.unwrap().is_empty(), "every staged file was moved or dropped");
    let stats = store.placement_stats();
    assert_eq!(stats.placements, 64);
    assert!(stats.rounds < stats.placements, "64 placements at once took {} rounds", stats.rounds);
}

/// A small blob's only chunk goes to the placing thread to be written; when a dropped request still holds the
/// session's staged file, the thread answers busy, and the commit waits for the file on its own and places the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_small_commit_waits_for_a_held_staged_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let store = BlobStore::open(&Location::File(root.clone())).unwrap();
    let session = Uuid::now_v7();
    let state = store.stage_open(session).await.unwrap();
    // What a dropped request leaves while its write still runs: the session's staged file, open and locked.
    let path = root.join("staging").join(session.to_string());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"a dropped request's bytes").unwrap();
    let held = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    held.lock().unwrap();
    let data = bytes(4096, 7);
    let hex = blake3::hash(&data).to_hex().to_string();
    let mut writer = store.stage_writer(session, &state, 0).await.unwrap();
    writer.write(Bytes::from(data.clone())).await.unwrap();
    let commit = tokio::spawn({
        let (store, hex) = (store.clone(), hex.clone());
        async move { store.commit_writer(writer, &hex).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!commit.is_finished(), "the commit waits while another holds the staged file");
    let rounds = store.placement_stats().rounds;
    assert!(rounds >= 1, "the placing thread was asked first");
    drop(held);
    assert_eq!(commit.await.unwrap().unwrap(), Placed::Stored);
    assert_eq!(read_all(&store, &hex, 0..data.len() as u64).await, data, "the blob holds the commit's bytes only");
    let stats = store.placement_stats();
    assert_eq!(stats.placements, 1, "{stats:?}");
    assert!(stats.rounds > rounds, "placed in a later round: {stats:?}");
    assert!(store.staged().await.unwrap().is_empty(), "the staged file was moved into place");
}

#[tokio::test]
async fn filesystem_writer_refuses_lost_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&Location::File(dir.path().join("blobs"))).unwrap();
    let session = Uuid::now_v7();
    let state = stage(&store, session, b"hello", 5).await;
    // The bookkeeping claims more than the staging holds: refuse rather than write a hole.
    assert!(store.stage_writer(session, &state, 10).await.is_err());
    // A session's first chunk creates its staged file; a later chunk never does.
    assert!(store.stage_writer(Uuid::now_v7(), &state, 3).await.is_err());
}

#[tokio::test]
async fn s3_store() {
    let Some(server) = S3Server::start().await else { return };
    let location = Location::parse(&server.store_url()).unwrap();
    let store = BlobStore::open_with(&location, &server.env()).unwrap();
    exercise(store).await;
    // Everything left in the bucket is under the store's prefix, and staging is empty.
    let keys = server.list_keys().await;
    assert!(keys.iter().all(|k| !k.contains("staging/")), "{keys:?}");
}

/// How many of `path`'s pages are in the page cache, and how many it has (`mincore` over a mapping of the file).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn resident_pages(path: &std::path::Path) -> (usize, usize) {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: `sysconf` reads nothing of ours.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
    let pages = len.div_ceil(page);
    let mut residency = vec![0u8; pages];
    // SAFETY: a shared read-only mapping of an open file, of its length, never dereferenced, unmapped below;
    // `mincore` writes one byte per page of it into `residency`, which holds that many.
    unsafe {
        let map = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        assert_ne!(map, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        assert_eq!(libc::mincore(map, len, residency.as_mut_ptr()), 0, "mincore: {}", std::io::Error::last_os_error());
        libc::munmap(map, len);
    }
    (residency.iter().filter(|&&byte| byte & 1 == 1).count(), pages)
}

/// Streamed chunks leave their pages to the kernel once they are on the disk (a long upload recycles a few
/// megabytes of page cache instead of filling it), and their bytes read back whole, from the disk.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn filesystem_streamed_chunks_let_their_pages_go() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: `statfs` fills the struct it is given.
    #[allow(unsafe_code)]
    let fs_type = unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(libc::statfs(path.as_ptr(), &mut stat), 0);
        stat.f_type
    };
    if fs_type == libc::TMPFS_MAGIC {
        eprintln!("SKIPPED: the temporary directory is on tmpfs, whose pages are its storage and never let go");
        return;
    }
    let root = dir.path().join("blobs");
    let store = BlobStore::open(&Location::File(root.clone())).unwrap();
    // Two chunks, the first longer than the writeback window, so pages are let go both mid-chunk and at a chunk's end.
    let data = bytes(27 * 1024 * 1024 + 3, 9);
    let session = Uuid::now_v7();
    let state = stage(&store, session, &data, 20 * 1024 * 1024 + 1).await;
    let staged = root.join("staging").join(session.to_string());
    let (resident, pages) = resident_pages(&staged);
    // Some pages around the chunks' unaligned edges may stay (the kernel keeps a whole folio where a range starts or
    // ends inside it); megabytes may not.
    assert!(resident * 50 <= pages, "{resident} of {pages} pages of the staged file are still cached");
    let hex = blake3::hash(&data).to_hex().to_string();
    assert_eq!(store.stage_commit(session, &state, &hex, data.len() as u64).await.unwrap(), Placed::Stored);
    assert_eq!(read_all(&store, &hex, 0..data.len() as u64).await, data);
}
