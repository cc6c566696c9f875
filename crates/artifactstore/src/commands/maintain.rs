//! `migrate`, `replay` and `verify`: maintenance of an instance's data.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use artifactstore_db::redact_url;
use artifactstore_views::queries;

use crate::cli::{InstanceArgs, VerifyArgs};
use crate::config::InstanceConfig;
use crate::instance::{connect_and_migrate, Instance};

pub(crate) async fn migrate(args: &InstanceArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(args)?;
    connect_and_migrate(&config).await?;
    println!("migrations applied to {}", redact_url(&config.database));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn replay(args: &InstanceArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(args)?;
    let instance = Instance::open(&config).await?;
    let started = Instant::now();
    let mut report = Progress::new("replay");
    let stats = artifactstore_views::rebuild(&instance.log, |done, total| report.update(done, total))
        .await
        .context("rebuild the views")?;
    report.finish();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "replayed {} events up to sequence {} in {seconds:.2}s ({:.0} events/s); the views are rebuilt",
        stats.events,
        stats.head_sequence,
        stats.events as f64 / seconds.max(1e-9),
    );
    Ok(ExitCode::SUCCESS)
}

/// Where snapshots live in the blob store.
const SNAPSHOTS: &str = "snapshots";

/// `snapshot`: the views at the head, as canonical CBOR, into the blob store.
pub(crate) async fn snapshot(args: &InstanceArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(args)?;
    let instance = Instance::open(&config).await?;
    let snapshot = artifactstore_views::take(&instance.log).await.context("read the views")?;
    let bytes = snapshot.to_cbor()?;
    let name = format!("{SNAPSHOTS}/{}", snapshot.file_name());
    instance.store.put_object(&name, bytes.clone()).await.context("write the snapshot")?;
    println!(
        "snapshot of {} rows at sequence {} written to {}/{name} ({} bytes, blake3:{})",
        snapshot.views.rows(),
        snapshot.sequence,
        instance.store.location(),
        bytes.len(),
        blake3::hash(&bytes).to_hex()
    );
    Ok(ExitCode::SUCCESS)
}

