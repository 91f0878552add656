//! The metric registry, with Zilla's names, kinds and units so dashboards carry over.
//!
//! The engine knows no protocol: each component crate declares the metrics it records as a
//! [`MetricGroup`] and registers it (`Registry::metric_group`); the engine itself declares only
//! the generic `stream.*` group ([`STREAM_METRICS`]), recorded wherever one binding hands a byte
//! stream to another.
//!
//! Bindings take handles at build time; recording is one relaxed atomic add. A metric records
//! only when the namespace lists it in `telemetry.metrics` and the binding's
//! `telemetry.metrics` has a regex matching it, as in Zilla; otherwise the handle is `None` and
//! costs nothing. Values survive reloads: the same (namespace, binding, metric, attributes)
//! keeps counting.
//!
//! Labelled series (binding `telemetry.attributes`) are resolved through a [`Family`]: a
//! lock-free read of a copy-on-write map, so the hot path takes no lock once a combination of
//! attribute values has been seen. Each (namespace, binding, metric) holds at most
//! [`MAX_SERIES_PER_METRIC`] series; further combinations are recorded in one overflow series
//! whose attribute values are all [`OVERFLOW_VALUE`], and a warning is logged once. Attribute
//! values longer than [`MAX_ATTRIBUTE_VALUE_BYTES`] are cut to that length.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::model::{BindingKind, QualifiedName};

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

impl MetricKind {
    /// The lower-case word exporters print (`counter`, `gauge`, `histogram`).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric a component records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDescriptor {
    /// Zilla's name, e.g. `http.request.size`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// What it counts in.
    pub unit: Unit,
    /// One line for exporters' help text.
    pub description: &'static str,
}

/// Checks one `telemetry.attributes` value; the error says what is expected.
pub type AttributeCheck = fn(&str) -> Result<(), String>;

/// The metrics one component records, declared by that component.
#[derive(Debug)]
pub struct MetricGroup {
    /// The group name: every metric in it is named `<name>.…`.
    pub name: &'static str,
    /// The binding types that record it; empty when every binding does.
    pub binding_types: &'static [&'static str],
    /// Its metrics.
    pub metrics: &'static [MetricDescriptor],
    /// Checks one binding `telemetry.attributes` value (an expression such as
    /// `${http.request.method}`); `None` when this group records no attributes.
    pub attribute: Option<AttributeCheck>,
    /// What a binding of a given kind does with each metric of the group; `None` when every
    /// kind of `binding_types` records every metric, labelled by the attributes if
    /// `attribute` is given.
    pub scope: Option<fn(BindingKind, &str) -> MetricScope>,
}

/// What a binding of one kind does with one metric of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricScope {
    /// It never records the metric: enabling it is refused at load.
    NotRecorded,
    /// It records the metric without attributes.
    Recorded,
    /// It records the metric, labelled by the binding's `telemetry.attributes`.
    Labelled,
}

impl MetricGroup {
    /// Whether a binding of `type_name` records this group.
    pub fn recorded_by(&self, type_name: &str) -> bool {
        self.binding_types.is_empty() || self.binding_types.contains(&type_name)
    }

    /// What a binding of `kind` (of one of `binding_types`) does with `metric`.
    pub fn scope_of(&self, kind: BindingKind, metric: &str) -> MetricScope {
        match self.scope {
            Some(scope) => scope(kind, metric),
            None if self.attribute.is_some() => MetricScope::Labelled,
            None => MetricScope::Recorded,
        }
    }
}

