//! The `artifactstore` binary: commands run to completion, and `serve` as a process of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `artifactstore` binary, run with no `ARTIFACTSTORE_*` setting inherited from the environment. Made with
/// [`cli!`](crate::cli) in `crates/artifactstore`'s integration tests.
#[derive(Debug, Clone)]
pub struct Cli {
    program: PathBuf,
    dir: Option<PathBuf>,
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Whether it exited with success.
    pub ok: bool,
    /// Its exit code (-1 when a signal ended it).
    pub code: i32,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl CliOutput {
    /// Stdout, then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Cli {
    /// The binary at `program`.
    pub fn new(program: impl Into<PathBuf>) -> Cli {
        Cli { program: program.into(), dir: None }
    }

    /// The same binary, run in `dir`.
    pub fn in_dir(&self, dir: &Path) -> Cli {
        Cli { program: self.program.clone(), dir: Some(dir.to_path_buf()) }
    }

    /// The command `artifactstore ARGS`, to finish and run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(args);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("ARTIFACTSTORE_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// Runs `artifactstore ARGS` to completion off the runtime's threads (a server of this process keeps serving).
    pub async fn run(&self, args: &[&str]) -> CliOutput {
        let mut command = self.command(args);
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run artifactstore");
        CliOutput {
            ok: output.status.success(),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `artifactstore ARGS --data DATA`.
    pub async fn run_on(&self, data: &Path, args: &[&str]) -> CliOutput {
        let data = data.to_str().expect("a data directory named in UTF-8");
        let args: Vec<&str> = args.iter().copied().chain(["--data", data]).collect();
        self.run(&args).await
    }

    /// Starts `artifactstore serve ARGS`, listening on `127.0.0.1:PORT` when `port` is given (else where it
    /// listens by default); wait for it with [`ServeProcess::wait_ready`].
    pub fn serve(&self, port: Option<u16>, args: &[&str]) -> ServeProcess {
        let logs = tempfile::tempdir().expect("create a temporary directory");
        let log = std::fs::File::create(logs.path().join("serve.log")).expect("create the server's log");
        let mut command = self.command(&["serve"]);
        let listen = match port {
            Some(port) => {
                let listen = format!("127.0.0.1:{port}");
                command.args(["--listen", &listen]);
                listen
            }
            None => artifactstore::config::DEFAULT_LISTEN.to_owned(),
        };
        let child = command.args(args).stdout(Stdio::null()).stderr(log).spawn().expect("start artifactstore serve");
        ServeProcess { child, base: format!("http://{listen}"), logs }
    }
}

/// `artifactstore serve` running as a process of its own; killed on drop.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    logs: tempfile::TempDir,
}

impl ServeProcess {
    /// Waits until `/readyz` answers 200, at most `within`; panics with what the server printed if it exits first
    /// or does not get ready in time.
    pub async fn wait_ready(&mut self, within: Duration) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited with {status}: {}", self.stderr());
            }
            let ready = http.get(format!("{}/readyz", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if started.elapsed() > within {
                panic!("the server at {} did not become ready within {within:?}: {}", self.base, self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// What the server printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
