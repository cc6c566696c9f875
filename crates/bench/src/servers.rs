//! The two servers under test, each started fresh in a directory of its own on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Which registry a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// This product, over its upload sessions.
    Artifactstore = 0,
    /// The CNCF distribution registry, over the OCI upload protocol.
    Distribution = 1,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Artifactstore => "artifactstore",
            Kind::Distribution => "distribution",
        }
    }
}

/// A running server under test.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) kind: Kind,
    pub(crate) base: String,
    pub(crate) dir: PathBuf,
    pub(crate) process: Process,
}

/// A child process the harness started; killed when dropped.
#[derive(Debug)]
pub(crate) struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    pub(crate) fn new(child: Child) -> Process {
        Process(child)
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }

    /// The CPU time the process has used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(&self.0.id().to_string())
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts `artifactstore serve` on a fresh SQLite database and filesystem store under `dir`.
    pub(crate) async fn artifactstore(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
        Server::artifactstore_with(bin, dir, &[]).await
    }

    /// As `artifactstore`, with more arguments to `serve` (a `--config` file, say).
    pub(crate) async fn artifactstore_with(bin: &Path, dir: &Path, more: &[&str]) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
            .args(more)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let server = Server {
            kind: Kind::Artifactstore,
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.into(),
            process: Process(child),
        };
        server.wait_ready("/healthz").await?;
        Ok(server)
    }

    /// Starts `docker-registry serve` with filesystem storage under `dir`, no auth, quiet logs.
    pub(crate) async fn distribution(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = free_port()?;
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let server = Server {
            kind: Kind::Distribution,
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.into(),
            process: Process(child),
        };
        server.wait_ready("/v2/").await?;
        Ok(server)
    }

    async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        wait_ready(&self.base, path, self.kind.name()).await
    }

    /// The process's resident memory now and its peak so far, in bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<(u64, u64)> {
        rss_of(self.process.0.id())
    }
}

/// Process `pid`'s resident memory now and its peak so far, in bytes.
pub(crate) fn rss_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .with_context(|| format!("no {name} in /proc status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Waits up to 30 s for `base` to answer `path` with a success.
pub(crate) async fn wait_ready(base: &str, path: &str, name: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{base}{path}")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{name} did not answer {path} within 30 s")
}

/// The CPU time (user and system) process `pid` (or `self`) has used so far, in seconds.
pub(crate) fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    /// Linux reports these times in units of USER_HZ, 100 per second on every architecture this runs on.
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: count the fields after its closing one (field 3 on).
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("a /proc stat without a command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).context("a /proc stat too short");
    Ok((ticks(14)? + ticks(15)?) as f64 / USER_HZ)
}

/// CPU time used by a server and by this harness over one measured stretch, as cores busy on average.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuShare {
    pub(crate) server: f64,
    pub(crate) harness: f64,
}

impl CpuShare {
    /// Runs `work` and measures how many cores `server` and this process kept busy meanwhile.
    pub(crate) async fn measure<T>(
        server: &Process,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<(T, CpuShare)> {
        let server_cpu = || server.cpu_seconds();
        let (server0, harness0, start) = (server_cpu()?, cpu_seconds("self")?, Instant::now());
        let result = work.await?;
        let wall = start.elapsed().as_secs_f64().max(1e-9);
        let share =
            CpuShare { server: (server_cpu()? - server0) / wall, harness: (cpu_seconds("self")? - harness0) / wall };
        Ok((result, share))
    }
}

impl std::fmt::Display for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server {:.2} cores, harness {:.2} cores", self.server, self.harness)
    }
}
