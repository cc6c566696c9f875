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

/// A running server process; killed when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) kind: Kind,
    pub(crate) base: String,
    pub(crate) dir: PathBuf,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts `artifactstore serve` on a fresh SQLite database and filesystem store under `dir`.
    pub(crate) async fn artifactstore(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--log", "warn"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let server =
            Server { kind: Kind::Artifactstore, base: format!("http://127.0.0.1:{port}"), dir: dir.into(), child };
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
        let server =
            Server { kind: Kind::Distribution, base: format!("http://127.0.0.1:{port}"), dir: dir.into(), child };
        server.wait_ready("/v2/").await?;
        Ok(server)
    }

    async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = http.get(format!("{}{path}", self.base)).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{} did not answer {path} within 30 s", self.kind.name())
    }

    /// The process's resident memory now and its peak so far, in bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
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
}
