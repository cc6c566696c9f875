//! `Broadcaster`: one reader of the log per process that hands every committed event to every live subscriber.
//!
//! The pump follows the head (`EventLog::subscribe`), which moves only after a commit is durable (or, on
//! PostgreSQL, when another instance's commit is seen), reads the new events from the database once, and offers
//! each to every subscriber's bounded channel. A subscriber whose channel is full is dropped on the spot and
//! counted: it resumes from its last sequence by reading the database, so falling behind never costs the server
//! memory and never loses an event.
//!
//! Hand-over without gap or duplicate: `subscribe` records the position the pump has delivered up to, under the
//! same lock the pump holds while delivering. The subscriber reads the database up to that position and then takes
//! the channel, which starts right after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{Event, EventLog, Filter};

/// Events read from the database per round trip by the pump.
const PUMP_BATCH: u32 = 1_000;

#[derive(Debug, Default)]
struct State {
    /// Every event up to this sequence has been offered to the subscribers of its time.
    position: u64,
    subscribers: HashMap<u64, mpsc::Sender<Arc<Event>>>,
    next_id: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    capacity: usize,
    cut: AtomicU64,
    delivered: AtomicU64,
}

/// Fans committed events out to live subscribers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Broadcaster {
    shared: Arc<Shared>,
}

/// Counters of a broadcaster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastStats {
    /// Subscribers connected now.
    pub subscribers: u64,
    /// Subscribers dropped since start because their buffer was full.
    pub cut: u64,
    /// The last sequence offered to subscribers.
    pub position: u64,
    /// Events handed to subscriber buffers since start.
    pub delivered: u64,
}

/// A live subscription: events after `start`, in order, until the channel closes (the subscriber was too slow,
/// or the broadcaster stopped).
#[derive(Debug)]
pub struct Subscription {
    /// The sequence after which the channel begins; read the database up to it first.
    pub start: u64,
    /// The live events.
    pub events: mpsc::Receiver<Arc<Event>>,
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.shared.state).subscribers.remove(&self.id);
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Broadcaster {
    /// Starts the pump on `log`, beginning after the current head; each subscriber may lag `capacity` events.
    ///
    /// Must be called inside a tokio runtime; the pump stops when every clone of the broadcaster is dropped.
    pub fn start(log: EventLog, capacity: usize) -> Broadcaster {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { position: log.head().sequence, ..State::default() }),
            capacity: capacity.max(1),
            cut: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        tokio::spawn(pump(log, Arc::downgrade(&shared)));
        Broadcaster { shared }
    }

    /// Subscribes to every event after the pump's current position.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(self.shared.capacity);
        let mut state = lock(&self.shared.state);
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.insert(id, tx);
        Subscription { start: state.position, events: rx, id, shared: self.shared.clone() }
    }

    /// What the broadcaster has done so far.
    pub fn stats(&self) -> BroadcastStats {
        let state = lock(&self.shared.state);
        BroadcastStats {
            subscribers: state.subscribers.len() as u64,
            cut: self.shared.cut.load(Ordering::Relaxed),
            position: state.position,
            delivered: self.shared.delivered.load(Ordering::Relaxed),
        }
    }
}

async fn pump(log: EventLog, shared: std::sync::Weak<Shared>) {
    let mut heads = log.subscribe();
    loop {
        let target = heads.borrow_and_update().sequence;
        loop {
            let Some(shared) = shared.upgrade() else { return };
            let position = lock(&shared.state).position;
            if position >= target {
                break;
            }
            let events = match log.read(position, target, PUMP_BATCH, &Filter::default()).await {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(error = %err, "the event broadcaster could not read the log; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if events.is_empty() {
                // The head moved but the events are not visible yet (another instance's commit): look again soon.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let mut state = lock(&shared.state);
            for event in events {
                if event.sequence <= state.position {
                    continue;
                }
                let event = Arc::new(event);
                let mut delivered = 0;
                state.subscribers.retain(|_, tx| match tx.try_send(event.clone()) {
                    Ok(()) => {
                        delivered += 1;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        shared.cut.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
                shared.delivered.fetch_add(delivered, Ordering::Relaxed);
                state.position = event.sequence;
            }
        }
        if heads.changed().await.is_err() {
            return;
        }
    }
}
