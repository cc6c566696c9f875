//! The reads of the views: every question the registry's handlers and commands ask of them.
//!
//! Each read takes a pooled connection or a transaction (anything `AsExec`): a caller whose reads must agree with
//! each other, or with what it is about to write, passes the one transaction they share. Rows come back as the
//! types of `rows`; shaping them for HTTP is the caller's business.

use artifactstore_db::{fetch_all, fetch_optional, placeholders, AsExec};
use artifactstore_digest::{Algorithm, Digest};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::rows::{once, qualified, FileRow, PackageFileRow, PackageRow, PolicyRow, RetentionRow};
use crate::Error;

/// `(SELECT CAST(COALESCE(MAX(CASE ... END), 0) AS BIGINT) FROM artifact_files WHERE blake3 = $N)`: what the views hold of the blob
/// whose BLAKE3 digest is bound as parameter `$N`, as a SQL literal for `concat!`: 1 live, -1 removed by
/// collection, 0 never ingested (`FileState::from_sql`).
///
/// For a statement that writes something else and learns in the same round trip what the views hold of the blob
/// (`... RETURNING artifactstore_views::file_state_sql!(2)`); `queries::file_state` asks the same on its own.
#[macro_export]
macro_rules! file_state_sql {
    ($param:literal) => {
        concat!(
            "(SELECT CAST(COALESCE(MAX(CASE WHEN removed_sequence IS NULL THEN 1 ELSE -1 END), 0) AS BIGINT) \
             FROM artifact_files WHERE blake3 = $",
            $param,
            ")"
        )
    };
}

/// What the views hold of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Never ingested.
    Unknown,
    /// Ingested, and not removed since.
    Live,
    /// Removed by collection (its row remembers the removal).
    Removed,
}

impl FileState {
    /// The value of `file_state_sql!`.
    pub fn from_sql(value: i64) -> FileState {
        match value {
            1 => FileState::Live,
            -1 => FileState::Removed,
            _ => FileState::Unknown,
        }
    }
}

/// A package version with its retention: its `artifact_packages` row and its `retention_state` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The version's row.
    pub package: PackageRow,
    /// Its retention.
    pub retention: RetentionRow,
}

/// One package name in the package list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PackageSummary {
    /// The name.
    pub name: String,
    /// How many versions it has.
    pub versions: i64,
    /// The `created_sequence` of its newest version.
    pub latest_sequence: i64,
}

/// A page of the package list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackagePage {
    /// The names on this page, in order.
    pub packages: Vec<PackageSummary>,
    /// The cursor of the next page (the last name here) when there are more names, else `None`.
    pub next_cursor: Option<String>,
}

/// The blob with `digest` (BLAKE3 or SHA-256), removed or not.
pub async fn blob<E: AsExec>(target: &mut E, digest: &Digest) -> Result<Option<FileRow>, Error> {
    let sql = match digest.algorithm() {
        Algorithm::Blake3 => once!(format!("SELECT {} FROM artifact_files WHERE blake3 = $1", FileRow::COLUMNS)),
        Algorithm::Sha256 => once!(format!("SELECT {} FROM artifact_files WHERE sha256 = $1", FileRow::COLUMNS)),
    };
    Ok(fetch_optional!(target, FileRow, sql, digest.to_string())?)
}

/// The live blob each of `digests` names, in order (`None` for a digest no blob has, or one collection removed):
/// what a publish resolves its manifest's files to, inside its write transaction.
pub async fn resolve<E: AsExec>(target: &mut E, digests: &[Digest]) -> Result<Vec<Option<FileRow>>, Error> {
    let mut found = std::collections::HashMap::new();
    for (algorithm, column) in [(Algorithm::Blake3, "blake3"), (Algorithm::Sha256, "sha256")] {
        let mut keys: Vec<String> =
            digests.iter().filter(|d| d.algorithm() == algorithm).map(Digest::to_string).collect();
        keys.sort_unstable();
        keys.dedup();
        for row in files_where_in(target, column, &keys).await?.into_iter().filter(|row| !row.is_removed()) {
            let key = if algorithm == Algorithm::Blake3 { row.blake3.clone() } else { row.sha256.clone() };
            found.insert(key, row);
        }
    }
    Ok(digests.iter().map(|digest| found.get(&digest.to_string()).cloned()).collect())
}

