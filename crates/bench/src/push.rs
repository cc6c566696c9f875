//! One client for both registries: the same chunking, concurrency and checks, two upload protocols.
//!
//! artifactstore: `POST /v1/uploads`, `PATCH` with `Upload-Offset`, `PUT ?digest=` (last chunk in its body).
//! OCI (distribution, and artifactstore's `/v2/`): `POST /v2/<name>/blobs/uploads/`, `PATCH` with
//! `Content-Range`, `PUT <location>&digest=` (ditto).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use sha2::Digest as _;

use crate::servers::Kind;

/// The repository name pushed to over OCI.
pub(crate) const REPOSITORY: &str = "bench/blobs";

/// A blob held in memory with both of its digests computed beforehand, as a build tool would have them.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub(crate) bytes: Bytes,
    pub(crate) sha256: String,
    pub(crate) blake3: String,
}

impl Blob {
    /// `size` pseudo-random bytes that differ for every `seed` (BLAKE3 output stream, incompressible).
    pub(crate) fn random(seed: u64, size: usize) -> Blob {
        let mut bytes = vec![0u8; size];
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
        key[16..24].copy_from_slice(
            &(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64)
                .to_le_bytes(),
        );
        blake3::Hasher::new_keyed(&key).finalize_xof().fill(&mut bytes);
        Blob::from_bytes(Bytes::from(bytes))
    }

    pub(crate) fn from_bytes(bytes: Bytes) -> Blob {
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let blake3 = blake3::hash(&bytes).to_hex().to_string();
        Blob { bytes, sha256, blake3 }
    }
}

/// An HTTP client bound to one registry.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) kind: Kind,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    /// The protocol it speaks: each registry's own (artifactstore's `/v1/`), or OCI for both (`Distribution`).
    protocol: Kind,
}

impl Client {
    /// A client speaking the registry's own protocol.
    pub(crate) fn new(kind: Kind, base: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(600)).build()?;
        Ok(Client { kind, base: base.to_owned(), http, protocol: kind })
    }

    /// A client speaking the OCI distribution protocol to either registry.
    pub(crate) fn oci(kind: Kind, base: &str) -> anyhow::Result<Client> {
        Ok(Client { protocol: Kind::Distribution, ..Client::new(kind, base)? })
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// Pushes one blob in chunks of `chunk` bytes (the last one rides on the commit) and checks the answer.
    pub(crate) async fn push(&self, blob: &Blob, chunk: usize) -> anyhow::Result<()> {
        let open = match self.protocol {
            Kind::Artifactstore => self.http.post(format!("{}/v1/uploads", self.base)),
            Kind::Distribution => self.http.post(format!("{}/v2/{REPOSITORY}/blobs/uploads/", self.base)),
        };
        let response = open.header(CONTENT_LENGTH, 0).send().await?;
        ensure!(response.status().is_success(), "{}: open an upload: {}", self.kind.name(), response.status());
        let mut location = self.absolute(header(&response, LOCATION.as_str())?);
        let size = blob.bytes.len();
        let mut offset = 0;
        // Every chunk but the last goes in a PATCH; the last one is the body of the commit.
        while size - offset > chunk {
            let part = blob.bytes.slice(offset..offset + chunk);
            let request = self.http.patch(&location).header(CONTENT_TYPE, "application/octet-stream");
            let request = match self.protocol {
                Kind::Artifactstore => request.header("Upload-Offset", offset),
                Kind::Distribution => request.header("Content-Range", format!("{offset}-{}", offset + chunk - 1)),
            };
            let response = request.body(part).send().await?;
            ensure!(
                response.status() == StatusCode::ACCEPTED,
                "{}: chunk at {offset}: {}",
                self.kind.name(),
                response.status()
            );
            if self.protocol == Kind::Distribution {
                location = self.absolute(header(&response, LOCATION.as_str())?);
            }
            offset += chunk;
        }
        let separator = if location.contains('?') { '&' } else { '?' };
        let commit = format!("{location}{separator}digest=sha256:{}", blob.sha256);
        let request = self.http.put(commit).header(CONTENT_TYPE, "application/octet-stream");
        let request = match self.protocol {
            Kind::Artifactstore => request.header("Upload-Offset", offset),
            Kind::Distribution if offset < size => request.header("Content-Range", format!("{offset}-{}", size - 1)),
            Kind::Distribution => request,
        };
        let response = request.body(blob.bytes.slice(offset..)).send().await?;
        let status = response.status();
        if status != StatusCode::CREATED {
            let body = response.text().await.unwrap_or_default();
            bail!("{}: commit: {status}: {}", self.kind.name(), body.chars().take(300).collect::<String>());
        }
        match self.protocol {
            Kind::Artifactstore => {
                let answer: serde_json::Value = response.json().await?;
                ensure!(
                    answer["blake3"].as_str() == Some(&format!("blake3:{}", blob.blake3))
                        && answer["sha256"].as_str() == Some(&format!("sha256:{}", blob.sha256)),
                    "artifactstore answered other digests: {answer}"
                );
            }
            Kind::Distribution => {
                let digest = header(&response, "Docker-Content-Digest")?;
                ensure!(digest == format!("sha256:{}", blob.sha256), "distribution answered digest {digest}");
            }
        }
        Ok(())
    }

    fn blob_url(&self, blob: &Blob) -> String {
        match self.protocol {
            Kind::Artifactstore => format!("{}/v1/blobs/blake3:{}", self.base, blob.blake3),
            Kind::Distribution => format!("{}/v2/{REPOSITORY}/blobs/sha256:{}", self.base, blob.sha256),
        }
    }

    /// Downloads a blob; with `check`, hashes what arrived and compares it with the blob.
    pub(crate) async fn download(&self, blob: &Blob, check: bool) -> anyhow::Result<u64> {
        let mut response = self.http.get(self.blob_url(blob)).send().await?;
        ensure!(response.status() == StatusCode::OK, "{}: GET blob: {}", self.kind.name(), response.status());
        let mut hasher = check.then(blake3::Hasher::new);
        let mut total = 0u64;
        while let Some(chunk) = response.chunk().await? {
            total += chunk.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
        }
        ensure!(
            total == blob.bytes.len() as u64,
            "{}: downloaded {total} of {} bytes",
            self.kind.name(),
            blob.bytes.len()
        );
        if let Some(h) = hasher {
            ensure!(h.finalize().to_hex().as_str() == blob.blake3, "{}: downloaded bytes differ", self.kind.name());
        }
        Ok(total)
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> anyhow::Result<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).with_context(|| format!("the answer has no {name}"))
}

