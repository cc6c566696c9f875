//! Entry points for the fuzz targets in `fuzz/`: the parsers of request bodies and headers, each with the
//! properties its answer must have. Not part of the API.

use axum::http::{header, HeaderMap, HeaderValue};

use crate::api::body::BodyFormat;

/// Decodes `bytes` as a manifest body, JSON or CBOR. Whatever the input, the answer is a checked manifest or a 4xx
/// problem; a checked manifest has 1 to 100000 files with distinct paths, and metadata that is a map whose canonical
/// CBOR decodes and encodes back to the same bytes.
pub fn manifest(cbor: bool, bytes: &[u8]) {
    let format = if cbor { BodyFormat::Cbor } else { BodyFormat::Json };
    match crate::api::packages::publish::decode_manifest(format, bytes) {
        Ok(checked) => {
            assert!(!checked.files.is_empty() && checked.files.len() <= 100_000);
            let mut paths: Vec<&str> = checked.files.iter().map(|(path, _, _)| path.as_str()).collect();
            paths.sort_unstable();
            paths.dedup();
            assert_eq!(paths.len(), checked.files.len(), "paths are distinct");
            assert!(matches!(checked.metadata, artifactstore_cbor::Value::Map(_)));
            let again = artifactstore_cbor::encode_value(&checked.metadata).expect("checked metadata encodes");
            assert_eq!(again, checked.canonical, "the metadata's canonical bytes are stable");
        }
        Err(problem) => assert!(problem.status().is_client_error(), "{}: {}", problem.status(), problem.detail()),
    }
}

/// Parses `text` as each header the service reads a number or a token from. Each answer is a value within bounds or
/// a 4xx problem, never a panic.
pub fn headers(text: &str, size: u64) {
    // `Range` on a blob of `size` bytes: a range within the blob, or the whole blob, or 416.
    match crate::api::blobs::parse_range(text, size) {
        Ok(Some(range)) => assert!(range.start < range.end && range.end <= size, "{range:?} of {size}"),
        Ok(None) => {}
        Err(problem) => assert_eq!(problem.status(), 416),
    }
    // `Content-Range` (and `Content-Length`) of an upload chunk.
    if let Ok(value) = HeaderValue::from_str(text) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_RANGE, value.clone());
        if let Ok(Some(start)) = crate::api::uploads::chunk_start(&headers) {
            assert!(text.contains(&start.to_string()));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        if let Err(problem) = crate::api::uploads::chunk_start(&headers) {
            assert_eq!(problem.status(), 400);
        }
        headers.insert(header::CONTENT_TYPE, value);
        let _ = BodyFormat::of(&headers);
    }
    if let Ok(()) = crate::names::check_media_type(text) {
        assert!(!text.bytes().any(|b| b.is_ascii_control()), "a media type with a control character passed");
    }
    if let Some(token) = crate::auth::credentials(text, "Bearer") {
        assert!(text.len() > token.len());
    }
    let _ = crate::api::events::parse_type_filter(text.to_owned());
}
