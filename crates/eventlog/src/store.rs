//! The SQL behind the log, for both backends: the head, appends, and reads by sequence.

use artifactstore_db::{fetch_all, fetch_one, fetch_optional, sqlx, AsExec, Backend, Conn, Exec, Tx};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, Event, Head, SubjectKind, GENESIS_CHAIN_HASH};

pub(crate) const EVENT_COLUMNS: &str =
    "sequence, created_at, event_type, subject_kind, subject_id, actor, payload, payload_digest, chain_hash";

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    sequence: i64,
    created_at: DateTime<Utc>,
    event_type: String,
    subject_kind: String,
    subject_id: Option<Uuid>,
    actor: String,
    payload: Vec<u8>,
    payload_digest: Vec<u8>,
    chain_hash: Vec<u8>,
}

impl TryFrom<EventRow> for Event {
    type Error = Error;

    fn try_from(row: EventRow) -> Result<Self, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("event {}: {what}", row.sequence));
        Ok(Event {
            sequence: u64::try_from(row.sequence).map_err(|_| corrupt("negative sequence"))?,
            created_at: row.created_at,
            subject_kind: SubjectKind::parse(&row.subject_kind).ok_or_else(|| corrupt("unknown subject kind"))?,
            payload_digest: row
                .payload_digest
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("payload_digest is not 32 bytes"))?,
            chain_hash: row.chain_hash.as_slice().try_into().map_err(|_| corrupt("chain_hash is not 32 bytes"))?,
            event_type: row.event_type,
            subject_id: row.subject_id,
            actor: row.actor,
            payload: row.payload,
        })
    }
}

#[derive(sqlx::FromRow)]
struct HeadRow {
    log_id: Uuid,
    sequence: i64,
    chain_hash: Vec<u8>,
}

impl TryFrom<HeadRow> for Head {
    type Error = Error;

    fn try_from(row: HeadRow) -> Result<Self, Error> {
        Ok(Head {
            log_id: row.log_id,
            sequence: u64::try_from(row.sequence).map_err(|_| Error::Corrupt("negative head sequence".into()))?,
            chain_hash: row
                .chain_hash
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("head chain_hash is not 32 bytes".into()))?,
        })
    }
}

/// Makes the log's genesis if it has none: a fresh `log_id` and an empty head. Returns the head.
pub(crate) async fn ensure_genesis(tx: &mut Tx) -> Result<Head, Error> {
    artifactstore_db::execute!(
        tx,
        "INSERT INTO log_head (id, log_id, sequence, chain_hash, created_at) VALUES (1, $1, 0, $2, $3) \
         ON CONFLICT (id) DO NOTHING",
        Uuid::now_v7(),
        GENESIS_CHAIN_HASH.to_vec(),
        crate::event::now(),
    )?;
    read_head_in(tx).await
}

/// Reads the head without locking it.
pub(crate) async fn read_head_in<E: AsExec>(target: &mut E) -> Result<Head, Error> {
    let row = fetch_optional!(target, HeadRow, "SELECT log_id, sequence, chain_hash FROM log_head WHERE id = 1")?;
    row.ok_or_else(|| Error::Corrupt("the log has no head row; run migrations and open the log".into()))?.try_into()
}

/// Reads the head and locks it until `tx` ends, so no other transaction can append meanwhile.
///
/// On SQLite the write transaction (`BEGIN IMMEDIATE`) already excludes other writers; on PostgreSQL this is `FOR UPDATE`.
pub async fn lock_head(tx: &mut Tx) -> Result<Head, Error> {
    let sql = match tx.backend() {
        Backend::Sqlite => "SELECT log_id, sequence, chain_hash FROM log_head WHERE id = 1",
        Backend::Postgres => "SELECT log_id, sequence, chain_hash FROM log_head WHERE id = 1 FOR UPDATE",
    };
    let row = fetch_optional!(tx, HeadRow, sql)?;
    row.ok_or_else(|| Error::Corrupt("the log has no head row".into()))?.try_into()
}

/// The PostgreSQL channel on which every commit wakes the other instances on the same database; the payload is
/// `<schema>:<head sequence>`, the schema the log lives in (instances on other schemas ignore it) and the head the
/// commit made (an instance that has it already need not read it).
pub const HEAD_CHANNEL: &str = head_channel!();

