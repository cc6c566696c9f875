//! Group commit: one task runs every waiting unit of work in one transaction.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use artifactstore_db::Database;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use tokio::sync::{mpsc, watch};

use crate::{Error, Head, WriteTx};

/// Hands a finished unit of work the outcome of the transaction it ran in.
pub(crate) type Deliver = Box<dyn FnOnce(Result<(), Arc<Error>>) + Send>;

/// What a unit of work left behind: whether it succeeded, and how to tell its caller.
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    pub(crate) deliver: Deliver,
}

/// Why a unit of work ended without an outcome of its own.
pub(crate) enum Failure {
    /// It panicked; its changes were rolled back.
    Panicked,
    /// The transaction it was part of failed before or after it ran.
    Batch(Arc<Error>),
}

/// Runs one unit of work inside the shared transaction.
pub(crate) type Run = Box<dyn for<'a> FnOnce(&'a mut WriteTx) -> BoxFuture<'a, Outcome> + Send>;

/// Boxes a closure as a `Run`; going through this bound lets the closure's lifetimes be inferred.
pub(crate) fn run_fn<F>(f: F) -> Run
where
    F: for<'a> FnOnce(&'a mut WriteTx) -> BoxFuture<'a, Outcome> + Send + 'static,
{
    Box::new(f)
}

/// A unit of work, type-erased for the queue.
pub(crate) struct Job {
    /// Runs the work in the shared transaction.
    pub(crate) run: Run,
    /// Tells the caller the work will never complete.
    pub(crate) abort: Box<dyn FnOnce(Failure) + Send>,
    /// Whether the work may leave changes behind when it fails, so a group must fence it with a savepoint.
    /// Plain appends (`WriteTx::push`) change nothing unless they succeed and need none.
    pub(crate) savepoint: bool,
}

const SAVEPOINT: &str = "unit_of_work";

/// Runs until every sender is gone: takes all waiting jobs, runs them in one transaction, commits once.
pub(crate) async fn run(
    db: Database,
    mut queue: mpsc::Receiver<Job>,
    head: watch::Sender<Head>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut jobs, max_batch).await > 0 {
        let batch = std::mem::take(&mut jobs);
        counters.units.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match run_batch(&db, batch).await {
            Ok(Some((new_head, appended))) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.events.fetch_add(appended, Ordering::Relaxed);
                head.send_if_modified(|current| {
                    let advanced = new_head.sequence > current.sequence;
                    if advanced {
                        *current = new_head;
                    }
                    advanced
                });
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "a group of writes failed as a whole"),
        }
    }
}

/// Running totals of the committer's work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) units: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) events: AtomicU64,
}

/// Runs one group of jobs; returns the committed head and the number of events if the group appended anything.
async fn run_batch(db: &Database, jobs: Vec<Job>) -> Result<Option<(Head, u64)>, Arc<Error>> {
    let mut delivers = Vec::with_capacity(jobs.len());
    let fail_all = |delivers: Vec<Deliver>, err: Arc<Error>| {
        for deliver in delivers {
            deliver(Err(err.clone()));
        }
        err
    };
    let mut wtx = match WriteTx::begin(db).await {
        Ok(wtx) => wtx,
        Err(err) => {
            let err = Arc::new(err);
            for job in jobs {
                (job.abort)(Failure::Batch(err.clone()));
            }
            return Err(err);
        }
    };
    let grouped = jobs.len() > 1;
    let mut any_ok = false;
    let mut remaining = jobs.into_iter();
    while let Some(job) = remaining.next() {
        let mark = wtx.mark();
        let fenced = grouped && job.savepoint;
        if fenced {
            let fence = match wtx.flush().await {
                Ok(()) => wtx.tx().savepoint(SAVEPOINT).await.map_err(Error::from),
                Err(err) => Err(err),
            };
            if let Err(err) = fence {
                let err = Arc::new(err);
                (job.abort)(Failure::Batch(err.clone()));
                abort_all(remaining, &err);
                return Err(fail_all(delivers, err));
            }
        }
        let Job { run, abort, .. } = job;
        let outcome = AssertUnwindSafe(run(&mut wtx)).catch_unwind().await;
        let ok = matches!(&outcome, Ok(o) if o.ok);
        match outcome {
            Ok(outcome) => delivers.push(outcome.deliver),
            Err(_) => abort(Failure::Panicked),
        }
        let step = match (fenced, ok) {
            (true, true) => wtx.tx().release_savepoint(SAVEPOINT).await,
            (true, false) => {
                wtx.reset(mark);
                wtx.tx().rollback_to_savepoint(SAVEPOINT).await
            }
            (false, _) => Ok(()),
        };
        if let Err(err) = step {
            let err = Arc::new(Error::from(err));
            abort_all(remaining, &err);
            return Err(fail_all(delivers, err));
        }
        any_ok |= ok;
    }
    if !any_ok {
        // Every job failed: nothing to keep, and each already knows its own error.
        let _ = wtx.rollback().await;
        for deliver in delivers {
            deliver(Ok(()));
        }
        return Ok(None);
    }
    match wtx.commit().await {
        Ok((head, appended)) => {
            for deliver in delivers {
                deliver(Ok(()));
            }
            Ok((!appended.is_empty()).then_some((head, appended.len() as u64)))
        }
        Err(err) => Err(fail_all(delivers, Arc::new(err))),
    }
}

fn abort_all(jobs: impl Iterator<Item = Job>, err: &Arc<Error>) {
    for job in jobs {
        (job.abort)(Failure::Batch(err.clone()));
    }
}
