//! The machine's own limits, measured in the same run as the workloads they bound.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use artifactstore_db::{sqlx, AsExec as _, Database, Exec, Tx};
use artifactstore_digest::DualHasher;
use artifactstore_views::FileRow;

/// BLAKE3 and SHA-256 together over `size` bytes in 8 MiB chunks, as the server feeds them; MiB/s.
pub(crate) fn dual_digest_speed(size: usize) -> f64 {
    let data = vec![0x5au8; 8 * 1024 * 1024];
    let start = Instant::now();
    let mut hasher = DualHasher::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(data.len());
        hasher.update(&data[..n]);
        left -= n;
    }
    std::hint::black_box(hasher.finalize());
    size as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
}

/// Writes `size` bytes to a new file under `dir` in `chunk`-byte writes and syncs it, at the end or, with
/// `each_chunk`, after every write, as a chunked upload that acknowledges only durable chunks must at the least,
/// letting each synced chunk's pages go through the staging's own `forget_cached` (so the next write recycles them instead of
/// touching fresh memory, which on a virtual machine with free page reporting costs more than the disk); MiB/s.
pub(crate) fn disk_write_speed(dir: &Path, size: usize, chunk: usize, each_chunk: bool) -> anyhow::Result<f64> {
    let data = vec![0xa5u8; chunk.max(1)];
    let path = dir.join("disk-write.bin");
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    let mut left = size;
    while left > 0 {
        let n = left.min(data.len());
        file.write_all(&data[..n])?;
        if each_chunk {
            file.sync_data()?;
            artifactstore_blobstore::forget_cached(&file, (size - left) as u64, n as u64);
        }
        left -= n;
    }
    file.sync_all()?;
    let speed = size as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(speed)
}

/// `threads` threads each create 4 KiB files and fsync them for `duration`; fsyncs per second in total.
pub(crate) fn fsync_rate(dir: &Path, threads: usize, duration: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let data = [7u8; 4096];
                    let mut n = 0u64;
                    while start.elapsed() < duration {
                        let path = dir.join(format!("fsync-{t}-{n}"));
                        let mut file = std::fs::File::create(&path)?;
                        file.write_all(&data)?;
                        file.sync_all()?;
                        std::fs::remove_file(&path)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("fsync thread")).collect::<Vec<_>>()
    });
    let mut total = 0;
    for count in counts {
        total += count?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// `threads` threads each read every file (already in the page cache) `rounds` times; MiB/s in total.
pub(crate) fn page_cache_read_speed(
    files: &[std::path::PathBuf],
    threads: usize,
    rounds: usize,
) -> anyhow::Result<f64> {
    for path in files {
        std::fs::read(path)?;
    }
    let start = Instant::now();
    let bytes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total = 0u64;
                    for _ in 0..rounds {
                        for path in files {
                            let mut file = std::fs::File::open(path)?;
                            loop {
                                let n = file.read(&mut buf)?;
                                if n == 0 {
                                    break;
                                }
                                total += n as u64;
                            }
                        }
                    }
                    Ok(total)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("read thread")).collect::<Vec<_>>()
    });
    let mut total = 0;
    for b in bytes {
        total += b?;
    }
    Ok(total as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64())
}

/// The secondary indexes of `artifact_files`, which a replay on SQLite drops before it fills the empty views and
/// creates again after (`views::Refill`); the limits below load the view the same way.
const FILES_SECONDARY_INDEXES: [&str; 3] =
    ["artifact_files_by_sha256", "artifact_files_unreferenced", "artifact_files_by_file_id"];

