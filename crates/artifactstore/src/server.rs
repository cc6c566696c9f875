//! The HTTP server: state, background housekeeping, and serving on a bound listener.

use std::future::Future;
use std::time::Duration;

use artifactstore_db::Backend;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::instance::Instance;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The instance's database, log and store.
    pub instance: Instance,
}

/// How often SQLite's write-ahead log is checkpointed and truncated.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// How often an instance on PostgreSQL looks for other instances' commits.
const HEAD_POLL_EVERY: Duration = Duration::from_millis(250);

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    instance: Instance,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState { instance };
    let housekeeping = tokio::spawn(housekeeping(state.instance.clone()));
    let sweeper = tokio::spawn(sweeper(state.clone()));
    let app = crate::api::router(state).layer(TraceLayer::new_for_http());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    housekeeping.abort();
    sweeper.abort();
    served
}

/// How often expired upload sessions and orphaned staged bytes are reclaimed.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Reclaims expired upload sessions; staged bytes no session owns are reclaimed once they are as old as the idle
/// limit, so a request still writing them (on this or another instance) is never cut short.
async fn sweeper(state: AppState) {
    let orphan_age = state.instance.config.uploads.session_idle;
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match crate::api::sweep(&state, orphan_age).await {
            Ok((0, 0)) => {}
            Ok((sessions, orphans)) => tracing::info!(sessions, orphans, "reclaimed expired upload sessions"),
            Err(err) => tracing::warn!(error = ?err, "sweeping upload sessions failed"),
        }
    }
}

/// Background work of a running instance: WAL checkpoints on SQLite, head polling on PostgreSQL.
async fn housekeeping(instance: Instance) {
    match instance.db.backend() {
        Backend::Sqlite => {
            let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match instance.db.checkpoint().await {
                    Ok(Some(stats)) if stats.busy => {
                        tracing::debug!(?stats, "checkpoint could not finish; a reader holds the log");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed"),
                }
            }
        }
        Backend::Postgres => {
            let mut ticks = tokio::time::interval(HEAD_POLL_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(err) = instance.log.refresh_head().await {
                    tracing::warn!(error = %err, "reading the head failed");
                }
            }
        }
    }
}
