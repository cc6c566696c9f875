//! `apply`: one event folded into the views, the same code live and in replay.

use artifactstore_db::{execute, Tx};
use artifactstore_eventlog::{Event, WriteTx};
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::rows::{
    insert_one, insert_one_sql, once, BlobDeletedRow, FileRow, ManifestRefRow, ManifestRow, PackageFileRow, PackageRow,
    PolicyRow, RetentionRow, StorageRow, TagRow,
};
use crate::vocab::{self, OciEvent, PolicyKind, RegistryEvent, RetentionKind, StorageKind};
use crate::Error;

/// The live write path: appends `event` caused by `actor` and applies it to the views, in the same transaction
/// (the event's row is written with the commit, together with the rest of its group's).
pub async fn record(wtx: &mut WriteTx, actor: &str, event: &RegistryEvent) -> Result<Event, Error> {
    let appended = wtx.append(event.to_new_event(actor)?)?;
    apply(wtx.tx(), &appended).await?;
    Ok(appended)
}

/// `record` for several events in one transaction: appends each, then applies their row changes in order, a run of
/// consecutive blob removals as one statement (`remove_files`), as replay does.
pub async fn record_all(wtx: &mut WriteTx, actor: &str, events: &[RegistryEvent]) -> Result<Vec<Event>, Error> {
    let mut appended = Vec::with_capacity(events.len());
    for event in events {
        appended.push(wtx.append(event.to_new_event(actor)?)?);
    }
    let mut removals: Vec<(String, i64)> = Vec::new();
    let mut first_removal: Option<&Event> = None;
    for event in &appended {
        for op in plan(event)? {
            match op {
                Op::RemoveFile { blake3, seq } => {
                    first_removal.get_or_insert(event);
                    removals.push((blake3, seq));
                }
                op => {
                    if let Some(first) = first_removal.take() {
                        remove_files(wtx.tx(), &std::mem::take(&mut removals), first).await?;
                    }
                    op.execute(wtx.tx(), event).await?;
                }
            }
        }
    }
    if let Some(first) = first_removal {
        remove_files(wtx.tx(), &removals, first).await?;
    }
    Ok(appended)
}

/// Folds one stored event into the views; events of types the views do not interpret change nothing.
///
/// An event of many row changes (a version of many files) writes them as replay does, in multi-row statements
/// (`Batch`), which leave the views exactly as the changes one by one would, in a fraction of the statements.
pub async fn apply(tx: &mut Tx, event: &Event) -> Result<(), Error> {
    let ops = plan(event)?;
    if ops.len() < BATCHED_FROM {
        for op in ops {
            op.execute(tx, event).await?;
        }
        return Ok(());
    }
    let mut batch = crate::batch::Batch::default();
    for op in ops {
        batch.add(tx, op, event).await?;
    }
    batch.finish(tx).await
}

/// An event with at least this many row changes has them written in multi-row statements.
const BATCHED_FROM: usize = 16;

