//! The reads of the OCI views: manifests, tags, referrers, repositories, and which manifests nothing keeps alive.

use artifactstore_db::{fetch_all, fetch_optional, AsExec};
use artifactstore_digest::{Algorithm, Digest};

use crate::rows::{once, qualified, FileRow, ManifestRefRow, ManifestRow, TagRow};
use crate::Error;

/// The manifest `digest` (`sha256:<hex>`) of `repository`.
pub async fn manifest<E: AsExec>(target: &mut E, repository: &str, digest: &str) -> Result<Option<ManifestRow>, Error> {
    let sql =
        once!(format!("SELECT {} FROM oci_manifests WHERE repository = $1 AND digest = $2", ManifestRow::COLUMNS));
    Ok(fetch_optional!(target, ManifestRow, sql, repository, digest)?)
}

/// What the manifest `digest` of `repository` names, in order.
pub async fn manifest_refs<E: AsExec>(
    target: &mut E,
    repository: &str,
    digest: &str,
) -> Result<Vec<ManifestRefRow>, Error> {
    let sql = once!(format!(
        "SELECT {} FROM oci_manifest_refs WHERE repository = $1 AND digest = $2 ORDER BY position",
        ManifestRefRow::COLUMNS
    ));
    Ok(fetch_all!(target, ManifestRefRow, sql, repository, digest)?)
}

/// The tag `tag` of `repository`.
pub async fn tag<E: AsExec>(target: &mut E, repository: &str, tag: &str) -> Result<Option<TagRow>, Error> {
    let sql = once!(format!("SELECT {} FROM oci_tags WHERE repository = $1 AND tag = $2", TagRow::COLUMNS));
    Ok(fetch_optional!(target, TagRow, sql, repository, tag)?)
}

/// At most `n` tags of `repository` after `last`, in lexical (byte) order.
pub async fn tags<E: AsExec>(
    target: &mut E,
    repository: &str,
    last: Option<&str>,
    n: i64,
) -> Result<Vec<String>, Error> {
    let rows = fetch_all!(
        target,
        (String,),
        "SELECT tag FROM oci_tags WHERE repository = $1 AND tag > $2 ORDER BY tag LIMIT $3",
        repository,
        last.unwrap_or(""),
        n,
    )?;
    Ok(rows.into_iter().map(|(tag,)| tag).collect())
}

/// The tags of `repository` that name the manifest `digest`, in order.
pub async fn tags_naming<E: AsExec>(target: &mut E, repository: &str, digest: &str) -> Result<Vec<String>, Error> {
    let rows = fetch_all!(
        target,
        (String,),
        "SELECT tag FROM oci_tags WHERE repository = $1 AND digest = $2 ORDER BY tag",
        repository,
        digest,
    )?;
    Ok(rows.into_iter().map(|(tag,)| tag).collect())
}

/// At most `n` repositories after `last`, in lexical order: those with a manifest or a tag.
pub async fn repositories<E: AsExec>(target: &mut E, last: Option<&str>, n: i64) -> Result<Vec<String>, Error> {
    let rows = fetch_all!(
        target,
        (String,),
        "SELECT repository FROM (SELECT repository FROM oci_manifests WHERE repository > $1 \
         UNION SELECT repository FROM oci_tags WHERE repository > $1) AS r ORDER BY repository LIMIT $2",
        last.unwrap_or(""),
        n,
    )?;
    Ok(rows.into_iter().map(|(name,)| name).collect())
}

/// Whether `repository` has a manifest or a tag.
pub async fn repository_exists<E: AsExec>(target: &mut E, repository: &str) -> Result<bool, Error> {
    let row = fetch_optional!(
        target,
        (i64,),
        "SELECT 1 FROM oci_manifests WHERE repository = $1 UNION ALL SELECT 1 FROM oci_tags WHERE repository = $1 \
         LIMIT 1",
        repository,
    )?;
    Ok(row.is_some())
}

/// The manifests of `repository` whose subject is `digest`, in digest order.
pub async fn referrers<E: AsExec>(target: &mut E, repository: &str, digest: &str) -> Result<Vec<ManifestRow>, Error> {
    let sql = once!(format!(
        "SELECT {} FROM oci_manifests WHERE repository = $1 AND subject = $2 ORDER BY digest",
        ManifestRow::COLUMNS
    ));
    Ok(fetch_all!(target, ManifestRow, sql, repository, digest)?)
}

