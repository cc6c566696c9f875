//! `EventLog`: the handle the rest of the registry uses.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use artifactstore_db::{sqlx, Database, Tx};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::chain::{ChainFault, ChainReport, GENESIS_CHAIN_HASH};
use crate::committer::{self, Counters, Deliver, Failure, Job, Outcome};
use crate::write_tx::Validated;
use crate::{query, store, Error, Event, Head, NewEvent, WriteTx};

/// Tuning of the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The most units of work grouped into one transaction.
    pub max_batch: usize,
    /// How many units of work may wait for the committer before callers wait to enqueue.
    pub queue_depth: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { max_batch: 1024, queue_depth: 8192 }
    }
}

/// Which event types a read returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFilter {
    /// Exactly this type.
    Exact(String),
    /// Every type that starts with this text (`v1.package.` for `v1.package.*`).
    Prefix(String),
}

/// What a filtered read returns; the default returns everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events of this type or type prefix.
    pub event_type: Option<TypeFilter>,
    /// Only events about this kind of subject.
    pub subject_kind: Option<String>,
    /// Only events about this subject.
    pub subject_id: Option<Uuid>,
}

impl Filter {
    /// Whether `event` passes the filter (the same test `EventLog::read` applies in the database).
    pub fn matches(&self, event: &Event) -> bool {
        let type_ok = match &self.event_type {
            None => true,
            Some(TypeFilter::Exact(t)) => event.event_type == *t,
            Some(TypeFilter::Prefix(p)) => event.event_type.starts_with(p.as_str()),
        };
        type_ok
            && self.subject_kind.as_deref().is_none_or(|k| event.subject_kind.as_str() == k)
            && self.subject_id.is_none_or(|id| event.subject_id == Some(id))
    }

    /// Whether the filter lets every event through.
    pub fn is_everything(&self) -> bool {
        *self == Filter::default()
    }
}

#[derive(Debug)]
struct Inner {
    db: Database,
    queue: mpsc::Sender<Job>,
    head: watch::Sender<Head>,
    counters: Arc<Counters>,
}

/// What this instance's committer has done since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Units of work taken from the queue.
    pub units: u64,
    /// Transactions committed that appended at least one event.
    pub commits: u64,
    /// Events appended by those transactions.
    pub events: u64,
    /// Groups of plain appends written in one statement that checked the head was where this committer left it.
    pub checked: u64,
    /// Groups of plain appends that found the head moved by another writer and ran as a transaction instead.
    pub moved: u64,
}

/// The event log of one registry: appends (grouped), reads, and the head.
#[derive(Debug, Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

impl EventLog {
    /// Opens the log on a migrated database, making its genesis if it has none, and starts its committer.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn open(db: Database, options: LogOptions) -> Result<EventLog, Error> {
        let mut tx = db.begin_write().await?;
        let head = store::ensure_genesis(&mut tx).await?;
        tx.commit().await?;
        let (head_tx, _) = watch::channel(head);
        let (queue, jobs) = mpsc::channel(options.queue_depth.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(committer::run(db.clone(), jobs, head_tx.clone(), options.max_batch.max(1), counters.clone()));
        Ok(EventLog { inner: Arc::new(Inner { db, queue, head: head_tx, counters }) })
    }