/// Digests per statement of `resolve`, well below either backend's limit of bound parameters.
const KEYS_PER_READ: usize = 500;

/// Every `artifact_files` row whose `column` is one of `keys`.
async fn files_where_in<E: AsExec>(target: &mut E, column: &str, keys: &[String]) -> Result<Vec<FileRow>, Error> {
    let mut rows = Vec::new();
    for chunk in keys.chunks(KEYS_PER_READ) {
        let sql = |backend| {
            let list = placeholders(backend, 1, chunk.len());
            format!("SELECT {} FROM artifact_files WHERE {column} IN {list}", FileRow::COLUMNS)
        };
        rows.extend(artifactstore_db::fetch_all_each!(target, FileRow, sql, chunk, |q, key| q.bind(key))?);
    }
    Ok(rows)
}

/// The rows of the blobs with these BLAKE3 digests (`blake3:<hex>`), removed or not, in no particular order.
pub async fn files<E: AsExec>(target: &mut E, blake3: &[String]) -> Result<Vec<FileRow>, Error> {
    files_where_in(target, "blake3", blake3).await
}

/// Collection's candidates: blobs no live version names, idle since `cutoff_ms` or before and not removed, oldest
/// idle first, after the key `after` (`(idle_since_ms, blake3)` of the last one seen), at most `limit`. Read from
/// the index of unreferenced blobs, so the cost follows the garbage, not the registry's size.
pub async fn unreferenced<E: AsExec>(
    target: &mut E,
    cutoff_ms: i64,
    after: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<FileRow>, Error> {
    let sql = once!(format!(
        "SELECT {} FROM artifact_files WHERE refs = 0 AND removed_sequence IS NULL AND idle_since_ms <= $1 \
         AND (idle_since_ms > $2 OR (idle_since_ms = $2 AND blake3 > $3)) ORDER BY idle_since_ms, blake3 LIMIT $4",
        FileRow::COLUMNS
    ));
    let (after_ms, after_key) = after.unwrap_or((i64::MIN, ""));
    Ok(fetch_all!(target, FileRow, sql, cutoff_ms, after_ms, after_key, limit)?)
}

/// What the views hold of the blob with this BLAKE3 digest (`blake3:<hex>`).
pub async fn file_state<E: AsExec>(target: &mut E, blake3: &str) -> Result<FileState, Error> {
    let (value,): (i64,) =
        artifactstore_db::fetch_one!(target, (i64,), concat!("SELECT ", file_state_sql!(1)), blake3)?;
    Ok(FileState::from_sql(value))
}

/// Every live blob the views hold (removed ones left out), by BLAKE3 digest.
pub async fn all_blobs<E: AsExec>(target: &mut E) -> Result<Vec<FileRow>, Error> {
    let sql = once!(format!(
        "SELECT {} FROM artifact_files WHERE removed_sequence IS NULL ORDER BY blake3",
        FileRow::COLUMNS
    ));
    Ok(fetch_all!(target, FileRow, sql)?)
}

/// The BLAKE3 digests that package versions name but no live blob of the views has (a fault: every file is
/// ingested before a version can name it, and collection removes only blobs no version names).
pub async fn missing_blobs<E: AsExec>(target: &mut E) -> Result<Vec<String>, Error> {
    let rows = fetch_all!(
        target,
        (String,),
        "SELECT DISTINCT f.blake3 FROM artifact_package_files f \
         LEFT JOIN artifact_files a ON a.blake3 = f.blake3 WHERE a.blake3 IS NULL OR a.removed_sequence IS NOT NULL"
    )?;
    Ok(rows.into_iter().map(|(blake3,)| blake3).collect())
}

/// A version's row and its retention row, as one statement reads them (in that order of columns).
/// The column types of a version's row and its retention row, as one statement reads them, then `$extra`.
macro_rules! version_columns {
    ($($extra:ty),*) => {
        (
            Uuid, String, String, Vec<u8>, String, DateTime<Utc>, i64, i64,
            Uuid, Option<DateTime<Utc>>, bool, Option<String>, bool, i64
            $(, $extra)*
        )
    };
}

type VersionColumns = version_columns!();

impl From<VersionColumns> for Version {
    fn from(c: VersionColumns) -> Version {
        let package = PackageRow {
            package_id: c.0,
            name: c.1,
            version: c.2,
            metadata: c.3,
            created_by: c.4,
            created_at: c.5,
            created_sequence: c.6,
            sequence: c.7,
        };
        let retention =
            RetentionRow { package_id: c.8, until: c.9, hold: c.10, reason: c.11, expired: c.12, sequence: c.13 };
        Version { package, retention }
    }
}

/// `SELECT <version columns> FROM <packages p joined with their retention r> WHERE <filter>`.
fn select_versions(filter: &str) -> String {
    format!(
        "SELECT {}, {} FROM artifact_packages p JOIN retention_state r ON r.package_id = p.package_id WHERE {filter}",
        qualified("p", PackageRow::COLUMNS),
        qualified("r", RetentionRow::COLUMNS)
    )
}

/// The package version `name`@`version` with its retention.
pub async fn version<E: AsExec>(target: &mut E, name: &str, version: &str) -> Result<Option<Version>, Error> {
    let sql = once!(select_versions("p.name = $1 AND p.version = $2"));
    Ok(fetch_optional!(target, VersionColumns, sql, name, version)?.map(Version::from))
}

/// Every version of the package `name` with its retention, oldest first (empty when there is no such package).
pub async fn versions<E: AsExec>(target: &mut E, name: &str) -> Result<Vec<Version>, Error> {
    let sql = once!(select_versions("p.name = $1 ORDER BY p.created_sequence"));
    Ok(fetch_all!(target, VersionColumns, sql, name)?.into_iter().map(Version::from).collect())
}

/// The versions under `prefix` with at least `keep` newer versions of the same package, and no hold: expiry's
/// candidates for a policy on `prefix` (`keep` is its `keep_last`, or 0), each with how many versions of its package
/// are newer, by name, then newest first. The ranking runs in the database, so only candidates come back.
pub async fn expiry_candidates<E: AsExec>(
    target: &mut E,
    prefix: &str,
    keep: i64,
) -> Result<Vec<(Version, i64)>, Error> {
    let sql = once!(format!(
        "SELECT {}, {}, v.newer FROM (SELECT package_id, ROW_NUMBER() OVER (PARTITION BY name \
         ORDER BY created_sequence DESC) - 1 AS newer FROM artifact_packages WHERE substr(name, 1, $1) = $2) v \
         JOIN artifact_packages p ON p.package_id = v.package_id JOIN retention_state r ON r.package_id = p.package_id \
         WHERE v.newer >= $3 AND r.hold = FALSE ORDER BY p.name, p.created_sequence DESC",
        qualified("p", PackageRow::COLUMNS),
        qualified("r", RetentionRow::COLUMNS)
    ));
    let len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
    let rows = fetch_all!(target, RankedVersionColumns, sql, len, prefix, keep)?;
    Ok(rows
        .into_iter()
        .map(|c| {
            let version = Version::from((c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9, c.10, c.11, c.12, c.13));
            (version, c.14)
        })
        .collect())
}

/// `VersionColumns` and a count.
type RankedVersionColumns = version_columns!(i64);

/// The files of the package version `package_id`, by path.
pub async fn version_files<E: AsExec>(target: &mut E, package_id: Uuid) -> Result<Vec<PackageFileRow>, Error> {
    let sql = once!(format!(
        "SELECT {} FROM artifact_package_files WHERE package_id = $1 ORDER BY path",
        PackageFileRow::COLUMNS
    ));
    Ok(fetch_all!(target, PackageFileRow, sql, package_id)?)
}

/// The package version `name`@`version` with its retention and its files (two reads: pass a transaction for
/// the two to agree).
pub async fn version_with_files<E: AsExec>(
    target: &mut E,
    name: &str,
    version: &str,
) -> Result<Option<(Version, Vec<PackageFileRow>)>, Error> {
    let Some(found) = self::version(target, name, version).await? else { return Ok(None) };
    let files = version_files(target, found.package.package_id).await?;
    Ok(Some((found, files)))
}

/// The file at `path` in the package version `name`@`version`.
pub async fn package_file<E: AsExec>(
    target: &mut E,
    name: &str,
    version: &str,
    path: &str,
) -> Result<Option<PackageFileRow>, Error> {
    let sql = once!(format!(
        "SELECT {} FROM artifact_package_files f JOIN artifact_packages p ON p.package_id = f.package_id \
         WHERE p.name = $1 AND p.version = $2 AND f.path = $3",
        qualified("f", PackageFileRow::COLUMNS)
    ));
    Ok(fetch_optional!(target, PackageFileRow, sql, name, version, path)?)
}

/// A page of at most `limit` package names that start with `prefix` and sort after `after`, in order.
///
/// `prefix` is compared by `substr`, on its length in bytes (package names are ASCII).
pub async fn list_packages<E: AsExec>(
    target: &mut E,
    prefix: &str,
    after: &str,
    limit: u32,
) -> Result<PackagePage, Error> {
    let mut packages = fetch_all!(
        target,
        PackageSummary,
        "SELECT name, COUNT(*) AS versions, MAX(created_sequence) AS latest_sequence FROM artifact_packages \
         WHERE substr(name, 1, $1) = $2 AND name > $3 GROUP BY name ORDER BY name LIMIT $4",
        i32::try_from(prefix.len()).unwrap_or(0),
        prefix,
        after,
        i64::from(limit) + 1,
    )?;
    let more = packages.len() > limit as usize;
    packages.truncate(limit as usize);
    let next_cursor = if more { packages.last().map(|p| p.name.clone()) } else { None };
    Ok(PackagePage { packages, next_cursor })
}

/// Every retention policy in force, by name.
pub async fn policies<E: AsExec>(target: &mut E) -> Result<Vec<PolicyRow>, Error> {
    let sql = once!(format!("SELECT {} FROM retention_policies ORDER BY name", PolicyRow::COLUMNS));
    Ok(fetch_all!(target, PolicyRow, sql)?)
}

/// The retention policy named `name`.
pub async fn policy<E: AsExec>(target: &mut E, name: &str) -> Result<Option<PolicyRow>, Error> {
    let sql = once!(format!("SELECT {} FROM retention_policies WHERE name = $1", PolicyRow::COLUMNS));
    Ok(fetch_optional!(target, PolicyRow, sql, name)?)
}

/// The manifest the deleted version `name`@`version` was first published with: the payload of its first
/// `v1.package.created`, read from the log. `None` when the version was never deleted.
pub async fn retired_manifest<E: AsExec>(
    target: &mut E,
    name: &str,
    version: &str,
) -> Result<Option<crate::vocab::PackageCreated>, Error> {
    let Some(created) = fetch_optional!(
        target,
        (i64,),
        "SELECT created_sequence FROM retired_versions WHERE name = $1 AND version = $2",
        name,
        version
    )?
    else {
        return Ok(None);
    };
    let sequence = u64::try_from(created.0).unwrap_or(0);
    let events = artifactstore_eventlog::read_range(target, sequence.saturating_sub(1), 1).await?;
    let event = events.into_iter().find(|e| e.sequence == sequence).ok_or_else(|| Error::MissingSubject {
        sequence,
        event_type: crate::vocab::PACKAGE_CREATED.to_owned(),
        subject: format!("{name}@{version}"),
    })?;
    match crate::vocab::RegistryEvent::from_event(&event)? {
        Some(crate::vocab::RegistryEvent::PackageCreated { payload, .. }) => Ok(Some(payload)),
        _ => {
            Err(crate::vocab::bad_payload(&event.event_type, sequence, &format!("it did not publish {name}@{version}")))
        }
    }
}

/// The names of the live package versions whose files name the blob `blake3`, each once.
pub async fn packages_naming<E: AsExec>(target: &mut E, blake3: &str) -> Result<Vec<String>, Error> {
    let rows = fetch_all!(
        target,
        (String,),
        "SELECT DISTINCT p.name FROM artifact_package_files f JOIN artifact_packages p ON p.package_id = f.package_id \
         WHERE f.blake3 = $1",
        blake3
    )?;
    Ok(rows.into_iter().map(|(name,)| name).collect())
}
