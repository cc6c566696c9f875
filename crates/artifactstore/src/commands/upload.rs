//! `artifactstore upload`: the client side of upload sessions.
//!
//! Each file is hashed locally first; a blob the registry already holds is not sent again. Otherwise the file
//! goes up in chunks through a session that declares its size and both digests. When a request fails (a broken
//! connection, a timeout, a 5xx), the client asks the session's `HEAD` where to resume and carries on from there.

use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use artifactstore_digest::{DualDigest, DualHasher};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::cli::UploadArgs;

/// A registry client with the base URL and token of one invocation.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retries: u32,
}

impl Client {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }
}

/// Why a request did not work: worth retrying after a resume, or not.
enum Failure {
    Retry(String),
    Fatal(anyhow::Error),
}

async fn explain(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&body) {
        Ok(problem) if problem.get("detail").is_some() => {
            format!(
                "{status}: {} ({})",
                problem["detail"].as_str().unwrap_or(""),
                problem["code"].as_str().unwrap_or("")
            )
        }
        _ => format!("{status}: {}", body.chars().take(200).collect::<String>()),
    }
}

pub(crate) async fn run(args: &UploadArgs) -> anyhow::Result<ExitCode> {
    let package = args.package.as_deref().map(split_package).transpose()?;
    let mut names = std::collections::HashSet::new();
    for file in &args.files {
        let name = file_name(file)?;
        if package.is_some() && !names.insert(name.clone()) {
            bail!("two files are named `{name}`; a package version's paths must be unique");
        }
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .build()
        .context("build the HTTP client")?;
    let client = Client {
        http,
        base: args.client.server.trim_end_matches('/').to_owned(),
        token: args.client.token.clone(),
        retries: args.retries,
    };
    let interactive = std::io::stderr().is_terminal();
    let mut uploaded = Vec::new();
    for file in &args.files {
        let digest = hash_file(file, interactive).await?;
        let outcome = upload_file(&client, file, &digest, args.chunk_size, interactive).await?;
        println!("{outcome:<8} {} {} {:>12} {}", digest.blake3, digest.sha256, digest.size, file.display());
        uploaded.push((file_name(file)?, digest));
    }
    if let Some((name, version)) = package {
        let files: Vec<Value> =
            uploaded.iter().map(|(path, d)| json!({"path": path, "digest": d.blake3.to_string()})).collect();
        let response = client
            .request(Method::PUT, &format!("/v1/packages/{name}/versions/{version}"))
            .json(&json!({"files": files}))
            .send()
            .await
            .context("publish the package version")?;
        match response.status() {
            StatusCode::CREATED | StatusCode::OK => {
                let created = response.status() == StatusCode::CREATED;
                let doc: Value = response.json().await.context("read the published manifest")?;
                println!(
                    "{} {name}@{version} (package {}, event {})",
                    if created { "published" } else { "unchanged" },
                    doc["package_id"].as_str().unwrap_or("?"),
                    doc["created_sequence"]
                );
            }
            _ => bail!("publishing {name}@{version} failed: {}", explain(response).await),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn split_package(text: &str) -> anyhow::Result<(String, String)> {
    let (name, version) = text.rsplit_once('@').context("--package takes NAME@VERSION")?;
    crate::names::check_name(name).map_err(anyhow::Error::msg)?;
    crate::names::check_version(version).map_err(anyhow::Error::msg)?;
    Ok((name.to_owned(), version.to_owned()))
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?;
    crate::names::check_path(name).map_err(anyhow::Error::msg)?;
    Ok(name.to_owned())
}

fn bar(len: u64, interactive: bool, message: String) -> ProgressBar {
    if !interactive {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Both digests of a file, read in 1 MiB pieces off the async threads.
async fn hash_file(path: &Path, interactive: bool) -> anyhow::Result<DualDigest> {
    let path = path.to_owned();
    let len = std::fs::metadata(&path).with_context(|| format!("read {}", path.display()))?.len();
    let progress = bar(len, interactive, format!("hashing {}", path.display()));
    let digest = tokio::task::spawn_blocking(move || -> anyhow::Result<DualDigest> {
        let mut file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut hasher = DualHasher::new();
        let mut buffer = vec![0; 1024 * 1024];
        loop {
            let n = file.read(&mut buffer).with_context(|| format!("read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            progress.inc(n as u64);
        }
        progress.finish_and_clear();
        Ok(hasher.finalize())
    })
    .await
    .context("the hashing thread failed")??;
    Ok(digest)
}

/// Uploads one file unless the registry holds it already; says which.
async fn upload_file(
    client: &Client,
    path: &Path,
    digest: &DualDigest,
    chunk_size: u64,
    interactive: bool,
) -> anyhow::Result<&'static str> {
    let exists = client
        .request(Method::HEAD, &format!("/v1/blobs/{}", digest.blake3))
        .send()
        .await
        .with_context(|| format!("reach {}", client.base))?;
    match exists.status() {
        StatusCode::OK => return Ok("present"),
        StatusCode::NOT_FOUND | StatusCode::GONE => {}
        _ => bail!("asking for {} failed: {}", digest.blake3, explain(exists).await),
    }
    let opened = client
        .request(Method::POST, "/v1/uploads")
        .json(&json!({"size": digest.size, "blake3": digest.blake3.to_string(), "sha256": digest.sha256.to_string()}))
        .send()
        .await
        .with_context(|| format!("open an upload session on {}", client.base))?;
    if opened.status() != StatusCode::CREATED {
        bail!("opening an upload session failed: {}", explain(opened).await);
    }
    let session = opened.headers().get("location").and_then(|v| v.to_str().ok()).context("no Location")?.to_owned();
    let progress = bar(digest.size, interactive, format!("uploading {}", path.display()));
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut offset = 0u64;
    let mut failures = 0u32;
    loop {
        if offset >= digest.size {
            match commit(client, &session, digest, offset).await {
                Ok(status) => {
                    progress.finish_and_clear();
                    return Ok(if status == StatusCode::CREATED { "stored" } else { "present" });
                }
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Retry(why)) => {
                    failures += 1;
                    offset = resume(client, &session, &why, failures).await?;
                    progress.set_position(offset);
                    continue;
                }
            }
        }
        let len = chunk_size.min(digest.size - offset);
        let mut chunk = vec![0; usize::try_from(len).context("chunk size")?];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut chunk))
            .with_context(|| format!("read {} at {offset} (did it change while uploading?)", path.display()))?;
        match patch(client, &session, offset, chunk).await {
            Ok(new_offset) => {
                failures = 0;
                offset = new_offset;
                progress.set_position(offset);
                if !interactive {
                    eprintln!("{}: {offset}/{} bytes", path.display(), digest.size);
                }
            }
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Retry(why)) => {
                failures += 1;
                if failures > client.retries {
                    bail!("giving up on {} after {} failures in a row: {why}", path.display(), failures);
                }
                offset = resume(client, &session, &why, failures).await?;
                progress.set_position(offset);
            }
        }
    }
}

async fn patch(client: &Client, session: &str, offset: u64, chunk: Vec<u8>) -> Result<u64, Failure> {
    let response = client
        .request(Method::PATCH, session)
        .header("upload-offset", offset)
        .header("content-type", "application/offset+octet-stream")
        .body(chunk)
        .send()
        .await
        .map_err(|err| Failure::Retry(format!("{err:#}")))?;
    match response.status() {
        StatusCode::ACCEPTED => response
            .headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Failure::Fatal(anyhow::anyhow!("the server's answer has no Upload-Offset"))),
        status if retryable(status) => Err(Failure::Retry(explain(response).await)),
        _ => Err(Failure::Fatal(anyhow::anyhow!("uploading failed: {}", explain(response).await))),
    }
}

async fn commit(client: &Client, session: &str, digest: &DualDigest, offset: u64) -> Result<StatusCode, Failure> {
    let response = client
        .request(Method::PUT, &format!("{session}?digest={}", digest.blake3))
        .header("upload-offset", offset)
        .send()
        .await
        .map_err(|err| Failure::Retry(format!("{err:#}")))?;
    match response.status() {
        status @ (StatusCode::CREATED | StatusCode::OK) => Ok(status),
        status if retryable(status) => Err(Failure::Retry(explain(response).await)),
        _ => Err(Failure::Fatal(anyhow::anyhow!("committing failed: {}", explain(response).await))),
    }
}

/// Answers after which the upload asks `HEAD` where the session is and goes on from there: someone (an earlier
/// attempt of ours) moved the offset or holds the session (409), our body stalled long enough for the server to
/// end it (408), the server is busy (429) or failing (5xx). Anything else is the request's fault and final.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(status, StatusCode::CONFLICT | StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS)
}

/// Waits a little (longer after each failure in a row), then asks the session where to resume.
async fn resume(client: &Client, session: &str, why: &str, failures: u32) -> anyhow::Result<u64> {
    if failures > client.retries {
        bail!("giving up after {failures} failures in a row: {why}");
    }
    let pause = Duration::from_millis(200 * 2u64.pow(failures.min(6)));
    eprintln!("request failed ({why}); resuming in {:.1}s", pause.as_secs_f64());
    tokio::time::sleep(pause).await;
    let response =
        client.request(Method::HEAD, session).send().await.with_context(|| format!("ask {session} where to resume"))?;
    if response.status() != StatusCode::NO_CONTENT {
        bail!("the upload session cannot be resumed: {}", response.status());
    }
    response
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("HEAD gave no Upload-Offset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_about_timing_or_the_server_are_retried() {
        for status in [408, 409, 429, 500, 502, 503] {
            assert!(retryable(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 413, 415, 422] {
            assert!(!retryable(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}