/// `replay --from-snapshot`: the newest snapshot that matches the log, then the events after it.
pub(crate) async fn replay_from_snapshot(args: &InstanceArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(args)?;
    let instance = Instance::open(&config).await?;
    let names = instance.store.list_names(SNAPSHOTS).await.context("list snapshots")?;
    let mut chosen = None;
    for name in names.iter().rev() {
        let bytes = instance.store.get_object(&format!("{SNAPSHOTS}/{name}")).await?;
        match artifactstore_views::Snapshot::from_cbor(&bytes) {
            Ok(snapshot) if artifactstore_views::matches_log(&instance.log, &snapshot).await? => {
                chosen = Some((name.clone(), snapshot));
                break;
            }
            Ok(_) => eprintln!("skipping snapshot {name}: it belongs to another log or another history"),
            Err(err) => eprintln!("skipping snapshot {name}: {err}"),
        }
    }
    let Some((name, snapshot)) = chosen else {
        eprintln!("no usable snapshot; replaying from the start");
        return replay(args).await;
    };
    let started = Instant::now();
    let mut report = Progress::new("replay");
    let stats = artifactstore_views::rebuild_from(&instance.log, &snapshot, |done, total| report.update(done, total))
        .await
        .context("rebuild the views from the snapshot")?;
    report.finish();
    println!(
        "loaded snapshot {name} (sequence {}), replayed {} events up to sequence {} in {:.2}s; the views are rebuilt",
        snapshot.sequence,
        stats.events,
        stats.head_sequence,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `replay --verify`: rebuild aside (in a transaction that is rolled back) and report the differences.
pub(crate) async fn verify_views(args: &InstanceArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(args)?;
    let instance = Instance::open(&config).await?;
    let mut progress = Progress::new("replay");
    let differences = artifactstore_views::verify(&instance.log, |done, total| progress.update(done, total))
        .await
        .context("compare the views with a fresh replay")?;
    progress.finish();
    Ok(if report_views(&differences) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `gc`: a lifecycle run now, as `artifactstore-gc`; the report on standard output.
pub(crate) async fn gc(args: &crate::cli::GcArgs) -> anyhow::Result<ExitCode> {
    let config = InstanceConfig::resolve(&args.instance)?;
    let instance = Instance::open(&config).await?;
    let report = crate::lifecycle::run(&instance, "artifactstore-gc", args.dry_run)
        .await
        .map_err(|err| anyhow::anyhow!("the run failed: {} ({}): {}", err.code(), err.status(), err.detail()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if report.dry_run { "would expire" } else { "expired" };
    println!("{verb} {} version(s)", report.expired.len());
    for expired in &report.expired {
        println!("  {}@{}  policy {}: {}", expired.name, expired.version, expired.policy, expired.rule);
    }
    if !report.untagged.is_empty() {
        let verb = if report.dry_run { "would delete" } else { "deleted" };
        println!("{verb} {} OCI manifest(s) nothing keeps alive", report.untagged.len());
        for manifest in &report.untagged {
            println!("  {}@{}", manifest.repository, manifest.digest);
        }
    }
    let verb = if report.dry_run { "would remove" } else { "removed" };
    println!("{verb} {} blob(s), {} bytes", report.removed.len(), report.bytes);
    for removed in &report.removed {
        println!("  {}  {} bytes", removed.digest, removed.size);
    }
    Ok(ExitCode::SUCCESS)
}

fn report_views(differences: &[artifactstore_views::Difference]) -> bool {
    if differences.is_empty() {
        println!("views: ok, equal to a fresh replay of the log");
        return true;
    }
    println!("views: {} difference(s) from a fresh replay of the log", differences.len());
    for difference in differences {
        println!("  {difference}");
    }
    println!("  (`artifactstore replay` rebuilds the views from the log)");
    false
}

/// What `verify --blobs` found.
#[derive(Debug, serde::Serialize)]
struct BlobReport {
    checked: usize,
    /// Missing, corrupt or unreadable blobs, and blobs named but never ingested.
    faults: Vec<String>,
    /// Removed blobs whose bytes the next gc run deletes.
    deleting: usize,
    /// Stored blobs no event names.
    orphans: Vec<String>,
}

/// Checks every blob the views know against the store, and lists what the store holds that no event names.
/// Faults are missing or corrupt blobs; orphans are reported, not faults.
async fn verify_blobs(instance: &Instance) -> anyhow::Result<BlobReport> {
    let (files, named, deleting) = {
        let mut conn = instance.db.acquire().await?;
        let deleting = crate::lifecycle::pending(&mut conn, i64::MAX).await?;
        (queries::all_blobs(&mut conn).await?, queries::missing_blobs(&mut conn).await?, deleting)
    };
    let stored: std::collections::HashMap<String, u64> =
        instance.store.list_blobs().await.context("list the blob store")?.into_iter().collect();
    let mut faults = Vec::new();
    let mut progress = Progress::new("blobs");
    let total = files.len() as u64;
    for (i, file) in files.iter().enumerate() {
        progress.update(i as u64, total);
        let hex = file.blake3.trim_start_matches("blake3:");
        let size = u64::try_from(file.size).unwrap_or(0);
        match stored.get(hex) {
            None => faults.push(format!("{}: missing from the store", file.blake3)),
            Some(&have) if have != size => {
                faults.push(format!("{}: {have} bytes stored, {size} recorded", file.blake3));
            }
            Some(_) => match instance.store.digest_of(hex, size).await {
                Ok(digest) if digest.blake3.to_string() == file.blake3 && digest.sha256.to_string() == file.sha256 => {}
                Ok(digest) => faults.push(format!(
                    "{}: corrupt, the stored bytes hash to {} and {}",
                    file.blake3, digest.blake3, digest.sha256
                )),
                Err(err) => faults.push(format!("{}: unreadable: {err}", file.blake3)),
            },
        }
    }
    progress.finish();
    for blake3 in &named {
        faults.push(format!("{blake3}: named by a package but never ingested"));
    }
    // Removed blobs whose bytes are still to be deleted are neither faults nor orphans: the next gc run deletes them.
    let known: std::collections::HashSet<&str> = files
        .iter()
        .map(|f| f.blake3.as_str())
        .chain(deleting.iter().map(String::as_str))
        .map(|blake3| blake3.trim_start_matches("blake3:"))
        .collect();
    let mut orphans: Vec<String> =
        stored.keys().filter(|hex| !known.contains(hex.as_str())).map(|hex| format!("blake3:{hex}")).collect();
    orphans.sort();
    Ok(BlobReport { checked: files.len(), faults, deleting: deleting.len(), orphans })
}

/// Prints what `verify --blobs` found; gives whether nothing is missing or corrupt.
fn print_blobs(report: &BlobReport) -> bool {
    if report.faults.is_empty() {
        println!("blobs: ok, {} checked against both digests", report.checked);
    } else {
        println!("blobs: {} fault(s) in {} blobs", report.faults.len(), report.checked);
        for fault in &report.faults {
            println!("  {fault}");
        }
    }
    if report.deleting > 0 {
        println!("removed: {} blob(s) whose bytes the next gc run deletes", report.deleting);
    }
    if !report.orphans.is_empty() {
        println!(
            "orphans: {} stored blob(s) named by no event (left by interrupted commits; safe to collect)",
            report.orphans.len()
        );
        for orphan in &report.orphans {
            println!("  {orphan}");
        }
    }
    report.faults.is_empty()
}

pub(crate) async fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let check_blobs = args.blobs;
    let json = args.json;
    let args = &args.instance;
    let config = InstanceConfig::resolve(args)?;
    let instance = Instance::open(&config).await?;
    let mut chain_progress = Progress::new("chain");
    let chain = instance
        .log
        .verify_chain(|done, total| chain_progress.update(done, total))
        .await
        .context("check the hash chain")?;
    chain_progress.finish();
    let mut view_progress = Progress::new("views");
    let differences = artifactstore_views::verify(&instance.log, |done, total| view_progress.update(done, total))
        .await
        .context("compare the views with a fresh replay")?;
    view_progress.finish();

    let blobs = if check_blobs { Some(verify_blobs(&instance).await?) } else { None };
    let blobs_ok = blobs.as_ref().is_none_or(|report| report.faults.is_empty());
    let ok = chain.is_ok() && differences.is_empty() && blobs_ok;
    let head = chain.head_sequence;
    if json {
        let report = serde_json::json!({
            "ok": ok,
            "chain": {
                "ok": chain.is_ok(),
                "events": chain.events_checked,
                "head": head,
                "faults": chain.faults.iter().map(|f| serde_json::json!({"sequence": f.sequence, "problem": f.problem.to_string()})).collect::<Vec<_>>(),
            },
            "views": {
                "ok": differences.is_empty(),
                "differences": differences.iter().map(ToString::to_string).collect::<Vec<_>>(),
            },
            "blobs": blobs,
        });
        println!("{report}");
    } else {
        if chain.is_ok() {
            println!("chain: ok, {} events, head {head}", chain.events_checked);
        } else {
            println!("chain: {} fault(s) in {} events, head {head}", chain.faults.len(), chain.events_checked);
            for fault in &chain.faults {
                println!("  event {}: {}", fault.sequence, fault.problem);
            }
        }
        report_views(&differences);
        if let Some(report) = &blobs {
            print_blobs(report);
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Progress lines on standard error: rewritten in place on a terminal, one every few seconds otherwise.
struct Progress {
    what: &'static str,
    terminal: bool,
    started: Instant,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(what: &'static str) -> Self {
        let now = Instant::now();
        Self { what, terminal: std::io::stderr().is_terminal(), started: now, last: now, shown: false }
    }

    fn update(&mut self, done: u64, total: u64) {
        let every = if self.terminal { 0.1 } else { 5.0 };
        if self.last.elapsed().as_secs_f64() < every {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta = if rate > 0.0 { total.saturating_sub(done) as f64 / rate } else { 0.0 };
        let line = format!("{}: {done}/{total} events, {rate:.0}/s, about {eta:.0}s left", self.what);
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    fn finish(&self) {
        if self.terminal && self.shown {
            eprintln!();
        }
    }
}
