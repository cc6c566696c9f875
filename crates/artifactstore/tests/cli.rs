//! The binary on a fresh directory: `serve` with no flags, then `replay`, `verify` and `migrate` on its data.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use artifactstore::config::InstanceConfig;
use artifactstore::instance::Instance;
use artifactstore_views::vocab::{FileIngested, PackageCreated, PackageFile};
use artifactstore_views::{record, RegistryEvent};

fn artifactstore(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_artifactstore"));
    command.current_dir(dir).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("ARTIFACTSTORE_") {
            command.env_remove(key);
        }
    }
    command
}

fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let Output { status, stdout, stderr } = artifactstore(dir, args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    (status.code().unwrap_or(-1), text)
}

/// Writes a few registry events into `./data` the way the service would.
async fn populate(dir: &Path) -> u64 {
    let config = InstanceConfig {
        data: dir.join("data"),
        database: format!("sqlite://{}", dir.join("data/artifactstore.db").display()),
        store: artifactstore_blobstore::Location::File(dir.join("data/blobs")),
        uploads: artifactstore::config::UploadLimits::default(),
        tokens: Vec::new(),
    };
    let instance = Instance::open(&config).await.unwrap();
    let file = FileIngested {
        blake3: format!("blake3:{}", "ab".repeat(32)),
        sha256: format!("sha256:{}", "cd".repeat(32)),
        size: 42,
        media_type: None,
    };
    let package = PackageCreated {
        name: "tools/cli".into(),
        version: "1.0.0".into(),
        files: vec![PackageFile {
            path: "bin/tool".into(),
            blake3: file.blake3.clone(),
            sha256: file.sha256.clone(),
            size: 42,
            media_type: None,
        }],
        metadata: artifactstore_cbor::Value::Map(vec![]),
    };
    let events = [
        RegistryEvent::FileIngested(file),
        RegistryEvent::PackageCreated { package_id: uuid::Uuid::now_v7(), payload: package },
    ];
    for event in events {
        instance
            .log
            .transact(move |wtx| Box::pin(async move { record(wtx, "populate", &event).await.map(drop) }))
            .await
            .unwrap();
    }
    let head = instance.log.read_head().await.unwrap().sequence;
    instance.db.close().await;
    head
}

#[tokio::test]
async fn serve_starts_with_no_flags_and_replay_and_verify_work_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let head = populate(dir.path()).await;
    assert_eq!(head, 2);

    let mut server =
        artifactstore(dir.path(), &["serve"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let body = loop {
        if let Some(status) = server.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(server.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("serve exited with {status}: {err}");
        }
        match client.get("http://127.0.0.1:8080/v1/events/head").send().await {
            Ok(response) => break response.json::<serde_json::Value>().await.unwrap(),
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(err) => panic!("serve did not answer on 127.0.0.1:8080: {err}"),
        }
    };
    assert_eq!(body["sequence"], head, "serve found ./data on its own");
    let readyz = client.get("http://127.0.0.1:8080/readyz").send().await.unwrap();
    assert_eq!(readyz.status().as_u16(), 200);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(dir.path().join("data/blobs").is_dir(), "the blob store directory was made");

    let (code, out) = run(dir.path(), &["migrate"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(dir.path(), &["replay"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 2 events up to sequence 2"), "{out}");
    let (code, out) = run(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain: ok, 2 events") && out.contains("views: ok"), "{out}");

    // A view row changed behind the log's back: verify says so and fails; replay puts it right.
    let db = dir.path().join("data/artifactstore.db");
    sqlite(&db, "UPDATE artifact_files SET size = 1").await;
    let (code, out) = run(dir.path(), &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("views: 1 difference") && out.contains("artifact_files"), "{out}");
    let (code, out) = run(dir.path(), &["replay"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}");

    // History rewritten behind the guard's back: the chain check catches it.
    sqlite(&db, "DROP TRIGGER events_are_immutable").await;
    sqlite(&db, "UPDATE events SET actor = 'mallory' WHERE sequence = 1").await;
    let (code, out) = run(dir.path(), &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chain: 1 fault(s)") && out.contains("event 1:"), "{out}");

    // A configuration it cannot use is a clear error, not a panic.
    let (code, out) = run(dir.path(), &["verify", "--database", "mysql://x"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unsupported database URL"), "{out}");
}

async fn sqlite(path: &Path, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}
