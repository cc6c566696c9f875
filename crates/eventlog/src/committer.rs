//! Group commit: one task runs every waiting unit of work in one transaction.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use artifactstore_db::{Conn, Database};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::write_tx::{next_validated, Validated};
use crate::{store, Error, Event, Head, WriteTx};

/// Hands a finished unit of work the outcome of the transaction it ran in.
pub(crate) type Deliver = Box<dyn FnOnce(Result<(), Arc<Error>>) + Send>;

/// What a unit of work left behind: whether it succeeded, and how to tell its caller.
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    /// Succeeded, or failed leaving nothing behind (what an unfenced unit must do; see `Job::Unit`).
    pub(crate) left_nothing: bool,
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

/// What waits for the committer.
pub(crate) enum Job {
    /// A plain append: only data, so a group of nothing but appends can be written in one checked statement.
    Append {
        /// The event to append, checked and hashed by the caller's task.
        event: Validated,
        /// Where the appended event (or the error) goes once the group is durable.
        reply: oneshot::Sender<Result<Event, Error>>,
    },
    /// Code that runs in the shared transaction; a group fences it with a savepoint, since it may fail after writing.
    Unit {
        /// Runs the work in the shared transaction.
        run: Run,
        /// Whether a failure may leave changes behind. A unit that runs one statement and fails only when that
        /// statement does needs no fence on SQLite, which undoes a failed statement's changes itself.
        fence: bool,
        /// Tells the caller the work will never complete.
        abort: Box<dyn FnOnce(Failure) + Send>,
    },
}

impl Job {
    /// Tells the caller the job will never complete.
    fn abort(self, failure: Failure) {
        match self {
            Job::Append { reply, .. } => {
                let err = match failure {
                    Failure::Panicked => Error::WorkPanicked,
                    Failure::Batch(err) => Error::Batch(err),
                };
                let _ = reply.send(Err(err));
            }
            Job::Unit { abort, .. } => abort(failure),
        }
    }
}

const SAVEPOINT: &str = "unit_of_work";

