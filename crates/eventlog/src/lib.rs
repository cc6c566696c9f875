//! The append-only, hash-chained event log.
#![doc = include_str!("../README.md")]

mod broadcast;
mod chain;
mod committer;
mod error;
mod event;
mod log;
mod query;
mod store;
mod write_tx;

pub use broadcast::{BroadcastStats, Broadcaster, Subscription};
pub use chain::{chain_hash, ChainFault, ChainReport, EventFault, GENESIS_CHAIN_HASH};
pub use error::Error;
pub use event::{time_text, Event, Head, NewEvent, SubjectKind, MAX_ACTOR_BYTES};
pub use log::{EventLog, Filter, LogOptions, LogStats, Refused, TypeFilter};
pub use store::{lock_head, read_range, HEAD_CHANNEL};
pub use write_tx::WriteTx;
