//! The HTTP API: one route table per version, merged by `router`, which never binds a socket.

pub(crate) mod blobs;
pub(crate) mod body;
pub(crate) mod budget;
mod envelope;
pub(crate) mod events;
mod extract;
mod gc;
mod health;
mod oci;
pub(crate) mod packages;
mod policies;
mod rate;
pub(crate) mod scope;
mod stream;
pub(crate) mod uploads;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use axum::Router;

use crate::problem::ApiError;
use crate::server::AppState;

pub(crate) use body::broken_body;
pub use envelope::{envelope_cbor, envelope_json, envelope_text, payload_json};
pub(crate) use rate::MinRate;
pub use stream::FrameCache;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::render))
        .nest("/v1", v1())
        .merge(oci::routes())
        .fallback(|| async { ApiError::not_found("no such path") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Every body is streamed or read with a limit of its own, answered as a problem.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .with_state(state)
}

fn v1() -> Router<AppState> {
    Router::new()
        .route("/events", get(events::list))
        .route("/events/head", get(events::head))
        .route("/events/stream", get(stream::stream))
        .route("/events/{sequence}", get(events::one))
        .route("/uploads", post(uploads::open))
        .route(
            "/uploads/{id}",
            axum::routing::patch(uploads::append).head(uploads::status).put(uploads::commit).delete(uploads::abort),
        )
        .route("/blobs/{digest}", get(blobs::get))
        .route("/gc", post(gc::run))
        .route("/policies", get(policies::list))
        .route("/policies/{name}", get(policies::get).put(policies::put).delete(policies::delete))
        .route("/packages", get(packages::list))
        .route("/packages/{*rest}", any(packages::dispatch))
}
