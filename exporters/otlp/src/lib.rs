//! The `otlp` exporter: pushes the gateway's metrics and events to an OpenTelemetry collector
//! over OTLP/HTTP with JSON bodies, as Zilla's `otlp` exporter does.
//!
//! ```yaml
//! name: example
//! telemetry:
//!   metrics:
//!     - http.request.size
//!     - http.duration
//!   exporters:
//!     otlp_exporter:
//!       type: otlp
//!       options:
//!         interval: 30                    # seconds, the default
//!         signals: [metrics, logs]        # the default; `traces` adds spans
//!         endpoint:
//!           protocol: http                # the only one, the default
//!           location: http://localhost:4318
//!           overrides:                    # paths (or absolute URLs) per signal
//!             metrics: /v1/metrics        # the default
//!             logs: /v1/logs              # the default
//!             traces: /v1/traces          # the default
//!         credentials:
//!           headers:
//!             authorization: Bearer ${{env.OTLP_TOKEN}}
//! ```
//!
//! Options:
//! - `interval`: seconds between pushes (default 30; fractions allowed).
//! - `signals`: `metrics`, `logs` and `traces` (default `metrics` and `logs`, as in Zilla,
//!   which has no traces).
//! - `endpoint`: `protocol` (`http`), `location` (an `http://` or `https://` URL),
//!   `overrides.metrics`, `overrides.logs` and `overrides.traces` resolved against `location`. An `https://`
//!   collector is verified against the system's trust store (`SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` name another), as Zilla's exporter uses the JVM's default trust.
//! - `credentials.headers.authorization`: sent as the `authorization` header of every push.
//! - `tls` (trust and client keys from a vault): refused at load (not supported); so is an
//!   exporter `vault`.
//!
//! The namespace's `telemetry.attributes` are the resource attributes of every push, metrics
//! and logs alike, as in Zilla:
//!
//! ```yaml
//! telemetry:
//!   attributes:
//!     service.namespace: example
//! ```
//!
//! What is sent is described in [`encode`]: every recorded series (the same values
//! `zilla metrics` and the `prometheus` exporter show) each interval, every event as a log
//! record and, with `traces`, every request span the bindings record (an `http` server records
//! one per request, in the trace its `traceparent` names, and passes the request on as a child
//! of it: see `zilla_engine::traces`). Bindings record spans only while an exporter sends
//! traces. Spans wait in a retry buffer of their own, like events. Delivery is at least once: metrics are cumulative, so a push that fails is simply
//! superseded; events wait in a bounded retry buffer ([`buffer`]: 4 MiB, 16 384 records, the
//! oldest dropped first with a warning) until the receiver answers 2xx. A receiver that is
//! down or answers 503 is retried after 1 s, doubling up to `interval`; bindings never wait
//! for it (raising an event appends to the buffer under a short lock). When the exporter stops
//! (reload or shutdown) it pushes once more, for at most 2 s.
//!
//! The bodies are written with `serde_json` rather than `opentelemetry-otlp`: that crate
//! owns its own metric pipeline (instruments, readers, aggregation) and cannot send the
//! engine's existing cumulative series and power-of-two buckets under Zilla's names.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod buffer;
pub mod encode;
mod push;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Uri};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use zilla_engine::components::{ComponentContext, ComponentFactory, Exporter};
use zilla_engine::events::Event;
use zilla_engine::metrics::Metrics;
use zilla_engine::traces::Span;
use zilla_engine::{BuildError, Registry};

use crate::buffer::RecordBuffer;
use crate::push::Target;

/// Registers the `otlp` exporter type.
pub fn register(registry: &mut Registry) {
    registry.exporter(OtlpExporterFactory);
}

/// `telemetry.exporters.<name>.options` of an `otlp` exporter.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "otlp exporter options")]
pub struct OtlpOptions {
    /// Seconds between pushes (default 30).
    pub interval: Option<f64>,
    /// What to push (default metrics and logs).
    pub signals: Option<Vec<Signal>>,
    /// Where to push.
    pub endpoint: OtlpEndpoint,
    /// Trust and client keys from a vault toward an `https` endpoint. Refused at load: not
    /// supported (an `https` endpoint is verified against the system's trust store).
    #[schemars(extend("x-unsupported" = "`tls` (trust and keys from a vault) is not supported by this otlp exporter; an `https://` endpoint is verified against the system's trust store"))]
    pub tls: Option<serde_json::Value>,
    /// Credentials sent with every push.
    pub credentials: Option<OtlpCredentials>,
}

