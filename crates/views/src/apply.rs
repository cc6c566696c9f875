//! `apply`: one event folded into the views, the same code live and in replay.

use artifactstore_db::{execute, Tx};
use artifactstore_eventlog::{Event, WriteTx};
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::vocab::{self, RegistryEvent, RetentionKind, StorageKind};
use crate::Error;

/// The live write path: appends `event` caused by `actor` and applies it to the views, in the same transaction.
pub async fn record(wtx: &mut WriteTx, actor: &str, event: &RegistryEvent) -> Result<Event, Error> {
    let appended = wtx.append(event.to_new_event(actor)?).await?;
    apply(wtx.tx(), &appended).await?;
    Ok(appended)
}

/// Folds one stored event into the views; events of types the views do not interpret change nothing.
pub async fn apply(tx: &mut Tx, event: &Event) -> Result<(), Error> {
    let Some(typed) = RegistryEvent::from_event(event)? else {
        return Ok(());
    };
    let seq = i64::try_from(event.sequence).unwrap_or(i64::MAX);
    match typed {
        RegistryEvent::FileIngested(p) => {
            // A blob is ingested once; should the log name it twice, the first event stays its origin.
            execute!(
                tx,
                "INSERT INTO artifact_files (blake3, sha256, size, media_type, file_id, ingested_sequence, sequence) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (blake3) DO NOTHING",
                p.blake3.as_str(),
                p.sha256.as_str(),
                size(event, p.size)?,
                p.media_type.as_deref(),
                vocab::file_id(&p.blake3),
                seq,
            )?;
        }
        RegistryEvent::PackageCreated { package_id, payload } => {
            let metadata = artifactstore_cbor::encode_value(&payload.metadata)
                .map_err(|err| crate::vocab::bad_payload(&event.event_type, event.sequence, &err.to_string()))?;
            execute!(
                tx,
                "INSERT INTO artifact_packages (package_id, name, version, metadata, created_by, created_at, created_sequence, sequence) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                package_id,
                payload.name.as_str(),
                payload.version.as_str(),
                metadata,
                event.actor.as_str(),
                event.created_at,
                seq,
            )?;
            for file in &payload.files {
                execute!(
                    tx,
                    "INSERT INTO artifact_package_files (package_id, path, blake3, sha256, size, media_type, sequence) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    package_id,
                    file.path.as_str(),
                    file.blake3.as_str(),
                    file.sha256.as_str(),
                    size(event, file.size)?,
                    file.media_type.as_deref(),
                    seq,
                )?;
            }
            execute!(
                tx,
                "INSERT INTO retention_state (package_id, until, hold, reason, expired, sequence) \
                 VALUES ($1, NULL, FALSE, NULL, FALSE, $2)",
                package_id,
                seq,
            )?;
        }
        RegistryEvent::PackageDeleted { package_id, .. } => {
            execute!(tx, "DELETE FROM retention_state WHERE package_id = $1", package_id)?;
            execute!(tx, "DELETE FROM artifact_package_files WHERE package_id = $1", package_id)?;
            let deleted = execute!(tx, "DELETE FROM artifact_packages WHERE package_id = $1", package_id)?;
            if deleted == 0 {
                return Err(missing(event, package_id.to_string()));
            }
        }
        RegistryEvent::Retention { kind, payload } => {
            let package_id = Uuid::parse_str(&payload.package_id)
                .map_err(|err| crate::vocab::bad_payload(&event.event_type, event.sequence, &err.to_string()))?;
            let reason = payload.reason.as_deref();
            let updated = match kind {
                RetentionKind::Extended => {
                    let until = parse_time(event, payload.until.as_deref())?;
                    execute!(
                        tx,
                        "UPDATE retention_state SET until = $2, reason = $3, sequence = $4 WHERE package_id = $1",
                        package_id,
                        until,
                        reason,
                        seq,
                    )?
                }
                RetentionKind::HoldSet | RetentionKind::HoldReleased => execute!(
                    tx,
                    "UPDATE retention_state SET hold = $2, reason = $3, sequence = $4 WHERE package_id = $1",
                    package_id,
                    kind == RetentionKind::HoldSet,
                    reason,
                    seq,
                )?,
                RetentionKind::Expired => execute!(
                    tx,
                    "UPDATE retention_state SET expired = TRUE, reason = $2, sequence = $3 WHERE package_id = $1",
                    package_id,
                    reason,
                    seq,
                )?,
            };
            if updated == 0 {
                return Err(missing(event, package_id.to_string()));
            }
        }
        RegistryEvent::Storage { kind, payload } => {
            if kind == StorageKind::Moved {
                if let Some(from) = payload.from.as_deref() {
                    execute!(
                        tx,
                        "DELETE FROM storage_locations WHERE blake3 = $1 AND location = $2",
                        payload.blake3.as_str(),
                        from,
                    )?;
                }
            }
            if kind == StorageKind::Removed {
                execute!(
                    tx,
                    "DELETE FROM storage_locations WHERE blake3 = $1 AND location = $2",
                    payload.blake3.as_str(),
                    payload.location.as_str(),
                )?;
            } else {
                execute!(
                    tx,
                    "INSERT INTO storage_locations (blake3, location, tier, sequence) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (blake3, location) DO UPDATE SET tier = excluded.tier, sequence = excluded.sequence",
                    payload.blake3.as_str(),
                    payload.location.as_str(),
                    payload.tier.as_str(),
                    seq,
                )?;
            }
        }
    }
    Ok(())
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

fn missing(event: &Event, subject: String) -> Error {
    Error::MissingSubject { sequence: event.sequence, event_type: event.event_type.clone(), subject }
}
