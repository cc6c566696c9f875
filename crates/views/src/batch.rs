//! `Batch`: replay's executor of planned row changes, writing runs of inserts as multi-row statements.
//!
//! Rows inserted during a replay wait in memory until enough have gathered; a later change to a waiting row (a
//! retention change, a deletion) is made to the waiting row itself. A change to a row already written flushes
//! what waits and runs as the live path runs it. The views end up exactly as `Op::execute` one by one leaves them.

use std::collections::{HashMap, HashSet};

use artifactstore_db::Tx;
use artifactstore_eventlog::Event;
use uuid::Uuid;

use crate::apply::{Op, RetentionSet};
use crate::rows::{insert_rows, FileRow, PackageFileRow, PackageRow, RetentionRow};
use crate::Error;

/// Rows waiting in memory before they are written.
const FLUSH_AT: usize = 4_000;

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
            Op::InsertFile(file) => {
                // The first ingestion of a blob wins, here as in `ON CONFLICT DO NOTHING`.
                if self.file_keys.insert(file.blake3.clone()) {
                    self.files.push(file);
                }
            }
            Op::InsertPackage(package) => self.packages.push(package),
            Op::InsertPackageFile(file) => self.package_files.push(file),
            Op::InsertRetention(row) => {
                if self.retention_of.contains_key(&row.package_id) {
                    // A second row for one package: let the database refuse it as it would live.
                    self.flush(tx).await?;
                    return Op::InsertRetention(row).execute(tx, event).await;
                }
                self.retention_of.insert(row.package_id, self.retention.len());
                self.retention.push(row);
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
                row.sequence = seq;
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
        insert_rows(tx, std::mem::take(&mut self.files).as_slice(), " ON CONFLICT (blake3) DO NOTHING").await?;
        self.file_keys.clear();
        insert_rows(tx, std::mem::take(&mut self.packages).as_slice(), "").await?;
        insert_rows(tx, std::mem::take(&mut self.package_files).as_slice(), "").await?;
        insert_rows(tx, std::mem::take(&mut self.retention).as_slice(), "").await?;
        self.retention_of.clear();
        Ok(())
    }
}
