//! Workload g: blobs downloaded from both servers by four clients, beside page-cache reads of the same files.

use std::path::Path;
use std::sync::Arc;

use super::{median, start, Bins};
use crate::push::{self, Blob, Client};
use crate::report::{self, Report, Row};
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
    Ok(())
}
