//! Workloads run inside this process against the kernel crates: event append (c) and replay (d).

use std::time::{Duration, Instant};

use anyhow::ensure;
use artifactstore_db::Database;
use artifactstore_eventlog::{EventLog, LogOptions, NewEvent};
use artifactstore_views::vocab::{FileIngested, PackageCreated, PackageFile, RetentionChange, RetentionKind};
use artifactstore_views::RegistryEvent;
use uuid::Uuid;

/// What one append run measured.
#[derive(Debug, Clone)]
pub(crate) struct AppendRun {
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) commits: u64,
}

/// The digests of the `n`th made-up blob: random-looking, as real digests are.
fn digests(n: u64) -> (String, String) {
    let hex = blake3::hash(&n.to_le_bytes()).to_hex();
    (format!("blake3:{hex}"), format!("sha256:{hex}"))
}

fn ingested(n: u64) -> RegistryEvent {
    let (blake3, sha256) = digests(n);
    RegistryEvent::FileIngested(FileIngested { blake3, sha256, size: 4096 + n % 1000, media_type: None })
}

/// `appenders` tasks append `events` events in all through `EventLog::append`, each waiting for its own to be durable.
pub(crate) async fn append(db: &Database, appenders: usize, events: u64) -> anyhow::Result<AppendRun> {
    let log = EventLog::open(db.clone(), LogOptions::default()).await?;
    let before = log.stats();
    let first = log.head().sequence;
    let per = events / appenders as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders as u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per as usize);
            for i in 0..per {
                let event: NewEvent = ingested(first + a * per + i).to_new_event("bench")?;
                let t = Instant::now();
                log.append(event).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    let total = per * appenders as u64;
    let head = log.read_head().await?;
    ensure!(head.sequence == first + total, "head at {} after {total} appends from {first}", head.sequence);
    let report = log.verify_chain(|_, _| {}).await?;
    ensure!(report.faults.is_empty(), "the chain has faults: {:?}", report.faults.first());
    let after = log.stats();
    Ok(AppendRun { events: total, elapsed, latencies, commits: after.commits - before.commits })
}

