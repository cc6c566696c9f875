//! The binary on a fresh directory: `serve` with no flags, then `replay`, `verify` and `migrate` on its data.

use std::path::Path;
use std::time::Duration;

use artifactstore_tests::{cli, Client, TestApp};
use artifactstore_views::vocab::{FileIngested, PackageCreated, PackageFile};
use artifactstore_views::{record, RegistryEvent};

async fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = cli!().in_dir(dir).run(args).await;
    (out.code, out.text())
}

/// Writes a few registry events into `./data` the way the service would.
async fn populate(dir: &Path) -> u64 {
    let app = TestApp::builder().data_dir(&dir.join("data")).start().await.unwrap();
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
        app.log
            .transact(move |wtx| Box::pin(async move { record(wtx, "populate", &event).await.map(drop) }))
            .await
            .unwrap();
    }
    let head = app.head_now().await;
    app.stop().await;
    head
}

#[tokio::test]
async fn serve_starts_with_no_flags_and_replay_and_verify_work_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let head = populate(dir.path()).await;
    assert_eq!(head, 2);

    let mut server = cli!().in_dir(dir.path()).serve(None, &[]);
    server.wait_ready(Duration::from_secs(30)).await;
    let client = Client::new("http://127.0.0.1:8080");
    let body = client.get_json("/v1/events/head").await;
    assert_eq!(body["sequence"], head, "serve found ./data on its own");
    assert_eq!(client.get("/readyz").await.status, 200);
    server.kill();
    assert!(dir.path().join("data/blobs").is_dir(), "the blob store directory was made");
    let log = server.stderr();
    assert!(log.contains("INFO"), "serve logs to stderr: {log}");
    assert!(!log.contains('\x1b'), "no colour codes in a log that is not a terminal: {log:?}");

    let (code, out) = run(dir.path(), &["migrate"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(dir.path(), &["replay"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 2 events up to sequence 2"), "{out}");
    let (code, out) = run(dir.path(), &["verify"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain: ok, 2 events") && out.contains("views: ok"), "{out}");

    // A view row changed behind the log's back: verify says so and fails; replay puts it right.
    let db = dir.path().join("data/artifactstore.db");
    sqlite(&db, "UPDATE artifact_files SET size = 1").await;
    let (code, out) = run(dir.path(), &["verify"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("views: 1 difference") && out.contains("artifact_files"), "{out}");
    // The same for a script: one JSON document on standard output.
    let json = cli!().in_dir(dir.path()).run(&["verify", "--json"]).await;
    assert_eq!(json.code, 1, "{}", json.stderr);
    let report: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("verify --json prints JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["chain"]["ok"], true);
    assert_eq!(report["chain"]["events"], 2);
    assert_eq!(report["views"]["differences"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["blobs"], serde_json::Value::Null);
    let (code, out) = run(dir.path(), &["replay"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(dir.path(), &["verify"]).await;
    assert_eq!(code, 0, "{out}");

    // History rewritten behind the guard's back: the chain check catches it.
    sqlite(&db, "DROP TRIGGER events_are_immutable").await;
    sqlite(&db, "UPDATE events SET actor = 'mallory' WHERE sequence = 1").await;
    let (code, out) = run(dir.path(), &["verify"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chain: 1 fault(s)") && out.contains("event 1:"), "{out}");

    // A configuration it cannot use is a clear error, not a panic.
    let (code, out) = run(dir.path(), &["verify", "--database", "mysql://x"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unsupported database URL"), "{out}");
}

async fn sqlite(path: &Path, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn gc_expires_what_the_policies_let_go_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::builder().data_dir(&dir.path().join("data")).start().await.unwrap();
    let blob = app.upload_blob(b"cli gc bytes").await.json();
    let manifest = serde_json::json!({"files": [{"path": "f", "digest": blob["blake3"]}]});
    for version in ["1", "2", "3"] {
        assert_eq!(app.publish("tools/gc", version, &manifest).await.status, 201);
    }
    let policy = serde_json::json!({"prefix": "tools/", "keep_last": 1});
    assert_eq!(app.put_json("/v1/policies/tools", &policy).await.status, 201);
    let orphan = b"named by no version".to_vec();
    let orphan_digest = app.upload_blob(&orphan).await.json()["blake3"].clone();
    app.stop().await;

    let (code, out) = run(dir.path(), &["gc", "--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let line = out.lines().find(|l| l.starts_with('{')).expect("a JSON report");
    let report: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(report["dry_run"], true);
    let versions: Vec<&str> =
        report["expired"].as_array().unwrap().iter().map(|e| e["version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1", "2"]);

    let (code, out) = run(dir.path(), &["gc"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("expired 2 version(s)") && out.contains("tools/gc@1  policy tools: not among the 1 newest"),
        "{out}"
    );
    let (code, out) = run(dir.path(), &["gc", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""expired":[]"#), "{out}");
    assert!(out.contains(r#""removed":[]"#), "{out}: the default grace keeps the orphan");

    // Without grace, the blob no version names is removed, and verify counts it neither missing nor orphan.
    let config = dir.path().join("no-grace.toml");
    std::fs::write(&config, "[gc]\ngrace_secs = 0\n").unwrap();
    let config = config.to_str().unwrap();
    let (code, out) = run(dir.path(), &["gc", "--dry-run", "--config", config]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("would remove 1 blob(s), {} bytes", orphan.len())), "{out}");
    let (code, out) = run(dir.path(), &["gc", "--config", config]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("removed 1 blob(s), {} bytes", orphan.len())), "{out}");
    assert!(out.contains(orphan_digest.as_str().unwrap()), "{out}");
    let (code, out) = run(dir.path(), &["verify", "--blobs"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("blobs: ok, 1 checked") && !out.contains("orphans"), "{out}");
}

#[tokio::test]
async fn completions_and_the_manual_page_come_from_the_same_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in
        [("bash", "_artifactstore()"), ("zsh", "#compdef artifactstore"), ("fish", "complete -c artifactstore")]
    {
        let out = cli!().in_dir(dir.path()).run(&["completions", shell]).await;
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}: {}", &out.stdout[..out.stdout.len().min(300)]);
        for verb in ["serve", "replay", "verify", "gc", "tail", "completions"] {
            assert!(out.stdout.contains(verb), "{shell} completes `{verb}`");
        }
    }
    let man = cli!().in_dir(dir.path()).run(&["man"]).await;
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH artifactstore"), "{}", &man.stdout[..man.stdout.len().min(300)]);
    assert!(man.stdout.contains("artifact registry whose source of truth"), "the page says what the binary is");
    // Every verb's --help carries an example.
    let verbs = [
        "serve",
        "migrate",
        "replay",
        "verify",
        "snapshot",
        "archive",
        "restore",
        "upload",
        "tail",
        "relay",
        "gc",
        "completions",
        "man",
    ];
    for verb in verbs {
        let help = cli!().in_dir(dir.path()).run(&[verb, "--help"]).await;
        assert_eq!(help.code, 0, "{verb}: {}", help.stderr);
        assert!(help.stdout.contains(&format!("Example: `artifactstore {verb}")), "{verb}: {}", help.stdout);
    }
    let unknown = cli!().in_dir(dir.path()).run(&["completions", "powershell-9"]).await;
    assert_eq!(unknown.code, 2, "an unknown shell is a usage error");
}
