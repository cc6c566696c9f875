//! The HTTP server: state, and serving on a bound listener with the background jobs (`jobs`) it runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use artifactstore_eventlog::Broadcaster;
use tokio::net::TcpListener;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::instance::Instance;
use crate::jobs;
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
    /// Room for the feed's renderings, shared by every request.
    pub(crate) render_budget: Arc<crate::api::budget::RenderBudget>,
    /// Its upload sessions.
    pub(crate) uploads: crate::uploads::Uploads,
}

/// How many events a live subscriber may trail the broadcaster by before it is cut.
pub const SUBSCRIBER_BUFFER: usize = 1024;

impl AppState {
    /// The state of a serving instance; starts the event broadcaster, so it must be called inside a runtime.
    pub fn new(instance: Instance) -> AppState {
        let broadcaster = Broadcaster::start(instance.log.clone(), SUBSCRIBER_BUFFER);
        let uploads = crate::uploads::Uploads::new(instance.clone());
        AppState {
            instance,
            broadcaster,
            metrics: Arc::new(Metrics::default()),
            frames: Arc::default(),
            render_budget: Arc::default(),
            uploads,
        }
    }
}

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
    /// Run the lifecycle (expiry) this often.
    pub gc_every: Option<Duration>,
}

/// As `serve`, with the background work `background` asks for.
pub async fn serve_configured(
    listener: TcpListener,
    instance: Instance,
    background: Background,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(instance);
    let relay = background.relay.map(|config| tokio::spawn(jobs::supervise_relay(state.clone(), config)));
    let archiver = background.archive.map(|config| tokio::spawn(jobs::supervise_archive(state.clone(), config)));
    let lifecycle = background.gc_every.map(|every| tokio::spawn(jobs::lifecycle(state.clone(), every)));
    let housekeeping = tokio::spawn(jobs::housekeeping(state.instance.clone()));
    let sweeper = tokio::spawn(jobs::sweeper(state.clone()));
    let body_idle = state.instance.config.uploads.body_idle;
    let limits = state.instance.config.connections.clone();
    let floor = state.instance.config.uploads.min_body_rate;
    // A body must average `floor` bytes a second over each `body_idle` (a trickle holds a session as a stall does).
    let min_rate = axum::middleware::map_request(move |request: axum::extract::Request| async move {
        request.map(|body| axum::body::Body::new(crate::api::MinRate::new(body, floor, body_idle)))
    });
    let app = crate::api::router(state)
        .layer(min_rate)
        .layer(RequestBodyTimeoutLayer::new(body_idle))
        .layer(TraceLayer::new_for_http());
    let served = crate::connections::accept(listener, app, limits, shutdown).await;
    housekeeping.abort();
    sweeper.abort();
    for task in [relay, archiver, lifecycle].into_iter().flatten() {
        task.abort();
    }
    served
}
