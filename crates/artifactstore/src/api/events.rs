//! The event feed: `GET /v1/events` (with long-poll), one event, and the head.

use std::time::Duration;

use artifactstore_eventlog::{Filter, Head, SubjectKind, TypeFilter};
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::budget::Room;
use super::envelope::{envelope_cbor, envelope_json, head_json, Envelopes};
use super::extract::{ApiPath, ApiQuery};
use super::scope::ReadScope;
use crate::auth::{Granted, Reads};
use crate::problem::ApiError;
use crate::server::AppState;

/// Events per response when the client does not say.
const DEFAULT_LIMIT: u32 = 100;
/// The most events one response carries.
const MAX_LIMIT: u32 = 1_000;
/// The longest a long-poll may be held, in seconds.
const MAX_WAIT: u64 = 60;
/// How many sequences one filtered read scans at most; `next` still advances past all of them.
const SCAN_WINDOW: u64 = 10_000;
/// A page ends after the event that brings its payloads to this many bytes (a page holds at least one event).
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// A page's body is handed to the connection in pieces of this size.
const BODY_PIECE: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedQuery {
    since: Option<u64>,
    limit: Option<u32>,
    wait: Option<u64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    subject_kind: Option<String>,
    subject_id: Option<String>,
    log_id: Option<String>,
}

/// A validated feed request.
pub(crate) struct FeedRequest {
    pub(crate) since: u64,
    limit: u32,
    wait: Duration,
    pub(crate) filter: Filter,
    log_id: Option<Uuid>,
    /// What the caller may see.
    pub(crate) scope: ReadScope,
}

/// A feed request of a caller with the `read` scope: the query checked, for the page and the stream alike.
impl FromRequestParts<AppState> for FeedRequest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Granted(caller, _) = Granted::<Reads>::from_request_parts(parts, state).await?;
        let ApiQuery(query) = ApiQuery::<FeedQuery>::from_request_parts(parts, state).await?;
        FeedRequest::checked(query, ReadScope::of(caller))
    }
}

impl FeedRequest {
    fn checked(q: FeedQuery, scope: ReadScope) -> Result<Self, ApiError> {
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        let wait = q.wait.unwrap_or(0);
        if wait > MAX_WAIT {
            return Err(ApiError::bad_request(format!("wait is at most {MAX_WAIT} seconds")));
        }
        let event_type = q.event_type.filter(|t| !t.is_empty()).map(parse_type_filter).transpose()?;
        let subject_kind = match q.subject_kind.filter(|k| !k.is_empty()) {
            Some(kind) if SubjectKind::parse(&kind).is_none() => {
                return Err(ApiError::bad_request(format!(
                    "unknown subject_kind `{kind}`; expected one of package, file, retention, storage, system, policy"
                )))
            }
            other => other,
        };
        let subject_id = q
            .subject_id
            .filter(|s| !s.is_empty())
            .map(|s| Uuid::parse_str(&s).map_err(|err| ApiError::bad_request(format!("subject_id: {err}"))))
            .transpose()?;
        let log_id = q
            .log_id
            .filter(|s| !s.is_empty())
            .map(|s| Uuid::parse_str(&s).map_err(|err| ApiError::bad_request(format!("log_id: {err}"))))
            .transpose()?;
        Ok(FeedRequest {
            since: q.since.unwrap_or(0),
            limit,
            wait: Duration::from_secs(wait),
            filter: Filter { event_type, subject_kind, subject_id },
            log_id,
            scope,
        })
    }
}

/// Whether the client asked for `application/cbor-seq`.
fn wants_cbor_seq(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept.split(',').any(|part| part.split(';').next().unwrap_or("").trim() == "application/cbor-seq")
    })
}

/// `v1.package.*` is a prefix filter; anything else must be one exact event type.
pub(crate) fn parse_type_filter(text: String) -> Result<TypeFilter, ApiError> {
    let valid = |s: &str| s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if let Some(prefix) = text.strip_suffix('*') {
        if prefix.ends_with('.') && valid(prefix) {
            return Ok(TypeFilter::Prefix(prefix.to_owned()));
        }
    } else if valid(&text) {
        return Ok(TypeFilter::Exact(text));
    }
    Err(ApiError::bad_request(format!("type `{text}` is neither an event type nor a prefix such as `v1.package.*`")))
}

