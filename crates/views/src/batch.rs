//! `Batch`: replay's executor of planned row changes, writing runs of inserts as multi-row statements.
//!
//! Rows inserted during a replay wait in memory until enough have gathered; a later change to a waiting row (a
//! retention change, a deletion) is made to the waiting row itself. A change to a row already written flushes
//! what waits and runs as the live path runs it. A new package file's reference is counted on its blob's waiting
//! row, or gathered per blob and added when the batch is written. The views end up exactly as `Op::execute` one by one leaves them.

use std::collections::HashMap;

use artifactstore_db::{execute, fetch_all, Tx};
use artifactstore_eventlog::Event;
use uuid::Uuid;

use crate::apply::{add_refs_each, remove_files, Op, RetentionSet, FILE_CONFLICT};
use crate::fold::FileFold;
use crate::rows::{insert_rows, FileRow, PackageFileRow, PackageRow, RetentionRow};
use crate::Error;

/// Rows waiting in memory before they are written.
const FLUSH_AT: usize = 4_000;

/// Row changes gathered for writing together.
#[derive(Default)]
pub(crate) struct Batch {
    files: Vec<FileRow>,
    /// Index into `files` of each waiting blob's row.
    file_of: HashMap<String, usize>,
    /// References gained by blobs whose rows are written already.
    refs: HashMap<String, i64>,
    packages: Vec<PackageRow>,
    package_files: Vec<PackageFileRow>,
    retention: Vec<RetentionRow>,
    /// Index into `retention` of each waiting package's row.
    retention_of: HashMap<Uuid, usize>,
    /// A run of blob removals, written together (`remove_files`), with the first one's event for errors.
    removals: Vec<(String, i64)>,
    first_removal: Option<Event>,
    /// In a replay from nothing, the blob rows' changes, written in key order at the end (`finish`).
    fold: Option<FileFold>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("waiting", &self.waiting()).finish()
    }
}

impl Batch {
    /// A batch for a replay into empty views: the blob rows are folded and written once each, at `finish`.
    pub(crate) fn folding() -> Batch {
        Batch { fold: Some(FileFold::default()), ..Batch::default() }
    }

    fn waiting(&self) -> usize {
        self.files.len() + self.packages.len() + self.package_files.len() + self.retention.len()
    }

