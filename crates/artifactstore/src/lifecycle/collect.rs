//! Collection: the blobs no live version names, past the grace time, removed through the log, then their bytes.
//!
//! Candidates come from the views' index of unreferenced blobs (`queries::unreferenced`), never from a listing of
//! the store, so a run costs what it collects. Each batch is one log transaction that decides again on what it
//! reads: a blob still unreferenced, still idle since before the cutoff, gets `v1.file.removed` and a row in
//! `blob_deletions`. Its bytes are deleted afterwards, in another log transaction that takes the rows out as the
//! bytes go; a crash in between leaves the rows, and the next run finishes them (`finish_deletions`).
//!
//! Both transactions go through the log's write order, as a publish's does: a publish that resolved a blob before
//! its removal committed holds a reference the removal's transaction sees; one after it answers `422
//! missing_blobs`. An upload that ingests removed bytes again calls their deletion off (`renew_removed`).

use std::collections::HashMap;

use artifactstore_blobstore::BlobStore;
use artifactstore_db::{execute, execute_each, fetch_all, fetch_all_each, placeholders, AsExec, Tx};
use artifactstore_views::queries;
use artifactstore_views::vocab::{FileRemoved, RegistryEvent};
use artifactstore_views::FileRow;
use chrono::{DateTime, Utc};

use super::Removed;
use crate::instance::Instance;
use crate::problem::ApiError;

/// Blobs per removal transaction and per deletion transaction: small enough that neither holds the log's write
/// order for long (a few milliseconds of statements, or of unlinks).
const BATCH: usize = 512;

/// Removes every collectable blob idle since `cutoff_ms` or before, as `actor`, and deletes its bytes; first
/// finishes the deletions an earlier run left. Returns the blobs it removed.
pub(super) async fn collect(instance: &Instance, actor: &str, cutoff_ms: i64) -> Result<Vec<Removed>, ApiError> {
    finish_deletions(instance).await?;
    let mut removed = Vec::new();
    let mut candidates = Candidates::new(cutoff_ms);
    // The bytes of one batch are deleted while the next batch is removed: both transactions wait at once, so the
    // log commits them together.
    let mut deleting: Vec<String> = Vec::new();
    loop {
        // The read's connection goes back to the pool before the batch's transactions run.
        let page = candidates.next(&mut instance.db.acquire().await?).await?;
        let Some(page) = page else { break };
        let (batch, deleted) = tokio::join!(
            remove(instance, actor, page, cutoff_ms),
            delete_bytes(instance, std::mem::take(&mut deleting))
        );
        deleted?;
        let batch = batch?;
        deleting = batch.iter().map(|row| row.blake3.clone()).collect();
        removed.extend(batch.iter().map(Removed::from));
    }
    delete_bytes(instance, deleting).await?;
    Ok(removed)
}

/// What a run would remove, committing nothing: the candidates idle since `cutoff_ms` or before, and, with
/// `freed` (the files of the versions the run would expire, when the cutoff is now), the blobs those versions hold
/// the last references of.
pub(super) async fn preview(instance: &Instance, cutoff_ms: i64, freed: Vec<String>) -> Result<Vec<Removed>, ApiError> {
    let mut conn = instance.db.acquire().await?;
    let mut removed = Vec::new();
    let mut candidates = Candidates::new(cutoff_ms);
    while let Some(page) = candidates.next(&mut conn).await? {
        removed.extend(page.iter().map(Removed::from));
    }
    let mut names: HashMap<String, i64> = HashMap::new();
    for blake3 in freed {
        *names.entry(blake3).or_default() += 1;
    }
    let keys: Vec<String> = names.keys().cloned().collect();
    for row in queries::files(&mut conn, &keys).await? {
        if !row.is_removed() && row.refs == names[&row.blake3] {
            removed.push(Removed::from(&row));
        }
    }
    Ok(removed)
}

/// Collection's candidates, a page of `BATCH` at a time, oldest idle first (`queries::unreferenced`).
struct Candidates {
    cutoff_ms: i64,
    /// The key of the last candidate seen.
    after: Option<(i64, String)>,
    done: bool,
}

impl Candidates {
    fn new(cutoff_ms: i64) -> Candidates {
        Candidates { cutoff_ms, after: None, done: false }
    }

    /// The next page, or `None` once a page came back short.
    async fn next<E: AsExec>(&mut self, conn: &mut E) -> Result<Option<Vec<FileRow>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let after = self.after.as_ref().map(|(ms, key)| (*ms, key.as_str()));
        let page = queries::unreferenced(conn, self.cutoff_ms, after, BATCH as i64).await?;
        self.done = page.len() < BATCH;
        let Some(last) = page.last() else { return Ok(None) };
        self.after = Some((last.idle_since_ms, last.blake3.clone()));
        Ok(Some(page))
    }
}

