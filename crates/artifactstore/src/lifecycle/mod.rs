//! The lifecycle run: expiry of the package versions the retention policies let go, through the log.
//!
//! A run reads the policies and the versions under their prefixes, decides which versions expire (`expiry`), and
//! commits each expiry in a transaction of its own that decides again on what it reads: `v1.retention.expired`
//! (naming the policy and its rule) and `v1.package.deleted`. A run that changed anything ends with one
//! `v1.system.gc`. A dry run decides the same and commits nothing. Then collection (`collect`) removes the blobs
//! no live version has named for the grace time. Before it, OCI manifests nothing keeps alive go (`untagged`).

mod collect;
mod expiry;
mod untagged;

pub(crate) use collect::{pending, renew_removed};
pub use untagged::Untagged;

use artifactstore_db::{fetch_one, Backend, Tx};
use artifactstore_views::queries::{self, Version};
use artifactstore_views::vocab::{GcRun, PackageDeleted, RegistryEvent, RetentionChange, RetentionKind};
use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;
use uuid::Uuid;

use crate::instance::Instance;
use crate::problem::ApiError;

/// What a run did, or with `dry_run`, would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether the run only looked.
    pub dry_run: bool,
    /// The versions it expired, oldest of each package first.
    pub expired: Vec<Expired>,
    /// The OCI manifests it deleted because nothing kept them alive (absent when there were none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untagged: Vec<Untagged>,
    /// The blobs it removed, by digest.
    pub removed: Vec<Removed>,
    /// The bytes of the removed blobs.
    pub bytes: u64,
}

/// One expired version: which, and the policy and rule that let it go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expired {
    /// The package name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The governing policy.
    pub policy: String,
    /// The rule that let it go, in words.
    pub rule: String,
}

/// One removed blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Its `blake3:` digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Runs expiry, then collection, now on `instance`, as `actor`; with `dry_run`, commits nothing and reports the
/// same. One run at a time per database: another run in progress makes this one answer `409 gc_running`.
pub async fn run(instance: &Instance, actor: &str, dry_run: bool) -> Result<Report, ApiError> {
    let Some(turn) = Turn::take(instance).await? else {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "gc_running",
            "Collection running",
            "another lifecycle run is in progress on this database; try again when it ends",
        ));
    };
    let result = run_in_turn(instance, actor, dry_run).await;
    turn.end().await;
    result
}

async fn run_in_turn(instance: &Instance, actor: &str, dry_run: bool) -> Result<Report, ApiError> {
    let now = Utc::now();
    let started = std::time::Instant::now();
    let candidates = {
        let mut conn = instance.db.acquire().await?;
        let policies = queries::policies(&mut conn).await?;
        // Each policy's candidates; a version under several prefixes is judged once, by the policy governing it.
        let mut ranked: Vec<(Version, usize)> = Vec::new();
        for policy in policies.iter().filter(|p| p.keep_last.is_some() || p.keep_days.is_some()) {
            let keep = policy.keep_last.unwrap_or(0);
            let found = queries::expiry_candidates(&mut conn, &policy.prefix, keep).await?;
            ranked.extend(found.into_iter().map(|(v, newer)| (v, usize::try_from(newer).unwrap_or(usize::MAX))));
        }
        ranked.sort_by_key(|(v, _)| v.package.package_id);
        ranked.dedup_by_key(|(v, _)| v.package.package_id);
        expiry::expiring_ranked(&policies, ranked, now)
    };
    let mut report = Report { dry_run, ..Report::default() };
    let mut freed = Vec::new();
    let expiries: Vec<(Uuid, Expired)> = candidates
        .into_iter()
        .map(|(version, verdict)| {
            let expired = Expired {
                name: version.package.name,
                version: version.package.version,
                policy: verdict.policy,
                rule: verdict.rule,
            };
            (version.package.package_id, expired)
        })
        .collect();
    if dry_run {
        let mut conn = instance.db.acquire().await?;
        for (package_id, expired) in expiries {
            freed.extend(queries::version_files(&mut conn, package_id).await?.into_iter().map(|file| file.blake3));
            report.expired.push(expired);
        }
    } else {
        // Each expiry is a transaction of its own; several wait at once, so the log commits them in groups.
        let results: Vec<(bool, Expired)> = futures::stream::iter(expiries)
            .map(|(package_id, expired)| async move {
                let done = expire(instance, actor, package_id, &expired, now).await?;
                Ok::<_, ApiError>((done, expired))
            })
            .buffered(EXPIRIES_AT_ONCE)
            .try_collect()
            .await?;
        report.expired.extend(results.into_iter().filter_map(|(done, expired)| done.then_some(expired)));
    }
    let expiry_took = started.elapsed();
    let grace = instance.config.gc_grace;
    let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let manifest_cutoff = Utc::now().timestamp_millis().saturating_sub(grace_ms);
    report.untagged = if dry_run {
        untagged::preview(instance, manifest_cutoff).await?
    } else {
        untagged::prune(instance, actor, manifest_cutoff).await?
    };
    // The cutoff is taken after the expiries and manifest deletions committed, so with no grace their blobs go in
    // this run too.
    let cutoff_ms = Utc::now().timestamp_millis().saturating_sub(grace_ms);
    report.removed = if dry_run {
        let freed = if grace.is_zero() { freed } else { Vec::new() };
        collect::preview(instance, cutoff_ms, freed).await?
    } else {
        collect::collect(instance, actor, cutoff_ms).await?
    };
    report.removed.sort_by(|a, b| a.digest.cmp(&b.digest));
    report.bytes = report.removed.iter().map(|r| r.size).sum();
    if !dry_run && (!report.expired.is_empty() || !report.untagged.is_empty() || !report.removed.is_empty()) {
        let payload = GcRun {
            expired: report.expired.len() as u64,
            untagged: report.untagged.len() as u64,
            removed: report.removed.len() as u64,
            bytes: report.bytes,
        };
        let event = RegistryEvent::SystemGc { run_id: Uuid::now_v7(), payload };
        let actor = actor.to_owned();
        instance
            .log
            .transact(move |wtx| {
                Box::pin(async move { artifactstore_views::record(wtx, &actor, &event).await.map_err(ApiError::from) })
            })
            .await?;
    }
    tracing::info!(
        dry_run,
        expired = report.expired.len(),
        untagged = report.untagged.len(),
        removed = report.removed.len(),
        bytes = report.bytes,
        expiry_ms = expiry_took.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "lifecycle run"
    );
    Ok(report)
}

