//! The log's filtered reads: the text of each shape of filter, so the planner can use the index that serves it, and
//! the reads of events and of their payloads' sizes.

use artifactstore_db::{fetch_all, sqlx, AsExec};
use uuid::Uuid;

use crate::store::{seq, EventRow, EVENT_COLUMNS};
use crate::{Error, Event, SubjectKind};

/// The kinds of subject the subject index covers: those whose ids are made in time order, so appending their events
/// changes the index near its end (ADR 0023). Word for word the predicate of `events_by_subject` in the migrations,
/// which is what lets a read that repeats it use that partial index.
pub(crate) const INDEXED_SUBJECTS: &str = "subject_kind IN ('package', 'retention', 'system')";

/// Whether the subject index covers events about `kind`.
pub(crate) fn subject_indexed(kind: SubjectKind) -> bool {
    matches!(kind, SubjectKind::Package | SubjectKind::Retention | SubjectKind::System)
}

/// Which filters a read applies; each present one adds its condition to the read's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FilterShape {
    pub(crate) exact_type: bool,
    pub(crate) type_prefix: bool,
    pub(crate) subject_kind: Option<SubjectKind>,
    pub(crate) subject_id: bool,
}

/// A filtered read of the log: the events in `(after, upto]` that pass the filters (an empty text is no filter), at
/// most `limit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilteredRead<'a> {
    pub(crate) after: u64,
    pub(crate) upto: u64,
    pub(crate) limit: u32,
    pub(crate) exact_type: &'a str,
    pub(crate) type_prefix: &'a str,
    pub(crate) subject_kind: &'a str,
    pub(crate) subject_id: Option<Uuid>,
}

impl FilteredRead<'_> {
    /// The read's shape; `None` when `subject_kind` names no kind, so nothing can match.
    fn shape(&self) -> Option<FilterShape> {
        let kind = match self.subject_kind {
            "" => None,
            name => Some(SubjectKind::parse(name)?),
        };
        Some(FilterShape {
            exact_type: !self.exact_type.is_empty(),
            type_prefix: !self.type_prefix.is_empty(),
            subject_kind: kind,
            subject_id: self.subject_id.is_some(),
        })
    }
}

/// The text of a filtered read. Only the filters present appear in it, so the planner can go through the index that
/// serves them (the type index for an exact type, the subject index for an indexed kind and id) instead of testing
/// each event of the range. The parameters are numbered alike in every shape and all bound: `$1` and `$2` the range,
/// `$3` the exact type, `$4` the prefix, `$5` the subject kind, `$6` the subject id, `$7` the limit.
pub(crate) fn filtered_sql(shape: FilterShape) -> String {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE sequence > $1 AND sequence <= $2");
    if shape.exact_type {
        sql.push_str(" AND event_type = $3");
    }
    if shape.type_prefix {
        sql.push_str(" AND substr(event_type, 1, length($4)) = $4");
    }
    if let Some(kind) = shape.subject_kind {
        sql.push_str(" AND subject_kind = $5");
        // Only with an id: a kind alone would let the planner walk (and sort) every event of that kind through the
        // index, where the sequence range it asks for is usually far smaller.
        if shape.subject_id && subject_indexed(kind) {
            sql.push_str(" AND ");
            sql.push_str(INDEXED_SUBJECTS);
        }
    }
    if shape.subject_id {
        sql.push_str(" AND subject_id = $6");
    }
    sql.push_str(" ORDER BY sequence LIMIT $7");
    sql
}

/// The rows of `read`, each the `columns` of one event.
async fn fetch_filtered<E, R>(target: &mut E, read: &FilteredRead<'_>, columns: &str) -> Result<Vec<R>, Error>
where
    E: AsExec,
    R: Send + Unpin,
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let Some(shape) = read.shape() else { return Ok(Vec::new()) };
    let sql = filtered_sql(shape).replacen(EVENT_COLUMNS, columns, 1);
    Ok(fetch_all!(
        target,
        R,
        &sql,
        seq(read.after),
        seq(read.upto),
        read.exact_type,
        read.type_prefix,
        read.subject_kind,
        read.subject_id.unwrap_or(Uuid::nil()),
        i64::from(read.limit),
    )?)
}

/// The events of `read`, behind `EventLog::read`.
pub(crate) async fn read_filtered<E: AsExec>(target: &mut E, read: &FilteredRead<'_>) -> Result<Vec<Event>, Error> {
    let rows: Vec<EventRow> = fetch_filtered(target, read, EVENT_COLUMNS).await?;
    rows.into_iter().map(Event::try_from).collect()
}

/// The sequence and payload length of each event of `read`. Neither backend reads a value's content to give its
/// length.
pub(crate) async fn read_sizes<E: AsExec>(target: &mut E, read: &FilteredRead<'_>) -> Result<Vec<(u64, usize)>, Error> {
    let rows: Vec<(i64, i64)> = fetch_filtered(target, read, "sequence, CAST(length(payload) AS BIGINT)").await?;
    Ok(rows
        .into_iter()
        .map(|(sequence, length)| (u64::try_from(sequence).unwrap_or(0), usize::try_from(length).unwrap_or(0)))
        .collect())
}

