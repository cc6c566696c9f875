//! `/v1/uploads`: the HTTP face of upload sessions (`crate::uploads`). Each handler checks the caller's scope,
//! parses the request into a call, and the call's answer into a response.

use artifactstore_digest::DualDigest;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::body::{read_small_body, BodyFormat};
use super::extract::{ApiPath, ApiQuery};
use crate::auth::{Caller, Granted, Writes};
use crate::problem::ApiError;
use crate::server::AppState;
use crate::uploads::{parse_digest, ChunkStart, Committed, Declared, Incoming, SessionRef};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitQuery {
    digest: Option<String>,
}

/// The caller and the session a `/v1/uploads/{id}` request names, extracted alike for every handler of a session:
/// the `write` scope, the id, and the session the id names for this caller.
#[derive(Debug)]
pub(crate) struct SessionCall {
    caller: Caller,
    session: SessionRef,
}

impl FromRequestParts<AppState> for SessionCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Granted(caller, _) = Granted::<Writes>::from_request_parts(parts, state).await?;
        let ApiPath(id) = ApiPath::<String>::from_request_parts(parts, state).await?;
        let session = state.uploads.resolve(&caller, &id)?;
        Ok(SessionCall { caller, session })
    }
}

/// `POST /v1/uploads`: opens a session; with `?digest=`, the body is the whole blob and is committed at once.
pub(crate) async fn open(
    State(state): State<AppState>,
    Granted(caller, _): Granted<Writes>,
    ApiQuery(query): ApiQuery<CommitQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    if let Some(digest) = query.digest.as_deref().map(|d| parse_digest(d, "digest")).transpose()? {
        // The whole blob from its first byte, whatever offset the request names.
        let start = ChunkStart { offset: Some(0), length: content_length(&parts.headers)? };
        let committed = state.uploads.put_whole(&caller, digest, Incoming { start, body }).await?;
        return Ok(blob_created(&committed));
    }
    let format = BodyFormat::of(&parts.headers)?;
    let bytes = read_small_body(body, 64 * 1024).await?;
    let declared = if bytes.is_empty() { Declared::default() } else { format.decode::<Declared>(&bytes)? };
    let opened = state.uploads.open(&caller, declared).await?;
    let expires = rfc3339_ms(opened.expires_ms);
    let mut response =
        (StatusCode::CREATED, axum::Json(json!({"id": opened.id, "offset": 0, "expires_at": expires}))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&format!("/v1/uploads/{}", opened.id)));
    headers.insert("upload-offset", HeaderValue::from(0));
    headers.insert("upload-expires", header_value(&expires));
    Ok(response)
}

/// `HEAD /v1/uploads/{id}`: where to resume.
pub(crate) async fn status(State(state): State<AppState>, call: SessionCall) -> Result<Response, ApiError> {
    let SessionCall { caller, session } = call;
    let status = state.uploads.status(&caller, session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(status.offset));
    headers.insert("upload-expires", header_value(&rfc3339_ms(status.expires_ms)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(size) = status.declared_size {
        headers.insert("upload-length", HeaderValue::from(size));
    }
    Ok(response)
}

/// `PATCH /v1/uploads/{id}`: appends one chunk at the session's offset.
pub(crate) async fn append(
    State(state): State<AppState>,
    call: SessionCall,
    request: Request,
) -> Result<Response, ApiError> {
    let SessionCall { caller, session } = call;
    let (parts, body) = request.into_parts();
    let offset = requested_offset(&parts.headers)?
        .ok_or_else(|| ApiError::bad_request("a chunk needs `Upload-Offset: N` or `Content-Range: bytes N-M/*`"))?;
    let start = ChunkStart { offset: Some(offset), length: content_length(&parts.headers)? };
    let status = state.uploads.append(&caller, session, Incoming { start, body }).await?;
    let mut response = StatusCode::ACCEPTED.into_response();
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(status.offset));
    headers.insert("upload-expires", header_value(&rfc3339_ms(status.expires_ms)));
    Ok(response)
}

/// `PUT /v1/uploads/{id}?digest=`: appends an optional last chunk, then commits.
pub(crate) async fn commit(
    State(state): State<AppState>,
    call: SessionCall,
    ApiQuery(query): ApiQuery<CommitQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let SessionCall { caller, session } = call;
    let digest = query
        .digest
        .as_deref()
        .map(|d| parse_digest(d, "digest"))
        .transpose()?
        .ok_or_else(|| ApiError::bad_request("commit needs `?digest=blake3:<hex>` or `?digest=sha256:<hex>`"))?;
    let (parts, body) = request.into_parts();
    let start = ChunkStart { offset: requested_offset(&parts.headers)?, length: content_length(&parts.headers)? };
    let committed = state.uploads.commit(&caller, session, digest, Incoming { start, body }).await?;
    Ok(blob_created(&committed))
}

/// `DELETE /v1/uploads/{id}`: aborts the session and frees its staged bytes.
pub(crate) async fn abort(State(state): State<AppState>, call: SessionCall) -> Result<Response, ApiError> {
    let SessionCall { caller, session } = call;
    state.uploads.abort(&caller, session).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `201` with the blob's digests and its event's sequence when the commit recorded it, `200` when the registry held
/// the blob already.
fn blob_created(committed: &Committed) -> Response {
    let Committed { digest, sequence } = committed;
    let DualDigest { blake3, sha256, size } = digest;
    let mut body = json!({"blake3": blake3.to_string(), "sha256": sha256.to_string(), "size": size});
    if let Some(sequence) = sequence {
        body["sequence"] = json!(sequence);
    }
    let status = if sequence.is_some() { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::LOCATION, header_value(&format!("/v1/blobs/{blake3}")));
    response
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A header value from text made of URL-safe parts (ids, digests, times, paths).
pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The request's `Content-Length`, if it has one.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))
        })
        .transpose()
}

/// The offset a chunk says it starts at: `Upload-Offset: N`, or `Content-Range` (`chunk_start`).
fn requested_offset(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    if let Some(value) = headers.get("upload-offset") {
        let offset = value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Upload-Offset must be a non-negative integer"))?;
        return Ok(Some(offset));
    }
    chunk_start(headers)
}

/// Where a chunk's `Content-Range` says it starts: `bytes N-M/*`, `bytes N-M/TOTAL`, or OCI's `N-M`; `None` without
/// the header. A range that does not parse, runs backwards or disagrees with `Content-Length` is a `400`.
pub(crate) fn chunk_start(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else { return Ok(None) };
    let bad = || ApiError::bad_request("Content-Range must look like `bytes N-M/*`, `bytes N-M/TOTAL` or `N-M`");
    let text = value.to_str().map_err(|_| bad())?.trim();
    let (span, total) = match text.strip_prefix("bytes ") {
        Some(range) => range.split_once('/').map(|(span, total)| (span, Some(total))).ok_or_else(bad)?,
        None => (text, None),
    };
    let (first, last) = span.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    // The range's length, `last - first + 1`, must exist as a number: no range runs backwards or past u64.
    let length = last.checked_sub(first).and_then(|n| n.checked_add(1)).ok_or_else(bad)?;
    match total {
        None | Some("*") => {}
        Some(total) => {
            let total: u64 = total.parse().map_err(|_| bad())?;
            if total <= last {
                return Err(ApiError::bad_request(format!(
                    "Content-Range ends at byte {last}, past the total of {total} bytes it gives"
                )));
            }
        }
    }
    if let Some(declared) = content_length(headers)? {
        if declared != length {
            return Err(ApiError::bad_request("Content-Range and Content-Length disagree"));
        }
    }
    Ok(Some(first))
}
