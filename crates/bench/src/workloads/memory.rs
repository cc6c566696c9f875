//! Workload k: large manifests. Versions of many files are published while small uploads are timed; then, what
//! one reader can make `serve` hold: one feed page of the large events read whole, then SSE streams from 0 that never read, while
//! other requests are timed. `serve`'s resident memory is sampled throughout and for 10 s after the streams close.

use std::time::{Duration, Instant};

use artifactstore_digest::DualDigest;
use tokio::io::AsyncWriteExt;

use crate::report::{mib, percentile, Report, Row};
use crate::servers::Server;
use crate::Sizes;

/// The goal: `serve` stays within this much of its idle memory.
const HEADROOM: u64 = 128 * 1024 * 1024;
/// The goal for other requests' p99 meanwhile.
const P99_GOAL: Duration = Duration::from_millis(50);
/// The goal for small uploads' p99 while large versions are published.
const UPLOAD_P99_GOAL: Duration = Duration::from_millis(250);
/// Versions published, each one large `v1.package.created` event.
const VERSIONS: usize = 5;

pub(crate) async fn workload_k(
    report: &mut Report,
    sizes: &Sizes,
    bin: &std::path::Path,
    work: &std::path::Path,
) -> anyhow::Result<()> {
    let server = Server::artifactstore(bin, &work.join("k")).await?;
    let http = reqwest::Client::new();
    let blob = b"one blob that every file of the large manifests names".to_vec();
    let digest = DualDigest::of(&blob);
    let url = format!("{}/v1/uploads?digest={}", server.base, digest.blake3);
    let response = http.post(url).body(blob).send().await?;
    anyhow::ensure!(response.status().is_success(), "upload: {}", response.status());
    // Small uploads alone, then beside the large publishes.
    let alone = small_uploads(server.base.clone(), 1, Duration::from_secs(3), None).await?;
    let (publishing, done) = tokio::sync::watch::channel(false);
    let beside = tokio::spawn(small_uploads(server.base.clone(), 2, Duration::from_secs(600), Some(done)));
    let head: serde_json::Value = http.get(format!("{}/v1/events/head", server.base)).send().await?.json().await?;
    let before_publishes = head["sequence"].as_u64().unwrap_or(0);
    let mut event_bytes = 0usize;
    let mut publish_times = Vec::new();
    for version in 0..VERSIONS {
        let files: Vec<serde_json::Value> = (0..sizes.k_files)
            .map(|i| serde_json::json!({"path": format!("share/data/part-{i:07}/file.bin"), "digest": digest.blake3.to_string()}))
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({"files": files}))?;
        event_bytes = manifest.len();
        let url = format!("{}/v1/packages/big/app/versions/{version}", server.base);
        let started = Instant::now();
        let response = http.put(url).header("content-type", "application/json").body(manifest).send().await?;
        anyhow::ensure!(response.status() == 201, "publish: {}", response.status());
        publish_times.push(started.elapsed());
    }
    publishing.send(true)?;
    let mut alone = alone;
    let mut beside = beside.await??;
    let (alone_p99, beside_p99) = (percentile(&mut alone, 0.99), percentile(&mut beside, 0.99));
    publish_times.sort();
    let publish_median = publish_times[publish_times.len() / 2];
    eprintln!("k: publish median {publish_median:?}; 4 KiB uploads p99 {alone_p99:?} alone, {beside_p99:?} beside");
    report.push(Row {
        workload: "k",
        what: format!(
            "4 KiB uploads, one client, while versions of {} files are published one after another",
            sizes.k_files
        ),
        ours: format!(
            "p99 {:.1} ms ({} uploads); each publish {:.2} s (median of {VERSIONS})",
            beside_p99.as_secs_f64() * 1000.0,
            beside.len(),
            publish_median.as_secs_f64()
        ),
        reference: format!("the same uploads alone: p99 {:.1} ms", alone_p99.as_secs_f64() * 1000.0),
        ratio: String::new(),
        target: format!("p99 < {} ms", UPLOAD_P99_GOAL.as_millis()),
        met: Some(beside_p99 < UPLOAD_P99_GOAL),
    });
    // Idle: the least resident memory over 5 s after the publishes, once the allocator has given their burst back.
    let mut idle = u64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        idle = idle.min(server.rss()?.0);
    }

    // One page from just before the large versions, read whole.
    let sampler = Sampler::start(&server);
    let started = Instant::now();
    let url = format!("{}/v1/events?since={before_publishes}&limit=1000", server.base);
    let page = http.get(url).send().await?.bytes().await?;
    let page_time = started.elapsed();
    let page_peak = sampler.stop().await;
    let page_events = serde_json::from_slice::<serde_json::Value>(&page)?["events"].as_array().map_or(0, Vec::len);

    // Streams from 0 that never read, each on a socket with a small receive buffer, while small reads are timed.
    let sampler = Sampler::start(&server);
    let address: std::net::SocketAddr = server.base.trim_start_matches("http://").parse()?;
    let mut streams = Vec::with_capacity(sizes.k_streams);
    for _ in 0..sizes.k_streams {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut stream = socket.connect(address).await?;
        stream.write_all(b"GET /v1/events/stream?since=0 HTTP/1.1\r\nHost: k\r\n\r\n").await?;
        streams.push(stream);
    }
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let started = Instant::now();
        let response = http.get(format!("{}/v1/packages/big/app", server.base)).send().await?;
        anyhow::ensure!(response.status() == 200, "a small read: {}", response.status());
        response.bytes().await?;
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let streams_peak = sampler.stop().await;
    drop(streams);
    // After: the least resident memory over the 10 s after the streams close.
    let mut after = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = after.min(server.rss()?.0);
    }
    drop(server);

    let p99 = percentile(&mut latencies, 0.99);
    let peak = page_peak.max(streams_peak);
    eprintln!(
        "k: idle {}, page peak {} ({page_events} events in {page_time:?}), streams peak {}, after {}, p99 {p99:?}",
        mib(idle),
        mib(page_peak),
        mib(streams_peak),
        mib(after)
    );
    report.push(Row {
        workload: "k",
        what: format!(
            "{VERSIONS} versions of {} files (manifests of {} of JSON each); one feed page from the first, then {} SSE streams from 0 \
             that never read, while other reads are timed",
            sizes.k_files,
            mib(event_bytes as u64),
            sizes.k_streams
        ),
        ours: format!(
            "idle {}; peak {} over idle (page {}, streams {}); {} within 10 s of the streams' close; other reads p99 {:.1} \
             ms",
            mib(idle),
            mib(peak.saturating_sub(idle)),
            mib(page_peak.saturating_sub(idle)),
            mib(streams_peak.saturating_sub(idle)),
            mib(after),
            p99.as_secs_f64() * 1000.0
        ),
        reference: format!(
            "the page: {page_events} events, {} in {:.2} s",
            mib(page.len() as u64),
            page_time.as_secs_f64()
        ),
        ratio: String::new(),
        target: format!("peak ≤ idle + {}, p99 < {} ms", mib(HEADROOM), P99_GOAL.as_millis()),
        met: Some(peak.saturating_sub(idle) <= HEADROOM && p99 < P99_GOAL),
    });
    Ok(())
}

