//! `artifactstore tail` against a live server: every event once, in order, resumable with `--since`.

use std::process::Command;

use artifactstore::config::{InstanceConfig, UploadLimits};
use artifactstore::instance::Instance;
use artifactstore_blobstore::Location;
use artifactstore_eventlog::{NewEvent, SubjectKind};
use tokio::net::TcpListener;

fn tail(server: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_artifactstore"))
        .args(["tail", "--server", server])
        .args(args)
        .env_remove("ARTIFACTSTORE_TOKEN")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_every_event_once_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = InstanceConfig {
        data: dir.path().join("data"),
        database: format!("sqlite://{}", dir.path().join("data/artifactstore.db").display()),
        store: Location::File(dir.path().join("data/blobs")),
        uploads: UploadLimits::default(),
        tokens: Vec::new(),
    };
    let instance = Instance::open(&config).await.unwrap();
    for n in 1..=1500u64 {
        let event_type = if n % 500 == 0 { "v1.test.round" } else { "v1.test.plain" };
        let payload = artifactstore_cbor::to_vec(&serde_json::json!({"n": n})).unwrap();
        instance
            .log
            .append(NewEvent {
                event_type: event_type.into(),
                subject_kind: SubjectKind::System,
                subject_id: None,
                actor: "tester".into(),
                payload,
            })
            .await
            .unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(artifactstore::server::serve(listener, instance, std::future::pending()));

    let all = tokio::task::spawn_blocking({
        let server = server.clone();
        move || tail(&server, &["--exit-at-head", "--json"])
    })
    .await
    .unwrap();
    assert!(all.0, "{}", all.2);
    let sequences: Vec<u64> = all
        .1
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=1500).collect::<Vec<_>>(), "more than one page, every event once");

    let resumed = tokio::task::spawn_blocking({
        let server = server.clone();
        move || tail(&server, &["--exit-at-head", "--since", "1490", "--type", "v1.test.*"])
    })
    .await
    .unwrap();
    assert!(resumed.0, "{}", resumed.2);
    let lines: Vec<&str> = resumed.1.lines().collect();
    assert_eq!(lines.len(), 10, "{}", resumed.1);
    assert!(lines[0].trim_start().starts_with("1491"), "{}", lines[0]);
    assert!(lines[9].contains("v1.test.round"), "{}", lines[9]);

    let filtered = tokio::task::spawn_blocking({
        let server = server.clone();
        move || tail(&server, &["--exit-at-head", "--type", "v1.test.round"])
    })
    .await
    .unwrap();
    assert_eq!(filtered.1.lines().count(), 3, "{}", filtered.1);

    let beyond =
        tokio::task::spawn_blocking(move || tail(&server, &["--exit-at-head", "--since", "99999"])).await.unwrap();
    assert!(!beyond.0);
    assert!(beyond.2.contains("no longer valid"), "{}", beyond.2);
}
