//! The `kafka.*` metrics the `proxy` kind records (and the cache size `cache_server` records),
//! in Zilla's naming style.
//!
//! - `kafka.requests` (counter): client requests, forwarded to the brokers or (naming only
//!   topics the client may not use) answered by the proxy.
//! - `kafka.errors` (counter): responses whose top-level error code is not 0. Only APIs with
//!   a top-level error code count (ApiVersions, FindCoordinator v0-3, JoinGroup, Heartbeat,
//!   LeaveGroup, SyncGroup, ListGroups, SaslHandshake, SaslAuthenticate, InitProducerId,
//!   DescribeCluster); per-partition errors of Produce and Fetch are not counted.
//! - `kafka.produce.size` (histogram, bytes): sizes of Produce requests (its sum is the bytes
//!   produced through the proxy, record sets and headers included).
//! - `kafka.fetch.size` (histogram, bytes): sizes of Fetch responses.
//! - `kafka.active.connections` (gauge): client connections open through the proxy.
//! - `kafka.cache.size` (gauge, bytes; recorded by `cache_server` bindings, not the proxy):
//!   the bytes the gateway's cache holds, as counted against its memory budget
//!   (`zilla.binding.kafka.cache.memory.bytes`), sampled every second. The budget is the
//!   gateway's, so every `cache_server` reports the same total.
//! - `kafka.cache.disk.size` (gauge, bytes; `cache_server` bindings): the bytes of the
//!   gateway's cache segment files, against `zilla.binding.kafka.cache.disk.bytes`, sampled
//!   every second (the same total from every `cache_server`).
//! - `kafka.duration` (histogram, exported in milliseconds): from a request leaving for the
//!   broker (or reaching a proxy that answers it itself) to its answer going back, for every
//!   answered request.
//!
//! - `kafka.produce.records` (counter, count): records in the Produce requests forwarded to
//!   the brokers (a request answered by the proxy itself, naming only forbidden topics, counts
//!   nothing).
//! - `kafka.produce.bytes` (counter, bytes): the bytes of those requests' record sets.
//! - `kafka.fetch.records` (counter, count): records in the Fetch responses passed to clients.
//! - `kafka.fetch.bytes` (counter, bytes): the bytes of those responses' record sets, a
//!   partial batch at the end of a partition's records included.
//!
//! Records are counted from the record batches' headers, never decoded ([`super::batches`]):
//! a RecordBatch counts its records, a legacy message set its messages (a compressed legacy
//! message counts as one), and a batch cut short at the end of a Fetch response counts only
//! its bytes. The record-set metrics decode Produce requests (v3-v11) and Fetch responses
//! (v4-v17) with the protocol library, only when one of them is enabled; other versions are
//! not counted, and a message that does not decode is passed on as it is, uncounted.
//!
//! `telemetry.attributes` may label `kafka.requests`, `kafka.errors` and `kafka.duration` by
//! API with the
//! expression `${kafka.request.api}` (the API's name, e.g. `Produce`, or its key when the
//! API is unknown here), and the four record-set metrics by topic with `${kafka.topic}`; each
//! expression labels only the metrics it applies to. Without `${kafka.topic}` the record-set
//! metrics are one series per binding. As for every labelled metric, a binding holds at most
//! 1000 series of one metric (further topics go to the `_overflow` series), so clients naming
//! ever new topics cannot grow the registry without bound.
//!
//! Fetch responses from v13 on name topics by id only. The proxy keeps the ids it sees in
//! Metadata responses (v10 on; at most 100 000 of them, per binding and forgotten on reload),
//! which every client asks for before fetching, and labels such a topic by its name; an id
//! it has not seen yet (say a client connected before a reload, until its next metadata
//! refresh) labels the topic by the id's text, e.g. `8c3e63a2-5d1e-4f7b-9a3c-1f2d3e4f5a6b`.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use bytes::Bytes;
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Message};
use uuid::Uuid;
use zilla_engine::BindingKind;
use zilla_engine::metrics::{
    BindingMetrics, Counter, Family, Gauge, HistogramHandle, MetricDescriptor, MetricGroup,
    MetricKind, MetricScope, Unit,
};

