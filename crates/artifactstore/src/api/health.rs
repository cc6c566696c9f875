//! `/healthz` and `/readyz`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

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
    let stale = {
        let mut conn = state.instance.db.acquire().await?;
        artifactstore_views::stale_reason(&mut conn).await?
    };
    if let Some(reason) = stale {
        return Err(ApiError::unavailable(format!(
            "the views are behind the log ({reason}); run `artifactstore replay`"
        )));
    }
    state.instance.store.ready().await.map_err(|err| {
        ApiError::unavailable(format!("the blob store {} is not reachable: {err}", state.instance.store.location()))
    })?;
    Ok(Json(json!({"status": "ready", "head": state.instance.log.head().sequence})))
}
