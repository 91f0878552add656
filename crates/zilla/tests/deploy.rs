//! The Helm chart's defaults are a working deployment: its zilla.yaml loads, and Kubernetes
//! waits longer than the drain before killing a pod. (The templates themselves need `helm
//! template` to render; this checks what can be checked without it.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use zilla::engine::config::node::Node;
use zilla::engine::config::{Resolver, Source};

struct NoEnv;

impl Resolver for NoEnv {
    fn resolve(&self, resolver: &str, name: &str) -> Result<String, String> {
        Err(format!("the chart's values use no {resolver}.{name}"))
    }
}

fn chart_values() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/zilla/values.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let source = Source::new(path.display().to_string(), text, &NoEnv).unwrap();
    let documents = Node::parse_documents(&source).unwrap();
    assert_eq!(documents.len(), 1);
    documents[0].to_json()
}

#[test]
fn chart_default_config_loads() {
    let values = chart_values();
    let config = values["config"]
        .as_str()
        .expect("values.config is the zilla.yaml text");
    let loaded = zilla::engine::engine::load_config(
        &zilla::registry(),
        Path::new("values.yaml#config"),
        config,
    );
    let config =
        loaded.unwrap_or_else(|errors| panic!("the chart's config does not load:\n{errors}"));
    assert_eq!(config.bindings().count(), 3);

    // Every port the config listens on is one the chart exposes, and the metrics port is the
    // prometheus exporter's.
    let ports: Vec<u64> = values["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| port["port"].as_u64().unwrap())
        .collect();
    assert!(ports.contains(&7114), "{ports:?}");
    assert!(values["config"].as_str().unwrap().contains(&format!(
        "port: {}",
        values["metrics"]["port"].as_u64().unwrap()
    )));
}

#[test]
fn chart_grace_period_outlasts_the_drain() {
    let values = chart_values();
    let grace = values["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = values["drainTimeoutSeconds"].as_u64().unwrap();
    assert!(grace > drain, "grace {grace} s must exceed drain {drain} s");
}
