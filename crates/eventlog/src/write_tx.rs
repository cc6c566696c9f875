//! `WriteTx`: a write transaction that can append events.

use artifactstore_db::{Conn, Database, Tx};

use crate::chain::chain_hash;
use crate::{store, Error, Event, Head, NewEvent};

/// A write transaction holding the log's head: appends get the next sequences, in order.
#[derive(Debug)]
pub struct WriteTx {
    tx: Tx,
    head: Head,
    /// Appended in this transaction, in order; their rows are inserted with the commit.
    appended: Vec<Event>,
}

/// A point to return to when one unit of work in a group fails.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    head: Head,
    appended: usize,
}

impl WriteTx {
    /// Opens a write transaction and locks the head.
    pub(crate) async fn begin(db: &Database) -> Result<WriteTx, Error> {
        let mut tx = db.begin_write().await?;
        let head = store::lock_head(&mut tx).await?;
        Ok(WriteTx { tx, head, appended: Vec::new() })
    }

    /// Opens a write transaction on a connection the caller keeps between transactions (see `commit_keeping`),
    /// and locks the head.
    pub(crate) async fn begin_on(conn: Conn) -> Result<WriteTx, Error> {
        let (tx, head) = store::begin_locked(conn).await?;
        Ok(WriteTx { tx, head, appended: Vec::new() })
    }

    /// Appends one event after everything appended so far, in this transaction: it gets its sequence and chain
    /// hash now, and its row is written with the commit, in multi-row statements with the rest of the group's (a
    /// unit rolled back to its savepoint forgets its own). Until then the event is not in the `events` table, so
    /// nothing in this transaction may look for it there; the views never do. Nothing changes if it is invalid.
    pub fn append(&mut self, new: NewEvent) -> Result<Event, Error> {
        Ok(self.append_validated(Validated::new(new)?))
    }

    /// `append` of an event already checked and hashed.
    pub(crate) fn append_validated(&mut self, validated: Validated) -> Event {
        let event = next_validated(&mut self.head, validated);
        self.appended.push(event.clone());
        event
    }

    /// The database transaction, for changes that must commit together with the events.
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// The head as it will be if this transaction commits now.
    pub fn head(&self) -> Head {
        self.head
    }

    /// The events appended so far in this transaction.
    pub fn appended(&self) -> &[Event] {
        &self.appended
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark { head: self.head, appended: self.appended.len() }
    }

    /// Forgets what was appended after `mark` (the unit that appended it was rolled back to its savepoint).
    pub(crate) fn reset(&mut self, mark: Mark) {
        self.head = mark.head;
        self.appended.truncate(mark.appended);
    }

    /// Inserts the appended events (in multi-row statements), writes the new head and commits; returns the final
    /// head and the events that are now durable. Inserting only here keeps every event out of the savepoints of
    /// the units after it, whose rollback would otherwise undo it.
    pub(crate) async fn commit(self) -> Result<(Head, Vec<Event>), Error> {
        let (head, appended, _) = self.commit_keeping().await?;
        Ok((head, appended))
    }

    /// `commit`, handing back the connection of a transaction from `begin_on`.
    pub(crate) async fn commit_keeping(self) -> Result<(Head, Vec<Event>, Option<Conn>), Error> {
        let conn = store::commit_appended(self.tx, &self.head, &self.appended).await?;
        Ok((self.head, self.appended, conn))
    }

    /// Commits the transaction as it stands, without touching the head (the caller wrote it).
    pub(crate) async fn tx_commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Undoes everything this transaction did, appends included.
    pub async fn rollback(self) -> Result<(), Error> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// An event the log has checked (`NewEvent::validate`) and whose payload it has hashed: the part of an append that
/// does not depend on the head. `EventLog::append` does it on the caller's task, before queueing, so the committer,
/// which every append waits for in turn, only numbers and chains.
#[derive(Debug)]
pub(crate) struct Validated {
    new: NewEvent,
    payload_digest: [u8; 32],
}

impl Validated {
    /// Checks `new` and hashes its payload.
    pub(crate) fn new(new: NewEvent) -> Result<Validated, Error> {
        new.validate()?;
        let payload_digest = *blake3::hash(&new.payload).as_bytes();
        Ok(Validated { new, payload_digest })
    }

    /// An event numbered once already, to be numbered again on another head (its group found the head moved).
    pub(crate) fn again(event: Event) -> Validated {
        let payload_digest = event.payload_digest;
        Validated { new: NewEvent::from(event), payload_digest }
    }
}

/// Gives a validated event the sequence and chain hash that follow `head`, and moves `head` on past it.
pub(crate) fn next_validated(head: &mut Head, validated: Validated) -> Event {
    let Validated { new, payload_digest } = validated;
    let mut event = Event {
        sequence: head.sequence + 1,
        created_at: crate::event::now(),
        event_type: new.event_type,
        subject_kind: new.subject_kind,
        subject_id: new.subject_id,
        actor: new.actor,
        payload_digest,
        payload: new.payload,
        chain_hash: [0; 32],
    };
    event.chain_hash = chain_hash(&head.chain_hash, &event);
    head.sequence = event.sequence;
    head.chain_hash = event.chain_hash;
    event
}
