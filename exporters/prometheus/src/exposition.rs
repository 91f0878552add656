//! The exposition text, in the Prometheus text format 0.0.4 (Zilla's output) or OpenMetrics
//! 1.0.0 (what Prometheus asks for first).
//!
//! Names and values follow Zilla's Prometheus exporter:
//! - the metric name with dots turned into underscores, then `_bytes` for byte units or
//!   `_milliseconds` for nanosecond units (values converted), then `_total` for counters;
//!   a name already ending in its unit (`kafka.produce.bytes`) does not take it twice, as
//!   OpenTelemetry's Prometheus exporter does (`kafka_produce_bytes_total`);
//! - labels `namespace`, `binding`, then the series' attributes sorted by name;
//! - histograms as 63 cumulative `_bucket{le=…}` lines with upper limits 2, 4, … 2^62 and
//!   `+Inf`, then `_sum` and `_count`; nanosecond histograms are re-bucketed into
//!   milliseconds exactly as Zilla does (each nanosecond bucket moves to the millisecond
//!   bucket whose limit its limit divided by a million falls in).
//!
//! Where Zilla's output would be rejected or lossy, this differs on purpose:
//! - one `# HELP`/`# TYPE` pair per metric family, its series below it (Zilla repeats the pair
//!   before every series, which strict parsers such as `promtool` refuse);
//! - label values escaped (`\\`, `\"`, `\n`) as the format requires;
//! - `_sum` is the exact sum recorded (Zilla estimates it from bucket limits).

use std::collections::BTreeMap;
use std::fmt::Write;

use zilla_engine::metrics::{
    HISTOGRAM_BUCKETS, Metric, MetricDescriptor, MetricKind, Series, Unit,
};

/// The text formats an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics only when it is weighted above plain
    /// text, so browsers, curl and anything unspecific get Zilla's format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut openmetrics = 0.0f32;
        let mut text = 0.0f32;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let mut quality = 1.0f32;
            let mut version = None;
            for parameter in parts {
                if let Some((key, value)) = parameter.split_once('=') {
                    match key.trim().to_ascii_lowercase().as_str() {
                        "q" => quality = value.trim().parse().unwrap_or(0.0),
                        "version" => version = Some(value.trim().to_owned()),
                        _ => {}
                    }
                }
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if version
                        .as_deref()
                        .is_none_or(|v| v == "1.0.0" || v == "0.0.1") =>
                {
                    openmetrics = openmetrics.max(quality);
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(quality),
                _ => {}
            }
        }
        if openmetrics > text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Zilla's Prometheus name of a metric, e.g. `http_request_size_bytes`,
/// `http_duration_milliseconds`, `stream_opens_received_total`.
pub fn name(descriptor: &MetricDescriptor) -> String {
    let mut name = family(descriptor);
    if descriptor.kind == MetricKind::Counter {
        name.push_str("_total");
    }
    name
}

/// The name without the counter suffix: the family name in OpenMetrics.
fn family(descriptor: &MetricDescriptor) -> String {
    let mut name = descriptor.name.replace('.', "_");
    if let Some(unit) = unit(descriptor)
        && !name.ends_with(&format!("_{unit}"))
    {
        name.push('_');
        name.push_str(unit);
    }
    name
}

fn unit(descriptor: &MetricDescriptor) -> Option<&'static str> {
    match descriptor.unit {
        Unit::Bytes => Some("bytes"),
        Unit::Nanoseconds => Some("milliseconds"),
        Unit::Count => None,
    }
}

/// Nanoseconds in a millisecond: durations are exported in milliseconds, as Zilla does.
pub const NANOS_PER_MILLI: u64 = 1_000_000;

/// Zilla keeps 63 buckets with upper limits 2^1 … 2^63, the last written as `+Inf`.
pub const EXPOSED_BUCKETS: usize = 63;

/// Per-bucket counts as exposed: ours folded into 63, re-bucketed into milliseconds for
/// nanosecond metrics.
pub fn exposed_buckets(buckets: &[u64; HISTOGRAM_BUCKETS], unit: Unit) -> [u64; EXPOSED_BUCKETS] {
    let mut exposed = [0u64; EXPOSED_BUCKETS];
    for (index, count) in buckets.iter().enumerate() {
        let index = index.min(EXPOSED_BUCKETS - 1);
        let target = if unit == Unit::Nanoseconds {
            // 2^20 ns is about 1 ms: buckets up to 2^20 ns go to the first millisecond bucket.
            index.saturating_sub(19)
        } else {
            index
        };
        exposed[target] += count;
    }
    exposed
}

fn labels(series: &Series) -> String {
    let mut labels = format!(
        "namespace=\"{}\",binding=\"{}\"",
        escape(&series.namespace),
        escape(&series.binding)
    );
    for (label, value) in &series.attributes {
        let _ = write!(labels, ",{label}=\"{}\"", escape(value));
    }
    labels
}

fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The exposition of `series` in `format`.
pub fn render(series: &[Series], format: Format) -> String {
    let mut families: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for one in series {
        families.entry(one.descriptor.name).or_default().push(one);
    }
    let mut out = String::new();
    for members in families.values() {
        let Some(first) = members.first() else {
            continue;
        };
        let descriptor = first.descriptor;
        let sample = name(descriptor);
        let kind = descriptor.kind.as_str();
        match format {
            Format::Text => {
                let _ = writeln!(out, "# HELP {sample} {}", descriptor.description);
                let _ = writeln!(out, "# TYPE {sample} {kind}");
            }
            Format::OpenMetrics => {
                let family = family(descriptor);
                let _ = writeln!(out, "# TYPE {family} {kind}");
                if let Some(unit) = unit(descriptor) {
                    let _ = writeln!(out, "# UNIT {family} {unit}");
                }
                let _ = writeln!(out, "# HELP {family} {}", descriptor.description);
            }
        }
        for one in members {
            write_series(&mut out, &sample, one, format);
        }
        if format == Format::Text {
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn write_series(out: &mut String, sample: &str, series: &Series, format: Format) {
    let labels = labels(series);
    let unit = series.descriptor.unit;
    match &*series.value {
        Metric::Counter(counter) => {
            let value = counter.get();
            let _ = writeln!(out, "{sample}{{{labels}}} {}", scalar(value as i128, unit));
        }
        Metric::Gauge(gauge) => {
            let value = gauge.get();
            let _ = writeln!(out, "{sample}{{{labels}}} {}", scalar(value as i128, unit));
        }
        Metric::Histogram(histogram) => {
            let values = histogram.read();
            let buckets = exposed_buckets(&values.buckets, unit);
            let mut cumulative = 0u64;
            for (index, count) in buckets.iter().enumerate() {
                cumulative += count;
                let limit = if index == EXPOSED_BUCKETS - 1 {
                    "+Inf".to_owned()
                } else {
                    let limit = 1u64 << (index + 1);
                    match format {
                        Format::Text => limit.to_string(),
                        Format::OpenMetrics => format!("{limit}.0"),
                    }
                };
                let _ = writeln!(
                    out,
                    "{sample}_bucket{{le=\"{limit}\",{labels}}} {cumulative}"
                );
            }
            // The count is the buckets' total, so `+Inf` and `_count` always agree even when
            // a value lands between reading the buckets and reading the count.
            let sum = if unit == Unit::Nanoseconds {
                values.sum / NANOS_PER_MILLI
            } else {
                values.sum
            };
            let _ = writeln!(out, "{sample}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{sample}_count{{{labels}}} {cumulative}");
        }
    }
}

/// A counter or gauge value; nanoseconds shown in milliseconds with a fraction, as Zilla.
fn scalar(value: i128, unit: Unit) -> String {
    if unit == Unit::Nanoseconds {
        format!("{:?}", value as f64 / NANOS_PER_MILLI as f64)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use zilla_engine::QualifiedName;
    use zilla_engine::metrics::{MetricGroup, Metrics};

    use super::*;

    static TEST_HTTP: MetricGroup = MetricGroup {
        name: "http",
        binding_types: &["http"],
        metrics: &[
            MetricDescriptor {
                name: "http.request.size",
                kind: MetricKind::Histogram,
                unit: Unit::Bytes,
                description: "HTTP request content length",
            },
            MetricDescriptor {
                name: "http.duration",
                kind: MetricKind::Histogram,
                unit: Unit::Nanoseconds,
                description: "Duration of HTTP requests",
            },
        ],
        attribute: None,
        scope: None,
    };

    fn recorded() -> Metrics {
        let metrics = Metrics::new([&TEST_HTTP]);
        metrics.set_namespace_metrics(BTreeMap::from([(
            "example".to_owned(),
            vec![
                "stream.opens.received".to_owned(),
                "stream.active.received".to_owned(),
                "stream.data.received".to_owned(),
                "http.request.size".to_owned(),
                "http.duration".to_owned(),
            ],
        )]));
        let tcp = metrics.binding(
            &QualifiedName::new("example", "north_tcp_server"),
            &["stream.*".to_owned()],
        );
        tcp.counter("stream.opens.received").unwrap().add(3);
        tcp.gauge("stream.active.received").unwrap().add(1);
        tcp.counter("stream.data.received").unwrap().add(42);
        let http = metrics.binding(
            &QualifiedName::new("example", "north_http_server"),
            &["http.*".to_owned()],
        );
        let sizes = http.family("http.request.size").unwrap();
        let get = vec![("method".to_owned(), "GET".to_owned())];
        sizes.histogram(get.clone()).unwrap().record(13);
        sizes.histogram(get.clone()).unwrap().record(3);
        let odd = vec![("path".to_owned(), "/a\"b\\c\nd".to_owned())];
        sizes.histogram(odd).unwrap().record(1);
        let durations = http.family("http.duration").unwrap();
        // 1.5 ms and 3 ms.
        durations.histogram(get.clone()).unwrap().record(1_500_000);
        durations.histogram(get).unwrap().record(3_000_000);
        metrics
    }

    fn lines_starting(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn names_follow_zilla() {
        let descriptor = |name, kind, unit| MetricDescriptor {
            name,
            kind,
            unit,
            description: "",
        };
        assert_eq!(
            name(&descriptor(
                "stream.opens.sent",
                MetricKind::Counter,
                Unit::Count
            )),
            "stream_opens_sent_total"
        );
        assert_eq!(
            name(&descriptor(
                "stream.data.sent",
                MetricKind::Counter,
                Unit::Bytes
            )),
            "stream_data_sent_bytes_total"
        );
        assert_eq!(
            name(&descriptor(
                "kafka.produce.bytes",
                MetricKind::Counter,
                Unit::Bytes
            )),
            "kafka_produce_bytes_total"
        );
        assert_eq!(
            name(&descriptor(
                "http.duration",
                MetricKind::Histogram,
                Unit::Nanoseconds
            )),
            "http_duration_milliseconds"
        );
        assert_eq!(
            name(&descriptor(
                "http.active.requests",
                MetricKind::Gauge,
                Unit::Count
            )),
            "http_active_requests"
        );
    }

    #[test]
    fn text_format_matches_zilla_lines() {
        let text = render(&recorded().snapshot(), Format::Text);
        assert!(text.contains(
            "# HELP stream_opens_received_total Number of opened received streams\n\
             # TYPE stream_opens_received_total counter\n\
             stream_opens_received_total{namespace=\"example\",binding=\"north_tcp_server\"} 3\n"
        ));
        assert!(text.contains(
            "stream_data_received_bytes_total{namespace=\"example\",binding=\"north_tcp_server\"} 42\n"
        ));
        assert!(text.contains(
            "# TYPE stream_active_received gauge\n\
             stream_active_received{namespace=\"example\",binding=\"north_tcp_server\"} 1\n"
        ));
        let labels = "namespace=\"example\",binding=\"north_http_server\",method=\"GET\"";
        let buckets = lines_starting(
            &text,
            &format!("http_request_size_bytes_bucket{{le=\"2\",{labels}"),
        );
        assert_eq!(buckets.len(), 1);
        assert!(text.contains(&format!(
            "http_request_size_bytes_bucket{{le=\"2\",{labels}}} 0\n\
             http_request_size_bytes_bucket{{le=\"4\",{labels}}} 1\n\
             http_request_size_bytes_bucket{{le=\"8\",{labels}}} 1\n\
             http_request_size_bytes_bucket{{le=\"16\",{labels}}} 2\n"
        )));
        assert!(text.contains(&format!(
            "http_request_size_bytes_bucket{{le=\"4611686018427387904\",{labels}}} 2\n\
             http_request_size_bytes_bucket{{le=\"+Inf\",{labels}}} 2\n\
             http_request_size_bytes_sum{{{labels}}} 16\n\
             http_request_size_bytes_count{{{labels}}} 2\n"
        )));
        // 63 buckets per series.
        let all = lines_starting(&text, "http_request_size_bytes_bucket{");
        assert_eq!(all.len(), 63 * 2);
        // Label values are escaped.
        assert!(text.contains("path=\"/a\\\"b\\\\c\\nd\""), "{text}");
        // One HELP and TYPE per family.
        assert_eq!(
            lines_starting(&text, "# TYPE http_request_size_bytes ").len(),
            1
        );
    }

    #[test]
    fn durations_are_milliseconds_in_zilla_buckets() {
        let text = render(&recorded().snapshot(), Format::Text);
        let labels = "namespace=\"example\",binding=\"north_http_server\",method=\"GET\"";
        // 1.5 ms = 1_500_000 ns lies in ns bucket 20 (2^20..2^21) → ms bucket 1 (le 4);
        // 3 ms in ns bucket 21 → ms bucket 2 (le 8).
        assert!(text.contains(&format!(
            "# TYPE http_duration_milliseconds histogram\n\
             http_duration_milliseconds_bucket{{le=\"2\",{labels}}} 0\n\
             http_duration_milliseconds_bucket{{le=\"4\",{labels}}} 1\n\
             http_duration_milliseconds_bucket{{le=\"8\",{labels}}} 2\n"
        )));
        assert!(text.contains(&format!("http_duration_milliseconds_sum{{{labels}}} 4\n")));
        assert!(text.contains(&format!("http_duration_milliseconds_count{{{labels}}} 2\n")));
    }

    #[test]
    fn openmetrics_has_units_family_names_and_eof() {
        let text = render(&recorded().snapshot(), Format::OpenMetrics);
        assert!(text.contains(
            "# TYPE stream_data_received_bytes counter\n\
             # UNIT stream_data_received_bytes bytes\n\
             # HELP stream_data_received_bytes Bytes of data on received streams\n\
             stream_data_received_bytes_total{namespace=\"example\",binding=\"north_tcp_server\"} 42\n"
        ));
        assert!(text.contains("# UNIT http_duration_milliseconds milliseconds\n"));
        assert!(text.contains("_bucket{le=\"2.0\","));
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("\n\n"), "OpenMetrics has no blank lines");
    }

    #[test]
    fn negotiation_prefers_openmetrics_only_when_weighted_higher() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some("text/html,application/xhtml+xml,*/*;q=0.8")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Format::Text
        );
    }
}
