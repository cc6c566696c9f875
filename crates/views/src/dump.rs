//! Every row of every view, in a fixed order, and the differences between two such dumps.

use std::collections::BTreeMap;
use std::fmt::Debug;

use artifactstore_db::{fetch_all, Tx};

use crate::rows::{
    qualified, BlobDeletedRow, FileRow, ManifestRefRow, ManifestRow, PackageFileRow, PackageRow, PolicyRow,
    RetentionRow, RetiredRow, StorageRow, TagRow,
};
use crate::Error;

/// The whole content of the views, each table ordered by its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViewsDump {
    /// `artifact_files`, by BLAKE3 digest.
    pub files: Vec<FileRow>,
    /// `artifact_packages`, by name and version.
    pub packages: Vec<PackageRow>,
    /// `artifact_package_files`, by their version's name and version, then path.
    pub package_files: Vec<PackageFileRow>,
    /// `retention_state`, by their version's name and version.
    pub retention: Vec<RetentionRow>,
    /// `storage_locations`, by BLAKE3 digest and location.
    pub storage: Vec<StorageRow>,
    /// `retention_policies`, by name (absent from snapshots made before policies existed).
    #[serde(default)]
    pub policies: Vec<PolicyRow>,
    /// `oci_manifests`, by repository and digest (absent from snapshots made before OCI).
    #[serde(default)]
    pub oci_manifests: Vec<ManifestRow>,
    /// `oci_manifest_refs`, by repository, digest and position.
    #[serde(default)]
    pub oci_manifest_refs: Vec<ManifestRefRow>,
    /// `oci_tags`, by repository and tag.
    #[serde(default)]
    pub oci_tags: Vec<TagRow>,
    /// `oci_blobs_deleted`, by repository and blob.
    #[serde(default)]
    pub oci_blobs_deleted: Vec<BlobDeletedRow>,
    /// `retired_versions`, by name and version.
    pub retired: Vec<RetiredRow>,
}

impl ViewsDump {
    /// How many rows the views hold in all.
    pub fn rows(&self) -> usize {
        self.files.len()
            + self.packages.len()
            + self.package_files.len()
            + self.retention.len()
            + self.storage.len()
            + self.policies.len()
            + self.oci_manifests.len()
            + self.oci_manifest_refs.len()
            + self.oci_tags.len()
            + self.oci_blobs_deleted.len()
            + self.retired.len()
    }
}

/// Reads every view row inside `tx`.
pub async fn dump(tx: &mut Tx) -> Result<ViewsDump, Error> {
    Ok(ViewsDump {
        files: fetch_all!(tx, FileRow, &format!("SELECT {} FROM artifact_files ORDER BY blake3", FileRow::COLUMNS))?,
        packages: fetch_all!(
            tx,
            PackageRow,
            &format!("SELECT {} FROM artifact_packages ORDER BY name, version", PackageRow::COLUMNS)
        )?,
        package_files: fetch_all!(
            tx,
            PackageFileRow,
            &format!(
                "SELECT {} FROM artifact_package_files f JOIN artifact_packages p ON p.package_id = f.package_id \
                 ORDER BY p.name, p.version, f.path",
                qualified("f", PackageFileRow::COLUMNS)
            )
        )?,
        retention: fetch_all!(
            tx,
            RetentionRow,
            &format!(
                "SELECT {} FROM retention_state r JOIN artifact_packages p ON p.package_id = r.package_id \
                 ORDER BY p.name, p.version",
                qualified("r", RetentionRow::COLUMNS)
            )
        )?,
        storage: fetch_all!(
            tx,
            StorageRow,
            &format!("SELECT {} FROM storage_locations ORDER BY blake3, location", StorageRow::COLUMNS)
        )?,
        policies: fetch_all!(
            tx,
            PolicyRow,
            &format!("SELECT {} FROM retention_policies ORDER BY name", PolicyRow::COLUMNS)
        )?,
        oci_manifests: fetch_all!(
            tx,
            ManifestRow,
            &format!("SELECT {} FROM oci_manifests ORDER BY repository, digest", ManifestRow::COLUMNS)
        )?,
        oci_manifest_refs: fetch_all!(
            tx,
            ManifestRefRow,
            &format!("SELECT {} FROM oci_manifest_refs ORDER BY repository, digest, position", ManifestRefRow::COLUMNS)
        )?,
        oci_tags: fetch_all!(
            tx,
            TagRow,
            &format!("SELECT {} FROM oci_tags ORDER BY repository, tag", TagRow::COLUMNS)
        )?,
        oci_blobs_deleted: fetch_all!(
            tx,
            BlobDeletedRow,
            &format!("SELECT {} FROM oci_blobs_deleted ORDER BY repository, blake3", BlobDeletedRow::COLUMNS)
        )?,
        retired: fetch_all!(
            tx,
            RetiredRow,
            &format!("SELECT {} FROM retired_versions ORDER BY name, version", RetiredRow::COLUMNS)
        )?,
    })
}

