//! `artifactstore tail` against a live server: every event once, in order, resumable with `--since`.

use artifactstore_tests::{cli, event, CliOutput, TestApp};

async fn tail(server: &str, args: &[&str]) -> CliOutput {
    let args: Vec<&str> = ["tail", "--server", server].into_iter().chain(args.iter().copied()).collect();
    cli!().run(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_every_event_once_and_resumes() {
    let app = TestApp::sqlite().await;
    for n in 1..=1500u64 {
        let event_type = if n % 500 == 0 { "v1.test.round" } else { "v1.test.plain" };
        app.append(event(event_type, None, &serde_json::json!({"n": n}))).await;
    }
    let server = &app.base;

    let all = tail(server, &["--exit-at-head", "--json"]).await;
    assert!(all.ok, "{}", all.stderr);
    let sequences: Vec<u64> = all
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=1500).collect::<Vec<_>>(), "more than one page, every event once");

    let resumed = tail(server, &["--exit-at-head", "--since", "1490", "--type", "v1.test.*"]).await;
    assert!(resumed.ok, "{}", resumed.stderr);
    let lines: Vec<&str> = resumed.stdout.lines().collect();
    assert_eq!(lines.len(), 10, "{}", resumed.stdout);
    assert!(lines[0].trim_start().starts_with("1491"), "{}", lines[0]);
    assert!(lines[9].contains("v1.test.round"), "{}", lines[9]);

    let filtered = tail(server, &["--exit-at-head", "--type", "v1.test.round"]).await;
    assert_eq!(filtered.stdout.lines().count(), 3, "{}", filtered.stdout);

    let beyond = tail(server, &["--exit-at-head", "--since", "99999"]).await;
    assert!(!beyond.ok);
    assert!(beyond.stderr.contains("no longer valid"), "{}", beyond.stderr);
}
