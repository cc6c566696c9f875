//! `artifactstore-bench`: artifactstore measured side by side with the CNCF distribution registry and with the
//! machine's own limits, in one run. `scripts/bench.sh` builds and runs it and writes `docs/BENCHMARKS.md`.
//!
//! Every workload also checks its results (digests the servers answer, bytes downloaded, a gapless feed, a chain
//! without faults, replayed views equal to the live ones), so `--quick` is a correctness run of the harness.

mod fanout;
mod inproc;
mod limits;
mod push;
mod report;
mod servers;
mod sse;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use artifactstore_db::Backend;
use artifactstore_testkit::TestDb;
use clap::Parser;

use crate::push::{Blob, Client};
use crate::report::{mib, percentile, Report, Row};
use crate::servers::{CpuShare, Kind, Server};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks artifactstore against the OCI reference registry and the machine's limits")]
struct Args {
    /// The artifactstore binary to serve (default: the one next to this program).
    #[arg(long)]
    artifactstore: Option<PathBuf>,
    /// The distribution registry binary (Debian's docker-registry).
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    registry: PathBuf,
    /// Small counts: checks the harness and the results in seconds, measures nothing worth quoting.
    #[arg(long)]
    quick: bool,
    /// Only these workloads (letters a to g, comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<char>,
    /// A scratch directory for the servers' data (default: a temporary one under target/).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Put the results into this Markdown file, between its bench markers.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the number of events of the replay workload (d).
    #[arg(long)]
    replay_events: Option<u64>,
    /// The command line to quote in the results.
    #[arg(long, default_value = "scripts/bench.sh")]
    command: String,
    /// Internal: serve as workload e's bare fan-out on this address (the harness starts itself so).
    #[arg(long, hide = true, requires = "fanout_plan")]
    fanout_listen: Option<String>,
    /// Internal: the fan-out's subscribers, events and rate, comma-separated.
    #[arg(long, hide = true, value_delimiter = ',')]
    fanout_plan: Vec<u64>,
}

/// Workload sizes: full, or quick.
struct Sizes {
    a_blobs: usize,
    a_blob: usize,
    a_chunk: usize,
    big_blob: usize,
    b_blobs: usize,
    c_events: u64,
    d_events: u64,
    e_subscribers: usize,
    e_events: u64,
    e_rate: u64,
    g_blobs: usize,
    g_blob: usize,
    g_rounds: usize,
    limit_bytes: usize,
    /// Each comparison runs this many times, alternating which server goes first; medians are reported.
    repeats: usize,
}