/// Refuses a cursor that belongs to another log or lies beyond the head.
pub(crate) fn check_cursor(request: &FeedRequest, head: &Head) -> Result<(), ApiError> {
    if let Some(log_id) = request.log_id {
        if log_id != head.log_id {
            return Err(ApiError::cursor_expired(format!(
                "this cursor belongs to log {log_id}, but this registry's log is {}; start again from its head",
                head.log_id
            ))
            .with("log_id", head.log_id.to_string())
            .with("head", head.sequence));
        }
    }
    if request.since > head.sequence {
        return Err(ApiError::cursor_expired(format!(
            "since={} is beyond the head ({}); the log may have been restored: start again from its head",
            request.since, head.sequence
        ))
        .with("log_id", head.log_id.to_string())
        .with("head", head.sequence));
    }
    Ok(())
}

/// One read of the feed: after `since`, up to `head`, at most `limit` events, `window` sequences (a file subject's
/// events excepted) and about `max_bytes` of payloads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageRead {
    pub(crate) since: u64,
    pub(crate) head: u64,
    pub(crate) limit: u32,
    pub(crate) window: u64,
    pub(crate) max_bytes: usize,
}

/// Reads the events after `since` that pass `filter`, at most `limit` and about `max_bytes` of payloads, less those
/// `scope` hides, with room reserved in the render budget for them; gives where the next read starts: after the
/// last event read when the read was cut short by `limit` or by bytes, else after what the read looked at.
///
/// The payloads' sizes are read first and the room reserved before the events are: a request waiting for room holds
/// no events. Each read takes a turn (`RenderBudget::reading`), so feed reads never hold the whole database pool.
/// A file subject's events come from its blob's row and the read looks up to `head`; any other read scans at most
/// `window` sequences of the log.
pub(crate) async fn read_page(
    state: &AppState,
    read: PageRead,
    filter: &Filter,
    scope: &mut ReadScope,
) -> Result<(u64, Vec<artifactstore_eventlog::Event>, Room), ApiError> {
    let PageRead { since, head, limit, window, max_bytes } = read;
    let log = &state.instance.log;
    let budget = &state.render_budget;
    let turn = budget.reading().await;
    if let Some(events) = artifactstore_views::file_subject_events(log, since, head, limit, filter).await? {
        drop(turn);
        // A blob's few, small events.
        let room = budget.reserve(payload_bytes(&events)).await;
        let next = match events.last() {
            Some(last) if events.len() == limit as usize => last.sequence,
            _ => head,
        };
        return Ok((next, scope.retain(log, events).await?, room));
    }
    let upto = head.min(since.saturating_add(window));
    let sizes = log.read_sizes(since, upto, limit, filter).await?;
    drop(turn);
    // Up to the event that brings the payloads to `max_bytes`, and at least one.
    let mut bytes = 0usize;
    let mut taken = 0usize;
    for (_, size) in &sizes {
        if taken > 0 && bytes >= max_bytes {
            break;
        }
        bytes = bytes.saturating_add(*size);
        taken += 1;
    }
    let room = budget.reserve(bytes).await;
    let _turn = budget.reading().await;
    let (next, events) = match sizes.get(taken.wrapping_sub(1)) {
        Some(&(last, _)) if taken < sizes.len() || taken == limit as usize => {
            (last, log.read(since, last, limit, filter).await?)
        }
        Some(&(last, _)) => (upto, log.read(since, last, limit, filter).await?),
        None => (upto, Vec::new()),
    };
    Ok((next, scope.retain(log, events).await?, room))
}

fn payload_bytes(events: &[artifactstore_eventlog::Event]) -> usize {
    events.iter().map(|e| e.payload.len()).sum()
}

