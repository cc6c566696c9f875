//! `GET /v1/events/stream`: the event feed as Server-Sent Events.
//!
//! Each stream catches up from the database from its cursor (`since`, or `Last-Event-ID` on a reconnect) to the
//! position at which it subscribed to the broadcaster, then takes the live events from there: no gap and no
//! duplicate at the hand-over. A stream the broadcaster cuts for falling behind simply ends; the client
//! reconnects with its last id and catches up from the database again.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use artifactstore_eventlog::{Event, Subscription};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::envelope::envelope_text;
use super::events::{check_cursor, read_page, FeedRequest, PageRead};
use crate::problem::ApiError;
use crate::server::AppState;

/// Heartbeat comments at least this often.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A filtered stream sends a bookmark at most this often while it skips events.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// How long a client should wait before reconnecting, in milliseconds.
const RETRY_MS: u64 = 1000;
/// Events read per round trip while catching up...
const CATCH_UP_BATCH: u32 = 500;
/// ...and about this many bytes of payloads, which a stream whose client does not read holds meanwhile.
const CATCH_UP_BYTES: usize = 256 * 1024;
/// Live events already waiting are sent together, up to this many per write...
const COALESCE: usize = 64;
/// ...and up to about this many bytes, so what a stream hands its connection at once stays small.
const COALESCE_BYTES: usize = 32 * 1024;
/// Rendered frames kept for other streams to reuse: the newest events, which streams that keep up all send; one
/// further behind renders its own.
const CACHED_FRAMES: usize = 256;

/// The SSE frames of the newest events, rendered once: with many subscribers, each live event is turned into JSON
/// one time, not once per stream.
#[derive(Debug, Default)]
pub struct FrameCache {
    frames: Mutex<BTreeMap<u64, Bytes>>,
}

impl FrameCache {
    fn frame(&self, event: &Event) -> Bytes {
        let lock = || self.frames.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(frame) = lock().get(&event.sequence) {
            return frame.clone();
        }
        let frame = render(event);
        let mut frames = lock();
        frames.insert(event.sequence, frame.clone());
        while frames.len() > CACHED_FRAMES {
            frames.pop_first();
        }
        frame
    }
}

/// `id`, `event` and `data` lines of one event (the JSON envelope holds no line breaks).
fn render(event: &Event) -> Bytes {
    let data = envelope_text(event);
    let mut frame = BytesMut::with_capacity(data.len() + event.event_type.len() + 40);
    frame.extend_from_slice(format!("id: {}\nevent: {}\ndata: ", event.sequence, event.event_type).as_bytes());
    frame.extend_from_slice(&data);
    frame.extend_from_slice(b"\n\n");
    frame.freeze()
}

fn bookmark(sequence: u64) -> Bytes {
    Bytes::from(format!("id: {sequence}\nevent: bookmark\ndata: {{\"sequence\":{sequence}}}\n\n"))
}

const HEARTBEAT_FRAME: &[u8] = b": heartbeat\n\n";

