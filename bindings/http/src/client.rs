//! The http `client`: sends each exchange to its origin through the exit's byte streams,
//! keeping a pool of open connections per origin and worker.

/// HTTP/2 exchanges sent from the request's own task: part of the client.
mod h2origin;
/// HTTP/1.1 exchanges driven in the request's own task: part of the client.
mod origin;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use zilla_engine::binding::{Binding, BuildContext, BuildError};
use zilla_engine::guard::Authorization;
use zilla_engine::stream::{AsyncIo, BoxFuture, Bytes, BytesHandler, StreamError, StreamInfo};
use zilla_engine::workers;

use crate::body::{HttpMetrics, SeriesCache, read_bounded, replay};
use crate::config::{HttpClientOptions, HttpVersion};
use crate::kind::{self, Http, HttpHandler, Request, Response, pseudo_header, status_response};
use crate::limits::Limits;
use crate::requests::{RequestType, RequestTypes, ResponseType, validate_whole};
use crate::route::{Miss, Overrides, Router};
use h2origin::{H2Origins, H2Settings};
use origin::{DirectOrigins, Outcome};

type OriginClient = Client<Connector, kind::Body>;

/// The connections of one exit. HTTP/1.1 exchanges run in the request's task on connections
/// of its own worker ([`DirectOrigins`]), and so do the exchanges of an HTTP/2-only client
/// ([`H2Origins`]); upgrades, and HTTP/2 found by negotiation, go through a pooled client, one
/// per worker, so neither a pool's lock nor a connection's task is shared between threads.
#[derive(Clone)]
struct OriginClients {
    pooled: Arc<[OriginClient]>,
    direct: Option<Arc<DirectOrigins>>,
    h2: Option<Arc<H2Origins>>,
}

impl OriginClients {
    /// The pooled client of the worker running this thread.
    fn current(&self) -> &OriginClient {
        &self.pooled[workers::slot() % self.pooled.len()]
    }

    /// Sends `request` (with an absolute URI) to its origin.
    async fn send(&self, request: Request, upgrade: bool) -> Result<Response, StreamError> {
        let mut request = match &self.direct {
            Some(direct) if !upgrade => match direct.send(request).await? {
                Outcome::Response(response) => return Ok(response),
                Outcome::Elsewhere(request) => request,
            },
            _ => request,
        };
        // The authority travels in the URI: HTTP/2 writes it as `:authority` (an HTTP/2
        // origin may refuse it and `host` at once) and hyper's HTTP/1.1 client as `host`.
        // The HTTP/1.1 leg above writes `host` from the URI and skips the field itself.
        request.headers_mut().remove(header::HOST);
        if let Some(h2) = &self.h2
            && !upgrade
        {
            return h2.send(request).await;
        }
        let response = self
            .current()
            .request(request)
            .await
            .map_err(|error| StreamError::Upstream(describe(&error)))?;
        Ok(response.map(kind::boxed))
    }
}

/// A built http client.
pub struct HttpClient {
    router: Router<OriginClients>,
    /// `options.requests`: the responses' models.
    requests: RequestTypes,
    /// The most of a response body read to validate it.
    max_validated_body_size: u64,
    user_agent: Option<http::HeaderValue>,
    metrics: Arc<HttpMetrics>,
    /// The series its requests recorded into recently; shared by all of them, since
    /// requests are not tied to one origin connection here.
    series: SeriesCache,
}

