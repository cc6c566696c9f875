//! `/v2/<name>/manifests/<reference>`: manifests pushed byte for byte as blobs through the one commit path, then
//! recorded with what they name (`v1.oci.manifest.pushed`) and tagged (`v1.oci.tag.set`) in one transaction that
//! checks every reference again, so a push and a collection never both win.

use std::sync::{Arc, Mutex};

use artifactstore_db::AsExec;
use artifactstore_digest::{Algorithm, DualDigest};
use artifactstore_eventlog::Refused;
use artifactstore_views::vocab::{OciEvent, OciManifestDeleted, OciManifestPushed, OciReference, OciTagChange};
use artifactstore_views::{oci, queries, ManifestRow, RegistryEvent};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::authorize;
use super::manifest::{self, Parsed, MAX_MANIFEST};
use super::{check_tag, header_value, parse_digest, OciError};
use crate::api::body::read_small_body;
use crate::auth::Scope;
use crate::problem::ApiError;
use crate::server::AppState;
use crate::uploads::{ChunkStart, Incoming, Then};

fn manifest_unknown(name: &str, reference: &str) -> OciError {
    OciError::new(404, "MANIFEST_UNKNOWN", format!("no manifest `{}` in repository `{name}`", reference.escape_debug()))
}

/// What a reference names: a tag (checked) or a digest (parsed).
enum Reference {
    Tag(String),
    Digest(artifactstore_digest::Digest),
}

fn reference(text: &str) -> Result<Reference, OciError> {
    if text.contains(':') {
        Ok(Reference::Digest(parse_digest(text)?))
    } else {
        check_tag(text)?;
        Ok(Reference::Tag(text.to_owned()))
    }
}

/// The manifest row a reference names in `name`.
async fn find(state: &AppState, name: &str, text: &str) -> Result<ManifestRow, OciError> {
    let mut conn = state.instance.db.acquire().await?;
    // A tag outside the grammar names nothing: unknown, as for a read of any name nothing holds.
    let parsed = match reference(text) {
        Err(err) if err.code() == "TAG_INVALID" => return Err(manifest_unknown(name, text)),
        other => other?,
    };
    let row = match parsed {
        Reference::Tag(tag) => match oci::tag(&mut conn, name, &tag).await? {
            Some(tag) => oci::manifest(&mut conn, name, &tag.digest).await?,
            None => None,
        },
        Reference::Digest(d) => by_digest(&mut conn, name, &d).await?,
    };
    row.ok_or_else(|| manifest_unknown(name, text))
}

/// The manifest of `name` whose bytes have `digest`: its sha256 names it, or the BLAKE3 digest of its blob.
async fn by_digest<E: AsExec>(
    target: &mut E,
    name: &str,
    digest: &artifactstore_digest::Digest,
) -> Result<Option<ManifestRow>, OciError> {
    let sha256 = match digest.algorithm() {
        Algorithm::Sha256 => Some(digest.to_string()),
        Algorithm::Blake3 => queries::blob(target, digest).await?.map(|row| row.sha256),
    };
    Ok(match sha256 {
        Some(sha256) => oci::manifest(target, name, &sha256).await?,
        None => None,
    })
}

/// `GET|HEAD /v2/<name>/manifests/<reference>`: the manifest's bytes as pushed, with its media type.
pub(crate) async fn get(state: &AppState, name: &str, text: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, _) = request.into_parts();
    authorize(state, &mut parts, Some(name), Scope::Read).await?;
    let row = find(state, name, text).await?;
    if !acceptable(&parts.headers, &row.media_type) {
        return Err(OciError::new(
            404,
            "MANIFEST_UNKNOWN",
            format!("the manifest is `{}`, a media type the request's Accept header does not list", row.media_type),
        ));
    }
    let size = u64::try_from(row.size).unwrap_or(0);
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, header_value(&row.media_type))
        .header(header::CONTENT_LENGTH, size)
        .header("docker-content-digest", header_value(&row.digest))
        .header(header::VARY, "accept")
        .header(header::ETAG, header_value(&format!("\"{}\"", row.digest)));
    let body = if parts.method == Method::HEAD {
        Body::empty()
    } else {
        let hex = row.blake3.trim_start_matches("blake3:");
        Body::from_stream(state.instance.store.read(hex, 0..size).await?)
    };
    builder.body(body).map_err(|err| OciError::from_problem(ApiError::internal(&err), "UNKNOWN", "UNKNOWN"))
}

/// Whether a client that sent `headers` takes a manifest of `media_type`: no `Accept`, a wildcard, the type itself,
/// or a list that names no manifest type at all (a generic client) all do; a list of other manifest types does not.
fn acceptable(headers: &axum::http::HeaderMap, media_type: &str) -> bool {
    let listed: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(manifest::essence)
        .filter(|t| !t.is_empty())
        .collect();
    let names_manifests = listed.iter().any(|t| manifest::MEDIA_TYPES.contains(&t.as_str()));
    !names_manifests || listed.iter().any(|t| t == media_type || t == "*/*" || t == "application/*")
}

