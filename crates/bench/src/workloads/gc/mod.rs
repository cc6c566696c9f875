//! Workload h: garbage collection. A registry of blobs and package versions built in-process, a retention policy
//! that lets a tenth of the versions go, and one lifecycle run (`artifactstore::lifecycle::run`: expiry, then
//! collection) timed on SQLite and, when it answers, on PostgreSQL; a second run right after, with nothing to
//! collect; and 4 KiB uploads by 16 clients to a served instance while `POST /v1/gc` collects a large amount of
//! garbage, beside the same uploads without a collection.
//!
//! The registry is filled fast: its events appended to the log in large transactions, the views then rebuilt from
//! the log (the product's replay), the policy recorded live. Only the blobs a run removes (and a sample of the
//! kept ones, to check they stay) have bytes in the filesystem store, at their content address.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use artifactstore::config::{InstanceConfig, UploadLimits};
use artifactstore::instance::{connect_and_migrate, Instance};
use artifactstore_blobstore::{BlobStore, Location};
use artifactstore_db::{Backend, Database};
use artifactstore_eventlog::{EventLog, LogOptions, NewEvent};
use artifactstore_testkit::TestDb;
use artifactstore_views::vocab::{FileIngested, PackageCreated, PackageFile, PolicyChange, PolicyKind};
use artifactstore_views::RegistryEvent;
use uuid::Uuid;

use crate::push::{Blob, Client};
use crate::report::{percentile, Report, Row};
use crate::servers::{Kind, Server};
use crate::Sizes;

mod uploads;

use uploads::uploads_during_collection;

/// The recorded and stored length of every blob the workload makes up.
const BLOB_BYTES: u64 = 1024;
/// Versions per package: the policy keeps each package's newest `VERSIONS_PER_PACKAGE - 1`, so a tenth expire.
const VERSIONS_PER_PACKAGE: u64 = 10;
/// Blobs per version, each named by that version alone.
const FILES_PER_VERSION: u64 = 10;
/// Events per transaction of the fill.
const PER_TRANSACTION: usize = 20_000;
/// Kept blobs given bytes too, to check a run leaves them.
const KEPT_SAMPLE: u64 = 1_000;
/// Clients uploading 4 KiB blobs, as in workload b.
const CLIENTS: usize = 16;
/// Byte deletions at once in the filesystem limit row, as the collection's deletions in flight.
const UNLINKERS: usize = 32;

pub(crate) async fn workload_h(report: &mut Report, sizes: &Sizes, bin: &Path, work: &Path) -> anyhow::Result<()> {
    let work = std::fs::canonicalize(work)?;
    // Uploads first: each collection below deletes many files, and on ext4 without a journal files created soon
    // after a mass deletion are slow to create (see docs/BENCHMARKS.md), which would slow the baseline.
    uploads_during_collection(report, sizes, bin, &work).await.context("uploads during a collection")?;
    // The filesystem's own deletion speed, before the registries' runs (whose fills do not count).
    let freed = sizes.h_versions / VERSIONS_PER_PACKAGE * FILES_PER_VERSION;
    let unlink = unlink_rate(&work.join("h-unlink"), freed)?;
    eprintln!("h: the filesystem alone unlinks {unlink:.0} files/s");
    report.limit(
        "h",
        &format!(
            "the filesystem alone: {freed} files of {BLOB_BYTES} bytes at their content addresses in the store's \
             layout, unlinked {UNLINKERS} at once (no database, no log)"
        ),
        format!("{unlink:.0} files/s"),
    );
    for (backend, versions) in [(Backend::Sqlite, sizes.h_versions), (Backend::Postgres, sizes.h_pg_versions)] {
        let Some(run) = one_registry(backend, versions, &work).await.with_context(|| format!("{backend:?}"))? else {
            continue;
        };
        eprintln!(
            "h: {backend:?}: built {} blobs / {} versions in {:.1} s; run 1: {:.2} s, {} expired, {} removed \
             ({:.0} blobs/s); run 2: {:.3} s",
            run.blobs,
            run.versions,
            run.fill.as_secs_f64(),
            run.first.as_secs_f64(),
            run.expired,
            run.removed,
            run.rate(),
            run.second.as_secs_f64()
        );
        run.rows(report, versions < sizes.h_versions, unlink);
    }
    Ok(())
}