/// Records `v1.file.removed` for each blob of `page` that is still collectable, in one log transaction, with a
/// `blob_deletions` row for each. Returns the rows of the blobs it removed.
async fn remove(
    instance: &Instance,
    actor: &str,
    page: Vec<FileRow>,
    cutoff_ms: i64,
) -> Result<Vec<FileRow>, ApiError> {
    let actor = actor.to_owned();
    let keys: Vec<String> = page.into_iter().map(|row| row.blake3).collect();
    instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let mut rows = queries::files(wtx.tx(), &keys).await?;
                rows.retain(|row| row.refs == 0 && !row.is_removed() && row.idle_since_ms <= cutoff_ms);
                rows.sort_by(|a, b| (a.idle_since_ms, &a.blake3).cmp(&(b.idle_since_ms, &b.blake3)));
                let events: Vec<RegistryEvent> = rows
                    .iter()
                    .map(|row| {
                        RegistryEvent::FileRemoved(FileRemoved {
                            blake3: row.blake3.clone(),
                            sha256: row.sha256.clone(),
                            size: u64::try_from(row.size).unwrap_or(0),
                            reason: format!("unreferenced since {}", since(row.idle_since_ms)),
                        })
                    })
                    .collect();
                let appended = artifactstore_views::record_all(wtx, &actor, &events).await?;
                let pending: Vec<(String, i64)> = rows
                    .iter()
                    .zip(&appended)
                    .map(|(row, event)| (row.blake3.clone(), i64::try_from(event.sequence).unwrap_or(i64::MAX)))
                    .collect();
                insert_deletions(wtx.tx(), &pending).await?;
                Ok::<_, ApiError>(rows)
            })
        })
        .await
}

fn since(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(|| format!("{ms} ms"), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

async fn insert_deletions(tx: &mut Tx, pending: &[(String, i64)]) -> Result<(), ApiError> {
    if pending.is_empty() {
        return Ok(());
    }
    let sql = |backend| {
        format!(
            "INSERT INTO blob_deletions (blake3, sequence) VALUES {} \
             ON CONFLICT (blake3) DO UPDATE SET sequence = excluded.sequence",
            placeholders(backend, pending.len(), 2)
        )
    };
    execute_each!(tx, sql, pending, |q, (key, seq)| q.bind(key).bind(seq))?;
    Ok(())
}

/// Deletes the bytes of the blobs an earlier run removed and did not finish deleting (it crashed, or a deletion
/// failed), batch by batch.
async fn finish_deletions(instance: &Instance) -> Result<(), ApiError> {
    loop {
        let keys = {
            let mut conn = instance.db.acquire().await?;
            pending(&mut conn, BATCH as i64).await?
        };
        let full = keys.len() == BATCH;
        if keys.is_empty() {
            return Ok(());
        }
        delete_bytes(instance, keys).await?;
        if !full {
            return Ok(());
        }
    }
}

/// Up to `limit` removed blobs whose bytes are not yet known to be deleted.
pub(crate) async fn pending<E: AsExec>(target: &mut E, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows = fetch_all!(target, (String,), "SELECT blake3 FROM blob_deletions ORDER BY sequence LIMIT $1", limit)?;
    Ok(rows.into_iter().map(|(key,)| key).collect())
}

/// Deletes the bytes of `keys` in one log transaction that takes their `blob_deletions` rows out. A blob whose row
/// is gone (an upload ingested it again, or another run deleted it), or whose view row no longer says it was
/// removed by that row's event (a restore rewound the log), keeps its bytes. A failed deletion undoes the
/// transaction, so every row stays for the next run.
async fn delete_bytes(instance: &Instance, keys: Vec<String>) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    let store = instance.store.clone();
    instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let claimed: HashMap<String, i64> = claim_deletions(wtx.tx(), &keys).await?.into_iter().collect();
                let claimed: Vec<String> = queries::files(wtx.tx(), &claimed.keys().cloned().collect::<Vec<_>>())
                    .await?
                    .into_iter()
                    .filter(|row| row.removed_sequence.is_some_and(|seq| claimed.get(&row.blake3) == Some(&seq)))
                    .map(|row| row.blake3)
                    .collect();
                let hex: Vec<String> = claimed.iter().map(|key| key.trim_start_matches("blake3:").to_owned()).collect();
                store.remove_many(&hex).await?;
                Ok::<_, ApiError>(())
            })
        })
        .await
}

/// Takes the `blob_deletions` rows of `keys` out, in one statement; returns those it took, with their sequences.
async fn claim_deletions(tx: &mut Tx, keys: &[String]) -> Result<Vec<(String, i64)>, ApiError> {
    let sql = |backend| {
        format!(
            "DELETE FROM blob_deletions WHERE blake3 IN {} RETURNING blake3, sequence",
            placeholders(backend, 1, keys.len())
        )
    };
    Ok(fetch_all_each!(tx, (String, i64), sql, keys, |q, key| q.bind(key))?)
}

/// For an upload committing bytes that collection removed (BLAKE3 digest `blake3`, `size`), inside its log
/// transaction: calls off their pending deletion and says whether the bytes the upload placed are still there (a
/// deletion that ran between the placing and this transaction took them).
pub(crate) async fn renew_removed(tx: &mut Tx, store: &BlobStore, blake3: &str, size: u64) -> Result<bool, ApiError> {
    execute!(tx, "DELETE FROM blob_deletions WHERE blake3 = $1", blake3)?;
    Ok(store.size_of(blake3.trim_start_matches("blake3:")).await? == Some(size))
}

impl From<&FileRow> for Removed {
    fn from(row: &FileRow) -> Removed {
        Removed { digest: row.blake3.clone(), size: u64::try_from(row.size).unwrap_or(0) }
    }
}
