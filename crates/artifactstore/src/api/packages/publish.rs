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
use uuid::Uuid;

use super::metadata::{self, check_integers, FromJson};
use super::read::{build_manifest, manifest, render};
use super::VersionCall;
use crate::api::body::{read_small_body, BodyFormat, MAX_CONTROL_BODY};
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

/// A checked manifest: files with their digests parsed, metadata as a CBOR map and its canonical bytes.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) files: Vec<(String, Digest, Option<String>)>,
    pub(crate) metadata: Cbor,
    pub(crate) canonical: Vec<u8>,
}

/// The request's manifest, checked.
async fn read_manifest(request: Request) -> Result<Checked, ApiError> {
    let (parts, body) = request.into_parts();
    let format = BodyFormat::of(&parts.headers)?;
    let bytes = read_small_body(body, MAX_CONTROL_BODY).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("this call needs a body"));
    }
    decode_manifest(format, &bytes)
}

/// A manifest body, checked.
pub(crate) fn decode_manifest(format: BodyFormat, bytes: &[u8]) -> Result<Checked, ApiError> {
    let (files, metadata) = match format {
        BodyFormat::Json => {
            check_integers(bytes)?;
            let manifest: ManifestIn<FromJson> = format.decode(bytes)?;
            let metadata = match manifest.metadata.map(|m| m.0) {
                None | Some(Cbor::Null) => Cbor::Map(Vec::new()),
                Some(map @ Cbor::Map(_)) => map,
                Some(_) => return Err(ApiError::invalid_manifest("metadata must be an object")),
            };
            (manifest.files, metadata)
        }
        BodyFormat::Cbor => {
            let manifest: ManifestIn<Cbor> = format.decode(bytes)?;
            let metadata = match manifest.metadata {
                None | Some(Cbor::Null) => Cbor::Map(Vec::new()),
                Some(map @ Cbor::Map(_)) => map,
                Some(_) => return Err(ApiError::invalid_manifest("metadata must be a map")),
            };
            (manifest.files, metadata)
        }
    };
    // Canonical form now: "same manifest again" compares these bytes.
    let canonical = metadata::canonical(&metadata)?;
    let metadata = artifactstore_cbor::decode_value(&canonical)
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
    Ok(Checked { files: checked, metadata, canonical })
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
    let Checked { files, metadata, canonical } = read_manifest(request).await?;
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
                    let same_metadata = existing.package.metadata == canonical;
                    let files = queries::version_files(wtx.tx(), package_id).await?;
                    let stored = build_manifest(existing, files)?;
                    return if same_metadata
                        && same_files(stored.files.iter().map(|f| (&f.path, &f.blake3, &f.media_type)), &resolved)
                    {
                        Ok(Published::Same(package_id))
                    } else {
                        Err(ApiError::conflict(format!(
                            "{n}@{v} exists with a different manifest; versions are immutable"
                        )))
                    };
                }
                if let Some(first) = queries::retired_manifest(wtx.tx(), &n, &v).await? {
                    let first_metadata = metadata::canonical(&first.metadata)?;
                    let first_files = first.files.iter().map(|f| (&f.path, &f.blake3, &f.media_type));
                    if first_metadata != canonical || !same_files(first_files, &resolved) {
                        return Err(ApiError::conflict(format!(
                            "{n}@{v} was published and deleted; a version means one manifest forever, so it may be \
                             published again only with the manifest it first had"
                        )));
                    }
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

/// Whether `files` (path, BLAKE3, media type) are the same set as `resolved`, whatever the order.
fn same_files<'a>(
    files: impl Iterator<Item = (&'a String, &'a String, &'a Option<String>)>,
    resolved: &[PackageFile],
) -> bool {
    let key = |(path, blake3, media_type): (&'a String, &'a String, &'a Option<String>)| {
        (path.as_str(), blake3.as_str(), media_type.as_deref())
    };
    let mut have: Vec<(&str, &str, Option<&str>)> = files.map(key).collect();
    let mut wanted: Vec<(&str, &str, Option<&str>)> =
        resolved.iter().map(|f| (f.path.as_str(), f.blake3.as_str(), f.media_type.as_deref())).collect();
    have.sort_unstable();
    wanted.sort_unstable();
    have == wanted
}
