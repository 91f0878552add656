//! OTLP/HTTP JSON bodies as Zilla's otlp exporter writes them.
//!
//! Metrics: one `resourceMetrics` entry with the scope `OtlpMetricsSerializer` 1.0.0; each
//! series is one metric with one data point carrying `namespace` and `binding` attributes and
//! the series' own. Counters are cumulative monotonic `sum`s, gauges `gauge`s, histograms
//! cumulative `histogram`s with 62 explicit bounds (2, 4, … 2^62) and 63 bucket counts.
//! Nanosecond metrics are sent in milliseconds (unit `milliseconds`), bytes with unit `bytes`,
//! counts with an empty unit. The `http.*` metrics take the OpenTelemetry names by binding
//! kind, as in Zilla (`http.server.request.size`, `http.client.duration`, ...).
//!
//! Both carry the namespace's `telemetry.attributes` as the attributes of their one resource,
//! as Zilla's do (e.g. `service.namespace`).
//!
//! Logs: each event is one log record: `timeUnixNano` and `observedTimeUnixNano`, the body
//! `<qname> <message>`, and the attribute `event.name`. Every string goes through
//! `serde_json`, so quotes and control characters in messages are escaped.
//!
//! Traces: each span a binding recorded, with its trace, span and parent ids in hex, kind,
//! start and end, the recording binding (`zilla.binding`) and the binding's attributes
//! (`http.request.method`, `url.path`, `http.response.status_code`), and status ERROR when
//! it failed.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use zilla_engine::events::Event;
use zilla_engine::metrics::{Metric, MetricDescriptor, Series, Unit};
use zilla_engine::traces::{Span, SpanKind, to_hex};
use zilla_exporter_prometheus::exposition::{EXPOSED_BUCKETS, NANOS_PER_MILLI, exposed_buckets};

/// Zilla's scope names.
const METRICS_SCOPE: &str = "OtlpMetricsSerializer";
const LOGS_SCOPE: &str = "OtlpLogsSerializer";
/// Zilla has no traces; the scope is named in the same way.
const TRACES_SCOPE: &str = "OtlpTracesSerializer";
/// OpenTelemetry's `SpanKind` values.
const SPAN_KIND_SERVER: u8 = 2;
const SPAN_KIND_CLIENT: u8 = 3;
const SPAN_KIND_PRODUCER: u8 = 4;
/// `Status.StatusCode` ERROR.
const STATUS_CODE_ERROR: u8 = 2;
const SCOPE_VERSION: &str = "1.0.0";
/// `AggregationTemporality` CUMULATIVE.
const CUMULATIVE: u8 = 2;

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The OpenTelemetry name of a metric recorded by a binding of `kind`.
pub fn metric_name(name: &'static str, kind: Option<&str>) -> &'static str {
    match (kind, name) {
        (Some("server"), "http.request.size") => "http.server.request.size",
        (Some("server"), "http.response.size") => "http.server.response.size",
        (Some("server"), "http.duration") => "http.server.duration",
        (Some("server"), "http.active.requests") => "http.server.active_requests",
        (Some("client"), "http.request.size") => "http.client.request.size",
        (Some("client"), "http.response.size") => "http.client.response.size",
        (Some("client"), "http.duration") => "http.client.duration",
        _ => name,
    }
}

fn unit(descriptor: &MetricDescriptor) -> &'static str {
    match descriptor.unit {
        Unit::Bytes => "bytes",
        Unit::Nanoseconds => "milliseconds",
        Unit::Count => "",
    }
}

