//! RFC 9457 problem details: the one error type that owns HTTP.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// An error answered as `application/problem+json` with a stable machine `code`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, title, detail: detail.into(), extra: Map::new(), headers: Vec::new() }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", "Bad request", detail)
    }

    /// 404: nothing is there.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
    }

    /// 405: the path exists but not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            "this path does not answer that method",
        )
    }

    /// 410: the cursor cannot be honoured; the client must start over from a fresh head.
    pub fn cursor_expired(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "cursor_expired", "Cursor expired", detail)
    }

    /// 401: no credentials, or credentials this instance does not know.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail)
    }

    /// 403: the credentials do not allow this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 409: the request contradicts the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 409: an upload chunk does not start where the session is; carries the true offset.
    pub fn offset_mismatch(offset: u64, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "offset_mismatch", "Offset mismatch", detail).with("offset", offset)
    }

    /// 408: the request body sent nothing for too long. The connection closes after the answer (the rest of the
    /// body is never read), and says so.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "Request timeout", detail);
        problem.headers.push((header::CONNECTION, header::HeaderValue::from_static("close")));
        problem
    }

    /// 413: a body or a blob is over a configured limit.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "Too large", detail)
    }

    /// 415: the body's media type is not one this call reads.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type", detail)
    }

    /// 416: the `Range` cannot be served.
    pub fn range_not_satisfiable(size: u64) -> Self {
        let mut problem = Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            "Range not satisfiable",
            format!("the blob is {size} bytes long"),
        );
        if let Ok(value) = header::HeaderValue::from_str(&format!("bytes */{size}")) {
            problem.headers.push((header::CONTENT_RANGE, value));
        }
        problem
    }

    /// 422: the digests computed from the bytes are not the ones the client named.
    pub fn digest_mismatch(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch", "Digest mismatch", detail)
    }

    /// 422: a package manifest breaks the rules.
    pub fn invalid_manifest(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_manifest", "Invalid manifest", detail)
    }

    /// 429: too many of something are open at once.
    pub fn too_many(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, code, "Too many requests", detail)
    }

    /// 410: collection removed the blob; `sequence` is its `v1.file.removed`.
    pub fn blob_removed(blake3: &str, sequence: i64) -> Self {
        Self::new(
            StatusCode::GONE,
            "blob_removed",
            "Blob removed",
            format!(
                "blob {blake3} was removed by garbage collection (event {sequence}); upload it again to restore it"
            ),
        )
        .with("sequence", sequence)
    }

    /// 410: the thing existed and is gone.
    pub fn gone(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", "Gone", detail)
    }

    /// 503: a dependency is down.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
    }

    /// 500: a bug or an internal failure; the cause is logged, never shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "the server failed; see its log")
    }

    /// Adds a member to the problem object.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The detail, for people.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// A member added to the problem object.
    pub(crate) fn member(&self, key: &str) -> Option<&Value> {
        self.extra.get(key)
    }

    /// The headers the answer carries besides the body's.
    pub(crate) fn into_headers(self) -> Vec<(header::HeaderName, header::HeaderValue)> {
        self.headers
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:artifactstore:problem:{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let Value::Object(map) = &mut body {
            map.extend(self.extra);
        }
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"artifactstore\""));
        }
        response
    }
}

impl From<artifactstore_eventlog::Error> for ApiError {
    fn from(err: artifactstore_eventlog::Error) -> Self {
        ApiError::internal(&err)
    }
}

impl From<artifactstore_views::Error> for ApiError {
    fn from(err: artifactstore_views::Error) -> Self {
        ApiError::internal(&err)
    }
}

impl From<artifactstore_db::sqlx::Error> for ApiError {
    fn from(err: artifactstore_db::sqlx::Error) -> Self {
        ApiError::internal(&err)
    }
}

impl From<artifactstore_blobstore::Error> for ApiError {
    fn from(err: artifactstore_blobstore::Error) -> Self {
        match err {
            artifactstore_blobstore::Error::NotFound(what) => {
                ApiError::not_found(format!("blob {what} is not in the store"))
            }
            artifactstore_blobstore::Error::Busy { .. } => ApiError::conflict(
                "an earlier request on this upload session is still writing its bytes; retry in a moment",
            ),
            other => ApiError::internal(&other),
        }
    }
}
