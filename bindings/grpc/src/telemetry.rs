//! The `grpc.*` metrics, as Zilla names them, recorded by the `server` kind for each call:
//! `grpc.active.requests` (calls in progress), `grpc.duration` (from the request head to the
//! final status, in nanoseconds), `grpc.request.size` and `grpc.response.size` (the bytes of
//! a call's request and response messages, before framing), `grpc.requests.per.rpc` and
//! `grpc.responses.per.rpc` (its message counts). They carry no attributes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use zilla_engine::BindingKind;
use zilla_engine::metrics::{
    BindingMetrics, Gauge, HistogramHandle, MetricDescriptor, MetricGroup, MetricKind, MetricScope,
    Unit,
};

use crate::kind::{MessageStream, ResponseItem, ResponseStream};

/// The `grpc.*` metrics.
pub static GRPC_METRICS: MetricGroup = MetricGroup {
    name: "grpc",
    binding_types: &["grpc"],
    metrics: &[
        MetricDescriptor {
            name: "grpc.active.requests",
            kind: MetricKind::Gauge,
            unit: Unit::Count,
            description: "Number of active gRPC requests",
        },
        MetricDescriptor {
            name: "grpc.duration",
            kind: MetricKind::Histogram,
            unit: Unit::Nanoseconds,
            description: "Duration of gRPC requests",
        },
        MetricDescriptor {
            name: "grpc.request.size",
            kind: MetricKind::Histogram,
            unit: Unit::Bytes,
            description: "gRPC request length",
        },
        MetricDescriptor {
            name: "grpc.response.size",
            kind: MetricKind::Histogram,
            unit: Unit::Bytes,
            description: "gRPC response length",
        },
        MetricDescriptor {
            name: "grpc.requests.per.rpc",
            kind: MetricKind::Histogram,
            unit: Unit::Count,
            description: "Number of gRPC request messages per RPC",
        },
        MetricDescriptor {
            name: "grpc.responses.per.rpc",
            kind: MetricKind::Histogram,
            unit: Unit::Count,
            description: "Number of gRPC response messages per RPC",
        },
    ],
    attribute: None,
    // Only the server records them: a client's calls are its server's on the other side.
    scope: Some(|kind, _| {
        if kind == BindingKind::Server {
            MetricScope::Recorded
        } else {
            MetricScope::NotRecorded
        }
    }),
};

/// The `grpc.*` handles one binding's config enables.
#[derive(Debug, Clone, Default)]
pub(crate) struct GrpcMetrics {
    active: Option<Gauge>,
    duration: Option<HistogramHandle>,
    request_size: Option<HistogramHandle>,
    response_size: Option<HistogramHandle>,
    requests_per_rpc: Option<HistogramHandle>,
    responses_per_rpc: Option<HistogramHandle>,
}

impl GrpcMetrics {
    pub(crate) fn new(metrics: &BindingMetrics) -> Self {
        Self {
            active: metrics.gauge("grpc.active.requests"),
            duration: metrics.histogram("grpc.duration"),
            request_size: metrics.histogram("grpc.request.size"),
            response_size: metrics.histogram("grpc.response.size"),
            requests_per_rpc: metrics.histogram("grpc.requests.per.rpc"),
            responses_per_rpc: metrics.histogram("grpc.responses.per.rpc"),
        }
    }

    /// Starts recording one call; `None` when nothing is enabled.
    pub(crate) fn start(self: &Arc<Self>) -> Option<CallRecord> {
        if self.active.is_none()
            && self.duration.is_none()
            && self.request_size.is_none()
            && self.response_size.is_none()
            && self.requests_per_rpc.is_none()
            && self.responses_per_rpc.is_none()
        {
            return None;
        }
        if let Some(active) = &self.active {
            active.add(1);
        }
        Some(CallRecord {
            metrics: self.clone(),
            started: Instant::now(),
            counts: Arc::new(Counts::default()),
        })
    }
}

/// Messages and bytes each way of one call.
#[derive(Debug, Default)]
struct Counts {
    request_messages: AtomicU64,
    request_bytes: AtomicU64,
    response_messages: AtomicU64,
    response_bytes: AtomicU64,
}

/// One call being recorded; dropping it (when the response ends or the call is refused)
/// records its sizes, counts and duration and ends it as active.
#[derive(Debug)]
pub(crate) struct CallRecord {
    metrics: Arc<GrpcMetrics>,
    started: Instant,
    counts: Arc<Counts>,
}

impl CallRecord {
    /// Counts the request messages as the exit takes them.
    pub(crate) fn requests(&self, messages: MessageStream) -> MessageStream {
        let counts = self.counts.clone();
        Box::pin(messages.inspect(move |item| {
            if let Ok(message) = item {
                counts.request_messages.fetch_add(1, Ordering::Relaxed);
                counts
                    .request_bytes
                    .fetch_add(message.len() as u64, Ordering::Relaxed);
            }
        }))
    }

    /// Counts the response messages as they are sent.
    pub(crate) fn responses(&self, items: ResponseStream) -> ResponseStream {
        let counts = self.counts.clone();
        Box::pin(items.inspect(move |item| {
            if let ResponseItem::Message(message) = item {
                counts.response_messages.fetch_add(1, Ordering::Relaxed);
                counts
                    .response_bytes
                    .fetch_add(message.len() as u64, Ordering::Relaxed);
            }
        }))
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let metrics = &self.metrics;
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let recorded = [
            (&metrics.request_size, load(&self.counts.request_bytes)),
            (&metrics.response_size, load(&self.counts.response_bytes)),
            (
                &metrics.requests_per_rpc,
                load(&self.counts.request_messages),
            ),
            (
                &metrics.responses_per_rpc,
                load(&self.counts.response_messages),
            ),
            (
                &metrics.duration,
                u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            ),
        ];
        for (histogram, value) in recorded {
            if let Some(histogram) = histogram {
                histogram.record(value);
            }
        }
        if let Some(active) = &metrics.active {
            active.add(-1);
        }
    }
}
