//! The log's behaviour on both backends: sequences, chain, group commit, rollback, tamper detection.

use std::collections::BTreeSet;
use std::sync::Arc;

use artifactstore_db::{execute, Backend};
use artifactstore_eventlog::{
    read_range, Error, EventLog, Filter, LogOptions, NewEvent, Refused, SubjectKind, TypeFilter,
};
use artifactstore_testkit::{TestDb, BACKENDS};
use uuid::Uuid;

fn event(n: u64) -> NewEvent {
    #[derive(serde::Serialize)]
    struct Payload {
        n: u64,
        note: &'static str,
    }
    NewEvent {
        event_type: if n.is_multiple_of(2) { "v1.test.even".into() } else { "v1.test.odd".into() },
        subject_kind: SubjectKind::System,
        subject_id: n.is_multiple_of(3).then(|| Uuid::from_u128(u128::from(n))),
        actor: "tester".into(),
        payload: artifactstore_cbor::to_vec(&Payload { n, note: "a test event" }).unwrap(),
    }
}

async fn open(test: &TestDb) -> EventLog {
    EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap()
}

#[tokio::test]
async fn appends_are_numbered_from_one_and_chained() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        let genesis = log.head();
        assert_eq!(genesis.sequence, 0);
        assert_eq!(genesis.chain_hash, [0; 32]);
        let mut previous = genesis.chain_hash;
        for n in 1..=20 {
            let appended = log.append(event(n)).await.unwrap();
            assert_eq!(appended.sequence, n, "{backend:?}");
            assert_eq!(appended.chain_hash, artifactstore_eventlog::chain_hash(&previous, &appended));
            assert_eq!(appended.payload_digest, *blake3::hash(&appended.payload).as_bytes());
            previous = appended.chain_hash;
            // What the database returns is exactly what was appended.
            assert_eq!(log.get(n).await.unwrap().as_ref(), Some(&appended));
        }
        let head = log.read_head().await.unwrap();
        assert_eq!((head.sequence, head.chain_hash, head.log_id), (20, previous, genesis.log_id));
        assert_eq!(log.head(), head, "the in-process head follows commits");
        let report = log.verify_chain(|_, _| {}).await.unwrap();
        assert!(report.is_ok(), "{backend:?}: {report:?}");
        assert_eq!(report.events_checked, 20);

        // Reopening keeps the identity and the head.
        let reopened = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
        assert_eq!(reopened.head(), head);
    }
}

#[tokio::test]
async fn filtered_reads_respect_bounds_and_filters() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        for n in 1..=12 {
            log.append(event(n)).await.unwrap();
        }
        let seqs = |events: Vec<artifactstore_eventlog::Event>| events.iter().map(|e| e.sequence).collect::<Vec<_>>();
        assert_eq!(seqs(log.read(0, 12, 100, &Filter::default()).await.unwrap()), (1..=12).collect::<Vec<_>>());
        assert_eq!(seqs(log.read(3, 7, 100, &Filter::default()).await.unwrap()), vec![4, 5, 6, 7]);
        assert_eq!(seqs(log.read(0, 12, 3, &Filter::default()).await.unwrap()), vec![1, 2, 3]);
        let even = Filter { event_type: Some(TypeFilter::Exact("v1.test.even".into())), ..Filter::default() };
        assert_eq!(seqs(log.read(0, 12, 100, &even).await.unwrap()), vec![2, 4, 6, 8, 10, 12]);
        let prefix = Filter { event_type: Some(TypeFilter::Prefix("v1.test.".into())), ..Filter::default() };
        assert_eq!(seqs(log.read(0, 12, 100, &prefix).await.unwrap()).len(), 12);
        let other = Filter { event_type: Some(TypeFilter::Prefix("v1.tes.".into())), ..Filter::default() };
        assert!(log.read(0, 12, 100, &other).await.unwrap().is_empty());
        let subject = Filter { subject_id: Some(Uuid::from_u128(9)), ..Filter::default() };
        assert_eq!(seqs(log.read(0, 12, 100, &subject).await.unwrap()), vec![9]);
        let kind = Filter { subject_kind: Some("package".into()), ..Filter::default() };
        assert!(log.read(0, 12, 100, &kind).await.unwrap().is_empty());
    }
}

