//! `apply`: one event folded into the views, the same code live and in replay.

use artifactstore_db::{execute, Tx};
use artifactstore_eventlog::{Event, WriteTx};
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::vocab::{self, RegistryEvent, RetentionKind, StorageKind};
use crate::Error;

/// The live write path: appends `event` caused by `actor` and applies it to the views, in the same transaction
/// (the event's row is written with the commit, together with the rest of its group's).
pub async fn record(wtx: &mut WriteTx, actor: &str, event: &RegistryEvent) -> Result<Event, Error> {
    let appended = wtx.append(event.to_new_event(actor)?)?;
    apply(wtx.tx(), &appended).await?;
    Ok(appended)
}

/// Folds one stored event into the views; events of types the views do not interpret change nothing.
pub async fn apply(tx: &mut Tx, event: &Event) -> Result<(), Error> {
    for op in plan(event)? {
        op.execute(tx, event).await?;
    }
    Ok(())
}

/// One change to one view row: what an event means for the views, before any SQL runs.
///
/// `plan` is the one place that interprets events. The live path executes its changes one by one (`Op::execute`);
/// replay hands them to a `Batch`, which writes runs of them as multi-row statements with the same outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// A blob's row; a blob is ingested once, and should the log name it twice the first event stays its origin.
    InsertFile(NewFile),
    InsertPackage(NewPackage),
    InsertPackageFile(NewPackageFile),
    InsertRetention {
        package_id: Uuid,
        seq: i64,
    },
    /// A package version with its files and retention; it must exist.
    DeletePackage {
        package_id: Uuid,
    },
    /// A change to a package version's retention; it must exist.
    UpdateRetention {
        package_id: Uuid,
        change: RetentionSet,
        reason: Option<String>,
        seq: i64,
    },
    DeleteLocation {
        blake3: String,
        location: String,
    },
    UpsertLocation {
        blake3: String,
        location: String,
        tier: String,
        seq: i64,
    },
}

/// A new `artifact_files` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewFile {
    pub(crate) blake3: String,
    pub(crate) sha256: String,
    pub(crate) size: i64,
    pub(crate) media_type: Option<String>,
    pub(crate) file_id: Uuid,
    pub(crate) seq: i64,
}

/// A new `artifact_packages` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewPackage {
    pub(crate) package_id: Uuid,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) metadata: Vec<u8>,
    pub(crate) created_by: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) seq: i64,
}

/// A new `artifact_package_files` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewPackageFile {
    pub(crate) package_id: Uuid,
    pub(crate) path: String,
    pub(crate) blake3: String,
    pub(crate) sha256: String,
    pub(crate) size: i64,
    pub(crate) media_type: Option<String>,
    pub(crate) seq: i64,
}

/// What a retention event sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetentionSet {
    Until(Option<DateTime<Utc>>),
    Hold(bool),
    Expired,
}

/// The row changes one event makes, in order.
pub(crate) fn plan(event: &Event) -> Result<Vec<Op>, Error> {
    let Some(typed) = RegistryEvent::from_event(event)? else {
        return Ok(Vec::new());
    };
    let seq = i64::try_from(event.sequence).unwrap_or(i64::MAX);
    let ops = match typed {
        RegistryEvent::FileIngested(p) => vec![Op::InsertFile(NewFile {
            size: size(event, p.size)?,
            file_id: vocab::file_id(&p.blake3),
            blake3: p.blake3,
            sha256: p.sha256,
            media_type: p.media_type,
            seq,
        })],
        RegistryEvent::PackageCreated { package_id, payload } => {
            let metadata = artifactstore_cbor::encode_value(&payload.metadata)
                .map_err(|err| crate::vocab::bad_payload(&event.event_type, event.sequence, &err.to_string()))?;
            let mut ops = Vec::with_capacity(payload.files.len() + 2);
            ops.push(Op::InsertPackage(NewPackage {
                package_id,
                name: payload.name,
                version: payload.version,
                metadata,
                created_by: event.actor.clone(),
                created_at: event.created_at,
                seq,
            }));
            for file in payload.files {
                ops.push(Op::InsertPackageFile(NewPackageFile {
                    package_id,
                    size: size(event, file.size)?,
                    path: file.path,
                    blake3: file.blake3,
                    sha256: file.sha256,
                    media_type: file.media_type,
                    seq,
                }));
            }
            ops.push(Op::InsertRetention { package_id, seq });
            ops
        }
        RegistryEvent::PackageDeleted { package_id, .. } => vec![Op::DeletePackage { package_id }],
        RegistryEvent::Retention { kind, payload } => {
            let package_id = Uuid::parse_str(&payload.package_id)
                .map_err(|err| crate::vocab::bad_payload(&event.event_type, event.sequence, &err.to_string()))?;
            let change = match kind {
                RetentionKind::Extended => RetentionSet::Until(parse_time(event, payload.until.as_deref())?),
                RetentionKind::HoldSet => RetentionSet::Hold(true),
                RetentionKind::HoldReleased => RetentionSet::Hold(false),
                RetentionKind::Expired => RetentionSet::Expired,
            };
            vec![Op::UpdateRetention { package_id, change, reason: payload.reason, seq }]
        }
        RegistryEvent::Storage { kind, payload } => {
            let mut ops = Vec::new();
            if kind == StorageKind::Moved {
                if let Some(from) = payload.from {
                    ops.push(Op::DeleteLocation { blake3: payload.blake3.clone(), location: from });
                }
            }
            if kind == StorageKind::Removed {
                ops.push(Op::DeleteLocation { blake3: payload.blake3, location: payload.location });
            } else {
                ops.push(Op::UpsertLocation {
                    blake3: payload.blake3,
                    location: payload.location,
                    tier: payload.tier,
                    seq,
                });
            }
            ops
        }
    };
    Ok(ops)
}