use super::batches::{self, RecordSetCount};
use super::message;
use crate::wire;

/// The expression that resolves to the request's API name.
const API_ATTRIBUTE: &str = "${kafka.request.api}";
/// The expression that resolves to the topic a record set belongs to.
const TOPIC_ATTRIBUTE: &str = "${kafka.topic}";

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;

/// The most topic ids remembered from Metadata responses: they come from the brokers, so
/// this only guards against a cluster (or a broker misbehaving) with very many topics.
const MAX_TOPIC_IDS: usize = 100_000;

/// The `kafka.*` metrics.
pub static KAFKA_METRICS: MetricGroup = MetricGroup {
    name: "kafka",
    binding_types: &["kafka"],
    metrics: &[
        MetricDescriptor {
            name: "kafka.requests",
            kind: MetricKind::Counter,
            unit: Unit::Count,
            description: "Kafka requests from clients of the proxy",
        },
        MetricDescriptor {
            name: "kafka.errors",
            kind: MetricKind::Counter,
            unit: Unit::Count,
            description: "Kafka responses with a top-level error code",
        },
        MetricDescriptor {
            name: "kafka.produce.size",
            kind: MetricKind::Histogram,
            unit: Unit::Bytes,
            description: "Size of Kafka Produce requests",
        },
        MetricDescriptor {
            name: "kafka.fetch.size",
            kind: MetricKind::Histogram,
            unit: Unit::Bytes,
            description: "Size of Kafka Fetch responses",
        },
        MetricDescriptor {
            name: "kafka.produce.records",
            kind: MetricKind::Counter,
            unit: Unit::Count,
            description: "Records in Kafka Produce requests forwarded by the proxy",
        },
        MetricDescriptor {
            name: "kafka.produce.bytes",
            kind: MetricKind::Counter,
            unit: Unit::Bytes,
            description: "Bytes of the record sets of Kafka Produce requests forwarded by the proxy",
        },
        MetricDescriptor {
            name: "kafka.fetch.records",
            kind: MetricKind::Counter,
            unit: Unit::Count,
            description: "Records in Kafka Fetch responses passed on by the proxy",
        },
        MetricDescriptor {
            name: "kafka.fetch.bytes",
            kind: MetricKind::Counter,
            unit: Unit::Bytes,
            description: "Bytes of the record sets of Kafka Fetch responses passed on by the proxy",
        },
        MetricDescriptor {
            name: "kafka.duration",
            kind: MetricKind::Histogram,
            unit: Unit::Nanoseconds,
            description: "Time from forwarding a Kafka request to its answer",
        },
        MetricDescriptor {
            name: "kafka.active.connections",
            kind: MetricKind::Gauge,
            unit: Unit::Count,
            description: "Kafka client connections open through the proxy",
        },
        MetricDescriptor {
            name: "kafka.cache.size",
            kind: MetricKind::Gauge,
            unit: Unit::Bytes,
            description: "Bytes the gateway's Kafka cache holds, as counted against its budget",
        },
        MetricDescriptor {
            name: "kafka.cache.disk.size",
            kind: MetricKind::Gauge,
            unit: Unit::Bytes,
            description: "Bytes of the gateway's Kafka cache segment files",
        },
    ],
    attribute: Some(check_attribute),
    scope: Some(kafka_scope),
};

/// The record-set metrics, which `${kafka.topic}` labels.
const RECORD_SET_METRICS: [&str; 4] = [
    "kafka.produce.records",
    "kafka.produce.bytes",
    "kafka.fetch.records",
    "kafka.fetch.bytes",
];

