//! Workload j: the relay catching up: a log of events published from the first to a local NATS JetStream, as a
//! relay that starts behind does, then the lag of events committed while it follows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use artifactstore::relay::{self, RelayConfig};
use artifactstore_testkit::{skip_or_panic, TestDb};

use crate::report::{percentile, Report, Row};
use crate::{inproc, Sizes};

const NATS: &str = "nats://127.0.0.1:4222";

pub(crate) async fn workload_j(report: &mut Report, sizes: &Sizes) -> anyhow::Result<()> {
    let client = match async_nats::connect(NATS).await {
        Ok(client) => client,
        Err(err) => {
            skip_or_panic(&format!("workload j: NATS at {NATS} is unreachable: {err}"));
            return Ok(());
        }
    };
    let js = async_nats::jetstream::new(client);
    let scratch = TestDb::sqlite().await;
    let log = inproc::fill(&scratch.db, sizes.j_events).await?;
    let head = log.read_head().await?.sequence;
    let tag = format!("{}{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1_000_000);
    let config = RelayConfig {
        url: NATS.to_owned(),
        stream: format!("BENCH_RELAY_{tag}"),
        subject_prefix: format!("benchrelay{tag}"),
    };
    // When each sequence was acknowledged by the stream.
    let relayed: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = {
        let (log, config, relayed) = (log.clone(), config.clone(), relayed.clone());
        tokio::spawn(async move {
            let progress = move |sequence| relayed.lock().unwrap().push((sequence, Instant::now()));
            relay::run(log, config, progress, async move { drop(stopped.await) }).await
        })
    };
    let backfill = loop {
        if relayed.lock().unwrap().last().is_some_and(|(s, _)| *s >= head) {
            break started.elapsed();
        }
        anyhow::ensure!(!task.is_finished(), "the relay stopped during the backfill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let rate = head as f64 / backfill.as_secs_f64();
    eprintln!("j: backfill of {head} events in {:.2} s: {rate:.0} events/s", backfill.as_secs_f64());
    // Live: events committed one at a time at about 1,000/s while the relay follows.
    let mut committed = Vec::new();
    for n in 0..sizes.j_live {
        let at = Instant::now();
        let sequence = inproc::append_one(&log, n).await?;
        committed.push((sequence, at));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let last = committed.last().map_or(head, |(s, _)| *s);
    let deadline = Instant::now() + Duration::from_secs(30);
    while relayed.lock().unwrap().last().is_none_or(|(s, _)| *s < last) {
        anyhow::ensure!(Instant::now() < deadline, "the relay did not catch up with the live events");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    task.await?.context("the relay")?;
    let acked: std::collections::HashMap<u64, Instant> = relayed.lock().unwrap().iter().copied().collect();
    let mut lags: Vec<Duration> = committed.iter().map(|(s, at)| acked[s].saturating_duration_since(*at)).collect();
    let p99 = percentile(&mut lags, 0.99);
    eprintln!("j: live lag p99 {:.1} ms over {} events", p99.as_secs_f64() * 1000.0, lags.len());
    // Every event once, in order: the stream holds exactly the log.
    let mut stream = js.get_stream(&config.stream).await?;
    let info = stream.info().await?;
    anyhow::ensure!(info.state.messages == last, "the stream holds {} messages for {last} events", info.state.messages);
    js.delete_stream(&config.stream).await?;
    let lag_ms = p99.as_secs_f64() * 1000.0;
    report.push(Row {
        workload: "j",
        what: format!(
            "relay to a local JetStream: a backfill of {head} events from the first, then {} events committed at \
             about 1,000/s while it follows",
            lags.len()
        ),
        ours: format!("{rate:.0} events/s; live lag p99 {lag_ms:.1} ms"),
        reference: String::new(),
        ratio: String::new(),
        target: "≥ 50000 events/s and lag p99 < 50 ms".into(),
        met: Some(rate >= 50_000.0 && lag_ms < 50.0),
    });
    Ok(())
}
