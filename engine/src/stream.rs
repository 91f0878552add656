//! Stream kinds: what flows between two bindings, as a Rust type.
//!
//! Each kind has a handler trait. A built binding publishes one handler per kind it accepts; a
//! caller gets its exit's handler, typed, at build time ([`crate::binding::BuildContext::exit`]),
//! so a pipeline whose kinds do not fit fails at load time, not at request time.
//!
//! The `bytes` kind lives here because every transport (tcp, tls, proxy) and every protocol
//! server and client carries it. Protocol kinds (`http`, `kafka`, ...) live in their crates.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::guard::Authorization;
use crate::idle::IdleControl;

/// A boxed, sendable future: the return type of handler trait methods (they must be object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A kind of stream between bindings, named as in config-facing messages.
pub trait StreamKind: 'static {
    /// The name used in messages, e.g. `bytes`, `http`.
    const NAME: &'static str;
    /// The handler a binding publishes for this kind.
    type Handler: ?Sized + Send + Sync + 'static;
}

/// A duplex byte stream plus what is known about it: the `bytes` stream kind.
pub struct ByteStream {
    /// The bytes.
    pub io: Box<dyn AsyncIo>,
    /// Addresses, SNI, ALPN and identity known so far.
    pub info: StreamInfo,
}

impl fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ByteStream {
    /// Wraps any duplex IO.
    pub fn new(io: impl AsyncIo + 'static, info: StreamInfo) -> Self {
        Self {
            io: Box::new(io),
            info,
        }
    }
}

/// Anything that reads and writes bytes asynchronously.
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncIo for T {}

/// An IO whose first reads return `prefix`, then read on from `inner`; writes go straight
/// through. For a binding that read the first bytes of a stream to decide where it goes (a
/// TLS ClientHello, an HTTP/2 preface) and hands the whole stream on.
pub struct Rewind {
    prefix: bytes::Bytes,
    inner: Box<dyn AsyncIo>,
}

impl Rewind {
    /// `inner`, with `prefix` read first.
    pub fn new(prefix: impl Into<bytes::Bytes>, inner: Box<dyn AsyncIo>) -> Self {
        Self {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let length = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..length]);
            self.prefix.advance(length);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a byte stream carries besides bytes (Zilla's proxy begin extension).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// The peer that opened the connection (server side) or the local end (client side).
    pub source: Option<SocketAddr>,
    /// Where the connection goes: the listening address (server side) or the origin to connect
    /// to (client side).
    pub destination: Option<SocketAddr>,
    /// The host name asked for: TLS SNI, or the origin host a client binding connects to.
    pub authority: Option<String>,
    /// The port to connect to when `destination` is not resolved yet (client side, with
    /// `authority` as the host name).
    pub port: Option<u16>,
    /// The negotiated (server) or wanted (client) ALPN protocols, in preference order.
    pub alpn: Vec<String>,
    /// Whether TLS was terminated or originated on this path.
    pub secure: bool,
    /// An authenticated identity (e.g. a client certificate subject).
    pub identity: Option<String>,
    /// Guard sessions established on this path (a tls server's `x509` guard), which the
    /// bindings inward authorize `guarded` routes and `${guarded[...]}` expressions with.
    pub authorization: Authorization,
    /// The idle timeout of the network connection under this stream, for the protocol that
    /// owns the connection to extend, hold or turn off (see [`crate::idle`]).
    pub idle: IdleControl,
}

/// Handler of the `bytes` stream kind.
///
/// `accept` takes a stream coming from the network side (a server pipeline hands its
/// connection inward); `connect` gives a stream toward the network (a client pipeline asks for
/// a connection to `info.destination`/`info.authority`). A binding implements the one that is
/// natural for it; the other has a default that bridges with one copy loop, so any two byte
/// bindings compose.
pub trait BytesHandler: Send + Sync + 'static {
    /// Serves `stream` until it ends.
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(async move {
            let info = stream.info.clone();
            let mut inner = self.connect(info).await?;
            let mut outer = stream.io;
            tokio::io::copy_bidirectional(&mut outer, &mut inner.io)
                .await
                .map(|_| ())
                .map_err(StreamError::Io)
        })
    }

    /// Opens a stream toward the network.
    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>>;
}

/// The `bytes` stream kind.
#[derive(Debug)]
pub struct Bytes;

impl StreamKind for Bytes {
    const NAME: &'static str = "bytes";
    type Handler = dyn BytesHandler;
}

/// Why a stream ended abnormally. The class tells callers how to answer on their own protocol.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// No route matched: answered as a TCP close, HTTP 404, MQTT reason code...
    #[error("no route matched")]
    NoRoute,
    /// The stream was not authorized by a guard.
    #[error("not authorized")]
    Unauthorized,
    /// The peer sent something the protocol forbids.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer or origin is unreachable or failed.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The binding was retired by a config reload or the gateway is shutting down.
    #[error("binding stopped")]
    Stopped,
    /// An I/O error on the stream.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A bytes handler for bindings that only accept (servers): `connect` runs `accept` on one end of
/// an in-memory pipe and returns the other end, so a client pipeline can end in e.g. `echo`.
pub fn connect_via_accept(
    handler: Arc<dyn BytesHandler>,
    info: StreamInfo,
) -> Result<ByteStream, StreamError> {
    const PIPE_BUFFER: usize = 64 * 1024;
    let (near, far) = tokio::io::duplex(PIPE_BUFFER);
    let stream = ByteStream::new(far, info.clone());
    tokio::spawn(async move {
        if let Err(error) = handler.accept(stream).await {
            tracing::debug!(%error, "piped stream ended");
        }
    });
    Ok(ByteStream::new(near, info))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn rewind_reads_the_prefix_then_the_rest() {
        let (mut near, far) = tokio::io::duplex(1024);
        near.write_all(b" world").await.unwrap();
        drop(near);
        let mut rewound = Rewind::new(b"hello".to_vec(), Box::new(far));
        let mut first = [0; 3];
        rewound.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"hel");
        let mut rest = String::new();
        rewound.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
    }
}
