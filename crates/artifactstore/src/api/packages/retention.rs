//! Deleting a package version, and extending or holding its retention.

use artifactstore_db::Tx;
use artifactstore_views::queries::{self, Version};
use artifactstore_views::vocab::{PackageDeleted, RegistryEvent, RetentionChange, RetentionKind};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::json;

use super::read::{manifest, time};
use super::{decode_body, VersionCall};
use crate::api::extract::ApiQuery;
use crate::auth::Scope;
use crate::problem::ApiError;

/// The version `name`@`version` with its retention, read in the write transaction; 404 when there is none.
async fn existing(tx: &mut Tx, name: &str, version: &str) -> Result<Version, ApiError> {
    let found = queries::version(tx, name, version).await?;
    found.ok_or_else(|| ApiError::not_found(format!("no package version {name}@{version}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    reason: Option<String>,
}

/// `DELETE /v1/packages/{name}/versions/{version}`: refused while a hold or a retention time keeps the version.
pub(super) async fn delete(call: VersionCall<'_>, request: Request) -> Result<Response, ApiError> {
    let (actor, n, v) = call.grant(Scope::Admin)?;
    let VersionCall { state, name, version, .. } = call;
    let (mut parts, _body) = request.into_parts();
    let ApiQuery(query) =
        <ApiQuery<DeleteQuery> as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &()).await?;
    let reason = query.reason.filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::bad_request("reason is at most 1024 bytes"));
    }
    let (package_id, sequence) = state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let Version { package, retention: row } = existing(wtx.tx(), &n, &v).await?;
                if row.hold {
                    return Err(ApiError::conflict(format!("{n}@{v} is under a retention hold")));
                }
                if let Some(until) = row.until.filter(|until| *until > Utc::now()) {
                    return Err(ApiError::conflict(format!("{n}@{v} is retained until {}", time(&until))));
                }
                let package_id = package.package_id;
                let event = RegistryEvent::PackageDeleted {
                    package_id,
                    payload: PackageDeleted { name: n, version: v, reason },
                };
                let appended = artifactstore_views::record(wtx, &actor, &event).await?;
                Ok::<_, ApiError>((package_id, appended.sequence))
            })
        })
        .await?;
    Ok(axum::Json(json!({
        "name": name, "version": version, "package_id": package_id.to_string(), "deleted": true, "sequence": sequence,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionIn {
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    hold: Option<bool>,
    #[serde(default)]
    reason: Option<String>,
}

/// `PUT /v1/packages/{name}/versions/{version}/retention`: extends the retention time, sets or releases a hold.
pub(super) async fn retention(call: VersionCall<'_>, request: Request) -> Result<Response, ApiError> {
    let (actor, n, v) = call.grant(Scope::Admin)?;
    let VersionCall { state, name, version, .. } = call;
    let (_, wanted): (_, RetentionIn) = decode_body(request).await?;
    let until = wanted
        .until
        .as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
                .map_err(|err| ApiError::bad_request(format!("until `{t}` is not an RFC 3339 time: {err}")))
        })
        .transpose()?;
    if wanted.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::bad_request("reason is at most 1024 bytes"));
    }
    if until.is_none() && wanted.hold.is_none() {
        return Err(ApiError::bad_request("give `until`, `hold`, or both"));
    }
    let reason = wanted.reason;
    let hold = wanted.hold;
    let sequences = state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let Version { package, retention: row } = existing(wtx.tx(), &n, &v).await?;
                let package_id = package.package_id.to_string();
                let mut changes = Vec::new();
                if let Some(until) = until {
                    match row.until {
                        Some(current) if until < current => {
                            return Err(ApiError::conflict(format!(
                                "{n}@{v} is retained until {}; retention can be extended, never shortened",
                                time(&current)
                            )))
                        }
                        Some(current) if until == current => {}
                        _ => changes.push((RetentionKind::Extended, Some(time(&until)))),
                    }
                }
                match hold {
                    Some(true) if !row.hold => changes.push((RetentionKind::HoldSet, None)),
                    Some(false) if row.hold => changes.push((RetentionKind::HoldReleased, None)),
                    _ => {}
                }
                let mut sequences = Vec::new();
                for (kind, until) in changes {
                    let event = RegistryEvent::Retention {
                        kind,
                        payload: RetentionChange {
                            package_id: package_id.clone(),
                            until,
                            reason: reason.clone(),
                            ..RetentionChange::default()
                        },
                    };
                    sequences.push(artifactstore_views::record(wtx, &actor, &event).await?.sequence);
                }
                Ok::<_, ApiError>(sequences)
            })
        })
        .await?;
    let doc = manifest(state, &name, &version).await?;
    Ok(axum::Json(json!({"retention": doc.retention, "sequences": sequences})).into_response())
}
