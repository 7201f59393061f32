//! The TCP listener of the server: a cap on open connections and an idle
//! timeout per connection.
//!
//! A connection over the cap gets a 503 response with `Retry-After: 1` and
//! is closed, so a client learns at once to come back later. Waiting in the
//! accept backlog instead would let idle keep-alive connections of other
//! clients hold every slot while new ones hang. The idle timeout closes a
//! connection that has neither sent nor received a byte for that long.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
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

/// A listener that holds one permit per open connection.
pub(crate) struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    max_connections: usize,
    rejecting: Arc<Semaphore>,
    idle_timeout: Duration,
    error_log: LogLimiter,
    rejected_log: LogLimiter,
}

impl LimitedListener {
    pub(crate) fn new(inner: TcpListener, max_connections: usize, idle_timeout: Duration) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            rejecting: Arc::new(Semaphore::new(MAX_REJECTING)),
            idle_timeout,
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
                    return (Connection::new(stream, permit, self.idle_timeout), remote);
                }
                Err(_) => self.reject(stream, remote),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: the stream, its permit (released on drop) and
/// its idle deadline, moved forward by every byte read or written.
pub(crate) struct Connection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl Connection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Connection {
            stream,
            _permit: permit,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn touch(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
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
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.touch();
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
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
