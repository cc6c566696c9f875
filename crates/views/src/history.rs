//! A blob's history: the feed's reads filtered to one file subject, served from the blob's row (ADR 0030).
//!
//! The log's subject index leaves file subjects out (ADR 0023), so such a read through the log tests every event of
//! the range it covers. Every `v1.file.*` event about a blob writes that blob's row in the same transaction, and the
//! row lists their sequences (`file_events`): the read costs the subject's events instead.

use artifactstore_db::fetch_optional;
use artifactstore_eventlog::{Event, EventLog, Filter, SubjectKind};

use crate::rows::parse_history;
use crate::Error;

/// The events with `after < sequence <= upto` that pass `filter`, in order, at most `limit`, when `filter` names one
/// file subject (`subject_kind` `file` and a `subject_id`); `None` for any other filter, or while the views are
/// stale, when only a read of the log answers.
///
/// `upto` must not exceed a head read before this call: every event up to it then has its blob's row written.
pub async fn file_subject_events(
    log: &EventLog,
    after: u64,
    upto: u64,
    limit: u32,
    filter: &Filter,
) -> Result<Option<Vec<Event>>, Error> {
    if filter.subject_kind.as_deref() != Some(SubjectKind::File.as_str()) {
        return Ok(None);
    }
    let Some(subject_id) = filter.subject_id else {
        return Ok(None);
    };
    let mut conn = log.database().acquire().await?;
    if crate::stale_reason(&mut conn).await?.is_some() {
        return Ok(None);
    }
    let listed =
        fetch_optional!(&mut conn, (String,), "SELECT file_events FROM artifact_files WHERE file_id = $1", subject_id)?;
    drop(conn);
    let sequences: Vec<u64> = listed
        .map(|(text,)| parse_history(&text))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| *n > after && *n <= upto)
        .collect();
    if sequences.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut events = log.get_many(&sequences).await?;
    events.retain(|event| filter.matches(event));
    events.truncate(limit as usize);
    Ok(Some(events))
}
