//! A real S3-speaking server for tests: `moto_server` (PyPI `moto[server]`), one per test, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::skip_or_panic;

/// A moto S3 server of this test's own, with one fresh bucket; killed on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    endpoint: String,
    bucket: String,
    client: reqwest::Client,
    _logs: tempfile::TempDir,
}

/// How to start moto: `MOTO_SERVER` names a program, else `moto_server` on the `PATH`, else `python3 -m moto.server`.
fn command() -> Option<Command> {
    if let Ok(program) = std::env::var("MOTO_SERVER") {
        return Some(Command::new(program));
    }
    let on_path = Command::new("moto_server").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if on_path.is_ok_and(|s| s.success()) {
        return Some(Command::new("moto_server"));
    }
    let module = Command::new("python3").args(["-c", "import moto.server"]).stderr(Stdio::null()).status();
    if module.is_ok_and(|s| s.success()) {
        let mut command = Command::new("python3");
        command.args(["-m", "moto.server"]);
        return Some(command);
    }
    None
}

impl S3Server {
    /// Starts moto on a free loopback port and creates a bucket; `None` (after a loud message) when moto cannot be
    /// found or started outside CI.
    pub async fn start() -> Option<S3Server> {
        let Some(mut command) = command() else {
            skip_or_panic("moto_server is not installed (pip install 'moto[server]', or set MOTO_SERVER)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).ok()?;
        let logs = tempfile::tempdir().expect("create a temporary directory");
        let log = std::fs::File::create(logs.path().join("moto.log")).expect("create the moto log");
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) => {
                skip_or_panic(&format!("moto_server would not start: {err}"));
                return None;
            }
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let bucket = format!("t-{}", uuid::Uuid::new_v4().simple());
        let mut server = S3Server { child, endpoint, bucket, client: reqwest::Client::new(), _logs: logs };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server._logs.path().join("moto.log")).unwrap_or_default();
                skip_or_panic(&format!("moto_server exited with {status}:\n{log}"));
                return None;
            }
            if server.client.get(format!("{}/", server.endpoint)).send().await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                skip_or_panic("moto_server did not answer within 30 s");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created = server.client.put(format!("{}/{}", server.endpoint, server.bucket)).send().await;
        match created {
            Ok(response) if response.status().is_success() => Some(server),
            other => {
                skip_or_panic(&format!("moto_server would not create a bucket: {other:?}"));
                None
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket made for this test.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The store URL the registry takes: `s3://BUCKET/registry`.
    pub fn store_url(&self) -> String {
        format!("s3://{}/registry", self.bucket)
    }

    /// The `AWS_*` settings a registry needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Every object key in the bucket (ListObjectsV2, all pages).
    pub async fn list_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{}?list-type=2", self.endpoint, self.bucket);
            if let Some(token) = &token {
                url.push_str("&continuation-token=");
                url.push_str(&token.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"));
            }
            let body = self.client.get(url).send().await.expect("list the bucket").text().await.expect("read");
            keys.extend(tags(&body, "Key"));
            token = tags(&body, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return keys;
            }
        }
    }
}

/// The text of every `<name>...</name>` element (S3's listing XML needs no more than this).
fn tags(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(text, _)| text.replace("&amp;", "&")))
        .collect()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