/// One change to one view row: what an event means for the views, before any SQL runs.
///
/// `plan` is the one place that interprets events. The live path executes its changes one by one (`Op::execute`);
/// replay hands them to a `Batch`, which writes runs of them as multi-row statements with the same outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// A blob's row. A blob is ingested once while it lives: should the log name it twice the first event stays its
    /// origin; ingested again after its removal, the row starts anew.
    InsertFile(FileRow),
    /// A file of a new package version; its blob gains a reference.
    InsertPackage(PackageRow),
    InsertPackageFile(PackageFileRow),
    InsertRetention(RetentionRow),
    /// A package version with its files and retention; it must exist. Its blobs lose a reference each, and those
    /// left with none are idle from `at_ms`.
    DeletePackage {
        package_id: Uuid,
        at_ms: i64,
    },
    /// A blob removed by collection; it must exist, live and unreferenced.
    RemoveFile {
        blake3: String,
        seq: i64,
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
    /// A blob's place, new or with its tier changed.
    UpsertLocation(StorageRow),
    /// A retention policy, new or changed.
    UpsertPolicy(PolicyRow),
    /// A retention policy; it must exist.
    DeletePolicy {
        name: String,
    },
    /// An OCI manifest with what it names; it holds a reference on its own blob and on each blob it names.
    InsertManifest {
        row: ManifestRow,
        refs: Vec<ManifestRefRow>,
    },
    /// An OCI manifest; it must exist. Its blobs lose the references it held, and those left with none are idle from
    /// `at_ms`.
    DeleteManifest {
        repository: String,
        digest: String,
        at_ms: i64,
    },
    /// An OCI tag, new or moved.
    UpsertTag(TagRow),
    /// An OCI tag; it must exist.
    DeleteTag {
        repository: String,
        tag: String,
    },
    /// A blob hidden from one OCI repository.
    HideBlob(BlobDeletedRow),
    /// A blob seen again by one OCI repository.
    ShowBlob {
        repository: String,
        blake3: String,
    },
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
    let at_ms = event.created_at.timestamp_millis();
    let ops = match typed {
        RegistryEvent::FileIngested(p) => vec![Op::InsertFile(FileRow {
            size: int(event, p.size)?,
            file_id: vocab::file_id(&p.blake3),
            blake3: p.blake3,
            sha256: p.sha256,
            media_type: p.media_type,
            ingested_sequence: seq,
            sequence: seq,
            refs: 0,
            idle_since_ms: at_ms,
            removed_sequence: None,
            file_events: crate::rows::history_entry(seq),
        })],
        RegistryEvent::FileRemoved(p) => vec![Op::RemoveFile { blake3: p.blake3, seq }],
        RegistryEvent::PackageCreated { package_id, payload } => {
            let metadata = artifactstore_cbor::encode_value(&payload.metadata)
                .map_err(|err| crate::vocab::bad_payload(&event.event_type, event.sequence, &err.to_string()))?;
            let mut ops = Vec::with_capacity(payload.files.len() + 2);
            ops.push(Op::InsertPackage(PackageRow {
                package_id,
                name: payload.name,
                version: payload.version,
                metadata,
                created_by: event.actor.clone(),
                created_at: event.created_at,
                created_sequence: seq,
                sequence: seq,
            }));
            for file in payload.files {
                ops.push(Op::InsertPackageFile(PackageFileRow {
                    package_id,
                    size: int(event, file.size)?,
                    path: file.path,
                    blake3: file.blake3,
                    sha256: file.sha256,
                    media_type: file.media_type,
                    sequence: seq,
                }));
            }
            ops.push(Op::InsertRetention(RetentionRow::initial(package_id, seq)));
            ops
        }
        RegistryEvent::PackageDeleted { package_id, .. } => vec![Op::DeletePackage { package_id, at_ms }],
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
                ops.push(Op::UpsertLocation(StorageRow {
                    blake3: payload.blake3,
                    location: payload.location,
                    tier: payload.tier,
                    sequence: seq,
                }));
            }
            ops
        }
        RegistryEvent::Policy { kind: PolicyKind::Set, payload } => vec![Op::UpsertPolicy(PolicyRow {
            keep_last: payload.keep_last.map(|n| int(event, n)).transpose()?,
            keep_days: payload.keep_days.map(|n| int(event, n)).transpose()?,
            name: payload.name,
            prefix: payload.prefix,
            sequence: seq,
        })],
        RegistryEvent::Policy { kind: PolicyKind::Removed, payload } => vec![Op::DeletePolicy { name: payload.name }],
        RegistryEvent::SystemGc { .. } => Vec::new(),
        RegistryEvent::Oci(oci) => plan_oci(event, oci, seq, at_ms)?,
    };
    Ok(ops)
}