/// Inserts `rows` blob rows straight into the (empty) `artifact_files` view in one transaction of 200-row statements
/// (`INSERT OR FAIL`, as replay writes) through the same driver the product uses, then rolls back; rows per second.
/// On SQLite the view's secondary index is dropped first and built again at the end, inside the timing, as a replay
/// does. Digests are random, as real ones are.
pub(crate) async fn raw_insert_speed(db: &Database, rows: usize) -> anyhow::Result<f64> {
    const PER_STATEMENT: usize = 200;
    let sql = format!(
        "{} INTO {} ({}) VALUES {}",
        artifactstore_db::bulk_insert(db.backend()),
        FileRow::TABLE,
        FileRow::COLUMNS,
        artifactstore_db::placeholders(db.backend(), PER_STATEMENT, 11)
    );
    let keys: Vec<(String, String, uuid::Uuid)> = (0..rows.div_ceil(PER_STATEMENT) * PER_STATEMENT)
        .map(|i| {
            let b = blake3::hash(&(i as u64).to_le_bytes()).to_hex();
            (format!("blake3:{b}"), format!("sha256:{b}"), uuid::Uuid::new_v4())
        })
        .collect();
    let mut tx = db.begin_write().await?;
    let sqlite = db.backend() == artifactstore_db::Backend::Sqlite;
    let mut indexes = Vec::new();
    if sqlite {
        // The page cache replay gives itself.
        sqlx_exec(&mut tx, "PRAGMA cache_size = -262144").await?;
        sqlx_exec(&mut tx, "PRAGMA temp_store = MEMORY").await?;
        for name in FILES_SECONDARY_INDEXES {
            let (sql,): (String,) = artifactstore_db::fetch_one!(
                &mut tx,
                (String,),
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = $1",
                name
            )?;
            sqlx_exec(&mut tx, &format!("DROP INDEX {name}")).await?;
            indexes.push(sql);
        }
    }
    let start = Instant::now();
    for (n, chunk) in keys.chunks(PER_STATEMENT).enumerate() {
        macro_rules! bind_all {
            ($query:expr) => {{
                let mut query = $query;
                for (i, (k, s, id)) in chunk.iter().enumerate() {
                    let seq = (n * PER_STATEMENT + i) as i64;
                    query = query.bind(k).bind(s).bind(4096i64).bind(None::<String>).bind(id).bind(seq).bind(seq);
                    query = query.bind(0i64).bind(seq).bind(None::<i64>).bind(format!("{seq} "));
                }
                query
            }};
        }
        match tx.as_exec() {
            Exec::Sqlite(c) => bind_all!(sqlx::query(&sql)).execute(c).await.map(drop)?,
            Exec::Postgres(c) => bind_all!(sqlx::query(&sql)).execute(c).await.map(drop)?,
        }
    }
    for sql in &indexes {
        sqlx_exec(&mut tx, sql).await?;
    }
    let speed = keys.len() as f64 / start.elapsed().as_secs_f64();
    tx.rollback().await?;
    Ok(speed)
}

/// The same rows as `raw_insert_speed`, written through SQLite's C API directly (rusqlite): one prepared single-row
/// `INSERT` reused for every row, in one transaction on a fresh database file with the views' schema, replay's page
/// cache and in-memory temporary files, the secondary index built after the rows as a replay builds it, committed
/// durably (WAL, `synchronous=FULL`); rows per second including the index and the commit. What SQLite itself can do
/// on this machine for this view, with no driver between. `in_key_order` sorts the rows by their key first, so every
/// insert lands at the end of the table's B-tree (SQLite's best case; a replay's land at random places).
pub(crate) fn sqlite_c_insert_speed(dir: &Path, rows: usize, in_key_order: bool) -> anyhow::Result<f64> {
    let path = dir.join("c-api-insert.db");
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY;",
    )?;
    for migration in [
        include_str!("../../../migrations/sqlite/0002_views.sql"),
        include_str!("../../../migrations/sqlite/0004_views_status.sql"),
        include_str!("../../../migrations/sqlite/0008_blob_references.sql"),
        include_str!("../../../migrations/sqlite/0010_file_histories.sql"),
    ] {
        conn.execute_batch(migration)?;
    }
    let mut keys: Vec<(String, String, uuid::Uuid)> = (0..rows)
        .map(|i| {
            let b = blake3::hash(&(i as u64).to_le_bytes()).to_hex();
            (format!("blake3:{b}"), format!("sha256:{b}"), uuid::Uuid::new_v4())
        })
        .collect();
    if in_key_order {
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    let mut indexes = Vec::new();
    for name in FILES_SECONDARY_INDEXES {
        let sql: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1", [name], |row| {
                row.get(0)
            })?;
        indexes.push((name, sql));
    }
    let start = Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for (name, _) in &indexes {
        conn.execute_batch(&format!("DROP INDEX {name}"))?;
    }
    {
        let mut insert = conn.prepare(&format!(
            "INSERT INTO {} ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            FileRow::TABLE,
            FileRow::COLUMNS
        ))?;
        for (n, (k, s, id)) in keys.iter().enumerate() {
            let seq = n as i64;
            insert.execute(rusqlite::params![
                k,
                s,
                4096i64,
                None::<String>,
                &id.as_bytes()[..],
                seq,
                seq,
                0i64,
                seq,
                None::<i64>,
                format!("{seq} ")
            ])?;
        }
    }
    for (_, sql) in &indexes {
        conn.execute_batch(sql)?;
    }
    conn.execute_batch("COMMIT")?;
    let speed = rows as f64 / start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(speed)
}

