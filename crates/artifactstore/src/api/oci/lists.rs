//! The listings of `/v2/`, served from the views: a repository's tags (`n`, `last`), the catalog, and the referrers
//! of a manifest (`artifactType`).

use artifactstore_digest::Algorithm;
use artifactstore_views::oci;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::authorize;
use super::blobs::query;
use super::manifest::OCI_INDEX;
use super::{header_value, parse_digest, OciError, API_VERSION};
use crate::auth::Scope;
use crate::server::AppState;

/// The most names one page holds, and a page's size when the client names none.
const PAGE: i64 = 10_000;

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    n: Option<String>,
    last: Option<String>,
}

impl PageQuery {
    fn size(&self) -> Result<i64, OciError> {
        match &self.n {
            None => Ok(PAGE),
            Some(n) => {
                n.parse::<i64>().ok().filter(|n| *n >= 0).map(|n| n.min(PAGE)).ok_or_else(|| {
                    OciError::new(400, "PAGINATION_NUMBER_INVALID", "`n` must be a non-negative integer")
                })
            }
        }
    }
}

/// A page of names, with `Link: <...>; rel="next"` when more may follow.
fn page(mut names: Vec<String>, n: i64, next: impl Fn(&str) -> String) -> (Vec<String>, Option<String>) {
    let more = names.len() as i64 > n;
    names.truncate(usize::try_from(n).unwrap_or(0));
    let link = match (more, names.last()) {
        (true, Some(last)) => Some(format!("<{}>; rel=\"next\"", next(last))),
        _ => None,
    };
    (names, link)
}

fn query_part(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /v2/<name>/tags/list`: `{name, tags}` in lexical order; `404 NAME_UNKNOWN` for a repository with nothing.
pub(crate) async fn tags(state: &AppState, name: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, _) = request.into_parts();
    authorize(state, &mut parts, Some(name), Scope::Read).await?;
    let query: PageQuery = query(&parts)?;
    let n = query.size()?;
    let mut conn = state.instance.db.acquire().await?;
    let names = oci::tags(&mut conn, name, query.last.as_deref(), n + 1).await?;
    if names.is_empty() && !oci::repository_exists(&mut conn, name).await? {
        return Err(OciError::new(404, "NAME_UNKNOWN", format!("repository `{name}` holds nothing")));
    }
    let (tags, link) = page(names, n, |last| format!("/v2/{name}/tags/list?n={n}&last={}", query_part(last)));
    let mut response = axum::Json(json!({"name": name, "tags": tags})).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, header_value(&link));
    }
    Ok(response)
}

/// `GET /v2/_catalog`: the repositories the caller may read, in lexical order.
pub(crate) async fn catalog(State(state): State<AppState>, request: Request) -> Response {
    let answer = async {
        let (mut parts, _) = request.into_parts();
        let caller = authorize(&state, &mut parts, None, Scope::Read).await?;
        let query: PageQuery = query(&parts)?;
        let n = query.size()?;
        let mut conn = state.instance.db.acquire().await?;
        let mut names = Vec::new();
        let mut last = query.last.clone();
        // Pages of names filtered to what the caller may read, until one more than asked is found or none are left.
        loop {
            let batch = oci::repositories(&mut conn, last.as_deref(), PAGE).await?;
            let done = (batch.len() as i64) < PAGE;
            last = batch.last().cloned();
            names.extend(batch.into_iter().filter(|name| caller.require(Scope::Read, name).is_ok()));
            if done || names.len() as i64 > n {
                break;
            }
        }
        let (repositories, link) = page(names, n, |last| format!("/v2/_catalog?n={n}&last={}", query_part(last)));
        let mut response = axum::Json(json!({"repositories": repositories})).into_response();
        if let Some(link) = link {
            response.headers_mut().insert(header::LINK, header_value(&link));
        }
        Ok::<_, OciError>(response)
    };
    let mut response = answer.await.unwrap_or_else(IntoResponse::into_response);
    response.headers_mut().insert(API_VERSION.0, header::HeaderValue::from_static(API_VERSION.1));
    response
}

/// `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject is `digest`, filtered by
/// `artifactType`; empty (`200`) for a digest nothing refers to.
pub(crate) async fn referrers(
    state: &AppState,
    name: &str,
    digest: &str,
    request: Request,
) -> Result<Response, OciError> {
    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ReferrersQuery {
        artifact_type: Option<String>,
    }
    let (mut parts, _) = request.into_parts();
    authorize(state, &mut parts, Some(name), Scope::Read).await?;
    let parsed = parse_digest(digest)?;
    if parsed.algorithm() != Algorithm::Sha256 {
        return Err(OciError::new(400, "DIGEST_INVALID", "referrers are listed by the subject's `sha256:` digest"));
    }
    let ReferrersQuery { artifact_type } = query(&parts)?;
    let rows = {
        let mut conn = state.instance.db.acquire().await?;
        oci::referrers(&mut conn, name, &parsed.to_string()).await?
    };
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|row| artifact_type.is_none() || row.artifact_type == artifact_type)
        .map(|row| {
            let mut descriptor = json!({"mediaType": row.media_type, "digest": row.digest, "size": row.size});
            if let Some(t) = row.artifact_type {
                descriptor["artifactType"] = json!(t);
            }
            let annotations: Option<std::collections::BTreeMap<String, String>> =
                row.annotations.as_deref().and_then(|bytes| artifactstore_cbor::from_slice(bytes).ok());
            if let Some(a) = annotations.filter(|a| !a.is_empty()) {
                descriptor["annotations"] = json!(a);
            }
            descriptor
        })
        .collect();
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, OCI_INDEX)], body.to_string()).into_response();
    if artifact_type.is_some() {
        response.headers_mut().insert("oci-filters-applied", header::HeaderValue::from_static("artifactType"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_link_to_the_next() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (got, link) = page(names(&["a", "b", "c"]), 2, |last| format!("/x?last={last}"));
        assert_eq!(got, names(&["a", "b"]));
        assert_eq!(link.as_deref(), Some("</x?last=b>; rel=\"next\""));
        let (got, link) = page(names(&["a", "b"]), 2, |last| format!("/x?last={last}"));
        assert_eq!((got.len(), link), (2, None));
        assert_eq!(page(names(&["a"]), 0, |l| l.to_owned()).0, Vec::<String>::new());
        assert_eq!(query_part("v1.0+x/y"), "v1.0%2Bx%2Fy");
    }
}
