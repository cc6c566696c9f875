//! `/v1/policies`: retention policies, registry state made by `v1.policy.set` and `v1.policy.removed`.
//!
//! The policy whose prefix is the longest prefix of a package's name governs its versions; a name no policy matches
//! is kept forever. Changing a policy needs the `admin` scope over its prefix; reading them, `read`.

use artifactstore_views::queries;
use artifactstore_views::vocab::{PolicyChange, PolicyKind, RegistryEvent};
use artifactstore_views::PolicyRow;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::decode_body;
use super::extract::ApiPath;
use crate::auth::{Caller, Granted, Reads, Scope};
use crate::names::MAX_NAME;
use crate::problem::ApiError;
use crate::server::AppState;

/// The longest policy name, in bytes.
const MAX_POLICY_NAME: usize = 128;
/// The most versions a policy may keep by count, and the most days by age.
const MAX_KEEP_LAST: u64 = 1_000_000;
const MAX_KEEP_DAYS: u64 = 100_000;
/// A policy's body is small.
const MAX_POLICY_BODY: usize = 16 * 1024;

/// The body of `PUT /v1/policies/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    prefix: String,
    keep_last: Option<u64>,
    keep_days: Option<u64>,
}

/// `GET /v1/policies`: every policy in force whose prefix the caller may read, by name.
pub(crate) async fn list(
    State(state): State<AppState>,
    Granted(caller, _): Granted<Reads>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.instance.db.acquire().await?;
    let policies = queries::policies(&mut conn).await?;
    let shown = policies.iter().filter(|p| caller.may_read(&p.prefix));
    Ok(Json(json!({ "policies": shown.map(|p| policy_json(&change_of(p), p.sequence)).collect::<Vec<_>>() })))
}

/// `GET /v1/policies/{name}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Granted(caller, _): Granted<Reads>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    check_policy_name(&name)?;
    let mut conn = state.instance.db.acquire().await?;
    let policy = queries::policy(&mut conn, &name).await?.ok_or_else(|| not_found(&name))?;
    caller.require(Scope::Read, &policy.prefix)?;
    Ok(Json(policy_json(&change_of(&policy), policy.sequence)))
}

/// `PUT /v1/policies/{name}`: makes or changes a policy (`201` when new, `200` otherwise); the same body again
/// commits nothing.
pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    check_policy_name(&name)?;
    caller.require_any(Scope::Admin)?;
    let (_, body): (_, PolicyBody) = decode_body(request, MAX_POLICY_BODY).await?;
    check_body(&body)?;
    caller.require(Scope::Admin, &body.prefix)?;
    let actor = caller.actor().to_owned();
    let change = PolicyChange { name, prefix: body.prefix, keep_last: body.keep_last, keep_days: body.keep_days };
    let (created, sequence, change) = state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let policies = queries::policies(wtx.tx()).await?;
                let before = policies.iter().find(|p| p.name == change.name);
                if let Some(row) = before {
                    // Changing a policy needs the scope over what it governs now as well as over what it will.
                    caller.require(Scope::Admin, &row.prefix)?;
                    if change_of(row) == change {
                        return Ok::<_, ApiError>((false, row.sequence, change));
                    }
                }
                if let Some(other) = policies.iter().find(|p| p.prefix == change.prefix && p.name != change.name) {
                    return Err(ApiError::conflict(format!(
                        "policy `{}` governs the prefix `{}` already; change that one, or remove it first",
                        other.name, other.prefix
                    )));
                }
                let created = before.is_none();
                let event = RegistryEvent::Policy { kind: PolicyKind::Set, payload: change };
                let appended = artifactstore_views::record(wtx, &actor, &event).await?;
                let RegistryEvent::Policy { payload, .. } = event else { unreachable!("built above") };
                Ok((created, i64::try_from(appended.sequence).unwrap_or(i64::MAX), payload))
            })
        })
        .await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(policy_json(&change, sequence))).into_response())
}

/// `DELETE /v1/policies/{name}`: removes a policy (`204`); the versions it governed are kept forever unless another
/// policy governs them.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_policy_name(&name)?;
    caller.require_any(Scope::Admin)?;
    let actor = caller.actor().to_owned();
    state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let row = queries::policy(wtx.tx(), &name).await?.ok_or_else(|| not_found(&name))?;
                caller.require(Scope::Admin, &row.prefix)?;
                let event = RegistryEvent::Policy { kind: PolicyKind::Removed, payload: change_of(&row) };
                artifactstore_views::record(wtx, &actor, &event).await?;
                Ok::<_, ApiError>(())
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A stored policy as the event that set it says it.
fn change_of(row: &PolicyRow) -> PolicyChange {
    let count = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
    PolicyChange {
        name: row.name.clone(),
        prefix: row.prefix.clone(),
        keep_last: count(row.keep_last),
        keep_days: count(row.keep_days),
    }
}

/// A policy as the API shows it: what it says, and the sequence of the event that last set it.
fn policy_json(policy: &PolicyChange, sequence: i64) -> Value {
    json!({
        "name": policy.name,
        "prefix": policy.prefix,
        "keep_last": policy.keep_last,
        "keep_days": policy.keep_days,
        "sequence": sequence,
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no retention policy `{name}`"))
}

/// A policy name: `[a-z0-9][a-z0-9._-]*`, at most 128 bytes.
fn check_policy_name(name: &str) -> Result<(), ApiError> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !first_ok || !rest_ok || name.len() > MAX_POLICY_NAME {
        return Err(ApiError::bad_request(format!(
            "policy name `{}`: [a-z0-9][a-z0-9._-]*, at most {MAX_POLICY_NAME} bytes",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// A prefix is the start of a package name (empty: every name); the counts are bounded.
fn check_body(body: &PolicyBody) -> Result<(), ApiError> {
    let prefix = &body.prefix;
    let valid = prefix.len() <= MAX_NAME
        && !prefix.starts_with('/')
        && !prefix.contains("//")
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if !valid {
        return Err(ApiError::bad_request(format!(
            "prefix `{}` is not the start of a package name ([a-z0-9._-] segments joined by `/`, at most {MAX_NAME} \
             bytes)",
            prefix.escape_debug()
        )));
    }
    if body.keep_last.is_some_and(|n| n == 0 || n > MAX_KEEP_LAST) {
        return Err(ApiError::bad_request(format!("keep_last is 1 to {MAX_KEEP_LAST}")));
    }
    if body.keep_days.is_some_and(|n| n == 0 || n > MAX_KEEP_DAYS) {
        return Err(ApiError::bad_request(format!("keep_days is 1 to {MAX_KEEP_DAYS}")));
    }
    Ok(())
}
