//! Helpers shared by the binary's integration tests.

use std::path::Path;
use std::process::Command;

/// Runs `artifactstore ARGS --data DATA` with no instance settings inherited from the environment; returns whether
/// it succeeded and what it printed (stdout, then stderr).
pub(crate) fn run_cli(data: &Path, args: &[&str]) -> (bool, i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_artifactstore"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("ARTIFACTSTORE_DATABASE")
        .env_remove("ARTIFACTSTORE_STORE")
        .env_remove("ARTIFACTSTORE_CONFIG")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), output.status.code().unwrap_or(-1), text)
}
