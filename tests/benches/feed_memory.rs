//! Memory of the live feed under a subscriber that never reads.
//!
//! `cargo bench -p artifactstore-tests --bench feed_memory` starts the service in-process on SQLite, opens one SSE
//! stream that reads nothing (with a 4 KiB receive buffer), appends 50,000 events of about 4 KiB each (some
//! 200 MB through the feed) and samples this process's resident memory. The subscriber must be cut and the
//! memory must stay flat: what the server holds per subscriber is bounded, not proportional to its lag.

use std::time::{Duration, Instant};

use artifactstore_tests::{event, TestApp};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let app = TestApp::sqlite().await;
    let log = app.log.clone();
    let address: std::net::SocketAddr = app.address.parse().unwrap();

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(address).await.unwrap();
    slow.write_all(format!("GET /v1/events/stream HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes()).await.unwrap();

    let baseline = rss_kib("VmRSS:");
    let total = 50_000u64;
    let pad = "x".repeat(4000);
    let started = Instant::now();
    let mut peak = baseline;
    for batch in 0..(total / 500) {
        let appends = (0..500)
            .map(|i| log.append(event("v1.bench.feed", None, &serde_json::json!({"n": batch * 500 + i, "pad": pad}))));
        for appended in futures::future::join_all(appends).await {
            appended.unwrap();
        }
        peak = peak.max(rss_kib("VmRSS:"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(rss_kib("VmRSS:"));
    let metrics = app.get("/metrics").await.text();
    let cut =
        metrics.lines().find(|l| l.starts_with("artifactstore_feed_subscribers_cut_total")).unwrap_or("?").to_owned();
    println!(
        "feed_memory: {total} events of ~4 KiB in {:.1} s with one SSE subscriber that never reads",
        started.elapsed().as_secs_f64()
    );
    println!(
        "feed_memory: RSS at start {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB; {cut}",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak - baseline) as f64 / 1024.0
    );
    drop(slow);
}
