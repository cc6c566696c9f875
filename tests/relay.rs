//! The broker relay against the real local NATS JetStream server: killed mid-run and restarted, the stream
//! still holds every event exactly once, in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use artifactstore::relay::{header_names, RelayConfig};
use artifactstore_eventlog::NewEvent;
use artifactstore_testkit::skip_or_panic;
use artifactstore_tests::TestApp;
use uuid::Uuid;

const NATS: &str = "nats://127.0.0.1:4222";

async fn nats() -> Option<async_nats::Client> {
    match async_nats::connect(NATS).await {
        Ok(client) => Some(client),
        Err(err) => {
            skip_or_panic(&format!("NATS at {NATS} is unreachable: {err}"));
            None
        }
    }
}

fn event(n: u64) -> NewEvent {
    let event_type = if n.is_multiple_of(2) { "v1.test.even" } else { "v1.test.odd" };
    artifactstore_tests::event(event_type, Some(n.into()), &serde_json::json!({"n": n}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_resumes_and_the_stream_holds_every_event_once() {
    let Some(client) = nats().await else { return };
    let app = TestApp::sqlite().await;
    let log = app.log.clone();
    let name = format!("T{}", Uuid::new_v4().simple());
    let config = RelayConfig { url: NATS.into(), stream: name.clone(), subject_prefix: name.to_lowercase() };
    let js = async_nats::jetstream::new(client);

    for n in 1..=300 {
        log.append(event(n)).await.unwrap();
    }
    // First run: killed once it has relayed some, but not all, events.
    let relayed = Arc::new(AtomicU64::new(0));
    let seen = relayed.clone();
    // Past event 120 the first run dawdles after each acknowledgement, so the kill lands mid-run.
    let first = tokio::spawn(artifactstore::relay::run(
        log.clone(),
        config.clone(),
        move |n| {
            seen.store(n, Ordering::SeqCst);
            if n >= 120 {
                std::thread::sleep(Duration::from_millis(50));
            }
        },
        std::future::pending(),
    ));
    while relayed.load(Ordering::SeqCst) < 120 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.abort();
    let _ = first.await;
    let at_kill = relayed.load(Ordering::SeqCst);
    assert!(at_kill < 300, "killed mid-run at {at_kill}");

    // More events while it is down, then a second run that must resume, not repeat.
    for n in 301..=400 {
        log.append(event(n)).await.unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relayed = Arc::new(AtomicU64::new(0));
    let seen = relayed.clone();
    let second = tokio::spawn(artifactstore::relay::run(
        log.clone(),
        config.clone(),
        move |n| seen.store(n, Ordering::SeqCst),
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while relayed.load(Ordering::SeqCst) < 400 {
        assert!(tokio::time::Instant::now() < deadline, "the relay did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Live events after catching up are relayed too.
    log.append(event(401)).await.unwrap();
    while relayed.load(Ordering::SeqCst) < 401 {
        assert!(tokio::time::Instant::now() < deadline, "the relay missed a live event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    second.await.unwrap().unwrap();

    let mut stream = js.get_stream(&name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 401, "exactly one message per event");
    let log_id = log.head().log_id.to_string();
    for n in 1..=401u64 {
        let message = stream.get_raw_message(n).await.unwrap();
        let header = |name: &str| message.headers.get(name).unwrap().as_str().to_owned();
        assert_eq!(header(header_names::SEQUENCE), n.to_string(), "stream message {n} holds event {n}");
        assert_eq!(header(header_names::LOG_ID), log_id);
        assert_eq!(header("Nats-Msg-Id"), format!("{log_id}:{n}"));
        let stored = log.get(n).await.unwrap().unwrap();
        assert_eq!(header(header_names::EVENT_TYPE), stored.event_type);
        assert_eq!(message.subject.as_str(), format!("{}.{}", name.to_lowercase(), stored.event_type));
        let envelope: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(envelope["sequence"], n);
        assert_eq!(envelope["payload"]["n"], n);
    }
    js.delete_stream(&name).await.unwrap();
}

#[tokio::test]
async fn a_relay_refuses_a_stream_written_from_another_log() {
    let Some(client) = nats().await else { return };
    let js = async_nats::jetstream::new(client);
    let name = format!("T{}", Uuid::new_v4().simple());
    let config = RelayConfig { url: NATS.into(), stream: name.clone(), subject_prefix: name.to_lowercase() };
    for round in 0..2 {
        let app = TestApp::sqlite().await;
        let log = app.log.clone();
        log.append(event(1)).await.unwrap();
        let relayed = Arc::new(AtomicU64::new(0));
        let seen = relayed.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(artifactstore::relay::run(
            log,
            config.clone(),
            move |n| seen.store(n, Ordering::SeqCst),
            async {
                let _ = stopped.await;
            },
        ));
        if round == 0 {
            while relayed.load(Ordering::SeqCst) < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = stop.send(());
            run.await.unwrap().unwrap();
        } else {
            let err = run.await.unwrap().unwrap_err();
            assert!(format!("{err:#}").contains("another stream"), "{err:#}");
        }
    }
    js.delete_stream(&name).await.unwrap();
}
