//! The TCP listener of the server: a cap on open connections, an idle
//! timeout and a header timeout per connection, and JSON bodies for the
//! errors that hyper sends on its own.
//!
//! A connection over the cap gets a 503 response with `Retry-After: 1` and
//! is closed, so a client learns at once to come back later. Waiting in the
//! accept backlog instead would let idle keep-alive connections of other
//! clients hold every slot while new ones hang. The idle timeout closes a
//! connection that has neither sent nor received a byte for that long.
//!
//! The header timeout closes a connection whose request head (request line
//! and headers) is not complete within that time of its first byte, or
//! whose first head is not complete within that time of the accept. A
//! client that sends a head byte by byte (slowloris) therefore keeps a
//! connection for a bounded time, although every byte resets the idle
//! timeout. Between requests of a keep-alive connection only the idle
//! timeout applies.
//!
//! hyper (1.x) responds to a request line over 65,534 bytes with 414 and a
//! head over its buffer (about 408 KiB) or with more than 100 headers with
//! 431, before any route runs and with an empty body. The connection
//! replaces those two responses with JSON errors like every other error of
//! the server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::log_limit::LogLimiter;

/// Pause after a failed accept, such as when the process is out of file
/// descriptors, so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Minimum time between two lines about accept failures or rejected
/// connections.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Maximum rejected connections that get a 503 response at the same time.
/// Beyond it they are closed without a response, so a flood of
/// connections costs bounded work.
const MAX_REJECTING: usize = 64;

/// Time a rejected connection gets to take its 503 response.
const REJECT_WITHIN: Duration = Duration::from_secs(1);

/// The response to a connection over the cap.
static OVER_LIMIT_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":"server is overloaded: it has the maximum number of open connections (--max-connections); retry after 1 second","field":null}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// The 414 response that replaces hyper's empty one.
static URI_TOO_LONG_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    json_error_response(
        "414 URI Too Long",
        r#"{"error":"URI too long: the request line is over 65534 bytes; send the id in the path and nothing else","field":"uri"}"#,
    )
});

/// The 431 response that replaces hyper's empty one.
static HEADERS_TOO_LARGE_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    json_error_response(
        "431 Request Header Fields Too Large",
        r#"{"error":"request headers too large: the head is over about 408 KiB or has more than 100 header fields; send fewer or smaller headers","field":"headers"}"#,
    )
});

/// Builds a complete response that closes the connection.
fn json_error_response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Returns the JSON response that replaces `written`, if it is the start
/// of hyper's own 414 or 431 response.
///
/// NOTE: this matches the status lines of hyper 1.x. A bad head that hyper
/// read whole while the previous request of the connection was still in
/// a route (pipelining) gets hyper's response without the JSON body.
fn replacement_for(written: &[u8]) -> Option<&'static [u8]> {
    if written.starts_with(b"HTTP/1.1 414 ") {
        return Some(&URI_TOO_LONG_RESPONSE);
    }
    if written.starts_with(b"HTTP/1.1 431 ") {
        return Some(&HEADERS_TOO_LARGE_RESPONSE);
    }
    None
}

/// Waiting for the first byte of the next request head.
const AWAITING_REQUEST: u8 = 0;
/// Reading a request head, under the header timeout.
const READING_HEAD: u8 = 1;
/// A route is handling a request.
const IN_REQUEST: u8 = 2;

/// The phase of a connection's request cycle, shared by the connection and
/// the request middleware, which marks when a route starts and finishes.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionPhase(Arc<AtomicU8>);

impl ConnectionPhase {
    fn new() -> Self {
        ConnectionPhase(Arc::new(AtomicU8::new(READING_HEAD)))
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    /// Marks that hyper has read a whole head and a route runs.
    pub(crate) fn request_started(&self) {
        self.0.store(IN_REQUEST, Ordering::Relaxed);
    }

    /// Marks that the route has its response, so the next byte read
    /// starts a new head.
    pub(crate) fn request_finished(&self) {
        self.0.store(AWAITING_REQUEST, Ordering::Relaxed);
    }

    /// Moves from waiting to reading a head; returns whether it did.
    fn head_started(&self) -> bool {
        self.0
            .compare_exchange(
                AWAITING_REQUEST,
                READING_HEAD,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

impl Connected<IncomingStream<'_, LimitedListener>> for ConnectionPhase {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        stream.io().phase.clone()
    }
}

/// The time limits of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionTimeouts {
    /// Time without traffic in either direction.
    pub(crate) idle: Duration,
    /// Time from the first byte of a request head, or from the accept,
    /// until the head is complete.
    pub(crate) header: Duration,
}

/// A listener that holds one permit per open connection.
pub(crate) struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    max_connections: usize,
    rejecting: Arc<Semaphore>,
    timeouts: ConnectionTimeouts,
    error_log: LogLimiter,
    rejected_log: LogLimiter,
}

