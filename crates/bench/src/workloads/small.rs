//! Workload b: 4 KiB blobs uploaded and committed by 16 clients to both servers, beside the store alone (the same
//! blobs through the product's staging code in-process) and the disk's fsyncs per second.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{median, order, start, Bins};
use crate::push::{self, Blob, Client};
use crate::report::{percentile, Report, Row};
use crate::{limits, Sizes};

pub(crate) async fn workload_b(report: &mut Report, sizes: &Sizes, bins: Bins<'_>, work: &Path) -> anyhow::Result<()> {
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
