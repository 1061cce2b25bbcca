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

use tokio::task::JoinSet;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

use crate::tls::{ClientCertificate, Protocol, Tls};

/// Longest pause after a failed accept.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How a listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// A connection that has not sent its opening bytes this long after being accepted
    /// is closed.
    pub first_byte_timeout: Duration,
    /// A connection whose client has read nothing of what is sent to it this long is
    /// closed.
    pub write_stall_timeout: Duration,
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

/// Accepted connections, TLS already negotiated where configured, as a stream (tonic
/// takes it as is; the HTTP server pulls from it). Handshakes run concurrently, each in
/// its own task, so a slow client delays only its own connection; they end with the
/// stream.
pub struct Incoming {
    listener: Arc<TcpListener>,
    permits: Arc<Semaphore>,
    limits: Limits,
    tls: Option<(Arc<Tls>, Protocol)>,
    next: Option<Pin<Box<dyn Future<Output = Connection> + Send>>>,
    handshakes: JoinSet<Option<Stream>>,
}

impl Incoming {
    pub fn new(listener: TcpListener, limits: Limits, tls: Option<(Arc<Tls>, Protocol)>) -> Self {
        Self {
            listener: Arc::new(listener),
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            tls,
            next: None,
            handshakes: JoinSet::new(),
        }
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Connection> {
        if self.next.is_none() {
            let (listener, permits, limits) =
                (self.listener.clone(), self.permits.clone(), self.limits);
            self.next = Some(Box::pin(async move {
                accept(&listener, &permits, limits).await
            }));
        }
        let Some(next) = self.next.as_mut() else {
            return Poll::Pending;
        };
        let connection = std::task::ready!(next.as_mut().poll(cx));
        self.next = None;
        Poll::Ready(connection)
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Stream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            while let Poll::Ready(Some(done)) = this.handshakes.poll_join_next(cx) {
                if let Ok(Some(stream)) = done {
                    return Poll::Ready(Some(Ok(stream)));
                }
            }
            let mut connection = std::task::ready!(this.poll_accept(cx));
            let Some((tls, protocol)) = &this.tls else {
                return Poll::Ready(Some(Ok(Stream::Plain(connection))));
            };
            let acceptor = tls.acceptor(*protocol);
            let tls = tls.clone();
            let deadline = this.limits.first_byte_timeout;
            connection.plaintext = false;
            this.handshakes.spawn(async move {
                let error = match tokio::time::timeout(deadline, acceptor.accept(connection)).await
                {
                    Ok(Ok(stream)) => return Some(Stream::tls(stream)),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "timed out".to_owned(),
                };
                tls.counts()
                    .handshake_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%error, "TLS handshake failed");
                None
            });
        }
    }
}

/// A connection as the servers see it: plaintext, or TLS with what the client's
/// certificate (if any) says.
pub enum Stream {
    Plain(Connection),
    Tls {
        stream: Box<tokio_rustls::server::TlsStream<Connection>>,
        client: Option<Arc<ClientCertificate>>,
    },
}

impl Stream {
    fn tls(stream: tokio_rustls::server::TlsStream<Connection>) -> Self {
        let client = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Arc::new(ClientCertificate::from_der(leaf)));
        Self::Tls {
            stream: Box::new(stream),
            client,
        }
    }

    /// Who is at the other end, for the request's extensions.
    pub fn peer(&self) -> Peer {
        match self {
            Self::Plain(connection) => Peer {
                remote: connection.stream.peer_addr().ok(),
                client_certificate: None,
            },
            Self::Tls { stream, client } => Peer {
                remote: stream.get_ref().0.stream.peer_addr().ok(),
                client_certificate: client.clone(),
            },
        }
    }
}

/// The connection a request came on: put in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub remote: Option<std::net::SocketAddr>,
    /// The verified client certificate, on an mTLS connection.
    pub client_certificate: Option<Arc<ClientCertificate>>,
}

macro_rules! both {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($io) => $call,
            Stream::Tls { stream: $io, .. } => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Stream::Tls { stream, .. } => {
                let filled = buf.filled().len();
                let read = Pin::new(&mut **stream).poll_read(cx, buf);
                let decrypted = buf.filled().len() - filled;
                if decrypted > 0 {
                    stream.get_mut().0.received_opening(decrypted);
                }
                read
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        both!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        both!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        both!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls { stream, .. } => stream.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer()
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
                return Connection::new(stream, permit, &limits);
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
    /// Whether the bytes read here are the request's own; under TLS they are not (a
    /// ClientHello alone is longer than the opening), and [`Stream`] counts them once
    /// decrypted.
    plaintext: bool,
    write_stall_timeout: Duration,
    /// Since when writes have waited for the client to read (the socket's buffer full).
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, limits: &Limits) -> Self {
        Self {
            stream,
            _permit: permit,
            first_byte: Some(Box::pin(tokio::time::sleep(limits.first_byte_timeout))),
            received: 0,
            plaintext: true,
            write_stall_timeout: limits.write_stall_timeout,
            stalled: None,
        }
    }

    /// Passes a write's outcome on, timing how long writes wait: past the stall timeout
    /// the connection fails, and hyper or h2 drops it with what it buffered.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let timeout = self.write_stall_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the write stall timeout",
            )));
        }
        Poll::Pending
    }

    /// Counts `bytes` of the request toward its opening; the first-byte timeout stops
    /// applying once the opening is complete.
    fn received_opening(&mut self, bytes: usize) {
        if self.first_byte.is_some() {
            self.received += bytes;
            if self.received >= OPENING_BYTES {
                self.first_byte = None;
            }
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
                    if self.plaintext {
                        self.received_opening(buf.filled().len() - filled);
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
        let outcome = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.timed(cx, outcome)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.stream).poll_flush(cx);
        self.timed(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.timed(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