async fn sqlx_exec(tx: &mut artifactstore_db::Tx, sql: &str) -> anyhow::Result<()> {
    match tx.as_exec() {
        Exec::Sqlite(c) => sqlx::query(sql).execute(c).await.map(drop)?,
        Exec::Postgres(c) => sqlx::query(sql).execute(c).await.map(drop)?,
    }
    Ok(())
}

/// Commits `groups` transactions of `group` event rows each, one after another, straight into the (empty) `events`
/// table through the same driver the product uses: one multi-row `INSERT` and the commit, nothing else (no head, no
/// hashing, no queue; on SQLite `INSERT OR FAIL`, as the committer writes). The most events per second a log that
/// commits groups of this size one at a time can reach.
pub(crate) async fn grouped_commit_speed(db: &Database, group: usize, groups: usize) -> anyhow::Result<f64> {
    let sql = format!(
        "{} INTO events (sequence, created_at, event_type, subject_kind, subject_id, actor, payload, \
         payload_digest, chain_hash) VALUES {}",
        artifactstore_db::bulk_insert(db.backend()),
        artifactstore_db::placeholders(db.backend(), group, 9)
    );
    // Rows shaped like the c workload's: a file-ingested payload of about 170 bytes, 32-byte digests, and a subject
    // id per blob, random-looking as the real ones (derived from digests) are, which scatters the subject index.
    let subject = |seq: i64| uuid::Uuid::from_slice(&blake3::hash(&(-seq).to_le_bytes()).as_bytes()[..16]).ok();
    let payload = vec![0xa5u8; 170];
    let created_at = chrono::Utc::now();
    // One connection kept for every group, as the log's committer keeps one.
    let mut conn = Some(db.acquire().await?);
    let begin = match db.backend() {
        artifactstore_db::Backend::Sqlite => "BEGIN IMMEDIATE",
        artifactstore_db::Backend::Postgres => "BEGIN",
    };
    let start = Instant::now();
    for g in 0..groups {
        let mut kept = conn.take().expect("given back by the commit");
        match kept.as_exec() {
            Exec::Sqlite(c) => sqlx::query(begin).execute(c).await.map(drop)?,
            Exec::Postgres(c) => sqlx::query(begin).execute(c).await.map(drop)?,
        }
        let mut tx = Tx::adopt(kept);
        macro_rules! bind_all {
            ($query:expr) => {{
                let mut query = $query;
                for i in 0..group {
                    let seq = (g * group + i + 1) as i64;
                    let digest = blake3::hash(&seq.to_le_bytes());
                    query = query
                        .bind(seq)
                        .bind(created_at)
                        .bind("v1.file.ingested")
                        .bind("blob")
                        .bind(subject(seq))
                        .bind("bench")
                        .bind(payload.as_slice())
                        .bind(digest.as_bytes().to_vec())
                        .bind(digest.as_bytes().to_vec());
                }
                query
            }};
        }
        match tx.as_exec() {
            Exec::Sqlite(c) => bind_all!(sqlx::query(&sql)).execute(c).await.map(drop)?,
            Exec::Postgres(c) => bind_all!(sqlx::query(&sql)).execute(c).await.map(drop)?,
        }
        conn = tx.commit_keeping().await?;
    }
    Ok((group * groups) as f64 / start.elapsed().as_secs_f64())
}

