//! `archive` and `restore`: the event archive by hand, and a database rebuilt from it.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use artifactstore_blobstore::{BlobStore, Location};

use crate::archive;
use crate::cli::{InstanceArgs, RestoreArgs};
use crate::config::InstanceConfig;
use crate::instance::Instance;

/// `archive`: seal everything not yet archived.
pub(crate) async fn archive(args: &InstanceArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(args)?;
    let instance = Instance::open(&config).await?;
    let log_id = instance.log.head().log_id;
    let mut archived = archive::segments(&instance.store, log_id).await?.last().map_or(0, |s| s.last);
    let mut sealed = 0;
    while let Some(segment) =
        archive::seal(&instance.log, &instance.store, archived, archive::ArchiveConfig::default().segment_events)
            .await?
    {
        archived = segment.last;
        sealed += 1;
    }
    println!("archive of log {log_id}: {sealed} new segment(s), archived up to event {archived}");
    Ok(ExitCode::SUCCESS)
}

/// `restore`: events from the archive into an empty database, chain checked, then the views.
pub(crate) async fn restore(args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(&args.instance)?;
    let source = match &args.from {
        Some(url) => BlobStore::open(&Location::parse(url)?)?,
        None => BlobStore::open(&config.store)?,
    };
    let log_id = match args.log_id {
        Some(id) => id,
        None => {
            let logs = archive::archived_logs(&source).await?;
            match logs.as_slice() {
                [only] => *only,
                [] => bail!("the store {} holds no event archive", source.location()),
                many => bail!(
                    "the archive holds several logs ({}); choose one with --log-id",
                    many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    };
    let instance = Instance::open(&config).await?;
    let restored = archive::restore(&source, log_id, &instance.log).await.context("restore the events")?;
    let stats = artifactstore_views::rebuild(&instance.log, |_, _| {}).await.context("rebuild the views")?;
    let head = instance.log.read_head().await?;
    println!(
        "restored {} events from {} segment(s) of log {log_id}; chain verified up to blake3:{}; views rebuilt at {}; \
         the restored log's id is {} (clients resume with a fresh cursor)",
        restored.events,
        restored.segments,
        hex::encode(restored.chain_hash),
        stats.head_sequence,
        head.log_id,
    );
    Ok(ExitCode::SUCCESS)
}
