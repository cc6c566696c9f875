//! `Batch`: replay's executor of planned row changes, writing runs of inserts as multi-row statements.
//!
//! Rows inserted during a replay wait in memory until enough have gathered; a later change to a waiting row (a
//! retention change, a deletion) is made to the waiting row itself. A change to a row already written flushes
//! what waits and runs as the live path runs it. The views end up exactly as `Op::execute` one by one leaves them.

use std::collections::{HashMap, HashSet};

use artifactstore_db::{placeholders, sqlx, AsExec as _, Exec, Tx};
use artifactstore_eventlog::Event;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::apply::{Op, RetentionSet};
use crate::Error;

/// Rows waiting in memory before they are written.
const FLUSH_AT: usize = 4_000;
/// Rows per multi-row `INSERT` (at most 8 parameters each, far below either backend's limit).
const ROWS_PER_INSERT: usize = 200;

struct FileRow {
    blake3: String,
    sha256: String,
    size: i64,
    media_type: Option<String>,
    file_id: Uuid,
    seq: i64,
}

struct PackageRow {
    package_id: Uuid,
    name: String,
    version: String,
    metadata: Vec<u8>,
    created_by: String,
    created_at: DateTime<Utc>,
    seq: i64,
}

struct PackageFileRow {
    package_id: Uuid,
    path: String,
    blake3: String,
    sha256: String,
    size: i64,
    media_type: Option<String>,
    seq: i64,
}

struct RetentionRow {
    package_id: Uuid,
    until: Option<DateTime<Utc>>,
    hold: bool,
    reason: Option<String>,
    expired: bool,
    seq: i64,
}

/// Row changes gathered for writing together.
#[derive(Default)]
pub(crate) struct Batch {
    files: Vec<FileRow>,
    file_keys: HashSet<String>,
    packages: Vec<PackageRow>,
    package_files: Vec<PackageFileRow>,
    retention: Vec<RetentionRow>,
    /// Index into `retention` of each waiting package's row.
    retention_of: HashMap<Uuid, usize>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("waiting", &self.waiting()).finish()
    }
}

impl Batch {
    fn waiting(&self) -> usize {
        self.files.len() + self.packages.len() + self.package_files.len() + self.retention.len()
    }

    /// Takes one planned change of `event`.
    pub(crate) async fn add(&mut self, tx: &mut Tx, op: Op, event: &Event) -> Result<(), Error> {
        match op {
            Op::InsertFile { blake3, sha256, size, media_type, file_id, seq } => {
                // The first ingestion of a blob wins, here as in `ON CONFLICT DO NOTHING`.
                if self.file_keys.insert(blake3.clone()) {
                    self.files.push(FileRow { blake3, sha256, size, media_type, file_id, seq });
                }
            }
            Op::InsertPackage { package_id, name, version, metadata, created_by, created_at, seq } => {
                self.packages.push(PackageRow { package_id, name, version, metadata, created_by, created_at, seq });
            }
            Op::InsertPackageFile { package_id, path, blake3, sha256, size, media_type, seq } => {
                self.package_files.push(PackageFileRow { package_id, path, blake3, sha256, size, media_type, seq });
            }
            Op::InsertRetention { package_id, seq } => {
                if self.retention_of.contains_key(&package_id) {
                    // A second row for one package: let the database refuse it as it would live.
                    self.flush(tx).await?;
                    return Op::InsertRetention { package_id, seq }.execute(tx, event).await;
                }
                self.retention_of.insert(package_id, self.retention.len());
                self.retention.push(RetentionRow {
                    package_id,
                    until: None,
                    hold: false,
                    reason: None,
                    expired: false,
                    seq,
                });
            }
            Op::UpdateRetention { package_id, change, reason, seq } => {
                let Some(&index) = self.retention_of.get(&package_id) else {
                    self.flush(tx).await?;
                    return Op::UpdateRetention { package_id, change, reason, seq }.execute(tx, event).await;
                };
                let row = &mut self.retention[index];
                match change {
                    RetentionSet::Until(until) => row.until = until,
                    RetentionSet::Hold(hold) => row.hold = hold,
                    RetentionSet::Expired => row.expired = true,
                }
                row.reason = reason;
                row.seq = seq;
            }
            op => {
                // Deletions and storage changes are rare: write what waits, then run them as the live path does.
                self.flush(tx).await?;
                return op.execute(tx, event).await;
            }
        }
        if self.waiting() >= FLUSH_AT {
            self.flush(tx).await?;
        }
        Ok(())
    }

