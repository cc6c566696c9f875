//! Replay: the views rebuilt from the log, and checked against it.

use artifactstore_db::{execute, Tx};
use artifactstore_eventlog::{read_range, EventLog};

use crate::apply::plan;
use crate::batch::Batch;
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

/// Deletes every view row inside `tx`.
pub async fn clear(tx: &mut Tx) -> Result<(), Error> {
    for table in
        ["retention_state", "artifact_package_files", "artifact_packages", "artifact_files", "storage_locations"]
    {
        execute!(tx, &format!("DELETE FROM {table}"))?;
    }
    Ok(())
}

/// Applies every event with `sequence <= upto` in order, in batches.
async fn replay_into(tx: &mut Tx, upto: u64, progress: &mut impl FnMut(u64, u64)) -> Result<u64, Error> {
    replay_after(tx, 0, upto, progress).await
}

/// Applies every event with `from < sequence <= upto` in order, in batches.
pub(crate) async fn replay_after(
    tx: &mut Tx,
    from: u64,
    upto: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u64, Error> {
    let mut after = from;
    let mut applied = 0;
    let mut batch = Batch::default();
    while after < upto {
        let events = read_range(tx, after, BATCH).await?;
        if events.is_empty() {
            break;
        }
        for event in events.iter().take_while(|e| e.sequence <= upto) {
            for op in plan(event)? {
                batch.add(tx, op, event).await?;
            }
            after = event.sequence;
            applied += 1;
        }
        progress(after, upto);
    }
    batch.flush(tx).await?;
    Ok(applied)
}

/// Rebuilds every view from the log in one transaction that holds the head, so no write lands meanwhile
/// and readers see the old views until the new ones commit.
pub async fn rebuild(log: &EventLog, mut progress: impl FnMut(u64, u64)) -> Result<RebuildStats, Error> {
    let mut wtx = log.begin().await?;
    let head = wtx.head();
    clear(wtx.tx()).await?;
    let events = replay_into(wtx.tx(), head.sequence, &mut progress).await?;
    mark_current(wtx.tx()).await?;
    log.commit(wtx).await?;
    Ok(RebuildStats { events, head_sequence: head.sequence })
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
    clear(wtx.tx()).await?;
    replay_into(wtx.tx(), head.sequence, &mut progress).await?;
    let replayed = dump(wtx.tx()).await?;
    wtx.rollback().await?;
    Ok(diff(&live, &replayed))
}