/// The generic `stream.*` metrics, recorded by the engine for every binding.
pub static STREAM_METRICS: MetricGroup = MetricGroup {
    name: "stream",
    binding_types: &[],
    metrics: &[
        stream_metric(
            "stream.active.received",
            MetricKind::Gauge,
            Unit::Count,
            "Number of currently active received streams",
        ),
        stream_metric(
            "stream.active.sent",
            MetricKind::Gauge,
            Unit::Count,
            "Number of currently active sent streams",
        ),
        stream_metric(
            "stream.opens.received",
            MetricKind::Counter,
            Unit::Count,
            "Number of opened received streams",
        ),
        stream_metric(
            "stream.opens.sent",
            MetricKind::Counter,
            Unit::Count,
            "Number of opened sent streams",
        ),
        stream_metric(
            "stream.data.received",
            MetricKind::Counter,
            Unit::Bytes,
            "Bytes of data on received streams",
        ),
        stream_metric(
            "stream.data.sent",
            MetricKind::Counter,
            Unit::Bytes,
            "Bytes of data on sent streams",
        ),
        stream_metric(
            "stream.errors.received",
            MetricKind::Counter,
            Unit::Count,
            "Number of errors on received streams",
        ),
        stream_metric(
            "stream.errors.sent",
            MetricKind::Counter,
            Unit::Count,
            "Number of errors on sent streams",
        ),
        stream_metric(
            "stream.closes.received",
            MetricKind::Counter,
            Unit::Count,
            "Number of closed received streams",
        ),
        stream_metric(
            "stream.closes.sent",
            MetricKind::Counter,
            Unit::Count,
            "Number of closed sent streams",
        ),
    ],
    attribute: None,
    scope: None,
};

const fn stream_metric(
    name: &'static str,
    kind: MetricKind,
    unit: Unit,
    description: &'static str,
) -> MetricDescriptor {
    MetricDescriptor {
        name,
        kind,
        unit,
        description,
    }
}

/// Number of histogram buckets kept: bucket `i` counts values `v` with `2^i <= v < 2^(i+1)`
/// (bucket 0 also holds 0 and 1); the last one also holds everything larger.
pub const HISTOGRAM_BUCKETS: usize = 64;

/// At most this many series (attribute combinations) per (namespace, binding, metric).
pub const MAX_SERIES_PER_METRIC: usize = 1000;

/// The value of every attribute of the series that takes combinations beyond the limit.
pub const OVERFLOW_VALUE: &str = "_overflow";

/// Attribute values are cut to this many bytes.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 256;

/// Shards of each metric's storage. A thread always records into the same shard
/// ([`shard`]), so worker threads on different cores do not take turns owning one cache line
/// on every request; reading adds the shards up.
const SHARDS: usize = 4;

/// A value alone on its cache lines (two, as adjacent-line prefetching pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// This thread's shard: threads are numbered in the order they first record.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Not yet numbered. A constant initial value makes every later read a plain load of the
    // thread's slot, with no lazy-initialisation check on the recording path.
    const UNNUMBERED: usize = usize::MAX;
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(UNNUMBERED) };
    }
    SHARD.with(|shard| match shard.get() {
        UNNUMBERED => {
            let numbered = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(numbered);
            numbered
        }
        numbered => numbered,
    })
}

/// One metric's storage.
#[derive(Debug)]
pub enum Metric {
    /// A counter.
    Counter(CounterCell),
    /// A gauge.
    Gauge(GaugeCell),
    /// A histogram.
    Histogram(Box<Histogram>),
}

impl Metric {
    fn new(kind: MetricKind) -> Self {
        match kind {
            MetricKind::Counter => Metric::Counter(CounterCell::default()),
            MetricKind::Gauge => Metric::Gauge(GaugeCell::default()),
            MetricKind::Histogram => Metric::Histogram(Box::new(Histogram::new())),
        }
    }
}

/// A counter's storage.
#[derive(Debug, Default)]
pub struct CounterCell {
    shards: [Padded<AtomicU64>; SHARDS],
}

impl CounterCell {
    /// Adds `value`.
    pub fn add(&self, value: u64) {
        self.shards[shard()].0.fetch_add(value, Ordering::Relaxed);
    }

    /// The count, read now.
    pub fn get(&self) -> u64 {
        self.shards.iter().fold(0u64, |sum, shard| {
            sum.wrapping_add(shard.0.load(Ordering::Relaxed))
        })
    }
}

/// A gauge's storage: added to ([`GaugeCell::add`]) or set ([`GaugeCell::set`]), not both.
#[derive(Debug, Default)]
pub struct GaugeCell {
    shards: [Padded<AtomicI64>; SHARDS],
}