impl HttpClient {
    /// Builds the client and publishes its `http` handler.
    pub fn build(context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: HttpClientOptions = context.options()?;
        if options
            .authorization
            .as_ref()
            .is_some_and(|a| !a.is_empty())
        {
            return Err(BuildError::at(
                "options.authorization",
                "injecting guard credentials into client requests is not supported by this build",
            ));
        }
        let requests = RequestTypes::build(
            options.requests.as_deref().unwrap_or_default(),
            &|reference, path| context.model(reference, path),
        )?;
        // Zilla's client applies only `responses`; request models belong on a server.
        if let Some(index) = requests.entries().position(RequestType::checks_requests) {
            return Err(BuildError::at(
                format!("options.requests[{index}]"),
                "a client validates responses only: put request `headers`, `params` and `content` models on an http server",
            ));
        }
        let versions = options.versions.clone().unwrap_or_default();
        let h1 = versions.is_empty() || versions.contains(&HttpVersion::Http11);
        let h2 = versions.is_empty() || versions.contains(&HttpVersion::H2);
        let alpn: Vec<String> = match (h1, h2) {
            (true, true) => vec!["h2".into(), "http/1.1".into()],
            (false, true) => vec!["h2".into()],
            _ => vec!["http/1.1".into()],
        };
        let limits = Limits::from_properties(context.properties());
        let overrides = Overrides::compile(options.overrides.as_ref())
            .map_err(|message| BuildError::at("options.overrides", message))?;
        // Routes to the same exit share one pool.
        let clients: RefCell<HashMap<String, OriginClients>> = RefCell::new(HashMap::new());
        let router = Router::build(
            context.config(),
            |exit| {
                if let Some(client) = clients.borrow().get(exit) {
                    return Ok(client.clone());
                }
                let handler = context.exit::<Bytes>(exit)?;
                let connector = Connector {
                    exit: handler,
                    alpn: Arc::new(alpn.clone()),
                };
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(limits.client_idle_timeout)
                    .http2_only(h2 && !h1)
                    .http2_max_header_list_size(limits.max_header_list_size)
                    .http2_adaptive_window(true);
                let client = OriginClients {
                    pooled: (0..workers::count())
                        .map(|_| builder.build(connector.clone()))
                        .collect(),
                    direct: h1.then(|| {
                        Arc::new(DirectOrigins::new(
                            connector.clone(),
                            limits.client_idle_timeout,
                            limits.client_max_idle_connections,
                        ))
                    }),
                    h2: (h2 && !h1).then(|| {
                        Arc::new(H2Origins::new(
                            connector.clone(),
                            H2Settings {
                                max_header_list_size: limits.max_header_list_size,
                                idle_timeout: limits.client_idle_timeout,
                            },
                        ))
                    }),
                };
                clients.borrow_mut().insert(exit.to_owned(), client.clone());
                Ok(client)
            },
            &overrides,
        )?;
        if router.is_empty() {
            return Err(BuildError::at(
                "",
                "an http client needs an `exit` or `routes` with exits",
            ));
        }
        let client = Arc::new(HttpClient {
            router,
            requests,
            max_validated_body_size: limits.max_validated_body_size,
            user_agent: limits.user_agent_header.clone(),
            metrics: Arc::new(HttpMetrics::new(
                &context.metrics(),
                &context.config().telemetry_attributes,
            )),
            series: SeriesCache::default(),
        });
        context.publish::<Http>(client.clone());
        Ok(client)
    }

    async fn send(&self, mut request: Request) -> Result<Response, StreamError> {
        let authorization = request.extensions_mut().remove::<Authorization>();
        let routed = self
            .router
            .resolve(&request, authorization.as_ref())
            .map_err(|miss| match miss {
                Miss::NoRoute => StreamError::NoRoute,
                Miss::Guarded => StreamError::Unauthorized,
            })?;
        if !routed.overrides.is_empty() {
            let context = self
                .router
                .context(&routed.captures, authorization.as_ref());
            routed
                .overrides
                .apply_to_origin(&mut request, &context)
                .map_err(StreamError::Protocol)?;
        }
        let upgrade = is_upgrade(request.headers());
        let request_type = self.requests.resolve(&request);
        // An upgrade coming from a server binding: this binding joins the two upgraded
        // connections once the origin switches protocols.
        let inbound = if upgrade {
            request.extensions_mut().remove::<OnUpgrade>()
        } else {
            None
        };
        let mut request = outgoing(request, upgrade)?;
        if let Some(user_agent) = &self.user_agent {
            request
                .headers_mut()
                .entry(USER_AGENT)
                .or_insert_with(|| user_agent.clone());
        }
        // The `host` field the request came with is dropped by the leg that sends it (see
        // `OriginClients::send`); a telemetry attribute reading `host` must not see it, so it
        // goes here when one does.
        if self.metrics.reads_request_header(&header::HOST) {
            request.headers_mut().remove(header::HOST);
        }
        if request_type.is_some() || self.metrics.reads_response_headers() {
            // The response's fields are read here: they come back in its header map.
            request
                .extensions_mut()
                .remove::<crate::h1::TakesForwardedFields>();
        }
        let record = self.metrics.start(
            &self.series,
            request.method(),
            request.uri(),
            request.headers(),
        );
        if let Some(record) = &record {
            request = request.map(|body| record.request_body(body));
        }
        let mut response = routed.exit.send(request, upgrade).await?;
        let switched = upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switched && let Some(inbound) = inbound {
            let outbound = hyper::upgrade::on(&mut response);
            tokio::spawn(join_upgraded(inbound, outbound));
        }
        let (mut parts, mut body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, switched);
        if let Some(expected) = request_type
            .and_then(|request_type| request_type.response(parts.status, &parts.headers))
        {
            match self.validate_response(expected, &parts.headers, body).await {
                Ok(validated) => body = validated,
                Err(reason) => {
                    tracing::warn!(status = %parts.status, %reason, "origin response rejected by its model");
                    (parts, body) = status_response(StatusCode::BAD_GATEWAY).into_parts();
                }
            }
        }
        let body = match record {
            Some(mut record) => {
                record.respond(parts.status, &parts.headers);
                record.response_body(body)
            }
            None => body,
        };
        Ok(Response::from_parts(parts, body))
    }
}