/// The digests of made-up blob `n` of family `tag`: well-formed and random-looking.
fn digests(tag: &str, n: u64) -> (String, String) {
    let hash = |kind: &str| {
        let mut hasher = blake3::Hasher::new();
        hasher.update(tag.as_bytes()).update(kind.as_bytes()).update(&n.to_le_bytes());
        hasher.finalize().to_hex().to_string()
    };
    (format!("blake3:{}", hash("b")), format!("sha256:{}", hash("s")))
}

fn ingested(tag: &str, n: u64) -> RegistryEvent {
    let (blake3, sha256) = digests(tag, n);
    RegistryEvent::FileIngested(FileIngested { blake3, sha256, size: BLOB_BYTES, media_type: None })
}

/// The registry: `versions` versions of `versions / 10` packages (`bench/pkg-N`), each version naming 10 blobs of
/// its own. Version `k` is version `k / packages` of package `k % packages`, so versions `0..packages` are each
/// package's oldest, the ones a `keep_last` of 9 lets go, and blobs `0..freed()` are theirs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    versions: u64,
}

impl Plan {
    fn packages(self) -> u64 {
        self.versions / VERSIONS_PER_PACKAGE
    }

    fn blobs(self) -> u64 {
        self.packages() * VERSIONS_PER_PACKAGE * FILES_PER_VERSION
    }

    fn freed(self) -> u64 {
        self.packages() * FILES_PER_VERSION
    }

    /// Every version's blobs ingested, then the version created.
    fn events(self) -> impl Iterator<Item = RegistryEvent> {
        let packages = self.packages();
        (0..packages * VERSIONS_PER_PACKAGE).flat_map(move |k| {
            let blobs = k * FILES_PER_VERSION..(k + 1) * FILES_PER_VERSION;
            let files = blobs
                .clone()
                .map(|n| {
                    let (blake3, sha256) = digests("h", n);
                    PackageFile {
                        path: format!("lib/part-{}.so", n % FILES_PER_VERSION),
                        blake3,
                        sha256,
                        size: BLOB_BYTES,
                        media_type: None,
                    }
                })
                .collect();
            let created = RegistryEvent::PackageCreated {
                package_id: Uuid::now_v7(),
                payload: PackageCreated {
                    name: format!("bench/pkg-{}", k % packages),
                    version: format!("1.{}", k / packages),
                    files,
                    metadata: artifactstore_cbor::Value::Map(vec![]),
                },
            };
            blobs.map(|n| ingested("h", n)).chain(std::iter::once(created))
        })
    }
}

