//! Crash safety: a real `serve` process under concurrent upload+publish load, with lifecycle runs expiring and
//! collecting as it goes, is killed with SIGKILL again and again; everything it acknowledged must survive each kill
//! unless the log explains its going (an expiry, a removal), and no live version may name bytes that are gone.
//!
//! The short version below runs in CI (10 kills per backend). `ARTIFACTSTORE_CRASH_KILLS=100` runs longer.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use artifactstore_digest::DualDigest;
use artifactstore_testkit::{postgres_url, skip_or_panic};
use artifactstore_tests::{cli, free_port, Client, ServeProcess};
use serde_json::json;

/// Starts `serve` on `data` and `database` on a free port, and waits until it is ready. Its collection has no
/// grace time and no timer: the test's collector runs it.
async fn start(data: &Path, database: &str) -> ServeProcess {
    std::fs::create_dir_all(data).unwrap();
    let config = data.join("crash.toml");
    std::fs::write(&config, "[gc]\ninterval_secs = 0\ngrace_secs = 0\n").unwrap();
    let (data, config) = (data.to_str().unwrap(), config.to_str().unwrap());
    let args = ["--database", database, "--log", "warn", "--data", data, "--config", config];
    let mut server = cli!().serve(Some(free_port()), &args);
    server.wait_ready(Duration::from_secs(10)).await;
    server
}

/// What the server acknowledged with a 2xx: blobs by BLAKE3, and package versions with their one file.
#[derive(Default)]
struct Acknowledged {
    blobs: HashMap<String, Vec<u8>>,
    packages: Vec<(String, String, String)>,
}

async fn worker(id: usize, base: Arc<RwLock<String>>, acked: Arc<Mutex<Acknowledged>>, stop: Arc<RwLock<bool>>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut n = 0u64;
    while !*stop.read().unwrap() {
        n += 1;
        let bytes: Vec<u8> = format!("worker {id} blob {n} ").repeat(1 + (n as usize * 37) % 3000).into_bytes();
        let digest = DualDigest::of(&bytes);
        let url = base.read().unwrap().clone();
        let uploaded = http.post(format!("{url}/v1/uploads?digest={}", digest.sha256)).body(bytes.clone()).send().await;
        match uploaded {
            Ok(r) if r.status().is_success() => {
                acked.lock().unwrap().blobs.insert(digest.blake3.to_string(), bytes);
            }
            _ => continue,
        }
        let name = format!("crash/w{id}");
        let version = n.to_string();
        let manifest = json!({"files": [{"path": "blob", "digest": digest.blake3.to_string()}]});
        let published = http.put(format!("{url}/v1/packages/{name}/versions/{version}")).json(&manifest).send().await;
        if let Ok(r) = published {
            if r.status().is_success() {
                acked.lock().unwrap().packages.push((name, version, digest.blake3.to_string()));
            }
        }
    }
}

/// Pushes OCI images to `crash/oci` (a new layer, a shared config, a manifest), moving three tags in turn, so the
/// collector deletes the manifests tags no longer reach. Records every push attempt per tag, and whether it was
/// acknowledged.
async fn oci_worker(base: Arc<RwLock<String>>, pushes: Arc<Mutex<OciPushes>>, stop: Arc<RwLock<bool>>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let mut n = 0u64;
    while !*stop.read().unwrap() {
        n += 1;
        let url = base.read().unwrap().clone();
        let layer: Vec<u8> = format!("oci layer {n} ").repeat(1 + (n as usize * 53) % 2000).into_bytes();
        let mut pushed = true;
        for bytes in [&config, &layer] {
            let digest = DualDigest::of(bytes).sha256;
            let reply = http.post(format!("{url}/v2/crash/oci/blobs/uploads/?digest={digest}")).body(bytes.clone());
            pushed &= matches!(reply.send().await, Ok(r) if r.status() == 201);
        }
        if !pushed {
            continue;
        }
        let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "digest": DualDigest::of(bytes).sha256.to_string(), "size": bytes.len()});
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        }))
        .unwrap();
        let digest = DualDigest::of(&manifest).sha256.to_string();
        let tag = format!("t{}", n % 3);
        let slot = pushes.lock().unwrap().entry(tag.clone()).or_default().len();
        pushes.lock().unwrap().get_mut(&tag).unwrap().push((digest, false));
        let reply = http
            .put(format!("{url}/v2/crash/oci/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .await;
        if matches!(reply, Ok(r) if r.status() == 201) {
            pushes.lock().unwrap().get_mut(&tag).unwrap()[slot].1 = true;
        }
    }
}

