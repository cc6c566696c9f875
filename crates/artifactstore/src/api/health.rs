//! `/healthz` and `/readyz`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::config::StoreUrl;
use crate::problem::ApiError;
use crate::server::AppState;

/// The process is up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers and the blob store is reachable.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state
        .instance
        .db
        .ping()
        .await
        .map_err(|err| ApiError::unavailable(format!("the database does not answer: {err}")))?;
    match &state.instance.store {
        StoreUrl::File(dir) => {
            let meta = tokio::fs::metadata(dir).await.map_err(|err| {
                ApiError::unavailable(format!("the blob store {} is not reachable: {err}", dir.display()))
            })?;
            if !meta.is_dir() {
                return Err(ApiError::unavailable(format!("the blob store {} is not a directory", dir.display())));
            }
        }
    }
    Ok(Json(json!({"status": "ready", "head": state.instance.log.head().sequence})))
}