    /// The database under the log.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// Runs `work` in a write transaction shared with other waiting work, and returns once that transaction is durable.
    ///
    /// There are three ways in, which differ in what the work promises and what its failure costs:
    /// - `transact`: any work. If it fails, exactly what it did is undone and its error returned; other work in the
    ///   group is unaffected.
    /// - `transact_statement`: one plain statement that appends nothing. Cheaper on SQLite (one round trip fewer).
    /// - `transact_reporting`: work whose every statement either succeeds or is refused whole, and which says, when
    ///   it fails, whether it had changed anything (`Refused`). As cheap as one statement.
    ///
    /// With the two cheaper ones, a failure the work cannot vouch for (a statement refused after others changed
    /// rows, an answer that could not be read, a panic) fails the whole group: nothing of it commits, and every unit
    /// in it gets the error. If the transaction as a whole fails to commit, every unit in it gets the error too.
    pub async fn transact<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'a> FnOnce(&'a mut WriteTx) -> BoxFuture<'a, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.enqueue(work, true, |_| true).await
    }

    /// `transact` for work that runs exactly one SQL statement (a plain `INSERT`, `UPDATE` or `DELETE`, without an
    /// `OR` conflict clause) and appends nothing. A statement the database refuses undoes its own changes and fails
    /// this work alone; any other failure, or the database ending the whole transaction (a full disk), fails the
    /// group.
    pub async fn transact_statement<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, Result<T, sqlx::Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.enqueue(on_tx(work), false, Error::is_refused).await
    }

    /// `transact` for work that says, when it fails, whether it changed anything: `Refused::Cleanly` fails this work
    /// alone; `Refused::AfterWriting`, a panic, or the database ending the whole transaction fails the group, and
    /// nothing of it commits. Events the work appended are forgotten either way.
    pub async fn transact_reporting<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'a> FnOnce(&'a mut WriteTx) -> BoxFuture<'a, Result<T, Refused<E>>> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.enqueue(work, false, |err| matches!(err, Refused::Cleanly(_))).await.map_err(Refused::into_inner)
    }

    /// Queues `work` for the committer; `undone` says whether a failure left nothing behind in the transaction
    /// (for unfenced work; fenced work is rolled back to its savepoint whatever its error).
    async fn enqueue<T, E, F>(&self, work: F, fence: bool, undone: fn(&E) -> bool) -> Result<T, E>
    where
        F: for<'a> FnOnce(&'a mut WriteTx) -> BoxFuture<'a, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, E>>();
        // Whichever of `run` and `abort` the committer calls takes the one reply.
        let reply = Arc::new(Mutex::new(Some(reply)));
        let abort_reply = reply.clone();
        let run = committer::run_fn(move |wtx| {
            Box::pin(async move {
                let result = work(wtx).await;
                let ok = result.is_ok();
                let left_nothing = result.as_ref().err().is_none_or(undone);
                let deliver: Deliver = Box::new(move |committed| {
                    let answer = match (result, committed) {
                        (Ok(value), Ok(())) => Ok(value),
                        (Ok(_), Err(err)) => Err(E::from(Error::Batch(err))),
                        (Err(err), _) => Err(err),
                    };
                    send(&reply, answer);
                });
                Outcome { ok, left_nothing, deliver }
            })
        });
        let abort = Box::new(move |failure: Failure| {
            let err = match failure {
                Failure::Panicked => Error::WorkPanicked,
                Failure::Batch(err) => Error::Batch(err),
            };
            send(&abort_reply, Err(E::from(err)));
        });
        self.inner.queue.send(Job::Unit { run, abort, fence }).await.map_err(|_| E::from(Error::Closed))?;
        answer.await.unwrap_or_else(|_| Err(E::from(Error::Closed)))
    }

    /// Appends one event on its own (grouped with other concurrent writes) and returns it once durable.
    ///
    /// A group of nothing but plain appends goes out as one statement that checks the head has not moved (one round
    /// trip); in a group with other work, its events are inserted together just before the group commits.
    pub async fn append(&self, event: NewEvent) -> Result<Event, Error> {
        // Checked and hashed here, on the caller's task: the committer only numbers and chains it.
        let event = Validated::new(event)?;
        let (reply, answer) = oneshot::channel();
        self.inner.queue.send(Job::Append { event, reply }).await.map_err(|_| Error::Closed)?;
        answer.await.unwrap_or(Err(Error::Closed))
    }

    /// Opens a write transaction outside the committer, holding the head lock until it ends.
    ///
    /// For long operations such as rebuilding the views; `commit` publishes what it appended.
    pub async fn begin(&self) -> Result<WriteTx, Error> {
        WriteTx::begin(&self.inner.db).await
    }

    /// Commits a transaction from `begin` and publishes its head.
    pub async fn commit(&self, wtx: WriteTx) -> Result<Vec<Event>, Error> {
        let (head, appended) = wtx.commit().await?;
        if !appended.is_empty() {
            self.publish(head);
        }
        Ok(appended)
    }

    /// Appends events copied from elsewhere (an archive), verbatim: each must follow the head, carry the digest of
    /// its payload and the chain hash that follows from the head's. Nothing is imported unless all of them are.
    pub async fn import(&self, events: &[Event]) -> Result<Head, Error> {
        let mut wtx = self.begin().await?;
        let mut head = wtx.head();
        for event in events {
            event
                .check(head.sequence, &head.chain_hash)
                .map_err(|fault| Error::Corrupt(format!("import: event {}: {fault}", event.sequence)))?;
            head.sequence = event.sequence;
            head.chain_hash = event.chain_hash;
        }
        store::insert_events(wtx.tx(), events).await?;
        store::write_head(wtx.tx(), &head).await?;
        wtx.tx_commit().await?;
        self.publish(head);
        Ok(head)
    }

    /// Totals of the grouped writes so far; `events / commits` is the average group size.
    pub fn stats(&self) -> LogStats {
        let c = &self.inner.counters;
        LogStats {
            units: c.units.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            checked: c.checked.load(Ordering::Relaxed),
            moved: c.moved.load(Ordering::Relaxed),
        }
    }

    /// The newest head this instance knows of, without a database round trip.
    pub fn head(&self) -> Head {
        *self.inner.head.borrow()
    }

    /// A receiver that changes whenever the head advances.
    pub fn subscribe(&self) -> watch::Receiver<Head> {
        self.inner.head.subscribe()
    }

    /// Reads the head from the database (it may include other instances' commits) and publishes it if it advanced.
    pub async fn refresh_head(&self) -> Result<Head, Error> {
        let mut conn = self.inner.db.acquire().await?;
        let head = store::read_head_in(&mut conn).await?;
        self.publish(head);
        Ok(head)
    }

    fn publish(&self, new_head: Head) {
        self.inner.head.send_if_modified(|current| {
            let advanced = new_head.sequence > current.sequence;
            if advanced {
                *current = new_head;
            }
            advanced
        });
    }

    /// Events with `after < sequence <= upto` that pass `filter`, in order, at most `limit`.
    pub async fn read(&self, after: u64, upto: u64, limit: u32, filter: &Filter) -> Result<Vec<Event>, Error> {
        let mut conn = self.inner.db.acquire().await?;
        query::read_filtered(&mut conn, &filtered(after, upto, limit, filter)).await
    }

    /// The sequence and payload size of each event `read` would give, without reading the payloads: a reader can
    /// choose how many to read, and reserve room for them, before holding any.
    pub async fn read_sizes(
        &self,
        after: u64,
        upto: u64,
        limit: u32,
        filter: &Filter,
    ) -> Result<Vec<(u64, usize)>, Error> {
        let mut conn = self.inner.db.acquire().await?;
        query::read_sizes(&mut conn, &filtered(after, upto, limit, filter)).await
    }

    /// The events with these sequences (an index kept elsewhere, such as a view, lists them), in sequence order;
    /// sequences with no event are skipped.
    pub async fn get_many(&self, sequences: &[u64]) -> Result<Vec<Event>, Error> {
        let mut conn = self.inner.db.acquire().await?;
        store::get_many(&mut conn, sequences).await
    }

    /// One event by its sequence.
    pub async fn get(&self, sequence: u64) -> Result<Option<Event>, Error> {
        let mut conn = self.inner.db.acquire().await?;
        store::get(&mut conn, sequence).await
    }

    /// The head as the database has it now.
    pub async fn read_head(&self) -> Result<Head, Error> {
        let mut conn = self.inner.db.acquire().await?;
        store::read_head_in(&mut conn).await
    }

    /// Recomputes every payload digest and chain hash from the first event to the head, on one snapshot.
    ///
    /// `progress` is called after each batch with the events checked so far and the head sequence.
    pub async fn verify_chain(&self, mut progress: impl FnMut(u64, u64)) -> Result<ChainReport, Error> {
        const BATCH: u32 = 5_000;
        const MAX_FAULTS: usize = 100;
        let mut tx = self.inner.db.begin_read().await?;
        let head = store::read_head_in(&mut tx).await?;
        let mut report = ChainReport { head_sequence: head.sequence, ..ChainReport::default() };
        let mut previous = GENESIS_CHAIN_HASH;
        let mut after = 0;
        loop {
            let events = store::read_range(&mut tx, after, BATCH).await?;
            let Some(last) = events.last() else { break };
            let last_sequence = last.sequence;
            for event in &events {
                let faults = event.faults(after, &previous);
                report
                    .faults
                    .extend(faults.iter().map(|f| ChainFault { sequence: event.sequence, problem: f.to_string() }));
                previous = event.chain_hash;
                after = event.sequence;
                report.events_checked += 1;
            }
            report.faults.truncate(MAX_FAULTS);
            progress(report.events_checked, head.sequence);
            if last_sequence >= head.sequence {
                break;
            }
        }
        if after != head.sequence {
            report.faults.push(ChainFault {
                sequence: head.sequence,
                problem: format!("the head says sequence {}, the last event is {after}", head.sequence),
            });
        } else if previous != head.chain_hash {
            report.faults.push(ChainFault {
                sequence: head.sequence,
                problem: "the head's chain_hash differs from the last event's".to_owned(),
            });
        }
        let count = store::count(&mut tx).await?;
        if count != report.events_checked {
            report.faults.push(ChainFault {
                sequence: head.sequence,
                problem: format!("the log holds {count} events but {} lie on the chain", report.events_checked),
            });
        }
        tx.rollback().await?;
        Ok(report)
    }
}