/// Uploads 4 KiB blobs (distinct for each `seed`) one after another for `time`, or until `done` turns true; gives
/// each upload's time.
async fn small_uploads(
    base: String,
    seed: u64,
    time: Duration,
    mut done: Option<tokio::sync::watch::Receiver<bool>>,
) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::new();
    let until = Instant::now() + time;
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until && !done.as_mut().is_some_and(|d| *d.borrow_and_update()) {
        let mut blob = vec![0u8; 4096];
        blob[..8].copy_from_slice(&n.to_le_bytes());
        blob[8..16].copy_from_slice(&seed.to_le_bytes());
        n += 1;
        let digest = DualDigest::of(&blob);
        let started = Instant::now();
        let response = http.post(format!("{base}/v1/uploads?digest={}", digest.blake3)).body(blob).send().await?;
        anyhow::ensure!(response.status().is_success(), "a small upload: {}", response.status());
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Samples a server's resident memory every 20 ms until stopped; gives the highest sample.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl Sampler {
    fn start(server: &Server) -> Sampler {
        let pid = server.process.id();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                if let Ok((rss, _)) = crate::servers::rss_of(pid) {
                    peak = peak.max(rss);
                }
                tokio::select! {
                    _ = &mut stopped => return peak,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        });
        Sampler { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}