impl GaugeCell {
    /// Adds `delta` (may be negative).
    pub fn add(&self, delta: i64) {
        self.shards[shard()].0.fetch_add(delta, Ordering::Relaxed);
    }

    /// Sets the value, kept in the first shard.
    pub fn set(&self, value: i64) {
        self.shards[0].0.store(value, Ordering::Relaxed);
    }

    /// The value, read now.
    pub fn get(&self) -> i64 {
        self.shards.iter().fold(0i64, |sum, shard| {
            sum.wrapping_add(shard.0.load(Ordering::Relaxed))
        })
    }
}

/// Power-of-two bucket histogram.
#[derive(Debug)]
pub struct Histogram {
    shards: [Padded<HistogramShard>; SHARDS],
}

#[derive(Debug)]
struct HistogramShard {
    /// Bucket `i` counts values `v` with `2^i <= v < 2^(i+1)` (bucket 0 also holds 0 and 1).
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    /// Sum of recorded values.
    sum: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| {
                Padded(HistogramShard {
                    buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum: AtomicU64::new(0),
                })
            }),
        }
    }

    /// Records one value: two atomic adds in this thread's shard (the count is the buckets'
    /// sum, added up when read).
    pub fn record(&self, value: u64) {
        let bucket = (63 - value.max(1).leading_zeros()) as usize;
        let shard = &self.shards[shard()].0;
        shard.buckets[bucket.min(HISTOGRAM_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        shard.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.read().count
    }

    /// The bucket counts, sum and count, read now.
    pub fn read(&self) -> HistogramValues {
        let mut buckets = [0u64; HISTOGRAM_BUCKETS];
        let mut sum = 0u64;
        for shard in &self.shards {
            for (total, bucket) in buckets.iter_mut().zip(&shard.0.buckets) {
                *total = total.wrapping_add(bucket.load(Ordering::Relaxed));
            }
            sum = sum.wrapping_add(shard.0.sum.load(Ordering::Relaxed));
        }
        HistogramValues {
            count: buckets
                .iter()
                .fold(0u64, |count, bucket| count.wrapping_add(*bucket)),
            buckets,
            sum,
        }
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramValues {
    /// Per-bucket (not cumulative) counts, as in [`Histogram::buckets`].
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    /// Sum of recorded values.
    pub sum: u64,
    /// Number of recorded values.
    pub count: u64,
}

/// A handle to a counter.
#[derive(Debug, Clone)]
pub struct Counter(Arc<Metric>);

impl Counter {
    /// Adds `value`.
    pub fn add(&self, value: u64) {
        if let Metric::Counter(counter) = &*self.0 {
            counter.add(value);
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
            gauge.add(delta);
        }
    }

    /// Sets the value: for a gauge sampled from a level kept elsewhere.
    pub fn set(&self, value: i64) {
        if let Metric::Gauge(gauge) = &*self.0 {
            gauge.set(value);
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

/// Attribute labels of one series, sorted by name.
pub type Attributes = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    namespace: String,
    binding: String,
    metric: &'static str,
    attributes: Attributes,
}

/// One series in a [`Metrics::snapshot`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Namespace name.
    pub namespace: String,
    /// Binding name.
    pub binding: String,
    /// What the metric is.
    pub descriptor: &'static MetricDescriptor,
    /// Attribute labels, sorted by name; empty when the binding sets none.
    pub attributes: Attributes,
    /// The live storage.
    pub value: Arc<Metric>,
}

#[derive(Debug, Default)]
struct Store {
    series: BTreeMap<SeriesKey, Arc<Metric>>,
    /// Series per (namespace, binding, metric), to bound attribute combinations.
    counts: HashMap<(String, String, &'static str), usize>,
}

#[derive(Debug)]
struct Inner {
    descriptors: ArcSwap<HashMap<&'static str, &'static MetricDescriptor>>,
    store: Mutex<Store>,
    enabled: Mutex<BTreeMap<String, Vec<String>>>,
    /// (namespace, binding) → the binding's kind, for exporters that name metrics by kind.
    kinds: Mutex<HashMap<(String, String), String>>,
}

impl Default for Inner {
    fn default() -> Self {
        let descriptors = STREAM_METRICS.metrics.iter().map(|m| (m.name, m)).collect();
        Self {
            descriptors: ArcSwap::from_pointee(descriptors),
            store: Mutex::default(),
            enabled: Mutex::default(),
            kinds: Mutex::default(),
        }
    }
}

/// The process-wide registry. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    /// A registry that knows `stream.*` and the metrics of `groups`.
    pub fn new<'a>(groups: impl IntoIterator<Item = &'a MetricGroup>) -> Self {
        let metrics = Self::default();
        metrics.set_groups(groups);
        metrics
    }

    /// Sets the metric groups this registry knows (besides `stream.*`, always known).
    pub fn set_groups<'a>(&self, groups: impl IntoIterator<Item = &'a MetricGroup>) {
        let mut descriptors: HashMap<&'static str, &'static MetricDescriptor> =
            STREAM_METRICS.metrics.iter().map(|m| (m.name, m)).collect();
        for group in groups {
            // Descriptors live in statics; copy the `'static` references out of the group.
            let metrics: &'static [MetricDescriptor] = group.metrics;
            descriptors.extend(metrics.iter().map(|m| (m.name, m)));
        }
        self.inner.descriptors.store(Arc::new(descriptors));
    }

    /// The descriptor of a known metric.
    pub fn describe(&self, name: &str) -> Option<&'static MetricDescriptor> {
        self.inner.descriptors.load().get(name).copied()
    }

    /// Sets the metric names each namespace records (`telemetry.metrics`).
    pub fn set_namespace_metrics(&self, namespaces: BTreeMap<String, Vec<String>>) {
        if let Ok(mut enabled) = self.inner.enabled.lock() {
            *enabled = namespaces;
        }
    }

    /// Records the kind (`server`, `client`, ...) of the binding `name`, as built last.
    pub fn set_binding_kind(&self, name: &QualifiedName, kind: &str) {
        if let Ok(mut kinds) = self.inner.kinds.lock() {
            kinds.insert((name.namespace.clone(), name.name.clone()), kind.to_owned());
        }
    }

    /// The kind of binding `binding` in `namespace`, when it has been built.
    pub fn binding_kind(&self, namespace: &str, binding: &str) -> Option<String> {
        let kinds = self.inner.kinds.lock().ok()?;
        kinds
            .get(&(namespace.to_owned(), binding.to_owned()))
            .cloned()
    }

    /// The handles of one binding; `patterns` are its `telemetry.metrics` regexes.
    pub fn binding(&self, name: &QualifiedName, patterns: &[String]) -> BindingMetrics {
        let namespace_metrics = self
            .inner
            .enabled
            .lock()
            .ok()
            .and_then(|enabled| enabled.get(&name.namespace).cloned())
            .unwrap_or_default();
        let regexes: Vec<regex::Regex> = patterns
            .iter()
            .filter_map(|pattern| metric_pattern(pattern).ok())
            .collect();
        let descriptors = self.inner.descriptors.load();
        let enabled = namespace_metrics
            .iter()
            .filter_map(|metric| descriptors.get(metric.as_str()).copied())
            .filter(|metric| regexes.iter().any(|regex| regex.is_match(metric.name)))
            .collect();
        BindingMetrics {
            registry: self.clone(),
            name: name.clone(),
            enabled,
        }
    }

    /// The storage of one series, created on first use. Beyond the series limit of its
    /// metric, the overflow series with the same attribute names.
    fn series(
        &self,
        name: &QualifiedName,
        descriptor: &'static MetricDescriptor,
        attributes: Attributes,
    ) -> Option<(Arc<Metric>, bool)> {
        let mut store = self.inner.store.lock().ok()?;
        let key = SeriesKey {
            namespace: name.namespace.clone(),
            binding: name.name.clone(),
            metric: descriptor.name,
            attributes,
        };
        if let Some(existing) = store.series.get(&key) {
            return Some((existing.clone(), false));
        }
        let count_key = (key.namespace.clone(), key.binding.clone(), descriptor.name);
        let count = store.counts.get(&count_key).copied().unwrap_or(0);
        let (key, overflowed) = if count >= MAX_SERIES_PER_METRIC && !key.attributes.is_empty() {
            let attributes = key
                .attributes
                .iter()
                .map(|(label, _)| (label.clone(), OVERFLOW_VALUE.to_owned()))
                .collect();
            (SeriesKey { attributes, ..key }, true)
        } else {
            (key, false)
        };
        if let Some(existing) = store.series.get(&key) {
            return Some((existing.clone(), overflowed));
        }
        let metric = Arc::new(Metric::new(descriptor.kind));
        store.series.insert(key, metric.clone());
        *store.counts.entry(count_key).or_default() += 1;
        Some((metric, overflowed))
    }

    /// Every recorded series, sorted by namespace, binding, metric and attributes.
    pub fn snapshot(&self) -> Vec<Series> {
        let descriptors = self.inner.descriptors.load();
        self.inner
            .store
            .lock()
            .map(|store| {
                store
                    .series
                    .iter()
                    .filter_map(|(key, value)| {
                        Some(Series {
                            namespace: key.namespace.clone(),
                            binding: key.binding.clone(),
                            descriptor: descriptors.get(key.metric).copied()?,
                            attributes: key.attributes.clone(),
                            value: value.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The snapshot as a `namespace binding metric value` table, as `zilla metrics` prints.
    /// A labelled series shows its attributes after the metric name:
    /// `http.duration{method=GET,path=/items}`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for series in self.snapshot() {
            let value = match &*series.value {
                Metric::Counter(counter) => counter.get().to_string(),
                Metric::Gauge(gauge) => gauge.get().to_string(),
                Metric::Histogram(histogram) => {
                    let values = histogram.read();
                    format!("count={} sum={}", values.count, values.sum)
                }
            };
            let mut metric = series.descriptor.name.to_owned();
            if !series.attributes.is_empty() {
                let labels: Vec<String> = series
                    .attributes
                    .iter()
                    .map(|(label, value)| format!("{label}={value}"))
                    .collect();
                metric = format!("{metric}{{{}}}", labels.join(","));
            }
            out.push_str(&format!(
                "{} {} {metric} {value}\n",
                series.namespace, series.binding
            ));
        }
        out
    }
}

/// A binding `telemetry.metrics` entry as a regex over whole metric names.
pub fn metric_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

/// The metrics one binding may record.
#[derive(Debug, Clone)]
pub struct BindingMetrics {
    registry: Metrics,
    name: QualifiedName,
    enabled: Vec<&'static MetricDescriptor>,
}

impl BindingMetrics {
    fn enabled_descriptor(&self, metric: &str) -> Option<&'static MetricDescriptor> {
        self.enabled.iter().find(|m| m.name == metric).copied()
    }

    fn enabled_handle(&self, metric: &str) -> Option<Arc<Metric>> {
        let descriptor = self.enabled_descriptor(metric)?;
        self.registry
            .series(&self.name, descriptor, Vec::new())
            .map(|(metric, _)| metric)
    }

    /// A counter, if enabled.
    pub fn counter(&self, metric: &str) -> Option<Counter> {
        self.enabled_handle(metric).map(Counter)
    }

    /// A gauge, if enabled.
    pub fn gauge(&self, metric: &str) -> Option<Gauge> {
        self.enabled_handle(metric).map(Gauge)
    }

    /// A histogram, if enabled.
    pub fn histogram(&self, metric: &str) -> Option<HistogramHandle> {
        self.enabled_handle(metric).map(HistogramHandle)
    }

    /// The labelled series of one metric, if enabled.
    pub fn family(&self, metric: &str) -> Option<Family> {
        let descriptor = self.enabled_descriptor(metric)?;
        Some(Family {
            registry: self.registry.clone(),
            name: self.name.clone(),
            descriptor,
            cache: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            full: Arc::new(AtomicBool::new(false)),
        })
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

/// The series of one metric of one binding, told apart by attribute values.
///
/// Looking up a combination already seen reads a shared map without locking; a new
/// combination takes the registry lock once and republishes the map. Once the metric holds
/// [`MAX_SERIES_PER_METRIC`] series, new combinations go to the overflow series without
/// being remembered, so the map stays bounded too.
#[derive(Debug, Clone)]
pub struct Family {
    registry: Metrics,
    name: QualifiedName,
    descriptor: &'static MetricDescriptor,
    cache: Arc<ArcSwap<HashMap<Attributes, Arc<Metric>>>>,
    full: Arc<AtomicBool>,
}

impl Family {
    fn series(&self, mut attributes: Attributes) -> Option<Arc<Metric>> {
        for (_, value) in attributes.iter_mut() {
            truncate(value, MAX_ATTRIBUTE_VALUE_BYTES);
        }
        attributes.sort();
        if let Some(metric) = self.cache.load().get(&attributes) {
            return Some(metric.clone());
        }
        if self.full.load(Ordering::Relaxed) && !attributes.is_empty() {
            for (_, value) in attributes.iter_mut() {
                *value = OVERFLOW_VALUE.to_owned();
            }
            if let Some(metric) = self.cache.load().get(&attributes) {
                return Some(metric.clone());
            }
        }
        let (metric, overflowed) =
            self.registry
                .series(&self.name, self.descriptor, attributes.clone())?;
        if overflowed {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    binding = %self.name,
                    metric = self.descriptor.name,
                    "more than {MAX_SERIES_PER_METRIC} attribute combinations; further ones are recorded with every attribute `{OVERFLOW_VALUE}`"
                );
            }
            for (_, value) in attributes.iter_mut() {
                *value = OVERFLOW_VALUE.to_owned();
            }
        }
        self.cache.rcu(|cache| {
            let mut cache = HashMap::clone(cache);
            cache.insert(attributes.clone(), metric.clone());
            cache
        });
        Some(metric)
    }

    /// The counter for these attribute values.
    pub fn counter(&self, attributes: Attributes) -> Option<Counter> {
        self.series(attributes).map(Counter)
    }

    /// The gauge for these attribute values.
    pub fn gauge(&self, attributes: Attributes) -> Option<Gauge> {
        self.series(attributes).map(Gauge)
    }

    /// The histogram for these attribute values.
    pub fn histogram(&self, attributes: Attributes) -> Option<HistogramHandle> {
        self.series(attributes).map(HistogramHandle)
    }
}

fn truncate(value: &mut String, max: usize) {
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
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

    static TEST_GROUP: MetricGroup = MetricGroup {
        name: "test",
        binding_types: &["test"],
        metrics: &[MetricDescriptor {
            name: "test.size",
            kind: MetricKind::Histogram,
            unit: Unit::Bytes,
            description: "Test sizes",
        }],
        attribute: None,
        scope: None,
    };

    fn registry(metrics: &[&str]) -> Metrics {
        let registry = Metrics::new([&TEST_GROUP]);
        registry.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            metrics.iter().map(|m| (*m).to_owned()).collect(),
        )]));
        registry
    }

    #[test]
    fn records_only_what_namespace_and_binding_enable() {
        let metrics = registry(&["stream.opens.sent", "test.size"]);
        let name = QualifiedName::new("ns", "b");
        let binding = metrics.binding(&name, &["stream.*".to_owned()]);
        assert!(binding.counter("stream.opens.sent").is_some());
        assert!(binding.counter("stream.opens.received").is_none());
        assert!(binding.histogram("test.size").is_none());
        binding.counter("stream.opens.sent").unwrap().add(2);
        assert!(metrics.table().contains("ns b stream.opens.sent 2"));
    }

    #[test]
    fn metrics_of_unregistered_groups_are_unknown() {
        let metrics = Metrics::default();
        metrics.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            vec!["test.size".to_owned()],
        )]));
        let binding = metrics.binding(&QualifiedName::new("ns", "b"), &["test.*".to_owned()]);
        assert!(binding.histogram("test.size").is_none());
        assert!(metrics.describe("test.size").is_none());
        assert!(registry(&[]).describe("test.size").is_some());
    }

    #[test]
    fn values_recorded_on_many_threads_add_up_across_shards() {
        let counter = CounterCell::default();
        let gauge = GaugeCell::default();
        let histogram = Histogram::new();
        std::thread::scope(|scope| {
            for thread in 0..(SHARDS as u64 * 2 + 1) {
                let (counter, gauge, histogram) = (&counter, &gauge, &histogram);
                scope.spawn(move || {
                    for _ in 0..1000 {
                        counter.add(2);
                        gauge.add(1);
                        histogram.record(thread + 1);
                    }
                    gauge.add(-500);
                });
            }
        });
        let threads = SHARDS as u64 * 2 + 1;
        assert_eq!(counter.get(), threads * 2000);
        assert_eq!(gauge.get(), i64::try_from(threads * 500).unwrap());
        let values = histogram.read();
        assert_eq!(values.count, threads * 1000);
        assert_eq!(values.sum, (1..=threads).sum::<u64>() * 1000);
        assert_eq!(values.buckets[0], 1000);
        let level = GaugeCell::default();
        level.set(7);
        level.set(5);
        assert_eq!(level.get(), 5);
    }

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        let histogram = Histogram::new();
        for value in [0, 1, 2, 3, 4, 1024, u64::MAX] {
            histogram.record(value);
        }
        let counts = histogram.read().buckets;
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 2);
        assert_eq!(counts[2], 1);
        assert_eq!(counts[10], 1);
        assert_eq!(counts[63], 1);
    }

    #[test]
    fn families_keep_one_series_per_attribute_combination() {
        let metrics = registry(&["test.size"]);
        let binding = metrics.binding(&QualifiedName::new("ns", "b"), &["test.*".to_owned()]);
        let family = binding.family("test.size").unwrap();
        let get = |method: &str| vec![("method".to_owned(), method.to_owned())];
        family.histogram(get("GET")).unwrap().record(3);
        family.histogram(get("GET")).unwrap().record(5);
        family.histogram(get("POST")).unwrap().record(7);
        let table = metrics.table();
        assert!(
            table.contains("ns b test.size{method=GET} count=2 sum=8"),
            "{table}"
        );
        assert!(
            table.contains("ns b test.size{method=POST} count=1 sum=7"),
            "{table}"
        );
        // A rebuilt binding (reload) keeps counting into the same series.
        let rebuilt = metrics.binding(&QualifiedName::new("ns", "b"), &["test.*".to_owned()]);
        let family = rebuilt.family("test.size").unwrap();
        family.histogram(get("GET")).unwrap().record(1);
        assert!(
            metrics
                .table()
                .contains("test.size{method=GET} count=3 sum=9")
        );
    }

    #[test]
    fn attribute_combinations_beyond_the_limit_share_the_overflow_series() {
        let metrics = registry(&["test.size"]);
        let binding = metrics.binding(&QualifiedName::new("ns", "b"), &["test.*".to_owned()]);
        let family = binding.family("test.size").unwrap();
        for index in 0..MAX_SERIES_PER_METRIC + 50 {
            family
                .histogram(vec![("path".to_owned(), format!("/{index}"))])
                .unwrap()
                .record(1);
        }
        let series = metrics.snapshot();
        assert_eq!(series.len(), MAX_SERIES_PER_METRIC + 1);
        let overflow = series
            .iter()
            .find(|s| s.attributes == vec![("path".to_owned(), OVERFLOW_VALUE.to_owned())])
            .unwrap();
        let Metric::Histogram(histogram) = &*overflow.value else {
            panic!("a histogram")
        };
        assert_eq!(histogram.count(), 50);
        assert!(family.cache.load().len() <= MAX_SERIES_PER_METRIC + 1);
    }

    #[test]
    fn long_attribute_values_are_cut_on_a_character_boundary() {
        let metrics = registry(&["test.size"]);
        let binding = metrics.binding(&QualifiedName::new("ns", "b"), &["test.*".to_owned()]);
        let family = binding.family("test.size").unwrap();
        let long = "é".repeat(MAX_ATTRIBUTE_VALUE_BYTES);
        family
            .histogram(vec![("path".to_owned(), long)])
            .unwrap()
            .record(1);
        let value = &metrics.snapshot()[0].attributes[0].1;
        assert!(value.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
        assert!(value.chars().all(|c| c == 'é'));
    }
}
