//! Request bodies of the control plane: JSON by default, CBOR on request, always bounded.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// The most a manifest or other control-plane body may hold.
pub(crate) const MAX_CONTROL_BODY: usize = 16 * 1024 * 1024;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    Json,
    Cbor,
}

impl BodyFormat {
    /// From `Content-Type`: none or JSON is JSON, `application/cbor` is CBOR, anything else is refused.
    pub(crate) fn of(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(BodyFormat::Json) };
        let text = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match text.as_str() {
            "" | "application/json" => Ok(BodyFormat::Json),
            t if t.starts_with("application/") && t.ends_with("+json") => Ok(BodyFormat::Json),
            "application/cbor" => Ok(BodyFormat::Cbor),
            other => Err(ApiError::unsupported_media_type(format!(
                "bodies here are application/json or application/cbor, not `{other}`"
            ))),
        }
    }

    /// Decodes `bytes`; CBOR may arrive in any valid encoding and is canonicalised first.
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, ApiError> {
        match self {
            BodyFormat::Json => serde_json::from_slice(bytes)
                .map_err(|err| ApiError::bad_request(format!("the JSON body is malformed: {err}"))),
            BodyFormat::Cbor => {
                let canonical = artifactstore_cbor::canonicalize(bytes)
                    .map_err(|err| ApiError::bad_request(format!("the CBOR body is malformed: {err}")))?;
                artifactstore_cbor::from_slice(&canonical)
                    .map_err(|err| ApiError::bad_request(format!("the CBOR body does not fit: {err}")))
            }
        }
    }
}

/// Reads a whole body of at most `limit` bytes; more is a 413 problem.
pub(crate) async fn read_small_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        // axum wraps http-body's `LengthLimitError`, whose message is stable.
        let too_long = format!("{err:?} {err}").contains("length limit");
        if too_long {
            ApiError::too_large(format!("this body may be at most {limit} bytes"))
        } else {
            broken_body(&err)
        }
    })
}

/// The problem for a request body that failed while it was read: `408` when it sent nothing for the configured
/// idle time (`[uploads] body_idle_secs`), `400` when the connection broke or the framing was bad.
pub(crate) fn broken_body(err: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::request_timeout(
                "the request body sent nothing for too long and nothing of it was kept (an upload session stays at \
                 its last acknowledged offset: ask HEAD and resume)",
            );
        }
        if let Some(slow) = err.downcast_ref::<super::rate::TooSlow>() {
            return ApiError::request_timeout(format!(
                "{slow}, and nothing of it was kept (an upload session stays at its last acknowledged offset: ask \
                 HEAD and resume)"
            ));
        }
        cause = err.source();
    }
    ApiError::bad_request(format!("the request body broke off: {err}"))
}

/// Whether the client asked for canonical CBOR.
pub(crate) fn wants_cbor(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept.split(',').any(|part| part.split(';').next().unwrap_or("").trim() == "application/cbor")
    })
}

/// The request's body, at most `limit` bytes, decoded from JSON or CBOR as its `Content-Type` says; an empty body is
/// refused.
pub(crate) async fn decode_body<T: DeserializeOwned>(
    request: axum::extract::Request,
    limit: usize,
) -> Result<(BodyFormat, T), ApiError> {
    let (parts, body) = request.into_parts();
    let format = BodyFormat::of(&parts.headers)?;
    let bytes = read_small_body(body, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("this call needs a body"));
    }
    Ok((format, format.decode(&bytes)?))
}