/// Reads filtered by subject kind, subject id and type return exactly what `Filter::matches` lets through, in order,
/// whether the filter's read goes through an index (packages, retention, the system; exact types) or scans the range
/// (files and storage, named by digests).
#[tokio::test]
async fn filtered_reads_agree_with_the_filter_for_every_kind() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        // Five subjects of each kind, each named by several events.
        let id = |n: u64| Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(n % 5));
        let mut all = Vec::new();
        for n in 0..60u64 {
            let kind = SubjectKind::ALL[(n % 5) as usize];
            let mut e = event(n);
            e.event_type = format!("v1.{kind}.{}", if n % 3 == 0 { "made" } else { "changed" });
            e.subject_kind = kind;
            e.subject_id = Some(id(n / 5));
            all.push(log.append(e).await.unwrap());
        }
        let mut filters = vec![Filter::default()];
        for kind in SubjectKind::ALL {
            let kind_only = Filter { subject_kind: Some(kind.as_str().into()), ..Filter::default() };
            for n in 0..5 {
                filters.push(Filter { subject_id: Some(id(n)), ..kind_only.clone() });
            }
            filters
                .push(Filter { event_type: Some(TypeFilter::Exact(format!("v1.{kind}.made"))), ..kind_only.clone() });
            filters.push(Filter { event_type: Some(TypeFilter::Prefix(format!("v1.{kind}."))), ..Filter::default() });
            filters.push(kind_only);
        }
        filters.push(Filter { subject_id: Some(id(2)), ..Filter::default() });
        filters.push(Filter { subject_kind: Some("nonsense".into()), ..Filter::default() });
        for filter in &filters {
            let expected: Vec<_> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
            assert_eq!(log.read(0, 60, 1000, filter).await.unwrap(), expected, "{backend:?}: {filter:?}");
            let bounded: Vec<_> =
                expected.iter().filter(|e| e.sequence > 10 && e.sequence <= 50).take(3).cloned().collect();
            assert_eq!(log.read(10, 50, 3, filter).await.unwrap(), bounded, "{backend:?}, bounded: {filter:?}");
        }
    }
}

#[tokio::test]
async fn invalid_events_are_refused_and_leave_no_trace() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        let mut bad_type = event(1);
        bad_type.event_type = "v2.nope".into();
        assert!(matches!(log.append(bad_type).await, Err(Error::InvalidEventType(_))));
        let mut not_canonical = event(1);
        // {"b": 1, "a": 2}: keys out of order.
        not_canonical.payload = vec![0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02];
        assert!(matches!(log.append(not_canonical).await, Err(Error::NonCanonicalPayload(_))));
        let mut trailing = event(1);
        trailing.payload.push(0x00);
        assert!(matches!(log.append(trailing).await, Err(Error::NonCanonicalPayload(_))));
        let mut no_actor = event(1);
        no_actor.actor.clear();
        assert!(matches!(log.append(no_actor).await, Err(Error::InvalidActor)));
        assert_eq!(log.read_head().await.unwrap().sequence, 0);
    }
}

