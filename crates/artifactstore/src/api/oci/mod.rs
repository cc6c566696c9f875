//! `/v2/`: the OCI Distribution API (ADR 0028), thin handlers over the same upload sessions, commit path, blob store
//! and log as `/v1/`.
//!
//! `dispatch` splits a `/v2/<name>/...` path (names hold slashes) and hands the request to the file that answers it:
//! `blobs` (blobs and upload sessions), `manifests` (push, pull, delete), `lists` (tags, the catalog, referrers).
//! `error` is the OCI error body; `auth` the challenge and the token endpoint. Manifest parsing is `manifest`.

mod auth;
mod blobs;
mod error;
mod lists;
mod manifest;
mod manifests;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

pub(crate) use crate::api::uploads::header_value;
use crate::server::AppState;
pub(crate) use error::OciError;

/// The header every `/v2/` answer carries, as the Docker registry protocol asks.
const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// The `/v2/` routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(auth::base))
        .route("/v2/", get(auth::base))
        .route("/v2/token", get(auth::token))
        .route("/v2/_catalog", get(lists::catalog))
        .route("/v2/{*rest}", any(dispatch))
}

/// What a `/v2/<name>/...` path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Manifest(String, String),
    Tags(String),
    Referrers(String, String),
}

/// Splits a path after `/v2/` into its repository name and what it names there, checking the name.
fn parse_target(rest: &str) -> Result<Target, OciError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let name = |upto: usize| -> Result<String, OciError> {
        let name = segments[..upto].join("/");
        check_repository(&name)?;
        Ok(name)
    };
    let tail = |k: usize| segments[n - k..].to_vec();
    let unknown = || OciError::new(404, "NAME_UNKNOWN", format!("no such path `/v2/{}`", rest.escape_debug()));
    if n >= 3 && tail(2) == ["blobs", "uploads"] {
        return Ok(Target::Uploads(name(n - 2)?));
    }
    if n >= 4 && tail(3)[..2] == ["blobs", "uploads"] {
        let id = segments[n - 1];
        return Ok(if id.is_empty() { Target::Uploads(name(n - 3)?) } else { Target::Upload(name(n - 3)?, id.into()) });
    }
    if n >= 3 && tail(2) == ["tags", "list"] {
        return Ok(Target::Tags(name(n - 2)?));
    }
    if n >= 3 && !segments[n - 1].is_empty() {
        let last = segments[n - 1].to_owned();
        match segments[n - 2] {
            "blobs" => return Ok(Target::Blob(name(n - 2)?, last)),
            "manifests" => return Ok(Target::Manifest(name(n - 2)?, last)),
            "referrers" => return Ok(Target::Referrers(name(n - 2)?, last)),
            _ => {}
        }
    }
    Err(unknown())
}

/// Every method on `/v2/{*rest}`.
async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    // The path as sent: no name, tag, digest or session id holds a `%`, so an escape is simply an invalid name and
    // never a decoding failure.
    let rest = request.uri().path().strip_prefix("/v2/").unwrap_or_default().to_owned();
    let answer = async {
        let target = parse_target(&rest)?;
        let method = request.method().clone();
        let unsupported = || OciError::new(405, "UNSUPPORTED", format!("`{method}` is not served on this path"));
        match target {
            Target::Blob(name, digest) => match method {
                Method::GET | Method::HEAD => blobs::get(&state, &name, &digest, request).await,
                Method::DELETE => blobs::delete(&state, &name, &digest, request).await,
                _ => Err(unsupported()),
            },
            Target::Uploads(name) => match method {
                Method::POST => blobs::start(&state, &name, request).await,
                _ => Err(unsupported()),
            },
            Target::Upload(name, id) => match method {
                Method::PATCH => blobs::append(&state, &name, &id, request).await,
                Method::PUT => blobs::commit(&state, &name, &id, request).await,
                Method::GET | Method::HEAD => blobs::status(&state, &name, &id, request).await,
                Method::DELETE => blobs::abort(&state, &name, &id, request).await,
                _ => Err(unsupported()),
            },
            Target::Manifest(name, reference) => match method {
                Method::GET | Method::HEAD => manifests::get(&state, &name, &reference, request).await,
                Method::PUT => manifests::put(&state, &name, &reference, request).await,
                Method::DELETE => manifests::delete(&state, &name, &reference, request).await,
                _ => Err(unsupported()),
            },
            Target::Tags(name) => match method {
                Method::GET => lists::tags(&state, &name, request).await,
                _ => Err(unsupported()),
            },
            Target::Referrers(name, digest) => match method {
                Method::GET => lists::referrers(&state, &name, &digest, request).await,
                _ => Err(unsupported()),
            },
        }
    };
    let mut response = answer.await.unwrap_or_else(IntoResponse::into_response);
    response.headers_mut().insert(API_VERSION.0, HeaderValue::from_static(API_VERSION.1));
    response
}