/// The proxy records every `kafka.*` metric but the cache's, labelling requests, errors and
/// durations (by API) and the record-set metrics (by topic); a `cache_server` records only
/// the cache's; the client and `cache_client` none.
fn kafka_scope(kind: BindingKind, metric: &str) -> MetricScope {
    let cache = metric.starts_with("kafka.cache.");
    match kind {
        BindingKind::Proxy if cache => MetricScope::NotRecorded,
        BindingKind::Proxy
            if matches!(metric, "kafka.requests" | "kafka.errors" | "kafka.duration")
                || RECORD_SET_METRICS.contains(&metric) =>
        {
            MetricScope::Labelled
        }
        BindingKind::Proxy => MetricScope::Recorded,
        BindingKind::CacheServer if cache => MetricScope::Recorded,
        _ => MetricScope::NotRecorded,
    }
}

fn check_attribute(value: &str) -> Result<(), String> {
    if [API_ATTRIBUTE, TOPIC_ATTRIBUTE].contains(&value.trim()) {
        Ok(())
    } else {
        Err(format!(
            "a kafka attribute is `{API_ATTRIBUTE}` or `{TOPIC_ATTRIBUTE}`"
        ))
    }
}

/// API keys whose counters are kept ready; higher keys are looked up on each use.
const CACHED_KEYS: usize = 128;

#[derive(Debug, Default)]
struct ApiCounters {
    requests: Option<Counter>,
    errors: Option<Counter>,
    duration: Option<HistogramHandle>,
}

/// The handles one proxy binding records with; all empty when no metric is enabled.
#[derive(Debug)]
pub(crate) struct ProxyMetrics {
    requests: Option<Family>,
    errors: Option<Family>,
    duration: Option<Family>,
    produce_size: Option<HistogramHandle>,
    fetch_size: Option<HistogramHandle>,
    active: Option<Gauge>,
    /// Names of the attributes that carry the API name.
    api_labels: Vec<String>,
    per_api: Vec<OnceLock<ApiCounters>>,
    /// The record-set metrics; `None` when none is enabled, so Produce requests and Fetch
    /// responses are never decoded.
    records: Option<RecordMetrics>,
}

/// One counter of each record-set metric, for one topic (or the binding).
#[derive(Debug, Default)]
struct RecordCounters {
    records: Option<Counter>,
    bytes: Option<Counter>,
}

impl RecordCounters {
    fn add(&self, count: RecordSetCount) {
        // A fetch that found nothing (most of a caught-up consumer's) adds nothing, and does
        // not make a series for its topic either.
        if let Some(counter) = &self.records
            && count.records > 0
        {
            counter.add(count.records);
        }
        if let Some(counter) = &self.bytes
            && count.bytes > 0
        {
            counter.add(count.bytes);
        }
    }
}

/// The record-set metrics of one direction.
#[derive(Debug)]
struct RecordFamilies {
    records: Option<Family>,
    bytes: Option<Family>,
    /// The series when the metrics are not labelled by topic.
    unlabelled: RecordCounters,
}

impl RecordFamilies {
    fn new(metrics: &BindingMetrics, records: &str, bytes: &str, labelled: bool) -> Self {
        let records = metrics.family(records);
        let bytes = metrics.family(bytes);
        let unlabelled = if labelled {
            RecordCounters::default()
        } else {
            RecordCounters {
                records: records.as_ref().and_then(|f| f.counter(Vec::new())),
                bytes: bytes.as_ref().and_then(|f| f.counter(Vec::new())),
            }
        };
        Self {
            records,
            bytes,
            unlabelled,
        }
    }

    fn enabled(&self) -> bool {
        self.records.is_some() || self.bytes.is_some()
    }
}

#[derive(Debug)]
struct RecordMetrics {
    produce: RecordFamilies,
    fetch: RecordFamilies,
    /// Names of the attributes that carry the topic.
    topic_labels: Vec<String>,
    /// Topic names by id, from Metadata responses, for Fetch responses that name topics by
    /// id only; kept only when topics label the metrics.
    topic_ids: RwLock<HashMap<Uuid, String>>,
}

