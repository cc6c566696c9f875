//! Workload g: blobs downloaded from both servers by four clients, beside page-cache reads of the same files; and
//! small blobs downloaded by 16 clients, each on its kept-alive connection, with their latency.

use std::path::Path;
use std::sync::Arc;

use super::{median, order, start, Bins};
use crate::push::{self, Blob, Client};
use crate::report::{self, percentile, Report, Row};
use crate::servers::Kind;
use crate::{limits, Sizes, MIB};

pub(crate) async fn workload_g(report: &mut Report, sizes: &Sizes, bins: Bins<'_>, work: &Path) -> anyhow::Result<()> {
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
    small_downloads(report, sizes, bins, work).await
}

/// 4 KiB blobs downloaded by 16 clients, every request on a kept-alive connection of its client's pool: the rate
/// and the p99 of one download.
async fn small_downloads(report: &mut Report, sizes: &Sizes, bins: Bins<'_>, work: &Path) -> anyhow::Result<()> {
    let blobs: Arc<Vec<Blob>> = Arc::new((0..sizes.g_small_blobs as u64).map(|n| Blob::random(n, 4096)).collect());
    let mut rates = [Vec::new(), Vec::new()];
    let mut latencies = [Vec::new(), Vec::new()];
    for round in 0..sizes.repeats {
        for kind in order(round) {
            let server = start(kind, bins, &work.join(format!("g-small-{}-{round}", kind.name()))).await?;
            let client = Client::new(kind, &server.base)?;
            push::push_all(&client, blobs.clone(), 16, 4096).await?;
            let run = push::download_all(&client, blobs.clone(), 16, sizes.g_rounds).await?;
            eprintln!("g: {} 4 KiB: {:.0} blobs/s", kind.name(), run.per_second());
            rates[kind as usize].push(run.per_second());
            latencies[kind as usize].extend(run.latencies);
        }
    }
    let rates = rates.map(median);
    let p99 = latencies.map(|mut l| percentile(&mut l, 0.99));
    let what = format!(
        "download {} × 4 KiB blobs, 16 clients on kept-alive connections (median of {})",
        sizes.g_small_blobs, sizes.repeats
    );
    let p99_ok = p99[0] < std::time::Duration::from_millis(5);
    report.push(
        Row::compare("g", &what, rates[0], rates[1], "blobs/s", 2.0)
            .with_note(format!(
                "p99 {:.2} ms vs {:.2} ms",
                p99[0].as_secs_f64() * 1000.0,
                p99[1].as_secs_f64() * 1000.0
            ))
            .also("p99 < 5 ms", p99_ok),
    );
    Ok(())
}