/// How work run by `EventLog::transact_reporting` failed.
#[derive(Debug)]
pub enum Refused<E> {
    /// It left nothing in the transaction: it failed before its first statement, a statement that failed undid
    /// its own changes (SQLite refused it), or its statements so far changed no row.
    Cleanly(E),
    /// A statement of it changed rows before it failed, or it cannot tell: the whole group fails.
    AfterWriting(E),
}

impl<E> Refused<E> {
    /// A failed statement: clean when the database refused it (SQLite undid its changes), otherwise (its answer
    /// could not be read, say) after writing.
    pub fn statement(err: sqlx::Error) -> Self
    where
        E: From<sqlx::Error>,
    {
        match err {
            sqlx::Error::Database(_) => Refused::Cleanly(E::from(err)),
            _ => Refused::AfterWriting(E::from(err)),
        }
    }

    /// The error itself.
    pub fn into_inner(self) -> E {
        match self {
            Refused::Cleanly(err) | Refused::AfterWriting(err) => err,
        }
    }
}

/// The log's own failures (the group's, the committer's) reach unfenced work as leaving changes behind: the safe side.
impl<E: From<Error>> From<Error> for Refused<E> {
    fn from(err: Error) -> Self {
        Refused::AfterWriting(E::from(err))
    }
}

