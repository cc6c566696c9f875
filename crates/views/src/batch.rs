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
/// Bound bytes per multi-row `INSERT`, at most (but always one row): a package's metadata may be 16 MiB, and
/// PostgreSQL refuses a message over 1 GiB.
pub(crate) const BYTES_PER_INSERT: usize = 64 * 1024 * 1024;

/// The views' tables and columns as replay and a snapshot's load insert them (the bound fields follow this order).
pub(crate) const FILES_INTO: &str =
    "artifact_files (blake3, sha256, size, media_type, file_id, ingested_sequence, sequence)";
pub(crate) const PACKAGES_INTO: &str =
    "artifact_packages (package_id, name, version, metadata, created_by, created_at, created_sequence, sequence)";
pub(crate) const PACKAGE_FILES_INTO: &str =
    "artifact_package_files (package_id, path, blake3, sha256, size, media_type, sequence)";
pub(crate) const RETENTION_INTO: &str = "retention_state (package_id, until, hold, reason, expired, sequence)";

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

/// `INSERT INTO <into> VALUES (...), (...)<tail>` over `rows`, a run from `statements` per statement (`weigh =`
/// gives a row's large bound fields; none by default), binding the listed fields of each row in order, on either
/// backend. `$tx` is a `&mut Tx`.
macro_rules! insert_rows {
    ($tx:expr, $into:expr, $tail:expr, $rows:expr, |$r:ident| [$($field:expr),+ $(,)?]) => {
        $crate::batch::insert_rows!($tx, $into, $tail, $rows, |$r| [$($field),+], weigh = |_row| 0)
    };
    ($tx:expr, $into:expr, $tail:expr, $rows:expr, |$r:ident| [$($field:expr),+ $(,)?], weigh = |$w:ident| $weight:expr) => {{
        let rows = $rows;
        let columns = [$(stringify!($field)),+].len();
        for chunk in $crate::batch::statements(&rows[..], |$w| $weight) {
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
        insert_rows!(tx, FILES_INTO, " ON CONFLICT (blake3) DO NOTHING", std::mem::take(&mut self.files), |r| [
            r.blake3,
            r.sha256,
            r.size,
            r.media_type,
            r.file_id,
            r.seq,
            r.seq
        ]);
        self.file_keys.clear();
        insert_rows!(
            tx,
            PACKAGES_INTO,
            "",
            std::mem::take(&mut self.packages),
            |r| [r.package_id, r.name, r.version, r.metadata, r.created_by, r.created_at, r.seq, r.seq],
            weigh = |r| r.metadata.len()
        );
        insert_rows!(tx, PACKAGE_FILES_INTO, "", std::mem::take(&mut self.package_files), |r| [
            r.package_id,
            r.path,
            r.blake3,
            r.sha256,
            r.size,
            r.media_type,
            r.seq
        ]);
        insert_rows!(tx, RETENTION_INTO, "", std::mem::take(&mut self.retention), |r| [
            r.package_id,
            r.until,
            r.hold,
            r.reason,
            r.expired,
            r.seq
        ]);
        self.retention_of.clear();
        Ok(())
    }
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
}