/// One way two dumps disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The view table.
    pub table: &'static str,
    /// The row's key.
    pub key: String,
    /// What differs, in words: the row as the live views have it and as replay made it.
    pub problem: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]: {}", self.table, self.key, self.problem)
    }
}

/// Every row that differs between the live views and a fresh replay.
pub fn diff(live: &ViewsDump, replayed: &ViewsDump) -> Vec<Difference> {
    let mut out = Vec::new();
    diff_table(FileRow::TABLE, &live.files, &replayed.files, |r| r.blake3.clone(), &mut out);
    diff_table(PackageRow::TABLE, &live.packages, &replayed.packages, |r| r.package_id.to_string(), &mut out);
    diff_table(
        PackageFileRow::TABLE,
        &live.package_files,
        &replayed.package_files,
        |r| format!("{} {}", r.package_id, r.path),
        &mut out,
    );
    diff_table(RetentionRow::TABLE, &live.retention, &replayed.retention, |r| r.package_id.to_string(), &mut out);
    diff_table(
        StorageRow::TABLE,
        &live.storage,
        &replayed.storage,
        |r| format!("{} {}", r.blake3, r.location),
        &mut out,
    );
    diff_table(PolicyRow::TABLE, &live.policies, &replayed.policies, |r| r.name.clone(), &mut out);
    diff_table(
        ManifestRow::TABLE,
        &live.oci_manifests,
        &replayed.oci_manifests,
        |r| format!("{}@{}", r.repository, r.digest),
        &mut out,
    );
    diff_table(
        ManifestRefRow::TABLE,
        &live.oci_manifest_refs,
        &replayed.oci_manifest_refs,
        |r| format!("{}@{} {}", r.repository, r.digest, r.position),
        &mut out,
    );
    diff_table(TagRow::TABLE, &live.oci_tags, &replayed.oci_tags, |r| format!("{}:{}", r.repository, r.tag), &mut out);
    diff_table(
        BlobDeletedRow::TABLE,
        &live.oci_blobs_deleted,
        &replayed.oci_blobs_deleted,
        |r| format!("{} {}", r.repository, r.blake3),
        &mut out,
    );
    diff_table(RetiredRow::TABLE, &live.retired, &replayed.retired, |r| format!("{}@{}", r.name, r.version), &mut out);
    out
}

fn diff_table<R: PartialEq + Debug>(
    table: &'static str,
    live: &[R],
    replayed: &[R],
    key: impl Fn(&R) -> String,
    out: &mut Vec<Difference>,
) {
    let live: BTreeMap<String, &R> = live.iter().map(|r| (key(r), r)).collect();
    let replayed: BTreeMap<String, &R> = replayed.iter().map(|r| (key(r), r)).collect();
    for (k, l) in &live {
        match replayed.get(k) {
            None => out.push(Difference {
                table,
                key: k.clone(),
                problem: format!("in the live views but not in the replay: {l:?}"),
            }),
            Some(r) if r != l => {
                out.push(Difference { table, key: k.clone(), problem: format!("live {l:?} but replay gives {r:?}") })
            }
            Some(_) => {}
        }
    }
    for (k, r) in &replayed {
        if !live.contains_key(k) {
            out.push(Difference {
                table,
                key: k.clone(),
                problem: format!("made by the replay but missing from the live views: {r:?}"),
            });
        }
    }
}
