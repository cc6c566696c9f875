//! The control plane: package versions (publish, read, list, delete), their files, and retention.

use artifactstore_cbor::Value as Cbor;
use artifactstore_digest::Digest;
use artifactstore_views::queries::{self, Version};
use artifactstore_views::vocab::{
    PackageCreated, PackageDeleted, PackageFile, RegistryEvent, RetentionChange, RetentionKind,
};
use artifactstore_views::{PackageFileRow, RetentionRow};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use uuid::Uuid;

use super::blobs::{serve_blob, Blob};
use super::body::{read_small_body, wants_cbor, BodyFormat, MAX_CONTROL_BODY};
use super::envelope::payload_json;
use super::extract::{ApiPath, ApiQuery};
use crate::auth::{Caller, Scope};
use crate::names::{check_name, check_path, check_version};
use crate::problem::ApiError;
use crate::server::AppState;

/// The most files one package version may hold.
const MAX_FILES: usize = 100_000;
/// Packages per list page when the client does not say, and the most it may ask for.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

/// What a `/v1/packages/...` path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Package(String),
    Version(String, String),
    Retention(String, String),
    File(String, String, String),
}

/// Splits `{name}[/versions/{version}[/retention | /files/{path}]]`; names may not hold a `versions` segment, so
/// the first `/versions/` is the split.
fn parse_target(rest: &str) -> Result<Target, ApiError> {
    let not_found = || ApiError::not_found(format!("no such package path `{}`", rest.escape_debug()));
    let Some((name, after)) = rest.split_once("/versions/") else {
        let name = rest.trim_end_matches('/');
        check_name(name).map_err(ApiError::bad_request)?;
        return Ok(Target::Package(name.to_owned()));
    };
    check_name(name).map_err(ApiError::bad_request)?;
    let (version, tail) = after.split_once('/').unwrap_or((after, ""));
    check_version(version).map_err(ApiError::bad_request)?;
    let (name, version) = (name.to_owned(), version.to_owned());
    match tail {
        "" => Ok(Target::Version(name, version)),
        "retention" => Ok(Target::Retention(name, version)),
        _ => match tail.strip_prefix("files/") {
            Some(path) => {
                check_path(path).map_err(ApiError::bad_request)?;
                Ok(Target::File(name, version, path.to_owned()))
            }
            None if rest.split('/').filter(|s| *s == crate::names::RESERVED_SEGMENT).count() > 1 => {
                Err(ApiError::bad_request(format!(
                    "`{}`: a package name may not hold a `{}` segment",
                    rest.escape_debug(),
                    crate::names::RESERVED_SEGMENT
                )))
            }
            None => Err(not_found()),
        },
    }
}

