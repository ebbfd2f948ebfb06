//! The HTTP server loop: accept, serve each connection under time limits, drain on stop.
//!
//! `axum::serve` has no header-read, idle or drain limits, and a public form meets clients
//! that open connections and never finish a request. Here every connection is served by
//! hyper's HTTP/1.1 server with:
//!
//! * the request head due within `server.header_timeout` of the connection opening (hyper's
//!   `header_read_timeout`), so a slow or silent client costs one timeout;
//! * an idle limit ([`IDLE_TIMEOUT`]): a keep-alive connection with no bytes either way for
//!   that long is closed, so idle connections can't pile up and exhaust descriptors;
//! * [`REQUEST_TIMEOUT`] for each request's handler (a 408 after it).
//!
//! Stopping: [`serve`] stops accepting when `shutdown` fires, asks every connection to close
//! after its current response, and waits at most `server.shutdown_timeout` before dropping
//! what is left, so one slow client can't hold a stop until systemd's SIGKILL. HTTP/1.1 only:
//! the service sits behind a reverse proxy or is reached directly by browsers over 1.1.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A keep-alive connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// What one request may take, from its head to its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The time limits for one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// Header lines (each ending in CRLF) written into the answers hyper gives by itself (a
/// 400 for a request it can't parse, 414, 431), which never reach the service and its
/// headers middleware.
pub type BareHeaders = Arc<[u8]>;

/// Serves `app` on `listener` until `shutdown` fires, then drains within the limit.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    bare: BareHeaders,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, or a connection reset before accept: not fatal.
                    // Pause so a full descriptor table doesn't become a busy loop.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            bare.clone(),
            closing.clone(),
        ));
    }
    drop(listener);
    closing.cancel();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            limit = ?limits.shutdown_timeout,
            "closing connections that did not finish within server.shutdown_timeout"
        );
        connections.abort_all();
    }
    Ok(())
}

/// One connection, from its first byte to its close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    bare: BareHeaders,
    closing: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        bare,
        pending: Vec::new(),
        written: 0,
    });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut asked_to_close = false;
    loop {
        let idle_left = limits.idle_timeout.saturating_sub(activity.idle_for());
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    // Timeouts and clients that hang up land here; nothing to act on.
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = closing.cancelled(), if !asked_to_close => {
                conn.as_mut().graceful_shutdown();
                asked_to_close = true;
            }
            _ = tokio::time::sleep(idle_left), if !asked_to_close => {
                if activity.idle_for() >= limits.idle_timeout {
                    conn.as_mut().graceful_shutdown();
                    asked_to_close = true;
                }
            }
        }
    }
}

/// When a connection last moved a byte, as milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.opened.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that notes each read and write in its [`Activity`], and adds the security
/// headers to an answer hyper wrote by itself (see [`patch_bare_answer`]).
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    bare: BareHeaders,
    /// A patched answer not yet fully written, and how much of it is.
    pending: Vec<u8>,
    written: usize,
}

impl Tracked {
    /// Writes what is left of a patched answer before anything else.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.activity.touch();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

/// `buf` with `bare` inserted into its head, if `buf` is a whole response head that our
/// headers middleware never saw (it has no Content-Security-Policy): one of the error
/// answers hyper writes itself before closing.
fn patch_bare_answer(buf: &[u8], bare: &[u8]) -> Option<Vec<u8>> {
    if !(buf.starts_with(b"HTTP/1.1 ") || buf.starts_with(b"HTTP/1.0 ")) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..end];
    let ours = head.split(|b| *b == b'\n').any(|line| {
        line.to_ascii_lowercase()
            .starts_with(b"content-security-policy:")
    });
    if ours {
        return None;
    }
    let mut patched = Vec::with_capacity(buf.len() + bare.len());
    patched.extend_from_slice(&buf[..end + 2]);
    patched.extend_from_slice(bare);
    patched.extend_from_slice(&buf[end + 2..]);
    Some(patched)
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        if let Some(patched) = patch_bare_answer(buf, &this.bare) {
            // Taken whole; written out by this and the following calls.
            this.pending = patched;
            this.written = 0;
            let _ = this.poll_pending(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