const MIB: usize = 1024 * 1024;

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                a_blobs: 4,
                a_blob: 4 * MIB,
                a_chunk: MIB,
                big_blob: 16 * MIB,
                b_blobs: 320,
                c_events: 640,
                d_events: 5_000,
                e_subscribers: 20,
                e_events: 100,
                e_rate: 200,
                g_blobs: 4,
                g_blob: MIB,
                g_rounds: 1,
                limit_bytes: 32 * MIB,
                repeats: 1,
            }
        } else {
            Sizes {
                a_blobs: 8,
                a_blob: 64 * MIB,
                a_chunk: 8 * MIB,
                big_blob: 1024 * MIB,
                b_blobs: 5_000,
                c_events: 64_000,
                d_events: 1_000_000,
                e_subscribers: 1_000,
                e_events: 10_000,
                e_rate: 1_000,
                g_blobs: 16,
                g_blob: 16 * MIB,
                g_rounds: 4,
                limit_bytes: 1024 * MIB,
                repeats: 3,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(listen) = &args.fanout_listen {
        let [subscribers, events, rate] = args.fanout_plan[..] else {
            anyhow::bail!("--fanout-plan takes three numbers")
        };
        return fanout::serve(listen, fanout::Plan { subscribers: subscribers as usize, events, rate });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut sizes = Sizes::new(args.quick);
    if let Some(events) = args.replay_events {
        sizes.d_events = events;
    }
    let artifactstore = match &args.artifactstore {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("artifactstore"),
    };
    anyhow::ensure!(artifactstore.exists(), "{} is missing: build it first", artifactstore.display());
    anyhow::ensure!(args.registry.exists(), "{} is missing: apt-get install docker-registry", args.registry.display());
    let work = match &args.work {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => {
            std::fs::create_dir_all("target/bench")?;
            tempfile::tempdir_in("target/bench")?
        }
    };
    let wants = |w: char| args.only.is_empty() || args.only.contains(&w);
    let mut report = Report::default();
    let bins = (artifactstore.as_path(), args.registry.as_path());

    if wants('a') || wants('f') {
        workload_a_f(&mut report, &sizes, bins, work.path(), wants('a')).await.context("workload a/f")?;
    }
    if wants('b') {
        workload_b(&mut report, &sizes, bins, work.path()).await.context("workload b")?;
    }
    if wants('c') {
        workload_c(&mut report, &sizes, work.path()).await.context("workload c")?;
    }
    if wants('d') {
        workload_d(&mut report, &sizes, work.path()).await.context("workload d")?;
    }
    if wants('e') {
        workload_e(&mut report, &sizes, bins.0, work.path()).await.context("workload e")?;
    }
    if wants('g') {
        workload_g(&mut report, &sizes, bins, work.path()).await.context("workload g")?;
    }

    let markdown = report.markdown(&args.command, args.quick);
    println!("{markdown}");
    if let Some(out) = &args.out {
        report::write_between_markers(out, &markdown)?;
        eprintln!("wrote {}", out.display());
    }
    let missed = report.missed();
    if !missed.is_empty() {
        eprintln!("targets missed: {}", missed.join(", "));
    }
    Ok(())
}

type Bins<'a> = (&'a std::path::Path, &'a std::path::Path);

/// Starts a server fresh for one measured run, after writing back whatever the runs before left in the page cache:
/// distribution does not sync what it stores, and the disk must not spend the next run writing it.
async fn start(kind: Kind, bins: Bins<'_>, dir: &std::path::Path) -> anyhow::Result<Server> {
    let synced = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await??;
    anyhow::ensure!(synced.success(), "sync failed: {synced}");
    match kind {
        Kind::Artifactstore => Server::artifactstore(bins.0, dir).await,
        Kind::Distribution => Server::distribution(bins.1, dir).await,
    }
}

async fn workload_a_f(
    report: &mut Report,
    sizes: &Sizes,
    bins: Bins<'_>,
    work: &std::path::Path,
    a: bool,
) -> anyhow::Result<()> {
    let hash = limits::dual_digest_speed(sizes.limit_bytes);
    let disk = limits::disk_write_speed(work, sizes.limit_bytes, 8 * MIB, false)?;
    eprintln!("a: dual digest {hash:.0} MiB/s, disk write+fsync {disk:.0} MiB/s");
    let blobs: Arc<Vec<Blob>> = Arc::new((0..sizes.a_blobs as u64).map(|n| Blob::random(n, sizes.a_blob)).collect());
    let big = Arc::new(vec![Blob::random(1 << 40, sizes.big_blob)]);
    let mut speeds = [Vec::new(), Vec::new()];
    if a {
        for round in 0..sizes.repeats {
            for kind in order(round) {
                let server = start(kind, bins, &work.join(format!("a-{}-{round}", kind.name()))).await?;
                let client = Client::new(kind, &server.base)?;
                let run = push::push_all(&client, blobs.clone(), 2, sizes.a_chunk).await?;
                eprintln!("a: {}: {:.0} MiB/s", kind.name(), run.mib_per_second());
                speeds[kind as usize].push(run.mib_per_second());
            }
        }
    }
    let speeds = speeds.map(median);
    // The single stream is compared as the two clients are: fresh servers, a median of alternating rounds. The
    // disk's speed right after each of artifactstore's streams (and the store alone right after that) is the limit
    // of that round; their medians are reported, and the largest memory growth of artifactstore's rounds.
    let mut big_speeds = [Vec::new(), Vec::new()];
    let mut rss = [None::<(u64, u64)>, None];
    let mut disk_after_big = Vec::new();
    let mut store_after_big = Vec::new();
    for round in 0..sizes.repeats {
        for kind in order(round) {
            // The big blob goes to a fresh server, so its peak memory is that of this one upload.
            let server = start(kind, bins, &work.join(format!("f-{}-{round}", kind.name()))).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (idle, _) = server.rss()?;
            let client = Client::new(kind, &server.base)?;
            let run = push::push_all(&client, big.clone(), 1, sizes.a_chunk).await?;
            let (_, peak) = server.rss()?;
            eprintln!(
                "a: {} big blob: {:.0} MiB/s, RSS idle {} peak {}",
                kind.name(),
                run.mib_per_second(),
                mib(idle),
                mib(peak)
            );
            big_speeds[kind as usize].push(run.mib_per_second());
            let slot = &mut rss[kind as usize];
            if slot.is_none_or(|(i, p)| peak.saturating_sub(idle) > p.saturating_sub(i)) {
                *slot = Some((idle, peak));
            }
            if kind == Kind::Artifactstore {
                // The limit for a durable single stream is the disk as it is right after that stream, written as
                // the server's staging writes it (each synced chunk's pages let go: ADR 0019).
                drop(server);
                let now = limits::disk_write_speed(work, sizes.big_blob, sizes.a_chunk, true)?;
                eprintln!("a: disk write with a sync per chunk right after the big blob: {now:.0} MiB/s");
                disk_after_big.push(now);
                let alone =
                    limits::store_alone_stream(&work.join(format!("a-store-alone-{round}")), &big[0], sizes.a_chunk)
                        .await?;
                eprintln!("a: the store alone, the big blob in chunks, right after that: {alone:.0} MiB/s");
                store_after_big.push(alone);
            }
        }
    }
    let big_speeds = big_speeds.map(median);
    let rss = rss.map(Option::unwrap_or_default);
    let big_label = format!("{} MiB", sizes.big_blob / MIB);
    if a {
        let label = format!(
            "{} × {} MiB in {} MiB chunks, 2 clients (median of {})",
            sizes.a_blobs,
            sizes.a_blob / MIB,
            sizes.a_chunk / MIB,
            sizes.repeats
        );
        report.limit("a", "dual-digest speed in-process (BLAKE3 + SHA-256, 8 MiB chunks)", format!("{hash:.0} MiB/s"));
        report.limit("a", "disk write speed with fsync", format!("{disk:.0} MiB/s"));
        let disk_big = median(disk_after_big);
        report.limit(
            "a",
            &format!(
                "disk write speed with a sync per {} MiB chunk, each chunk's pages let go once synced (as the \
                 server's staging does), {big_label}, right after each of artifactstore's one-blob runs (median of {})",
                sizes.a_chunk / MIB,
                sizes.repeats
            ),
            format!("{disk_big:.0} MiB/s"),
        );
        let alone = median(store_after_big);
        report.limit(
            "a",
            &format!(
                "the store alone: the same {big_label} staged in {} MiB chunks through the product's filesystem \
                 staging code in-process, each chunk synced before the next (no HTTP, hashing or database), right \
                 after that (median of {})",
                sizes.a_chunk / MIB,
                sizes.repeats
            ),
            format!("{alone:.0} MiB/s"),
        );
        for (what, ours, theirs, limit) in [
            (label, speeds[0], speeds[1], disk),
            (format!("one {big_label} blob (median of {})", sizes.repeats), big_speeds[0], big_speeds[1], disk_big),
        ] {
            report.push(
                Row::compare("a", &what, ours, theirs, "MiB/s", 1.5).with_floor(300.0).with_limit(limit.min(hash)),
            );
        }
    }
    let (idle, peak) = rss[0];
    let growth = peak.saturating_sub(idle);
    report.push(Row {
        workload: "f",
        what: format!("server peak RSS ingesting one {big_label} blob (the largest growth of {})", sizes.repeats),
        ours: format!("{} (idle {}, +{})", mib(peak), mib(idle), mib(growth)),
        reference: format!("distribution: {} (idle {})", mib(rss[1].1), mib(rss[1].0)),
        ratio: format!("+{} over idle", mib(growth)),
        target: "≤ idle + 64 MiB".into(),
        met: Some(growth <= 64 * MIB as u64),
    });
    Ok(())
}

async fn workload_b(report: &mut Report, sizes: &Sizes, bins: Bins<'_>, work: &std::path::Path) -> anyhow::Result<()> {
    let blobs: Arc<Vec<Blob>> = Arc::new((0..sizes.b_blobs as u64).map(|n| Blob::random(n, 4096)).collect());
    let mut rates = [Vec::new(), Vec::new()];
    let mut latencies = [Vec::new(), Vec::new()];
    for round in 0..sizes.repeats {
        for kind in order(round) {
            let server = start(kind, bins, &work.join(format!("b-{}-{round}", kind.name()))).await?;
            let client = Client::new(kind, &server.base)?;
            let run = push::push_all(&client, blobs.clone(), 16, 4096).await?;
            eprintln!("b: {}: {:.0} blobs/s", kind.name(), run.per_second());
            rates[kind as usize].push(run.per_second());
            latencies[kind as usize].extend(run.latencies);
        }
    }
    // The product's filesystem work for the same blobs with no HTTP and no database, into a store of its own.
    let alone = limits::store_alone_rate(&work.join("b-store-alone"), blobs, 16).await?;
    eprintln!("b: the store alone: {alone:.0} blobs/s");
    // The fsync limit is measured after the runs: it creates and deletes tens of thousands of files, and on ext4
    // without a journal (this machine's disk) every file created soon after pays for scanning past recently freed
    // inodes.
    let fsync_dir = work.join("fsync");
    std::fs::create_dir_all(&fsync_dir)?;
    let fsync_1 = limits::fsync_rate(&fsync_dir, 1, Duration::from_secs(2))?;
    let fsync_16 = limits::fsync_rate(&fsync_dir, 16, Duration::from_secs(2))?;
    eprintln!("b: fsyncs/s: {fsync_1:.0} (1 thread), {fsync_16:.0} (16 threads)");
    let rates = rates.map(median);
    let p99 = latencies.map(|mut l| percentile(&mut l, 0.99));
    report.limit(
        "b",
        "fsyncs per second of this disk (4 KiB file each), 1 / 16 threads",
        format!("{fsync_1:.0} / {fsync_16:.0}"),
    );
    report.limit(
        "b",
        "the store alone: the same 4 KiB blobs staged and committed by 16 tasks through the product's filesystem \
         staging code in-process (create and write, then the placing thread's rounds: filesystem sync, new leaf directories and renames, filesystem sync), no HTTP or database",
        format!("{alone:.0} blobs/s"),
    );
    report.push(
        Row::compare(
            "b",
            &format!("4 KiB blobs, upload + commit, 16 clients (median of {})", sizes.repeats),
            rates[0],
            rates[1],
            "blobs/s",
            5.0,
        )
        .with_floor(1500.0)
        .with_limit(fsync_16)
        .with_note(format!(
            "p99 {} ms vs {} ms; {:.0}% of the store alone",
            p99[0].as_millis(),
            p99[1].as_millis(),
            100.0 * rates[0] / alone
        )),
    );
    Ok(())
}

async fn workload_c(report: &mut Report, sizes: &Sizes, work: &std::path::Path) -> anyhow::Result<()> {
    let fsync_1 = limits::fsync_rate(work, 1, Duration::from_secs(1))?;
    report.limit(
        "c",
        "one fsync per event (a 4 KiB file fsynced per event, 1 thread)",
        format!("{fsync_1:.0} events/s"),
    );
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // The database and driver alone, committing the largest groups 64 appenders can form.
        let Some(scratch) = TestDb::of(backend).await else { continue };
        let groups = (sizes.c_events / 64).max(10) as usize;
        let alone = limits::grouped_commit_speed(&scratch.db, 64, groups).await?;
        drop(scratch);
        eprintln!("c: {backend:?} alone, groups of 64: {alone:.0} events/s");
        report.limit(
            "c",
            &format!(
                "{}: 64 event rows per transaction committed one after another, one multi-row INSERT (OR FAIL on \
                 SQLite, as the committer's) and the commit alone (no head, hashing or queue); rows as the workload's, a random-looking subject id each",
                backend_name(backend)
            ),
            format!("{alone:.0} events/s"),
        );
        for appenders in [1usize, 16, 64] {
            // A database of its own (PostgreSQL: a schema, dropped afterwards), from the tests' kit.
            let Some(scratch) = TestDb::of(backend).await else { continue };
            let events = if appenders == 1 { sizes.c_events / 8 } else { sizes.c_events };
            let mut run = inproc::append(&scratch.db, appenders, events).await?;
            drop(scratch);
            let rate = run.events as f64 / run.elapsed.as_secs_f64();
            let (p50, p99) = (percentile(&mut run.latencies, 0.50), percentile(&mut run.latencies, 0.99));
            eprintln!(
                "c: {backend:?} {appenders}: {rate:.0} events/s p50 {p50:?} p99 {p99:?}, {} commits",
                run.commits
            );
            let (floor, p99_cap) = match (backend, appenders) {
                (Backend::Sqlite, 64) => (Some(50_000.0), Some(Duration::from_millis(10))),
                (Backend::Postgres, 64) => (Some(20_000.0), None),
                _ => (None, None),
            };
            let met = floor.map(|f| rate >= f && p99_cap.is_none_or(|cap| p99 < cap));
            report.push(Row {
                workload: "c",
                what: format!(
                    "{}, {appenders} appender{}",
                    backend_name(backend),
                    if appenders == 1 { "" } else { "s" }
                ),
                ours: format!(
                    "{rate:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} events per commit",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3,
                    run.events as f64 / run.commits.max(1) as f64
                ),
                reference: String::new(),
                ratio: if appenders == 64 {
                    format!(
                        "{:.1}× one fsync per event; {:.0}% of the database alone",
                        rate / fsync_1,
                        100.0 * rate / alone
                    )
                } else {
                    format!("{:.1}× one fsync per event", rate / fsync_1)
                },
                target: match (floor, p99_cap) {
                    (Some(f), Some(cap)) => format!("≥ {f:.0}/s, p99 < {} ms", cap.as_millis()),
                    (Some(f), None) => format!("≥ {f:.0}/s"),
                    _ => "—".into(),
                },
                met,
            });
        }
    }
    Ok(())
}

async fn workload_d(report: &mut Report, sizes: &Sizes, work: &std::path::Path) -> anyhow::Result<()> {
    let scratch = TestDb::sqlite().await;
    let raw = limits::raw_insert_speed(&scratch.db, (sizes.d_events as usize).min(1_000_000)).await?;
    let c_api = limits::sqlite_c_insert_speed(work, (sizes.d_events as usize).min(1_000_000), false)?;
    let c_sorted = limits::sqlite_c_insert_speed(work, (sizes.d_events as usize).min(1_000_000), true)?;
    eprintln!(
        "d: raw insert {raw:.0} rows/s, through the C API {c_api:.0} rows/s, in key order {c_sorted:.0} rows/s; \
         filling {} events",
        sizes.d_events
    );
    let log = inproc::fill(&scratch.db, sizes.d_events).await?;
    let read = inproc::read_speed(&log).await?;
    eprintln!("d: read and decode {read:.0} events/s");
    let run = inproc::replay(&log).await?;
    let rate = run.events as f64 / run.elapsed.as_secs_f64();
    eprintln!("d: replay {rate:.0} events/s");
    let (rows, restore) = inproc::restore(&log).await?;
    let restore_rate = rows as f64 / restore.as_secs_f64();
    eprintln!("d: restore from a snapshot: {rows} rows in {:.2} s, {restore_rate:.0} rows/s", restore.as_secs_f64());
    drop(log);
    drop(scratch);
    report.limit(
        "d",
        "reading the log and decoding every payload (replay's reads alone)",
        format!("{read:.0} events/s"),
    );
    report.limit(
        "d",
        "raw insert speed, SQLite: blob rows straight into the artifact_files view, random digests (one transaction, \
         200-row INSERT OR FAIL through sqlx as replay writes them, replay's page cache, the sha256 index built after \
         the rows as replay builds it)",
        format!("{raw:.0} rows/s"),
    );
    report.limit(
        "d",
        "SQLite's own insert speed: the same rows through its C API (rusqlite), one prepared single-row INSERT \
         reused, one transaction, replay's page cache, the sha256 index built after the rows, the durable commit \
         included",
        format!("{c_api:.0} rows/s"),
    );
    // A replay writes this many view rows per event of the workload (every row a snapshot of the result holds).
    let rows_per_event = rows as f64 / run.events.max(1) as f64;
    report.limit(
        "d",
        &format!(
            "SQLite's own insert speed in key order: the same, with the rows sorted by their key first, so every insert \
             lands at the end of the B-tree (SQLite's best case); in events/s at the workload's {rows_per_event:.1} \
             view rows per event"
        ),
        format!("{c_sorted:.0} rows/s = {:.0} events/s", c_sorted / rows_per_event),
    );
    report.push(Row {
        workload: "d",
        what: format!(
            "replay of {} events into empty views (SQLite; 80% blobs, 10% packages of 2 files, 10% holds)",
            run.events
        ),
        ours: format!("{rate:.0} events/s ({:.1} s)", run.elapsed.as_secs_f64()),
        reference: String::new(),
        ratio: format!(
            "{:.2}× reading alone; {:.2}× raw insert; {:.2}× SQLite's own insert speed",
            rate / read,
            rate / raw,
            rate / c_api
        ),
        target: "≥ 250000 events/s".into(),
        met: Some(rate >= 250_000.0),
    });
    report.push(Row {
        workload: "d",
        what: format!(
            "the same views rebuilt from a snapshot taken at the head: {rows} rows of the five views inserted, the \
             indexes built, committed (decoding the snapshot file not included; no event left to replay)"
        ),
        ours: format!("{restore_rate:.0} rows/s ({:.1} s)", restore.as_secs_f64()),
        reference: String::new(),
        ratio: format!("{:.2}× raw insert (blob rows)", restore_rate / raw),
        target: "—".into(),
        met: None,
    });
    Ok(())
}

async fn workload_e(
    report: &mut Report,
    sizes: &Sizes,
    bin: &std::path::Path,
    work: &std::path::Path,
) -> anyhow::Result<()> {
    let server = Server::artifactstore(bin, &work.join("e")).await?;
    let (mut run, cpu) =
        CpuShare::measure(&server.process, sse::run(&server.base, sizes.e_subscribers, sizes.e_events, sizes.e_rate))
            .await?;
    drop(server);
    let (p50, p99, max) = spread(&mut run.latencies);
    eprintln!("e: p50 {p50:?} p99 {p99:?} max {max:?}, reconnects {}; {cpu}", run.reconnects);

    let plan = fanout::Plan { subscribers: sizes.e_subscribers, events: sizes.e_events, rate: sizes.e_rate };
    std::fs::create_dir_all(work.join("e-fanout"))?;
    let bare = fanout::FanoutServer::start(&work.join("e-fanout"), plan).await?;
    let (mut alone, bare_cpu) =
        CpuShare::measure(&bare.process, sse::run_fanout(&bare.base, sizes.e_subscribers, sizes.e_events)).await?;
    drop(bare);
    let (bare_p50, bare_p99, bare_max) = spread(&mut alone.latencies);
    eprintln!(
        "e: bare fan-out p50 {bare_p50:?} p99 {bare_p99:?} max {bare_max:?}, reconnects {}; {bare_cpu}",
        alone.reconnects
    );
    report.limit(
        "e",
        &format!(
            "the same {} subscribers following a bare fan-out server ({} frames rendered once each at {}/s and handed \
             to every stream, waiting frames written together; no database, no uploads): send → delivery, and the \
             cores it and the subscribers kept busy",
            sizes.e_subscribers, sizes.e_events, sizes.e_rate
        ),
        format!(
            "p50 {}, p99 {}, max {}; {} reconnects; {bare_cpu}",
            ms(bare_p50),
            ms(bare_p99),
            ms(bare_max),
            alone.reconnects
        ),
    );
    report.push(Row {
        workload: "e",
        what: format!("{} SSE subscribers, {} events committed at {}/s", run.subscribers, run.events, sizes.e_rate),
        ours: format!(
            "commit → delivery p50 {}, p99 {}, max {}; {} deliveries, none missed or repeated, {} reconnects",
            ms(p50),
            ms(p99),
            ms(max),
            run.latencies.len(),
            run.reconnects
        ),
        reference: format!(
            "offered {:.0} events/s over {:.1} s; {cpu} (subscribers and producer)",
            run.events as f64 / run.elapsed.as_secs_f64(),
            run.elapsed.as_secs_f64()
        ),
        ratio: format!("p99 {:.1}× the bare fan-out's", p99.as_secs_f64() / bare_p99.as_secs_f64().max(1e-6)),
        target: "p99 ≤ 50 ms, none missed".into(),
        met: Some(p99 <= Duration::from_millis(50)),
    });
    Ok(())
}

/// p50, p99 and the maximum of some latencies.
fn spread(latencies: &mut [Duration]) -> (Duration, Duration, Duration) {
    (percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 1.0))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn workload_g(report: &mut Report, sizes: &Sizes, bins: Bins<'_>, work: &std::path::Path) -> anyhow::Result<()> {
    let blobs: Arc<Vec<Blob>> = Arc::new((0..sizes.g_blobs as u64).map(|n| Blob::random(n, sizes.g_blob)).collect());
    let mut speeds = Vec::new();
    let mut files = Vec::new();
    for kind in [Kind::Artifactstore, Kind::Distribution] {
        let server = start(kind, bins, &work.join(format!("g-{}", kind.name()))).await?;
        let client = Client::new(kind, &server.base)?;
        push::push_all(&client, blobs.clone(), 4, 8 * MIB).await?;
        let mut runs = Vec::new();
        for _ in 0..sizes.repeats {
            let run = push::download_all(&client, blobs.clone(), 4, sizes.g_rounds).await?;
            eprintln!("g: {}: {:.0} MiB/s", kind.name(), run.mib_per_second());
            runs.push(run.mib_per_second());
        }
        speeds.push(median(runs));
        if kind == Kind::Artifactstore {
            files = report::files_under(&server.dir.join("data"), sizes.g_blob as u64)?;
        }
    }
    let cache = limits::page_cache_read_speed(&files, 4, sizes.g_rounds)?;
    report.limit("g", "page-cache read of the same blob files, 4 threads, 256 KiB reads", format!("{cache:.0} MiB/s"));
    report.push(
        Row::compare(
            "g",
            &format!(
                "download {} × {} MiB blobs, 4 clients (median of {})",
                sizes.g_blobs,
                sizes.g_blob / MIB,
                sizes.repeats
            ),
            speeds[0],
            speeds[1],
            "MiB/s",
            1.0,
        )
        .with_limit(cache),
    );
    Ok(())
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

/// Which server goes first in a round: they take turns, so neither always meets a cold or a warm machine.
fn order(round: usize) -> [Kind; 2] {
    if round.is_multiple_of(2) {
        [Kind::Artifactstore, Kind::Distribution]
    } else {
        [Kind::Distribution, Kind::Artifactstore]
    }
}

/// The median of some measurements (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
