//! Every row of every view, in a fixed order, and the differences between two such dumps.

use std::collections::BTreeMap;
use std::fmt::Debug;

use artifactstore_db::{fetch_all, Tx};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Error;

/// A row of `artifact_files`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct FileRow {
    pub blake3: String,
    pub sha256: String,
    pub size: i64,
    pub media_type: Option<String>,
    pub file_id: Uuid,
    pub ingested_sequence: i64,
    pub sequence: i64,
}

/// A row of `artifact_packages`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct PackageRow {
    pub package_id: Uuid,
    pub name: String,
    pub version: String,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub created_sequence: i64,
    pub sequence: i64,
}

/// A row of `artifact_package_files`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct PackageFileRow {
    pub package_id: Uuid,
    pub path: String,
    pub blake3: String,
    pub sha256: String,
    pub size: i64,
    pub media_type: Option<String>,
    pub sequence: i64,
}

/// A row of `retention_state`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct RetentionRow {
    pub package_id: Uuid,
    pub until: Option<DateTime<Utc>>,
    pub hold: bool,
    pub reason: Option<String>,
    pub expired: bool,
    pub sequence: i64,
}

/// A row of `storage_locations`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct StorageRow {
    pub blake3: String,
    pub location: String,
    pub tier: String,
    pub sequence: i64,
}

/// The whole content of the views, each table ordered by its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViewsDump {
    pub files: Vec<FileRow>,
    pub packages: Vec<PackageRow>,
    pub package_files: Vec<PackageFileRow>,
    pub retention: Vec<RetentionRow>,
    pub storage: Vec<StorageRow>,
}

impl ViewsDump {
    /// How many rows the views hold in all.
    pub fn rows(&self) -> usize {
        self.files.len() + self.packages.len() + self.package_files.len() + self.retention.len() + self.storage.len()
    }
}

/// Reads every view row inside `tx`.
pub async fn dump(tx: &mut Tx) -> Result<ViewsDump, Error> {
    Ok(ViewsDump {
        files: fetch_all!(
            tx,
            FileRow,
            "SELECT blake3, sha256, size, media_type, file_id, ingested_sequence, sequence FROM artifact_files ORDER BY blake3"
        )?,
        packages: fetch_all!(
            tx,
            PackageRow,
            "SELECT package_id, name, version, metadata, created_by, created_at, created_sequence, sequence \
             FROM artifact_packages ORDER BY name, version"
        )?,
        package_files: fetch_all!(
            tx,
            PackageFileRow,
            "SELECT f.package_id, f.path, f.blake3, f.sha256, f.size, f.media_type, f.sequence \
             FROM artifact_package_files f JOIN artifact_packages p ON p.package_id = f.package_id \
             ORDER BY p.name, p.version, f.path"
        )?,
        retention: fetch_all!(
            tx,
            RetentionRow,
            "SELECT r.package_id, r.until, r.hold, r.reason, r.expired, r.sequence \
             FROM retention_state r JOIN artifact_packages p ON p.package_id = r.package_id ORDER BY p.name, p.version"
        )?,
        storage: fetch_all!(
            tx,
            StorageRow,
            "SELECT blake3, location, tier, sequence FROM storage_locations ORDER BY blake3, location"
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
    diff_table("artifact_files", &live.files, &replayed.files, |r| r.blake3.clone(), &mut out);
    diff_table("artifact_packages", &live.packages, &replayed.packages, |r| r.package_id.to_string(), &mut out);
    diff_table(
        "artifact_package_files",
        &live.package_files,
        &replayed.package_files,
        |r| format!("{} {}", r.package_id, r.path),
        &mut out,
    );
    diff_table("retention_state", &live.retention, &replayed.retention, |r| r.package_id.to_string(), &mut out);
    diff_table(
        "storage_locations",
        &live.storage,
        &replayed.storage,
        |r| format!("{} {}", r.blake3, r.location),
        &mut out,
    );
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
