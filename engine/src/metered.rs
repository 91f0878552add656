//! `stream.*` metrics for `bytes` streams, recorded where one binding hands a stream to another.
//! Only wrapped in when a metric is enabled for either side, so there is no cost otherwise.
//! Data is counted in the initial direction: bytes the routed binding reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::StreamMetrics;
use crate::stream::{AsyncIo, BoxFuture, ByteStream, BytesHandler, StreamError, StreamInfo};

/// `handler` recording the `stream.*` metrics of both sides of its hop, when either has any.
pub(crate) fn meter_bytes(
    handler: Arc<dyn BytesHandler>,
    origin: Option<Arc<StreamMetrics>>,
    routed: Option<Arc<StreamMetrics>>,
) -> Arc<dyn BytesHandler> {
    let metrics = HopMetrics { origin, routed };
    if metrics.is_empty() {
        handler
    } else {
        Arc::new(MeteredBytes {
            inner: handler,
            metrics,
        })
    }
}

/// Both sides' metrics of one hop.
#[derive(Debug, Clone, Default)]
pub(crate) struct HopMetrics {
    pub(crate) origin: Option<Arc<StreamMetrics>>,
    pub(crate) routed: Option<Arc<StreamMetrics>>,
}

impl HopMetrics {
    pub(crate) fn is_empty(&self) -> bool {
        self.origin.is_none() && self.routed.is_none()
    }

    fn each(&self, f: impl Fn(&StreamMetrics)) {
        if let Some(origin) = &self.origin {
            f(origin);
        }
        if let Some(routed) = &self.routed {
            f(routed);
        }
    }
}

/// A bytes handler that records `stream.*` metrics around another.
pub(crate) struct MeteredBytes {
    pub(crate) inner: Arc<dyn BytesHandler>,
    pub(crate) metrics: HopMetrics,
}

impl BytesHandler for MeteredBytes {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        self.metrics.each(StreamMetrics::opened);
        let stream = ByteStream {
            io: Box::new(CountingIo {
                inner: stream.io,
                metrics: self.metrics.clone(),
                closes: false,
            }),
            info: stream.info,
        };
        Box::pin(Accepted {
            serving: self.inner.accept(stream),
            metrics: Some(&self.metrics),
        })
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async move {
            match self.inner.connect(info).await {
                Ok(stream) => {
                    self.metrics.each(StreamMetrics::opened);
                    Ok(ByteStream {
                        io: Box::new(CountingIo {
                            inner: stream.io,
                            metrics: self.metrics.clone(),
                            closes: true,
                        }),
                        info: stream.info,
                    })
                }
                Err(error) => {
                    self.metrics.each(|m| {
                        m.opened();
                        m.closed(true);
                    });
                    Err(error)
                }
            }
        })
    }
}

/// An accepted stream being served, recording its close when the serving ends (as an error
/// when it fails, or when dropped first). A future of its own rather than an `async` block,
/// because the connection's task polls it every time it wakes, for the connection's whole
/// life, and this adds no state machine of its own to each poll.
struct Accepted<'a> {
    serving: BoxFuture<'a, Result<(), StreamError>>,
    /// Taken when the close is recorded.
    metrics: Option<&'a HopMetrics>,
}

impl Future for Accepted<'_> {
    type Output = Result<(), StreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.serving.as_mut().poll(cx));
        if let Some(metrics) = self.metrics.take() {
            let failed = result.is_err();
            metrics.each(|m| m.closed(failed));
        }
        Poll::Ready(result)
    }
}

impl Drop for Accepted<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.each(|m| m.closed(false));
        }
    }
}

struct CountingIo {
    inner: Box<dyn AsyncIo>,
    metrics: HopMetrics,
    /// Whether dropping it records the close: a connected stream closes when the caller
    /// drops it, an accepted one when `accept` returns.
    closes: bool,
}

