//! One database handle over SQLite or PostgreSQL.
#![doc = include_str!("../README.md")]

mod database;
mod error;
mod macros;
mod tx;

pub use database::{redact_url, Backend, CheckpointStats, ConnectOptions, Database};
pub use error::Error;
pub use tx::{AsExec, Conn, Exec, Tx};

#[doc(hidden)]
pub use sqlx;