/// The filesystem side of workload a's single stream alone: `blob` staged into a fresh filesystem store through the
/// product's own staging code in `chunk`-byte chunks, each ended durably (`finish(true)`) before the next begins, as
/// each `PATCH` is, in frames of 256 KiB, then committed to its address; no HTTP, no hashing, no database; MiB/s.
/// Checks the blob was stored whole.
pub(crate) async fn store_alone_stream(dir: &Path, blob: &crate::push::Blob, chunk: usize) -> anyhow::Result<f64> {
    use artifactstore_blobstore::{BlobStore, Location, Placed};
    let store = BlobStore::open(&Location::File(dir.to_path_buf()))?;
    let session = uuid::Uuid::new_v4();
    let start = Instant::now();
    let mut state = store.stage_open(session).await?;
    let mut offset = 0;
    while offset < blob.bytes.len() {
        let end = (offset + chunk.max(1)).min(blob.bytes.len());
        let mut writer = store.stage_writer(session, &state, offset as u64).await?;
        let mut at = offset;
        while at < end {
            let next = (at + 256 * 1024).min(end);
            writer.write(blob.bytes.slice(at..next)).await?;
            at = next;
        }
        state = writer.finish(true).await?;
        offset = end;
    }
    let placed = store.stage_commit(session, &state, &blob.blake3, blob.bytes.len() as u64).await?;
    let speed = blob.bytes.len() as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
    anyhow::ensure!(matches!(placed, Placed::Stored), "the blob was not newly stored");
    anyhow::ensure!(store.size_of(&blob.blake3).await? == Some(blob.bytes.len() as u64), "the blob is not whole");
    store.remove(&blob.blake3).await?;
    Ok(speed)
}

/// The filesystem side of workload b alone: `clients` tasks each place blobs into a fresh filesystem store through
/// the product's own staging code, as a one-request upload does (stage the bytes, then `commit_writer`: write, and
/// a round of the store's placing thread shared with the placements queued meanwhile: filesystem sync, a leaf
/// directory when new, rename, filesystem sync), with no HTTP and no database; blobs per second. Checks every blob
/// was stored.
pub(crate) async fn store_alone_rate(
    dir: &Path,
    blobs: std::sync::Arc<Vec<crate::push::Blob>>,
    clients: usize,
) -> anyhow::Result<f64> {
    use artifactstore_blobstore::{BlobStore, Location, Placed};
    let store = std::sync::Arc::new(BlobStore::open(&Location::File(dir.to_path_buf()))?);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (store, next, blobs) = (store.clone(), next.clone(), blobs.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(blob) = blobs.get(n) else { return anyhow::Ok(()) };
                    let session = uuid::Uuid::new_v4();
                    let state = store.stage_open(session).await?;
                    let mut writer = store.stage_writer(session, &state, 0).await?;
                    writer.write(blob.bytes.clone()).await?;
                    let placed = store.commit_writer(writer, &blob.blake3).await?;
                    anyhow::ensure!(matches!(placed, Placed::Stored), "blob {n} was not newly stored");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rate = blobs.len() as f64 / start.elapsed().as_secs_f64();
    for blob in blobs.iter() {
        let size = store.size_of(&blob.blake3).await?;
        anyhow::ensure!(size == Some(blob.bytes.len() as u64), "blob {} is missing", blob.blake3);
    }
    Ok(rate)
}