fn plan_oci(event: &Event, oci: OciEvent, seq: i64, at_ms: i64) -> Result<Vec<Op>, Error> {
    Ok(match oci {
        OciEvent::ManifestPushed(p) => {
            let annotations = p
                .annotations
                .map(|a| artifactstore_cbor::to_vec(&a))
                .transpose()
                .map_err(|err| crate::vocab::bad_payload(&event.event_type, event.sequence, &err.to_string()))?;
            let mut refs = Vec::with_capacity(p.references.len());
            for (position, r) in p.references.into_iter().enumerate() {
                refs.push(ManifestRefRow {
                    repository: p.repository.clone(),
                    digest: p.digest.clone(),
                    position: int(event, position as u64)?,
                    ref_digest: r.digest,
                    blake3: r.blake3,
                    size: int(event, r.size)?,
                    media_type: r.media_type,
                    sequence: seq,
                });
            }
            let row = ManifestRow {
                size: int(event, p.size)?,
                repository: p.repository,
                digest: p.digest,
                blake3: p.blake3,
                media_type: p.media_type,
                artifact_type: p.artifact_type,
                subject: p.subject,
                annotations,
                pushed_ms: at_ms,
                sequence: seq,
            };
            vec![Op::InsertManifest { row, refs }]
        }
        OciEvent::ManifestDeleted(p) => {
            vec![Op::DeleteManifest { repository: p.repository, digest: p.digest, at_ms }]
        }
        OciEvent::TagSet(p) => {
            let digest = p.digest.ok_or_else(|| {
                crate::vocab::bad_payload(&event.event_type, event.sequence, "a tag set needs a digest")
            })?;
            vec![Op::UpsertTag(TagRow { repository: p.repository, tag: p.tag, digest, sequence: seq })]
        }
        OciEvent::TagDeleted(p) => vec![Op::DeleteTag { repository: p.repository, tag: p.tag }],
        OciEvent::BlobDeleted(p) => {
            vec![Op::HideBlob(BlobDeletedRow { repository: p.repository, blake3: p.blake3, sequence: seq })]
        }
        OciEvent::BlobLinked(p) => vec![Op::ShowBlob { repository: p.repository, blake3: p.blake3 }],
    })
}

