//! Reading package versions: a version's manifest, a package's versions, the package list, a version's file.

use artifactstore_cbor::Value as Cbor;
use artifactstore_views::queries::{self, Version};
use artifactstore_views::{PackageFileRow, RetentionRow};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::api::body::wants_cbor;
use crate::api::envelope::payload_json;
use crate::api::extract::ApiQuery;
use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::server::AppState;

/// Packages per list page when the client does not say, and the most it may ask for.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

/// A package version as the API shows it; the same document in JSON and canonical CBOR.
#[derive(Debug, Serialize)]
pub(super) struct Manifest {
    pub(super) package_id: String,
    pub(super) name: String,
    pub(super) version: String,
    pub(super) files: Vec<ManifestFile>,
    pub(super) metadata: Cbor,
    pub(super) retention: Retention,
    pub(super) created_at: String,
    pub(super) created_by: String,
    pub(super) created_sequence: u64,
}

/// One file of a `Manifest`.
#[derive(Debug, Serialize)]
pub(super) struct ManifestFile {
    pub(super) path: String,
    pub(super) blake3: String,
    pub(super) sha256: String,
    pub(super) size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) media_type: Option<String>,
}

/// A version's retention as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Retention {
    pub(super) until: Option<String>,
    pub(super) hold: bool,
    pub(super) reason: Option<String>,
    pub(super) expired: bool,
}

/// A time as the API shows it: the log's text form.
pub(super) fn time(t: &DateTime<Utc>) -> String {
    artifactstore_eventlog::time_text(t)
}

impl From<&RetentionRow> for Retention {
    fn from(row: &RetentionRow) -> Self {
        Retention {
            until: row.until.as_ref().map(time),
            hold: row.hold,
            reason: row.reason.clone(),
            expired: row.expired,
        }
    }
}

impl From<PackageFileRow> for ManifestFile {
    fn from(f: PackageFileRow) -> Self {
        ManifestFile {
            path: f.path,
            blake3: f.blake3,
            sha256: f.sha256,
            size: u64::try_from(f.size).unwrap_or(0),
            media_type: f.media_type,
        }
    }
}

/// The manifest of a version and its files, as the views hold them.
pub(super) fn build_manifest(found: Version, files: Vec<PackageFileRow>) -> Result<Manifest, ApiError> {
    let Version { package, retention } = found;
    let metadata = artifactstore_cbor::decode_value(&package.metadata).map_err(|err| ApiError::internal(&err))?;
    Ok(Manifest {
        package_id: package.package_id.to_string(),
        retention: Retention::from(&retention),
        name: package.name,
        version: package.version,
        files: files.into_iter().map(ManifestFile::from).collect(),
        metadata,
        created_at: time(&package.created_at),
        created_by: package.created_by,
        created_sequence: u64::try_from(package.created_sequence).unwrap_or(0),
    })
}