impl RecordMetrics {
    fn new(metrics: &BindingMetrics, topic_labels: Vec<String>) -> Option<Self> {
        let labelled = !topic_labels.is_empty();
        let produce = RecordFamilies::new(
            metrics,
            "kafka.produce.records",
            "kafka.produce.bytes",
            labelled,
        );
        let fetch = RecordFamilies::new(
            metrics,
            "kafka.fetch.records",
            "kafka.fetch.bytes",
            labelled,
        );
        (produce.enabled() || fetch.enabled()).then(|| Self {
            produce,
            fetch,
            topic_labels,
            topic_ids: RwLock::new(HashMap::new()),
        })
    }

    /// Adds what `topics` (topic, id, count) carried to the metrics of `families`.
    fn add(&self, families: &RecordFamilies, topics: Vec<(Option<&str>, Uuid, RecordSetCount)>) {
        if self.topic_labels.is_empty() {
            let mut total = RecordSetCount::default();
            for (_, _, count) in topics {
                total += count;
            }
            families.unlabelled.add(total);
            return;
        }
        for (name, id, count) in topics {
            if count == RecordSetCount::default() {
                continue;
            }
            let topic = match name.filter(|name| !name.is_empty()) {
                Some(name) => name.to_owned(),
                None => self.topic_name(id),
            };
            let attributes: Vec<(String, String)> = self
                .topic_labels
                .iter()
                .map(|label| (label.clone(), topic.clone()))
                .collect();
            // The family caps the series and truncates long names, as for every label.
            RecordCounters {
                records: families
                    .records
                    .as_ref()
                    .and_then(|family| family.counter(attributes.clone())),
                bytes: families
                    .bytes
                    .as_ref()
                    .and_then(|family| family.counter(attributes)),
            }
            .add(count);
        }
    }

    /// The name Metadata gave topic `id`, or the id's text.
    fn topic_name(&self, id: Uuid) -> String {
        let ids = self
            .topic_ids
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        match ids.get(&id) {
            Some(name) => name.clone(),
            None => id.to_string(),
        }
    }
}

/// Sums the record sets of one topic's partitions.
fn sum<'a>(sets: impl Iterator<Item = Option<&'a Bytes>>) -> RecordSetCount {
    let mut total = RecordSetCount::default();
    for set in sets.flatten() {
        total += batches::count(set);
    }
    total
}

impl ProxyMetrics {
    /// The handles `metrics` enables, labelled by the binding's `telemetry.attributes`.
    pub(crate) fn new(metrics: &BindingMetrics, attributes: &[(String, String)]) -> Self {
        Self {
            requests: metrics.family("kafka.requests"),
            errors: metrics.family("kafka.errors"),
            duration: metrics.family("kafka.duration"),
            produce_size: metrics.histogram("kafka.produce.size"),
            fetch_size: metrics.histogram("kafka.fetch.size"),
            active: metrics.gauge("kafka.active.connections"),
            api_labels: labels(attributes, API_ATTRIBUTE),
            per_api: (0..CACHED_KEYS).map(|_| OnceLock::new()).collect(),
            records: RecordMetrics::new(metrics, labels(attributes, TOPIC_ATTRIBUTE)),
        }
    }

    /// A Produce request at `version` (`frame`, size prefix included) goes to the broker:
    /// counts its records per topic, when a record-set metric is enabled.
    pub(crate) fn produced(&self, version: i16, frame: &Bytes) {
        let Some(records) = &self.records else {
            return;
        };
        if !records.produce.enabled() {
            return;
        }
        let request = match message::decode_request::<kp::ProduceRequest>(PRODUCE, version, frame) {
            Ok((_, request)) => request,
            Err(error) => {
                // The broker answers it as it sees fit; it is only left uncounted here.
                tracing::debug!(%error, version, "Produce request not counted");
                return;
            }
        };
        let topics = request
            .topic_data
            .iter()
            .map(|topic| {
                let count = sum(topic.partition_data.iter().map(|p| p.records.as_ref()));
                (Some(topic.name.0.as_str()), topic.topic_id, count)
            })
            .collect();
        records.add(&records.produce, topics);
    }