/// The channel's name as a literal, for the statement that notifies on it.
macro_rules! head_channel {
    () => {
        "artifactstore_head"
    };
}
use head_channel;

pub(crate) async fn write_head(tx: &mut Tx, head: &Head) -> Result<(), Error> {
    // On PostgreSQL the update also queues a notification, sent when the transaction commits: one per commit,
    // however many events it holds.
    let sql = match tx.backend() {
        Backend::Sqlite => "UPDATE log_head SET sequence = $1, chain_hash = $2 WHERE id = 1",
        Backend::Postgres => concat!(
            "WITH updated AS (UPDATE log_head SET sequence = $1, chain_hash = $2 WHERE id = 1 RETURNING id) \
             SELECT pg_notify('",
            head_channel!(),
            "', current_schema() || ':' || $1::text) FROM updated"
        ),
    };
    let updated = artifactstore_db::execute!(tx, sql, seq(head.sequence), head.chain_hash.to_vec())?;
    if updated != 1 {
        return Err(Error::Corrupt("the log has no head row".into()));
    }
    Ok(())
}

pub(crate) async fn insert_event(tx: &mut Tx, event: &Event) -> Result<(), Error> {
    artifactstore_db::execute!(
        tx,
        "INSERT INTO events (sequence, created_at, event_type, subject_kind, subject_id, actor, payload, payload_digest, chain_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        seq(event.sequence),
        event.created_at,
        event.event_type.as_str(),
        event.subject_kind.as_str(),
        event.subject_id,
        event.actor.as_str(),
        event.payload.as_slice(),
        event.payload_digest.as_slice(),
        event.chain_hash.as_slice(),
    )?;
    Ok(())
}

/// Binds the nine columns of `e`, in `EVENT_COLUMNS` order, to a query being built.
macro_rules! bind_event {
    ($query:expr, $e:expr) => {{
        let e = $e;
        $query
            .bind(seq(e.sequence))
            .bind(e.created_at)
            .bind(e.event_type.as_str())
            .bind(e.subject_kind.as_str())
            .bind(e.subject_id)
            .bind(e.actor.as_str())
            .bind(e.payload.as_slice())
            .bind(e.payload_digest.as_slice())
            .bind(e.chain_hash.as_slice())
    }};
}

/// Rows per multi-row `INSERT` of events: 9 parameters each, far below either backend's limit.
const EVENTS_PER_INSERT: usize = 100;

/// Inserts events in order, up to `EVENTS_PER_INSERT` per statement.
pub(crate) async fn insert_events(tx: &mut Tx, events: &[Event]) -> Result<(), Error> {
    if let [event] = events {
        return insert_event(tx, event).await;
    }
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO events (sequence, created_at, event_type, subject_kind, subject_id, actor, payload, \
             payload_digest, chain_hash) VALUES {}",
            artifactstore_db::placeholders(tx.backend(), chunk.len(), 9)
        );
        macro_rules! bind_all {
            ($query:expr) => {{
                let mut query = $query;
                for e in chunk {
                    query = bind_event!(query, e);
                }
                query
            }};
        }
        match tx.as_exec() {
            Exec::Sqlite(c) => bind_all!(sqlx::query(&sql)).execute(c).await.map(drop)?,
            Exec::Postgres(c) => bind_all!(sqlx::query(&sql)).execute(c).await.map(drop)?,
        }
    }
    Ok(())
}

/// The savepoint a group's transaction on SQLite opens first and releases just before it commits: if SQLite has
/// ended the transaction on its own meanwhile (it may, on a full disk or an I/O error), releasing it fails, so
/// nothing runs outside the transaction believing it is inside.
pub(crate) const GROUP_SAVEPOINT: &str = "group_of_work";

