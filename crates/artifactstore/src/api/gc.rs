//! `POST /v1/gc[?dry_run=true]`: a lifecycle run (expiry, then collection) now (`lifecycle::run`), answered with its report.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use super::extract::ApiQuery;
use crate::auth::{Caller, Scope};
use crate::lifecycle::{self, Report};
use crate::problem::ApiError;
use crate::server::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GcQuery {
    dry_run: Option<bool>,
}

/// Runs expiry and collection now (admin scope); with `dry_run=true`, commits nothing and answers the same report.
pub(crate) async fn run(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<GcQuery>,
) -> Result<Json<Report>, ApiError> {
    caller.require_any(Scope::Admin)?;
    let (actor, dry_run) = (caller.actor().to_owned(), query.dry_run.unwrap_or(false));
    // The run is a task of its own: a client that hangs up does not cut it short between its batches.
    let run = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let report = lifecycle::run(&state.instance, &actor, dry_run).await?;
        state.metrics.record_gc(&report, started.elapsed());
        Ok::<_, ApiError>(report)
    });
    let report = run.await.map_err(|err| ApiError::internal(&err))??;
    Ok(Json(report))
}
