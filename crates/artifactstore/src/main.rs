//! The `artifactstore` binary: parses the command line and runs one verb.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc returns freed pages to the system within milliseconds, so the memory a burst of large manifests or feed
/// pages took is given back; the system allocator keeps most of it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = artifactstore::cli::Cli::parse();
    artifactstore::commands::init_tracing(cli.log.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(artifactstore::commands::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