/// One signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// The metrics registry.
    Metrics,
    /// Events, as log records.
    Logs,
    /// Request spans.
    Traces,
}

/// `endpoint`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpEndpoint {
    /// `http` (the default and only protocol).
    pub protocol: Option<Protocol>,
    /// The collector's base URL.
    #[schemars(regex(pattern = r"^https?://"))]
    pub location: String,
    /// Per-signal paths or URLs.
    pub overrides: Option<OtlpOverrides>,
}

/// The endpoint protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/HTTP.
    Http,
}

/// `endpoint.overrides`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpOverrides {
    /// Default `/v1/metrics`.
    pub metrics: Option<String>,
    /// Default `/v1/logs`.
    pub logs: Option<String>,
    /// Default `/v1/traces`.
    pub traces: Option<String>,
}

/// `credentials`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpCredentials {
    /// Request headers.
    pub headers: Option<OtlpHeaders>,
}

/// `credentials.headers`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpHeaders {
    /// The `authorization` header value.
    pub authorization: Option<String>,
}

/// Builds `otlp` exporters.
#[derive(Debug, Default, Clone, Copy)]
pub struct OtlpExporterFactory;

impl ComponentFactory<dyn Exporter> for OtlpExporterFactory {
    fn type_name(&self) -> &'static str {
        "otlp"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(OtlpOptions)))
    }

    fn options_required(&self) -> bool {
        true
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Exporter>, BuildError> {
        let options: OtlpOptions = context.options()?;
        let mut target = target(&options)?;
        target.resource = context.telemetry_attributes.to_vec();
        Ok(Arc::new(OtlpExporter {
            logs: target
                .logs
                .is_some()
                .then(|| Arc::new(RecordBuffer::default())),
            spans: target
                .traces
                .is_some()
                .then(|| Arc::new(RecordBuffer::default())),
            target,
            metrics: context.metrics.clone(),
            started: Mutex::new(false),
        }))
    }
}

/// Where and how often to push, checked.
fn target(options: &OtlpOptions) -> Result<Target, BuildError> {
    let seconds = options.interval.unwrap_or(30.0);
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(BuildError::at(
            "options.interval",
            "the interval is a number of seconds above 0 and at most 86400",
        ));
    }
    let location = &options.endpoint.location;
    if !(location.starts_with("http://") || location.starts_with("https://")) {
        return Err(BuildError::at(
            "options.endpoint.location",
            "an `http://` or `https://` URL",
        ));
    }
    let location: Uri = location.parse().map_err(|error| {
        BuildError::at("options.endpoint.location", format!("not a URL: {error}"))
    })?;
    let signals = options
        .signals
        .clone()
        .unwrap_or_else(|| vec![Signal::Metrics, Signal::Logs]);
    let overrides = options.endpoint.overrides.clone().unwrap_or_default();
    let endpoint = |signal: Signal, path: Option<&String>, default: &str, key: &str| {
        if !signals.contains(&signal) {
            return Ok(None);
        }
        resolve(&location, path.map_or(default, String::as_str))
            .map(Some)
            .map_err(|message| BuildError::at(format!("options.endpoint.overrides.{key}"), message))
    };
    let metrics = endpoint(
        Signal::Metrics,
        overrides.metrics.as_ref(),
        "/v1/metrics",
        "metrics",
    )?;
    let logs = endpoint(Signal::Logs, overrides.logs.as_ref(), "/v1/logs", "logs")?;
    let traces = endpoint(
        Signal::Traces,
        overrides.traces.as_ref(),
        "/v1/traces",
        "traces",
    )?;
    let authorization = options
        .credentials
        .as_ref()
        .and_then(|credentials| credentials.headers.as_ref())
        .and_then(|headers| headers.authorization.as_deref())
        .map(|value| {
            HeaderValue::from_str(value).map_err(|_| {
                BuildError::at(
                    "options.credentials.headers.authorization",
                    "not a valid header value",
                )
            })
        })
        .transpose()?;
    Ok(Target {
        metrics,
        logs,
        traces,
        authorization,
        interval: Duration::from_secs_f64(seconds),
        resource: Vec::new(),
    })
}

