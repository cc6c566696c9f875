//! Workload c: events appended in-process by 1, 16 and 64 appenders on SQLite and on PostgreSQL, beside one fsync
//! per event and the database alone committing groups of the workload's rows.

use std::time::Duration;

use artifactstore_db::Backend;
use artifactstore_testkit::TestDb;

use crate::report::{percentile, Report, Row};
use crate::{inproc, limits, Sizes};

pub(crate) async fn workload_c(report: &mut Report, sizes: &Sizes, work: &std::path::Path) -> anyhow::Result<()> {
    let fsync_1 = limits::fsync_rate(work, 1, Duration::from_secs(1))?;
    report.limit(
        "c",
        "one fsync per event (a 4 KiB file fsynced per event, 1 thread)",
        format!("{fsync_1:.0} events/s"),
    );
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // The database and driver alone, committing the largest groups 64 appenders can form.
        let Some(scratch) = TestDb::of(backend).await else { continue };
        let groups = (sizes.c_events / 64).max(10) as usize;
        let alone = limits::grouped_commit_speed(&scratch.db, 64, groups).await?;
        drop(scratch);
        eprintln!("c: {backend:?} alone, groups of 64: {alone:.0} events/s");
        report.limit(
            "c",
            &format!(
                "{}: 64 event rows per transaction committed one after another, one multi-row INSERT (OR FAIL on \
                 SQLite, as the committer's) and the commit alone (no head, hashing or queue); rows as the workload's, a random-looking subject id each",
                backend_name(backend)
            ),
            format!("{alone:.0} events/s"),
        );
        for appenders in [1usize, 16, 64] {
            // A database of its own (PostgreSQL: a schema, dropped afterwards), from the tests' kit.
            let Some(scratch) = TestDb::of(backend).await else { continue };
            let events = if appenders == 1 { sizes.c_events / 8 } else { sizes.c_events };
            let mut run = inproc::append(&scratch.db, appenders, events).await?;
            drop(scratch);
            let rate = run.events as f64 / run.elapsed.as_secs_f64();
            let (p50, p99) = (percentile(&mut run.latencies, 0.50), percentile(&mut run.latencies, 0.99));
            eprintln!(
                "c: {backend:?} {appenders}: {rate:.0} events/s p50 {p50:?} p99 {p99:?}, {} commits",
                run.commits
            );
            let (floor, p99_cap) = match (backend, appenders) {
                (Backend::Sqlite, 64) => (Some(50_000.0), Some(Duration::from_millis(10))),
                (Backend::Postgres, 64) => (Some(20_000.0), None),
                _ => (None, None),
            };
            let met = floor.map(|f| rate >= f && p99_cap.is_none_or(|cap| p99 < cap));
            report.push(Row {
                workload: "c",
                what: format!(
                    "{}, {appenders} appender{}",
                    backend_name(backend),
                    if appenders == 1 { "" } else { "s" }
                ),
                ours: format!(
                    "{rate:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} events per commit",
                    p50.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3,
                    run.events as f64 / run.commits.max(1) as f64
                ),
                reference: String::new(),
                ratio: if appenders == 64 {
                    format!(
                        "{:.1}× one fsync per event; {:.0}% of the database alone",
                        rate / fsync_1,
                        100.0 * rate / alone
                    )
                } else {
                    format!("{:.1}× one fsync per event", rate / fsync_1)
                },
                target: match (floor, p99_cap) {
                    (Some(f), Some(cap)) => format!("≥ {f:.0}/s, p99 < {} ms", cap.as_millis()),
                    (Some(f), None) => format!("≥ {f:.0}/s"),
                    _ => "—".into(),
                },
                met,
            });
        }
    }
    Ok(())
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}
