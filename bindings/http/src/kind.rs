//! The `http` stream kind: one request/response exchange, with streaming bodies both ways and
//! trailers, the same for HTTP/1.1 and HTTP/2.
//!
//! An exchange is a plain [`http::Request`] / [`http::Response`] whose bodies are boxed
//! [`http_body::Body`]s, so bodies stream through every hop without copies and with
//! backpressure (a body yields its next frame only when polled). What the transport knew
//! travels in the request's extensions: the [`StreamInfo`] of the connection (addresses,
//! TLS SNI/ALPN, identity), as an `Arc<StreamInfo>` its requests share (read it with
//! [`stream_info`]), and, once a guard has authorized it, the [`Authorization`].
//!
//! Pseudo-headers (`:method`, `:scheme`, `:authority`, `:path`, `:status`) are not stored as
//! headers: they are the request's method and URI and the response's status, read through
//! [`pseudo_header`] so routes can match them by name in both versions.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use zilla_engine::guard::Authorization;
use zilla_engine::stream::{BoxFuture, StreamError, StreamInfo, StreamKind};

/// Why a body could not be read.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A request with a streaming body.
pub type Request = http::Request<Body>;

/// A response with a streaming body.
pub type Response = http::Response<Body>;

/// Handler of the `http` stream kind: answers one exchange.
///
/// An `Err` is mapped to a status by the caller (see [`status_of`]): a handler that has a
/// precise answer (a 400 with a body, a 304) returns it as a response instead.
pub trait HttpHandler: Send + Sync + 'static {
    /// Answers `request`.
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>>;

    /// Whether the handler reads a request's [`Authorization`] extension; a server puts none
    /// in a request for a handler that does not.
    fn reads_authorization(&self) -> bool {
        true
    }

    /// Whether the handler may answer with the origin's fields forwarded as they came
    /// ([`crate::h1::ForwardedFields`]) when the server says it writes them: only the http
    /// client does, which reads the request's marker itself. Every other handler gets a request
    /// without the marker, so none passes it on.
    fn takes_forwarded_fields(&self) -> bool {
        false
    }
}

/// The `http` stream kind.
#[derive(Debug)]
pub struct Http;

impl StreamKind for Http {
    const NAME: &'static str = "http";
    type Handler = dyn HttpHandler;
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose errors convert into [`BodyError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A response with `status` and an empty body.
pub fn status_response(status: http::StatusCode) -> Response {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}

/// The status that answers a failed exchange, the one mapping every HTTP-facing binding uses:
/// no route 404, not authorized 403, a protocol error 400, and 503 when what is behind the
/// gateway cannot answer (an origin or broker unreachable or failing, an I/O error toward it,
/// a binding stopping). Zilla answers an unreachable origin with 503 too; 502 would claim the
/// origin sent an invalid response, which these classes do not say.
pub fn status_of(error: &StreamError) -> http::StatusCode {
    use http::StatusCode;
    match error {
        StreamError::NoRoute => StatusCode::NOT_FOUND,
        StreamError::Unauthorized => StatusCode::FORBIDDEN,
        StreamError::Protocol(_) => StatusCode::BAD_REQUEST,
        StreamError::Upstream(_) | StreamError::Io(_) | StreamError::Stopped => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// The connection's [`StreamInfo`], if the request came through a transport.
pub fn stream_info<B>(request: &http::Request<B>) -> Option<&StreamInfo> {
    request
        .extensions()
        .get::<std::sync::Arc<StreamInfo>>()
        .map(std::sync::Arc::as_ref)
}

/// The guard sessions the request holds.
pub fn authorization<B>(request: &http::Request<B>) -> Option<&Authorization> {
    request.extensions().get::<Authorization>()
}

/// A header by name, including the pseudo-headers `:method`, `:scheme`, `:authority` and
/// `:path` (which includes the query). Repeated headers are joined with `, `.
pub fn pseudo_header<'a, B>(request: &'a http::Request<B>, name: &str) -> Option<Cow<'a, str>> {
    match name {
        ":method" => Some(Cow::Borrowed(request.method().as_str())),
        ":scheme" => Some(match request.uri().scheme_str() {
            Some(scheme) => Cow::Borrowed(scheme),
            None => {
                let secure = stream_info(request).is_some_and(|info| info.secure);
                Cow::Borrowed(if secure { "https" } else { "http" })
            }
        }),
        ":authority" => match request.uri().authority() {
            Some(authority) => Some(Cow::Borrowed(authority.as_str())),
            None => request
                .headers()
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(Cow::Borrowed),
        },
        ":path" => Some(Cow::Borrowed(
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )),
        _ => {
            let mut values = request
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok());
            let first = values.next()?;
            match values.next() {
                None => Some(Cow::Borrowed(first)),
                Some(second) => {
                    let mut joined = format!("{first}, {second}");
                    for value in values {
                        joined.push_str(", ");
                        joined.push_str(value);
                    }
                    Some(Cow::Owned(joined))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_headers_in_both_forms() {
        let mut request = http::Request::builder()
            .method("POST")
            .uri("/items?x=1")
            .header("host", "example.com:8080")
            .header("accept", "a")
            .header("accept", "b")
            .body(())
            .unwrap();
        assert_eq!(pseudo_header(&request, ":method").as_deref(), Some("POST"));
        assert_eq!(
            pseudo_header(&request, ":path").as_deref(),
            Some("/items?x=1")
        );
        assert_eq!(
            pseudo_header(&request, ":authority").as_deref(),
            Some("example.com:8080")
        );
        assert_eq!(pseudo_header(&request, ":scheme").as_deref(), Some("http"));
        assert_eq!(pseudo_header(&request, "accept").as_deref(), Some("a, b"));
        request
            .extensions_mut()
            .insert(std::sync::Arc::new(StreamInfo {
                secure: true,
                ..StreamInfo::default()
            }));
        assert_eq!(pseudo_header(&request, ":scheme").as_deref(), Some("https"));
        let h2 = http::Request::builder()
            .uri("https://example.org/x")
            .body(())
            .unwrap();
        assert_eq!(
            pseudo_header(&h2, ":authority").as_deref(),
            Some("example.org")
        );
        assert_eq!(pseudo_header(&h2, ":scheme").as_deref(), Some("https"));
    }
}