#[cfg(test)]
mod tests {
    use artifactstore_db::{execute, fetch_all, fetch_one, Backend};
    use artifactstore_testkit::{TestDb, BACKENDS};
    use uuid::Uuid;

    use super::{filtered_sql, FilterShape, SubjectKind};

    /// 4,000 events: every hundredth a package created (its own subject), the rest blobs ingested; then, if
    /// `analyze`, statistics for the planner.
    async fn fill(test: &TestDb, analyze: bool) {
        let sql = match test.db.backend() {
            Backend::Sqlite => {
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 4000) \
                 INSERT INTO events SELECT n, '2026-12-04T00:00:00.000000Z', \
                 CASE WHEN n % 100 = 0 THEN 'v1.package.created' ELSE 'v1.file.ingested' END, \
                 CASE WHEN n % 100 = 0 THEN 'package' ELSE 'file' END, randomblob(16), 'tester', x'00', x'00', x'00' \
                 FROM g"
            }
            Backend::Postgres => {
                "INSERT INTO events SELECT n, now(), \
                 CASE WHEN n % 100 = 0 THEN 'v1.package.created' ELSE 'v1.file.ingested' END, \
                 CASE WHEN n % 100 = 0 THEN 'package' ELSE 'file' END, md5(n::text)::uuid, 'tester', '\\x00', \
                 '\\x00', '\\x00' FROM generate_series(1, 4000) AS n"
            }
        };
        let mut conn = test.db.acquire().await.unwrap();
        execute!(&mut conn, sql).unwrap();
        if analyze {
            execute!(&mut conn, "ANALYZE").unwrap();
        }
    }

    /// The planner's account of a filtered read of the whole log, one line per step.
    async fn plan(test: &TestDb, shape: FilterShape, event_type: &str, kind: &str, id: Uuid) -> String {
        let sql = format!(
            "EXPLAIN {}{}",
            if test.db.backend() == Backend::Sqlite { "QUERY PLAN " } else { "" },
            filtered_sql(shape)
        );
        let mut conn = test.db.acquire().await.unwrap();
        let (after, upto, prefix, limit) = (0i64, 4000i64, "", 100i64);
        match test.db.backend() {
            Backend::Sqlite => {
                let rows = fetch_all!(
                    &mut conn,
                    (i64, i64, i64, String),
                    &sql,
                    after,
                    upto,
                    event_type,
                    prefix,
                    kind,
                    id,
                    limit
                );
                rows.unwrap().into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
            }
            Backend::Postgres => {
                let rows = fetch_all!(&mut conn, (String,), &sql, after, upto, event_type, prefix, kind, id, limit);
                rows.unwrap().into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
            }
        }
    }

    #[tokio::test]
    async fn filtered_reads_go_through_the_index_that_serves_them() {
        for backend in BACKENDS {
            let Some(test) = TestDb::of(backend).await else { continue };
            fill(&test, true).await;
            let subject_of = |sequence: i64| {
                let db = test.db.clone();
                async move {
                    let mut conn = db.acquire().await.unwrap();
                    let (id,): (Uuid,) =
                        fetch_one!(&mut conn, (Uuid,), "SELECT subject_id FROM events WHERE sequence = $1", sequence)
                            .unwrap();
                    id
                }
            };
            let none = FilterShape { exact_type: false, type_prefix: false, subject_kind: None, subject_id: false };
            let subject = |kind| FilterShape { subject_kind: Some(kind), subject_id: true, ..none };

            let package = subject_of(500).await;
            let read = plan(&test, subject(SubjectKind::Package), "", "package", package).await;
            assert!(
                read.contains("events_by_subject"),
                "{backend:?}: a package's events by the subject index:\n{read}"
            );
            let read = plan(&test, subject(SubjectKind::Retention), "", "retention", package).await;
            assert!(read.contains("events_by_subject"), "{backend:?}: retention is indexed too:\n{read}");

            // A blob's subject id is its digest's: the partial index leaves it out, and a read must not rely on it.
            let file = subject_of(501).await;
            let read = plan(&test, subject(SubjectKind::File), "", "file", file).await;
            assert!(!read.contains("events_by_subject"), "{backend:?}: files are not in the subject index:\n{read}");

            let exact = FilterShape { exact_type: true, ..none };
            let read = plan(&test, exact, "v1.package.created", "", Uuid::nil()).await;
            assert!(read.contains("events_by_type"), "{backend:?}: a rare type by the type index:\n{read}");
        }
    }

    /// On SQLite, which has no statistics unless someone runs `ANALYZE` (the service never does), a kind without an
    /// id reads the range it asks for, as the unfiltered read does: its text does not repeat the index's predicate,
    /// so the planner cannot walk and sort every event of the kind through the index on a guess. (PostgreSQL keeps
    /// statistics, proves the predicate from the value bound and chooses by cost.)
    #[tokio::test]
    async fn a_kind_alone_reads_its_range() {
        let test = TestDb::of(Backend::Sqlite).await.expect("SQLite is always there");
        fill(&test, false).await;
        let kind_only = FilterShape {
            exact_type: false,
            type_prefix: false,
            subject_kind: Some(SubjectKind::Package),
            subject_id: false,
        };
        let read = plan(&test, kind_only, "", "package", Uuid::nil()).await;
        assert!(!read.contains("events_by_subject"), "a kind alone scans its range:\n{read}");
    }
}
