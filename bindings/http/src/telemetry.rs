//! The `http.*` metrics this binding records, declared here rather than in the engine, and the
//! `telemetry.attributes` expressions they resolve.
//!
//! Attributes, as in Zilla: `${http.request.method}`, `${http.request.path}` (path and query),
//! `${http.request.<header>}`, `${http.response.status}` and `${http.response.<header>}`. A
//! request attribute labels `http.request.size` and `http.active.requests`; a response
//! attribute labels `http.response.size`; `http.duration` carries both. An attribute whose
//! header is absent is left off the series.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use zilla_engine::metrics::{MetricDescriptor, MetricGroup, MetricKind, Unit};

/// The `http.*` metrics.
pub static HTTP_METRICS: MetricGroup = MetricGroup {
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
            name: "http.response.size",
            kind: MetricKind::Histogram,
            unit: Unit::Bytes,
            description: "HTTP response content length",
        },
        MetricDescriptor {
            name: "http.active.requests",
            kind: MetricKind::Gauge,
            unit: Unit::Count,
            description: "Number of active HTTP requests",
        },
        MetricDescriptor {
            name: "http.duration",
            kind: MetricKind::Histogram,
            unit: Unit::Nanoseconds,
            description: "Duration of HTTP requests",
        },
    ],
    attribute: Some(check_attribute),
    scope: None,
};

/// Where one attribute's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeSource {
    /// `${http.request.method}`.
    RequestMethod,
    /// `${http.request.path}`: the path with its query, as HTTP/2's `:path`.
    RequestPath,
    /// `${http.request.<header>}`.
    RequestHeader(HeaderName),
    /// `${http.response.status}`.
    ResponseStatus,
    /// `${http.response.<header>}`.
    ResponseHeader(HeaderName),
}

impl AttributeSource {
    /// Parses `${http.request.<field>}` or `${http.response.<field>}`.
    pub fn parse(value: &str) -> Result<Self, String> {
        const EXPECTED: &str = "an http attribute is `${http.request.method}`, `${http.request.path}`, `${http.request.<header>}`, `${http.response.status}` or `${http.response.<header>}`";
        let inner = value
            .trim()
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| EXPECTED.to_owned())?;
        let header = |field: &str| {
            HeaderName::from_bytes(field.as_bytes())
                .map_err(|_| format!("`{field}` is not a header name; {EXPECTED}"))
        };
        if let Some(field) = inner.strip_prefix("http.request.") {
            match field {
                "method" => Ok(Self::RequestMethod),
                "path" => Ok(Self::RequestPath),
                _ => header(field).map(Self::RequestHeader),
            }
        } else if let Some(field) = inner.strip_prefix("http.response.") {
            match field {
                "status" => Ok(Self::ResponseStatus),
                _ => header(field).map(Self::ResponseHeader),
            }
        } else {
            Err(EXPECTED.to_owned())
        }
    }

    /// Whether the value is known when the request arrives.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Self::RequestMethod | Self::RequestPath | Self::RequestHeader(_)
        )
    }
}

fn check_attribute(value: &str) -> Result<(), String> {
    AttributeSource::parse(value).map(|_| ())
}

/// The configured attributes, split by when their values are known.
#[derive(Debug, Clone, Default)]
pub struct AttributeSources {
    request: Vec<(String, AttributeSource)>,
    response: Vec<(String, AttributeSource)>,
}

impl AttributeSources {
    /// Parses the binding's `telemetry.attributes`; the config check has refused any value
    /// that does not parse, so one that does not is skipped here.
    pub fn new(attributes: &[(String, String)]) -> Self {
        let mut sources = Self::default();
        for (label, value) in attributes {
            if let Ok(source) = AttributeSource::parse(value) {
                let side = if source.is_request() {
                    &mut sources.request
                } else {
                    &mut sources.response
                };
                side.push((label.clone(), source));
            }
        }
        sources
    }

    /// Whether an attribute takes its value from the request header `name`.
    pub fn reads_request_header(&self, name: &HeaderName) -> bool {
        self.request.iter().any(
            |(_, source)| matches!(source, AttributeSource::RequestHeader(read) if read == name),
        )
    }

    /// Whether an attribute takes its value from a response header.
    pub fn reads_response_headers(&self) -> bool {
        self.response
            .iter()
            .any(|(_, source)| matches!(source, AttributeSource::ResponseHeader(_)))
    }

