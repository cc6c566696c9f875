//! Accepting client connections: HTTP/1.1 with a deadline for each request head (which also ends kept-alive
//! connections left idle), a cap on open connections answered with `503` past it, a deadline for clients that stop
//! taking a response's bytes, and a graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::ConnectionLimits;

/// Serves `app` on `listener` until `shutdown` completes, then waits for the requests in flight.
pub(crate) async fn accept(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_open));
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(
        app.map_request(|request: axum::http::Request<Incoming>| request.map(axum::body::Body::new)),
    );
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of descriptors, or a connection reset before it was taken: wait a moment, go on.
                    tracing::warn!(error = %err, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small answers go out at once: without `TCP_NODELAY`, a response written in two parts waits for the
        // client's delayed acknowledgement (about 40 ms) on a kept-alive connection.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
        }
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp, limits.max_open));
            continue;
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read)
            .serve_connection(TokioIo::new(StallGuard::new(tcp, limits.send_stall)), service.clone());
        let served = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = served.await {
                tracing::debug!(error = %err, "a connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers a connection past the cap with `503` and a problem document, then closes it. The request head is read
/// first (for a second at most) and what follows the answer is drained, so the close does not reset the connection
/// before the client reads the answer.
async fn refuse(mut tcp: TcpStream, most: usize) {
    let mut head = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let detail = format!("{most} connections are open, the most this instance serves; try again shortly");
    let response = raw_problem(503, "Service Unavailable", "too_many_connections", &detail, "retry-after: 1\r\n");
    let written = tokio::time::timeout(Duration::from_secs(5), async {
        tcp.write_all(&response).await?;
        tcp.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!("a refused connection could not be told so");
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut buf = [0u8; 4096];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// A whole HTTP/1.1 response carrying a problem document, which closes the connection.
fn raw_problem(status: u16, title: &str, code: &str, detail: &str, more_headers: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("urn:artifactstore:problem:{code}"),
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    })
    .to_string();
    format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         {more_headers}connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The problem document for an answer hyper writes itself, before any request reaches the service: a request
/// target or a request head too large to read. The service never answers `414` or `431`, so a response starting so
/// is hyper's, with an empty body, and is sent as a problem document instead.
fn own_answer(head: &[u8]) -> Option<Vec<u8>> {
    if head.starts_with(b"HTTP/1.1 414 ") {
        let detail = "the request target is longer than the 65534 bytes this server reads";
        return Some(raw_problem(414, "URI Too Long", "uri_too_long", detail, ""));
    }
    if head.starts_with(b"HTTP/1.1 431 ") {
        let detail = "the request head is larger than this server reads";
        return Some(raw_problem(431, "Request Header Fields Too Large", "header_too_large", detail, ""));
    }
    None
}

/// A connection as hyper sees it:
///
/// - its writes fail with `TimedOut` once the client has taken none of the bytes offered to it for `limit`: hyper
///   then closes the connection and drops the response, so a client that stops reading (an SSE stream from 0 that
///   never reads, a download left hanging) holds nothing for longer than that;
/// - the empty answers hyper writes itself to a request it cannot read are sent as problem documents.
struct StallGuard {
    inner: TcpStream,
    limit: Duration,
    /// Set when a write first found the socket full; cleared by any write that goes through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A problem document sent in place of hyper's own answer, and how much of it is written.
    substitute: Option<(Vec<u8>, usize)>,
}

impl StallGuard {
    fn new(inner: TcpStream, limit: Duration) -> StallGuard {
        StallGuard { inner, limit, stalled: None, substitute: None }
    }

    /// Writes what is left of the substitute answer, if any.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, written)) = self.substitute.take() {
            if written == bytes.len() {
                self.substitute = Some((bytes, written));
                return Poll::Ready(Ok(()));
            }
            let answer = Pin::new(&mut self.inner).poll_write(cx, &bytes[written..]);
            let answer = self.watch(cx, answer);
            let more = match answer {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => 0,
            };
            self.substitute = Some((bytes, written + more));
            if more == 0 {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A write of `head` (the first of its buffers) of `total` bytes: hyper's own answer is replaced and written in
    /// full before the write counts as done; anything after it is dropped.
    fn substituted(&mut self, cx: &mut Context<'_>, head: &[u8], total: usize) -> Option<Poll<std::io::Result<usize>>> {
        if self.substitute.is_none() {
            self.substitute = Some((own_answer(head)?, 0));
        }
        Some(match self.drain(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(total)),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        })
    }

    /// Passes a write's answer on, and turns a wait longer than `limit` into an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, answer: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if answer.is_ready() {
            self.stalled = None;
            return answer;
        }
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no bytes for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if let Some(answer) = self.substituted(cx, buf, buf.len()) {
            return answer;
        }
        let answer = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, answer)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let head = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        if let Some(answer) = self.substituted(cx, head, bufs.iter().map(|b| b.len()).sum()) {
            return answer;
        }
        let answer = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, answer)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        let answer = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, answer)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
