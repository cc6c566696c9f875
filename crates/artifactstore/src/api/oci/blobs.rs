//! `/v2/<name>/blobs/...`: blobs and their upload sessions, on the same sessions, commit path and store as
//! `/v1/uploads` and `/v1/blobs`. Blobs are global: a repository sees every live blob but those deleted from it.

use artifactstore_digest::{Digest, DualDigest};
use artifactstore_views::vocab::{OciBlobChange, OciEvent};
use artifactstore_views::{oci, FileRow, RegistryEvent};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::authorize;
use super::{check_repository, parse_digest, OciError};
use crate::api::blobs::{serve_blob, Blob};
use crate::api::scope::may_read_blob;
use crate::api::uploads::{self, header_value};
use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::server::AppState;
use crate::uploads::{ChunkStart, Committed, Declared, Incoming, SessionRef};

/// The blob `digest` as `repository` sees it: live, and not deleted from the repository.
async fn visible(state: &AppState, repository: &str, digest: &Digest) -> Result<Option<FileRow>, OciError> {
    Ok(oci::visible_blob(&mut state.instance.db.acquire().await?, repository, digest).await?)
}

fn blob_unknown(digest: &str) -> OciError {
    OciError::new(404, "BLOB_UNKNOWN", format!("blob {digest} is not known to this repository"))
}

/// `GET|HEAD /v2/<name>/blobs/<digest>`.
pub(crate) async fn get(state: &AppState, name: &str, digest: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, _) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Read).await?;
    let parsed = parse_digest(digest)?;
    let row = visible(state, name, &parsed).await?.ok_or_else(|| blob_unknown(digest))?;
    if !may_read_blob(state, &caller, Some(name), &row).await? {
        return Err(blob_unknown(digest));
    }
    let mut response = serve_blob(state, Blob::from(&row), &parts.method, &parts.headers)
        .await
        .map_err(|problem| OciError::from_problem(problem, "BLOB_UNKNOWN", "BLOB_UNKNOWN"))?;
    response.headers_mut().insert("docker-content-digest", header_value(&row.sha256));
    Ok(response)
}

/// `DELETE /v2/<name>/blobs/<digest>`: the repository no longer sees the blob (`v1.oci.blob.deleted`); its bytes
/// stay for every other repository, and collection frees them once nothing references them.
pub(crate) async fn delete(state: &AppState, name: &str, digest: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, _) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Admin).await?;
    let parsed = parse_digest(digest)?;
    let (repository, shown) = (name.to_owned(), digest.to_owned());
    state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let row = oci::visible_blob(wtx.tx(), &repository, &parsed).await?;
                let row = row.ok_or_else(|| blob_unknown(&shown))?;
                let change = OciBlobChange { repository, blake3: row.blake3, sha256: row.sha256 };
                let event = RegistryEvent::Oci(OciEvent::BlobDeleted(change));
                artifactstore_views::record(wtx, caller.actor(), &event).await?;
                Ok::<_, OciError>(())
            })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}

/// Ends a deletion of the blob from `repository`, if there is one: the blob was pushed or mounted there again.
async fn link(state: &AppState, caller: &Caller, repository: &str, digest: &DualDigest) -> Result<(), OciError> {
    let blake3 = digest.blake3.to_string();
    {
        let mut conn = state.instance.db.acquire().await?;
        if !oci::blob_deleted(&mut conn, repository, &blake3).await? {
            return Ok(());
        }
    }
    let change = OciBlobChange { repository: repository.to_owned(), blake3, sha256: digest.sha256.to_string() };
    let actor = caller.actor().to_owned();
    state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                if oci::blob_deleted(wtx.tx(), &change.repository, &change.blake3).await? {
                    let event = RegistryEvent::Oci(OciEvent::BlobLinked(change));
                    artifactstore_views::record(wtx, &actor, &event).await?;
                }
                Ok::<_, OciError>(())
            })
        })
        .await
}

#[derive(Debug, Default, Deserialize)]
struct StartQuery {
    digest: Option<String>,
    mount: Option<String>,
    from: Option<String>,
}

/// The request's query parameters as `T`.
pub(crate) fn query<T: serde::de::DeserializeOwned + Default>(parts: &Parts) -> Result<T, OciError> {
    if parts.uri.query().is_none() {
        return Ok(T::default());
    }
    axum::extract::Query::<T>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|err| OciError::new(400, "UNSUPPORTED", format!("query: {}", err.body_text())))
}