/// Opens a write transaction on `conn`, a connection the caller keeps between transactions, and reads the head
/// under its lock: on SQLite the `BEGIN IMMEDIATE`, the group's savepoint and the read go out as one text, one
/// round trip.
pub(crate) async fn begin_locked(mut conn: Conn) -> Result<(Tx, Head), Error> {
    match conn.backend() {
        Backend::Sqlite => {
            let sql = format!(
                "BEGIN IMMEDIATE; SAVEPOINT {GROUP_SAVEPOINT}; SELECT log_id, sequence, chain_hash FROM log_head WHERE id = 1"
            );
            let rows = fetch_all!(&mut conn, HeadRow, &sql);
            // Adopted before the result is looked at: if the read failed after the BEGIN, dropping the
            // transaction closes the connection instead of handing the pool one that holds the write lock.
            let tx = Tx::adopt(conn);
            let row = rows?.into_iter().next().ok_or_else(|| Error::Corrupt("the log has no head row".into()))?;
            Ok((tx, row.try_into()?))
        }
        Backend::Postgres => {
            artifactstore_db::execute!(&mut conn, "BEGIN")?;
            let mut tx = Tx::adopt(conn);
            let head = lock_head(&mut tx).await?;
            Ok((tx, head))
        }
    }
}

/// Inserts `events` (appended in `tx` after the head it locked), moves the head to `head` and commits; hands back
/// the connection of a transaction from `begin_locked`. On SQLite such a transaction's inserts, head update and
/// `COMMIT` go out as one text: one round trip.
pub(crate) async fn commit_appended(tx: Tx, head: &Head, events: &[Event]) -> Result<Option<Conn>, Error> {
    let mut tx = tx;
    if !matches!((&tx, tx.backend()), (Tx::Kept(_), Backend::Sqlite)) {
        if !events.is_empty() {
            insert_events(&mut tx, events).await?;
            write_head(&mut tx, head).await?;
        }
        return Ok(tx.commit_keeping().await?);
    }
    // The head row was read under this transaction's write lock (`begin_locked`), so the update finds it.
    let mut sql = format!("RELEASE SAVEPOINT {GROUP_SAVEPOINT}; ");
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        sql.push_str(&format!(
            "{} INTO events ({EVENT_COLUMNS}) VALUES {}; ",
            artifactstore_db::bulk_insert(Backend::Sqlite),
            artifactstore_db::placeholders(Backend::Sqlite, chunk.len(), 9)
        ));
    }
    if !events.is_empty() {
        sql.push_str("UPDATE log_head SET sequence = ?, chain_hash = ? WHERE id = 1; ");
    }
    sql.push_str("COMMIT");
    let mut query = sqlx::query(&sql);
    for e in events {
        query = bind_event!(query, e);
    }
    if !events.is_empty() {
        query = query.bind(seq(head.sequence)).bind(head.chain_hash.as_slice());
    }
    match tx.as_exec() {
        Exec::Sqlite(c) => query.execute(c).await.map(drop)?,
        Exec::Postgres(_) => unreachable!("matched SQLite above"),
    }
    // On failure `tx` drops here still open, which closes its connection: nothing of it commits.
    Ok(tx.into_ended().ok())
}

