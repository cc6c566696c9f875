//! The test harness of the workspace's end-to-end tests: one [`TestApp`] builder that starts the service in-process
//! on a loopback port, request helpers over real HTTP, and helpers for the `artifactstore` binary.
//!
//! ```no_run
//! # use artifactstore_db::Backend;
//! # use artifactstore_tests::{Store, TestApp};
//! # async fn example() {
//! let Some(app) = TestApp::builder().backend(Backend::Postgres).store(Store::S3).start().await else { return };
//! let reply = app.upload_blob(b"some bytes").await;
//! assert_eq!(reply.status, 201);
//! # }
//! ```
//!
//! The tests are `feed.rs` and its neighbours in this directory, and `crates/artifactstore/tests/` (which use this
//! library as a dev-dependency, for the binary); `README.md` lists them.

mod support {
    pub(crate) mod app;
    pub(crate) mod binary;
    pub(crate) mod client;
    pub(crate) mod uploads;
}

pub use support::app::{event, Store, TestApp, TestAppBuilder, SETUPS};
pub use support::binary::{free_port, Cli, CliOutput, ServeProcess};
pub use support::client::{header_u64, problem, Client, Reply};
pub use support::uploads::{bytes, session_uuid};

/// The `artifactstore` binary of the package whose integration test expands this (only `crates/artifactstore`'s
/// own integration tests know where cargo built it).
#[macro_export]
macro_rules! cli {
    () => {
        $crate::Cli::new(env!("CARGO_BIN_EXE_artifactstore"))
    };
}
