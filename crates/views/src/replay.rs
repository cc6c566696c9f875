//! Replay: the views rebuilt from the log, and checked against it.

use artifactstore_db::{execute, Tx};
use artifactstore_eventlog::{read_range, EventLog};

use artifactstore_db::Database;
use artifactstore_eventlog::Event;
use tokio::sync::mpsc;

use crate::apply::{plan, Op};
use crate::batch::Batch;
use crate::rows::{
    BlobDeletedRow, FileRow, ManifestRefRow, ManifestRow, PackageFileRow, PackageRow, PolicyRow, RetentionRow,
    RetiredRow, StorageRow, TagRow,
};
use crate::{diff, dump, Difference, Error};

/// How many events replay reads per round trip.
const BATCH: u32 = 5_000;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildStats {
    /// Events read and applied.
    pub events: u64,
    /// The head sequence the views now reflect.
    pub head_sequence: u64,
}

/// The views' tables, children before parents.
const VIEW_TABLES: [&str; 11] = [
    ManifestRefRow::TABLE,
    ManifestRow::TABLE,
    TagRow::TABLE,
    BlobDeletedRow::TABLE,
    RetentionRow::TABLE,
    PackageFileRow::TABLE,
    PackageRow::TABLE,
    FileRow::TABLE,
    StorageRow::TABLE,
    PolicyRow::TABLE,
    RetiredRow::TABLE,
];

/// Deletes every view row inside `tx`.
pub async fn clear(tx: &mut Tx) -> Result<(), Error> {
    for table in VIEW_TABLES {
        execute!(tx, &format!("DELETE FROM {table}"))?;
    }
    Ok(())
}

/// Applies every event with `sequence <= upto` in order, in batches, folding the blob rows (ADR 0031).
async fn replay_into(db: &Database, tx: &mut Tx, upto: u64, progress: &mut impl FnMut(u64, u64)) -> Result<u64, Error> {
    replay_events(db, tx, 0, upto, Batch::folding(), progress).await
}

/// A transaction that empties the views and fills them again (a rebuild, a verification, a snapshot's load):
/// `begin` deletes every view row and prepares the connection, `finish` puts it back as it was.
///
/// On SQLite the views' secondary indexes (those that enforce nothing: not a key, not unique, such as
/// `artifact_files_by_sha256`) are dropped at `begin` and created again at `finish`, from the very text that created
/// them: inserting rows keyed by random digests into such an index costs a walk to a different page for every row,
/// while building it afterwards sorts its keys once. No statement a replay runs reads through them. Readers keep
/// the committed views and their indexes until the transaction commits; should it fail, the rollback restores the
/// indexes with everything else. PostgreSQL keeps its indexes: dropping one there would lock the views against every
/// reader until the rebuild commits.
pub(crate) struct Refill {
    settings: ReplaySettings,
    /// The `CREATE INDEX` texts of the indexes dropped at `begin`.
    indexes: Vec<String>,
}

