//! OCI manifests nothing keeps alive: no tag names them, no live index lists them, they are neither the subject nor
//! a referrer of a live manifest (ADR 0028). Those pushed before the cutoff are deleted with
//! `v1.oci.manifest.deleted` (reason `untagged`), which ends the references they held, so collection can free their
//! blobs after the grace time.

use artifactstore_views::oci;
use artifactstore_views::vocab::{OciEvent, OciManifestDeleted, RegistryEvent};
use serde::Serialize;

use crate::instance::Instance;
use crate::problem::ApiError;

/// Manifests deleted per transaction.
const BATCH: i64 = 256;

/// One manifest deleted because nothing kept it alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Untagged {
    /// Its repository.
    pub repository: String,
    /// Its `sha256:` digest.
    pub digest: String,
}

/// What a run would delete: the unreachable manifests pushed before `cutoff_ms` (not those an index among them
/// would leave unreachable).
pub(crate) async fn preview(instance: &Instance, cutoff_ms: i64) -> Result<Vec<Untagged>, ApiError> {
    let mut conn = instance.db.acquire().await?;
    let rows = oci::unreachable_manifests(&mut conn, cutoff_ms, i64::MAX).await?;
    Ok(rows.into_iter().map(|row| Untagged { repository: row.repository, digest: row.digest }).collect())
}

/// Deletes the unreachable manifests pushed before `cutoff_ms`, in batches; each batch finds them again inside its
/// transaction, so a tag set meanwhile keeps its manifest. Children an index kept alive go in a later batch.
pub(crate) async fn prune(instance: &Instance, actor: &str, cutoff_ms: i64) -> Result<Vec<Untagged>, ApiError> {
    let mut deleted = Vec::new();
    loop {
        let actor = actor.to_owned();
        let batch = instance
            .log
            .transact(move |wtx| {
                Box::pin(async move {
                    let rows = oci::unreachable_manifests(wtx.tx(), cutoff_ms, BATCH).await?;
                    let events: Vec<RegistryEvent> = rows
                        .iter()
                        .map(|row| {
                            RegistryEvent::Oci(OciEvent::ManifestDeleted(OciManifestDeleted {
                                repository: row.repository.clone(),
                                digest: row.digest.clone(),
                                reason: Some("untagged".to_owned()),
                            }))
                        })
                        .collect();
                    artifactstore_views::record_all(wtx, &actor, &events).await?;
                    Ok::<_, ApiError>(
                        rows.into_iter()
                            .map(|row| Untagged { repository: row.repository, digest: row.digest })
                            .collect::<Vec<_>>(),
                    )
                })
            })
            .await?;
        if batch.is_empty() {
            return Ok(deleted);
        }
        deleted.extend(batch);
    }
}