#[tokio::test]
async fn concurrent_units_are_grouped_and_a_failing_one_rolls_back_alone() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.transact(move |wtx| {
                    Box::pin(async move {
                        let first = wtx.append(event(i))?;
                        let second = wtx.append(event(i + 1000))?;
                        assert_eq!(second.sequence, first.sequence + 1, "a unit's events are contiguous");
                        if i % 8 == 7 {
                            // Fails after appending: both events must vanish.
                            return Err(Error::Corrupt(format!("unit {i} gives up")));
                        }
                        if i == 13 {
                            panic!("unit 13 panics");
                        }
                        Ok((first.sequence, second.sequence))
                    })
                })
                .await
            }));
        }
        let mut committed = BTreeSet::new();
        let mut failed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok((a, b)) => {
                    committed.insert(a);
                    committed.insert(b);
                }
                Err(Error::Corrupt(_) | Error::WorkPanicked) => failed += 1,
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!(failed, 9, "{backend:?}: 8 units gave up and one panicked");
        assert_eq!(committed.len(), 110);
        // What the callers were told is exactly what the log holds: 1..=110, no gaps.
        assert_eq!(committed, (1..=110).collect::<BTreeSet<_>>(), "{backend:?}");
        let mut conn = test.db.acquire().await.unwrap();
        let stored = read_range(&mut conn, 0, 1000).await.unwrap();
        assert_eq!(stored.len(), 110);
        assert!(stored
            .iter()
            .all(|e| !matches!(payload_n(&e.payload) % 1000, 7 | 15 | 23 | 31 | 39 | 47 | 55 | 63 | 13)));
        assert!(log.verify_chain(|_, _| {}).await.unwrap().is_ok());
        // Grouping happened: far fewer commits than units of work.
        let stats = log.stats();
        assert_eq!((stats.units, stats.events), (64, 110), "{backend:?}");
        assert!(stats.commits * 4 <= stats.units, "{backend:?}: {stats:?} shows no grouping");
        // The log still works after a panicking unit.
        assert_eq!(log.append(event(5000)).await.unwrap().sequence, 111);
    }
}

fn payload_n(payload: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Payload {
        n: u64,
    }
    artifactstore_cbor::from_slice::<Payload>(payload).map(|p| p.n).unwrap_or(u64::MAX)
}

/// Eight appending tasks, each its own instance (pool and committer), race while a tailer follows `sequence > N`
/// with nothing but that query: it must see 1..N exactly once, in order, with no gap.
#[tokio::test]
async fn a_tailer_following_sequence_greater_than_n_never_skips() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        const WRITERS: u64 = 8;
        const PER_WRITER: u64 = 150;
        let total = WRITERS * PER_WRITER;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let db = test.connect_again().await;
            writers.push(tokio::spawn(async move {
                let log = EventLog::open(db, LogOptions::default()).await.unwrap();
                for i in 0..PER_WRITER {
                    log.append(event(w * 10_000 + i)).await.unwrap();
                }
            }));
        }
        let tail_db = test.connect_again().await;
        let tailer = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let started = std::time::Instant::now();
            while after < total {
                assert!(started.elapsed().as_secs() < 120, "tailer stalled at {after}");
                let mut conn = tail_db.acquire().await.unwrap();
                let batch = read_range(&mut conn, after, 37).await.unwrap();
                for e in &batch {
                    assert_eq!(e.sequence, after + 1, "gap or repeat after {after}");
                    after = e.sequence;
                    seen.push(e.sequence);
                }
                if batch.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            seen
        });
        for w in writers {
            w.await.unwrap();
        }
        let seen = tailer.await.unwrap();
        assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "{backend:?}");
        let log = open(&test).await;
        assert!(log.verify_chain(|_, _| {}).await.unwrap().is_ok());
    }
}

#[tokio::test]
async fn events_cannot_be_changed_and_tampering_is_detected() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        for n in 1..=5 {
            log.append(event(n)).await.unwrap();
        }
        let mut conn = test.db.acquire().await.unwrap();
        let update = execute!(&mut conn, "UPDATE events SET actor = 'mallory' WHERE sequence = 3");
        assert!(update.is_err(), "{backend:?}: events are immutable");
        let delete = execute!(&mut conn, "DELETE FROM events WHERE sequence = 5");
        assert!(delete.is_err(), "{backend:?}: events are append-only");

        // Someone with raw access drops the guard and rewrites history.
        match backend {
            Backend::Sqlite => {
                execute!(&mut conn, "DROP TRIGGER events_are_immutable").unwrap();
            }
            Backend::Postgres => {
                execute!(&mut conn, "ALTER TABLE events DISABLE TRIGGER events_are_immutable").unwrap();
            }
        }
        execute!(&mut conn, "UPDATE events SET actor = 'mallory' WHERE sequence = 3").unwrap();
        drop(conn);
        let report = log.verify_chain(|_, _| {}).await.unwrap();
        assert!(!report.is_ok());
        assert_eq!(report.faults.len(), 1, "{report:?}");
        assert_eq!(report.faults[0].sequence, 3);
    }
}