/// `GET /v1/events/stream?since=&type=&subject_kind=&subject_id=&log_id=`.
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut request: FeedRequest,
) -> Result<Response, ApiError> {
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
    let open = Open::new(&state.metrics.sse_streams);
    let mut response = Body::from_stream(follow(state, request, subscription, open)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert("log-id", HeaderValue::from_str(&head.log_id.to_string()).expect("a UUID is a header value"));
    Ok(response)
}

/// What woke a live stream.
enum Wake {
    Event(Option<Arc<Event>>),
    Bookmark,
    Heartbeat,
}

/// The body of one stream, until the client goes away, the broadcaster cuts it, or the log cannot be read.
///
/// The connection's own task polls this stream when it can write, so a live event wakes one task per subscriber
/// (the connection's), and a client that stops reading stops the polling: its subscription then fills and the
/// broadcaster cuts it. When the client goes away the connection drops the stream, and with it the subscription.
fn follow(
    state: AppState,
    mut request: FeedRequest,
    mut subscription: Subscription,
    open: Open,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    async_stream::stream! {
        let _open = open;
        let filtered = !request.filter.is_everything() || !request.scope.is_everything();
        yield Ok(Bytes::from(format!(": artifactstore event stream\nretry: {RETRY_MS}\n\n")));
        let mut cursor = request.since;
        let mut marked = cursor;
        let mut next_mark = Instant::now() + BOOKMARK_EVERY;

        // Catch up from the database to where the subscription begins.
        while cursor < subscription.start {
            let filter = &request.filter;
            let read = PageRead {
                since: cursor,
                head: subscription.start,
                limit: CATCH_UP_BATCH,
                window: u64::MAX,
                max_bytes: CATCH_UP_BYTES,
            };
            let read = read_page(&state, read, filter, &mut request.scope);
            let (next, events, _room) = match read.await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = err.detail(), "an event stream could not read the log");
                    return;
                }
            };
            let mut out = BytesMut::new();
            for event in &events {
                out.extend_from_slice(&render(event));
                marked = event.sequence;
                if out.len() >= COALESCE_BYTES {
                    yield Ok(out.split().freeze());
                }
            }
            if !out.is_empty() {
                yield Ok(out.freeze());
            }
            cursor = next;
            if filtered && marked < cursor && Instant::now() >= next_mark {
                yield Ok(bookmark(cursor));
                marked = cursor;
                next_mark = Instant::now() + BOOKMARK_EVERY;
            }
        }

        // Live. One heartbeat timer for the stream's life: a write only notes its time, and the timer, when it
        // fires, sends a heartbeat if nothing went out for `HEARTBEAT` or sleeps on to that point.
        let mut last_write = Instant::now();
        let heartbeat = tokio::time::sleep_until(last_write + HEARTBEAT);
        tokio::pin!(heartbeat);
        loop {
            let wants_mark = filtered && marked < cursor;
            let wake = tokio::select! {
                received = subscription.events.recv() => Wake::Event(received),
                () = tokio::time::sleep_until(next_mark), if wants_mark => Wake::Bookmark,
                () = &mut heartbeat => Wake::Heartbeat,
            };
            match wake {
                // Cut for falling behind (or shutting down): end the stream, the client resumes from its last id.
                Wake::Event(None) => return,
                Wake::Event(Some(first)) => {
                    // Whatever else is already waiting goes out in the same write.
                    let mut out = BytesMut::new();
                    let mut next = Some(first);
                    let mut taken = 0;
                    while let Some(event) = next.take() {
                        taken += 1;
                        if event.sequence > cursor {
                            cursor = event.sequence;
                            // The filter first: it costs nothing, where the scope may look a package up.
                            let seen = match request.filter.matches(&event) {
                                false => false,
                                true => match request.scope.sees(&state.instance.log, &event).await {
                                    Ok(seen) => seen,
                                    Err(err) => {
                                        tracing::warn!(error = err.detail(), "an event stream could not read the log");
                                        return;
                                    }
                                },
                            };
                            if seen {
                                out.extend_from_slice(&state.frames.frame(&event));
                                marked = cursor;
                            }
                        }
                        if taken < COALESCE && out.len() < COALESCE_BYTES {
                            next = subscription.events.try_recv().ok();
                        }
                    }
                    if !out.is_empty() {
                        yield Ok(out.freeze());
                        last_write = Instant::now();
                    }
                }
                Wake::Bookmark => {
                    yield Ok(bookmark(cursor));
                    marked = cursor;
                    next_mark = Instant::now() + BOOKMARK_EVERY;
                    last_write = Instant::now();
                }
                Wake::Heartbeat => {
                    if Instant::now() >= last_write + HEARTBEAT {
                        yield Ok(Bytes::from_static(HEARTBEAT_FRAME));
                        last_write = Instant::now();
                    }
                    heartbeat.as_mut().reset(last_write + HEARTBEAT);
                }
            }
            if !wants_mark && marked < cursor {
                next_mark = Instant::now() + BOOKMARK_EVERY;
            }
        }
    }
}

/// Counts the stream as open until it ends.
///
/// Made with the response and moved into its body, so a body the connection drops without ever polling it (the
/// client left before the headers went out) still counts down.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Open {
    fn new(streams: &prometheus_client::metrics::gauge::Gauge) -> Open {
        streams.inc();
        Open(streams.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}