/// Runs work written against the transaction alone as work against a `WriteTx`.
fn on_tx<T, F>(work: F) -> impl for<'a> FnOnce(&'a mut WriteTx) -> BoxFuture<'a, Result<T, Error>> + Send + 'static
where
    F: for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, Result<T, sqlx::Error>> + Send + 'static,
    T: Send + 'static,
{
    move |wtx: &mut WriteTx| -> BoxFuture<'_, Result<T, Error>> {
        Box::pin(async move { work(wtx.tx()).await.map_err(Error::Database) })
    }
}

fn send<T>(slot: &Mutex<Option<oneshot::Sender<T>>>, value: T) {
    let sender = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    if let Some(sender) = sender {
        let _ = sender.send(value);
    }
}

/// The store's form of a read of `filter`'s events in `(after, upto]`, at most `limit`.
fn filtered(after: u64, upto: u64, limit: u32, filter: &Filter) -> query::FilteredRead<'_> {
    let (exact_type, type_prefix) = match &filter.event_type {
        None => ("", ""),
        Some(TypeFilter::Exact(t)) => (t.as_str(), ""),
        Some(TypeFilter::Prefix(p)) => ("", p.as_str()),
    };
    query::FilteredRead {
        after,
        upto,
        limit,
        exact_type,
        type_prefix,
        subject_kind: filter.subject_kind.as_deref().unwrap_or(""),
        subject_id: filter.subject_id,
    }
}