fn attribute(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn point_attributes(series: &Series) -> Vec<Value> {
    let mut attributes = vec![
        attribute("namespace", &series.namespace),
        attribute("binding", &series.binding),
    ];
    attributes.extend(
        series
            .attributes
            .iter()
            .map(|(key, value)| attribute(key, value)),
    );
    attributes
}

/// A scalar in the metric's exported unit: `asDouble` milliseconds for nanoseconds.
fn scalar(value: i64, unit: Unit) -> (&'static str, Value) {
    match unit {
        Unit::Nanoseconds => ("asDouble", json!(value as f64 / NANOS_PER_MILLI as f64)),
        _ => ("asInt", json!(value)),
    }
}

/// One metric for `series`; `kind` is the kind of the binding that recorded it.
pub fn metric(series: &Series, kind: Option<&str>, now: u64) -> Value {
    let descriptor = series.descriptor;
    let mut point = serde_json::Map::new();
    point.insert("timeUnixNano".into(), json!(now));
    point.insert("attributes".into(), Value::Array(point_attributes(series)));
    let data = match &*series.value {
        Metric::Counter(counter) => {
            let value = i64::try_from(counter.get()).unwrap_or(i64::MAX);
            let (field, value) = scalar(value, descriptor.unit);
            point.insert(field.into(), value);
            (
                "sum",
                json!({"dataPoints": [point], "aggregationTemporality": CUMULATIVE, "isMonotonic": true}),
            )
        }
        Metric::Gauge(gauge) => {
            let (field, value) = scalar(gauge.get(), descriptor.unit);
            point.insert(field.into(), value);
            ("gauge", json!({"dataPoints": [point]}))
        }
        Metric::Histogram(histogram) => {
            let values = histogram.read();
            let buckets = exposed_buckets(&values.buckets, descriptor.unit);
            // The count is the buckets' total, so it always agrees with them.
            let count: u64 = buckets.iter().sum();
            let sum = match descriptor.unit {
                Unit::Nanoseconds => values.sum as f64 / NANOS_PER_MILLI as f64,
                _ => values.sum as f64,
            };
            let bounds: Vec<f64> = (1..EXPOSED_BUCKETS).map(|i| (1u64 << i) as f64).collect();
            point.insert("sum".into(), json!(sum));
            point.insert("count".into(), json!(count));
            point.insert("explicitBounds".into(), json!(bounds));
            point.insert("bucketCounts".into(), json!(buckets.to_vec()));
            (
                "histogram",
                json!({"aggregationTemporality": CUMULATIVE, "dataPoints": [point]}),
            )
        }
    };
    let mut metric = serde_json::Map::new();
    metric.insert("name".into(), json!(metric_name(descriptor.name, kind)));
    metric.insert("unit".into(), json!(unit(descriptor)));
    metric.insert("description".into(), json!(descriptor.description));
    metric.insert(data.0.into(), data.1);
    Value::Object(metric)
}

/// The resource of every push: the namespace's `telemetry.attributes` as string attributes,
/// in the order written.
fn resource(attributes: &[(String, String)]) -> Value {
    let attributes: Vec<Value> = attributes
        .iter()
        .map(|(key, value)| attribute(key, value))
        .collect();
    json!({"attributes": attributes})
}

/// The body posted to the metrics endpoint; `attributes` are the resource's.
pub fn metrics_body(attributes: &[(String, String)], metrics: Vec<Value>) -> String {
    envelope(
        attributes,
        "Metrics",
        METRICS_SCOPE,
        "metrics",
        Value::Array(metrics),
    )
    .to_string()
}

/// An OTLP export request of one `signal` (`Metrics`, `Logs`, `Spans`): one resource with
/// `attributes`, one scope named `scope`, and its `records` under `key`.
fn envelope(
    attributes: &[(String, String)],
    signal: &str,
    scope: &str,
    key: &str,
    records: Value,
) -> Value {
    let mut scoped = json!({"scope": {"name": scope, "version": SCOPE_VERSION}});
    scoped[key] = records;
    json!({
        format!("resource{signal}"): [{
            "resource": resource(attributes),
            format!("scope{signal}"): [scoped],
        }],
    })
}

/// One event as a log record, already encoded.
pub fn log_record(event: &Event) -> String {
    let nanos = unix_nanos(event.timestamp);
    json!({
        "timeUnixNano": nanos,
        "observedTimeUnixNano": nanos,
        "body": {"stringValue": format!("{} {}", event.qname, event.message)},
        "attributes": [attribute("event.name", event.name)],
    })
    .to_string()
}

/// The body posted to the logs endpoint for encoded `records`; `attributes` are the
/// resource's.
pub fn logs_body<'a>(
    attributes: &[(String, String)],
    records: impl Iterator<Item = &'a str>,
) -> String {
    spliced(
        envelope(attributes, "Logs", LOGS_SCOPE, "logRecords", json!([])),
        "logRecords",
        records,
    )
}

/// `body` with the encoded `records` in its one empty list named `key`.
fn spliced<'a>(body: Value, key: &str, records: impl Iterator<Item = &'a str>) -> String {
    let mut body = body.to_string();
    // The records are encoded once, when they are raised; splice them into the empty list.
    // A resource value cannot hold the marker: its quotes are escaped.
    let joined: Vec<&str> = records.collect();
    let marker = format!("\"{key}\":[]");
    if let Some(at) = body.find(&marker) {
        let insert_at = at + marker.len() - 1;
        body.insert_str(insert_at, &joined.join(","));
    }
    body
}

