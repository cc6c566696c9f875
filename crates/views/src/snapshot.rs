//! Snapshots: the views at one sequence, stamped with that sequence, the log's id and the chain hash there, as
//! canonical CBOR; and a rebuild that loads a snapshot and replays only what follows it.

use artifactstore_db::Tx;
use artifactstore_eventlog::{EventLog, Head};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::replay::{replay_after, Refill};
use crate::rows::insert_rows;
use crate::{dump, Error, RebuildStats, ViewsDump};

/// The format tag every snapshot this code takes carries: v6 adds the deleted versions (`retired_versions`) to v5
/// (the blobs' histories, the OCI views, the blobs' reference counts and removals).
pub const SNAPSHOT_FORMAT: &str = "artifactstore-views-snapshot-v6";
/// Older formats, which lack views or columns the log alone can give back: refused, and `replay --from-snapshot`
/// replays the whole log.
const OLDER_FORMATS: [&str; 5] = [
    "artifactstore-views-snapshot-v1",
    "artifactstore-views-snapshot-v2",
    "artifactstore-views-snapshot-v3",
    "artifactstore-views-snapshot-v4",
    "artifactstore-views-snapshot-v5",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `SNAPSHOT_FORMAT`.
    pub format: String,
    /// The log the views were built from.
    pub log_id: Uuid,
    /// The last event the views reflect.
    pub sequence: u64,
    /// The chain hash of that event (32 zero bytes at sequence 0).
    #[serde(with = "serde_bytes")]
    pub chain_hash: Vec<u8>,
    /// Every row.
    pub views: ViewsDump,
}

impl Snapshot {
    /// Canonical CBOR bytes.
    pub fn to_cbor(&self) -> Result<Vec<u8>, Error> {
        artifactstore_cbor::to_vec(self).map_err(|err| Error::Snapshot(err.to_string()))
    }

    /// Reads canonical CBOR bytes back, refusing another format.
    pub fn from_cbor(bytes: &[u8]) -> Result<Snapshot, Error> {
        #[derive(Deserialize)]
        struct Format {
            format: String,
        }
        let refused = |format: &str| {
            if OLDER_FORMATS.contains(&format) {
                Error::Snapshot(format!(
                    "snapshot format `{format}` is older than these views (it lacks the blobs' histories); the log is \
                     replayed instead"
                ))
            } else {
                Error::Snapshot(format!("unknown snapshot format `{format}`"))
            }
        };
        match artifactstore_cbor::from_slice::<Snapshot>(bytes) {
            Ok(snapshot) if snapshot.format == SNAPSHOT_FORMAT => Ok(snapshot),
            Ok(snapshot) => Err(refused(&snapshot.format)),
            // An older format may not decode as this one: its tag says why.
            Err(err) => match artifactstore_cbor::from_slice::<Format>(bytes) {
                Ok(Format { format }) if format != SNAPSHOT_FORMAT => Err(refused(&format)),
                _ => Err(Error::Snapshot(err.to_string())),
            },
        }
    }

    /// The object name: sequence first (zero-padded, so names sort by sequence), then the chain hash.
    pub fn file_name(&self) -> String {
        format!("{:020}-{}.cbor", self.sequence, hex(&self.chain_hash))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes a snapshot of the views as they are at the head, holding the log's write lock while it reads so the
/// views and the stamp agree.
pub async fn take(log: &EventLog) -> Result<Snapshot, Error> {
    let mut wtx = log.begin().await?;
    let head: Head = wtx.head();
    let views = dump(wtx.tx()).await?;
    wtx.rollback().await?;
    Ok(Snapshot {
        format: SNAPSHOT_FORMAT.to_owned(),
        log_id: head.log_id,
        sequence: head.sequence,
        chain_hash: head.chain_hash.to_vec(),
        views,
    })
}

/// Whether `snapshot` belongs to this log and its stamp matches the event at its sequence.
pub async fn matches_log(log: &EventLog, snapshot: &Snapshot) -> Result<bool, Error> {
    if snapshot.log_id != log.head().log_id {
        return Ok(false);
    }
    if snapshot.sequence == 0 {
        return Ok(snapshot.chain_hash == [0u8; 32]);
    }
    Ok(log.get(snapshot.sequence).await?.is_some_and(|event| event.chain_hash.as_slice() == snapshot.chain_hash))
}

/// Rebuilds the views from `snapshot` and the events after it, in one transaction (readers see the old views
/// until it commits; a failure leaves them untouched).
pub async fn rebuild_from(
    log: &EventLog,
    snapshot: &Snapshot,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildStats, Error> {
    if !matches_log(log, snapshot).await? {
        return Err(Error::Snapshot(format!(
            "the snapshot at sequence {} does not belong to this log (another log id, or another chain hash there)",
            snapshot.sequence
        )));
    }
    let mut wtx = log.begin().await?;
    let head = wtx.head();
    let refill = Refill::begin(wtx.tx()).await?;
    let filled = async {
        load(wtx.tx(), &snapshot.views).await?;
        replay_after(log.database(), wtx.tx(), snapshot.sequence, head.sequence, &mut progress).await
    }
    .await;
    let events = refill.finish(wtx.tx(), filled).await?;
    crate::replay::mark_current(wtx.tx()).await?;
    log.commit(wtx).await?;
    crate::replay::analyze(log.database()).await?;
    Ok(RebuildStats { events, head_sequence: head.sequence })
}

/// Inserts every row of `views` (into views that are empty), parents before children, in multi-row statements as
/// replay writes its rows.
pub async fn load(tx: &mut Tx, views: &ViewsDump) -> Result<(), Error> {
    insert_rows(tx, &views.files, "").await?;
    insert_rows(tx, &views.packages, "").await?;
    insert_rows(tx, &views.package_files, "").await?;
    insert_rows(tx, &views.retention, "").await?;
    insert_rows(tx, &views.storage, "").await?;
    insert_rows(tx, &views.policies, "").await?;
    insert_rows(tx, &views.oci_manifests, "").await?;
    insert_rows(tx, &views.oci_manifest_refs, "").await?;
    insert_rows(tx, &views.oci_tags, "").await?;
    insert_rows(tx, &views.oci_blobs_deleted, "").await?;
    insert_rows(tx, &views.retired, "").await?;
    Ok(())
}
