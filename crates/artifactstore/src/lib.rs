//! The artifactstore service and command-line tool: wires the kernel crates to HTTP and the CLI.
//!
//! The binary is `src/main.rs`; this library exposes the pieces so tests can run the server in-process.

pub mod api;
pub mod archive;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
mod connections;
#[doc(hidden)]
pub mod fuzzing;
pub mod instance;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod problem;
pub mod relay;
pub mod server;
pub mod session_key;
mod uploads;
