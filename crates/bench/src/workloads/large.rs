//! Workloads a and f: large blobs pushed in chunks to both servers (several at once by two clients, and one big
//! blob alone), the server's peak memory while it ingests the big one (f), and the limits of a large upload: the
//! dual digest, the disk's synced writes, and the disk and the store alone right after each of artifactstore's big
//! blobs.

use std::sync::Arc;
use std::time::Duration;

use super::{median, order, start, Bins};
use crate::push::{self, Blob, Client};
use crate::report::{mib, Report, Row};
use crate::servers::Kind;
use crate::{limits, Sizes, MIB};

pub(crate) async fn workload_a_f(
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