/// The blob with `digest` (BLAKE3 or SHA-256) as `repository` sees it: live, and not deleted from the repository.
pub async fn visible_blob<E: AsExec>(
    target: &mut E,
    repository: &str,
    digest: &Digest,
) -> Result<Option<FileRow>, Error> {
    macro_rules! by {
        ($column:literal) => {
            once!(format!(
                "SELECT {} FROM artifact_files f WHERE f.{} = $1 AND f.removed_sequence IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM oci_blobs_deleted d WHERE d.repository = $2 AND d.blake3 = f.blake3)",
                qualified("f", FileRow::COLUMNS),
                $column
            ))
        };
    }
    let sql = match digest.algorithm() {
        Algorithm::Blake3 => by!("blake3"),
        Algorithm::Sha256 => by!("sha256"),
    };
    Ok(fetch_optional!(target, FileRow, sql, digest.to_string(), repository)?)
}

/// Whether the blob `blake3` was deleted from `repository` (and not pushed there again since).
pub async fn blob_deleted<E: AsExec>(target: &mut E, repository: &str, blake3: &str) -> Result<bool, Error> {
    let row = fetch_optional!(
        target,
        (i64,),
        "SELECT sequence FROM oci_blobs_deleted WHERE repository = $1 AND blake3 = $2",
        repository,
        blake3,
    )?;
    Ok(row.is_some())
}

/// Which of the blobs `blake3` were deleted from `repository`.
pub async fn blobs_deleted<E: AsExec>(
    target: &mut E,
    repository: &str,
    blake3: &[String],
) -> Result<std::collections::HashSet<String>, Error> {
    let mut deleted = std::collections::HashSet::new();
    for chunk in blake3.chunks(500) {
        let sql = |backend| {
            format!(
                "SELECT blake3 FROM oci_blobs_deleted WHERE repository = {} AND blake3 IN {}",
                artifactstore_db::placeholders(backend, 1, 1),
                artifactstore_db::placeholders_after(backend, 1, 1, chunk.len())
            )
        };
        let items = std::iter::once(repository).chain(chunk.iter().map(String::as_str));
        let rows = artifactstore_db::fetch_all_each!(target, (String,), sql, items, |q, key| q.bind(key))?;
        deleted.extend(rows.into_iter().map(|(b,)| b));
    }
    Ok(deleted)
}

/// At most `limit` manifests pushed before `cutoff_ms` that nothing keeps alive, oldest first: no tag names them,
/// no live index lists them, they are not the subject of a live manifest, nor a live manifest's referrer.
pub async fn unreachable_manifests<E: AsExec>(
    target: &mut E,
    cutoff_ms: i64,
    limit: i64,
) -> Result<Vec<ManifestRow>, Error> {
    let sql = once!(format!(
        "WITH RECURSIVE edges (repository, source, target) AS ( \
             SELECT repository, digest, ref_digest FROM oci_manifest_refs \
             UNION ALL SELECT repository, subject, digest FROM oci_manifests WHERE subject IS NOT NULL \
             UNION ALL SELECT repository, digest, subject FROM oci_manifests WHERE subject IS NOT NULL), \
         live (repository, digest) AS ( \
             SELECT repository, digest FROM oci_tags \
             UNION SELECT e.repository, e.target FROM edges e JOIN live l \
                 ON e.repository = l.repository AND e.source = l.digest) \
         SELECT {} FROM oci_manifests m WHERE m.pushed_ms < $1 AND NOT EXISTS \
             (SELECT 1 FROM live l WHERE l.repository = m.repository AND l.digest = m.digest) \
         ORDER BY m.pushed_ms, m.repository, m.digest LIMIT $2",
        qualified("m", ManifestRow::COLUMNS)
    ));
    Ok(fetch_all!(target, ManifestRow, sql, cutoff_ms, limit)?)
}

/// Whether a manifest of `repository` names the blob `blake3` (as its config, a layer, or the manifest itself).
pub async fn repository_names_blob<E: AsExec>(target: &mut E, repository: &str, blake3: &str) -> Result<bool, Error> {
    let row = fetch_optional!(
        target,
        (i64,),
        "SELECT 1 FROM oci_manifest_refs WHERE repository = $1 AND blake3 = $2 \
         UNION ALL SELECT 1 FROM oci_manifests WHERE repository = $1 AND blake3 = $2 LIMIT 1",
        repository,
        blake3,
    )?;
    Ok(row.is_some())
}
