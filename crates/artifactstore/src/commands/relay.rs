//! `artifactstore relay`: the broker relay as a process of its own.

use std::process::ExitCode;

use crate::cli::RelayArgs;
use crate::config::{FileConfig, InstanceConfig};
use crate::instance::Instance;

pub(crate) async fn run(args: &RelayArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(&args.instance)?;
    let file = FileConfig::for_args(&args.instance)?;
    let relay = file
        .relay
        .resolve(args.nats.as_deref(), args.stream.as_deref(), args.subject_prefix.as_deref(), true)
        .expect("a required relay configuration always resolves");
    let instance = Instance::open(&config).await?;
    let log = instance.log.clone();
    // Without `serve` in this process, nothing else notices other instances' commits: poll the head.
    let poller = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let _ = log.refresh_head().await;
        }
    });
    tracing::info!(nats = %relay.url, stream = %relay.stream, "relaying events");
    let result = crate::relay::run(instance.log.clone(), relay, |_| {}, super::shutdown_signal()).await;
    poller.abort();
    result.map(|()| ExitCode::SUCCESS)
}
