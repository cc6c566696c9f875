//! The HTTP API: one route table per version, merged by `router`, which never binds a socket.

mod envelope;
mod events;
mod extract;
mod health;

use axum::routing::get;
use axum::Router;

use crate::problem::ApiError;
use crate::server::AppState;

pub use envelope::{envelope_json, payload_json};

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .nest("/v1", v1())
        .fallback(|| async { ApiError::not_found("no such path") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

fn v1() -> Router<AppState> {
    Router::new()
        .route("/events", get(events::list))
        .route("/events/head", get(events::head))
        .route("/events/{sequence}", get(events::one))
}