/// Every method on `/v1/packages/{*rest}`.
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(rest): ApiPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let target = parse_target(&rest)?;
    let method = request.method().clone();
    match (method.clone(), target) {
        (Method::GET, Target::Package(name)) => versions(&state, &caller, &name).await,
        (Method::GET, Target::Version(name, version)) => {
            caller.require(Scope::Read, &name)?;
            let doc = manifest(&state, &name, &version).await?;
            Ok(render(request.headers(), StatusCode::OK, doc))
        }
        (Method::PUT, Target::Version(name, version)) => publish(&state, &caller, name, version, request).await,
        (Method::DELETE, Target::Version(name, version)) => delete(&state, &caller, name, version, request).await,
        (Method::PUT, Target::Retention(name, version)) => retention(&state, &caller, name, version, request).await,
        (Method::GET | Method::HEAD, Target::File(name, version, path)) => {
            caller.require(Scope::Read, &name)?;
            let file = package_file(&state, &name, &version, &path).await?;
            serve_blob(&state, Blob::from(&file), &method, request.headers()).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

// ---- reading ----

/// A package version as the API shows it; the same document in JSON and canonical CBOR.
#[derive(Debug, Serialize)]
struct Manifest {
    package_id: String,
    name: String,
    version: String,
    files: Vec<ManifestFile>,
    metadata: Cbor,
    retention: Retention,
    created_at: String,
    created_by: String,
    created_sequence: u64,
}

#[derive(Debug, Serialize)]
struct ManifestFile {
    path: String,
    blake3: String,
    sha256: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Retention {
    until: Option<String>,
    hold: bool,
    reason: Option<String>,
    expired: bool,
}

fn time(t: &DateTime<Utc>) -> String {
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
fn build_manifest(found: Version, files: Vec<PackageFileRow>) -> Result<Manifest, ApiError> {
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

async fn manifest(state: &AppState, name: &str, version: &str) -> Result<Manifest, ApiError> {
    let mut tx = state.instance.db.begin_read().await?;
    let (found, files) = queries::version_with_files(&mut tx, name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no package version {name}@{version}")))?;
    tx.rollback().await?;
    build_manifest(found, files)
}

/// JSON, or canonical CBOR when the client accepts it.
fn render(headers: &HeaderMap, status: StatusCode, doc: Manifest) -> Response {
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

async fn versions(state: &AppState, caller: &Caller, name: &str) -> Result<Response, ApiError> {
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
    let cursor = query.cursor.unwrap_or_default();
    let page = {
        let mut conn = state.instance.db.acquire().await?;
        queries::list_packages(&mut conn, &prefix, &cursor, limit).await?
    };
    let packages: Vec<Json> = page
        .packages
        .iter()
        .map(|p| json!({"name": p.name, "versions": p.versions, "latest_sequence": p.latest_sequence}))
        .collect();
    Ok(axum::Json(json!({"packages": packages, "next_cursor": page.next_cursor})).into_response())
}

async fn package_file(state: &AppState, name: &str, version: &str, path: &str) -> Result<PackageFileRow, ApiError> {
    let mut conn = state.instance.db.acquire().await?;
    queries::package_file(&mut conn, name, version, path)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{name}@{version} has no file `{}`", path.escape_debug())))
}

// ---- publishing ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestIn<M> {
    files: Vec<FileIn>,
    metadata: Option<M>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    path: String,
    digest: String,
    #[serde(default)]
    media_type: Option<String>,
}

async fn decode_body<T: DeserializeOwned>(request: Request) -> Result<(BodyFormat, T), ApiError> {
    let (parts, body) = request.into_parts();
    let format = BodyFormat::of(&parts.headers)?;
    let bytes = read_small_body(body, MAX_CONTROL_BODY).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("this call needs a body"));
    }
    Ok((format, format.decode(&bytes)?))
}

/// The request's manifest, checked: files (with their digests parsed) and metadata as a CBOR map.
async fn read_manifest(request: Request) -> Result<(Vec<(String, Digest, Option<String>)>, Cbor), ApiError> {
    let format = BodyFormat::of(request.headers())?;
    let (files, metadata) = match format {
        BodyFormat::Json => {
            let (_, manifest): (_, ManifestIn<Json>) = decode_body(request).await?;
            let metadata = match manifest.metadata {
                None | Some(Json::Null) => Cbor::Map(Vec::new()),
                Some(Json::Object(map)) => {
                    Cbor::serialized(&map).map_err(|err| ApiError::invalid_manifest(format!("metadata: {err}")))?
                }
                Some(_) => return Err(ApiError::invalid_manifest("metadata must be an object")),
            };
            (manifest.files, metadata)
        }
        BodyFormat::Cbor => {
            let (_, manifest): (_, ManifestIn<Cbor>) = decode_body(request).await?;
            let metadata = match manifest.metadata {
                None | Some(Cbor::Null) => Cbor::Map(Vec::new()),
                Some(map @ Cbor::Map(_)) => map,
                Some(_) => return Err(ApiError::invalid_manifest("metadata must be a map")),
            };
            (manifest.files, metadata)
        }
    };
    // Canonical form now, so "same manifest again" compares bytes.
    let metadata = artifactstore_cbor::encode_value(&metadata)
        .and_then(|bytes| {
            artifactstore_cbor::decode_value(&bytes)
                .map_err(|e| artifactstore_cbor::EncodeError::Serialize(e.to_string()))
        })
        .map_err(|err| ApiError::invalid_manifest(format!("metadata: {err}")))?;
    if files.is_empty() {
        return Err(ApiError::invalid_manifest("a package version needs at least one file"));
    }
    if files.len() > MAX_FILES {
        return Err(ApiError::invalid_manifest(format!("a package version holds at most {MAX_FILES} files")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut checked = Vec::with_capacity(files.len());
    for file in files {
        check_path(&file.path).map_err(ApiError::invalid_manifest)?;
        if !seen.insert(file.path.clone()) {
            return Err(ApiError::invalid_manifest(format!("path `{}` appears twice", file.path.escape_debug())));
        }
        let digest: Digest = file
            .digest
            .parse()
            .map_err(|err| ApiError::invalid_manifest(format!("file `{}`: {err}", file.path.escape_debug())))?;
        if let Some(media_type) = &file.media_type {
            if media_type.is_empty() || media_type.len() > 255 || !media_type.contains('/') {
                return Err(ApiError::invalid_manifest(format!("file `{}`: bad media_type", file.path.escape_debug())));
            }
        }
        checked.push((file.path, digest, file.media_type));
    }
    Ok((checked, metadata))
}

enum Published {
    Created(Uuid),
    Same(Uuid),
}

async fn publish(
    state: &AppState,
    caller: &Caller,
    name: String,
    version: String,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Write, &name)?;
    let accept = request.headers().clone();
    let (files, metadata) = read_manifest(request).await?;
    let actor = caller.actor().to_owned();
    let (n, v) = (name.clone(), version.clone());
    let published = state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                // Resolve every digest to a stored blob.
                let digests: Vec<Digest> = files.iter().map(|(_, digest, _)| *digest).collect();
                let blobs = queries::resolve(wtx.tx(), &digests).await?;
                let mut resolved = Vec::with_capacity(files.len());
                let mut missing = Vec::new();
                for ((path, digest, media_type), blob) in files.into_iter().zip(blobs) {
                    match blob {
                        Some(blob) => resolved.push(PackageFile {
                            path,
                            blake3: blob.blake3,
                            sha256: blob.sha256,
                            size: u64::try_from(blob.size).unwrap_or(0),
                            media_type,
                        }),
                        None => missing.push(digest.to_string()),
                    }
                }
                if !missing.is_empty() {
                    missing.sort();
                    missing.dedup();
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "missing_blobs",
                        "Missing blobs",
                        format!("{} of the manifest's digests name no stored blob", missing.len()),
                    )
                    .with("missing", missing));
                }
                if let Some(existing) = queries::version(wtx.tx(), &n, &v).await? {
                    let package_id = existing.package.package_id;
                    let files = queries::version_files(wtx.tx(), package_id).await?;
                    let stored = build_manifest(existing, files)?;
                    return if same_manifest(&stored, &resolved, &metadata) {
                        Ok(Published::Same(package_id))
                    } else {
                        Err(ApiError::conflict(format!(
                            "{n}@{v} exists with a different manifest; versions are immutable"
                        )))
                    };
                }
                let package_id = Uuid::now_v7();
                let event = RegistryEvent::PackageCreated {
                    package_id,
                    payload: PackageCreated { name: n, version: v, files: resolved, metadata },
                };
                artifactstore_views::record(wtx, &actor, &event).await?;
                Ok(Published::Created(package_id))
            })
        })
        .await?;
    let (status, _package_id) = match published {
        Published::Created(id) => (StatusCode::CREATED, id),
        Published::Same(id) => (StatusCode::OK, id),
    };
    let doc = manifest(state, &name, &version).await?;
    let mut response = render(&accept, status, doc);
    if let Ok(location) = format!("/v1/packages/{name}/versions/{version}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

fn same_manifest(stored: &Manifest, files: &[PackageFile], metadata: &Cbor) -> bool {
    let mut wanted: Vec<(&str, &str, Option<&str>)> =
        files.iter().map(|f| (f.path.as_str(), f.blake3.as_str(), f.media_type.as_deref())).collect();
    wanted.sort();
    let have: Vec<(&str, &str, Option<&str>)> =
        stored.files.iter().map(|f| (f.path.as_str(), f.blake3.as_str(), f.media_type.as_deref())).collect();
    wanted == have && &stored.metadata == metadata
}

// ---- deleting and retention ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    reason: Option<String>,
}

async fn delete(
    state: &AppState,
    caller: &Caller,
    name: String,
    version: String,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin, &name)?;
    let (mut parts, _body) = request.into_parts();
    let ApiQuery(query) =
        <ApiQuery<DeleteQuery> as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &()).await?;
    let reason = query.reason.filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::bad_request("reason is at most 1024 bytes"));
    }
    let actor = caller.actor().to_owned();
    let (n, v) = (name.clone(), version.clone());
    let (package_id, sequence) = state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let Version { package, retention: row } = queries::version(wtx.tx(), &n, &v)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("no package version {n}@{v}")))?;
                if row.hold {
                    return Err(ApiError::conflict(format!("{n}@{v} is under a retention hold")));
                }
                if let Some(until) = row.until.filter(|until| *until > Utc::now()) {
                    return Err(ApiError::conflict(format!("{n}@{v} is retained until {}", time(&until))));
                }
                let package_id = package.package_id;
                let event = RegistryEvent::PackageDeleted {
                    package_id,
                    payload: PackageDeleted { name: n, version: v, reason },
                };
                let appended = artifactstore_views::record(wtx, &actor, &event).await?;
                Ok::<_, ApiError>((package_id, appended.sequence))
            })
        })
        .await?;
    Ok(axum::Json(json!({
        "name": name, "version": version, "package_id": package_id.to_string(), "deleted": true, "sequence": sequence,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionIn {
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    hold: Option<bool>,
    #[serde(default)]
    reason: Option<String>,
}

async fn retention(
    state: &AppState,
    caller: &Caller,
    name: String,
    version: String,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin, &name)?;
    let (_, wanted): (_, RetentionIn) = decode_body(request).await?;
    let until = wanted
        .until
        .as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
                .map_err(|err| ApiError::bad_request(format!("until `{t}` is not an RFC 3339 time: {err}")))
        })
        .transpose()?;
    if wanted.reason.as_ref().is_some_and(|r| r.len() > 1024) {
        return Err(ApiError::bad_request("reason is at most 1024 bytes"));
    }
    if until.is_none() && wanted.hold.is_none() {
        return Err(ApiError::bad_request("give `until`, `hold`, or both"));
    }
    let actor = caller.actor().to_owned();
    let (n, v) = (name.clone(), version.clone());
    let reason = wanted.reason;
    let hold = wanted.hold;
    let sequences = state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let Version { package, retention: row } = queries::version(wtx.tx(), &n, &v)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("no package version {n}@{v}")))?;
                let package_id = package.package_id.to_string();
                let mut changes = Vec::new();
                if let Some(until) = until {
                    match row.until {
                        Some(current) if until < current => {
                            return Err(ApiError::conflict(format!(
                                "{n}@{v} is retained until {}; retention can be extended, never shortened",
                                time(&current)
                            )))
                        }
                        Some(current) if until == current => {}
                        _ => changes.push((RetentionKind::Extended, Some(time(&until)))),
                    }
                }
                match hold {
                    Some(true) if !row.hold => changes.push((RetentionKind::HoldSet, None)),
                    Some(false) if row.hold => changes.push((RetentionKind::HoldReleased, None)),
                    _ => {}
                }
                let mut sequences = Vec::new();
                for (kind, until) in changes {
                    let event = RegistryEvent::Retention {
                        kind,
                        payload: RetentionChange { package_id: package_id.clone(), until, reason: reason.clone() },
                    };
                    sequences.push(artifactstore_views::record(wtx, &actor, &event).await?.sequence);
                }
                Ok::<_, ApiError>(sequences)
            })
        })
        .await?;
    let doc = manifest(state, &name, &version).await?;
    Ok(axum::Json(json!({"retention": doc.retention, "sequences": sequences})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("team/app").unwrap(), Target::Package("team/app".into()));
        assert_eq!(parse_target("a/versions/1.0").unwrap(), Target::Version("a".into(), "1.0".into()));
        assert_eq!(parse_target("a/versions/1/retention").unwrap(), Target::Retention("a".into(), "1".into()));
        assert_eq!(
            parse_target("a/b/versions/1/files/bin/versions/x").unwrap(),
            Target::File("a/b".into(), "1".into(), "bin/versions/x".into())
        );
        assert_eq!(parse_target("a/versions/1/other").unwrap_err().status(), 404);
        assert_eq!(parse_target("a/versions/1/files/../x").unwrap_err().status(), 400);
        assert_eq!(parse_target("A/versions/1").unwrap_err().status(), 400);
        assert_eq!(parse_target("a/versions/.1").unwrap_err().status(), 400);
    }
}
