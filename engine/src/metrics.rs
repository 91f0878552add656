//! The metric registry, with Zilla's names, kinds and units so dashboards carry over.
//!
//! Bindings take handles at build time; recording is one relaxed atomic add. A metric records
//! only when the namespace lists it in `telemetry.metrics` and the binding's
//! `telemetry.metrics` has a regex matching it, as in Zilla; otherwise the handle is `None` and
//! costs nothing. Values survive reloads: the same (namespace, binding, metric) keeps counting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::model::QualifiedName;

/// What a metric counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes.
    Bytes,
    /// Nanoseconds.
    Nanoseconds,
    /// A plain count.
    Count,
}

/// Counter, gauge or histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic.
    Counter,
    /// Goes up and down.
    Gauge,
    /// 63 power-of-two buckets.
    Histogram,
}

/// Every metric name this build knows, with its kind and unit.
pub const KNOWN_METRICS: &[(&str, MetricKind, Unit)] = &[
    ("stream.active.received", MetricKind::Gauge, Unit::Count),
    ("stream.active.sent", MetricKind::Gauge, Unit::Count),
    ("stream.opens.received", MetricKind::Counter, Unit::Count),
    ("stream.opens.sent", MetricKind::Counter, Unit::Count),
    ("stream.data.received", MetricKind::Counter, Unit::Bytes),
    ("stream.data.sent", MetricKind::Counter, Unit::Bytes),
    ("stream.errors.received", MetricKind::Counter, Unit::Count),
    ("stream.errors.sent", MetricKind::Counter, Unit::Count),
    ("stream.closes.received", MetricKind::Counter, Unit::Count),
    ("stream.closes.sent", MetricKind::Counter, Unit::Count),
    ("http.request.size", MetricKind::Histogram, Unit::Bytes),
    ("http.response.size", MetricKind::Histogram, Unit::Bytes),
    ("http.active.requests", MetricKind::Gauge, Unit::Count),
    ("http.duration", MetricKind::Histogram, Unit::Nanoseconds),
    ("grpc.request.size", MetricKind::Histogram, Unit::Bytes),
    ("grpc.response.size", MetricKind::Histogram, Unit::Bytes),
    ("grpc.active.requests", MetricKind::Gauge, Unit::Count),
    ("grpc.duration", MetricKind::Histogram, Unit::Nanoseconds),
    ("grpc.requests.per.rpc", MetricKind::Histogram, Unit::Count),
    ("grpc.responses.per.rpc", MetricKind::Histogram, Unit::Count),
];

/// The kind and unit of a known metric name.
pub fn describe(name: &str) -> Option<(MetricKind, Unit)> {
    KNOWN_METRICS
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|(_, kind, unit)| (*kind, *unit))
}

/// Number of histogram buckets: upper limits 2, 4, ... 2^63, plus one for larger values.
pub const HISTOGRAM_BUCKETS: usize = 64;

/// One metric's storage.
#[derive(Debug)]
pub enum Metric {
    /// A counter.
    Counter(AtomicU64),
    /// A gauge.
    Gauge(AtomicI64),
    /// A histogram.
    Histogram(Box<Histogram>),
}