#[tokio::test]
async fn closed_log_answers_closed_not_hang() {
    let test = TestDb::sqlite().await;
    let log = Arc::new(open(&test).await);
    log.append(event(1)).await.unwrap();
    test.db.close().await;
    let err = log.append(event(2)).await.unwrap_err();
    assert!(matches!(err, Error::Batch(_)), "{err}");
}

/// The committer keeps a connection between groups; closing the database must not wait for it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_database_takes_back_the_committers_connection() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        // A unit runs in a transaction on the committer's kept connection (plain appends would too).
        log.transact(|wtx| Box::pin(async move { wtx.append(event(1)) })).await.unwrap();
        log.append(event(2)).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), test.db.close())
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: close waited for the committer's connection"));
        assert!(log.append(event(3)).await.is_err(), "{backend:?}: a closed database takes no writes");
    }
}

/// Plain appends from many tasks are inserted together, one multi-row statement per group; invalid ones among
/// them are refused alone and take no sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_plain_appends_are_grouped_and_invalid_ones_take_no_sequence() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        let mut tasks = Vec::new();
        for task in 0..64u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut sequences = Vec::new();
                for i in 0..40u64 {
                    let n = task * 1_000 + i;
                    if i % 10 == 9 {
                        let mut bad = event(n);
                        bad.actor.clear();
                        assert!(matches!(log.append(bad).await, Err(Error::InvalidActor)));
                    } else {
                        let appended = log.append(event(n)).await.unwrap();
                        assert_eq!(appended.actor, "tester");
                        sequences.push((appended.sequence, n));
                    }
                }
                sequences
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort_unstable();
        let expected = 64 * 36;
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=expected).collect::<Vec<_>>());
        let stats = log.stats();
        assert!(stats.commits < stats.events, "some appends shared a commit: {stats:?}");
        assert!(stats.checked > 0 && stats.moved == 0, "groups went out as one checked statement: {stats:?}");
        let mut conn = test.db.acquire().await.unwrap();
        let stored = read_range(&mut conn, 0, 10_000).await.unwrap();
        assert_eq!(stored.len() as u64, expected);
        for (event, (sequence, n)) in stored.iter().zip(&all) {
            assert_eq!(event.sequence, *sequence);
            assert_eq!(payload_n(&event.payload), *n, "event {sequence} holds what its append was given");
        }
        let report = log.verify_chain(|_, _| {}).await.unwrap();
        assert!(report.faults.is_empty(), "{:?}", report.faults);
    }
}

/// A committer writes a group of plain appends in one statement that checks the head it last knew; when another
/// writer (a second instance, or a transaction outside the committer) has moved the head, that statement writes
/// nothing and the group runs the ordinary way, so no sequence is taken twice and the chain never forks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_stay_gapless_when_another_writer_moves_the_head() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let first = open(&test).await;
        let second = EventLog::open(test.connect_again().await, LogOptions::default()).await.unwrap();

        // Deterministic: each log's known head goes stale in turn.
        assert_eq!(first.append(event(1)).await.unwrap().sequence, 1);
        assert_eq!(second.append(event(2)).await.unwrap().sequence, 2);
        assert_eq!(first.append(event(3)).await.unwrap().sequence, 3, "{backend:?}: the first log saw head 1");
        let mut outside = first.begin().await.unwrap();
        assert_eq!(outside.append(event(4)).unwrap().sequence, 4);
        first.commit(outside).await.unwrap();
        assert_eq!(first.append(event(5)).await.unwrap().sequence, 5, "{backend:?}: after a write outside");
        assert_eq!(second.append(event(6)).await.unwrap().sequence, 6);
        let (a, b) = (first.stats(), second.stats());
        assert_eq!((a.moved, b.moved), (2, 1), "{backend:?}: each stale head was noticed: {a:?} {b:?}");
        assert_eq!(second.append(event(7)).await.unwrap().sequence, 7);
        assert_eq!(
            second.stats().checked,
            b.checked + 1,
            "{backend:?}: the head it wrote last was current: {b:?} {:?}",
            second.stats()
        );

        // Concurrent: both logs, 16 appenders each.
        let mut tasks = Vec::new();
        for task in 0..32u64 {
            let log = if task % 2 == 0 { first.clone() } else { second.clone() };
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..25u64 {
                    let n = 1_000 + task * 100 + i;
                    got.push((log.append(event(n)).await.unwrap().sequence, n));
                }
                got
            }));
        }
        let mut all: Vec<(u64, u64)> = (1..=7).map(|n| (n, n)).collect();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort_unstable();
        let total = 7 + 32 * 25;
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>(), "{backend:?}");
        let mut conn = test.db.acquire().await.unwrap();
        let stored = read_range(&mut conn, 0, 10_000).await.unwrap();
        assert_eq!(stored.len() as u64, total);
        for (event, (sequence, n)) in stored.iter().zip(&all) {
            assert_eq!(payload_n(&event.payload), *n, "{backend:?}: event {sequence} holds what its append was given");
        }
        let head = first.read_head().await.unwrap();
        assert_eq!(head.sequence, total);
        let report = first.verify_chain(|_, _| {}).await.unwrap();
        assert!(report.faults.is_empty(), "{backend:?}: {:?}", report.faults);
    }
}