    /// Writes every waiting row, parents before children.
    pub(crate) async fn flush(&mut self, tx: &mut Tx) -> Result<(), Error> {
        insert_rows(
            tx,
            "artifact_files (blake3, sha256, size, media_type, file_id, ingested_sequence, sequence)",
            7,
            " ON CONFLICT (blake3) DO NOTHING",
            &std::mem::take(&mut self.files),
            |q, r| {
                q.bind(&r.blake3)
                    .bind(&r.sha256)
                    .bind(r.size)
                    .bind(&r.media_type)
                    .bind(r.file_id)
                    .bind(r.seq)
                    .bind(r.seq)
            },
            |q, r| {
                q.bind(&r.blake3)
                    .bind(&r.sha256)
                    .bind(r.size)
                    .bind(&r.media_type)
                    .bind(r.file_id)
                    .bind(r.seq)
                    .bind(r.seq)
            },
        )
        .await?;
        self.file_keys.clear();
        insert_rows(
            tx,
            "artifact_packages (package_id, name, version, metadata, created_by, created_at, created_sequence, sequence)",
            8,
            "",
            &std::mem::take(&mut self.packages),
            |q, r| {
                q.bind(r.package_id)
                    .bind(&r.name)
                    .bind(&r.version)
                    .bind(&r.metadata)
                    .bind(&r.created_by)
                    .bind(r.created_at)
                    .bind(r.seq)
                    .bind(r.seq)
            },
            |q, r| {
                q.bind(r.package_id)
                    .bind(&r.name)
                    .bind(&r.version)
                    .bind(&r.metadata)
                    .bind(&r.created_by)
                    .bind(r.created_at)
                    .bind(r.seq)
                    .bind(r.seq)
            },
        )
        .await?;
        insert_rows(
            tx,
            "artifact_package_files (package_id, path, blake3, sha256, size, media_type, sequence)",
            7,
            "",
            &std::mem::take(&mut self.package_files),
            |q, r| {
                q.bind(r.package_id)
                    .bind(&r.path)
                    .bind(&r.blake3)
                    .bind(&r.sha256)
                    .bind(r.size)
                    .bind(&r.media_type)
                    .bind(r.seq)
            },
            |q, r| {
                q.bind(r.package_id)
                    .bind(&r.path)
                    .bind(&r.blake3)
                    .bind(&r.sha256)
                    .bind(r.size)
                    .bind(&r.media_type)
                    .bind(r.seq)
            },
        )
        .await?;
        insert_rows(
            tx,
            "retention_state (package_id, until, hold, reason, expired, sequence)",
            6,
            "",
            &std::mem::take(&mut self.retention),
            |q, r| q.bind(r.package_id).bind(r.until).bind(r.hold).bind(&r.reason).bind(r.expired).bind(r.seq),
            |q, r| q.bind(r.package_id).bind(r.until).bind(r.hold).bind(&r.reason).bind(r.expired).bind(r.seq),
        )
        .await?;
        self.retention_of.clear();
        Ok(())
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `INSERT INTO <into> VALUES (...), (...) <tail>` over `rows`, `ROWS_PER_INSERT` rows per statement.
async fn insert_rows<R>(
    tx: &mut Tx,
    into: &str,
    columns: usize,
    tail: &str,
    rows: &[R],
    bind_sqlite: for<'q> fn(SqliteQuery<'q>, &'q R) -> SqliteQuery<'q>,
    bind_pg: for<'q> fn(PgQuery<'q>, &'q R) -> PgQuery<'q>,
) -> Result<(), Error> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!("INSERT INTO {into} VALUES {}{tail}", placeholders(tx.backend(), chunk.len(), columns));
        match tx.as_exec() {
            Exec::Sqlite(c) => {
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = bind_sqlite(query, row);
                }
                query.execute(c).await?;
            }
            Exec::Postgres(c) => {
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = bind_pg(query, row);
                }
                query.execute(c).await?;
            }
        }
    }
    Ok(())
}