/// Power-of-two bucket histogram.
#[derive(Debug)]
pub struct Histogram {
    /// Bucket `i` counts values `v` with `2^i <= v < 2^(i+1)` (bucket 0 also holds 0 and 1).
    pub buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    /// Sum of recorded values.
    pub sum: AtomicU64,
    /// Number of recorded values.
    pub count: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        let bucket = (63 - value.max(1).leading_zeros()) as usize;
        self.buckets[bucket.min(HISTOGRAM_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A handle to a counter.
#[derive(Debug, Clone)]
pub struct Counter(Arc<Metric>);

impl Counter {
    /// Adds `value`.
    pub fn add(&self, value: u64) {
        if let Metric::Counter(counter) = &*self.0 {
            counter.fetch_add(value, Ordering::Relaxed);
        }
    }
}

/// A handle to a gauge.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<Metric>);

impl Gauge {
    /// Adds `delta` (may be negative).
    pub fn add(&self, delta: i64) {
        if let Metric::Gauge(gauge) = &*self.0 {
            gauge.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

/// A handle to a histogram.
#[derive(Debug, Clone)]
pub struct HistogramHandle(Arc<Metric>);

impl HistogramHandle {
    /// Records one value.
    pub fn record(&self, value: u64) {
        if let Metric::Histogram(histogram) = &*self.0 {
            histogram.record(value);
        }
    }
}

type MetricKey = (String, String, &'static str);

/// The process-wide registry. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    metrics: Arc<Mutex<BTreeMap<MetricKey, Arc<Metric>>>>,
    enabled: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

impl Metrics {
    /// Sets the metric names each namespace records (`telemetry.metrics`).
    pub fn set_namespace_metrics(&self, namespaces: BTreeMap<String, Vec<String>>) {
        if let Ok(mut enabled) = self.enabled.lock() {
            *enabled = namespaces;
        }
    }

    /// The handles of one binding; `patterns` are its `telemetry.metrics` regexes.
    pub fn binding(&self, name: &QualifiedName, patterns: &[String]) -> BindingMetrics {
        let namespace_metrics = self
            .enabled
            .lock()
            .ok()
            .and_then(|enabled| enabled.get(&name.namespace).cloned())
            .unwrap_or_default();
        let regexes: Vec<regex::Regex> = patterns
            .iter()
            .filter_map(|pattern| regex::Regex::new(&format!("^(?:{pattern})$")).ok())
            .collect();
        let enabled = KNOWN_METRICS
            .iter()
            .map(|(metric, _, _)| *metric)
            .filter(|metric| namespace_metrics.iter().any(|m| m == metric))
            .filter(|metric| regexes.iter().any(|regex| regex.is_match(metric)))
            .collect();
        BindingMetrics {
            registry: self.clone(),
            name: name.clone(),
            enabled,
        }
    }

    fn handle(&self, name: &QualifiedName, metric: &'static str) -> Option<Arc<Metric>> {
        let (kind, _) = describe(metric)?;
        let mut metrics = self.metrics.lock().ok()?;
        let entry = metrics
            .entry((name.namespace.clone(), name.name.clone(), metric))
            .or_insert_with(|| {
                Arc::new(match kind {
                    MetricKind::Counter => Metric::Counter(AtomicU64::new(0)),
                    MetricKind::Gauge => Metric::Gauge(AtomicI64::new(0)),
                    MetricKind::Histogram => Metric::Histogram(Box::new(Histogram::new())),
                })
            });
        Some(entry.clone())
    }

    /// Every recorded metric: (namespace, binding, name, storage), sorted.
    pub fn snapshot(&self) -> Vec<(String, String, &'static str, Arc<Metric>)> {
        self.metrics
            .lock()
            .map(|metrics| {
                metrics
                    .iter()
                    .map(|((ns, binding, metric), value)| {
                        (ns.clone(), binding.clone(), *metric, value.clone())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The snapshot as a `namespace binding metric value` table, as `zilla metrics` prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (namespace, binding, metric, value) in self.snapshot() {
            let value = match &*value {
                Metric::Counter(counter) => counter.load(Ordering::Relaxed).to_string(),
                Metric::Gauge(gauge) => gauge.load(Ordering::Relaxed).to_string(),
                Metric::Histogram(histogram) => {
                    let count = histogram.count.load(Ordering::Relaxed);
                    let sum = histogram.sum.load(Ordering::Relaxed);
                    format!("count={count} sum={sum}")
                }
            };
            out.push_str(&format!("{namespace} {binding} {metric} {value}\n"));
        }
        out
    }
}

/// The metrics one binding may record.
#[derive(Debug, Clone)]
pub struct BindingMetrics {
    registry: Metrics,
    name: QualifiedName,
    enabled: Vec<&'static str>,
}

impl BindingMetrics {
    fn enabled_handle(&self, metric: &'static str) -> Option<Arc<Metric>> {
        if self.enabled.contains(&metric) {
            self.registry.handle(&self.name, metric)
        } else {
            None
        }
    }

    /// A counter, if enabled.
    pub fn counter(&self, metric: &'static str) -> Option<Counter> {
        self.enabled_handle(metric).map(Counter)
    }

    /// A gauge, if enabled.
    pub fn gauge(&self, metric: &'static str) -> Option<Gauge> {
        self.enabled_handle(metric).map(Gauge)
    }

    /// A histogram, if enabled.
    pub fn histogram(&self, metric: &'static str) -> Option<HistogramHandle> {
        self.enabled_handle(metric).map(HistogramHandle)
    }

    /// The `stream.*` handles of one direction (`sent` when this binding opens the stream,
    /// `received` when it is opened on it); `None` when none is enabled.
    pub fn streams(&self, direction: Direction) -> Option<Arc<StreamMetrics>> {
        let (active, opens, data, errors, closes) = match direction {
            Direction::Received => (
                "stream.active.received",
                "stream.opens.received",
                "stream.data.received",
                "stream.errors.received",
                "stream.closes.received",
            ),
            Direction::Sent => (
                "stream.active.sent",
                "stream.opens.sent",
                "stream.data.sent",
                "stream.errors.sent",
                "stream.closes.sent",
            ),
        };
        let metrics = StreamMetrics {
            active: self.gauge(active),
            opens: self.counter(opens),
            data: self.counter(data),
            errors: self.counter(errors),
            closes: self.counter(closes),
        };
        let any = metrics.active.is_some()
            || metrics.opens.is_some()
            || metrics.data.is_some()
            || metrics.errors.is_some()
            || metrics.closes.is_some();
        any.then(|| Arc::new(metrics))
    }
}

/// Which side of a stream a binding is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The stream was opened on this binding.
    Received,
    /// This binding opened the stream.
    Sent,
}

/// The `stream.*` handles of one binding and direction.
#[derive(Debug, Default)]
pub struct StreamMetrics {
    /// `stream.active.*`.
    pub active: Option<Gauge>,
    /// `stream.opens.*`.
    pub opens: Option<Counter>,
    /// `stream.data.*`.
    pub data: Option<Counter>,
    /// `stream.errors.*`.
    pub errors: Option<Counter>,
    /// `stream.closes.*`.
    pub closes: Option<Counter>,
}

impl StreamMetrics {
    /// A stream opened.
    pub fn opened(&self) {
        if let Some(opens) = &self.opens {
            opens.add(1);
        }
        if let Some(active) = &self.active {
            active.add(1);
        }
    }

    /// `bytes` of data passed.
    pub fn data(&self, bytes: u64) {
        if let Some(data) = &self.data {
            data.add(bytes);
        }
    }

    /// The stream closed, in error or not.
    pub fn closed(&self, error: bool) {
        let counter = if error { &self.errors } else { &self.closes };
        if let Some(counter) = counter {
            counter.add(1);
        }
        if let Some(active) = &self.active {
            active.add(-1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_what_namespace_and_binding_enable() {
        let metrics = Metrics::default();
        metrics.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            vec!["stream.opens.sent".to_owned(), "http.duration".to_owned()],
        )]));
        let name = QualifiedName::new("ns", "b");
        let binding = metrics.binding(&name, &["stream.*".to_owned()]);
        assert!(binding.counter("stream.opens.sent").is_some());
        assert!(binding.counter("stream.opens.received").is_none());
        assert!(binding.histogram("http.duration").is_none());
        binding.counter("stream.opens.sent").unwrap().add(2);
        assert!(metrics.table().contains("ns b stream.opens.sent 2"));
    }

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        let histogram = Histogram::new();
        for value in [0, 1, 2, 3, 4, 1024, u64::MAX] {
            histogram.record(value);
        }
        let counts: Vec<u64> = histogram
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 2);
        assert_eq!(counts[2], 1);
        assert_eq!(counts[10], 1);
        assert_eq!(counts[63], 1);
    }
}