/// `POST /v2/<name>/blobs/uploads/`: opens a session (`202`); with `?digest=`, the body is the whole blob (`201`);
/// with `?mount=<digest>&from=<repository>`, the blob is taken from a repository the caller may read (`201`), or a
/// session opens when it cannot be.
pub(crate) async fn start(state: &AppState, name: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, body) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Write).await?;
    let query: StartQuery = query(&parts)?;
    if let Some(digest) = &query.digest {
        let parsed = parse_digest(digest)?;
        let start = ChunkStart { offset: Some(0), length: content_length(&parts.headers)? };
        let committed =
            state.uploads.put_whole(&caller, parsed, Incoming { start, body }).await.map_err(upload_error)?;
        return blob_created(state, &caller, name, digest, &committed).await;
    }
    if let (Some(mount), Some(from)) = (&query.mount, &query.from) {
        if let Some(response) = try_mount(state, &caller, name, mount, from).await? {
            return Ok(response);
        }
    }
    let opened = state.uploads.open(&caller, Declared::default()).await.map_err(upload_error)?;
    Ok(session_answer(StatusCode::ACCEPTED, name, &opened.id, 0))
}

/// Mounts `digest` from `from` into `name` when the caller may read `from` and the blob is visible there.
async fn try_mount(
    state: &AppState,
    caller: &Caller,
    name: &str,
    digest: &str,
    from: &str,
) -> Result<Option<Response>, OciError> {
    if check_repository(from).is_err() || caller.require(Scope::Read, from).is_err() {
        return Ok(None);
    }
    let Ok(parsed) = digest.parse::<Digest>() else { return Ok(None) };
    let Some(row) = visible(state, from, &parsed).await? else { return Ok(None) };
    if !may_read_blob(state, caller, Some(from), &row).await? {
        return Ok(None);
    }
    let dual = dual_of(&row)?;
    link(state, caller, name, &dual).await?;
    Ok(Some(created(name, digest, &row.sha256)))
}

fn dual_of(row: &FileRow) -> Result<DualDigest, OciError> {
    let internal = |err: &dyn std::fmt::Display| OciError::from_problem(ApiError::internal(err), "UNKNOWN", "UNKNOWN");
    Ok(DualDigest {
        blake3: row.blake3.parse().map_err(|e| internal(&e))?,
        sha256: row.sha256.parse().map_err(|e| internal(&e))?,
        size: u64::try_from(row.size).unwrap_or(0),
    })
}

/// The session `id` for `caller`.
fn session(state: &AppState, caller: &Caller, id: &str) -> Result<SessionRef, OciError> {
    state.uploads.resolve(caller, id).map_err(upload_error)
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: a chunk at `Content-Range: <start>-<end>`, which must be where the session
/// is (else `416`), or, without it, at wherever the session is (stream mode).
pub(crate) async fn append(state: &AppState, name: &str, id: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, body) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Write).await?;
    let session = session(state, &caller, id)?;
    let length = content_length(&parts.headers)?;
    let start = ChunkStart { offset: chunk_offset(&parts.headers)?, length };
    let status = state
        .uploads
        .append(&caller, session, Incoming { start, body })
        .await
        .map_err(|problem| out_of_order(problem, name, id))?;
    Ok(session_answer(StatusCode::ACCEPTED, name, id, status.offset))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: an optional last chunk, then the commit.
pub(crate) async fn commit(state: &AppState, name: &str, id: &str, request: Request) -> Result<Response, OciError> {
    #[derive(Debug, Default, Deserialize)]
    struct CommitQuery {
        digest: Option<String>,
    }
    let (mut parts, body) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Write).await?;
    let session = session(state, &caller, id)?;
    let CommitQuery { digest } = query(&parts)?;
    let digest = digest.ok_or_else(|| OciError::new(400, "DIGEST_INVALID", "a commit needs `?digest=`"))?;
    let parsed = parse_digest(&digest)?;
    let length = content_length(&parts.headers)?;
    let start = ChunkStart { offset: chunk_offset(&parts.headers)?, length };
    let committed = state
        .uploads
        .commit(&caller, session, parsed, Incoming { start, body })
        .await
        .map_err(|problem| out_of_order(problem, name, id))?;
    blob_created(state, &caller, name, &digest, &committed).await
}

