//! The HTTP server: state, background housekeeping, and serving on a bound listener.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use artifactstore_db::Backend;
use artifactstore_eventlog::Broadcaster;
use tokio::net::TcpListener;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::instance::Instance;
use crate::metrics::Metrics;
use crate::relay::RelayConfig;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The instance's database, log and store.
    pub instance: Instance,
    /// The live event feed of this process.
    pub broadcaster: Broadcaster,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// SSE frames of recent events, rendered once and shared by every stream.
    pub frames: Arc<crate::api::FrameCache>,
}

/// How many events a live subscriber may trail the broadcaster by before it is cut.
pub const SUBSCRIBER_BUFFER: usize = 1024;

impl AppState {
    /// The state of a serving instance; starts the event broadcaster, so it must be called inside a runtime.
    pub fn new(instance: Instance) -> AppState {
        let broadcaster = Broadcaster::start(instance.log.clone(), SUBSCRIBER_BUFFER);
        AppState { instance, broadcaster, metrics: Arc::new(Metrics::default()), frames: Arc::default() }
    }
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
    serve_configured(listener, instance, Background::default(), shutdown).await
}

/// Optional background work of `serve`.
#[derive(Debug, Clone, Default)]
pub struct Background {
    /// Relay every event to NATS JetStream.
    pub relay: Option<RelayConfig>,
    /// Archive the log into the blob store.
    pub archive: Option<crate::archive::ArchiveConfig>,
}

/// As `serve`, with the background work `background` asks for.
pub async fn serve_configured(
    listener: TcpListener,
    instance: Instance,
    background: Background,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(instance);
    let relay = background.relay.map(|config| tokio::spawn(supervise_relay(state.clone(), config)));
    let archiver = background.archive.map(|config| tokio::spawn(supervise_archive(state.clone(), config)));
    let housekeeping = tokio::spawn(housekeeping(state.instance.clone()));
    let sweeper = tokio::spawn(sweeper(state.clone()));
    let body_idle = state.instance.config.uploads.body_idle;
    let app =
        crate::api::router(state).layer(RequestBodyTimeoutLayer::new(body_idle)).layer(TraceLayer::new_for_http());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    housekeeping.abort();
    sweeper.abort();
    for task in [relay, archiver].into_iter().flatten() {
        task.abort();
    }
    served
}

/// Keeps the in-process relay running: after an error it starts again (and resumes from the stream) in 5 s.
async fn supervise_relay(state: AppState, config: RelayConfig) {
    loop {
        let log = state.instance.log.clone();
        let metrics = state.metrics.clone();
        let progress = move |relayed: u64| {
            let lag = log.head().sequence.saturating_sub(relayed);
            metrics.relay_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        };
        match crate::relay::run(state.instance.log.clone(), config.clone(), progress, std::future::pending()).await {
            Ok(()) => return,
            Err(err) => tracing::error!(error = %format!("{err:#}"), "the broker relay stopped; restarting in 5 s"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Keeps the archiver running; after an error it starts again (continuing after the last segment) in 5 s.
async fn supervise_archive(state: AppState, config: crate::archive::ArchiveConfig) {
    loop {
        let (log, store) = (state.instance.log.clone(), state.instance.store.clone());
        match crate::archive::run(log, store, config, std::future::pending()).await {
            Ok(()) => return,
            Err(err) => tracing::error!(error = %format!("{err:#}"), "the archiver stopped; restarting in 5 s"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
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