/// Appends `events`, which follow `from` and end at `to`, in one atomic write that checks the head is still `from`:
/// one round trip (SQLite: one hand-over to its thread) instead of a transaction of five statements. Returns
/// `false`, having changed nothing, when the head has moved (another writer appended meanwhile).
///
/// The check is in the statements themselves: the inserts and the head update apply only where the head row still
/// reads `from`, and the head read back at the end says whether they did. Events another writer put at the same
/// sequences would also make the inserts fail on the primary key, so nothing can be written twice.
pub(crate) async fn append_group(conn: &mut Conn, from: &Head, to: &Head, events: &[Event]) -> Result<bool, Error> {
    let from_sequence = seq(from.sequence);
    let (to_sequence, to_chain) = (seq(to.sequence), to.chain_hash.as_slice());
    match conn {
        Conn::Sqlite(c) => {
            // SQLite runs the statements of one text in order, binding the anonymous parameters across them.
            // Any failure rolls the whole text back, so the inserts are bulk ones.
            let mut sql = String::from("BEGIN IMMEDIATE;");
            for chunk in events.chunks(EVENTS_PER_INSERT) {
                sql.push_str(&format!(
                    " {} INTO events ({EVENT_COLUMNS}) SELECT * FROM (VALUES {}) \
                     WHERE EXISTS (SELECT 1 FROM log_head WHERE id = 1 AND sequence = ? AND chain_hash = ?);",
                    artifactstore_db::bulk_insert(Backend::Sqlite),
                    artifactstore_db::placeholders(Backend::Sqlite, chunk.len(), 9)
                ));
            }
            sql.push_str(
                " UPDATE log_head SET sequence = ?, chain_hash = ? WHERE id = 1 AND sequence = ? AND chain_hash = ?; \
                 SELECT sequence, chain_hash FROM log_head WHERE id = 1; COMMIT",
            );
            let mut query = sqlx::query_as::<_, (i64, Vec<u8>)>(&sql);
            for chunk in events.chunks(EVENTS_PER_INSERT) {
                for e in chunk {
                    query = bind_event!(query, e);
                }
                query = query.bind(from_sequence).bind(from.chain_hash.as_slice());
            }
            query = query.bind(to_sequence).bind(to_chain).bind(from_sequence).bind(from.chain_hash.as_slice());
            match query.fetch_all(&mut **c).await {
                Ok(rows) => Ok(rows.first().is_some_and(|(s, h)| *s == to_sequence && h.as_slice() == to_chain)),
                Err(err) => {
                    // A statement failed inside the transaction the text opened: end it here, or the connection
                    // would go back to the pool still holding the write lock.
                    if sqlx::query("ROLLBACK").execute(&mut **c).await.is_err() {
                        c.close_on_drop();
                    }
                    Err(err.into())
                }
            }
        }
        Conn::Postgres(c) => {
            // One statement is one transaction: the head moves, and the events go in, only together.
            let sql = format!(
                "WITH moved AS (UPDATE log_head SET sequence = $1, chain_hash = $2 \
                 WHERE id = 1 AND sequence = $3 AND chain_hash = $4 RETURNING 1), \
                 inserted AS (INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM (VALUES {}) AS v \
                 WHERE EXISTS (SELECT 1 FROM moved) RETURNING 1) \
                 SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM inserted)",
                artifactstore_db::placeholders_after(Backend::Postgres, 4, events.len(), 9)
            );
            let mut query = sqlx::query_as::<_, (i64, i64)>(&sql)
                .bind(to_sequence)
                .bind(to_chain)
                .bind(from_sequence)
                .bind(from.chain_hash.as_slice());
            for e in events {
                query = bind_event!(query, e);
            }
            let (moved, inserted) = query.fetch_one(&mut **c).await?;
            Ok(moved == 1 && inserted == events.len() as i64)
        }
    }
}

/// Reads up to `limit` events with `sequence > after`, in order, on any connection or transaction.
pub async fn read_range<E: AsExec>(target: &mut E, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE sequence > $1 ORDER BY sequence LIMIT $2");
    let rows = fetch_all!(target, EventRow, &sql, seq(after), i64::from(limit))?;
    rows.into_iter().map(Event::try_from).collect()
}

/// The events with these sequences, in sequence order; sequences with no event are skipped.
pub(crate) async fn get_many<E: AsExec>(target: &mut E, sequences: &[u64]) -> Result<Vec<Event>, Error> {
    /// Sequences per statement, well under either backend's limit on parameters.
    const PER_STATEMENT: usize = 500;
    let mut events = Vec::with_capacity(sequences.len());
    for chunk in sequences.chunks(PER_STATEMENT) {
        let sql = |backend| {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE sequence IN {} ORDER BY sequence",
                artifactstore_db::placeholders(backend, 1, chunk.len())
            )
        };
        let rows = artifactstore_db::fetch_all_each!(target, EventRow, sql, chunk, |q, n| q.bind(seq(*n)))?;
        for row in rows {
            events.push(Event::try_from(row)?);
        }
    }
    events.sort_by_key(|e| e.sequence);
    events.dedup_by_key(|e| e.sequence);
    Ok(events)
}

pub(crate) async fn get<E: AsExec>(target: &mut E, sequence: u64) -> Result<Option<Event>, Error> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE sequence = $1");
    let row = fetch_optional!(target, EventRow, &sql, seq(sequence))?;
    row.map(Event::try_from).transpose()
}

pub(crate) async fn count<E: AsExec>(target: &mut E) -> Result<u64, Error> {
    let (n,): (i64,) = fetch_one!(target, (i64,), "SELECT COUNT(*) FROM events")?;
    Ok(n.max(0) as u64)
}

/// Sequences are `u64` in code and `BIGINT` in the database; values past `i64::MAX` cannot occur.
pub(crate) fn seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