/// `PUT /v2/<name>/manifests/<reference>`: `201` with `Location`, `Docker-Content-Digest`, and `OCI-Subject` for a
/// manifest that names a subject.
pub(crate) async fn put(state: &AppState, name: &str, text: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, body) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Write).await?;
    let reference = reference(text)?;
    let bytes = read_small_body(body, MAX_MANIFEST)
        .await
        .map_err(|problem| OciError::from_problem(problem, "MANIFEST_INVALID", "MANIFEST_INVALID"))?;
    let dual = DualDigest::of(&bytes);
    if let Reference::Digest(d) = &reference {
        let own = if d.algorithm() == Algorithm::Sha256 { dual.sha256 } else { dual.blake3 };
        if *d != own {
            return Err(OciError::new(400, "DIGEST_INVALID", format!("the manifest's digest is {own}, not {d}")));
        }
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(&bytes, content_type)?;
    // Checked before the bytes are stored, so a refused manifest leaves nothing; checked again as it is recorded.
    references(&mut state.instance.db.acquire().await?, name, &parsed).await?;
    // The bytes go in as any blob does, and the manifest and its tag are recorded in the transaction that records
    // the blob. That transaction refuses with an `ApiError`; the OCI error it stands for waits in `refused`.
    let tag = match reference {
        Reference::Tag(tag) => Some(tag),
        Reference::Digest(_) => None,
    };
    let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
    let (repository, actor) = (name.to_owned(), caller.actor().to_owned());
    let refused: Arc<Mutex<Option<OciError>>> = Arc::default();
    let slot = refused.clone();
    let then: Then = Box::new(move |wtx, stored| {
        Box::pin(async move {
            record_push(wtx, &actor, repository, tag, stored, parsed).await.map_err(|refusal| {
                let stand_in = |err: OciError| {
                    *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err);
                    ApiError::conflict("the manifest was refused")
                };
                match refusal {
                    Refused::Cleanly(err) => Refused::Cleanly(stand_in(err)),
                    Refused::AfterWriting(err) => Refused::AfterWriting(stand_in(err)),
                }
            })
        })
    });
    let start = ChunkStart { offset: Some(0), length: Some(bytes.len() as u64) };
    let stored =
        state.uploads.put_whole_then(&caller, dual.sha256, Incoming { start, body: Body::from(bytes) }, then).await;
    if let Err(problem) = stored {
        let oci = refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        return Err(oci.unwrap_or_else(|| OciError::from_problem(problem, "MANIFEST_INVALID", "MANIFEST_INVALID")));
    }
    let digest = dual.sha256.to_string();
    let mut response = (StatusCode::CREATED, [(header::CONTENT_LENGTH, "0")]).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&format!("/v2/{name}/manifests/{digest}")));
    headers.insert("docker-content-digest", header_value(&digest));
    if let Some(subject) = subject {
        headers.insert("oci-subject", header_value(&subject));
    }
    Ok(response)
}

/// What the manifest names, each found where it must be: its blobs live and not deleted from the repository, with
/// the sizes the manifest gives them; an index's manifests in the repository.
async fn references<E: AsExec>(
    target: &mut E,
    repository: &str,
    parsed: &Parsed,
) -> Result<Vec<OciReference>, OciError> {
    let blob_unknown = |d: &str| {
        OciError::new(
            400,
            "MANIFEST_BLOB_UNKNOWN",
            format!("the manifest names {d}, which this repository does not hold"),
        )
        .detail(serde_json::json!({ "digest": d }))
    };
    let wanted: Vec<artifactstore_digest::Digest> = parsed.blobs.iter().map(|b| b.digest).collect();
    let found = queries::resolve(target, &wanted).await?;
    let live: Vec<String> = found.iter().flatten().map(|row| row.blake3.clone()).collect();
    let deleted = oci::blobs_deleted(target, repository, &live).await?;
    let mut references = Vec::with_capacity(parsed.blobs.len() + parsed.children.len());
    for (descriptor, row) in parsed.blobs.iter().zip(found) {
        let shown = descriptor.digest.to_string();
        let Some(row) = row.filter(|row| !deleted.contains(&row.blake3)) else { return Err(blob_unknown(&shown)) };
        if u64::try_from(row.size).ok() != Some(descriptor.size) {
            return Err(OciError::new(
                400,
                "MANIFEST_INVALID",
                format!("the manifest gives {shown} a size of {}, but it is {} bytes", descriptor.size, row.size),
            ));
        }
        references.push(OciReference {
            digest: shown,
            blake3: row.blake3,
            size: descriptor.size,
            media_type: descriptor.media_type.clone(),
        });
    }
    for child in &parsed.children {
        let shown = child.digest.to_string();
        let Some(row) = oci::manifest(target, repository, &shown).await? else {
            return Err(blob_unknown(&shown));
        };
        if u64::try_from(row.size).ok() != Some(child.size) {
            return Err(OciError::new(
                400,
                "MANIFEST_INVALID",
                format!("the index gives {shown} a size of {}, but it is {} bytes", child.size, row.size),
            ));
        }
        references.push(OciReference {
            digest: shown,
            blake3: row.blake3,
            size: child.size,
            media_type: child.media_type.clone(),
        });
    }
    Ok(references)
}

