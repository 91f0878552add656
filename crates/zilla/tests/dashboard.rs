//! The Grafana dashboard in `docs/grafana/zilla-rs.json` queries only metrics this
//! distribution exports, under the names the `prometheus` exporter gives them (histograms with
//! their `_bucket`, `_sum` and `_count` series), so a renamed or misspelt metric fails here
//! rather than as an empty panel.

#![cfg(feature = "exporter-prometheus")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use zilla::engine::metrics::MetricKind;

/// PromQL functions, keywords and the label names the dashboard uses.
const NOT_METRICS: &[&str] = &[
    "sum",
    "max",
    "by",
    "rate",
    "histogram_quantile",
    "label_values",
    "le",
    "namespace",
    "binding",
    "instance",
    "__rate_interval",
];

/// Every series name the exporter can write.
fn exported() -> BTreeSet<String> {
    let registry = zilla::registry();
    let mut names = BTreeSet::new();
    for group in registry.metric_groups() {
        for descriptor in group.metrics {
            let name = zilla_exporter_prometheus::exposition::name(descriptor);
            if descriptor.kind == MetricKind::Histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name);
        }
    }
    names
}

/// The identifiers of a PromQL expression outside label matchers' quoted values and the
/// dashboard's `$variables`.
fn identifiers(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut variable = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            current.push(c);
            continue;
        }
        if !current.is_empty()
            && !variable
            && !current.starts_with(|first: char| first.is_ascii_digit())
        {
            found.push(std::mem::take(&mut current));
        }
        current.clear();
        variable = c == '$';
    }
    found
}

fn exprs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs(item, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| exprs(item, found)),
        _ => {}
    }
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana/zilla-rs.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let exported = exported();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "{queries:?}");
    let mut used = BTreeSet::new();
    for query in &queries {
        for identifier in identifiers(query) {
            if NOT_METRICS.contains(&identifier.as_str()) {
                continue;
            }
            assert!(
                exported.contains(&identifier),
                "`{identifier}` in `{query}` is not a metric the exporter writes"
            );
            used.insert(identifier);
        }
    }
    // Each family of metrics the issue asks to watch has a panel.
    for needed in [
        "http_duration_milliseconds_bucket",
        "http_active_requests",
        "stream_active_received",
        "grpc_duration_milliseconds_bucket",
        "kafka_cache_size_bytes",
    ] {
        assert!(used.contains(needed), "no panel reads {needed}");
    }
}

#[test]
fn identifiers_skip_label_values_and_variables() {
    assert_eq!(
        identifiers(
            r#"sum by (le) (rate(http_duration_milliseconds_bucket{namespace=~"$namespace"}[$__rate_interval]))"#
        ),
        vec![
            "sum",
            "by",
            "le",
            "rate",
            "http_duration_milliseconds_bucket",
            "namespace"
        ]
    );
    assert_eq!(
        identifiers("histogram_quantile(0.99, x)"),
        vec!["histogram_quantile", "x"]
    );
}