/// One span, encoded when it ends. Ids are lower-case hex, as OTLP/JSON writes them (unlike
/// protobuf's JSON mapping of bytes); the recording binding is the attribute
/// `zilla.binding`.
pub fn span_record(span: &Span) -> String {
    let mut attributes = vec![attribute("zilla.binding", &span.qname)];
    attributes.extend(
        span.attributes
            .iter()
            .map(|(key, value)| attribute(key, value)),
    );
    let mut record = json!({
        "traceId": to_hex(&span.trace_id),
        "spanId": to_hex(&span.span_id),
        "name": span.name,
        "kind": match span.kind {
            SpanKind::Server => SPAN_KIND_SERVER,
            SpanKind::Client => SPAN_KIND_CLIENT,
            SpanKind::Producer => SPAN_KIND_PRODUCER,
        },
        "startTimeUnixNano": unix_nanos(span.start),
        "endTimeUnixNano": unix_nanos(span.end),
        "attributes": attributes,
    });
    if let Some(parent) = &span.parent_id {
        record["parentSpanId"] = json!(to_hex(parent));
    }
    if span.error {
        record["status"] = json!({"code": STATUS_CODE_ERROR});
    }
    record.to_string()
}

/// The body posted to the traces endpoint for encoded span `records`; `attributes` are the
/// resource's.
pub fn traces_body<'a>(
    attributes: &[(String, String)],
    records: impl Iterator<Item = &'a str>,
) -> String {
    spliced(
        envelope(attributes, "Spans", TRACES_SCOPE, "spans", json!([])),
        "spans",
        records,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn http_metrics_take_opentelemetry_names_by_binding_kind() {
        assert_eq!(
            metric_name("http.request.size", Some("server")),
            "http.server.request.size"
        );
        assert_eq!(
            metric_name("http.active.requests", Some("server")),
            "http.server.active_requests"
        );
        assert_eq!(
            metric_name("http.duration", Some("client")),
            "http.client.duration"
        );
        assert_eq!(
            metric_name("http.active.requests", Some("client")),
            "http.active.requests"
        );
        assert_eq!(
            metric_name("stream.opens.received", Some("server")),
            "stream.opens.received"
        );
    }

    #[test]
    fn event_text_is_escaped_and_records_spliced_into_valid_json() {
        let event = Event {
            qname: Arc::from("test:http_server"),
            timestamp: UNIX_EPOCH + std::time::Duration::from_millis(42),
            trace_id: 0,
            name: "BINDING_HTTP_REQUEST_ACCEPTED",
            message: "said \"hi\"\n\\ back".into(),
        };
        let one = log_record(&event);
        let resource = [(
            "service.namespace".to_owned(),
            "\"logRecords\":[]".to_owned(),
        )];
        let body = logs_body(&resource, [one.as_str(), one.as_str()].into_iter());
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed["resourceLogs"][0]["resource"]["attributes"][0],
            json!({"key": "service.namespace", "value": {"stringValue": "\"logRecords\":[]"}})
        );
        let records = &parsed["resourceLogs"][0]["scopeLogs"][0]["logRecords"];
        assert_eq!(records.as_array().unwrap().len(), 2);
        assert_eq!(
            records[0]["body"]["stringValue"],
            "test:http_server said \"hi\"\n\\ back"
        );
        assert_eq!(records[0]["timeUnixNano"], 42_000_000);
        assert_eq!(
            records[0]["attributes"][0]["value"]["stringValue"],
            "BINDING_HTTP_REQUEST_ACCEPTED"
        );
        let empty: Value = serde_json::from_str(&logs_body(&[], std::iter::empty())).unwrap();
        assert!(
            empty["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn each_signal_has_its_own_envelope_and_scope() {
        let resource = [("service.name".to_owned(), "zilla".to_owned())];
        let metrics: Value =
            serde_json::from_str(&metrics_body(&resource, vec![json!({"name": "m"})])).unwrap();
        let scoped = &metrics["resourceMetrics"][0]["scopeMetrics"][0];
        assert_eq!(scoped["scope"]["name"], METRICS_SCOPE);
        assert_eq!(scoped["metrics"], json!([{"name": "m"}]));
        assert_eq!(
            metrics["resourceMetrics"][0]["resource"]["attributes"][0]["key"],
            "service.name"
        );
        let spans: Value =
            serde_json::from_str(&traces_body(&resource, ["{\"name\":\"s\"}"].into_iter()))
                .unwrap();
        let scoped = &spans["resourceSpans"][0]["scopeSpans"][0];
        assert_eq!(scoped["scope"]["name"], TRACES_SCOPE);
        assert_eq!(scoped["spans"], json!([{"name": "s"}]));
    }
}
