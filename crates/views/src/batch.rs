//! `Batch`: replay's executor of planned row changes, writing runs of inserts as multi-row statements.
//!
//! Rows inserted during a replay wait in memory until enough have gathered; a later change to a waiting row (a
//! retention change, a deletion) is made to the waiting row itself. A change to a row already written flushes
//! what waits and runs as the live path runs it. The views end up exactly as `Op::execute` one by one leaves them.

use std::collections::{HashMap, HashSet};

use artifactstore_db::Tx;
use artifactstore_eventlog::Event;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::apply::{NewFile, NewPackage, NewPackageFile, Op, RetentionSet};
use crate::Error;

/// Rows waiting in memory before they are written.
const FLUSH_AT: usize = 4_000;
/// Rows per multi-row `INSERT` (at most 8 parameters each, far below either backend's limit).
pub(crate) const ROWS_PER_INSERT: usize = 200;

/// `INSERT INTO <into> VALUES (...), (...)<tail>` over `rows`, `ROWS_PER_INSERT` rows per statement, binding the
/// listed fields of each row in order, on either backend. `$tx` is a `&mut Tx`.
macro_rules! insert_rows {
    ($tx:expr, $into:expr, $tail:expr, $rows:expr, |$r:ident| [$($field:expr),+ $(,)?]) => {{
        let rows = $rows;
        let columns = [$(stringify!($field)),+].len();
        for chunk in rows.chunks($crate::batch::ROWS_PER_INSERT) {
            // Any failure ends the replay and rolls back its whole transaction.
            let verb = ::artifactstore_db::bulk_insert($tx.backend());
            let values = ::artifactstore_db::placeholders($tx.backend(), chunk.len(), columns);
            let sql = format!("{verb} INTO {} VALUES {values}{}", $into, $tail);
            match ::artifactstore_db::AsExec::as_exec(&mut *$tx) {
                ::artifactstore_db::Exec::Sqlite(c) => {
                    let mut query = ::artifactstore_db::sqlx::query(&sql);
                    for $r in chunk {
                        query = query$(.bind(&$field))+;
                    }
                    query.execute(c).await?;
                }
                ::artifactstore_db::Exec::Postgres(c) => {
                    let mut query = ::artifactstore_db::sqlx::query(&sql);
                    for $r in chunk {
                        query = query$(.bind(&$field))+;
                    }
                    query.execute(c).await?;
                }
            }
        }
    }};
}

pub(crate) use insert_rows;

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
    files: Vec<NewFile>,
    file_keys: HashSet<String>,
    packages: Vec<NewPackage>,
    package_files: Vec<NewPackageFile>,
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
            Op::InsertFile(file) => {
                // The first ingestion of a blob wins, here as in `ON CONFLICT DO NOTHING`.
                if self.file_keys.insert(file.blake3.clone()) {
                    self.files.push(file);
                }
            }
            Op::InsertPackage(package) => self.packages.push(package),
            Op::InsertPackageFile(file) => self.package_files.push(file),
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
        insert_rows!(
            tx,
            "artifact_files (blake3, sha256, size, media_type, file_id, ingested_sequence, sequence)",
            " ON CONFLICT (blake3) DO NOTHING",
            std::mem::take(&mut self.files),
            |r| [r.blake3, r.sha256, r.size, r.media_type, r.file_id, r.seq, r.seq]
        );
        self.file_keys.clear();
        insert_rows!(
            tx,
            "artifact_packages (package_id, name, version, metadata, created_by, created_at, created_sequence, sequence)",
            "",
            std::mem::take(&mut self.packages),
            |r| [r.package_id, r.name, r.version, r.metadata, r.created_by, r.created_at, r.seq, r.seq]
        );
        insert_rows!(
            tx,
            "artifact_package_files (package_id, path, blake3, sha256, size, media_type, sequence)",
            "",
            std::mem::take(&mut self.package_files),
            |r| [r.package_id, r.path, r.blake3, r.sha256, r.size, r.media_type, r.seq]
        );
        insert_rows!(
            tx,
            "retention_state (package_id, until, hold, reason, expired, sequence)",
            "",
            std::mem::take(&mut self.retention),
            |r| [r.package_id, r.until, r.hold, r.reason, r.expired, r.seq]
        );
        self.retention_of.clear();
        Ok(())
    }
}
