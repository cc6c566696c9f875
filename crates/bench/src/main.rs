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
mod workloads;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use crate::report::Report;
use crate::workloads::{
    workload_a_f, workload_b, workload_c, workload_d, workload_e, workload_g, workload_h, workload_i, workload_j,
    workload_k,
};

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
    /// Only these workloads (letters a to j, comma-separated).
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
    /// Override the package versions of workload h's registries (10 blobs each; twice as many blobs collected
    /// during its uploads).
    #[arg(long)]
    gc_versions: Option<u64>,
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
    /// 4 KiB blobs of workload g's small downloads.
    g_small_blobs: usize,
    /// Package versions of workload h's registry on SQLite (10 blobs each, a tenth expiring).
    h_versions: u64,
    /// The same on PostgreSQL.
    h_pg_versions: u64,
    /// Unreferenced blobs collected while workload h uploads.
    h_garbage: u64,
    /// Manifests pushed and pulled by tag in workload i.
    i_manifests: usize,
    /// Events the relay backfills in workload j, and events committed while it follows.
    j_events: u64,
    j_live: u64,
    /// Files in each of workload k's large manifests, and its SSE streams that never read.
    k_files: usize,
    k_streams: usize,
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
                g_small_blobs: 200,
                h_versions: 200,
                h_pg_versions: 200,
                h_garbage: 2_000,
                i_manifests: 100,
                j_events: 5_000,
                j_live: 100,
                k_files: 2_000,
                k_streams: 20,
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
                g_small_blobs: 2_000,
                h_versions: 100_000,
                h_pg_versions: 100_000,
                h_garbage: 200_000,
                i_manifests: 5_000,
                j_events: 1_000_000,
                j_live: 5_000,
                k_files: 60_000,
                k_streams: 300,
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
    if let Some(versions) = args.gc_versions {
        (sizes.h_versions, sizes.h_pg_versions, sizes.h_garbage) = (versions, versions, versions * 2);
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
    if wants('h') {
        workload_h(&mut report, &sizes, bins.0, work.path()).await.context("workload h")?;
    }
    if wants('i') {
        workload_i(&mut report, &sizes, bins, work.path()).await.context("workload i")?;
    }
    if wants('j') {
        workload_j(&mut report, &sizes).await.context("workload j")?;
    }
    if wants('k') {
        workload_k(&mut report, &sizes, bins.0, work.path()).await.context("workload k")?;
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
