//! Publishing a package version: its manifest checked, its digests resolved to stored blobs, and
//! `v1.package.created` recorded, or the same manifest again answered as it stands.

use artifactstore_cbor::Value as Cbor;
use artifactstore_digest::Digest;
use artifactstore_views::queries;
use artifactstore_views::vocab::{PackageCreated, PackageFile, RegistryEvent};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value as Json;
use uuid::Uuid;

use super::read::{build_manifest, manifest, render, Manifest};
use super::{decode_body, VersionCall};
use crate::api::body::BodyFormat;
use crate::auth::Scope;
use crate::names::check_path;
use crate::problem::ApiError;

/// The most files one package version may hold.
const MAX_FILES: usize = 100_000;

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
            if let Err(err) = crate::names::check_media_type(media_type) {
                return Err(ApiError::invalid_manifest(format!("file `{}`: {err}", file.path.escape_debug())));
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

/// `PUT /v1/packages/{name}/versions/{version}`: 201 with the new version, 200 when the same manifest stands already.
pub(super) async fn publish(call: VersionCall<'_>, request: Request) -> Result<Response, ApiError> {
    let (actor, n, v) = call.grant(Scope::Write)?;
    let VersionCall { state, name, version, .. } = call;
    let accept = request.headers().clone();
    let (files, metadata) = read_manifest(request).await?;
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
