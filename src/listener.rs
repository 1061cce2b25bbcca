//! Accepting connections without letting clients exhaust the process: at most
//! `max_connections` open per listener (the rest wait in the kernel's backlog, using no
//! descriptor here), a back-off instead of a spin when `accept` fails (`EMFILE`), and a
//! connection that sends nothing within the first-byte timeout is closed.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_stream::Stream;

/// Longest pause after a failed accept.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How a listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// A connection that has not sent its opening bytes this long after being accepted
    /// is closed.
    pub first_byte_timeout: Duration,
}

/// The soft limit on open descriptors of this process, where the platform says.
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `configured`, lowered to `share` of the descriptor limit so that one listener cannot
/// take the descriptors the other, the store and outbound calls need.
pub fn cap_connections(configured: usize, share: f64) -> usize {
    match open_files_limit() {
        Some(limit) => configured.min(((limit as f64) * share) as usize).max(1),
        None => configured,
    }
}

/// Accepted connections, as a stream for tonic.
pub struct Incoming {
    listener: Arc<TcpListener>,
    permits: Arc<Semaphore>,
    limits: Limits,
    next: Option<Pin<Box<dyn Future<Output = Connection> + Send>>>,
}

impl Incoming {
    pub fn new(listener: TcpListener, limits: Limits) -> Self {
        Self {
            listener: Arc::new(listener),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            next: None,
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.next.is_none() {
            let (listener, permits, limits) =
                (this.listener.clone(), this.permits.clone(), this.limits);
            this.next = Some(Box::pin(async move {
                accept(&listener, &permits, limits).await
            }));
        }
        let Some(next) = this.next.as_mut() else {
            return Poll::Pending;
        };
        let connection = std::task::ready!(next.as_mut().poll(cx));
        this.next = None;
        Poll::Ready(Some(Ok(connection)))
    }
}

/// Waits for a free slot, then for a connection; accept errors back off.
pub async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    limits: Limits,
) -> Connection {
    let mut backoff = Duration::from_millis(5);
    loop {
        // The semaphore is never closed.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            std::future::pending::<()>().await;
            continue;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return Connection::new(stream, permit, limits.first_byte_timeout);
            }
            Err(error) if is_transient(&error) => {}
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Errors about one connection (it was gone before we took it), not about us.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Bytes a client must send before the first-byte timeout stops applying: the length
/// of the HTTP/2 connection preface, so that one byte cannot hold a gRPC slot forever
/// (HTTP/1 requests are longer, and the header timeout covers them from then on).
const OPENING_BYTES: usize = 24;

/// An accepted connection holding its slot until it closes.
pub struct Connection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Until the opening bytes have arrived.
    first_byte: Option<Pin<Box<Sleep>>>,
    received: usize,
}

impl Connection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, first_byte_timeout: Duration) -> Self {
        Self {
            stream,
            _permit: permit,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte_timeout))),
            received: 0,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.first_byte.is_some() {
            match &read {
                Poll::Ready(Ok(())) if buf.filled().len() > filled => {
                    self.received += buf.filled().len() - filled;
                    if self.received >= OPENING_BYTES {
                        self.first_byte = None;
                    }
                }
                Poll::Pending => {
                    if let Some(deadline) = self.first_byte.as_mut()
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request within the first-byte timeout",
                        )));
                    }
                }
                Poll::Ready(_) => {}
            }
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
