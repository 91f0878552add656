//! `stream.*` metrics for `bytes` streams, recorded where one binding hands a stream to another.
//! Only wrapped in when a metric is enabled for either side, so there is no cost otherwise.
//! Data is counted in the initial direction: bytes the routed binding reads.

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
        Box::pin(async move {
            self.metrics.each(StreamMetrics::opened);
            let stream = ByteStream {
                io: Box::new(CountingIo {
                    inner: stream.io,
                    metrics: self.metrics.clone(),
                    closes: false,
                }),
                info: stream.info,
            };
            let result = self.inner.accept(stream).await;
            let failed = result.is_err();
            self.metrics.each(|m| m.closed(failed));
            result
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
