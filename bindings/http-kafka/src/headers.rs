//! What the binding reads from request headers and writes into response headers.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use zilla_binding_http::kind::pseudo_header;
use zilla_binding_kafka::kind::Message;

/// The request's headers as Zilla's http server hands them to http-kafka, in its order:
/// pseudo-headers first, `host` becoming `:authority` (HTTP/1.1 puts it where `host` was and
/// adds the default port), `connection` left out.
pub(crate) fn request_headers<B>(request: &http::Request<B>) -> Vec<(Bytes, Bytes)> {
    let pseudo = |name: &'static str| {
        pseudo_header(request, name).map(|value| {
            (
                Bytes::from_static(name.as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
    };
    let mut headers = Vec::with_capacity(request.headers().len() + 4);
    let http1 = request.version() < Version::HTTP_2;
    if http1 {
        headers.extend(
            [pseudo(":scheme"), pseudo(":method"), pseudo(":path")]
                .into_iter()
                .flatten(),
        );
    } else {
        headers.extend(
            [
                pseudo(":method"),
                pseudo(":scheme"),
                pseudo(":authority"),
                pseudo(":path"),
            ]
            .into_iter()
            .flatten(),
        );
    }
    let mut authority = !http1;
    for (name, value) in request.headers() {
        match name.as_str() {
            "connection" | "http2-settings" => {}
            "host" if http1 => {
                if !authority {
                    authority = true;
                    headers.push((Bytes::from_static(b":authority"), with_port(request, value)));
                }
            }
            _ => headers.push((
                Bytes::copy_from_slice(name.as_str().as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
            )),
        }
    }
    headers
}

/// An HTTP/1.1 `host` as Zilla writes `:authority`: with the scheme's port when it has none.
fn with_port<B>(request: &http::Request<B>, host: &HeaderValue) -> Bytes {
    if host.as_bytes().contains(&b':') {
        return Bytes::copy_from_slice(host.as_bytes());
    }
    let secure = pseudo_header(request, ":scheme").is_some_and(|scheme| scheme == "https");
    let port: &[u8] = if secure { b":443" } else { b":80" };
    Bytes::from([host.as_bytes(), port].concat())
}

/// `prefer` preferences the binding honours. Zilla separates them with `;`, RFC 7240 with
/// `,`: both are accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Preferences {
    /// `respond-async`.
    pub(crate) respond_async: bool,
    /// `wait=<seconds>`.
    pub(crate) wait: Option<Duration>,
}

impl Preferences {
    /// The preferences in `headers`; a `wait` longer than `maximum_wait` (however large the
    /// number written) is cut to it.
    pub(crate) fn of(headers: &HeaderMap, maximum_wait: Duration) -> Self {
        let mut preferences = Self::default();
        let items = headers
            .get_all("prefer")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split([',', ';']))
            .map(str::trim);
        for item in items {
            if item.eq_ignore_ascii_case("respond-async") {
                preferences.respond_async = true;
            } else if let Some((name, value)) = item.split_once('=')
                && name.trim().eq_ignore_ascii_case("wait")
                && let Some(wait) = zilla_engine::limits::clamped_seconds(
                    value.trim().trim_matches('"'),
                    maximum_wait,
                )
            {
                preferences.wait = Some(wait);
            }
        }
        preferences
    }
}

/// The first value of header `name`, as text.
pub(crate) fn first<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Sets `name` when `value` is a valid header value.
pub(crate) fn insert(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    match HeaderValue::from_bytes(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => tracing::debug!(%name, "not a valid header value; left out"),
    }
}

/// The status and headers of a reply record: `:status` (default 200), then every header but
/// the correlation id, other pseudo-headers and `content-length` (the body sets it). Headers
/// HTTP cannot carry are left out.
pub(crate) fn reply_head(message: &Message, correlation_header: &[u8]) -> (StatusCode, HeaderMap) {
    let status = message
        .header(b":status")
        .and_then(|status| std::str::from_utf8(status).ok())
        .and_then(|status| status.trim().parse::<u16>().ok())
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    for header in &message.headers {
        let name = header.name.as_ref();
        if name == correlation_header
            || name.starts_with(b":")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            continue;
        }
        let value = header.value.as_deref().unwrap_or_default();
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(name), Ok(value)) => {
                // A record's headers are unbounded; a header map is not.
                if headers.try_append(name, value).is_err() {
                    tracing::debug!("reply headers past a header map's size left out");
                    break;
                }
            }
            _ => tracing::debug!(
                header = %String::from_utf8_lossy(name),
                "reply header is not an HTTP header; left out"
            ),
        }
    }
    (status, headers)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use zilla_binding_kafka::kind::Header;

    fn text(headers: &[(Bytes, Bytes)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn http1_headers_in_zilla_order() {
        let request = http::Request::builder()
            .method("PUT")
            .uri("/items/1?x=y")
            .header("content-type", "application/json")
            .header("host", "example.com")
            .header("connection", "keep-alive")
            .header("idempotency-key", "k")
            .body(())
            .unwrap();
        let pairs = text(&request_headers(&request));
        let expected: Vec<(String, String)> = [
            (":scheme", "http"),
            (":method", "PUT"),
            (":path", "/items/1?x=y"),
            ("content-type", "application/json"),
            (":authority", "example.com:80"),
            ("idempotency-key", "k"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn http2_headers_in_zilla_order() {
        let request = http::Request::builder()
            .method("POST")
            .version(Version::HTTP_2)
            .uri("https://example.com:9090/items")
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let pairs = text(&request_headers(&request));
        assert_eq!(
            pairs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            [":method", ":scheme", ":authority", ":path", "content-type"]
        );
        assert_eq!(pairs[2].1, "example.com:9090");
    }

    #[test]
    fn prefer_in_both_separator_styles() {
        let of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("prefer", HeaderValue::from_str(value).unwrap());
            Preferences::of(&headers, Duration::from_secs(120))
        };
        assert_eq!(
            of("respond-async, wait=5"),
            Preferences {
                respond_async: true,
                wait: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(of("wait=86").wait, Some(Duration::from_secs(86)));
        // A client cannot make the gateway wait longer than the maximum, nor overflow a timer.
        assert_eq!(of("wait=86400").wait, Some(Duration::from_secs(120)));
        assert_eq!(of("wait=99999999999").wait, Some(Duration::from_secs(120)));
        assert_eq!(
            of("wait=99999999999999999999999999").wait,
            Some(Duration::from_secs(120))
        );
        assert_eq!(of("wait=-1").wait, None);
        assert!(of("respond-async;wait=1").respond_async);
        assert_eq!(of("return=minimal"), Preferences::default());
    }

    /// A reply record with `headers` and nothing else.
    fn reply(headers: Vec<Header>) -> Message {
        Message {
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers,
        }
    }

    #[test]
    fn reply_status_and_headers() {
        let header = |name: &str, value: &str| Header {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
        };
        let message = reply(vec![
            header(":status", "201"),
            header("location", "/items/1"),
            header("zilla:correlation-id", "k-1"),
            header("content-length", "99"),
            header("bad name", "x"),
        ]);
        let (status, headers) = reply_head(&message, b"zilla:correlation-id");
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["location"], "/items/1");
        let (status, _) = reply_head(
            &Message {
                headers: Vec::new(),
                ..message
            },
            b"zilla:correlation-id",
        );
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn a_reply_with_more_headers_than_a_map_holds_is_answered_with_those_that_fit() {
        let headers = (0..40_000)
            .map(|index| Header {
                name: Bytes::from(format!("x-{index}")),
                value: Some(Bytes::from_static(b"v")),
            })
            .collect();
        let (status, headers) = reply_head(&reply(headers), b"zilla:correlation-id");
        assert_eq!(status, StatusCode::OK);
        assert!(headers.contains_key("x-0"));
        assert!(headers.keys_len() > 20_000, "{}", headers.keys_len());
        assert!(!headers.contains_key("x-39999"));
    }
}
