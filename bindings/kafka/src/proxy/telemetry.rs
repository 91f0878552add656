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
//! `telemetry.attributes` may label `kafka.requests`, `kafka.errors` and `kafka.duration` by
//! API with the
//! expression `${kafka.request.api}` (the API's name, e.g. `Produce`, or its key when the
//! API is unknown here).

use std::sync::OnceLock;

use kafka_protocol::messages as kp;
use zilla_engine::metrics::{
    BindingMetrics, Counter, Family, Gauge, HistogramHandle, MetricDescriptor, MetricGroup,
    MetricKind, Unit,
};

/// The expression that resolves to the request's API name.
const API_ATTRIBUTE: &str = "${kafka.request.api}";

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
};

fn check_attribute(value: &str) -> Result<(), String> {
    if value.trim() == API_ATTRIBUTE {
        Ok(())
    } else {
        Err(format!("a kafka attribute is `{API_ATTRIBUTE}`"))
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
            api_labels: attributes
                .iter()
                .filter(|(_, value)| value.trim() == API_ATTRIBUTE)
                .map(|(name, _)| name.clone())
                .collect(),
            per_api: (0..CACHED_KEYS).map(|_| OnceLock::new()).collect(),
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
    fn error_codes_are_read_where_each_api_puts_them() {
        assert_eq!(top_level_error(18, 3, &[0, 35, 0, 0]), Some(35));
        assert_eq!(top_level_error(12, 4, &[0, 0, 0, 0, 0, 27]), Some(27));
        assert_eq!(top_level_error(12, 0, &[0, 27]), Some(27));
        assert_eq!(top_level_error(0, 9, &[0, 0, 0, 0, 0, 1]), None);
        assert_eq!(top_level_error(22, 4, &[0, 0]), None);
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(999), "999");
        assert!(check_attribute("${kafka.request.api}").is_ok());
        assert!(check_attribute("${http.request.method}").is_err());
    }
}