/// Appends `events` to the log in transactions of `PER_TRANSACTION`, without the views, then rebuilds the views
/// from the log.
async fn fill(log: &EventLog, events: impl Iterator<Item = RegistryEvent>) -> anyhow::Result<()> {
    async fn commit(log: &EventLog, batch: Vec<NewEvent>) -> anyhow::Result<()> {
        log.transact(move |wtx| {
            Box::pin(async move {
                for event in batch {
                    wtx.append(event)?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .await
    }
    let mut batch = Vec::with_capacity(PER_TRANSACTION);
    for event in events {
        batch.push(event.to_new_event("bench")?);
        if batch.len() == PER_TRANSACTION {
            commit(log, std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        commit(log, batch).await?;
    }
    artifactstore_views::rebuild(log, |_, _| {}).await?;
    Ok(())
}

/// Records the policy that keeps each `bench/` package's 9 newest versions.
async fn set_policy(log: &EventLog) -> anyhow::Result<()> {
    let event = RegistryEvent::Policy {
        kind: PolicyKind::Set,
        payload: PolicyChange {
            name: "bench".into(),
            prefix: "bench/".into(),
            keep_last: Some(VERSIONS_PER_PACKAGE - 1),
            keep_days: None,
        },
    };
    log.transact(move |wtx| {
        Box::pin(async move {
            artifactstore_views::record(wtx, "bench", &event).await?;
            Ok::<_, anyhow::Error>(())
        })
    })
    .await
}

/// The file of a blob (`blake3:<hex>`) in a filesystem store rooted at `root`.
fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join(BlobStore::blob_key(digest.trim_start_matches("blake3:")))
}

/// Writes `BLOB_BYTES` bytes at the content address of each digest under `root`, 4 threads at once.
fn write_blobs(root: &Path, digests: &[String]) -> anyhow::Result<()> {
    let bytes = vec![0x5a; BLOB_BYTES as usize];
    let per = digests.len().div_ceil(4).max(1);
    std::thread::scope(|scope| {
        let tasks: Vec<_> = digests
            .chunks(per)
            .map(|part| {
                let bytes = &bytes;
                scope.spawn(move || {
                    for digest in part {
                        let path = blob_path(root, digest);
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        std::fs::write(&path, bytes)?;
                    }
                    Ok::<_, std::io::Error>(())
                })
            })
            .collect();
        for task in tasks {
            task.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })
}

/// How many of `digests` have a file under `root`.
fn present(root: &Path, digests: &[String]) -> usize {
    digests.iter().filter(|d| blob_path(root, d).exists()).count()
}

/// Writes back the page cache, so a timed run does not pay for the fill's writes.
fn sync() -> anyhow::Result<()> {
    let synced = std::process::Command::new("sync").status()?;
    ensure!(synced.success(), "sync failed: {synced}");
    Ok(())
}

fn instance_config(data: &Path, database: String) -> InstanceConfig {
    InstanceConfig {
        data: data.to_path_buf(),
        database,
        store: Location::File(data.join("blobs")),
        uploads: UploadLimits::default(),
        tokens: Vec::new(),
        gc_grace: Duration::ZERO,
        head_poll: Duration::from_millis(artifactstore::config::DEFAULT_HEAD_POLL_MS),
        connections: artifactstore::config::ConnectionLimits::default(),
    }
}

/// What one registry's two runs measured.
#[derive(Debug)]
struct Runs {
    backend: Backend,
    versions: u64,
    blobs: u64,
    fill: Duration,
    first: Duration,
    expired: usize,
    removed: usize,
    bytes: u64,
    second: Duration,
}

impl Runs {
    fn rate(&self) -> f64 {
        self.removed as f64 / self.first.as_secs_f64()
    }

    fn rows(&self, report: &mut Report, smaller: bool, unlink: f64) {
        let name = match self.backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        let rate = self.rate();
        report.push(Row {
            workload: "h",
            what: format!(
                "{name}: one lifecycle run on {} blobs and {} versions{}; keep_last {} expires {} versions, freeing \
                 {} blobs of {BLOB_BYTES} bytes (no grace; the fill took {:.0} s)",
                self.blobs,
                self.versions,
                if smaller { " (fewer than SQLite's, to keep the fill short)" } else { "" },
                VERSIONS_PER_PACKAGE - 1,
                self.expired,
                self.removed,
                self.fill.as_secs_f64()
            ),
            ours: format!(
                "{rate:.0} blobs/s ({:.1} s: {} versions expired, {} blobs removed, {})",
                self.first.as_secs_f64(),
                self.expired,
                self.removed,
                crate::report::mib(self.bytes)
            ),
            reference: format!("the filesystem alone: {unlink:.0} files/s"),
            ratio: format!("{:.0}% of the filesystem alone", 100.0 * rate / unlink),
            target: "≥ 20000 blobs/s".into(),
            met: Some(rate >= 20_000.0),
        });
        report.push(Row {
            workload: "h",
            what: format!("{name}: the same registry, a second run right after, nothing to collect"),
            ours: format!("{:.3} s", self.second.as_secs_f64()),
            reference: String::new(),
            ratio: String::new(),
            target: "< 1 s".into(),
            met: Some(self.second < Duration::from_secs(1)),
        });
    }
}

/// Builds the registry of `versions` versions on `backend` (a fresh SQLite file, or a PostgreSQL schema dropped
/// afterwards), times two lifecycle runs on it and checks what they did. `None` when PostgreSQL is unreachable.
async fn one_registry(backend: Backend, versions: u64, work: &Path) -> anyhow::Result<Option<Runs>> {
    let dir = work.join(format!("h-{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" }));
    std::fs::create_dir_all(&dir)?;
    let (config, db, scratch) = match backend {
        Backend::Sqlite => {
            let config = instance_config(&dir, format!("sqlite://{}", dir.join("artifactstore.db").display()));
            let db = connect_and_migrate(&config).await?;
            (config, db, None)
        }
        Backend::Postgres => {
            // A schema of its own, dropped when `scratch` goes.
            let Some(scratch) = TestDb::postgres().await else { return Ok(None) };
            (instance_config(&dir, scratch.url.clone()), scratch.db.clone(), Some(scratch))
        }
    };
    let plan = Plan { versions };
    let root = dir.join("blobs");
    let started = Instant::now();
    let log = EventLog::open(db.clone(), LogOptions::default()).await?;
    fill(&log, plan.events()).await?;
    set_policy(&log).await?;
    drop(log);
    let freed: Vec<String> = (0..plan.freed()).map(|n| digests("h", n).0).collect();
    let kept: Vec<String> =
        (plan.freed()..(plan.freed() + KEPT_SAMPLE).min(plan.blobs())).map(|n| digests("h", n).0).collect();
    tokio::task::block_in_place(|| {
        write_blobs(&root, &freed)?;
        write_blobs(&root, &kept)?;
        sync()
    })?;
    let fill_time = started.elapsed();
    eprintln!(
        "h: {backend:?}: {} blobs, {} versions built in {:.1} s",
        plan.blobs(),
        versions,
        fill_time.as_secs_f64()
    );

    let instance = Instance::on_database(db.clone(), config, &[]).await?;
    let t = Instant::now();
    let first = artifactstore::lifecycle::run(&instance, "bench", false)
        .await
        .map_err(|err| anyhow::anyhow!("the lifecycle run failed: {err:?}"))?;
    let first_time = t.elapsed();
    let t = Instant::now();
    let second = artifactstore::lifecycle::run(&instance, "bench", false)
        .await
        .map_err(|err| anyhow::anyhow!("the second lifecycle run failed: {err:?}"))?;
    let second_time = t.elapsed();

    // What the runs did.
    ensure!(
        first.expired.len() as u64 == plan.packages(),
        "the run expired {} versions, not {}",
        first.expired.len(),
        plan.packages()
    );
    ensure!(
        first.expired.iter().all(|e| e.version == "1.0" && e.policy == "bench"),
        "the run expired a version other than a package's oldest"
    );
    let expected: HashSet<&str> = freed.iter().map(String::as_str).collect();
    let removed: HashSet<&str> = first.removed.iter().map(|r| r.digest.as_str()).collect();
    ensure!(
        removed == expected && first.removed.len() == freed.len(),
        "the run removed {} blobs, {} of them among the {} freed",
        first.removed.len(),
        removed.intersection(&expected).count(),
        freed.len()
    );
    ensure!(first.bytes == freed.len() as u64 * BLOB_BYTES, "the run reports {} bytes removed", first.bytes);
    let (left, kept_now) = tokio::task::block_in_place(|| (present(&root, &freed), present(&root, &kept)));
    ensure!(left == 0, "{left} removed blobs still have their bytes");
    ensure!(kept_now == kept.len(), "{} of {} kept blobs lost their bytes", kept.len() - kept_now, kept.len());
    ensure!(
        second.expired.is_empty() && second.removed.is_empty(),
        "the second run expired {} and removed {}",
        second.expired.len(),
        second.removed.len()
    );

    instance.db.close().await;
    drop(instance);
    drop(db);
    drop(scratch);
    Ok(Some(Runs {
        backend,
        versions,
        blobs: plan.blobs(),
        fill: fill_time,
        first: first_time,
        expired: first.expired.len(),
        removed: first.removed.len(),
        bytes: first.bytes,
        second: second_time,
    }))
}

/// Files unlinked per second by the filesystem alone: `count` blob files written in the store's layout, then
/// removed `UNLINKERS` at once.
fn unlink_rate(root: &Path, count: u64) -> anyhow::Result<f64> {
    let files: Vec<String> = (0..count).map(|n| digests("unlink", n).0).collect();
    tokio::task::block_in_place(|| {
        write_blobs(root, &files)?;
        sync()?;
        let next = AtomicUsize::new(0);
        let start = Instant::now();
        std::thread::scope(|scope| {
            let tasks: Vec<_> = (0..UNLINKERS)
                .map(|_| {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(digest) = files.get(i) else { return Ok::<_, std::io::Error>(()) };
                        std::fs::remove_file(blob_path(root, digest))?;
                    })
                })
                .collect();
            for task in tasks {
                task.join().map_err(|_| anyhow::anyhow!("an unlinking thread panicked"))??;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(count as f64 / start.elapsed().as_secs_f64())
    })
}
