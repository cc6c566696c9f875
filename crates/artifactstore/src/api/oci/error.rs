//! The OCI error body, `{"errors": [{"code", "message", "detail"}]}`, and how the service's problems read in it.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::problem::ApiError;

/// An error answered on `/v2/`.
#[derive(Debug)]
pub(crate) struct OciError {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: serde_json::Value,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl OciError {
    /// An error with `status` and the OCI `code`.
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> OciError {
        OciError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub(crate) fn header(mut self, name: &'static str, value: HeaderValue) -> OciError {
        self.headers.push((HeaderName::from_static(name), value));
        self
    }

    /// Sets the `detail` member.
    pub(crate) fn detail(mut self, detail: serde_json::Value) -> OciError {
        self.detail = detail;
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The OCI code.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// A problem of the service in OCI terms. `unknown` is the code of a `404` here (`BLOB_UNKNOWN`,
    /// `BLOB_UPLOAD_UNKNOWN`, `MANIFEST_UNKNOWN`, ...), `invalid` the code of a `400`.
    pub(crate) fn from_problem(problem: ApiError, unknown: &'static str, invalid: &'static str) -> OciError {
        let status = problem.status().as_u16();
        let code = match problem.code() {
            "not_found" | "blob_removed" => unknown,
            "bad_request" | "invalid_manifest" | "unsupported_media_type" => invalid,
            "digest_mismatch" => "DIGEST_INVALID",
            "offset_mismatch" => "BLOB_UPLOAD_INVALID",
            "unauthorized" => "UNAUTHORIZED",
            "forbidden" => "DENIED",
            "too_large" => "SIZE_INVALID",
            "method_not_allowed" => "UNSUPPORTED",
            _ if status == 429 => "TOOMANYREQUESTS",
            _ => "UNKNOWN",
        };
        // A removed blob is simply unknown to OCI clients; a digest mismatch is the spec's 400.
        let status = match problem.code() {
            "blob_removed" => 404,
            "digest_mismatch" => 400,
            _ => status,
        };
        let mut error = OciError::new(status, code, problem.detail().to_owned());
        if let Some(offset) = problem.member("offset") {
            error.detail = json!({ "offset": offset });
        }
        error.headers.extend(problem.into_headers());
        error
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]});
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<ApiError> for OciError {
    fn from(problem: ApiError) -> Self {
        OciError::from_problem(problem, "UNKNOWN", "UNKNOWN")
    }
}

impl From<artifactstore_views::Error> for OciError {
    fn from(err: artifactstore_views::Error) -> Self {
        OciError::from_problem(ApiError::from(err), "UNKNOWN", "UNKNOWN")
    }
}

impl From<artifactstore_eventlog::Error> for OciError {
    fn from(err: artifactstore_eventlog::Error) -> Self {
        OciError::from_problem(ApiError::from(err), "UNKNOWN", "UNKNOWN")
    }
}

impl From<artifactstore_db::sqlx::Error> for OciError {
    fn from(err: artifactstore_db::sqlx::Error) -> Self {
        OciError::from_problem(ApiError::from(err), "UNKNOWN", "UNKNOWN")
    }
}

impl From<artifactstore_blobstore::Error> for OciError {
    fn from(err: artifactstore_blobstore::Error) -> Self {
        OciError::from_problem(ApiError::from(err), "BLOB_UNKNOWN", "UNKNOWN")
    }
}