/// The manifest of `name`@`version`, read in one transaction; 404 when there is no such version.
pub(super) async fn manifest(state: &AppState, name: &str, version: &str) -> Result<Manifest, ApiError> {
    let mut tx = state.instance.db.begin_read().await?;
    let (found, files) = queries::version_with_files(&mut tx, name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no package version {name}@{version}")))?;
    tx.rollback().await?;
    build_manifest(found, files)
}

/// JSON, or canonical CBOR when the client accepts it.
pub(super) fn render(headers: &HeaderMap, status: StatusCode, doc: Manifest) -> Response {
    if wants_cbor(headers) {
        match artifactstore_cbor::to_vec(&doc) {
            Ok(bytes) => return (status, [(header::CONTENT_TYPE, "application/cbor")], bytes).into_response(),
            Err(err) => return ApiError::internal(&err).into_response(),
        }
    }
    (status, axum::Json(manifest_json(&doc))).into_response()
}

fn manifest_json(doc: &Manifest) -> Json {
    json!({
        "package_id": doc.package_id,
        "name": doc.name,
        "version": doc.version,
        "files": doc.files.iter().map(|f| {
            let mut file = json!({"path": f.path, "blake3": f.blake3, "sha256": f.sha256, "size": f.size});
            if let Some(media_type) = &f.media_type {
                file["media_type"] = json!(media_type);
            }
            file
        }).collect::<Vec<_>>(),
        "metadata": payload_json(&doc.metadata),
        "retention": doc.retention,
        "created_at": doc.created_at,
        "created_by": doc.created_by,
        "created_sequence": doc.created_sequence,
    })
}

/// `GET /v1/packages/{name}`: every version of a package with its retention, oldest first.
pub(super) async fn versions(state: &AppState, caller: &Caller, name: &str) -> Result<Response, ApiError> {
    caller.require(Scope::Read, name)?;
    let rows = {
        let mut conn = state.instance.db.acquire().await?;
        queries::versions(&mut conn, name).await?
    };
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no package `{name}`")));
    }
    let versions: Vec<Json> = rows
        .iter()
        .map(|Version { package, retention }| {
            json!({
                "version": package.version,
                "package_id": package.package_id.to_string(),
                "created_at": time(&package.created_at),
                "created_by": package.created_by,
                "created_sequence": package.created_sequence,
                "retention": Retention::from(retention),
            })
        })
        .collect();
    Ok(axum::Json(json!({"name": name, "versions": versions})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    prefix: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/packages?prefix=&cursor=&limit=`: package names in order, a page at a time.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Read)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let prefix = query.prefix.unwrap_or_default();
    if prefix.len() > crate::names::MAX_NAME {
        return Err(ApiError::bad_request("prefix is longer than any package name"));
    }
    // A cursor is the last name of a page this server answered: anything else was not issued here.
    let cursor = query.cursor.unwrap_or_default();
    if !cursor.is_empty() && crate::names::check_name(&cursor).is_err() {
        return Err(ApiError::bad_request("cursor: not one this server issued (pass a page's `next_cursor`)"));
    }
    let page = {
        let mut conn = state.instance.db.acquire().await?;
        match caller.read_prefixes() {
            None => queries::list_packages(&mut conn, &prefix, &cursor, limit).await?,
            Some(within) => list_within(&mut conn, within, &prefix, &cursor, limit).await?,
        }
    };
    let packages: Vec<Json> = page
        .packages
        .iter()
        .map(|p| json!({"name": p.name, "versions": p.versions, "latest_sequence": p.latest_sequence}))
        .collect();
    Ok(axum::Json(json!({"packages": packages, "next_cursor": page.next_cursor})).into_response())
}

/// A page of the packages under `prefix` that the token prefixes `within` cover: one read per token prefix, each the
/// page of the names both prefixes allow, merged.
async fn list_within(
    conn: &mut artifactstore_db::Conn,
    within: &[String],
    prefix: &str,
    cursor: &str,
    limit: u32,
) -> Result<queries::PackagePage, ApiError> {
    // A token prefix `team` covers `team` itself and `team/...`; `team/` covers `team/...` only.
    let mut starts: Vec<String> = Vec::new();
    let mut exact: Vec<&str> = Vec::new();
    for token_prefix in within {
        if token_prefix.ends_with('/') {
            starts.push(token_prefix.clone());
        } else {
            starts.push(format!("{token_prefix}/"));
            exact.push(token_prefix);
        }
    }
    let mut packages = Vec::new();
    let mut more = false;
    for start in &starts {
        // Names that start with both `prefix` and `start`: those that start with the longer, if one extends the other.
        let both = if start.starts_with(prefix) {
            start.as_str()
        } else if prefix.starts_with(start.as_str()) {
            prefix
        } else {
            continue;
        };
        let page = queries::list_packages(conn, both, cursor, limit).await?;
        more |= page.next_cursor.is_some();
        packages.extend(page.packages);
    }
    for name in exact {
        if name.starts_with(prefix) && name > cursor {
            let page = queries::list_packages(conn, name, cursor, 1).await?;
            packages.extend(page.packages.into_iter().filter(|p| p.name == name));
        }
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages.dedup_by(|a, b| a.name == b.name);
    more |= packages.len() > limit as usize;
    packages.truncate(limit as usize);
    let next_cursor = if more { packages.last().map(|p| p.name.clone()) } else { None };
    Ok(queries::PackagePage { packages, next_cursor })
}

/// The file at `path` of `name`@`version`; 404 when there is none.
pub(super) async fn package_file(
    state: &AppState,
    name: &str,
    version: &str,
    path: &str,
) -> Result<PackageFileRow, ApiError> {
    let mut conn = state.instance.db.acquire().await?;
    queries::package_file(&mut conn, name, version, path)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{name}@{version} has no file `{}`", path.escape_debug())))
}
