//! `artifactstore serve`.

use std::process::ExitCode;

use anyhow::Context as _;
use artifactstore_db::redact_url;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::config::ServeConfig;
use crate::instance::Instance;

pub(crate) async fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = ServeConfig::resolve(args)?;
    let instance = Instance::open(&config.instance).await?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
    let head = instance.log.head();
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %redact_url(&config.instance.database),
        store = %config.instance.store,
        log_id = %head.log_id,
        head = head.sequence,
        "artifactstore is serving"
    );
    if config.instance.tokens.is_empty() {
        tracing::warn!(
            "NO TOKENS ARE CONFIGURED: this instance is OPEN. Anyone who can reach {} may upload, publish, \
             delete and change retention. Add [[tokens]] to the configuration file to require bearer tokens.",
            config.listen
        );
    }
    let background =
        crate::server::Background { relay: config.relay.clone(), archive: config.archive, gc_every: config.gc_every };
    if let Some(archive) = &config.archive {
        tracing::info!(segment_events = archive.segment_events, "archiving the log into the blob store");
    }
    crate::server::serve_configured(listener, instance, background, shutdown_signal()).await.context("serve HTTP")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
