//! `GET|HEAD /v1/blobs/{digest}`: a blob's bytes, whole or by range, streamed from the store.

use artifactstore_digest::Digest;
use artifactstore_views::{queries, FileRow, PackageFileRow};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;

use super::extract::ApiPath;
use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::server::AppState;

/// What answering with a blob's bytes needs: a blob of the views, or a package version's file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blob<'a> {
    blake3: &'a str,
    sha256: &'a str,
    size: i64,
    media_type: Option<&'a str>,
}

impl<'a> From<&'a FileRow> for Blob<'a> {
    fn from(row: &'a FileRow) -> Self {
        Blob { blake3: &row.blake3, sha256: &row.sha256, size: row.size, media_type: row.media_type.as_deref() }
    }
}

/// A package file is served with the media type its manifest gave it.
impl<'a> From<&'a PackageFileRow> for Blob<'a> {
    fn from(row: &'a PackageFileRow) -> Self {
        Blob { blake3: &row.blake3, sha256: &row.sha256, size: row.size, media_type: row.media_type.as_deref() }
    }
}

/// `GET|HEAD /v1/blobs/{digest}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    headers: HeaderMap,
    ApiPath(digest): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Read)?;
    let digest: Digest = digest.parse().map_err(|err| ApiError::bad_request(format!("digest: {err}")))?;
    let found = {
        let mut conn = state.instance.db.acquire().await?;
        queries::blob(&mut conn, &digest).await?
    };
    let blob = found.ok_or_else(|| ApiError::not_found(format!("no blob has digest {digest}")))?;
    if !super::scope::may_read_blob(&state, &caller, None, &blob).await? {
        return Err(ApiError::not_found(format!(
            "no blob with digest {digest} is readable with this token: no version under its prefixes names it, and \
             its subject did not upload it"
        )));
    }
    if let Some(sequence) = blob.removed_sequence {
        return Err(ApiError::blob_removed(&blob.blake3, sequence));
    }
    serve_blob(&state, Blob::from(&blob), &method, &headers).await
}

/// Answers with a blob's bytes: `Range` (one range) gives 206, `If-None-Match` on its ETag gives 304.
pub(crate) async fn serve_blob(
    state: &AppState,
    blob: Blob<'_>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = u64::try_from(blob.size).unwrap_or(0);
    let blake3: Digest = blob.blake3.parse().map_err(|err| ApiError::internal(&err))?;
    let sha256: Digest = blob.sha256.parse().map_err(|err| ApiError::internal(&err))?;
    let etag = format!("\"{blake3}\"");
    let b64 = |d: &Digest| base64::engine::general_purpose::STANDARD.encode(d.bytes());
    let repr_digest = format!("sha-256=:{}:, blake3=:{}:", b64(&sha256), b64(&blake3));
    let content_type = blob.media_type.unwrap_or("application/octet-stream");

    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header("repr-digest", repr_digest)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );

    if if_none_match(headers, &etag) {
        return builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).map_err(|err| ApiError::internal(&err));
    }
    let range = match headers.get(header::RANGE) {
        Some(value) if if_range_allows(headers, &etag) => parse_range(value.to_str().unwrap_or(""), size)?,
        _ => None,
    };
    let (status, span) = match range {
        Some(span) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", span.start, span.end - 1));
            (StatusCode::PARTIAL_CONTENT, span)
        }
        None => (StatusCode::OK, 0..size),
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, span.end - span.start);
    if *method == Method::HEAD {
        return builder.body(Body::empty()).map_err(|err| ApiError::internal(&err));
    }
    let stream = match state.instance.store.read(&blake3.hex(), span).await {
        Ok(stream) => stream,
        Err(artifactstore_blobstore::Error::NotFound(_)) => {
            return Err(ApiError::gone(format!("blob {blake3} was registered but its bytes are no longer stored")))
        }
        Err(err) => return Err(err.into()),
    };
    builder.body(Body::from_stream(stream)).map_err(|err| ApiError::internal(&err))
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"))
}

fn if_range_allows(headers: &HeaderMap, etag: &str) -> bool {
    headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == etag)
}

/// Parses one `bytes=` range against a blob of `size` bytes (RFC 9110, section 14). `None` means "serve it all":
/// several ranges, another unit, or a header that is not a valid range (which a server ignores). A valid range
/// that starts at or past the end (or a suffix of zero bytes) is a 416 problem.
pub(crate) fn parse_range(text: &str, size: u64) -> Result<Option<std::ops::Range<u64>>, ApiError> {
    let Some(spec) = text.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // A number too large for 64 bits is past the end of any blob.
    let number = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    if first.is_empty() {
        if !digits(last) {
            return Ok(None);
        }
        let suffix = number(last);
        if suffix == 0 || size == 0 {
            return Err(ApiError::range_not_satisfiable(size));
        }
        return Ok(Some(size.saturating_sub(suffix)..size));
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return Ok(None);
    }
    let start = number(first);
    if !last.is_empty() && number(last) < start {
        // `last-pos` before `first-pos`: not a valid range.
        return Ok(None);
    }
    if start >= size {
        return Err(ApiError::range_not_satisfiable(size));
    }
    let end = if last.is_empty() { size } else { number(last).saturating_add(1).min(size) };
    Ok(Some(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-500", 100).unwrap(), Some(0..100));
        assert_eq!(parse_range("bytes=50-1000", 100).unwrap(), Some(50..100));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=100-", 100).unwrap_err().status(), 416);
        assert_eq!(parse_range("bytes=-0", 100).unwrap_err().status(), 416);
        // Not a valid range: ignored, the whole blob is served.
        for ignored in ["bytes=9-3", "bytes=5-2", "bytes=x-3", "bytes=abc", "bytes=-", "bytes=1-x", "bytes=- 5"] {
            assert_eq!(parse_range(ignored, 100).unwrap(), None, "{ignored}");
        }
        // Valid, but past the end.
        assert_eq!(parse_range("bytes=99999999999999999999999999-", 100).unwrap_err().status(), 416);
        assert_eq!(parse_range("bytes=-99999999999999999999999999", 100).unwrap(), Some(0..100));
        assert_eq!(parse_range("bytes=5-99999999999999999999999999", 100).unwrap(), Some(5..100));
    }
}
