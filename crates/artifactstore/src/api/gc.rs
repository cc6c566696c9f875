//! `POST /v1/gc[?dry_run=true]`: a lifecycle run now (`lifecycle::run`), answered with its report.

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

/// Runs expiry now (admin scope); with `dry_run=true`, commits nothing and answers the same report.
pub(crate) async fn run(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<GcQuery>,
) -> Result<Json<Report>, ApiError> {
    caller.require_any(Scope::Admin)?;
    let started = std::time::Instant::now();
    let report = lifecycle::run(&state.instance, caller.actor(), query.dry_run.unwrap_or(false)).await?;
    state.metrics.record_gc(&report, started.elapsed());
    Ok(Json(report))
}