impl Op {
    /// Runs this one change; `event` names the cause in errors.
    pub(crate) async fn execute(&self, tx: &mut Tx, event: &Event) -> Result<(), Error> {
        match self {
            // The one-row inserts of the live path (replay writes many rows per statement, `rows::insert_rows`).
            Op::InsertFile(row) => insert_one(tx, once!(insert_one_sql::<FileRow>(FILE_CONFLICT)), row).await?,
            Op::InsertPackage(row) => insert_one(tx, once!(insert_one_sql::<PackageRow>("")), row).await?,
            Op::InsertPackageFile(row) => {
                insert_one(tx, once!(insert_one_sql::<PackageFileRow>("")), row).await?;
                add_refs_each(tx, &[(row.blake3.as_str(), 1)]).await?;
            }
            Op::InsertRetention(row) => insert_one(tx, once!(insert_one_sql::<RetentionRow>("")), row).await?,
            Op::DeletePackage { package_id, at_ms } => {
                execute!(
                    tx,
                    "UPDATE artifact_files SET refs = refs - (SELECT COUNT(*) FROM artifact_package_files pf \
                     WHERE pf.package_id = $1 AND pf.blake3 = artifact_files.blake3) \
                     WHERE blake3 IN (SELECT blake3 FROM artifact_package_files WHERE package_id = $1)",
                    *package_id,
                )?;
                execute!(
                    tx,
                    "UPDATE artifact_files SET idle_since_ms = $2 WHERE refs = 0 \
                     AND blake3 IN (SELECT blake3 FROM artifact_package_files WHERE package_id = $1)",
                    *package_id,
                    *at_ms,
                )?;
                execute!(
                    tx,
                    "INSERT INTO retired_versions (name, version, created_sequence, sequence) \
                     SELECT name, version, created_sequence, $2 FROM artifact_packages WHERE package_id = $1 \
                     ON CONFLICT (name, version) DO NOTHING",
                    *package_id,
                    i64::try_from(event.sequence).unwrap_or(i64::MAX),
                )?;
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
            Op::RemoveFile { blake3, seq } => remove_files(tx, &[(blake3.clone(), *seq)], event).await?,
            Op::DeleteLocation { blake3, location } => {
                execute!(
                    tx,
                    "DELETE FROM storage_locations WHERE blake3 = $1 AND location = $2",
                    blake3.as_str(),
                    location.as_str(),
                )?;
            }
            Op::UpsertLocation(row) => {
                let sql = once!(insert_one_sql::<StorageRow>(
                    " ON CONFLICT (blake3, location) DO UPDATE SET tier = excluded.tier, sequence = excluded.sequence"
                ));
                insert_one(tx, sql, row).await?;
            }
            Op::UpsertPolicy(row) => {
                let sql = once!(insert_one_sql::<PolicyRow>(
                    " ON CONFLICT (name) DO UPDATE SET prefix = excluded.prefix, keep_last = excluded.keep_last, \
                     keep_days = excluded.keep_days, sequence = excluded.sequence"
                ));
                insert_one(tx, sql, row).await?;
            }
            Op::DeletePolicy { name } => {
                if execute!(tx, "DELETE FROM retention_policies WHERE name = $1", name.as_str())? == 0 {
                    return Err(missing(event, format!("policy {name}")));
                }
            }
            Op::InsertManifest { row, refs } => {
                insert_one(tx, once!(insert_one_sql::<ManifestRow>("")), row).await?;
                crate::rows::insert_rows(tx, refs, "").await?;
                let mut counts: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
                for blake3 in std::iter::once(&row.blake3).chain(refs.iter().map(|r| &r.blake3)) {
                    *counts.entry(blake3.as_str()).or_default() += 1;
                }
                let counts: Vec<(&str, i64)> = counts.into_iter().collect();
                add_refs_each(tx, &counts).await?;
            }
            Op::DeleteManifest { repository, digest, at_ms } => {
                let (repository, digest) = (repository.as_str(), digest.as_str());
                execute!(
                    tx,
                    "UPDATE artifact_files SET refs = refs - (SELECT COUNT(*) FROM oci_manifest_refs r \
                     WHERE r.repository = $1 AND r.digest = $2 AND r.blake3 = artifact_files.blake3) \
                     WHERE blake3 IN (SELECT blake3 FROM oci_manifest_refs WHERE repository = $1 AND digest = $2)",
                    repository,
                    digest,
                )?;
                execute!(
                    tx,
                    "UPDATE artifact_files SET refs = refs - 1 \
                     WHERE blake3 IN (SELECT blake3 FROM oci_manifests WHERE repository = $1 AND digest = $2)",
                    repository,
                    digest,
                )?;
                execute!(
                    tx,
                    "UPDATE artifact_files SET idle_since_ms = $3 WHERE refs = 0 \
                     AND (blake3 IN (SELECT blake3 FROM oci_manifest_refs WHERE repository = $1 AND digest = $2) \
                     OR blake3 IN (SELECT blake3 FROM oci_manifests WHERE repository = $1 AND digest = $2))",
                    repository,
                    digest,
                    *at_ms,
                )?;
                execute!(
                    tx,
                    "DELETE FROM oci_manifest_refs WHERE repository = $1 AND digest = $2",
                    repository,
                    digest
                )?;
                let deleted = execute!(
                    tx,
                    "DELETE FROM oci_manifests WHERE repository = $1 AND digest = $2",
                    repository,
                    digest
                )?;
                if deleted == 0 {
                    return Err(missing(event, format!("manifest {repository}@{digest}")));
                }
            }
            Op::UpsertTag(row) => {
                let sql = once!(insert_one_sql::<TagRow>(
                    " ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, sequence = excluded.sequence"
                ));
                insert_one(tx, sql, row).await?;
            }
            Op::DeleteTag { repository, tag } => {
                let deleted = execute!(
                    tx,
                    "DELETE FROM oci_tags WHERE repository = $1 AND tag = $2",
                    repository.as_str(),
                    tag.as_str()
                )?;
                if deleted == 0 {
                    return Err(missing(event, format!("tag {repository}:{tag}")));
                }
            }
            Op::HideBlob(row) => {
                let sql = once!(insert_one_sql::<BlobDeletedRow>(
                    " ON CONFLICT (repository, blake3) DO UPDATE SET sequence = excluded.sequence"
                ));
                insert_one(tx, sql, row).await?;
            }
            Op::ShowBlob { repository, blake3 } => {
                execute!(
                    tx,
                    "DELETE FROM oci_blobs_deleted WHERE repository = $1 AND blake3 = $2",
                    repository.as_str(),
                    blake3.as_str()
                )?;
            }
        }
        Ok(())
    }
}

/// Removes the blobs of `removals` (each with the sequence of its `v1.file.removed`), which must be live and
/// unreferenced, with every storage location they had: two statements for the whole run. `first` names the cause
/// in errors.
pub(crate) async fn remove_files(tx: &mut Tx, removals: &[(String, i64)], first: &Event) -> Result<(), Error> {
    for chunk in removals.chunks(REMOVALS_PER_STATEMENT) {
        // `VALUES` names its columns `column1`, `column2` on both backends.
        let update = |backend| {
            format!(
                "UPDATE artifact_files SET removed_sequence = v.column2, sequence = v.column2, \
                 file_events = artifact_files.file_events || CAST(v.column2 AS TEXT) || ' ' FROM (VALUES {}) AS v \
             WHERE artifact_files.blake3 = v.column1 AND artifact_files.removed_sequence IS NULL \
             AND artifact_files.refs = 0",
                values_of_text_and_bigint(backend, chunk.len())
            )
        };
        let delete = |backend| {
            format!(
                "DELETE FROM storage_locations WHERE blake3 IN {}",
                artifactstore_db::placeholders(backend, 1, chunk.len())
            )
        };
        let removed = artifactstore_db::execute_each!(tx, update, chunk, |q, (key, seq)| q.bind(key).bind(seq))?;
        artifactstore_db::execute_each!(tx, delete, chunk, |q, (key, _)| q.bind(key))?;
        if removed != chunk.len() as u64 {
            let blobs: Vec<&str> = chunk.iter().map(|(key, _)| key.as_str()).collect();
            return Err(missing(first, format!("unreferenced live blobs among {}", blobs.join(", "))));
        }
    }
    Ok(())
}

/// `($1, $2::bigint), ($3, $4::bigint), ...` (plain `?` on SQLite) for `rows` rows of a text and a number.
fn values_of_text_and_bigint(backend: artifactstore_db::Backend, rows: usize) -> String {
    (0..rows)
        .map(|i| match backend {
            artifactstore_db::Backend::Sqlite => "(?, ?)".to_owned(),
            artifactstore_db::Backend::Postgres => format!("(${}, ${}::bigint)", 2 * i + 1, 2 * i + 2),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Blob removals per statement pair (2 parameters each).
const REMOVALS_PER_STATEMENT: usize = 1000;

/// What an ingestion does to a blob's existing row: a live row keeps its origin and gains the new row's references
/// (replay counts a waiting row's references on it); a removed row starts anew.
pub(crate) const FILE_CONFLICT: &str = concat!(
    " ON CONFLICT (blake3) DO UPDATE SET refs = artifact_files.refs + excluded.refs",
    keep_or_renew!(sha256, size, media_type, ingested_sequence, sequence, idle_since_ms),
    ", removed_sequence = NULL, file_events = artifact_files.file_events || excluded.file_events"
);

/// `, col = CASE WHEN artifact_files.removed_sequence IS NULL THEN artifact_files.col ELSE excluded.col END` for
/// each column.
macro_rules! keep_or_renew {
    ($($column:ident),*) => {
        concat!($(
            ", ", stringify!($column), " = CASE WHEN artifact_files.removed_sequence IS NULL THEN artifact_files.",
            stringify!($column), " ELSE excluded.", stringify!($column), " END"
        ),*)
    };
}
use keep_or_renew;

/// Adds to each blob of `counts` (which must exist) its number of references: one statement per run.
pub(crate) async fn add_refs_each(tx: &mut Tx, counts: &[(&str, i64)]) -> Result<(), Error> {
    for chunk in counts.chunks(REMOVALS_PER_STATEMENT) {
        let update = |backend| {
            format!(
                "UPDATE artifact_files SET refs = refs + v.column2 FROM (VALUES {}) AS v \
                 WHERE artifact_files.blake3 = v.column1",
                values_of_text_and_bigint(backend, chunk.len())
            )
        };
        artifactstore_db::execute_each!(tx, update, chunk, |q, (key, n)| q.bind(key).bind(n))?;
    }
    Ok(())
}

/// A payload's count (a size, a number of versions or days) as its column stores it.
fn int(event: &Event, n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| crate::vocab::bad_payload(&event.event_type, event.sequence, "a count out of range"))
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
