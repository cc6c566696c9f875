//! `migrate`, `replay` and `verify`: maintenance of an instance's data.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use artifactstore_db::redact_url;

use crate::cli::InstanceArgs;
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

pub(crate) async fn verify(args: &InstanceArgs) -> anyhow::Result<ExitCode> {
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

    let head = chain.head_sequence;
    if chain.is_ok() {
        println!("chain: ok, {} events, head {head}", chain.events_checked);
    } else {
        println!("chain: {} fault(s) in {} events, head {head}", chain.faults.len(), chain.events_checked);
        for fault in &chain.faults {
            println!("  event {}: {}", fault.sequence, fault.problem);
        }
    }
    if differences.is_empty() {
        println!("views: ok, equal to a fresh replay of the log");
    } else {
        println!("views: {} difference(s) from a fresh replay of the log", differences.len());
        for difference in &differences {
            println!("  {difference}");
        }
        println!("  (`artifactstore replay` rebuilds the views from the log)");
    }
    Ok(if chain.is_ok() && differences.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
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