/// Fills the log (and, through the live path, the views) with `events` events: per ten, eight blobs ingested, one
/// package version naming two of them and one hold on it.
pub(crate) async fn fill(db: &Database, events: u64) -> anyhow::Result<EventLog> {
    const PER_TRANSACTION: u64 = 2_000;
    let log = EventLog::open(db.clone(), LogOptions::default()).await?;
    let mut n = 0u64;
    while n < events {
        let mut batch = Vec::new();
        let end = (n + PER_TRANSACTION).min(events);
        let mut last_package = None;
        while n < end {
            let event = match n % 10 {
                8 => {
                    let file = |k: u64, path: &str| PackageFile {
                        path: path.into(),
                        blake3: digests(k).0,
                        sha256: digests(k).1,
                        size: 4096 + k % 1000,
                        media_type: Some("application/octet-stream".into()),
                    };
                    let package_id = Uuid::now_v7();
                    last_package = Some(package_id);
                    RegistryEvent::PackageCreated {
                        package_id,
                        payload: PackageCreated {
                            name: format!("bench/pkg-{}", n / 1000),
                            version: format!("1.0.{n}"),
                            files: vec![file(n - 1, "bin/tool"), file(n - 2, "lib/libtool.so")],
                            metadata: artifactstore_cbor::Value::Map(vec![]),
                        },
                    }
                }
                9 if last_package.is_some() => RegistryEvent::Retention {
                    kind: RetentionKind::HoldSet,
                    payload: RetentionChange {
                        package_id: last_package.take().map(|p| p.to_string()).unwrap_or_default(),
                        until: None,
                        reason: Some("release candidate".into()),
                        ..RetentionChange::default()
                    },
                },
                _ => ingested(n),
            };
            batch.push(event);
            n += 1;
        }
        log.transact(move |wtx| {
            Box::pin(async move {
                for event in &batch {
                    artifactstore_views::record(wtx, "bench", event).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .await?;
    }
    Ok(log)
}

/// Records one more blob ingestion (a made-up digest from `n`, apart from `fill`'s) in a transaction of its own;
/// returns its sequence.
pub(crate) async fn append_one(log: &EventLog, n: u64) -> anyhow::Result<u64> {
    let event = ingested((1 << 40) | n);
    let appended = log
        .transact(move |wtx| {
            Box::pin(async move { Ok::<_, anyhow::Error>(artifactstore_views::record(wtx, "bench", &event).await?) })
        })
        .await?;
    Ok(appended.sequence)
}

/// Reads every event of the log in replay's batches and decodes each payload into its typed form; events/s.
pub(crate) async fn read_speed(log: &EventLog) -> anyhow::Result<f64> {
    let mut tx = log.database().begin_read().await?;
    let start = Instant::now();
    let (mut after, mut count) = (0, 0u64);
    loop {
        let events = artifactstore_eventlog::read_range(&mut tx, after, 5_000).await?;
        let Some(last) = events.last() else { break };
        after = last.sequence;
        for event in &events {
            std::hint::black_box(RegistryEvent::from_event(event)?);
            count += 1;
        }
    }
    let speed = count as f64 / start.elapsed().as_secs_f64();
    tx.rollback().await?;
    Ok(speed)
}

/// What a replay measured.
#[derive(Debug, Clone)]
pub(crate) struct ReplayRun {
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
}

/// Rebuilds the views of a filled log from nothing and checks they equal the live ones: as the product does, or with
/// `in_log_order`, writing the blob rows as their events come instead of folding them.
pub(crate) async fn replay(log: &EventLog, in_log_order: bool) -> anyhow::Result<ReplayRun> {
    let live = views_now(log).await?;
    let start = Instant::now();
    let mut applied = None;
    let progress = |after, upto| {
        if after == upto {
            applied = Some(start.elapsed());
        }
    };
    let stats = match in_log_order {
        false => artifactstore_views::rebuild(log, progress).await?,
        true => artifactstore_views::rebuild_in_log_order(log, progress).await?,
    };
    let elapsed = start.elapsed();
    if let Some(applied) = applied {
        eprintln!(
            "d: every event handed to the writer after {:.2} s; the last batch, the indexes and the commit took {:.2} s more",
            applied.as_secs_f64(),
            (elapsed - applied).as_secs_f64()
        );
    }
    let replayed = views_now(log).await?;
    let differences = artifactstore_views::diff(&live, &replayed);
    ensure!(differences.is_empty(), "replayed views differ from the live ones: {:?}", differences.first());
    Ok(ReplayRun { events: stats.events, elapsed })
}

/// Rebuilds the views of a filled log from a snapshot taken at its head (every row loaded, no event left to
/// replay), and checks they equal the live ones. Returns the rows loaded and the time the rebuild took.
pub(crate) async fn restore(log: &EventLog) -> anyhow::Result<(usize, Duration)> {
    let snapshot = artifactstore_views::take(log).await?;
    let start = Instant::now();
    let stats = artifactstore_views::rebuild_from(log, &snapshot, |_, _| {}).await?;
    let elapsed = start.elapsed();
    ensure!(stats.events == 0, "a snapshot at the head left {} events to replay", stats.events);
    let restored = views_now(log).await?;
    let differences = artifactstore_views::diff(&snapshot.views, &restored);
    ensure!(differences.is_empty(), "views restored from a snapshot differ: {:?}", differences.first());
    Ok((snapshot.views.rows(), elapsed))
}

/// Every row of the views as committed now.
async fn views_now(log: &EventLog) -> anyhow::Result<artifactstore_views::ViewsDump> {
    let mut tx = log.database().begin_read().await?;
    let views = artifactstore_views::dump(&mut tx).await?;
    tx.rollback().await?;
    Ok(views)
}

/// What reading blobs' histories measured: each read's time through the blob's row, and a few through the log.
#[derive(Debug, Clone)]
pub(crate) struct HistoryRun {
    pub(crate) listed: Vec<Duration>,
    pub(crate) scanned: Vec<Duration>,
}

/// Reads the whole history of `samples` blobs of a filled log, from sequence 0 to the head, as the feed serves a
/// read filtered to one file subject (through the blob's row); and of `scans` of them through the log itself, as the
/// feed would without the row. Each read must find the blob's ingestion.
pub(crate) async fn history_reads(log: &EventLog, samples: u64, scans: u64) -> anyhow::Result<HistoryRun> {
    use artifactstore_eventlog::Filter;
    let head = log.read_head().await?.sequence;
    // Blobs spread over the whole log; `fill` ingests blob n at sequence n + 1 unless n % 10 is 8 or 9.
    let picks: Vec<u64> = (0..samples).map(|i| (i * (head / samples.max(1))) / 10 * 10 + 3).collect();
    let filter = |n: u64| Filter {
        subject_kind: Some("file".into()),
        subject_id: Some(artifactstore_views::vocab::file_id(&digests(n).0)),
        ..Filter::default()
    };
    let (mut listed, mut scanned) = (Vec::new(), Vec::new());
    for &n in &picks {
        let start = Instant::now();
        let events = artifactstore_views::file_subject_events(log, 0, head, 100, &filter(n)).await?;
        listed.push(start.elapsed());
        let events = events.ok_or_else(|| anyhow::anyhow!("the views did not serve blob {n}'s history"))?;
        ensure!(events.len() == 1 && events[0].sequence == n + 1, "blob {n}: {} events", events.len());
    }
    for &n in picks.iter().step_by((samples / scans.max(1)).max(1) as usize).take(scans as usize) {
        let start = Instant::now();
        let events = log.read(0, head, 100, &filter(n)).await?;
        scanned.push(start.elapsed());
        ensure!(events.len() == 1 && events[0].sequence == n + 1, "blob {n} through the log: {}", events.len());
    }
    Ok(HistoryRun { listed, scanned })
}