/// Each tag's manifest pushes, in order, and whether each was acknowledged.
type OciPushes = HashMap<String, Vec<(String, bool)>>;

/// Runs the lifecycle every few dozen milliseconds, whatever instance is up.
async fn collector(base: Arc<RwLock<String>>, stop: Arc<RwLock<bool>>) -> usize {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut runs = 0;
    while !*stop.read().unwrap() {
        let url = base.read().unwrap().clone();
        if let Ok(r) = http.post(format!("{url}/v1/gc")).send().await {
            runs += usize::from(r.status().is_success());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    runs
}

async fn crash_loop(data: &Path, database: &str, kills: usize) {
    let mut server = start(data, database).await;
    let policy = json!({"prefix": "crash/", "keep_last": 2});
    let set = Client::new(server.base.clone()).put_json("/v1/policies/crash", &policy).await;
    assert_eq!(set.status, 201, "{}", set.text());
    let base = Arc::new(RwLock::new(server.base.clone()));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let stop = Arc::new(RwLock::new(false));
    let workers: Vec<_> =
        (0..4).map(|id| tokio::spawn(worker(id, base.clone(), acked.clone(), stop.clone()))).collect();
    let collector = tokio::spawn(collector(base.clone(), stop.clone()));
    let pushes = Arc::new(Mutex::new(OciPushes::new()));
    let oci = tokio::spawn(oci_worker(base.clone(), pushes.clone(), stop.clone()));
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(150 + (kill as u64 * 97) % 400)).await;
        server.kill(); // SIGKILL
        server = start(data, database).await;
        *base.write().unwrap() = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    *stop.write().unwrap() = true;
    for worker in workers {
        worker.await.unwrap();
    }
    oci.await.unwrap();
    let runs = collector.await.unwrap();
    assert!(runs > 0, "the collector ran");
    let client = Client::new(server.base.clone());
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.blobs.len() > kills, "the workers got work acknowledged between kills: {}", acked.blobs.len());

    // The feed is contiguous from 1 to the head; it says which versions expired and which blobs were removed.
    let (mut expired, mut removed) = (HashSet::new(), HashSet::new());
    let mut untagged = 0;
    let mut since = 0;
    let mut expected = 1;
    loop {
        let page = client.get_json(&format!("/v1/events?since={since}&limit=1000")).await;
        for event in page["events"].as_array().unwrap() {
            assert_eq!(event["sequence"], expected);
            expected += 1;
            let payload = &event["payload"];
            match event["event_type"].as_str().unwrap() {
                "v1.package.deleted" => {
                    assert_eq!(payload["reason"], "expired: crash");
                    expired.insert((payload["name"].as_str().unwrap().to_owned(), payload["version"].to_string()));
                }
                "v1.file.removed" => {
                    removed.insert(payload["blake3"].as_str().unwrap().to_owned());
                }
                "v1.oci.manifest.deleted" => {
                    assert_eq!(payload["reason"], "untagged");
                    untagged += 1;
                }
                _ => {}
            }
        }
        since = page["next"].as_u64().unwrap();
        if since >= page["head"].as_u64().unwrap() {
            break;
        }
    }
    // Every acknowledged package version is intact, with its blob whole, unless an expiry deleted it.
    for (name, version, blake3) in &acked.packages {
        let got = client.get(&format!("/v1/packages/{name}/versions/{version}")).await;
        if got.status == 404 {
            assert!(expired.contains(&(name.clone(), json!(version).to_string())), "{name}@{version} vanished");
            continue;
        }
        assert_eq!(got.json()["files"][0]["blake3"], blake3.as_str(), "{name}@{version}");
        let blob = client.get(&format!("/v1/blobs/{blake3}")).await;
        assert_eq!(blob.status, 200, "{name}@{version} is live, so {blake3} must be: {}", blob.text());
        assert_eq!(blob.body, acked.blobs[blake3], "{blake3}");
    }
    // Every acknowledged blob is whole, by either digest, or was removed by collection and says so.
    for (blake3, bytes) in &acked.blobs {
        let got = client.get(&format!("/v1/blobs/{blake3}")).await;
        if got.status == 410 {
            got.problem(410, "blob_removed");
            assert!(removed.contains(blake3), "{blake3}: 410 without a removal event");
            continue;
        }
        assert_eq!(got.status, 200, "{blake3} was acknowledged");
        assert_eq!(&got.body, bytes, "{blake3}");
    }
    // Each OCI tag names its last acknowledged manifest or one pushed after it (committed, its answer cut by a
    // kill), and every blob that manifest names is whole: collection never takes what a tag reaches.
    let pushes = std::mem::take(&mut *pushes.lock().unwrap());
    assert!(pushes.values().flatten().any(|(_, acked)| *acked), "the OCI worker got pushes acknowledged");
    for (tag, attempts) in &pushes {
        let Some(last_acked) = attempts.iter().rposition(|(_, acked)| *acked) else { continue };
        let got = client.get(&format!("/v2/crash/oci/manifests/{tag}")).await;
        assert_eq!(got.status, 200, "tag {tag}: {}", got.text());
        let digest = got.header("docker-content-digest");
        let position = attempts.iter().position(|(d, _)| d == digest).expect("a digest this worker pushed");
        assert!(position >= last_acked, "tag {tag} went back to an older manifest");
        let manifest: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        let named = [&manifest["config"], &manifest["layers"][0]];
        for descriptor in named {
            let digest = descriptor["digest"].as_str().unwrap();
            let blob = client.get(&format!("/v2/crash/oci/blobs/{digest}")).await;
            assert_eq!(blob.status, 200, "{digest}, named by tag {tag}'s manifest");
            assert_eq!(DualDigest::of(&blob.body).sha256.to_string(), digest);
        }
    }
    let acked_pushes = pushes.values().flatten().filter(|(_, acked)| *acked).count();
    println!(
        "{} expiries, {} removals, {untagged} untagged manifests deleted in the log after {runs} collector runs; \
         {acked_pushes} OCI pushes acknowledged",
        expired.len(),
        removed.len()
    );
    // One more run finishes any deletion a kill interrupted.
    assert_eq!(client.post("/v1/gc", Vec::new()).await.status, 200);
    server.kill();

    // The chain, the views and every blob check out (orphans allowed, missing blobs never).
    let output = cli!().run_on(data, &["verify", "--blobs", "--database", database]).await;
    let text = output.text();
    assert!(output.ok, "{text}");
    assert!(!text.contains("whose bytes the next gc run deletes"), "the last run deleted them: {text}");
    println!(
        "{} blobs and {} package versions acknowledged across {kills} kills; {text}",
        acked.blobs.len(),
        acked.packages.len()
    );
}

fn kills() -> usize {
    std::env::var("ARTIFACTSTORE_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let database = format!("sqlite://{}", data.join("artifactstore.db").display());
    crash_loop(&data, &database, kills()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill_under_load() {
    use sqlx::Connection as _;
    let admin_url = postgres_url();
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(err) => {
            skip_or_panic(&format!("PostgreSQL at {admin_url} is unreachable: {err}"));
            return;
        }
    };
    let name = format!("crash_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let database = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("unexpected PostgreSQL URL {admin_url}"),
    };
    let dir = tempfile::tempdir().unwrap();
    crash_loop(&dir.path().join("data"), &database, kills()).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
}