    /// A Fetch response at `version` whose body is `frame[offset..]` goes to the client:
    /// counts its records per topic, when a record-set metric is enabled.
    pub(crate) fn fetched(&self, version: i16, frame: &Bytes, offset: usize) {
        let Some(records) = &self.records else {
            return;
        };
        let decoded = kp::FetchResponse::VERSIONS;
        if !records.fetch.enabled() || !(decoded.min..=decoded.max).contains(&version) {
            return;
        }
        if offset > frame.len() {
            return;
        }
        let body = frame.slice(offset..);
        // The schema walk refuses counts larger than the bytes left before the library
        // allocates anything from them; records stay slices of the frame.
        let response = wire::check_response_schema(FETCH, version, &body).and_then(|()| {
            kp::FetchResponse::decode(&mut body.clone(), version).map_err(|e| e.to_string())
        });
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(%error, version, "Fetch response not counted");
                return;
            }
        };
        let topics = response
            .responses
            .iter()
            .map(|topic| {
                let count = sum(topic.partitions.iter().map(|p| p.records.as_ref()));
                // From v13 on the name is empty and the id names the topic.
                let name = (version < 13).then(|| topic.topic.0.as_str());
                (name, topic.topic_id, count)
            })
            .collect();
        records.add(&records.fetch, topics);
    }

    /// A Metadata response lists `topics`: remembers their ids, for Fetch responses that
    /// name topics by id, when the record-set metrics are labelled by topic.
    pub(crate) fn metadata(&self, topics: &[kp::metadata_response::MetadataResponseTopic]) {
        let Some(records) = &self.records else {
            return;
        };
        if records.topic_labels.is_empty() {
            return;
        }
        let named = |topic: &&kp::metadata_response::MetadataResponseTopic| {
            !topic.topic_id.is_nil() && topic.name.is_some()
        };
        // Most Metadata responses repeat what is known: look before taking the write lock.
        let known = {
            let ids = records
                .topic_ids
                .read()
                .unwrap_or_else(|poison| poison.into_inner());
            topics
                .iter()
                .filter(named)
                .all(|topic| match ids.get(&topic.topic_id) {
                    Some(name) => Some(name.as_str()) == topic.name.as_ref().map(|n| n.0.as_str()),
                    None => ids.len() >= MAX_TOPIC_IDS,
                })
        };
        if known {
            return;
        }
        let mut ids = records
            .topic_ids
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        for topic in topics.iter().filter(named) {
            let Some(name) = &topic.name else {
                continue;
            };
            if ids.len() < MAX_TOPIC_IDS || ids.contains_key(&topic.topic_id) {
                ids.insert(topic.topic_id, name.0.to_string());
            }
        }
    }

    fn counters(&self, api_key: i16) -> Option<ApiCounters> {
        if self.requests.is_none() && self.errors.is_none() && self.duration.is_none() {
            return None;
        }
        let make = || {
            let name = api_name(api_key);
            let attributes: Vec<(String, String)> = self
                .api_labels
                .iter()
                .map(|label| (label.clone(), name.clone()))
                .collect();
            ApiCounters {
                requests: self
                    .requests
                    .as_ref()
                    .and_then(|family| family.counter(attributes.clone())),
                errors: self
                    .errors
                    .as_ref()
                    .and_then(|family| family.counter(attributes.clone())),
                duration: self
                    .duration
                    .as_ref()
                    .and_then(|family| family.histogram(attributes)),
            }
        };
        match usize::try_from(api_key)
            .ok()
            .and_then(|k| self.per_api.get(k))
        {
            Some(slot) => {
                let counters = slot.get_or_init(make);
                Some(ApiCounters {
                    requests: counters.requests.clone(),
                    errors: counters.errors.clone(),
                    duration: counters.duration.clone(),
                })
            }
            None => Some(make()),
        }
    }

    /// A request of `api_key` of `size` bytes was forwarded.
    pub(crate) fn request(&self, api_key: i16, size: usize) {
        if let Some(counter) = self.counters(api_key).and_then(|c| c.requests) {
            counter.add(1);
        }
        if api_key == 0
            && let Some(histogram) = &self.produce_size
        {
            histogram.record(size as u64);
        }
    }

    /// A response of `api_key` at `version` of `size` bytes came back, with `body` after
    /// its header.
    pub(crate) fn response(&self, api_key: i16, version: i16, size: usize, body: &[u8]) {
        if api_key == 1
            && let Some(histogram) = &self.fetch_size
        {
            histogram.record(size as u64);
        }
        if self.errors.is_some()
            && top_level_error(api_key, version, body).is_some_and(|code| code != 0)
            && let Some(counter) = self.counters(api_key).and_then(|c| c.errors)
        {
            counter.add(1);
        }
    }

    /// A request of `api_key` was answered `elapsed` after it was forwarded.
    pub(crate) fn duration(&self, api_key: i16, elapsed: std::time::Duration) {
        if self.duration.is_some()
            && let Some(histogram) = self.counters(api_key).and_then(|c| c.duration)
        {
            histogram.record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }

    /// A client connection opened (`1`) or closed (`-1`).
    pub(crate) fn connections(&self, delta: i64) {
        if let Some(active) = &self.active {
            active.add(delta);
        }
    }
}

