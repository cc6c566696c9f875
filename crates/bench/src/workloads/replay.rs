//! Workload d: the views rebuilt in-process by replaying the log, and restored from a snapshot, beside reading the
//! log alone, a raw insert of the rows through sqlx and SQLite's own insert speed through its C API.

use artifactstore_testkit::TestDb;

use crate::report::{percentile, Report, Row};
use crate::{inproc, limits, Sizes};

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) async fn workload_d(report: &mut Report, sizes: &Sizes, work: &std::path::Path) -> anyhow::Result<()> {
    let scratch = TestDb::sqlite().await;
    let raw = limits::raw_insert_speed(&scratch.db, (sizes.d_events as usize).min(1_000_000)).await?;
    let c_api = limits::sqlite_c_insert_speed(work, (sizes.d_events as usize).min(1_000_000), false)?;
    let c_sorted = limits::sqlite_c_insert_speed(work, (sizes.d_events as usize).min(1_000_000), true)?;
    eprintln!(
        "d: raw insert {raw:.0} rows/s, through the C API {c_api:.0} rows/s, in key order {c_sorted:.0} rows/s; \
         filling {} events",
        sizes.d_events
    );
    let log = inproc::fill(&scratch.db, sizes.d_events).await?;
    let read = inproc::read_speed(&log).await?;
    eprintln!("d: read and decode {read:.0} events/s");
    let run = inproc::replay(&log, false).await?;
    let rate = run.events as f64 / run.elapsed.as_secs_f64();
    eprintln!("d: replay {rate:.0} events/s");
    let unfolded = inproc::replay(&log, true).await?;
    let unfolded_rate = unfolded.events as f64 / unfolded.elapsed.as_secs_f64();
    eprintln!("d: replay writing blob rows in log order {unfolded_rate:.0} events/s");
    let mut history = inproc::history_reads(&log, 1_000, 3).await?;
    let (p50, p99) = (percentile(&mut history.listed, 0.50), percentile(&mut history.listed, 0.99));
    let scan = percentile(&mut history.scanned, 0.50);
    eprintln!("d: a blob's history p50 {p50:?}, p99 {p99:?}; through the log {scan:?}");
    let (rows, restore) = inproc::restore(&log).await?;
    let restore_rate = rows as f64 / restore.as_secs_f64();
    eprintln!("d: restore from a snapshot: {rows} rows in {:.2} s, {restore_rate:.0} rows/s", restore.as_secs_f64());
    drop(log);
    drop(scratch);
    report.limit(
        "d",
        "reading the log and decoding every payload (replay's reads alone)",
        format!("{read:.0} events/s"),
    );
    report.limit(
        "d",
        "raw insert speed, SQLite: blob rows straight into the artifact_files view, random digests (one transaction, \
         200-row INSERT OR FAIL through sqlx as replay writes them, replay's page cache, the secondary indexes built \
         after the rows as replay builds them)",
        format!("{raw:.0} rows/s"),
    );
    report.limit(
        "d",
        "SQLite's own insert speed: the same rows through its C API (rusqlite), one prepared single-row INSERT \
         reused, one transaction, replay's page cache, the secondary indexes built after the rows, the durable commit \
         included",
        format!("{c_api:.0} rows/s"),
    );
    // A replay writes this many view rows per event of the workload (every row a snapshot of the result holds).
    let rows_per_event = rows as f64 / run.events.max(1) as f64;
    report.limit(
        "d",
        &format!(
            "SQLite's own insert speed in key order: the same, with the rows sorted by their key first, so every insert \
             lands at the end of the B-tree (SQLite's best case); in events/s at the workload's {rows_per_event:.1} \
             view rows per event"
        ),
        format!("{c_sorted:.0} rows/s = {:.0} events/s", c_sorted / rows_per_event),
    );
    report.push(Row {
        workload: "d",
        what: format!(
            "replay of {} events into empty views (SQLite; 80% blobs, 10% packages of 2 files, 10% holds)",
            run.events
        ),
        ours: format!("{rate:.0} events/s ({:.1} s)", run.elapsed.as_secs_f64()),
        reference: format!(
            "the same replay writing each blob row as its events come (as one from a snapshot does): \
             {unfolded_rate:.0} events/s"
        ),
        ratio: format!(
            "{:.2}× reading alone; {:.2}× in log order; {:.2}× raw insert; {:.2}× SQLite's own insert speed",
            rate / read,
            rate / unfolded_rate,
            rate / raw,
            rate / c_api
        ),
        target: "≥ 250000 events/s".into(),
        met: Some(rate >= 250_000.0),
    });
    report.push(Row {
        workload: "d",
        what: format!(
            "a blob's whole history on the same log of {} events: the feed's read filtered to one file subject from \
             sequence 0, through the blob's row ({} blobs spread over the log, one after another)",
            run.events,
            history.listed.len()
        ),
        ours: format!("p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99)),
        reference: format!("the same read through the log: {:.0} ms (median of {})", ms(scan), history.scanned.len()),
        ratio: format!("{:.0}× faster at p99", ms(scan) / ms(p99).max(0.001)),
        target: "< 10 ms".into(),
        met: Some(ms(p99) < 10.0),
    });
    report.push(Row {
        workload: "d",
        what: format!(
            "the same views rebuilt from a snapshot taken at the head: {rows} rows of the five views inserted, the \
             indexes built, committed (decoding the snapshot file not included; no event left to replay)"
        ),
        ours: format!("{restore_rate:.0} rows/s ({:.1} s)", restore.as_secs_f64()),
        reference: String::new(),
        ratio: format!("{:.2}× raw insert (blob rows)", restore_rate / raw),
        target: "—".into(),
        met: None,
    });
    Ok(())
}