/// `reference` resolved against `base` as a URI reference: an absolute `http://` or
/// `https://` URL as is, an absolute path on `base`'s scheme and authority, a relative path
/// next to `base`'s path.
fn resolve(base: &Uri, reference: &str) -> Result<Uri, String> {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference
            .parse()
            .map_err(|error| format!("not a URL: {error}"));
    }
    let authority = base
        .authority()
        .ok_or_else(|| "the location has no host".to_owned())?;
    let path = if reference.starts_with('/') {
        reference.to_owned()
    } else {
        let base_path = base.path();
        let directory = &base_path[..base_path.rfind('/').map_or(0, |at| at + 1)];
        let directory = if directory.is_empty() { "/" } else { directory };
        format!("{directory}{reference}")
    };
    let scheme = base.scheme_str().unwrap_or("http");
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|error| format!("not a URL: {error}"))
}

/// A built `otlp` exporter.
#[derive(Debug)]
pub struct OtlpExporter {
    target: Target,
    metrics: Metrics,
    /// Encoded events waiting to be pushed; `None` when `signals` lacks `logs`.
    logs: Option<Arc<RecordBuffer>>,
    /// Encoded spans waiting to be pushed; `None` when `signals` lacks `traces`.
    spans: Option<Arc<RecordBuffer>>,
    started: Mutex<bool>,
}

impl Exporter for OtlpExporter {
    fn event(&self, event: &Event) {
        if let Some(logs) = &self.logs {
            logs.push(encode::log_record(event));
        }
    }

    fn events(&self) -> bool {
        self.logs.is_some()
    }

    fn traces(&self) -> bool {
        self.spans.is_some()
    }

    fn span(&self, span: &Span) {
        if let Some(spans) = &self.spans {
            spans.push(encode::span_record(span));
        }
    }

    fn start(&self, stopped: CancellationToken) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("otlp: no runtime to push from");
            return;
        };
        *started = true;
        let logs = self.logs.clone().unwrap_or_default();
        let spans = self.spans.clone().unwrap_or_default();
        runtime.spawn(push::run(
            self.target.clone(),
            self.metrics.clone(),
            logs,
            spans,
            stopped,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: serde_json::Value) -> OtlpOptions {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn endpoints_resolve_against_the_location_with_zillas_defaults() {
        let defaults = target(&options(serde_json::json!({
            "endpoint": {"location": "http://collector:4318"}
        })))
        .unwrap();
        assert_eq!(defaults.interval, Duration::from_secs(30));
        assert_eq!(
            defaults.metrics.unwrap().to_string(),
            "http://collector:4318/v1/metrics"
        );
        assert_eq!(
            defaults.logs.unwrap().to_string(),
            "http://collector:4318/v1/logs"
        );
        let configured = target(&options(serde_json::json!({
            "interval": 0.5,
            "signals": ["logs"],
            "endpoint": {"location": "http://collector:4318/otlp/", "overrides": {"logs": "logs"}},
            "credentials": {"headers": {"authorization": "Bearer abc"}}
        })))
        .unwrap();
        assert!(configured.metrics.is_none());
        assert_eq!(
            configured.logs.unwrap().to_string(),
            "http://collector:4318/otlp/logs"
        );
        assert_eq!(configured.interval, Duration::from_millis(500));
        assert_eq!(configured.authorization.unwrap(), "Bearer abc");
    }

    #[test]
    fn https_locations_keep_their_scheme_for_relative_overrides() {
        let configured = target(&options(serde_json::json!({
            "endpoint": {"location": "https://collector:4318/base/", "overrides": {"logs": "otlp/logs"}}
        })))
        .unwrap();
        assert_eq!(
            configured.metrics.unwrap().to_string(),
            "https://collector:4318/v1/metrics"
        );
        assert_eq!(
            configured.logs.unwrap().to_string(),
            "https://collector:4318/base/otlp/logs"
        );
    }

    #[test]
    fn what_cannot_work_is_refused_at_its_path() {
        let error = |json| target(&options(json)).unwrap_err().path;
        assert_eq!(
            error(serde_json::json!({"endpoint": {"location": "ftp://collector:4318"}})),
            "options.endpoint.location"
        );
        assert_eq!(
            error(serde_json::json!({"interval": 0, "endpoint": {"location": "http://c"}})),
            "options.interval"
        );
        assert_eq!(
            error(
                serde_json::json!({"endpoint": {"location": "http://c", "overrides": {"metrics": "http://exa mple/v1/metrics"}}})
            ),
            "options.endpoint.overrides.metrics"
        );
        assert!(
            serde_json::from_value::<OtlpOptions>(
                serde_json::json!({"endpoint": {"location": "http://c", "protocol": "grpc"}})
            )
            .is_err()
        );
    }
}
