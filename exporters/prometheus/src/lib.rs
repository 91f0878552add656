//! The `prometheus` exporter: serves the gateway's metrics over HTTP for Prometheus to scrape,
//! in Zilla's exposition.
//!
//! ```yaml
//! name: example
//! telemetry:
//!   metrics:
//!     - http.request.size
//!     - http.duration
//!   exporters:
//!     prometheus_exporter:
//!       type: prometheus
//!       options:
//!         endpoints:
//!           - scheme: http
//!             port: 7190
//!             path: /metrics
//! ```
//!
//! Options (required):
//! - `endpoints` (at least one): `scheme` (`http`, the only one), `port` (listened on on all
//!   IPv4 interfaces), `path` (default `/metrics`).
//!
//! Behaviour:
//! - `GET` or `HEAD` on the path answers every recorded series of every namespace; other
//!   methods get 405, other paths 404.
//! - The format is Zilla's Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), or
//!   OpenMetrics 1.0.0 when the `Accept` header weighs `application/openmetrics-text` above
//!   plain text, as Prometheus does. Names, labels and histogram buckets are as in
//!   [`exposition`].
//! - A port is listened on once per process, however many exporters name it, so a reload
//!   keeps serving without a gap; it closes when the last exporter naming it is gone. A port
//!   that cannot be listened on fails the load at `options.endpoints[i].port`.
//! - At most 64 scrapes are served at once per port; a client has 10 seconds to send its
//!   request head.
//!
//! The text is written here rather than with `prometheus-client`: that crate writes
//! OpenMetrics only, with its own naming and bucket layout, and cannot produce Zilla's names,
//! label order and 63 power-of-two buckets byte for byte.

pub mod exposition;
mod server;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use zilla_engine::components::{ComponentContext, ComponentFactory, Exporter};
use zilla_engine::events::Event;
use zilla_engine::{BuildError, Registry};

/// Registers the `prometheus` exporter type.
pub fn register(registry: &mut Registry) {
    registry.exporter(PrometheusExporterFactory);
}

/// `telemetry.exporters.<name>.options` of a `prometheus` exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "prometheus exporter options")]
pub struct PrometheusOptions {
    /// Where the metrics are served.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<PrometheusEndpoint>,
}

/// One HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusEndpoint {
    /// `http`.
    pub scheme: Scheme,
    /// The TCP port.
    pub port: u16,
    /// The path served.
    #[serde(default = "default_path")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
}

fn default_path() -> String {
    "/metrics".to_owned()
}

/// The endpoint scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
}

/// Builds `prometheus` exporters.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrometheusExporterFactory;

impl ComponentFactory<dyn Exporter> for PrometheusExporterFactory {
    fn type_name(&self) -> &'static str {
        "prometheus"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(
            PrometheusOptions
        )))
    }

    fn options_required(&self) -> bool {
        true
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
        let options: PrometheusOptions = context.options()?;
        let mut registrations = Vec::new();
        for (index, endpoint) in options.endpoints.iter().enumerate() {
            let registration =
                server::register(endpoint.port, &endpoint.path, context.metrics.clone()).map_err(
                    |error| {
                        BuildError::at(
                            format!("options.endpoints.{index}.port"),
                            format!("cannot listen on port {}: {error}", endpoint.port),
                        )
                    },
                )?;
            registrations.push(registration);
        }
        Ok(Arc::new(PrometheusExporter {
            _registrations: registrations,
        }))
    }
}

/// Serves metrics while it lives.
#[derive(Debug)]
pub struct PrometheusExporter {
    _registrations: Vec<server::Registration>,
}

impl Exporter for PrometheusExporter {
    fn event(&self, _event: &Event) {
        // Prometheus scrapes metrics only; events go to the other exporters.
    }

    fn events(&self) -> bool {
        false
    }
}