/// Single-statement and unfenced units (no savepoint of their own on SQLite) grouped with fenced units. A statement
/// the database refuses leaves nothing, and an unfenced unit it ends forgets the event it appended; a fenced unit
/// that fails after writing leaves nothing; a unit without a savepoint that fails after its statement wrote, or a
/// statement that makes SQLite end the whole transaction (`RAISE(ROLLBACK)`, as a full disk would), fails its whole
/// group. Whatever happens, what each caller is told is what the database holds, and the log holds the events of
/// exactly the units told they succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_units_group_with_fenced_units_and_callers_are_told_the_truth() {
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        {
            let mut conn = test.db.acquire().await.unwrap();
            execute!(&mut conn, "CREATE TABLE scratch (id BIGINT PRIMARY KEY, note TEXT NOT NULL)").unwrap();
            execute!(&mut conn, "INSERT INTO scratch (id, note) VALUES (1000, 'there before')").unwrap();
            if backend == Backend::Sqlite {
                execute!(
                    &mut conn,
                    "CREATE TRIGGER boom BEFORE INSERT ON scratch WHEN NEW.note = 'boom' \
                     BEGIN SELECT RAISE(ROLLBACK, 'the whole transaction ends'); END"
                )
                .unwrap();
            }
        }
        let log = open(&test).await;
        let mut told_ok = BTreeSet::from([1000i64]);
        let mut events = 0;
        // Three waves of 64 concurrent units: the first holds only failures that undo themselves, so exactly the
        // units meant to fail do; the others also hold failures that take their whole group down.
        for wave in 0..3i64 {
            let mut tasks = Vec::new();
            for i in wave * 64..(wave + 1) * 64 {
                let log = log.clone();
                tasks.push(tokio::spawn(unit(log, backend, i, wave > 0)));
            }
            for task in tasks {
                let (i, ok, must_fail, appends) = task.await.unwrap();
                if must_fail || wave == 0 {
                    assert_eq!(ok, !must_fail, "{backend:?}: unit {i}");
                }
                if ok {
                    told_ok.insert(i);
                    events += u64::from(appends);
                }
            }
        }
        let mut conn = test.db.acquire().await.unwrap();
        let rows: Vec<(i64,)> = artifactstore_db::fetch_all!(&mut conn, (i64,), "SELECT id FROM scratch").unwrap();
        let stored: BTreeSet<i64> = rows.into_iter().map(|(id,)| id).collect();
        assert_eq!(stored, told_ok, "{backend:?}: exactly the units told they succeeded left rows");
        assert!(told_ok.len() > 48, "{backend:?}: the first wave's units succeed ({} did)", told_ok.len() - 1);
        assert_eq!(log.head().sequence, events, "{backend:?}");
        assert_eq!(log.read_head().await.unwrap().sequence, events, "{backend:?}");
        assert!(log.verify_chain(|_, _| {}).await.unwrap().is_ok());
        let stats = log.stats();
        assert!(stats.commits * 4 <= stats.units, "{backend:?}: {stats:?} shows no grouping");
    }
}