    /// Whether any attribute is configured.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// The request attributes' values, labelled.
    pub fn of_request(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Vec<(String, String)> {
        labelled(&self.request, &self.request_values(method, uri, headers))
    }

    /// The response attributes' values, labelled.
    pub fn of_response(&self, status: StatusCode, headers: &HeaderMap) -> Vec<(String, String)> {
        labelled(&self.response, &self.response_values(status, headers))
    }

    /// The request attributes' values in configured order; `None` for an absent header.
    pub fn request_values(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Vec<Option<String>> {
        self.request
            .iter()
            .map(|(_, source)| request_value(source, method, uri, headers).map(Cow::into_owned))
            .collect()
    }

    /// Whether `values` ([`Self::request_values`]) are this request's; compares without
    /// copying, as it runs on every request.
    pub fn request_matches(
        &self,
        values: &[Option<String>],
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> bool {
        values.len() == self.request.len()
            && self.request.iter().zip(values).all(|((_, source), value)| {
                request_value(source, method, uri, headers).as_deref() == value.as_deref()
            })
    }

    /// The response attributes' values in configured order; `None` for an absent header.
    pub fn response_values(&self, status: StatusCode, headers: &HeaderMap) -> Vec<Option<String>> {
        self.response
            .iter()
            .map(|(_, source)| response_value(source, &status, headers).map(Cow::into_owned))
            .collect()
    }

    /// Whether `values` ([`Self::response_values`]) are this response's.
    pub fn response_matches(
        &self,
        values: &[Option<String>],
        status: StatusCode,
        headers: &HeaderMap,
    ) -> bool {
        values.len() == self.response.len()
            && self
                .response
                .iter()
                .zip(values)
                .all(|((_, source), value)| {
                    response_value(source, &status, headers).as_deref() == value.as_deref()
                })
    }

    /// The labels of request `values`, absent ones left off.
    pub fn request_labels(&self, values: &[Option<String>]) -> Vec<(String, String)> {
        labelled(&self.request, values)
    }

    /// The labels of response `values`, absent ones left off.
    pub fn response_labels(&self, values: &[Option<String>]) -> Vec<(String, String)> {
        labelled(&self.response, values)
    }

    /// How many response attributes are configured.
    pub fn response_count(&self) -> usize {
        self.response.len()
    }
}

fn labelled(
    sources: &[(String, AttributeSource)],
    values: &[Option<String>],
) -> Vec<(String, String)> {
    sources
        .iter()
        .zip(values)
        .filter_map(|((label, _), value)| Some((label.clone(), value.clone()?)))
        .collect()
}

fn request_value<'r>(
    source: &AttributeSource,
    method: &'r Method,
    uri: &'r Uri,
    headers: &'r HeaderMap,
) -> Option<Cow<'r, str>> {
    match source {
        AttributeSource::RequestMethod => Some(Cow::Borrowed(method.as_str())),
        AttributeSource::RequestPath => Some(Cow::Borrowed(
            uri.path_and_query()
                .map_or_else(|| uri.path(), |path| path.as_str()),
        )),
        AttributeSource::RequestHeader(name) => header_value(headers, name),
        _ => None,
    }
}

fn response_value<'r>(
    source: &AttributeSource,
    status: &'r StatusCode,
    headers: &'r HeaderMap,
) -> Option<Cow<'r, str>> {
    match source {
        AttributeSource::ResponseStatus => Some(Cow::Borrowed(status.as_str())),
        AttributeSource::ResponseHeader(name) => header_value(headers, name),
        _ => None,
    }
}

fn header_value<'r>(headers: &'r HeaderMap, name: &HeaderName) -> Option<Cow<'r, str>> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zilla_attribute_expressions() {
        assert_eq!(
            AttributeSource::parse("${http.request.method}"),
            Ok(AttributeSource::RequestMethod)
        );
        assert_eq!(
            AttributeSource::parse("${http.request.path}"),
            Ok(AttributeSource::RequestPath)
        );
        assert_eq!(
            AttributeSource::parse("${http.response.status}"),
            Ok(AttributeSource::ResponseStatus)
        );
        assert_eq!(
            AttributeSource::parse("${http.request.user-agent}"),
            Ok(AttributeSource::RequestHeader(HeaderName::from_static(
                "user-agent"
            )))
        );
        assert!(AttributeSource::parse("GET").is_err());
        assert!(AttributeSource::parse("${mqtt.topic}").is_err());
        assert!(AttributeSource::parse("${http.request.bad header}").is_err());
    }

    #[test]
    fn the_request_headers_attributes_read_are_known() {
        let sources = AttributeSources::new(&[
            ("host".into(), "${http.request.host}".into()),
            ("status".into(), "${http.response.status}".into()),
        ]);
        assert!(sources.reads_request_header(&http::header::HOST));
        assert!(!sources.reads_request_header(&http::header::USER_AGENT));
        assert!(!AttributeSources::default().reads_request_header(&http::header::HOST));
    }

    #[test]
    fn resolves_values_and_leaves_absent_headers_off() {
        let sources = AttributeSources::new(&[
            ("method".to_owned(), "${http.request.method}".to_owned()),
            ("path".to_owned(), "${http.request.path}".to_owned()),
            ("agent".to_owned(), "${http.request.user-agent}".to_owned()),
            ("status".to_owned(), "${http.response.status}".to_owned()),
        ]);
        let uri: Uri = "/items?id=1".parse().unwrap();
        let request = sources.of_request(&Method::POST, &uri, &HeaderMap::new());
        assert_eq!(
            request,
            vec![
                ("method".to_owned(), "POST".to_owned()),
                ("path".to_owned(), "/items?id=1".to_owned()),
            ]
        );
        let response = sources.of_response(StatusCode::NOT_FOUND, &HeaderMap::new());
        assert_eq!(response, vec![("status".to_owned(), "404".to_owned())]);
    }
}