/// Expiry transactions waiting at once, for the log to commit together.
const EXPIRIES_AT_ONCE: usize = 32;

/// A run's turn: on PostgreSQL a transaction holding an advisory lock of this schema (released when it ends, also
/// if the process dies); on SQLite the instance's own mutex.
struct Turn {
    tx: Option<Tx>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Turn {
    async fn take(instance: &Instance) -> Result<Option<Turn>, ApiError> {
        let Ok(guard) = instance.lifecycle.clone().try_lock_owned() else {
            return Ok(None);
        };
        if instance.db.backend() == Backend::Sqlite {
            return Ok(Some(Turn { tx: None, _guard: guard }));
        }
        let mut tx = instance.db.begin_read().await?;
        let (taken,): (bool,) = fetch_one!(
            &mut tx,
            (bool,),
            "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
            TURN_LOCK_CLASS
        )?;
        if !taken {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(Turn { tx: Some(tx), _guard: guard }))
    }

    async fn end(self) {
        if let Some(tx) = self.tx {
            if let Err(err) = tx.rollback().await {
                tracing::warn!(error = %err, "ending the lifecycle run's lock failed; the connection drops it");
            }
        }
    }
}

/// The first key of the lifecycle run's advisory lock (the second is the schema's hash).
const TURN_LOCK_CLASS: i32 = 0x6763_0001;

/// Expires one version in a transaction of its own, if what the transaction reads still lets it go (a hold set, a
/// version deleted or published, or a policy changed meanwhile is seen); says whether it did.
async fn expire(
    instance: &Instance,
    actor: &str,
    package_id: Uuid,
    expired: &Expired,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let (actor, expired) = (actor.to_owned(), expired.clone());
    instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                let policies = queries::policies(wtx.tx()).await?;
                let versions = queries::versions(wtx.tx(), &expired.name).await?;
                let Some(position) = versions.iter().position(|v| v.package.package_id == package_id) else {
                    return Ok(false);
                };
                let newer = versions.len() - 1 - position;
                let Some(verdict) = expiry::verdict(&policies, &versions[position], newer, now) else {
                    return Ok(false);
                };
                if verdict.policy != expired.policy || verdict.rule != expired.rule {
                    return Ok(false);
                }
                let retention = RegistryEvent::Retention {
                    kind: RetentionKind::Expired,
                    payload: RetentionChange {
                        package_id: package_id.to_string(),
                        reason: Some(format!("expired: {}", expired.policy)),
                        name: Some(expired.name.clone()),
                        version: Some(expired.version.clone()),
                        policy: Some(expired.policy.clone()),
                        rule: Some(expired.rule.clone()),
                        ..RetentionChange::default()
                    },
                };
                artifactstore_views::record(wtx, &actor, &retention).await?;
                let deleted = RegistryEvent::PackageDeleted {
                    package_id,
                    payload: PackageDeleted {
                        name: expired.name,
                        version: expired.version,
                        reason: Some(format!("expired: {}", expired.policy)),
                    },
                };
                artifactstore_views::record(wtx, &actor, &deleted).await?;
                Ok::<_, ApiError>(true)
            })
        })
        .await
}
