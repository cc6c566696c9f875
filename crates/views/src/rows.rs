//! One row type per view table, shared by `apply`, replay, snapshots, dumps and the reads.
//!
//! Each type is declared once, through `view_row!`: its fields are its table's columns, in the same order, so a
//! type's `COLUMNS` (the list every statement that writes or reads a whole row names) cannot drift from its fields.

use artifactstore_db::{bulk_insert, placeholders, AsExec, Backend, Exec, Tx};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Postgres, Sqlite};
use uuid::Uuid;

use crate::Error;

/// A statement being built for SQLite.
pub(crate) type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;
/// A statement being built for PostgreSQL.
pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// A row type of a view table, as the crate's inserts bind it.
pub(crate) trait ViewRow: Sync {
    /// The table.
    const TABLE: &'static str;
    /// Its columns, in the order of the fields.
    const COLUMNS: &'static str;
    /// How many columns it has.
    const ARITY: usize;
    /// Binds every field, in column order, to a SQLite statement.
    fn bind_sqlite<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q>;
    /// Binds every field, in column order, to a PostgreSQL statement.
    fn bind_postgres<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q>;
    /// The bytes of its large fields (a package's metadata), which bound how many rows one statement carries.
    fn weight(&self) -> usize {
        0
    }
}

/// Declares a view table's row type: the struct, its `TABLE` and `COLUMNS`, and its `ViewRow` binding.
macro_rules! view_row {
    (
        $(#[$meta:meta])*
        pub struct $row:ident in $table:literal $(weighed by (|$w:ident| $weight:expr))? {
            $(#[$first_meta:meta])* pub $first:ident: $first_ty:ty,
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
        pub struct $row {
            $(#[$first_meta])* pub $first: $first_ty,
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $row {
            #[doc = concat!("The table: `", $table, "`.")]
            pub const TABLE: &'static str = $table;
            /// The table's columns, in the order of the fields; every statement that reads a whole row names them.
            pub const COLUMNS: &'static str = concat!(stringify!($first) $(, ", ", stringify!($field))*);
        }

        impl ViewRow for $row {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static str = $row::COLUMNS;
            const ARITY: usize = [stringify!($first) $(, stringify!($field))*].len();
            fn bind_sqlite<'q>(&'q self, query: SqliteQuery<'q>) -> SqliteQuery<'q> {
                query.bind(&self.$first)$(.bind(&self.$field))*
            }
            fn bind_postgres<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
                query.bind(&self.$first)$(.bind(&self.$field))*
            }
            $(fn weight(&self) -> usize {
                let $w = self;
                $weight
            })?
        }
    };
}

view_row! {
    /// A row of `artifact_files`: a blob the registry holds, made by its first `v1.file.ingested`.
    pub struct FileRow in "artifact_files" {
        /// The BLAKE3 digest, `blake3:<hex>`; the key.
        pub blake3: String,
        /// The SHA-256 digest, `sha256:<hex>`.
        pub sha256: String,
        /// The size in bytes.
        pub size: i64,
        /// The media type its uploader declared.
        pub media_type: Option<String>,
        /// The file's id, derived from its BLAKE3 digest.
        pub file_id: Uuid,
        /// The event that ingested it (the latest, for bytes ingested again after a removal).
        pub ingested_sequence: i64,
        /// The event that last changed the row (its ingestion or its removal).
        pub sequence: i64,
        /// How many files of live package versions name it.
        pub refs: i64,
        /// When it last became unreferenced, or was ingested if never referenced since: Unix milliseconds of that
        /// event's time. Meaningful while `refs` is 0.
        pub idle_since_ms: i64,
        /// The `v1.file.removed` that removed it, while it stays removed.
        pub removed_sequence: Option<i64>,
        /// The sequences of every `v1.file.*` event about it, oldest first, each followed by a space: its history,
        /// which outlives removals.
        pub file_events: String,
    }
}

impl FileRow {
    /// Whether collection removed it (and no later ingestion brought it back).
    pub fn is_removed(&self) -> bool {
        self.removed_sequence.is_some()
    }

    /// The sequences of its `v1.file.*` events, oldest first.
    pub fn history(&self) -> Vec<u64> {
        parse_history(&self.file_events)
    }
}

/// The sequences a `file_events` column lists; anything that is not a sequence is skipped.
pub(crate) fn parse_history(text: &str) -> Vec<u64> {
    text.split_ascii_whitespace().filter_map(|n| n.parse().ok()).collect()
}

/// One entry of a `file_events` column.
pub(crate) fn history_entry(sequence: i64) -> String {
    format!("{sequence} ")
}

view_row! {
    /// A row of `artifact_packages`: a package version, made by `v1.package.created`.
    pub struct PackageRow in "artifact_packages" weighed by (|row| row.metadata.len()) {
        /// The version's id; the key.
        pub package_id: Uuid,
        /// The package's name.
        pub name: String,
        /// The version (unique with the name).
        pub version: String,
        /// Its metadata, a canonical CBOR map.
        #[serde(with = "serde_bytes")]
        pub metadata: Vec<u8>,
        /// The actor of the event that created it.
        pub created_by: String,
        /// When it was created (the event's time).
        pub created_at: DateTime<Utc>,
        /// The event that created it.
        pub created_sequence: i64,
        /// The event that last changed the row.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `artifact_package_files`: one file of a package version.
    pub struct PackageFileRow in "artifact_package_files" {
        /// The package version; with the path, the key.
        pub package_id: Uuid,
        /// The file's path inside the version.
        pub path: String,
        /// The blob's BLAKE3 digest.
        pub blake3: String,
        /// The blob's SHA-256 digest.
        pub sha256: String,
        /// The blob's size in bytes.
        pub size: i64,
        /// The media type the manifest gave the file.
        pub media_type: Option<String>,
        /// The event that last changed the row.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `retention_state`: how long a package version is kept.
    pub struct RetentionRow in "retention_state" {
        /// The package version; the key.
        pub package_id: Uuid,
        /// It may not be deleted before this time.
        pub until: Option<DateTime<Utc>>,
        /// It may not be deleted while this holds.
        pub hold: bool,
        /// Why, as the last change said.
        pub reason: Option<String>,
        /// Its retention has run out.
        pub expired: bool,
        /// The event that last changed the row.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `storage_locations`: one place a blob's bytes are kept.
    pub struct StorageRow in "storage_locations" {
        /// The blob's BLAKE3 digest; with the location, the key.
        pub blake3: String,
        /// The place.
        pub location: String,
        /// The kind of storage there.
        pub tier: String,
        /// The event that last changed the row.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `retention_policies`: a retention policy in force, made by its last `v1.policy.set`.
    pub struct PolicyRow in "retention_policies" {
        /// The policy's name; the key.
        pub name: String,
        /// The package-name prefix it governs.
        pub prefix: String,
        /// It keeps each package's this many newest versions.
        pub keep_last: Option<i64>,
        /// It keeps versions created less than this many days ago.
        pub keep_days: Option<i64>,
        /// The event that last changed the row.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `retired_versions`: a package version deleted since it was published, made by its first
    /// `v1.package.deleted`. Publishing it again must repeat its first manifest.
    pub struct RetiredRow in "retired_versions" {
        /// The package name; with the version, the key.
        pub name: String,
        /// The version.
        pub version: String,
        /// The `v1.package.created` event that first published it.
        pub created_sequence: i64,
        /// The event that first deleted it.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `oci_manifests`: a manifest of an OCI repository, made by `v1.oci.manifest.pushed`.
    pub struct ManifestRow in "oci_manifests" {
        /// The repository; with the digest, the key.
        pub repository: String,
        /// `sha256:<hex>` of the manifest's bytes.
        pub digest: String,
        /// `blake3:<hex>` of the same bytes: the blob that holds them.
        pub blake3: String,
        /// The manifest's media type.
        pub media_type: String,
        /// Its length in bytes.
        pub size: i64,
        /// Its `artifactType`, else its config's media type.
        pub artifact_type: Option<String>,
        /// `sha256:<hex>` of the manifest it refers to.
        pub subject: Option<String>,
        /// Its annotations, a canonical CBOR map of strings.
        #[serde(with = "serde_bytes")]
        pub annotations: Option<Vec<u8>>,
        /// When it was pushed: Unix milliseconds of the event's time.
        pub pushed_ms: i64,
        /// The event that pushed it.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `oci_manifest_refs`: one blob or manifest a manifest names.
    pub struct ManifestRefRow in "oci_manifest_refs" {
        /// The manifest's repository.
        pub repository: String,
        /// The manifest's digest.
        pub digest: String,
        /// Where the manifest names it (0 for an image manifest's config); with the manifest, the key.
        pub position: i64,
        /// `sha256:<hex>` of what it names.
        pub ref_digest: String,
        /// `blake3:<hex>` of the same bytes.
        pub blake3: String,
        /// Its length in bytes.
        pub size: i64,
        /// The media type the manifest gives it.
        pub media_type: Option<String>,
        /// The event that pushed the manifest.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `oci_tags`: a tag of an OCI repository and the manifest it names now.
    pub struct TagRow in "oci_tags" {
        /// The repository; with the tag, the key.
        pub repository: String,
        /// The tag.
        pub tag: String,
        /// `sha256:<hex>` of the manifest.
        pub digest: String,
        /// The event that last set it.
        pub sequence: i64,
    }
}

view_row! {
    /// A row of `oci_blobs_deleted`: a blob deleted from one OCI repository, which it no longer sees.
    pub struct BlobDeletedRow in "oci_blobs_deleted" {
        /// The repository; with the blob, the key.
        pub repository: String,
        /// `blake3:<hex>` of the blob.
        pub blake3: String,
        /// The event that deleted it.
        pub sequence: i64,
    }
}

impl RetentionRow {
    /// The retention a new package version starts with: no time, no hold, not expired.
    pub fn initial(package_id: Uuid, sequence: i64) -> RetentionRow {
        RetentionRow { package_id, until: None, hold: false, reason: None, expired: false, sequence }
    }
}

/// `columns` (a `COLUMNS` list) with each column qualified by a table alias: `a.x, a.y`.
pub(crate) fn qualified(alias: &str, columns: &str) -> String {
    columns.split(", ").map(|column| format!("{alias}.{column}")).collect::<Vec<_>>().join(", ")
}

/// The text of a one-row `INSERT` of `R`, its fields bound in order as `$1`, `$2`, ..., followed by `tail`.
pub(crate) fn insert_one_sql<R: ViewRow>(tail: &str) -> String {
    let values = placeholders(Backend::Postgres, 1, R::ARITY);
    format!("INSERT INTO {} ({}) VALUES {values}{tail}", R::TABLE, R::COLUMNS)
}

/// The `String` that `$text` makes, made on first use and kept: a statement's text built from column lists.
macro_rules! once {
    ($text:expr) => {{
        static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| $text);
        TEXT.as_str()
    }};
}

pub(crate) use once;

/// Runs `sql` (from `insert_one_sql`) for `row`: the live path's one-row inserts.
pub(crate) async fn insert_one<R: ViewRow>(tx: &mut Tx, sql: &str, row: &R) -> Result<(), sqlx::Error> {
    match tx.as_exec() {
        Exec::Sqlite(c) => row.bind_sqlite(sqlx::query(sql)).execute(c).await.map(drop),
        Exec::Postgres(c) => row.bind_postgres(sqlx::query(sql)).execute(c).await.map(drop),
    }
}

/// `INSERT INTO <table> VALUES (...), (...)<tail>` over `rows`, in runs from `statements` (one statement each),
/// with the bulk verb (`db::bulk_insert`): a failure must end the transaction, as it ends a replay or a load.
pub(crate) async fn insert_rows<R: ViewRow>(tx: &mut Tx, rows: &[R], tail: &str) -> Result<(), Error> {
    for chunk in statements(rows, R::weight) {
        let verb = bulk_insert(tx.backend());
        let values = placeholders(tx.backend(), chunk.len(), R::ARITY);
        let sql = format!("{verb} INTO {} ({}) VALUES {values}{tail}", R::TABLE, R::COLUMNS);
        match tx.as_exec() {
            Exec::Sqlite(c) => {
                let query = chunk.iter().fold(sqlx::query(&sql), |query, row| row.bind_sqlite(query));
                query.execute(c).await?;
            }
            Exec::Postgres(c) => {
                let query = chunk.iter().fold(sqlx::query(&sql), |query, row| row.bind_postgres(query));
                query.execute(c).await?;
            }
        }
    }
    Ok(())
}

/// Rows per multi-row `INSERT` (at most 10 parameters each, far below either backend's limit).
pub(crate) const ROWS_PER_INSERT: usize = 200;
/// Bound bytes per multi-row `INSERT`, at most (but always one row): a package's metadata may be 16 MiB, and
/// PostgreSQL refuses a message over 1 GiB.
pub(crate) const BYTES_PER_INSERT: usize = 64 * 1024 * 1024;

/// Splits `rows` into runs for one statement each: `ROWS_PER_INSERT` rows at most, and `BYTES_PER_INSERT` of
/// `weight` at most unless one row alone weighs more.
pub(crate) fn statements<T>(rows: &[T], weight: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let w = weight(row);
        if i > start && (i - start == ROWS_PER_INSERT || bytes + w > BYTES_PER_INSERT) {
            runs.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += w;
    }
    if start < rows.len() {
        runs.push(&rows[start..]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_hold_at_most_their_rows_and_bytes() {
        let lengths = |runs: Vec<&[usize]>| runs.iter().map(|run| run.len()).collect::<Vec<_>>();
        assert_eq!(lengths(statements(&[0; 450], |_| 0)), vec![200, 200, 50]);
        assert_eq!(lengths(statements::<usize>(&[], |_| 0)), Vec::<usize>::new());
        let mib = 1024 * 1024;
        // Two 30 MiB rows fit one statement, a third does not; a row over the budget goes alone.
        let rows = [30 * mib, 30 * mib, 30 * mib, 1, 100 * mib, 1, 1];
        assert_eq!(lengths(statements(&rows, |w| *w)), vec![2, 2, 1, 2]);
        let all: Vec<usize> = statements(&rows, |w| *w).concat();
        assert_eq!(all, rows, "every row once, in order");
    }

    #[test]
    fn column_lists_follow_the_fields() {
        assert_eq!(
            FileRow::COLUMNS,
            "blake3, sha256, size, media_type, file_id, ingested_sequence, sequence, refs, idle_since_ms, \
             removed_sequence, file_events"
        );
        assert_eq!(<FileRow as ViewRow>::ARITY, 11);
        assert_eq!(
            PackageRow::COLUMNS,
            "package_id, name, version, metadata, created_by, created_at, created_sequence, sequence"
        );
        assert_eq!(PackageFileRow::COLUMNS, "package_id, path, blake3, sha256, size, media_type, sequence");
        assert_eq!(RetentionRow::COLUMNS, "package_id, until, hold, reason, expired, sequence");
        assert_eq!(StorageRow::COLUMNS, "blake3, location, tier, sequence");
        assert_eq!(qualified("r", StorageRow::COLUMNS), "r.blake3, r.location, r.tier, r.sequence");
        assert_eq!(
            insert_one_sql::<StorageRow>(" ON CONFLICT DO NOTHING"),
            "INSERT INTO storage_locations (blake3, location, tier, sequence) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING"
        );
    }
}