/// `GET /v2/<name>/blobs/uploads/<id>`: `204` with `Range: 0-<last byte>`.
pub(crate) async fn status(state: &AppState, name: &str, id: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, _) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Write).await?;
    let session = session(state, &caller, id)?;
    let status = state.uploads.status(&caller, session).await.map_err(upload_error)?;
    Ok(session_answer(StatusCode::NO_CONTENT, name, id, status.offset))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: aborts the session.
pub(crate) async fn abort(state: &AppState, name: &str, id: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, _) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Write).await?;
    let session = session(state, &caller, id)?;
    state.uploads.abort(&caller, session).await.map_err(upload_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `201` for a committed blob, after ending any deletion of it from the repository.
async fn blob_created(
    state: &AppState,
    caller: &Caller,
    name: &str,
    digest: &str,
    committed: &Committed,
) -> Result<Response, OciError> {
    link(state, caller, name, &committed.digest).await?;
    Ok(created(name, digest, &committed.digest.sha256.to_string()))
}

fn created(name: &str, digest: &str, sha256: &str) -> Response {
    let mut response = (StatusCode::CREATED, [(header::CONTENT_LENGTH, "0")]).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&format!("/v2/{name}/blobs/{digest}")));
    headers.insert("docker-content-digest", header_value(sha256));
    response
}

/// An answer about a session: `Location`, `Range: 0-<last byte>` and `Docker-Upload-UUID`.
fn session_answer(status: StatusCode, name: &str, id: &str, offset: u64) -> Response {
    let mut response = (status, [(header::CONTENT_LENGTH, "0")]).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&format!("/v2/{name}/blobs/uploads/{id}")));
    headers.insert(header::RANGE, header_value(&range_of(offset)));
    headers.insert("docker-upload-uuid", header_value(id));
    response
}

/// `0-<last byte>` of a session at `offset` (`0-0` before the first byte, as other registries answer).
fn range_of(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn upload_error(problem: ApiError) -> OciError {
    OciError::from_problem(problem, "BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID")
}

/// A chunk that does not start where the session is: the spec's `416`, with where the session is.
fn out_of_order(problem: ApiError, name: &str, id: &str) -> OciError {
    let offset = problem.member("offset").and_then(serde_json::Value::as_u64);
    let mut error = upload_error(problem);
    if let Some(offset) = offset {
        error = OciError::new(416, "BLOB_UPLOAD_INVALID", format!("the session is at byte {offset}"))
            .header("range", header_value(&range_of(offset)))
            .header("location", header_value(&format!("/v2/{name}/blobs/uploads/{id}")));
    }
    error
}

/// The request's `Content-Length` (`400 SIZE_INVALID` when it is not a number).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, OciError> {
    uploads::content_length(headers).map_err(|problem| OciError::from_problem(problem, "SIZE_INVALID", "SIZE_INVALID"))
}

/// Where a chunk says it starts (`Content-Range`, as on `/v1/`); a range that does not parse or disagrees with
/// `Content-Length` is the spec's `416`.
fn chunk_offset(headers: &HeaderMap) -> Result<Option<u64>, OciError> {
    uploads::chunk_start(headers)
        .map_err(|problem| OciError::new(416, "BLOB_UPLOAD_INVALID", problem.detail().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ranges() {
        let headers = |range: &str, length: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_RANGE, range.parse().unwrap());
            if let Some(l) = length {
                h.insert(header::CONTENT_LENGTH, l.parse().unwrap());
            }
            h
        };
        assert_eq!(chunk_offset(&headers("0-9", Some("10"))).unwrap(), Some(0));
        assert_eq!(chunk_offset(&headers("bytes 10-19/*", None)).unwrap(), Some(10));
        assert_eq!(chunk_offset(&headers("10-19", Some("5"))).unwrap_err().status(), 416);
        assert_eq!(chunk_offset(&headers("9-3", None)).unwrap_err().status(), 416);
        assert_eq!(chunk_offset(&HeaderMap::new()).unwrap(), None);
        assert_eq!(range_of(0), "0-0");
        assert_eq!(range_of(10), "0-9");
    }
}