/// What a concurrent run measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) elapsed: Duration,
    pub(crate) items: usize,
    pub(crate) bytes: u64,
    pub(crate) latencies: Vec<Duration>,
}

impl Run {
    pub(crate) fn per_second(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64()
    }
}

/// Pushes every blob, `clients` at a time (each client takes the next blob when it is done).
pub(crate) async fn push_all(
    client: &Client,
    blobs: Arc<Vec<Blob>>,
    clients: usize,
    chunk: usize,
) -> anyhow::Result<Run> {
    let bytes = blobs.iter().map(|b| b.bytes.len() as u64).sum();
    let items = blobs.len();
    let (elapsed, latencies) = concurrently(client, items, clients, move |client, i| {
        let blobs = blobs.clone();
        async move { client.push(&blobs[i], chunk).await }
    })
    .await?;
    Ok(Run { elapsed, items, bytes, latencies })
}

/// Runs `work(client, i)` for every `i` below `items`, `clients` at a time, each taking the next item when it is
/// done; how long it took, and each item's latency.
pub(crate) async fn concurrently<F, Fut>(
    client: &Client,
    items: usize,
    clients: usize,
    work: F,
) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, next, work) = (client.clone(), next.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= items {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                work(client.clone(), i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((start.elapsed(), latencies))
}

/// `clients` clients each download every blob `rounds` times (starting at different blobs); the first round checks
/// the bytes.
pub(crate) async fn download_all(
    client: &Client,
    blobs: Arc<Vec<Blob>>,
    clients: usize,
    rounds: usize,
) -> anyhow::Result<Run> {
    for blob in blobs.iter() {
        client.download(blob, true).await?;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, blobs) = (client.clone(), blobs.clone());
        tasks.push(tokio::spawn(async move {
            let (mut bytes, mut latencies) = (0, Vec::with_capacity(rounds * blobs.len()));
            for r in 0..rounds {
                for i in 0..blobs.len() {
                    let t = Instant::now();
                    bytes += client.download(&blobs[(i + c + r) % blobs.len()], false).await?;
                    latencies.push(t.elapsed());
                }
            }
            Ok::<_, anyhow::Error>((bytes, latencies))
        }));
    }
    let (mut bytes, mut latencies) = (0, Vec::new());
    for task in tasks {
        let (b, l) = task.await??;
        bytes += b;
        latencies.extend(l);
    }
    Ok(Run { elapsed: start.elapsed(), items: blobs.len() * clients * rounds, bytes, latencies })
}