/// Names of the attributes whose value is `expression`.
fn labels(attributes: &[(String, String)], expression: &str) -> Vec<String> {
    attributes
        .iter()
        .filter(|(_, value)| value.trim() == expression)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The API's name as Kafka spells it, or its key.
fn api_name(api_key: i16) -> String {
    match kp::ApiKey::try_from(api_key) {
        Ok(key) => format!("{key:?}"),
        Err(()) => api_key.to_string(),
    }
}

/// The top-level error code of a response body, for APIs that have one first (after the
/// throttle time where the version has it).
fn top_level_error(api_key: i16, version: i16, body: &[u8]) -> Option<i16> {
    let offset = match (api_key, version) {
        (18 | 17 | 36, _) => 0,
        (10 | 12 | 13 | 14 | 16, 0) | (11, 0 | 1) => 0,
        (10, 1..=3) | (11 | 12 | 13 | 14 | 16, _) | (22 | 60, _) => 4,
        _ => return None,
    };
    let bytes = body.get(offset..offset + 2)?;
    Some(i16::from_be_bytes([bytes[0], bytes[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_records_its_own_kafka_metrics() {
        use BindingKind::{CacheClient, CacheServer, Client, Proxy};
        let scope = |kind, metric| KAFKA_METRICS.scope_of(kind, metric);
        for metric in
            RECORD_SET_METRICS
                .iter()
                .chain(&["kafka.requests", "kafka.errors", "kafka.duration"])
        {
            assert_eq!(scope(Proxy, metric), MetricScope::Labelled, "{metric}");
        }
        for metric in [
            "kafka.produce.size",
            "kafka.fetch.size",
            "kafka.active.connections",
        ] {
            assert_eq!(scope(Proxy, metric), MetricScope::Recorded, "{metric}");
        }
        for metric in ["kafka.cache.size", "kafka.cache.disk.size"] {
            assert_eq!(scope(Proxy, metric), MetricScope::NotRecorded);
            assert_eq!(scope(CacheServer, metric), MetricScope::Recorded);
        }
        for kind in [Client, CacheClient] {
            for metric in KAFKA_METRICS.metrics {
                assert_eq!(scope(kind, metric.name), MetricScope::NotRecorded);
            }
        }
        assert_eq!(
            scope(CacheServer, "kafka.requests"),
            MetricScope::NotRecorded
        );
    }

    #[test]
    fn error_codes_are_read_where_each_api_puts_them() {
        assert_eq!(top_level_error(18, 3, &[0, 35, 0, 0]), Some(35));
        assert_eq!(top_level_error(12, 4, &[0, 0, 0, 0, 0, 27]), Some(27));
        assert_eq!(top_level_error(12, 0, &[0, 27]), Some(27));
        assert_eq!(top_level_error(0, 9, &[0, 0, 0, 0, 0, 1]), None);
        assert_eq!(top_level_error(22, 4, &[0, 0]), None);
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(999), "999");
        assert!(check_attribute("${kafka.request.api}").is_ok());
        assert!(check_attribute(" ${kafka.topic}").is_ok());
        assert!(check_attribute("${http.request.method}").is_err());
    }

    use std::collections::BTreeMap;

    use kafka_protocol::protocol::StrBytes;
    use zilla_engine::config::model::QualifiedName;
    use zilla_engine::metrics::Metrics;

    use crate::wire::{BatchOptions, Record, encode_batch};

    /// A registry with every `kafka.*` metric enabled for binding `ns:proxy`, and the proxy's
    /// handles labelled by `attributes`.
    fn proxy_metrics(attributes: &[(&str, &str)]) -> (Metrics, ProxyMetrics) {
        let metrics = Metrics::new([&KAFKA_METRICS]);
        metrics.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            KAFKA_METRICS
                .metrics
                .iter()
                .map(|m| m.name.to_owned())
                .collect(),
        )]));
        let binding = metrics.binding(&QualifiedName::new("ns", "proxy"), &["kafka.*".to_owned()]);
        let attributes: Vec<(String, String)> = attributes
            .iter()
            .map(|(label, value)| ((*label).to_owned(), (*value).to_owned()))
            .collect();
        let proxy = ProxyMetrics::new(&binding, &attributes);
        (metrics, proxy)
    }

    fn batch(records: usize) -> Bytes {
        let records: Vec<Record> = (0..records)
            .map(|i| Record {
                value: Some(Bytes::from(format!("v{i}"))),
                ..Record::default()
            })
            .collect();
        encode_batch(&records, &BatchOptions::default()).unwrap()
    }

    fn produce(version: i16, topics: &[(&'static str, Vec<Bytes>)]) -> Bytes {
        let mut request = kp::ProduceRequest::default();
        request.acks = -1;
        for (name, sets) in topics {
            let mut topic = kp::produce_request::TopicProduceData::default();
            topic.name = kp::TopicName(StrBytes::from_static_str(name));
            for (index, set) in sets.iter().enumerate() {
                let mut partition = kp::produce_request::PartitionProduceData::default();
                partition.index = index as i32;
                partition.records = Some(set.clone());
                topic.partition_data.push(partition);
            }
            request.topic_data.push(topic);
        }
        message::request_frame(PRODUCE, version, &request)
    }

    fn fetch(version: i16, topics: &[(&'static str, Uuid, Vec<Bytes>)]) -> (Bytes, usize) {
        let mut response = kp::FetchResponse::default();
        for (name, id, sets) in topics {
            let mut topic = kp::fetch_response::FetchableTopicResponse::default();
            if version < 13 {
                topic.topic = kp::TopicName(StrBytes::from_static_str(name));
            } else {
                topic.topic_id = *id;
            }
            for (index, set) in sets.iter().enumerate() {
                let mut partition = kp::fetch_response::PartitionData::default();
                partition.partition_index = index as i32;
                partition.records = Some(set.clone());
                topic.partitions.push(partition);
            }
            response.responses.push(topic);
        }
        message::response_for_test(FETCH, version, &response)
    }

    fn metadata_topic(
        name: &'static str,
        id: Uuid,
    ) -> kp::metadata_response::MetadataResponseTopic {
        let mut topic = kp::metadata_response::MetadataResponseTopic::default();
        topic.name = Some(kp::TopicName(StrBytes::from_static_str(name)));
        topic.topic_id = id;
        topic
    }

    #[test]
    fn records_are_counted_per_topic_with_ids_named_by_metadata() {
        let (metrics, proxy) =
            proxy_metrics(&[("api", "${kafka.request.api}"), ("topic", "${kafka.topic}")]);
        let (orders, audit) = (batch(3), batch(2));
        let mut cut = batch(4).to_vec();
        cut.truncate(cut.len() - 5);
        let cut = Bytes::from(cut);
        proxy.produced(
            9,
            &produce(
                9,
                &[
                    ("orders", vec![orders.clone(), orders.clone()]),
                    ("audit", vec![audit.clone()]),
                ],
            ),
        );
        let orders_id = Uuid::from_u128(1);
        let unknown_id = Uuid::from_u128(2);
        proxy.metadata(&[metadata_topic("orders", orders_id)]);
        let (frame, offset) = fetch(
            13,
            &[
                ("orders", orders_id, vec![orders.clone(), cut.clone()]),
                ("audit", unknown_id, vec![audit.clone()]),
            ],
        );
        proxy.fetched(13, &frame, offset);
        let (frame, offset) = fetch(12, &[("audit", Uuid::nil(), vec![Bytes::new()])]);
        proxy.fetched(12, &frame, offset);
        let table = metrics.table();
        let o = orders.len();
        let a = audit.len();
        for expected in [
            "ns proxy kafka.produce.records{topic=orders} 6".to_owned(),
            format!("ns proxy kafka.produce.bytes{{topic=orders}} {}", 2 * o),
            "ns proxy kafka.produce.records{topic=audit} 2".to_owned(),
            format!("ns proxy kafka.produce.bytes{{topic=audit}} {a}"),
            "ns proxy kafka.fetch.records{topic=orders} 3".to_owned(),
            format!(
                "ns proxy kafka.fetch.bytes{{topic=orders}} {}",
                o + cut.len()
            ),
            format!("ns proxy kafka.fetch.records{{topic={unknown_id}}} 2"),
        ] {
            assert!(table.contains(&expected), "{expected} in\n{table}");
        }
        // The empty fetch of `audit` by name made no series.
        assert!(
            !table.contains("kafka.fetch.records{topic=audit}"),
            "{table}"
        );
    }

    #[test]
    fn without_a_topic_attribute_records_are_one_series() {
        let (metrics, proxy) = proxy_metrics(&[("api", "${kafka.request.api}")]);
        let set = batch(5);
        proxy.produced(
            3,
            &produce(3, &[("a", vec![set.clone()]), ("b", vec![set.clone()])]),
        );
        let (frame, offset) = fetch(11, &[("a", Uuid::nil(), vec![set.clone()])]);
        proxy.fetched(11, &frame, offset);
        // Not decodable: not counted, no panic.
        proxy.fetched(11, &frame.slice(..frame.len() - 3), offset);
        proxy.fetched(11, &frame, frame.len() + 1);
        let table = metrics.table();
        for expected in [
            "ns proxy kafka.produce.records 10".to_owned(),
            format!("ns proxy kafka.produce.bytes {}", 2 * set.len()),
            "ns proxy kafka.fetch.records 5".to_owned(),
            format!("ns proxy kafka.fetch.bytes {}", set.len()),
        ] {
            assert!(table.contains(&expected), "{expected} in\n{table}");
        }
    }

    #[test]
    fn with_no_record_metric_enabled_nothing_is_decoded() {
        let metrics = Metrics::new([&KAFKA_METRICS]);
        metrics.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            vec!["kafka.requests".to_owned()],
        )]));
        let binding = metrics.binding(&QualifiedName::new("ns", "proxy"), &["kafka.*".to_owned()]);
        let proxy = ProxyMetrics::new(&binding, &[]);
        assert!(proxy.records.is_none());
    }
}