/// One unit of `statement_units_group_with_fenced_units_and_callers_are_told_the_truth`: (its number, whether it
/// was told it succeeded, whether it must fail, whether it appends an event). Even units are one statement: every
/// eighth of them collides with a row that was there before; with `wreck`, some fail after writing and, on SQLite,
/// one ends the whole transaction. Units `4k + 1` are fenced; every other one fails after writing. Units `4k + 3`
/// are unfenced: they append an event, then insert; two of every sixteen collide (a clean refusal), and with
/// `wreck` one fails after its insert wrote.
async fn unit(log: EventLog, backend: Backend, i: i64, wreck: bool) -> (i64, bool, bool, bool) {
    if i % 4 == 3 {
        let id = if matches!(i % 64, 7 | 39) { 1000 } else { i };
        let dirty = wreck && i % 64 == 31;
        let written = log
            .transact_reporting(move |wtx| {
                Box::pin(async move {
                    wtx.append(event(u64::try_from(i).unwrap()))?;
                    execute!(wtx.tx(), "INSERT INTO scratch (id, note) VALUES ($1, 'unfenced')", id)
                        .map_err(Refused::statement)?;
                    if dirty {
                        return Err(Refused::AfterWriting(Error::Corrupt(format!("unit {i} gives up after writing"))));
                    }
                    Ok(())
                })
            })
            .await;
        return (i, written.is_ok(), id == 1000 || dirty, true);
    }
    if i % 2 == 0 {
        let (id, note) = match i % 64 {
            4 | 20 | 36 | 52 => (1000, "statement"),
            32 if wreck && backend == Backend::Sqlite => (i, "boom"),
            _ => (i, "statement"),
        };
        let dirty = wreck && i % 64 == 16;
        let written = log
            .transact_statement(move |tx| {
                Box::pin(async move {
                    execute!(tx, "INSERT INTO scratch (id, note) VALUES ($1, $2)", id, note)?;
                    if dirty {
                        return Err(artifactstore_db::sqlx::Error::RowNotFound);
                    }
                    Ok(())
                })
            })
            .await;
        (i, written.is_ok(), id == 1000 || note == "boom" || dirty, false)
    } else {
        let written = log
            .transact(move |wtx| {
                Box::pin(async move {
                    execute!(wtx.tx(), "INSERT INTO scratch (id, note) VALUES ($1, 'fenced')", i)?;
                    wtx.append(event(u64::try_from(i).unwrap()))?;
                    if i % 8 == 1 {
                        return Err(Error::Corrupt(format!("unit {i} gives up after writing")));
                    }
                    Ok(())
                })
            })
            .await;
        (i, written.is_ok(), i % 8 == 1, true)
    }
}

/// Callers answered by one group who write again at once go in the next group together rather than trickling into
/// several: a group costs one durable commit whatever its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_coming_straight_back_share_the_next_group() {
    const CALLERS: u64 = 64;
    const ROUNDS: u64 = 40;
    for backend in BACKENDS {
        let Some(test) = TestDb::of(backend).await else { continue };
        let log = open(&test).await;
        let before = log.stats();
        let mut tasks = Vec::new();
        for caller in 0..CALLERS {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..ROUNDS {
                    log.append(event(caller * 1_000 + round)).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let stats = log.stats();
        let (events, commits) = (stats.events - before.events, stats.commits - before.commits);
        assert_eq!(events, CALLERS * ROUNDS, "{backend:?}");
        // Full groups would be ROUNDS commits; allow a quarter more for the callers' start and end.
        assert!(commits <= ROUNDS * 5 / 4, "{backend:?}: {events} events took {commits} commits");
        assert!(log.verify_chain(|_, _| {}).await.unwrap().is_ok());
    }
}