/// Checks a repository name against the OCI grammar: lowercase components of letters and digits joined by `.`, `_`,
/// `__` or runs of `-`, separated by `/`, at most 255 bytes.
pub(crate) fn check_repository(name: &str) -> Result<(), OciError> {
    let invalid =
        |why: &str| OciError::new(400, "NAME_INVALID", format!("repository name `{}`: {why}", name.escape_debug()));
    if name.is_empty() || name.len() > 255 {
        return Err(invalid("must be 1 to 255 bytes"));
    }
    for component in name.split('/') {
        if !component_ok(component) {
            return Err(invalid(
                "each `/`-separated part must be lowercase letters and digits, joined by `.`, `_`, `__` or dashes",
            ));
        }
    }
    Ok(())
}

fn component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__`, or one or more `-`, between alphanumerics.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => i += if bytes.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= bytes.len() || !alnum(bytes[i]) {
            return false;
        }
    }
    true
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn check_tag(tag: &str) -> Result<(), OciError> {
    let bytes = tag.as_bytes();
    let first = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let rest = |b: u8| first(b) || b == b'.' || b == b'-';
    if bytes.is_empty() || bytes.len() > 128 || !first(bytes[0]) || !bytes[1..].iter().all(|b| rest(*b)) {
        return Err(OciError::new(
            400,
            "TAG_INVALID",
            format!("tag `{}`: must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}", tag.escape_debug()),
        ));
    }
    Ok(())
}

/// A reference that names a digest (it holds a `:`), parsed; a malformed one is `DIGEST_INVALID`.
pub(crate) fn parse_digest(text: &str) -> Result<artifactstore_digest::Digest, OciError> {
    text.parse().map_err(|err| OciError::new(400, "DIGEST_INVALID", format!("digest `{}`: {err}", text.escape_debug())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_grammar() {
        for good in ["a", "library/ubuntu", "a.b_c__d--e-f/g0", "oci-kit/x1", "0"] {
            assert!(check_repository(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "a_", "a___b", "-a", "a.", "a..b", "a b", "a._b"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert!(check_repository(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_follow_the_grammar() {
        for good in ["latest", "v1.0.0", "_x", "A-b_c.d"] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".x", "-x", "a+b", "a/b", &"a".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_split_into_name_and_target() {
        let t = |p: &str| parse_target(p).unwrap();
        assert_eq!(t("a/b/blobs/uploads/"), Target::Uploads("a/b".into()));
        assert_eq!(t("a/b/blobs/uploads"), Target::Uploads("a/b".into()));
        assert_eq!(t("a/blobs/uploads/xyz"), Target::Upload("a".into(), "xyz".into()));
        assert_eq!(t("a/blobs/sha256:00"), Target::Blob("a".into(), "sha256:00".into()));
        assert_eq!(t("blobs/manifests/latest"), Target::Manifest("blobs".into(), "latest".into()));
        assert_eq!(t("x/y/tags/list"), Target::Tags("x/y".into()));
        assert_eq!(t("x/referrers/sha256:ab"), Target::Referrers("x".into(), "sha256:ab".into()));
        assert_eq!(parse_target("x/other/thing").unwrap_err().status(), 404);
        assert_eq!(parse_target("X/manifests/latest").unwrap_err().code(), "NAME_INVALID");
    }
}