impl Op {
    /// Runs this one change; `event` names the cause in errors.
    pub(crate) async fn execute(&self, tx: &mut Tx, event: &Event) -> Result<(), Error> {
        match self {
            Op::InsertFile(NewFile { blake3, sha256, size, media_type, file_id, seq }) => {
                execute!(
                    tx,
                    "INSERT INTO artifact_files (blake3, sha256, size, media_type, file_id, ingested_sequence, sequence) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (blake3) DO NOTHING",
                    blake3.as_str(),
                    sha256.as_str(),
                    *size,
                    media_type.as_deref(),
                    *file_id,
                    *seq,
                )?;
            }
            Op::InsertPackage(NewPackage { package_id, name, version, metadata, created_by, created_at, seq }) => {
                execute!(
                    tx,
                    "INSERT INTO artifact_packages (package_id, name, version, metadata, created_by, created_at, created_sequence, sequence) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    *package_id,
                    name.as_str(),
                    version.as_str(),
                    metadata.as_slice(),
                    created_by.as_str(),
                    *created_at,
                    *seq,
                )?;
            }
            Op::InsertPackageFile(NewPackageFile { package_id, path, blake3, sha256, size, media_type, seq }) => {
                execute!(
                    tx,
                    "INSERT INTO artifact_package_files (package_id, path, blake3, sha256, size, media_type, sequence) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    *package_id,
                    path.as_str(),
                    blake3.as_str(),
                    sha256.as_str(),
                    *size,
                    media_type.as_deref(),
                    *seq,
                )?;
            }
            Op::InsertRetention { package_id, seq } => {
                execute!(
                    tx,
                    "INSERT INTO retention_state (package_id, until, hold, reason, expired, sequence) \
                     VALUES ($1, NULL, FALSE, NULL, FALSE, $2)",
                    *package_id,
                    *seq,
                )?;
            }
            Op::DeletePackage { package_id } => {
                execute!(tx, "DELETE FROM retention_state WHERE package_id = $1", *package_id)?;
                execute!(tx, "DELETE FROM artifact_package_files WHERE package_id = $1", *package_id)?;
                let deleted = execute!(tx, "DELETE FROM artifact_packages WHERE package_id = $1", *package_id)?;
                if deleted == 0 {
                    return Err(missing(event, package_id.to_string()));
                }
            }
            Op::UpdateRetention { package_id, change, reason, seq } => {
                let reason = reason.as_deref();
                let updated = match change {
                    RetentionSet::Until(until) => execute!(
                        tx,
                        "UPDATE retention_state SET until = $2, reason = $3, sequence = $4 WHERE package_id = $1",
                        *package_id,
                        *until,
                        reason,
                        *seq,
                    )?,
                    RetentionSet::Hold(hold) => execute!(
                        tx,
                        "UPDATE retention_state SET hold = $2, reason = $3, sequence = $4 WHERE package_id = $1",
                        *package_id,
                        *hold,
                        reason,
                        *seq,
                    )?,
                    RetentionSet::Expired => execute!(
                        tx,
                        "UPDATE retention_state SET expired = TRUE, reason = $2, sequence = $3 WHERE package_id = $1",
                        *package_id,
                        reason,
                        *seq,
                    )?,
                };
                if updated == 0 {
                    return Err(missing(event, package_id.to_string()));
                }
            }
            Op::DeleteLocation { blake3, location } => {
                execute!(
                    tx,
                    "DELETE FROM storage_locations WHERE blake3 = $1 AND location = $2",
                    blake3.as_str(),
                    location.as_str(),
                )?;
            }
            Op::UpsertLocation { blake3, location, tier, seq } => {
                execute!(
                    tx,
                    "INSERT INTO storage_locations (blake3, location, tier, sequence) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (blake3, location) DO UPDATE SET tier = excluded.tier, sequence = excluded.sequence",
                    blake3.as_str(),
                    location.as_str(),
                    tier.as_str(),
                    *seq,
                )?;
            }
        }
        Ok(())
    }
}

fn size(event: &Event, size: u64) -> Result<i64, Error> {
    i64::try_from(size).map_err(|_| crate::vocab::bad_payload(&event.event_type, event.sequence, "size out of range"))
}

fn parse_time(event: &Event, text: Option<&str>) -> Result<Option<DateTime<Utc>>, Error> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc).trunc_subsecs(6))
            .map_err(|err| crate::vocab::bad_payload(&event.event_type, event.sequence, &format!("until: {err}")))
    })
    .transpose()
}

pub(crate) fn missing(event: &Event, subject: String) -> Error {
    Error::MissingSubject { sequence: event.sequence, event_type: event.event_type.clone(), subject }
}
