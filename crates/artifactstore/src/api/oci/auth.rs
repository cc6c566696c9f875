//! Who may call `/v2/`: the same bearer tokens as `/v1/`, a repository name standing for a package-name prefix. A
//! caller without credentials gets the challenge OCI clients follow to `/v2/token`, which takes a token as the
//! password of HTTP Basic authentication and hands it back as a bearer token.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use super::{header_value, OciError, API_VERSION};
use crate::auth::{Caller, Scope};
use crate::server::AppState;

/// The caller of a `/v2/` request, allowed `scope` over `repository` (or over some prefix, for `None`).
pub(crate) async fn authorize(
    state: &AppState,
    parts: &mut Parts,
    repository: Option<&str>,
    scope: Scope,
) -> Result<Caller, OciError> {
    basic_as_bearer(&mut parts.headers);
    let caller = Caller::from_request_parts(parts, state)
        .await
        .map_err(|problem| challenge(&parts.headers, repository, problem.detail()))?;
    let allowed = match repository {
        Some(name) => caller.require(scope, name),
        None => caller.require_any(scope),
    };
    allowed.map_err(|problem| OciError::new(403, "DENIED", problem.detail().to_owned()))?;
    Ok(caller)
}

/// `Authorization: Basic <user:token>` read as `Bearer <token>`: clients that log in with a user name and password
/// send the token as the password.
fn basic_as_bearer(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return };
    let Some(encoded) = crate::auth::credentials(value, "Basic") else { return };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else { return };
    let Ok(text) = String::from_utf8(decoded) else { return };
    let token = text.split_once(':').map_or(text.as_str(), |(_, password)| password);
    if let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, bearer);
    }
}

/// `401` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`.
fn challenge(headers: &HeaderMap, repository: Option<&str>, detail: &str) -> OciError {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
    let realm = if host.is_empty() { "/v2/token".to_owned() } else { format!("{scheme}://{host}/v2/token") };
    let mut value = format!("Bearer realm=\"{realm}\",service=\"artifactstore\"");
    if let Some(name) = repository {
        value.push_str(&format!(",scope=\"repository:{name}:pull,push\""));
    }
    OciError::new(401, "UNAUTHORIZED", detail.to_owned()).header("www-authenticate", header_value(&value))
}

/// `GET /v2/`: `200` for a caller this instance knows (anyone, on an open instance).
pub(crate) async fn base(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let answer = match authorize(&state, &mut parts, None, Scope::Read).await {
        Ok(_) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
        Err(err) => err.into_response(),
    };
    with_version(answer)
}

/// `GET /v2/token`: checks the token a client logs in with and hands it back as its bearer token.
pub(crate) async fn token(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let presented = {
        let mut headers = parts.headers.clone();
        basic_as_bearer(&mut headers);
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::auth::credentials(v, "Bearer"))
            .map(str::to_owned)
    };
    let answer = match authorize(&state, &mut parts, None, Scope::Read).await {
        Ok(caller) => {
            let token = presented.unwrap_or_else(|| caller.actor().to_owned());
            let issued = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let body = json!({"token": token, "access_token": token, "expires_in": 3600, "issued_at": issued});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(err) => err.into_response(),
    };
    with_version(answer)
}

fn with_version(mut response: Response) -> Response {
    response.headers_mut().insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    response
}