    /// Takes one planned change of `event`.
    pub(crate) async fn add(&mut self, tx: &mut Tx, op: Op, event: &Event) -> Result<(), Error> {
        let op = match self.fold.is_some() {
            true => match self.fold_blobs(tx, op, event).await? {
                Some(op) => op,
                None => return Ok(()),
            },
            false => op,
        };
        if let Op::RemoveFile { blake3, seq } = op {
            // The rows it removes must be written first; then it waits for the rest of its run.
            if self.waiting() > 0 {
                self.flush_rows(tx).await?;
            }
            self.first_removal.get_or_insert_with(|| event.clone());
            self.removals.push((blake3, seq));
            return Ok(());
        }
        self.flush_removals(tx).await?;
        match op {
            Op::InsertFile(file) => {
                // The first ingestion of a waiting blob wins, as `FILE_CONFLICT` keeps a live row (a removal flushes,
                // so no waiting row is removed); its history gains the later one.
                match self.file_of.get(&file.blake3) {
                    Some(&index) => self.files[index].file_events.push_str(&file.file_events),
                    None => {
                        self.file_of.insert(file.blake3.clone(), self.files.len());
                        self.files.push(file);
                    }
                }
            }
            Op::InsertPackage(package) => self.packages.push(package),
            Op::InsertPackageFile(file) => {
                match self.file_of.get(&file.blake3) {
                    Some(&index) => self.files[index].refs += 1,
                    None => *self.refs.entry(file.blake3.clone()).or_default() += 1,
                }
                self.package_files.push(file);
            }
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

    /// In a replay from nothing, records what `op` does to blob rows in the fold. Returns what is left to do as
    /// usual: the op itself when the rest of its work is on other views (the blob view is empty meanwhile, so its
    /// statements there change nothing), `None` when nothing is left.
    async fn fold_blobs(&mut self, tx: &mut Tx, op: Op, event: &Event) -> Result<Option<Op>, Error> {
        let fold = self.fold.as_mut().expect("a folding batch");
        let seq = i64::try_from(event.sequence).unwrap_or(i64::MAX);
        Ok(match op {
            Op::InsertFile(row) => {
                fold.ingest(row)?;
                None
            }
            Op::InsertPackageFile(file) => {
                fold.refs(&file.blake3, seq, 1, None)?;
                self.package_files.push(file);
                if self.waiting() >= FLUSH_AT {
                    self.flush(tx).await?;
                }
                None
            }
            Op::RemoveFile { blake3, seq } => {
                fold.remove(&blake3, seq)?;
                execute!(tx, "DELETE FROM storage_locations WHERE blake3 = $1", blake3.as_str())?;
                None
            }
            Op::InsertManifest { ref row, ref refs } => {
                for blake3 in std::iter::once(&row.blake3).chain(refs.iter().map(|r| &r.blake3)) {
                    fold.refs(blake3, seq, 1, None)?;
                }
                Some(op)
            }
            Op::DeletePackage { package_id, at_ms } => {
                self.flush(tx).await?;
                let named = fetch_all!(
                    tx,
                    (String, i64),
                    "SELECT blake3, COUNT(*) FROM artifact_package_files WHERE package_id = $1 GROUP BY blake3",
                    package_id
                )?;
                self.lose_refs(named, seq, at_ms)?;
                Some(op)
            }
            Op::DeleteManifest { ref repository, ref digest, at_ms } => {
                self.flush(tx).await?;
                let named = fetch_all!(
                    tx,
                    (String, i64),
                    "SELECT blake3, COUNT(*) FROM (SELECT blake3 FROM oci_manifest_refs WHERE repository = $1 AND \
                     digest = $2 UNION ALL SELECT blake3 FROM oci_manifests WHERE repository = $1 AND digest = $2) \
                     AS named GROUP BY blake3",
                    repository.as_str(),
                    digest.as_str()
                )?;
                self.lose_refs(named, seq, at_ms)?;
                Some(op)
            }
            op => Some(op),
        })
    }

    /// Records in the fold the references blobs lose at event `seq`, made at `at_ms`.
    fn lose_refs(&mut self, named: Vec<(String, i64)>, seq: i64, at_ms: i64) -> Result<(), Error> {
        let fold = self.fold.as_mut().expect("a folding batch");
        for (blake3, n) in named {
            fold.refs(&blake3, seq, -n, Some(at_ms))?;
        }
        Ok(())
    }

    /// Writes what waits and, in a replay from nothing, the folded blob rows.
    pub(crate) async fn finish(mut self, tx: &mut Tx) -> Result<(), Error> {
        self.flush(tx).await?;
        if let Some(fold) = self.fold.take() {
            fold.write(tx).await?;
        }
        Ok(())
    }

    /// Writes every waiting row and removal.
    pub(crate) async fn flush(&mut self, tx: &mut Tx) -> Result<(), Error> {
        self.flush_rows(tx).await?;
        self.flush_removals(tx).await
    }

    async fn flush_removals(&mut self, tx: &mut Tx) -> Result<(), Error> {
        if let Some(first) = self.first_removal.take() {
            remove_files(tx, &std::mem::take(&mut self.removals), &first).await?;
        }
        Ok(())
    }

    /// Writes every waiting row, parents before children.
    async fn flush_rows(&mut self, tx: &mut Tx) -> Result<(), Error> {
        insert_rows(tx, std::mem::take(&mut self.files).as_slice(), FILE_CONFLICT).await?;
        self.file_of.clear();
        insert_rows(tx, std::mem::take(&mut self.packages).as_slice(), "").await?;
        insert_rows(tx, std::mem::take(&mut self.package_files).as_slice(), "").await?;
        let refs = std::mem::take(&mut self.refs);
        let mut counts: Vec<(&str, i64)> = refs.iter().map(|(blake3, n)| (blake3.as_str(), *n)).collect();
        counts.sort_unstable();
        add_refs_each(tx, &counts).await?;
        insert_rows(tx, std::mem::take(&mut self.retention).as_slice(), "").await?;
        self.retention_of.clear();
        Ok(())
    }
}