/// Runs until every sender is gone: takes all waiting jobs, runs them in one transaction, commits once.
///
/// A group of nothing but appends, on top of a head this committer already knows, skips the transaction: it goes out
/// as one statement that checks the head is unchanged (ADR 0011). If another writer moved the head meanwhile, nothing
/// was written and the group runs the ordinary way.
pub(crate) async fn run(
    db: Database,
    mut queue: mpsc::Receiver<Job>,
    head: watch::Sender<Head>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    // The head as this committer last committed or read it under lock.
    let mut known: Option<Head> = None;
    // The connection the committer writes on, kept between groups on SQLite: the pool pings each connection given
    // back to it, a round trip per group. Dropped after a failure; the next group takes a fresh one.
    let mut kept: Option<Conn> = None;
    loop {
        let received = tokio::select! {
            received = queue.recv_many(&mut jobs, max_batch) => received,
            // `Database::close` waits for every connection: give the kept one back.
            () = db.closed(), if kept.is_some() => {
                kept = None;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let batch = std::mem::take(&mut jobs);
        let answered = batch.len();
        counters.units.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let all_appends = batch.iter().all(|job| matches!(job, Job::Append { .. }));
        let outcome = match known {
            Some(from) if all_appends => match append_only(&db, &mut kept, from, batch, &counters).await {
                Ok(Checked::Written(done)) => Ok(done),
                Ok(Checked::Moved(batch)) => {
                    counters.moved.fetch_add(1, Ordering::Relaxed);
                    run_batch(&db, &mut kept, batch).await
                }
                Err(err) => Err(err),
            },
            _ => run_batch(&db, &mut kept, batch).await,
        };
        match outcome {
            Ok(Some((new_head, appended))) => {
                known = Some(new_head);
                if appended > 0 {
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
            }
            Ok(None) => {}
            Err(err) => {
                known = None;
                tracing::warn!(error = %err, "a group of writes failed as a whole");
            }
        }
        gather(&queue, answered).await;
    }
}

/// At most this many times the committer lets answered callers run before it takes the next group.
const GATHER_YIELDS: usize = 8;

/// Lets the callers of the group just answered run before the next group is taken, so that the many who queue
/// their next write at once go in it instead of the group after: a group costs one durable commit whatever its size.
/// Yields once, then again while the turn before brought more jobs and fewer wait than the group had, at most
/// `GATHER_YIELDS` times. When nobody comes back at once (callers answering over HTTP), that is the one turn.
async fn gather(queue: &mpsc::Receiver<Job>, answered: usize) {
    let mut waiting = queue.len();
    for _ in 0..GATHER_YIELDS {
        tokio::task::yield_now().await;
        let now = queue.len();
        if now >= answered || now == waiting {
            break;
        }
        waiting = now;
    }
}

/// What a checked group append did.
enum Checked {
    /// Written (or nothing to write): the head after it, and how many events it appended.
    Written(Option<(Head, u64)>),
    /// The head had moved: nothing was written, and these jobs are to run the ordinary way.
    Moved(Vec<Job>),
}

/// Appends a group of plain appends on top of `from` in one statement that checks the head is still `from`.
async fn append_only(
    db: &Database,
    kept: &mut Option<Conn>,
    from: Head,
    batch: Vec<Job>,
    counters: &Counters,
) -> Result<Checked, Arc<Error>> {
    let mut to = from;
    let mut events = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        let Job::Append { event, reply } = job else {
            // The caller sends only appends; anything else is refused rather than dropped.
            job.abort(Failure::Batch(Arc::new(Error::Corrupt("not an append".into()))));
            continue;
        };
        events.push(next_validated(&mut to, event));
        replies.push(reply);
    }
    if events.is_empty() {
        return Ok(Checked::Written(Some((from, 0))));
    }
    let written = match connection(db, kept).await {
        Ok(mut conn) => {
            let written = store::append_group(&mut conn, &from, &to, &events).await;
            if written.is_ok() {
                keep(db, kept, conn);
            }
            written
        }
        Err(err) => Err(err),
    };
    match written {
        Ok(true) => {
            // Counted before anyone hears back, so a caller's next look at the stats includes its own group.
            counters.checked.fetch_add(1, Ordering::Relaxed);
            let appended = events.len() as u64;
            for (event, reply) in events.into_iter().zip(replies) {
                let _ = reply.send(Ok(event));
            }
            Ok(Checked::Written(Some((to, appended))))
        }
        Ok(false) => Ok(Checked::Moved(
            events
                .into_iter()
                .zip(replies)
                .map(|(event, reply)| Job::Append { event: Validated::again(event), reply })
                .collect(),
        )),
        Err(err) => {
            let err = Arc::new(err);
            for reply in replies {
                let _ = reply.send(Err(Error::Batch(err.clone())));
            }
            Err(err)
        }
    }
}

/// Running totals of the committer's work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) units: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) checked: AtomicU64,
    pub(crate) moved: AtomicU64,
}

/// Runs one group of jobs in one transaction; returns the head it committed and how many events it appended, or
/// `None` if every job failed and nothing was committed.
async fn run_batch(db: &Database, kept: &mut Option<Conn>, jobs: Vec<Job>) -> Result<Option<(Head, u64)>, Arc<Error>> {
    let mut delivers = Vec::with_capacity(jobs.len());
    let fail_all = |delivers: Vec<Deliver>, err: Arc<Error>| {
        for deliver in delivers {
            deliver(Err(err.clone()));
        }
        err
    };
    let wtx = match connection(db, kept).await {
        Ok(conn) => WriteTx::begin_on(conn).await,
        Err(err) => Err(err),
    };
    let mut wtx = match wtx {
        Ok(wtx) => wtx,
        Err(err) => {
            let err = Arc::new(err);
            abort_all(jobs.into_iter(), &err);
            return Err(err);
        }
    };
    let grouped = jobs.len() > 1;
    // PostgreSQL aborts the whole transaction when a statement fails: every unit there needs its savepoint.
    let single_statements_atomic = db.backend() == artifactstore_db::Backend::Sqlite;
    // A unit that succeeded leaves its savepoint open: the next unit's fence releases it in the same round trip
    // that opens its own, and the commit ends whatever is still open.
    let mut open = false;
    let mut any_ok = false;
    let mut remaining = jobs.into_iter();
    while let Some(job) = remaining.next() {
        let (run, abort, fenced, unfenced_statement) = match job {
            Job::Append { event, reply } => {
                // Nothing is written until the commit, and the event was checked before it was queued: no savepoint.
                let event = wtx.append_validated(event);
                any_ok = true;
                delivers.push(Box::new(move |committed: Result<(), Arc<Error>>| {
                    let _ = reply.send(committed.map(|()| event).map_err(Error::Batch));
                }) as Deliver);
                continue;
            }
            Job::Unit { run, abort, fence } => {
                let unfenced_statement = grouped && !fence && single_statements_atomic;
                (run, abort, grouped && !unfenced_statement, unfenced_statement)
            }
        };
        let mark = wtx.mark();
        if fenced {
            // Events pushed so far stay in memory until the commit: a savepoint need not cover them, and a unit
            // rolled back forgets only its own (`reset` below).
            let fence = match open {
                true => wtx.tx().renew_savepoint(SAVEPOINT).await.map_err(Error::from),
                false => wtx.tx().savepoint(SAVEPOINT).await.map_err(Error::from),
            };
            open = false;
            if let Err(err) = fence {
                let err = Arc::new(err);
                abort(Failure::Batch(err.clone()));
                abort_all(remaining, &err);
                // Ended here rather than by dropping: the connection is not left holding the write lock.
                let _ = wtx.rollback().await;
                return Err(fail_all(delivers, err));
            }
        }
        let outcome = AssertUnwindSafe(run(&mut wtx)).catch_unwind().await;
        let ok = matches!(&outcome, Ok(o) if o.ok);
        let left_nothing = matches!(&outcome, Ok(o) if o.left_nothing);
        match outcome {
            Ok(outcome) => delivers.push(outcome.deliver),
            Err(_) => abort(Failure::Panicked),
        }
        if unfenced_statement && !left_nothing {
            // An unfenced unit failed after its statement may have written, and nothing can undo that alone: the
            // whole group fails, and dropping the transaction undoes all of it.
            let err = Arc::new(Error::Corrupt("a one-statement unit of work failed after writing".into()));
            abort_all(remaining, &err);
            let _ = wtx.rollback().await;
            return Err(fail_all(delivers, err));
        }
        let step = match (fenced, ok) {
            (true, true) => {
                open = true;
                Ok(())
            }
            (true, false) => {
                wtx.reset(mark);
                wtx.tx().rollback_to_savepoint(SAVEPOINT).await
            }
            // Unfenced and refused: its one statement undid itself, unless SQLite ended the whole transaction (it may
            // on a full disk or an I/O error). Renewing the group's savepoint fails if so, failing the group before
            // any later statement could run outside it. This also releases a unit savepoint left open.
            (false, false) if unfenced_statement => {
                wtx.reset(mark);
                open = false;
                wtx.tx().renew_savepoint(store::GROUP_SAVEPOINT).await
            }
            // A unit alone in its group: if it failed, nothing else needs keeping and the group rolls back.
            (false, _) => Ok(()),
        };
        if let Err(err) = step {
            let err = Arc::new(Error::from(err));
            abort_all(remaining, &err);
            let _ = wtx.rollback().await;
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
    match wtx.commit_keeping().await {
        Ok((head, appended, conn)) => {
            if let Some(conn) = conn {
                keep(db, kept, conn);
            }
            for deliver in delivers {
                deliver(Ok(()));
            }
            Ok(Some((head, appended.len() as u64)))
        }
        Err(err) => Err(fail_all(delivers, Arc::new(err))),
    }
}

/// Keeps the connection a group was written on for the next group, on SQLite. A PostgreSQL connection goes back to
/// the pool, which checks it before lending it again: a server can drop an idle connection, and a kept one that
/// broke would fail the next group.
fn keep(db: &Database, kept: &mut Option<Conn>, conn: Conn) {
    if db.backend() == artifactstore_db::Backend::Sqlite {
        *kept = Some(conn);
    }
}

/// The connection to write a group on: the one kept from the group before, or a fresh one from the pool. Once the
/// database is closed the kept one is let go too, and the pool refuses.
async fn connection(db: &Database, kept: &mut Option<Conn>) -> Result<Conn, Error> {
    match kept.take() {
        Some(conn) if !db.is_closed() => Ok(conn),
        _ => Ok(db.acquire().await?),
    }
}

fn abort_all(jobs: impl Iterator<Item = Job>, err: &Arc<Error>) {
    for job in jobs {
        job.abort(Failure::Batch(err.clone()));
    }
}