impl Drop for CountingIo {
    fn drop(&mut self) {
        if self.closes {
            self.metrics.each(|m| m.closed(false));
        }
    }
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            self.metrics.each(|m| m.data(read));
        }
        result
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Forwarded so a writer over it (hyper) keeps writing head and body in one `writev`
    // instead of copying them into one buffer first.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::model::QualifiedName;
    use crate::metrics::{Direction, Metrics};

    /// Opens a pipe whose far end answers with what it reads.
    struct Echo;

    impl BytesHandler for Echo {
        fn connect(&self, _info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
            Box::pin(async {
                let (near, far) = tokio::io::duplex(1024);
                tokio::spawn(async move {
                    let (mut reader, mut writer) = tokio::io::split(far);
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
                Ok(ByteStream::new(near, StreamInfo::default()))
            })
        }
    }

    #[tokio::test]
    async fn a_connected_stream_counts_what_it_reads_and_closes_when_dropped() {
        let metrics = Metrics::new([]);
        let names = ["opens", "active", "data", "closes"].map(|m| format!("stream.{m}.sent"));
        metrics.set_namespace_metrics(BTreeMap::from([("ns".to_owned(), names.to_vec())]));
        let binding = metrics.binding(&QualifiedName::new("ns", "b"), &["stream.*".to_owned()]);
        let handler = meter_bytes(Arc::new(Echo), binding.streams(Direction::Sent), None);

        let mut stream = handler.connect(StreamInfo::default()).await.unwrap();
        stream.io.write_all(b"hello").await.unwrap();
        let mut read = [0; 5];
        stream.io.read_exact(&mut read).await.unwrap();
        let table = metrics.table();
        for line in [
            "ns b stream.opens.sent 1",
            "ns b stream.active.sent 1",
            "ns b stream.data.sent 5",
        ] {
            assert!(table.contains(line), "{line} in {table}");
        }
        assert!(!table.contains("stream.closes.sent 1"), "{table}");

        drop(stream);
        let table = metrics.table();
        for line in ["ns b stream.active.sent 0", "ns b stream.closes.sent 1"] {
            assert!(table.contains(line), "{line} in {table}");
        }
    }

    /// Serves an accepted stream by reading it to its end; fails on `fail` in the data.
    struct Reader;

    impl BytesHandler for Reader {
        fn accept(&self, mut stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
            Box::pin(async move {
                let mut read = Vec::new();
                stream
                    .io
                    .read_to_end(&mut read)
                    .await
                    .map_err(StreamError::Io)?;
                if read.windows(4).any(|window| window == b"fail") {
                    return Err(StreamError::Io(io::Error::other("failed")));
                }
                Ok(())
            })
        }

        fn connect(&self, _info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
            Box::pin(async { Err(StreamError::Io(io::Error::other("accepts only"))) })
        }
    }

    #[tokio::test]
    async fn an_accepted_stream_closes_when_served_failed_or_dropped() {
        let metrics = Metrics::new([]);
        let names =
            ["opens", "active", "data", "closes", "errors"].map(|m| format!("stream.{m}.received"));
        metrics.set_namespace_metrics(BTreeMap::from([("ns".to_owned(), names.to_vec())]));
        let binding = metrics.binding(&QualifiedName::new("ns", "b"), &["stream.*".to_owned()]);
        let handler = meter_bytes(Arc::new(Reader), None, binding.streams(Direction::Received));
        let table = || metrics.table();

        // Served to its end.
        let (mut near, far) = tokio::io::duplex(64);
        let serving = handler.accept(ByteStream::new(far, StreamInfo::default()));
        assert!(
            table().contains("ns b stream.active.received 1"),
            "{}",
            table()
        );
        near.write_all(b"hello").await.unwrap();
        drop(near);
        serving.await.unwrap();
        for line in [
            "ns b stream.data.received 5",
            "ns b stream.closes.received 1",
            "ns b stream.active.received 0",
        ] {
            assert!(table().contains(line), "{line} in {}", table());
        }

        // Failed: an error, not a close.
        let (mut near, far) = tokio::io::duplex(64);
        let serving = handler.accept(ByteStream::new(far, StreamInfo::default()));
        near.write_all(b"fail").await.unwrap();
        drop(near);
        assert!(serving.await.is_err());
        assert!(
            table().contains("ns b stream.errors.received 1"),
            "{}",
            table()
        );

        // Dropped while serving (a connection's task cancelled): closed, once.
        let (_near, far) = tokio::io::duplex(64);
        let mut serving = handler.accept(ByteStream::new(far, StreamInfo::default()));
        assert!(
            futures_util::poll!(serving.as_mut()).is_pending(),
            "still serving"
        );
        assert!(
            table().contains("ns b stream.active.received 1"),
            "{}",
            table()
        );
        drop(serving);
        for line in [
            "ns b stream.opens.received 3",
            "ns b stream.closes.received 2",
            "ns b stream.errors.received 1",
            "ns b stream.active.received 0",
        ] {
            assert!(table().contains(line), "{line} in {}", table());
        }
    }

    /// Opens a loopback TCP connection, whose writes are vectored.
    struct Loopback(tokio::net::TcpListener);

    impl BytesHandler for Loopback {
        fn connect(&self, _info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
            Box::pin(async {
                let address = self.0.local_addr().map_err(StreamError::Io)?;
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(StreamError::Io)?;
                Ok(ByteStream::new(stream, StreamInfo::default()))
            })
        }
    }

    #[tokio::test]
    async fn a_metered_stream_keeps_vectored_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = Metrics::new([]);
        metrics.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            vec!["stream.data.sent".to_owned()],
        )]));
        let binding = metrics.binding(&QualifiedName::new("ns", "b"), &["stream.*".to_owned()]);
        let handler = meter_bytes(
            Arc::new(Loopback(listener)),
            binding.streams(Direction::Sent),
            None,
        );
        let mut stream = handler.connect(StreamInfo::default()).await.unwrap();
        assert!(stream.io.is_write_vectored());
        let slices = [io::IoSlice::new(b"head"), io::IoSlice::new(b"body")];
        let written = stream.io.write_vectored(&slices).await.unwrap();
        assert_eq!(written, 8);
    }
}