impl HttpClient {
    /// Checks a response's headers and body (read whole, bounded) against `expected`; the
    /// body to pass on, or why the response is rejected.
    async fn validate_response(
        &self,
        expected: &ResponseType,
        headers: &HeaderMap,
        body: kind::Body,
    ) -> Result<kind::Body, String> {
        expected.check_head(headers)?;
        let Some(content) = expected.content() else {
            return Ok(body);
        };
        let (data, trailers) = read_bounded(body, self.max_validated_body_size)
            .await
            .map_err(|error| format!("body not validated: {error}"))?;
        if !data.is_empty() {
            validate_whole(content, &data)
                .await
                .map_err(|reason| format!("content: {reason}"))?;
        }
        Ok(replay(data, trailers))
    }
}

impl Binding for HttpClient {}

impl HttpHandler for HttpClient {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        // Made in its allocation rather than moved into it: the future is sized for a whole
        // exchange (kilobytes), of which a new one holds only its arguments.
        let exchange = Box::write(Box::new_uninit(), self.send(request));
        Box::into_pin(exchange)
    }

    fn reads_authorization(&self) -> bool {
        // Its routes and overrides are all it reads the authorization for.
        self.router.reads_authorization()
    }

    fn takes_forwarded_fields(&self) -> bool {
        true
    }
}

/// Copies between the two sides of an upgraded connection until both end.
async fn join_upgraded(inbound: OnUpgrade, outbound: OnUpgrade) {
    match tokio::join!(inbound, outbound) {
        (Ok(inbound), Ok(outbound)) => {
            let mut inbound = TokioIo::new(inbound);
            let mut outbound = TokioIo::new(outbound);
            if let Err(error) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                tracing::debug!(%error, "upgraded connection ended");
            }
        }
        (Err(error), _) | (_, Err(error)) => {
            tracing::debug!(%error, "upgrade not completed");
        }
    }
}

/// Whether the request asks to switch protocols (`connection: upgrade` with `upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request as sent to the origin: an absolute URI (the pool is keyed by its scheme and
/// authority), HTTP/1.1 as the version asked for (HTTP/2 is used when the connection speaks
/// it), and no hop-by-hop headers but those of an `upgrade`.
fn outgoing(request: Request, upgrade: bool) -> Result<Request, StreamError> {
    let scheme = match pseudo_header(&request, ":scheme").as_deref() {
        Some("https") => Scheme::HTTPS,
        _ => Scheme::HTTP,
    };
    // An authority already in the URI (an override's, parsed at load, or HTTP/2's) is taken
    // as it is; only a `host` header is parsed.
    let authority: Authority = match request.uri().authority() {
        Some(authority) => authority.clone(),
        None => pseudo_header(&request, ":authority")
            .ok_or_else(|| StreamError::Protocol("the request names no :authority".into()))?
            .parse()
            .map_err(|_| StreamError::Protocol("the request's :authority is not valid".into()))?,
    };
    let (mut parts, body) = request.into_parts();
    // Already absolute with the same scheme (an override's authority): kept as it is.
    if parts.uri.scheme() != Some(&scheme)
        || parts.uri.authority() != Some(&authority)
        || parts.uri.path_and_query().is_none()
    {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|error| StreamError::Protocol(error.to_string()))?;
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // The authority travels in the URI; the `host` field the request came with is dropped
    // by whichever leg sends it (see `OriginClients::send`).
    Ok(Request::from_parts(parts, body))
}