impl LimitedListener {
    pub(crate) fn new(
        inner: TcpListener,
        max_connections: usize,
        timeouts: ConnectionTimeouts,
    ) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            rejecting: Arc::new(Semaphore::new(MAX_REJECTING)),
            timeouts,
            error_log: LogLimiter::new(LOG_EVERY),
            rejected_log: LogLimiter::new(LOG_EVERY),
        }
    }

    /// Sends 503 to a connection over the cap in a task of its own, or
    /// closes it at once when `MAX_REJECTING` rejections are in progress.
    fn reject(&self, stream: TcpStream, remote: SocketAddr) {
        if let Some(suppressed) = self.rejected_log.allow() {
            tracing::warn!(
                %remote,
                max_connections = self.max_connections,
                suppressed,
                "connection limit reached, so a new connection gets 503 and is closed"
            );
        }
        let Ok(permit) = self.rejecting.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REJECT_WITHIN, answer_over_limit(stream)).await;
        });
    }
}

/// Sends the 503 response, then reads what the client sent until it
/// closes, because closing a socket with unread input resets the
/// connection and the client could lose the response.
async fn answer_over_limit(mut stream: TcpStream) -> io::Result<()> {
    stream.write_all(&OVER_LIMIT_RESPONSE).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

impl Listener for LimitedListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            let (stream, remote) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(suppressed) = self.error_log.allow() {
                        tracing::warn!(%error, suppressed, "failed to accept a connection, retrying");
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (Connection::new(stream, permit, self.timeouts), remote);
                }
                Err(_) => self.reject(stream, remote),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: the stream, its permit (released on drop), its
/// idle deadline (moved forward by every byte read or written), its header
/// deadline, and a response being written in place of hyper's.
pub(crate) struct Connection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    timeouts: ConnectionTimeouts,
    idle: Pin<Box<Sleep>>,
    phase: ConnectionPhase,
    head_deadline: Pin<Box<Sleep>>,
    replacement: Option<Replacement>,
}

/// A JSON error response written in place of hyper's, and how much of it
/// has gone out.
struct Replacement {
    bytes: &'static [u8],
    written: usize,
}

impl Connection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, timeouts: ConnectionTimeouts) -> Self {
        Connection {
            stream,
            _permit: permit,
            timeouts,
            idle: Box::pin(tokio::time::sleep(timeouts.idle)),
            phase: ConnectionPhase::new(),
            head_deadline: Box::pin(tokio::time::sleep(timeouts.header)),
            replacement: None,
        }
    }

    fn touch(&mut self) {
        let deadline = Instant::now() + self.timeouts.idle;
        self.idle.as_mut().reset(deadline);
    }

    /// Returns a timed-out error once the idle deadline has passed while
    /// the stream had nothing to do.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for longer than the idle timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Returns a timed-out error once a request head has taken longer
    /// than the header timeout.
    fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.phase.get() != READING_HEAD {
            return Poll::Pending;
        }
        match self.head_deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete within the header timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes the replacement response and reports `replaced` bytes of
    /// hyper's response as written once all of it has gone out.
    fn poll_write_replacement(
        &mut self,
        cx: &mut Context<'_>,
        replaced: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            let Some(replacement) = &mut self.replacement else {
                return Poll::Ready(Ok(replaced));
            };
            let rest = &replacement.bytes[replacement.written..];
            if rest.is_empty() {
                self.replacement = None;
                return Poll::Ready(Ok(replaced));
            }
            match Pin::new(&mut self.stream).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(count)) => {
                    replacement.written += count;
                    self.touch();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return self.poll_idle(cx).map(Err),
            }
        }
    }

    /// Starts a replacement when hyper begins its own 414 or 431 response.
    /// hyper writes those only while it reads a head and no route runs, and
    /// no route returns either status.
    fn start_replacement(&mut self, written: &[u8]) -> bool {
        if self.replacement.is_none() && self.phase.get() == READING_HEAD {
            if let Some(bytes) = replacement_for(written) {
                self.replacement = Some(Replacement { bytes, written: 0 });
            }
        }
        self.replacement.is_some()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.touch();
                if buf.filled().len() > before && this.phase.head_started() {
                    let deadline = Instant::now() + this.timeouts.header;
                    this.head_deadline.as_mut().reset(deadline);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if let Poll::Ready(error) = this.poll_head_deadline(cx) {
                    return Poll::Ready(Err(error));
                }
                this.poll_idle(cx).map(Err)
            }
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.start_replacement(buf) {
            return this.poll_write_replacement(cx, buf.len());
        }
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.touch();
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|buf| !buf.is_empty()) {
            if this.start_replacement(first) {
                return this.poll_write_replacement(cx, first.len());
            }
        }
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.touch();
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_414_and_431_are_replaced() {
        assert!(replacement_for(b"HTTP/1.1 414 URI Too Long\r\n").is_some());
        assert!(replacement_for(b"HTTP/1.1 431 Request Header Fields Too Large\r\n").is_some());
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"HTTP/1.1 200 OK\r\n",
            b"{\"error\":\"HTTP/1.1 414 \"}",
        ] {
            assert!(
                replacement_for(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn replacement_responses_are_complete_json_errors() {
        for response in [&*URI_TOO_LONG_RESPONSE, &*HEADERS_TOO_LARGE_RESPONSE] {
            let text = std::str::from_utf8(response).expect("ASCII response");
            let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
            let length = format!("content-length: {}", body.len());
            assert!(head.contains(&length), "{head}");
            assert!(head.contains("connection: close"), "{head}");
            let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
            assert!(json["error"].is_string(), "{body}");
            assert!(json["field"].is_string(), "{body}");
        }
    }
}