/// `GET /v1/events`: events after `since`, in order; with `wait`, held until one arrives or the wait runs out.
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut request: FeedRequest,
) -> Result<Response, ApiError> {
    let log = &state.instance.log;
    // Subscribe before reading the head, so a commit between the two still wakes us.
    let mut wakeups = log.subscribe();
    wakeups.borrow_and_update();
    let mut head = log.read_head().await?;
    check_cursor(&request, &head)?;
    let deadline = tokio::time::Instant::now() + request.wait;
    let mut since = request.since;
    loop {
        let read =
            PageRead { since, head: head.sequence, limit: request.limit, window: SCAN_WINDOW, max_bytes: PAGE_BYTES };
        let (next, events, room) = read_page(&state, read, &request.filter, &mut request.scope).await?;
        let done = !events.is_empty() || next < head.sequence || tokio::time::Instant::now() >= deadline;
        if done {
            if wants_cbor_seq(&headers) {
                let body: Vec<u8> = events.iter().flat_map(envelope_cbor).collect();
                drop(events);
                let mut response = ([(header::CONTENT_TYPE, "application/cbor-seq")], held(body, room)).into_response();
                let h = response.headers_mut();
                h.insert("log-id", HeaderValue::from_str(&head.log_id.to_string()).expect("a UUID is a header value"));
                h.insert("feed-next", HeaderValue::from(next));
                h.insert("feed-head", HeaderValue::from(head.sequence));
                return Ok(response);
            }
            // The events are written one at a time into the text, each decoded only while it is written.
            let page = PageJson { events: Envelopes(&events), next, head: head.sequence, log_id: head.log_id };
            let body = serde_json::to_vec(&page).map_err(|err| ApiError::internal(&err))?;
            drop(events);
            return Ok(([(header::CONTENT_TYPE, "application/json")], held(body, room)).into_response());
        }
        since = next;
        // Nothing matched up to the head: wait for the head to move, or for the deadline.
        if tokio::time::timeout_at(deadline, wakeups.changed()).await.is_ok_and(|changed| changed.is_ok()) {
            wakeups.borrow_and_update();
        }
        head = log.read_head().await?;
    }
}

/// A page of the feed as JSON.
#[derive(serde::Serialize)]
struct PageJson<'a> {
    events: Envelopes<'a>,
    next: u64,
    head: u64,
    log_id: Uuid,
}

/// A response body that keeps its room in the render budget until the connection has taken the last of it.
fn held(body: Vec<u8>, room: Room) -> Body {
    let body = bytes::Bytes::from(body);
    let pieces: Vec<bytes::Bytes> =
        (0..body.len()).step_by(BODY_PIECE).map(|at| body.slice(at..body.len().min(at + BODY_PIECE))).collect();
    Body::from_stream(futures::stream::iter(pieces).map(move |piece| {
        let _room = &room;
        Ok::<_, std::convert::Infallible>(piece)
    }))
}

/// `GET /v1/events/{sequence}`: one event, if the caller may see it.
pub(crate) async fn one(
    State(state): State<AppState>,
    Granted(caller, _): Granted<Reads>,
    ApiPath(sequence): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let log = &state.instance.log;
    match log.get(sequence).await? {
        Some(event) if ReadScope::of(caller).sees(log, &event).await? => Ok(Json(envelope_json(&event))),
        Some(_) => Err(ApiError::forbidden(format!(
            "event {sequence} concerns nothing under this token's prefixes, and this token did not cause it"
        ))),
        None => Err(ApiError::not_found(format!("no event has sequence {sequence}"))),
    }
}

/// `GET /v1/events/head`: `{log_id, sequence, chain_hash}`.
pub(crate) async fn head(State(state): State<AppState>, _: Granted<Reads>) -> Result<Json<Value>, ApiError> {
    let head = state.instance.log.read_head().await?;
    Ok(Json(head_json(&head)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_are_exact_or_dotted_prefixes() {
        assert_eq!(parse_type_filter("v1.package.*".into()).unwrap(), TypeFilter::Prefix("v1.package.".into()));
        assert_eq!(parse_type_filter("v1.file.ingested".into()).unwrap(), TypeFilter::Exact("v1.file.ingested".into()));
        for bad in ["v1.pack*", "*", "v1.Package", "v1.package.%", "v1 .x"] {
            assert!(parse_type_filter(bad.into()).is_err(), "{bad}");
        }
    }
}