/// Removes headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// keeping `te: trailers`, which HTTP/2 allows and gRPC needs, and, for an upgrade,
/// `connection: upgrade` and `upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Every message passes here, and most carry no hop-by-hop header or only `connection:
    // keep-alive`: one pass over the names finds which are present, and only those are
    // looked up again.
    let present = headers
        .keys()
        .fold(HopByHop::NONE, |present, name| present | HopByHop::of(name));
    if !upgrade && present == HopByHop::NONE {
        return;
    }
    // `te` named by `connection` goes, even `te: trailers`.
    let mut te_named = false;
    if present.has(HopByHop::CONNECTION) {
        // Headers the `connection` header names, other than the ones removed anyway; kept
        // in a vector only when one is present (`connection: close` names none).
        let mut named: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
        {
            let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
                continue;
            };
            match HopByHop::of(&name) {
                HopByHop::NONE if headers.contains_key(&name) => named.push(name),
                HopByHop::TE => te_named = true,
                _ => {}
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (bit, name) in [
        (HopByHop::TRANSFER_ENCODING, header::TRANSFER_ENCODING),
        (HopByHop::PROXY_AUTHENTICATE, header::PROXY_AUTHENTICATE),
        (HopByHop::PROXY_AUTHORIZATION, header::PROXY_AUTHORIZATION),
        (HopByHop::KEEP_ALIVE, KEEP_ALIVE),
        (HopByHop::PROXY_CONNECTION, PROXY_CONNECTION),
    ] {
        if present.has(bit) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        if present.has(HopByHop::CONNECTION) {
            headers.remove(header::CONNECTION);
        }
        if present.has(HopByHop::UPGRADE) {
            headers.remove(header::UPGRADE);
        }
    }
    if present.has(HopByHop::TE)
        && (te_named
            || !headers
                .get_all(header::TE)
                .iter()
                .all(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers")))
    {
        headers.remove(header::TE);
    }
}

/// `keep-alive`, not among `http`'s standard names.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `proxy-connection`, not among `http`'s standard names.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Which of the headers [`strip_hop_by_hop`] may remove a message carries, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HopByHop(u8);

impl HopByHop {
    const NONE: Self = Self(0);
    const CONNECTION: Self = Self(1);
    const TRANSFER_ENCODING: Self = Self(1 << 1);
    const PROXY_AUTHENTICATE: Self = Self(1 << 2);
    const PROXY_AUTHORIZATION: Self = Self(1 << 3);
    const UPGRADE: Self = Self(1 << 4);
    const TE: Self = Self(1 << 5);
    const KEEP_ALIVE: Self = Self(1 << 6);
    const PROXY_CONNECTION: Self = Self(1 << 7);

    fn of(name: &HeaderName) -> Self {
        if *name == header::CONNECTION {
            Self::CONNECTION
        } else if *name == header::TRANSFER_ENCODING {
            Self::TRANSFER_ENCODING
        } else if *name == header::PROXY_AUTHENTICATE {
            Self::PROXY_AUTHENTICATE
        } else if *name == header::PROXY_AUTHORIZATION {
            Self::PROXY_AUTHORIZATION
        } else if *name == header::UPGRADE {
            Self::UPGRADE
        } else if *name == header::TE {
            Self::TE
        } else if *name == KEEP_ALIVE {
            Self::KEEP_ALIVE
        } else if *name == PROXY_CONNECTION {
            Self::PROXY_CONNECTION
        } else {
            Self::NONE
        }
    }

    fn has(self, bit: Self) -> bool {
        self.0 & bit.0 != 0
    }
}

impl std::ops::BitOr for HopByHop {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// An error with its causes, which hyper keeps in its source chain.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Opens origin connections through the exit.
#[derive(Clone)]
pub struct Connector {
    exit: Arc<dyn BytesHandler>,
    alpn: Arc<Vec<String>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = OriginIo;
    type Error = StreamError;
    type Future = BoxFuture<'static, Result<OriginIo, StreamError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| StreamError::Protocol(format!("`{uri}` names no host")))?;
            connector
                .connect(uri.scheme() == Some(&Scheme::HTTPS), authority)
                .await
        })
    }
}

impl Connector {
    /// Opens a connection to `authority` (port 443 or 80 by `https` when it names none).
    pub(crate) async fn connect(
        &self,
        https: bool,
        authority: &Authority,
    ) -> Result<OriginIo, StreamError> {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let info = StreamInfo {
            authority: Some(host.to_owned()),
            port: Some(port),
            alpn: self.alpn.as_ref().clone(),
            ..StreamInfo::default()
        };
        let stream = self.exit.connect(info).await?;
        // Only a TLS handshake negotiates; a plain transport just hands our offer back.
        let h2 = stream.info.secure && stream.info.alpn.as_slice() == ["h2"];
        Ok(OriginIo {
            io: TokioIo::new(stream.io),
            h2,
        })
    }
}

/// A connection to an origin.
pub struct OriginIo {
    io: TokioIo<Box<dyn AsyncIo>>,
    h2: bool,
}

impl OriginIo {
    /// The connection's byte stream, for a client that is not hyper's.
    pub(crate) fn into_inner(self) -> Box<dyn AsyncIo> {
        self.io.into_inner()
    }

    /// Whether the connection negotiated HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        self.h2
    }
}

