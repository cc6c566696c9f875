//! Workload e: SSE subscribers following `serve` while blobs are committed at a steady rate, beside the same
//! subscribers following a bare fan-out server (`fanout`).

use std::time::Duration;

use crate::report::{percentile, Report, Row};
use crate::servers::{CpuShare, Server};
use crate::{fanout, sse, Sizes};

pub(crate) async fn workload_e(
    report: &mut Report,
    sizes: &Sizes,
    bin: &std::path::Path,
    work: &std::path::Path,
) -> anyhow::Result<()> {
    let server = Server::artifactstore(bin, &work.join("e")).await?;
    let (mut run, cpu) =
        CpuShare::measure(&server.process, sse::run(&server.base, sizes.e_subscribers, sizes.e_events, sizes.e_rate))
            .await?;
    drop(server);
    let (p50, p99, max) = spread(&mut run.latencies);
    eprintln!("e: p50 {p50:?} p99 {p99:?} max {max:?}, reconnects {}; {cpu}", run.reconnects);

    let plan = fanout::Plan { subscribers: sizes.e_subscribers, events: sizes.e_events, rate: sizes.e_rate };
    std::fs::create_dir_all(work.join("e-fanout"))?;
    let bare = fanout::FanoutServer::start(&work.join("e-fanout"), plan).await?;
    let (mut alone, bare_cpu) =
        CpuShare::measure(&bare.process, sse::run_fanout(&bare.base, sizes.e_subscribers, sizes.e_events)).await?;
    drop(bare);
    let (bare_p50, bare_p99, bare_max) = spread(&mut alone.latencies);
    eprintln!(
        "e: bare fan-out p50 {bare_p50:?} p99 {bare_p99:?} max {bare_max:?}, reconnects {}; {bare_cpu}",
        alone.reconnects
    );
    report.limit(
        "e",
        &format!(
            "the same {} subscribers following a bare fan-out server ({} frames rendered once each at {}/s and handed \
             to every stream, waiting frames written together; no database, no uploads): send → delivery, and the \
             cores it and the subscribers kept busy",
            sizes.e_subscribers, sizes.e_events, sizes.e_rate
        ),
        format!(
            "p50 {}, p99 {}, max {}; {} reconnects; {bare_cpu}",
            ms(bare_p50),
            ms(bare_p99),
            ms(bare_max),
            alone.reconnects
        ),
    );
    report.push(Row {
        workload: "e",
        what: format!("{} SSE subscribers, {} events committed at {}/s", run.subscribers, run.events, sizes.e_rate),
        ours: format!(
            "commit → delivery p50 {}, p99 {}, max {}; {} deliveries, none missed or repeated, {} reconnects",
            ms(p50),
            ms(p99),
            ms(max),
            run.latencies.len(),
            run.reconnects
        ),
        reference: format!(
            "offered {:.0} events/s over {:.1} s; {cpu} (subscribers and producer)",
            run.events as f64 / run.elapsed.as_secs_f64(),
            run.elapsed.as_secs_f64()
        ),
        ratio: format!("p99 {:.1}× the bare fan-out's", p99.as_secs_f64() / bare_p99.as_secs_f64().max(1e-6)),
        target: "p99 ≤ 50 ms, none missed".into(),
        met: Some(p99 <= Duration::from_millis(50)),
    });
    Ok(())
}

/// p50, p99 and the maximum of some latencies.
fn spread(latencies: &mut [Duration]) -> (Duration, Duration, Duration) {
    (percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 1.0))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
