//! Workload e: SSE subscribers following `serve` while blobs are committed at a steady rate, beside the same
//! subscribers following a bare fan-out server (`fanout`); and subscribers of one instance on PostgreSQL following
//! the commits of another.

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
        ours: delivered(&run, (p50, p99, max)),
        reference: format!(
            "offered {:.0} events/s over {:.1} s; {cpu} (subscribers and producer)",
            run.events as f64 / run.elapsed.as_secs_f64(),
            run.elapsed.as_secs_f64()
        ),
        ratio: format!("p99 {:.1}× the bare fan-out's", p99.as_secs_f64() / bare_p99.as_secs_f64().max(1e-6)),
        target: "p99 ≤ 50 ms, none missed".into(),
        met: Some(p99 <= Duration::from_millis(50)),
    });
    across_instances(report, sizes, bin, work).await
}

/// Two `serve` instances on one PostgreSQL database: blobs committed to the first at `e_rate`, SSE subscribers of
/// the second. The commit → delivery latency is the cross-instance wake-up's (ADR 0029).
async fn across_instances(
    report: &mut Report,
    sizes: &Sizes,
    bin: &std::path::Path,
    work: &std::path::Path,
) -> anyhow::Result<()> {
    let url = artifactstore_testkit::postgres_url();
    let admin = match sqlx::PgPool::connect(&url).await {
        Ok(pool) => pool,
        Err(err) => {
            artifactstore_testkit::skip_or_panic(&format!("workload e across instances: PostgreSQL at {url}: {err}"));
            return Ok(());
        }
    };
    let name = format!("bench_e_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    let database = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => anyhow::bail!("a PostgreSQL URL without a database: {url}"),
    };
    let subscribers = (sizes.e_subscribers / 10).max(1);
    let measured = async {
        let args = ["--database", database.as_str()];
        let a = Server::artifactstore_with(bin, &work.join("e-pg-a"), &args).await?;
        let b = Server::artifactstore_with(bin, &work.join("e-pg-b"), &args).await?;
        sse::run_across(&b.base, &a.base, subscribers, sizes.e_events, sizes.e_rate).await
    }
    .await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await?;
    let mut run = measured?;
    let (p50, p99, max) = spread(&mut run.latencies);
    eprintln!("e: across instances p50 {p50:?} p99 {p99:?} max {max:?}, reconnects {}", run.reconnects);
    report.push(Row {
        workload: "e",
        what: format!(
            "across instances on PostgreSQL: {} events committed at {}/s to one instance, {} SSE subscribers of \
             another",
            run.events, sizes.e_rate, run.subscribers
        ),
        ours: delivered(&run, (p50, p99, max)),
        reference: format!(
            "offered {:.0} events/s over {:.1} s",
            run.events as f64 / run.elapsed.as_secs_f64(),
            run.elapsed.as_secs_f64()
        ),
        ratio: String::new(),
        target: "p99 ≤ 50 ms, none missed".into(),
        met: Some(p99 <= Duration::from_millis(50)),
    });
    Ok(())
}

/// A run's commit → delivery figures, as its row shows them.
fn delivered(run: &sse::FeedRun, (p50, p99, max): (Duration, Duration, Duration)) -> String {
    format!(
        "commit → delivery p50 {}, p99 {}, max {}; {} deliveries, none missed or repeated, {} reconnects",
        ms(p50),
        ms(p99),
        ms(max),
        run.latencies.len(),
        run.reconnects
    )
}

/// p50, p99 and the maximum of some latencies.
fn spread(latencies: &mut [Duration]) -> (Duration, Duration, Duration) {
    (percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 1.0))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
