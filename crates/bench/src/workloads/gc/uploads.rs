//! Workload h's uploads during a collection: 16 clients push 4 KiB blobs to `serve`, without a collection and then
//! while `POST /v1/gc` removes a large amount of garbage.

use super::*;

/// What one upload run measured: each blob pushed and its latency.
struct Uploads {
    blobs: Vec<Blob>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Uploads {
    fn per_second(&self) -> f64 {
        self.blobs.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `CLIENTS` clients push fresh 4 KiB blobs, each in one `PUT`, until `count` are pushed or `stop` is set (a
/// client starts no blob after it is).
async fn uploads(client: &Client, count: Option<usize>, stop: Arc<AtomicBool>) -> anyhow::Result<Uploads> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, next, stop) = (client.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut blobs, mut latencies) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|n| i >= n) {
                    break;
                }
                let blob = Blob::random(i as u64, 4096);
                let t = Instant::now();
                client.push(&blob, 4096).await?;
                latencies.push(t.elapsed());
                blobs.push(blob);
            }
            Ok::<_, anyhow::Error>((blobs, latencies))
        }));
    }
    let (mut blobs, mut latencies) = (Vec::new(), Vec::new());
    for task in tasks {
        let (b, l) = task.await??;
        blobs.extend(b);
        latencies.extend(l);
    }
    Ok(Uploads { blobs, latencies, elapsed: start.elapsed() })
}

/// 4 KiB uploads by 16 clients to `serve`, without a collection and then while `POST /v1/gc` collects
/// `sizes.h_garbage` unreferenced blobs ingested beforehand in-process on the same data directory.
pub(super) async fn uploads_during_collection(
    report: &mut Report,
    sizes: &Sizes,
    bin: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let dir = work.join("h-serve");
    let data = dir.join("data");
    let garbage: Vec<String> = (0..sizes.h_garbage).map(|n| digests("garbage", n).0).collect();
    {
        // The garbage, in-process, before `serve` opens the database (SQLite has one writer).
        let config = instance_config(&data, format!("sqlite://{}", data.join("artifactstore.db").display()));
        let db: Database = connect_and_migrate(&config).await?;
        let log = EventLog::open(db.clone(), LogOptions::default()).await?;
        fill(&log, (0..sizes.h_garbage).map(|n| ingested("garbage", n))).await?;
        drop(log);
        db.close().await;
    }
    tokio::task::block_in_place(|| {
        write_blobs(&data.join("blobs"), &garbage)?;
        sync()
    })?;
    // No grace, and no timer: only the collection this workload asks for runs.
    let config = dir.join("gc.toml");
    std::fs::write(&config, "[gc]\ngrace_secs = 0\ninterval_secs = 0\n")?;
    let config = config.to_str().context("a work directory that is not UTF-8")?;
    let server = Server::artifactstore_with(bin, &dir, &["--config", config]).await?;
    let client = Client::new(Kind::Artifactstore, &server.base)?;

    let quiet = uploads(&client, Some(sizes.b_blobs), Arc::new(AtomicBool::new(false))).await?;
    let done = Arc::new(AtomicBool::new(false));
    let collection = tokio::spawn({
        let (http, url, done) = (client.http.clone(), format!("{}/v1/gc", server.base), done.clone());
        async move {
            let t = Instant::now();
            let answer = http.post(url).header(reqwest::header::CONTENT_LENGTH, 0).send().await;
            let answer = match answer {
                Ok(response) if response.status().is_success() => response.json::<serde_json::Value>().await,
                Ok(response) => Ok(serde_json::json!({ "status": response.status().as_u16() })),
                Err(err) => Err(err),
            };
            let elapsed = t.elapsed();
            done.store(true, Ordering::Relaxed);
            Ok::<_, anyhow::Error>((answer?, elapsed))
        }
    });
    let busy = uploads(&client, None, done.clone()).await?;
    let (answer, gc_time) = collection.await??;

    // The collection removed the garbage and the quiet run's blobs (unreferenced, no grace), perhaps some blobs
    // uploaded while it ran, and nothing else; the garbage's bytes are gone, the blobs it left are served whole.
    let removed: HashSet<String> = answer["removed"]
        .as_array()
        .with_context(|| format!("POST /v1/gc answered {answer}"))?
        .iter()
        .filter_map(|r| r["digest"].as_str().map(str::to_owned))
        .collect();
    let ours = |u: &Uploads| u.blobs.iter().map(|b| format!("blake3:{}", b.blake3)).collect::<Vec<_>>();
    let (quiet_keys, busy_keys) = (ours(&quiet), ours(&busy));
    let must: HashSet<&String> = garbage.iter().chain(&quiet_keys).collect();
    let may: HashSet<&String> = busy_keys.iter().collect();
    ensure!(
        must.iter().all(|k| removed.contains(*k)),
        "the collection left {} of the {} blobs it had to remove",
        must.iter().filter(|k| !removed.contains(**k)).count(),
        must.len()
    );
    ensure!(
        removed.iter().all(|k| must.contains(k) || may.contains(k)),
        "the collection removed blobs nobody made garbage"
    );
    let left = tokio::task::block_in_place(|| present(&data.join("blobs"), &garbage));
    ensure!(left == 0, "{left} collected blobs still have their bytes");
    let mut checked = 0;
    for blob in busy.blobs.iter().filter(|b| !removed.contains(&format!("blake3:{}", b.blake3))).take(100) {
        client.download(blob, true).await?;
        checked += 1;
    }
    drop(server);

    let (mut quiet_latencies, mut busy_latencies) = (quiet.latencies.clone(), busy.latencies.clone());
    let (quiet_p99, busy_p99) = (percentile(&mut quiet_latencies, 0.99), percentile(&mut busy_latencies, 0.99));
    let ratio = busy_p99.as_secs_f64() / quiet_p99.as_secs_f64().max(1e-9);
    eprintln!(
        "h: uploads: p99 {quiet_p99:?} without a collection ({:.0} blobs/s), {busy_p99:?} during one ({:.0} blobs/s, \
         {} uploads); the collection removed {} blobs in {:.1} s; {checked} kept blobs downloaded whole",
        quiet.per_second(),
        busy.per_second(),
        busy.blobs.len(),
        removed.len(),
        gc_time.as_secs_f64()
    );
    report.push(Row {
        workload: "h",
        what: format!(
            "4 KiB uploads, {CLIENTS} clients, to `serve` (SQLite) while `POST /v1/gc` collects {} unreferenced \
             blobs (ingested beforehand, {BLOB_BYTES} bytes each; no grace)",
            sizes.h_garbage
        ),
        ours: format!(
            "p99 {:.1} ms, {:.0} blobs/s ({} uploads during the run; it removed {} blobs in {:.1} s, {:.0} blobs/s)",
            busy_p99.as_secs_f64() * 1e3,
            busy.per_second(),
            busy.blobs.len(),
            removed.len(),
            gc_time.as_secs_f64(),
            removed.len() as f64 / gc_time.as_secs_f64()
        ),
        reference: format!(
            "no collection: p99 {:.1} ms, {:.0} blobs/s ({} uploads)",
            quiet_p99.as_secs_f64() * 1e3,
            quiet.per_second(),
            quiet.blobs.len()
        ),
        ratio: format!("p99 {ratio:.2}× without"),
        target: "p99 ≤ 1.5× without".into(),
        met: Some(ratio <= 1.5),
    });
    Ok(())
}
