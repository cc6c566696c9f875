//! The lifecycle run: expiry of the package versions the retention policies let go, through the log.
//!
//! A run reads the policies and the versions under their prefixes, decides which versions expire (`expiry`), and
//! commits each expiry in a transaction of its own that decides again on what it reads: `v1.retention.expired`
//! (naming the policy and its rule) and `v1.package.deleted`. A run that changed anything ends with one
//! `v1.system.gc`. A dry run decides the same and commits nothing. Collection of the blobs no live version names
//! is not part of the run yet: its report's `removed` stays empty.

mod expiry;

use artifactstore_views::queries::{self, Version};
use artifactstore_views::vocab::{GcRun, PackageDeleted, RegistryEvent, RetentionChange, RetentionKind};
use chrono::{DateTime, Utc};
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
    /// The blobs it removed (collection is not part of the run yet).
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

/// Runs expiry now on `instance`, as `actor`; with `dry_run`, commits nothing.
pub async fn run(instance: &Instance, actor: &str, dry_run: bool) -> Result<Report, ApiError> {
    let now = Utc::now();
    let candidates = {
        let mut conn = instance.db.acquire().await?;
        let policies = queries::policies(&mut conn).await?;
        let mut versions: Vec<Version> = Vec::new();
        for policy in &policies {
            versions.extend(queries::versions_under(&mut conn, &policy.prefix).await?);
        }
        versions.sort_by_key(|v| v.package.package_id);
        versions.dedup_by_key(|v| v.package.package_id);
        expiry::expiring(&policies, versions, now)
    };
    let mut report = Report { dry_run, ..Report::default() };
    for (version, verdict) in candidates {
        let expired = Expired {
            name: version.package.name.clone(),
            version: version.package.version.clone(),
            policy: verdict.policy,
            rule: verdict.rule,
        };
        if dry_run || expire(instance, actor, version.package.package_id, &expired, now).await? {
            report.expired.push(expired);
        }
    }
    if !dry_run && !report.expired.is_empty() {
        let payload = GcRun { expired: report.expired.len() as u64, removed: 0, bytes: 0 };
        let event = RegistryEvent::SystemGc { run_id: Uuid::now_v7(), payload };
        let actor = actor.to_owned();
        instance
            .log
            .transact(move |wtx| {
                Box::pin(async move { artifactstore_views::record(wtx, &actor, &event).await.map_err(ApiError::from) })
            })
            .await?;
    }
    tracing::info!(dry_run, expired = report.expired.len(), "lifecycle run");
    Ok(report)
}

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
