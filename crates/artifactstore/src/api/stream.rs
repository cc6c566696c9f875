//! `GET /v1/events/stream`: the event feed as Server-Sent Events.
//!
//! Each stream catches up from the database from its cursor (`since`, or `Last-Event-ID` on a reconnect) to the
//! position at which it subscribed to the broadcaster, then takes the live events from there: no gap and no
//! duplicate at the hand-over. A stream the broadcaster cuts for falling behind simply ends; the client
//! reconnects with its last id and catches up from the database again.

use std::convert::Infallible;
use std::time::Duration;

use artifactstore_eventlog::{Event, Subscription};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::envelope::envelope_json;
use super::events::{check_cursor, FeedQuery, FeedRequest};
use super::extract::ApiQuery;
use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::server::AppState;

/// Heartbeat comments at least this often.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A filtered stream sends a bookmark at most this often while it skips events.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// How long a client should wait before reconnecting.
const RETRY: Duration = Duration::from_secs(1);
/// Events read per round trip while catching up.
const CATCH_UP_BATCH: u32 = 500;
/// SSE frames waiting for the connection; beyond this the stream stops reading its subscription.
const FRAME_BUFFER: usize = 16;

/// `GET /v1/events/stream?since=&type=&subject_kind=&subject_id=&log_id=`.
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Read)?;
    let mut request = FeedRequest::try_from(query)?;
    if let Some(last) = headers.get("last-event-id") {
        request.since = last
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event sequence"))?;
    }
    let head = state.instance.log.read_head().await?;
    check_cursor(&request, &head)?;
    let subscription = state.broadcaster.subscribe();
    let (frames, body) = mpsc::channel::<Result<SseEvent, Infallible>>(FRAME_BUFFER);
    state.metrics.sse_streams.inc();
    tokio::spawn(follow(state, request, subscription, frames));
    let sse = Sse::new(tokio_stream::wrappers::ReceiverStream::new(body))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"));
    let mut response = sse.into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert("log-id", HeaderValue::from_str(&head.log_id.to_string()).expect("a UUID is a header value"));
    Ok(response)
}

fn frame(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.sequence.to_string())
        .event(event.event_type.clone())
        .data(envelope_json(event).to_string())
}

fn bookmark(sequence: u64) -> SseEvent {
    SseEvent::default().id(sequence.to_string()).event("bookmark").data(format!("{{\"sequence\":{sequence}}}"))
}

/// Feeds one stream until the client goes away, the broadcaster cuts it, or the log cannot be read.
async fn follow(
    state: AppState,
    request: FeedRequest,
    mut subscription: Subscription,
    frames: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let _open = scopeguard(&state);
    let filtered = !request.filter.is_everything();
    let opening = SseEvent::default().comment("artifactstore event stream").retry(RETRY);
    if frames.send(Ok(opening)).await.is_err() {
        return;
    }
    let mut cursor = request.since;
    let mut marked = cursor;
    let mut next_mark = Instant::now() + BOOKMARK_EVERY;

    // Catch up from the database to where the subscription begins.
    while cursor < subscription.start {
        let events = match state.instance.log.read(cursor, subscription.start, CATCH_UP_BATCH, &request.filter).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, "an event stream could not read the log");
                return;
            }
        };
        let next = match events.last() {
            Some(last) if events.len() == CATCH_UP_BATCH as usize => last.sequence,
            _ => subscription.start,
        };
        for event in &events {
            if frames.send(Ok(frame(event))).await.is_err() {
                return;
            }
            marked = event.sequence;
        }
        cursor = next;
        if filtered && marked < cursor && Instant::now() >= next_mark {
            if frames.send(Ok(bookmark(cursor))).await.is_err() {
                return;
            }
            marked = cursor;
            next_mark = Instant::now() + BOOKMARK_EVERY;
        }
    }

    // Live.
    loop {
        let wants_mark = filtered && marked < cursor;
        tokio::select! {
            () = frames.closed() => return,
            received = subscription.events.recv() => {
                let Some(event) = received else {
                    // Cut for falling behind (or shutting down): end the stream, the client resumes from its last id.
                    return;
                };
                if event.sequence <= cursor {
                    continue;
                }
                cursor = event.sequence;
                if request.filter.matches(&event) {
                    if frames.send(Ok(frame(&event))).await.is_err() {
                        return;
                    }
                    marked = cursor;
                }
            }
            () = tokio::time::sleep_until(next_mark), if wants_mark => {
                if frames.send(Ok(bookmark(cursor))).await.is_err() {
                    return;
                }
                marked = cursor;
                next_mark = Instant::now() + BOOKMARK_EVERY;
            }
        }
        if !wants_mark && marked < cursor {
            next_mark = Instant::now() + BOOKMARK_EVERY;
        }
    }
}

/// Counts the stream as open until it ends.
fn scopeguard(state: &AppState) -> impl Drop + '_ {
    struct Open<'a>(&'a AppState);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            self.0.metrics.sse_streams.dec();
        }
    }
    Open(state)
}