impl Refill {
    pub(crate) async fn begin(tx: &mut Tx) -> Result<Refill, Error> {
        clear(tx).await?;
        let mut indexes = Vec::new();
        if tx.backend() == artifactstore_db::Backend::Sqlite {
            let tables = VIEW_TABLES.map(|t| format!("'{t}'")).join(", ");
            let secondary = artifactstore_db::fetch_all!(
                tx,
                (String, String),
                &format!(
                    "SELECT m.name, m.sql FROM sqlite_master AS m \
                     WHERE m.type = 'index' AND m.sql IS NOT NULL AND m.tbl_name IN ({tables}) \
                     AND NOT EXISTS (SELECT 1 FROM pragma_index_list(m.tbl_name) AS l \
                                     WHERE l.name = m.name AND l.\"unique\") \
                     ORDER BY m.name"
                )
            )?;
            for (name, sql) in secondary {
                execute!(tx, &format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
                indexes.push(sql);
            }
        }
        let settings = ReplaySettings::apply(tx).await?;
        Ok(Refill { settings, indexes })
    }

    /// Ends the refill whose filling gave `filled`: the indexes are built again (unless it failed, and the
    /// transaction with it) and the connection's settings put back either way.
    pub(crate) async fn finish<T>(self, tx: &mut Tx, filled: Result<T, Error>) -> Result<T, Error> {
        let refilled = match filled {
            Ok(value) => self.create_indexes(tx).await.map(|()| value),
            Err(err) => Err(err),
        };
        self.settings.restore(tx).await?;
        refilled
    }

    async fn create_indexes(&self, tx: &mut Tx) -> Result<(), Error> {
        for sql in &self.indexes {
            execute!(tx, sql)?;
        }
        Ok(())
    }
}

/// Events read ahead of the writer, each with its planned row changes.
type Planned = Result<Vec<(Event, Vec<Op>)>, Error>;

/// Applies every event with `from < sequence <= upto` in order, in batches.
///
/// A reader task fetches the (committed, immutable) events on a connection of its own and plans their row changes
/// while `tx` writes the previous batch's.
pub(crate) async fn replay_after(
    db: &Database,
    tx: &mut Tx,
    from: u64,
    upto: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u64, Error> {
    replay_events(db, tx, from, upto, Batch::default(), progress).await
}

/// Applies every event with `from < sequence <= upto` in order through `batch`.
async fn replay_events(
    db: &Database,
    tx: &mut Tx,
    from: u64,
    upto: u64,
    mut batch: Batch,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u64, Error> {
    let (batches, mut planned) = mpsc::channel::<Planned>(2);
    let reader = {
        let db = db.clone();
        tokio::spawn(async move {
            let read = async {
                let mut conn = db.acquire().await?;
                let mut after = from;
                while after < upto {
                    let events = read_range(&mut conn, after, BATCH).await?;
                    if events.is_empty() {
                        break;
                    }
                    let mut batch = Vec::with_capacity(events.len());
                    for event in events.into_iter().take_while(|e| e.sequence <= upto) {
                        after = event.sequence;
                        let ops = plan(&event)?;
                        batch.push((event, ops));
                    }
                    if batches.send(Ok(batch)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok::<_, Error>(())
            };
            if let Err(err) = read.await {
                let _ = batches.send(Err(err)).await;
            }
        })
    };
    let mut after = from;
    let mut applied = 0;
    while let Some(events) = planned.recv().await {
        for (event, ops) in events? {
            for op in ops {
                batch.add(tx, op, &event).await?;
            }
            after = event.sequence;
            applied += 1;
        }
        progress(after, upto);
    }
    batch.finish(tx).await?;
    reader.await.map_err(|_| Error::Log(artifactstore_eventlog::Error::WorkPanicked))?;
    if after < upto {
        return Err(Error::Log(artifactstore_eventlog::Error::Corrupt(format!(
            "replay stopped at event {after}, before the head at {upto}"
        ))));
    }
    Ok(applied)
}

/// SQLite settings of a replaying connection, changed for the replay and put back after it.
///
/// The page cache is enlarged: inserting rows keyed by random digests touches index pages all over, and the
/// default cache (2 MB) would have them written out and read back again and again. Temporary files are kept in
/// memory: the statements a replay runs as the live path does (deletions, updates of written rows) keep a statement
/// journal of the pages they change, which on disk would be a file written through the kernel for each of them
/// (the batches' own inserts need none, `db::bulk_insert`).
struct ReplaySettings {
    previous: Option<(i64, i64)>,
}

/// The page cache of a replaying connection, in KiB (SQLite takes negative sizes as KiB).
const REPLAY_CACHE_KIB: i64 = 256 * 1024;

impl ReplaySettings {
    async fn apply(tx: &mut Tx) -> Result<ReplaySettings, Error> {
        if tx.backend() != artifactstore_db::Backend::Sqlite {
            return Ok(ReplaySettings { previous: None });
        }
        let (cache,): (i64,) = artifactstore_db::fetch_one!(tx, (i64,), "PRAGMA cache_size")?;
        let (temp,): (i64,) = artifactstore_db::fetch_one!(tx, (i64,), "PRAGMA temp_store")?;
        execute!(tx, &format!("PRAGMA cache_size = {}", -REPLAY_CACHE_KIB))?;
        execute!(tx, "PRAGMA temp_store = MEMORY")?;
        Ok(ReplaySettings { previous: Some((cache, temp)) })
    }

    async fn restore(self, tx: &mut Tx) -> Result<(), Error> {
        if let Some((cache, temp)) = self.previous {
            execute!(tx, &format!("PRAGMA cache_size = {cache}"))?;
            execute!(tx, &format!("PRAGMA temp_store = {temp}"))?;
        }
        Ok(())
    }
}

/// Rebuilds every view from the log in one transaction that holds the head, so no write lands meanwhile
/// and readers see the old views until the new ones commit.
pub async fn rebuild(log: &EventLog, progress: impl FnMut(u64, u64)) -> Result<RebuildStats, Error> {
    rebuild_with(log, Batch::folding(), progress).await
}

/// `rebuild` writing every blob row as its events come, as a replay that continues from a snapshot does, rather
/// than folded and written in key order at the end. The benchmark compares the two; the product always folds.
#[doc(hidden)]
pub async fn rebuild_in_log_order(log: &EventLog, progress: impl FnMut(u64, u64)) -> Result<RebuildStats, Error> {
    rebuild_with(log, Batch::default(), progress).await
}

async fn rebuild_with(log: &EventLog, batch: Batch, mut progress: impl FnMut(u64, u64)) -> Result<RebuildStats, Error> {
    let mut wtx = log.begin().await?;
    let head = wtx.head();
    let refill = Refill::begin(wtx.tx()).await?;
    let replayed = replay_events(log.database(), wtx.tx(), 0, head.sequence, batch, &mut progress).await;
    let events = refill.finish(wtx.tx(), replayed).await?;
    mark_current(wtx.tx()).await?;
    log.commit(wtx).await?;
    analyze(log.database()).await?;
    Ok(RebuildStats { events, head_sequence: head.sequence })
}

/// On PostgreSQL, refreshes the planner's statistics of the views after a rebuild refilled them, rather than
/// leaving plans to estimates of the old contents until autovacuum gets to it.
pub(crate) async fn analyze(db: &artifactstore_db::Database) -> Result<(), Error> {
    if db.backend() == artifactstore_db::Backend::Postgres {
        let mut conn = db.acquire().await?;
        execute!(&mut conn, &format!("ANALYZE {}", VIEW_TABLES.join(", ")))?;
    }
    Ok(())
}

/// Records that the views are behind the log and why (until the next completed rebuild).
pub async fn mark_stale(tx: &mut Tx, reason: &str) -> Result<(), Error> {
    execute!(tx, "UPDATE views_status SET stale = TRUE, reason = $1 WHERE id = 1", reason)?;
    Ok(())
}

/// Records that the views reflect the whole log.
pub(crate) async fn mark_current(tx: &mut Tx) -> Result<(), Error> {
    execute!(tx, "UPDATE views_status SET stale = FALSE, reason = NULL WHERE id = 1")?;
    Ok(())
}

/// Why the views are behind the log, if they are known to be.
pub async fn stale_reason<E: artifactstore_db::AsExec>(target: &mut E) -> Result<Option<String>, Error> {
    let row = artifactstore_db::fetch_optional!(
        target,
        (bool, Option<String>),
        "SELECT stale, reason FROM views_status WHERE id = 1"
    )?;
    Ok(row.filter(|(stale, _)| *stale).map(|(_, reason)| reason.unwrap_or_else(|| "unknown".into())))
}

/// Replays the whole log inside a transaction that is then rolled back, and lists every difference from the live views.
pub async fn verify(log: &EventLog, mut progress: impl FnMut(u64, u64)) -> Result<Vec<Difference>, Error> {
    let mut wtx = log.begin().await?;
    let head = wtx.head();
    let live = dump(wtx.tx()).await?;
    let refill = Refill::begin(wtx.tx()).await?;
    let replayed = replay_into(log.database(), wtx.tx(), head.sequence, &mut progress).await;
    refill.finish(wtx.tx(), replayed).await?;
    let replayed = dump(wtx.tx()).await?;
    wtx.rollback().await?;
    Ok(diff(&live, &replayed))
}