/// Inside the transaction that records the manifest's blob (`stored`): every reference must be there now, then the
/// manifest and its tag are recorded unless they stand already. A refusal before the record wrote nothing.
async fn record_push(
    wtx: &mut artifactstore_eventlog::WriteTx,
    actor: &str,
    repository: String,
    tag: Option<String>,
    stored: &DualDigest,
    parsed: Parsed,
) -> Result<(), Refused<OciError>> {
    let digest = stored.sha256.to_string();
    let references = references(wtx.tx(), &repository, &parsed).await.map_err(Refused::Cleanly)?;
    let read = |err: artifactstore_views::Error| Refused::Cleanly(OciError::from(err));
    let mut events = Vec::new();
    if oci::manifest(wtx.tx(), &repository, &digest).await.map_err(read)?.is_none() {
        events.push(RegistryEvent::Oci(OciEvent::ManifestPushed(OciManifestPushed {
            repository: repository.clone(),
            digest: digest.clone(),
            blake3: stored.blake3.to_string(),
            media_type: parsed.media_type,
            size: stored.size,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject.map(|s| s.digest.to_string()),
            annotations: parsed.annotations,
            references,
        })));
    }
    if let Some(tag) = tag {
        let current = oci::tag(wtx.tx(), &repository, &tag).await.map_err(read)?;
        if current.is_none_or(|row| row.digest != digest) {
            events.push(RegistryEvent::Oci(OciEvent::TagSet(OciTagChange { repository, tag, digest: Some(digest) })));
        }
    }
    artifactstore_views::record_all(wtx, actor, &events)
        .await
        .map_err(|err| Refused::AfterWriting(OciError::from(err)))?;
    Ok(())
}

/// `DELETE /v2/<name>/manifests/<reference>`: a tag is deleted alone; a digest takes its manifest and every tag that
/// names it.
pub(crate) async fn delete(state: &AppState, name: &str, text: &str, request: Request) -> Result<Response, OciError> {
    let (mut parts, _) = request.into_parts();
    let caller = authorize(state, &mut parts, Some(name), Scope::Admin).await?;
    let reference = reference(text)?;
    let (repository, actor, shown) = (name.to_owned(), caller.actor().to_owned(), text.to_owned());
    state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let mut events = Vec::new();
                match reference {
                    Reference::Tag(tag) => {
                        let row = oci::tag(wtx.tx(), &repository, &tag).await?;
                        let row = row.ok_or_else(|| manifest_unknown(&repository, &shown))?;
                        let change = OciTagChange { repository, tag, digest: Some(row.digest) };
                        events.push(RegistryEvent::Oci(OciEvent::TagDeleted(change)));
                    }
                    Reference::Digest(d) => {
                        let row = by_digest(wtx.tx(), &repository, &d).await?;
                        let row = row.ok_or_else(|| manifest_unknown(&repository, &shown))?;
                        for tag in oci::tags_naming(wtx.tx(), &repository, &row.digest).await? {
                            let change =
                                OciTagChange { repository: repository.clone(), tag, digest: Some(row.digest.clone()) };
                            events.push(RegistryEvent::Oci(OciEvent::TagDeleted(change)));
                        }
                        let deleted = OciManifestDeleted { repository, digest: row.digest, reason: None };
                        events.push(RegistryEvent::Oci(OciEvent::ManifestDeleted(deleted)));
                    }
                }
                artifactstore_views::record_all(wtx, &actor, &events).await?;
                Ok::<_, OciError>(())
            })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_among_manifest_types() {
        let with = |values: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for v in values {
                headers.append(header::ACCEPT, v.parse().unwrap());
            }
            headers
        };
        let oci = manifest::OCI_MANIFEST;
        assert!(acceptable(&with(&[]), oci));
        assert!(acceptable(&with(&["application/json"]), oci), "a generic client");
        assert!(acceptable(&with(&["*/*"]), manifest::OCI_INDEX));
        assert!(acceptable(&with(&[&format!("{}, {oci};q=0.9", manifest::DOCKER_MANIFEST)]), oci));
        assert!(acceptable(&with(&[manifest::DOCKER_MANIFEST, oci]), oci), "several headers");
        assert!(!acceptable(&with(&[manifest::DOCKER_MANIFEST]), oci));
        assert!(!acceptable(&with(&[oci]), manifest::OCI_INDEX));
    }
}