impl Connection for OriginIo {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for OriginIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for OriginIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_requests_are_absolute_and_clean() {
        let request = http::Request::builder()
            .uri("/items?x=1")
            .version(Version::HTTP_10)
            .header("host", "origin.test:8080")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "1")
            .header("keep-alive", "timeout=5")
            .header("transfer-encoding", "chunked")
            .header("te", "trailers")
            .header("x-kept", "1")
            .body(kind::empty())
            .unwrap();
        let sent = outgoing(request, false).unwrap();
        assert_eq!(sent.uri().to_string(), "http://origin.test:8080/items?x=1");
        assert_eq!(sent.version(), Version::HTTP_11);
        let mut names: Vec<&str> = sent.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // `host` is left for the leg that sends the request to drop.
        assert_eq!(names, vec!["host", "te", "x-kept"]);
        let h2 = http::Request::builder()
            .uri("https://origin.test/a")
            .version(Version::HTTP_2)
            .header("te", "gzip")
            .body(kind::empty())
            .unwrap();
        let sent = outgoing(h2, false).unwrap();
        assert_eq!(sent.uri().to_string(), "https://origin.test/a");
        assert!(sent.headers().is_empty());
        let nowhere = http::Request::builder()
            .uri("/")
            .body(kind::empty())
            .unwrap();
        assert!(outgoing(nowhere, false).is_err());
        let upgrade = http::Request::builder()
            .uri("/chat")
            .header("host", "origin.test")
            .header("connection", "Upgrade, keep-alive")
            .header("upgrade", "websocket")
            .body(kind::empty())
            .unwrap();
        assert!(is_upgrade(upgrade.headers()));
        let sent = outgoing(upgrade, true).unwrap();
        assert_eq!(sent.headers()["connection"], "upgrade");
        assert_eq!(sent.headers()["upgrade"], "websocket");
    }

    /// RFC 9110 §7.6.1 as plainly as it reads, for [`strip_hop_by_hop`] to agree with: every
    /// header `connection` names goes (but `upgrade` in an upgrade), and the fixed ones.
    fn strip_by_the_rule(headers: &mut HeaderMap, upgrade: bool) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !(upgrade && name == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
        for name in [
            header::TRANSFER_ENCODING,
            header::PROXY_AUTHENTICATE,
            header::PROXY_AUTHORIZATION,
            KEEP_ALIVE,
            PROXY_CONNECTION,
        ] {
            headers.remove(name);
        }
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            headers.remove(header::CONNECTION);
            headers.remove(header::UPGRADE);
        }
        let trailers_only = headers
            .get_all(header::TE)
            .iter()
            .all(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if !trailers_only {
            headers.remove(header::TE);
        }
    }

    proptest::proptest! {
        #[test]
        fn hop_by_hop_stripping_follows_the_rule(
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "connection", "transfer-encoding", "proxy-authenticate",
                        "proxy-authorization", "upgrade", "te", "keep-alive",
                        "proxy-connection", "x-private", "close", "host", "x-kept",
                    ]),
                    proptest::sample::select(vec![
                        "keep-alive", "close", "Upgrade, keep-alive", "te", "trailers",
                        "x-private, TE", "gzip", "websocket", "x-kept , close", "1",
                    ]),
                ),
                0..8,
            ),
            upgrade in proptest::bool::ANY,
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in entries {
                headers.append(name, HeaderValue::from_static(value));
            }
            let mut expected = headers.clone();
            strip_by_the_rule(&mut expected, upgrade);
            strip_hop_by_hop(&mut headers, upgrade);
            proptest::prop_assert_eq!(headers, expected);
        }
    }
}
