//! The http `server`: serves each byte stream with HTTP/1.1 or HTTP/2 and hands every
//! exchange to the first route that takes it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes as Chunk;
use http::header::{CONNECTION, EXPECT, HOST, RETRY_AFTER, SERVER};
use http::{HeaderValue, Method, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use zilla_engine::binding::{Binding, BuildContext, BuildError, StartContext};
use zilla_engine::components::Validator;
use zilla_engine::events::Events;
use zilla_engine::guard::{Authorization, ConnectionSessions, Guard};
use zilla_engine::limits::{ConnectionGate, Throttle};
use zilla_engine::signal::OnWake;
use zilla_engine::stream::{BoxFuture, ByteStream, Bytes, BytesHandler, StreamError, StreamInfo};

use crate::body::{
    ExchangeRecord, HttpMetrics, ReadError, SeriesCache, TRACEPARENT, drain, exchange_body,
    limited, prepend, read_bounded, read_timeout, replay,
};
use crate::config::{AccessControlConfig, HttpServerOptions, HttpVersion};
use crate::cors::{AccessControl, Decoration, Verdict};
use crate::credentials::Credentials;
use crate::expiry::{self, ExpiryWatch};
use crate::io::{Sniffed, sniff};
use crate::kind::{self, Http, HttpHandler, Response, pseudo_header, status_of, status_response};
use crate::limits::Limits;
use crate::requests::{RequestTypes, validate_whole};
use crate::route::{Miss, Overrides, Router};
use crate::streams::{StreamExecutor, WithStreams};
use zilla_engine::stream::Rewind;

mod h1;

/// Raised for every request the server routes, as Zilla does.
pub const REQUEST_ACCEPTED: &str = "BINDING_HTTP_REQUEST_ACCEPTED";

/// Raised (at most once a second, with the count) when connections over
/// `zilla.binding.http.maximum.connections` are answered 503.
pub const CONNECTION_REFUSED: &str = "BINDING_HTTP_CONNECTION_REFUSED";

/// The guard of `options.authorization`.
struct GuardHook {
    name: String,
    guard: Arc<dyn Guard>,
    credentials: Credentials,
}

/// Which versions may be spoken.
#[derive(Debug, Clone, Copy)]
struct Versions {
    h1: bool,
    h2: bool,
}

impl Versions {
    fn of(versions: Option<&[HttpVersion]>) -> Self {
        match versions {
            None => Self { h1: true, h2: true },
            Some(versions) => Self {
                h1: versions.contains(&HttpVersion::Http11),
                h2: versions.contains(&HttpVersion::H2),
            },
        }
    }
}

/// Tokens that end connections: a reload retiring the binding cuts them, a shutdown lets
/// them finish their exchanges.
#[derive(Debug, Clone, Default)]
struct Lifecycle {
    retired: CancellationToken,
    shutdown: CancellationToken,
}

struct Shared {
    qname: String,
    router: Router<Arc<dyn HttpHandler>>,
    access: AccessControl,
    guard: Option<GuardHook>,
    versions: Versions,
    requests: RequestTypes,
    limits: Limits,
    metrics: Arc<HttpMetrics>,
    events: Events,
    lifecycle: OnceLock<Lifecycle>,
    connections: Arc<ConnectionGate>,
    refusals: Throttle,
}

/// A built http server.
pub struct HttpServer {
    shared: Arc<Shared>,
}

impl HttpServer {
    /// Builds the server and publishes its `bytes` handler.
    pub fn build(context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: HttpServerOptions = context.options()?;
        let requests = RequestTypes::build(
            options.requests.as_deref().unwrap_or_default(),
            &|reference, path| context.model(reference, path),
        )?;
        let versions = Versions::of(options.versions.as_deref());
        if !versions.h1 && !versions.h2 {
            return Err(BuildError::at(
                "options.versions",
                "no version to serve: list `http/1.1`, `h2` or both",
            ));
        }
        let overrides = Overrides::compile(options.overrides.as_ref())
            .map_err(|message| BuildError::at("options.overrides", message))?;
        let router = Router::build(
            context.config(),
            |exit| context.exit::<Http>(exit),
            &overrides,
        )?;
        if router.is_empty() {
            return Err(BuildError::at(
                "",
                "an http server needs an `exit` or `routes` with exits",
            ));
        }
        let guard = match options.authorization.as_ref().and_then(|a| a.iter().next()) {
            None => None,
            Some((name, authorization)) => {
                let (qualified, guard) = context.presented_guard(name).map_err(|mut error| {
                    error.path = format!("options.authorization.{name}");
                    error
                })?;
                let credentials =
                    Credentials::compile(&authorization.credentials).map_err(|message| {
                        BuildError::at(format!("options.authorization.{name}.credentials"), message)
                    })?;
                Some(GuardHook {
                    name: qualified,
                    guard,
                    credentials,
                })
            }
        };
        if let Some(key) = options
            .access_control
            .as_ref()
            .and_then(AccessControlConfig::cross_origin_key_without_the_policy)
        {
            return Err(BuildError::at(
                format!("options.access-control.{key}"),
                format!(
                    "`{key}` is not supported with the `same-origin` policy (the default): it applies to cross-origin requests; set `policy: cross-origin`"
                ),
            ));
        }
        let limits = Limits::from_properties(context.properties());
        let shared = Arc::new(Shared {
            qname: context.name().to_string(),
            router,
            access: options
                .access_control
                .as_ref()
                .map(AccessControl::compile)
                .unwrap_or_default(),
            guard,
            versions,
            requests,
            connections: ConnectionGate::new(limits.maximum_connections),
            refusals: Throttle::new(Duration::from_secs(1)),
            limits,
            metrics: Arc::new(
                HttpMetrics::new(&context.metrics(), &context.config().telemetry_attributes)
                    .with_spans(context.events().clone()),
            ),
            events: context.events().clone(),
            lifecycle: OnceLock::new(),
        });
        let server = Arc::new(HttpServer { shared });
        context.publish::<Bytes>(server.clone());
        Ok(server)
    }
}

impl Binding for HttpServer {
    fn start(&self, context: &StartContext) {
        let _ = self.shared.lifecycle.set(Lifecycle {
            retired: context.retired.clone(),
            shutdown: context.shutdown.clone(),
        });
    }
}

impl BytesHandler for HttpServer {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(self.shared.clone().serve(stream))
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        let handler: Arc<dyn BytesHandler> = Arc::new(HttpServer {
            shared: self.shared.clone(),
        });
        Box::pin(async move { zilla_engine::stream::connect_via_accept(handler, info) })
    }
}

/// The protocol a connection is served with.
enum Protocol {
    H1,
    H2,
}

impl Shared {
    async fn serve(self: Arc<Self>, stream: ByteStream) -> Result<(), StreamError> {
        let ByteStream { mut io, info } = stream;
        let negotiated = if info.secure {
            info.alpn.first().map(String::as_str)
        } else {
            None
        };
        let (protocol, prefix) = match negotiated {
            Some("h2") if self.versions.h2 => (Protocol::H2, Chunk::new()),
            Some("http/1.1") if self.versions.h1 => (Protocol::H1, Chunk::new()),
            _ => {
                let sniffed =
                    tokio::time::timeout(self.limits.header_read_timeout, sniff(&mut io)).await;
                let Ok(sniffed) = sniffed else {
                    tracing::debug!(binding = %self.qname, "nothing received in time: closing");
                    return Ok(());
                };
                match sniffed? {
                    (Sniffed::Closed, _) => return Ok(()),
                    (Sniffed::H2, prefix) if self.versions.h2 => (Protocol::H2, prefix),
                    (_, prefix) if self.versions.h1 => (Protocol::H1, prefix),
                    _ => {
                        tracing::debug!(binding = %self.qname, "version not served: closing");
                        return Ok(());
                    }
                }
            }
        };
        let lifecycle = self.lifecycle.get().cloned().unwrap_or_default();
        let info = Arc::new(info);
        // Held until the connection ends; `None` over the cap: every request is answered 503.
        let permit = self.connections.try_acquire();
        let refused = permit.is_none();
        if refused {
            self.note_refusal(&info);
        }
        // Guard sessions are per connection, as in Zilla (see `ConnectionSessions`).
        let sessions = Arc::new(ConnectionSessions::default());
        // Metric series are resolved per connection too (see `SeriesCache`).
        let series = Arc::new(SeriesCache::default());
        // HTTP/1.1 requests without a body are served here; hyper's server takes the
        // connection from the first request that is anything else (see `h1`).
        let (io, prefix) = if matches!(protocol, Protocol::H1) && !refused {
            let mut io = io;
            let connection = h1::Connection {
                shared: &self,
                io: &mut io,
                info: &info,
                sessions: &sessions,
                series: &series,
            };
            match connection.serve(prefix, &lifecycle).await {
                Ok(h1::Served::Closed) => return Ok(()),
                Ok(h1::Served::HandOver(rest)) => (io, rest),
                Err(error) => return Err(StreamError::Io(error)),
            }
        } else {
            (io, prefix)
        };
        let io = TokioIo::new(Rewind::new(prefix, io));
        // Asks the connection to finish its exchanges and close.
        let closing = CancellationToken::new();
        let activity = Arc::new(Activity::new());
        let shared = self.clone();
        let track = matches!(protocol, Protocol::H2) && !self.limits.idle_timeout.is_zero();
        let service = {
            let closing = closing.clone();
            let activity = activity.clone();
            service_fn(move |request: hyper::Request<Incoming>| {
                let shared = shared.clone();
                let info = info.clone();
                let closing = closing.clone();
                let activity = activity.clone();
                let sessions = sessions.clone();
                let series = series.clone();
                async move {
                    if refused {
                        closing.cancel();
                        return Ok::<_, Infallible>(overloaded(request.version()));
                    }
                    // An exchange in progress (an SSE stream, a long poll) keeps the
                    // connection from timing out as idle underneath.
                    let held = info.idle.hold();
                    let open = track.then(|| activity.open());
                    let request = request.map(kind::boxed);
                    Ok(shared
                        .respond(request, &info, &sessions, &series, (open, held))
                        .await)
                }
            })
        };
        let limits = &self.limits;
        let result = match protocol {
            Protocol::H1 => {
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .max_header_size(limits.max_header_list_size as usize)
                    .max_buf_size(limits.max_buffer_size)
                    // Not `pipeline_flush`: with it, hyper drops the 400 it owes a malformed
                    // request.
                    .keep_alive(!refused);
                let connection = builder.serve_connection(io, service).with_upgrades();
                tokio::pin!(connection);
                drive(connection, &lifecycle, closing.cancelled()).await
            }
            Protocol::H2 => {
                let executor = StreamExecutor::default();
                let mut builder = http2::Builder::new(executor.clone());
                // Extended CONNECT (RFC 8441) lets a `ws` binding behind serve HTTP/2.
                builder
                    .timer(TokioTimer::new())
                    .enable_connect_protocol()
                    .max_concurrent_streams(limits.concurrent_streams)
                    .max_header_list_size(limits.max_header_list_size)
                    .max_frame_size(limits.max_frame_size)
                    .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
                    .max_local_error_reset_streams(limits.max_local_error_reset_streams);
                if !limits.keep_alive_interval.is_zero() {
                    builder
                        .keep_alive_interval(limits.keep_alive_interval)
                        .keep_alive_timeout(limits.keep_alive_timeout);
                }
                let mut connection =
                    WithStreams::new(builder.serve_connection(io, service), executor);
                let idle = limits.idle_timeout;
                let stop = async {
                    tokio::select! {
                        _ = closing.cancelled() => {}
                        _ = activity.idle(idle), if track => {
                            tracing::debug!(binding = %self.qname, "idle HTTP/2 connection: closing");
                        }
                    }
                };
                let result = drive(Pin::new(&mut connection), &lifecycle, stop).await;
                connection.release();
                result
            }
        };
        drop(permit);
        result.map_err(|error| StreamError::Protocol(error.to_string()))
    }

    fn note_refusal(&self, info: &StreamInfo) {
        if let Some(count) = self.refusals.note() {
            let maximum = self.connections.maximum();
            let peer = info
                .source
                .map(|source| source.to_string())
                .unwrap_or_default();
            tracing::warn!(binding = %self.qname, count, maximum, %peer, "connection cap reached: answering 503");
            self.events.emit_with(CONNECTION_REFUSED, 0, || {
                format!("{count} connection(s) answered 503, latest from {peer}: at most {maximum} served at once")
            });
        }
    }

    /// Answers `request`; the exchange, and `held`, stay open until the response body is
    /// done with.
    async fn respond<H: Send + Unpin + 'static>(
        &self,
        request: kind::Request,
        info: &Arc<StreamInfo>,
        sessions: &ConnectionSessions,
        series: &SeriesCache,
        held: H,
    ) -> Response {
        let (response, record, expiry) =
            self.exchange(request, info, sessions, series, false).await;
        response.map(move |body| exchange_body(body, record, expiry, held))
    }

    async fn exchange(
        &self,
        request: kind::Request,
        info: &Arc<StreamInfo>,
        sessions: &ConnectionSessions,
        series: &SeriesCache,
        writes_forwarded: bool,
    ) -> (Response, Option<ExchangeRecord>, Option<ExpiryWatch>) {
        let record = self
            .metrics
            .start(series, request.method(), request.uri(), request.headers());
        let mut request = request;
        // The request goes on as a child of this exchange's span.
        if let Some(traceparent) = record.as_ref().and_then(ExchangeRecord::traceparent) {
            request.headers_mut().insert(
                http::header::HeaderName::from_static(TRACEPARENT),
                traceparent,
            );
        }
        let mut expiry = None;
        let (mut response, decoration) = self
            .answer(
                request,
                info,
                sessions,
                record.as_ref(),
                &mut expiry,
                writes_forwarded,
            )
            .await;
        if let Some(decoration) = decoration {
            self.access.decorate(&decoration, response.headers_mut());
        }
        if let Some(server) = &self.limits.server_header {
            response
                .headers_mut()
                .entry(SERVER)
                .or_insert_with(|| server.clone());
        }
        let record = record.map(|mut record| {
            record.respond(response.status(), response.headers());
            record
        });
        (response, record, expiry)
    }

    async fn answer(
        &self,
        request: kind::Request,
        info: &Arc<StreamInfo>,
        sessions: &ConnectionSessions,
        record: Option<&ExchangeRecord>,
        expiry: &mut Option<ExpiryWatch>,
        writes_forwarded: bool,
    ) -> (Response, Option<Decoration>) {
        let limit = self.limits.max_request_body_size;
        // A request that has no body (most GETs) needs neither a limit nor a read timer.
        let bodiless = http_body::Body::is_end_stream(request.body());
        let exceeded = limit
            .filter(|_| !bodiless)
            .map(|_| Arc::new(AtomicBool::new(false)));
        // Extended CONNECT carries a long-lived stream, not a body to wait for.
        let stalled = (!bodiless
            && !self.limits.body_read_timeout.is_zero()
            && request.method() != Method::CONNECT)
            .then(|| Arc::new(AtomicBool::new(false)));
        let mut request = request.map(|mut body| {
            if let Some(stalled) = &stalled {
                body = read_timeout(body, self.limits.body_read_timeout, stalled.clone());
            }
            if let (Some(limit), Some(exceeded)) = (limit, &exceeded) {
                body = limited(body, limit, exceeded.clone());
            }
            match record {
                Some(record) => record.request_body(body),
                None => body,
            }
        });
        match request.headers().get(HOST) {
            None if request.version() == Version::HTTP_11 => {
                return (status_response(StatusCode::BAD_REQUEST), None);
            }
            // The authority is routed on as text: one that is not visible ASCII is
            // malformed.
            Some(host) if host.to_str().is_err() => {
                return (status_response(StatusCode::BAD_REQUEST), None);
            }
            _ => {}
        }
        if let Some(limit) = limit
            && !bodiless
            && crate::h1::declared_length(request.headers()).is_some_and(|length| length > limit)
        {
            return (status_response(StatusCode::PAYLOAD_TOO_LARGE), None);
        }
        let decoration = match self.access.check(&request) {
            Verdict::Answer(response) => return (response, None),
            Verdict::Pass(decoration) => decoration,
        };
        // Shared, not copied: every request of the connection carries the same one.
        request.extensions_mut().insert(info.clone());
        let mut carried_credentials = false;
        // Sessions of the transport (a tls server's `x509` guard) authorize routes too.
        let mut authorization = request
            .extensions_mut()
            .remove::<Authorization>()
            .or_else(|| (!info.authorization.is_empty()).then(|| info.authorization.clone()));
        if let Some(hook) = &self.guard {
            let challenge_response = expiry::is_challenge_response(&request);
            // A token this connection verified before is found by its bytes, unchecked.
            let repeated = hook
                .credentials
                .header_candidate(&request)
                .filter(|_| !challenge_response)
                .and_then(|candidate| sessions.cached(&hook.name, candidate));
            let authorized = match repeated {
                Some(authorized) => {
                    carried_credentials = true;
                    Some(authorized)
                }
                None => {
                    let credentials = hook.credentials.extract(&request);
                    if challenge_response {
                        // Joins the connection's session for the identity, extending its
                        // streams.
                        if let Some(credentials) = credentials {
                            sessions.reauthorize(&hook.name, hook.guard.as_ref(), &credentials);
                        }
                        return (status_response(StatusCode::NO_CONTENT), Some(decoration));
                    }
                    credentials.and_then(|credentials| {
                        carried_credentials = true;
                        sessions.authorize(&hook.name, hook.guard.as_ref(), &credentials)
                    })
                }
            };
            if let Some(authorized) = authorized {
                authorization = Some(match authorization {
                    // The common case: the connection's own, shared by its requests.
                    None => authorized,
                    Some(mut transport) => {
                        for (guard, session) in authorized.sessions() {
                            transport.insert(guard, session.clone());
                        }
                        transport
                    }
                });
            }
        }
        let expiring = self
            .guard
            .as_ref()
            .and_then(|hook| authorization.as_ref()?.session(&hook.name).cloned());
        let routed = match self.router.resolve(&request, authorization.as_ref()) {
            Ok(routed) => routed,
            Err(Miss::NoRoute | Miss::Guarded) => {
                let status = expiry::unrouted(
                    self.guard.as_ref().map(|hook| hook.name.as_str()),
                    authorization.as_ref(),
                    carried_credentials,
                );
                return (status_response(status), Some(decoration));
            }
        };
        self.events
            .emit_with(REQUEST_ACCEPTED, 0, || accepted_message(&request));
        if !routed.overrides.is_empty() {
            let context = self
                .router
                .context(&routed.captures, authorization.as_ref());
            if let Err(message) = routed.overrides.apply(&mut request, &context) {
                tracing::debug!(binding = %self.qname, %message, "override not applied");
                return (status_response(StatusCode::BAD_REQUEST), Some(decoration));
            }
        }
        if let Some(authorization) = authorization
            && routed.exit.reads_authorization()
        {
            request.extensions_mut().insert(authorization);
        }
        let mut read_whole = false;
        if let Some(request_type) = self.requests.resolve(&request) {
            if let Err(reason) = request_type.check_head(&request) {
                tracing::debug!(binding = %self.qname, %reason, "request rejected by its model");
                // A client waiting for `100 Continue` is spared sending its body.
                if !expects_continue(&request) {
                    drain(request.into_body(), DRAIN_MAX).await;
                }
                return (status_response(StatusCode::BAD_REQUEST), Some(decoration));
            }
            if let Some(content) = request_type.content() {
                match self
                    .validate_content(request, content, exceeded.as_deref(), stalled.as_deref())
                    .await
                {
                    Ok(validated) => request = validated,
                    Err(status) => return (status_response(status), Some(decoration)),
                }
                read_whole = true;
            }
        }
        // A request without a body (every one the HTTP/1.1 loop reads itself) has nothing
        // to continue.
        if !read_whole && !bodiless && expects_continue(&request) {
            request = read_first_frame(request).await;
        }
        let cut = |exceeded: &Option<Arc<AtomicBool>>, stalled: &Option<Arc<AtomicBool>>| {
            if exceeded
                .as_ref()
                .is_some_and(|exceeded| exceeded.load(Ordering::Acquire))
            {
                Some(status_response(StatusCode::PAYLOAD_TOO_LARGE))
            } else if stalled
                .as_ref()
                .is_some_and(|stalled| stalled.load(Ordering::Acquire))
            {
                Some(timed_out())
            } else {
                None
            }
        };
        // The caller writes forwarded fields, the exit takes them, and nothing here reads or
        // adds to the response's header map.
        if writes_forwarded
            && routed.exit.takes_forwarded_fields()
            && decoration.adds_nothing()
            && self.limits.server_header.is_none()
            && !self.metrics.reads_response_headers()
        {
            request
                .extensions_mut()
                .insert(crate::h1::TakesForwardedFields);
        }
        let response = match routed.exit.handle(request).await {
            // A handler that failed because the body was cut answers for the cut.
            Ok(response)
                if response.status().is_client_error() || response.status().is_server_error() =>
            {
                cut(&exceeded, &stalled).unwrap_or(response)
            }
            // A guarded response ends when its session expires (Zilla resets it then).
            Ok(response) => {
                *expiry = expiring.and_then(ExpiryWatch::new);
                response
            }
            Err(error) => {
                tracing::debug!(binding = %self.qname, %error, "exchange failed");
                cut(&exceeded, &stalled).unwrap_or_else(|| status_response(status_of(&error)))
            }
        };
        (response, Some(decoration))
    }

    /// Reads the body whole (bounded) and checks it with `content`; an empty body is not
    /// checked, as in Zilla. The error is the status to answer.
    async fn validate_content(
        &self,
        request: kind::Request,
        content: &Arc<dyn Validator>,
        exceeded: Option<&AtomicBool>,
        stalled: Option<&AtomicBool>,
    ) -> Result<kind::Request, StatusCode> {
        let (parts, body) = request.into_parts();
        let (data, trailers) = match read_bounded(body, self.limits.max_validated_body_size).await {
            Ok(read) => read,
            Err(ReadError::TooLarge(bound)) => {
                tracing::debug!(binding = %self.qname, bound, "body too large to validate");
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            Err(ReadError::Failed(error)) => {
                tracing::debug!(binding = %self.qname, %error, "body not read");
                let too_large = exceeded.is_some_and(|exceeded| exceeded.load(Ordering::Acquire));
                let too_slow = stalled.is_some_and(|stalled| stalled.load(Ordering::Acquire));
                return Err(if too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else if too_slow {
                    StatusCode::REQUEST_TIMEOUT
                } else {
                    StatusCode::BAD_REQUEST
                });
            }
        };
        if !data.is_empty()
            && let Err(reason) = validate_whole(content, &data).await
        {
            tracing::debug!(binding = %self.qname, %reason, "request content rejected by its model");
            return Err(StatusCode::BAD_REQUEST);
        }
        Ok(kind::Request::from_parts(parts, replay(data, trailers)))
    }
}

/// `503` with `retry-after`, for a connection over the cap; HTTP/1.1 closes after it.
fn overloaded(version: Version) -> Response {
    let mut response = status_response(StatusCode::SERVICE_UNAVAILABLE);
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    if version < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `408` for a stalled body; the connection closes after it (its body was not read whole).
fn timed_out() -> Response {
    let mut response = status_response(StatusCode::REQUEST_TIMEOUT);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The open exchanges of one HTTP/2 connection, for its idle timeout.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    /// When the last exchange ended, in milliseconds since `started`.
    idle_since: AtomicU64,
    started: tokio::time::Instant,
}

/// One open exchange; dropping it ends it.
struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since.store(now, Ordering::Release);
        activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            started: tokio::time::Instant::now(),
        }
    }

    fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Returns once no exchange has been open for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let since = self.idle_since.load(Ordering::Acquire);
            let due = zilla_engine::limits::deadline_after(
                self.started + Duration::from_millis(since),
                timeout,
            );
            tokio::time::sleep_until(due).await;
            if self.open.load(Ordering::Acquire) == 0
                && self.idle_since.load(Ordering::Acquire) == since
            {
                return;
            }
            if self.open.load(Ordering::Acquire) > 0 {
                // Busy: look again a timeout later rather than at every exchange.
                tokio::time::sleep(timeout).await;
            }
        }
    }
}

/// The most of a rejected request's body read before answering.
const DRAIN_MAX: u64 = 64 * 1024;

/// `scheme method authority path`, as Zilla's request accepted event reads.
fn accepted_message<B>(request: &http::Request<B>) -> String {
    let part = |name| pseudo_header(request, name).unwrap_or_default();
    format!(
        "{} {} {} {}",
        part(":scheme"),
        part(":method"),
        part(":authority"),
        part(":path")
    )
}

/// Whether an HTTP/1.1 client waits for `100 Continue` before sending its body.
fn expects_continue<B>(request: &http::Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request
            .headers()
            .get(EXPECT)
            .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads the first body frame, which makes hyper send `100 Continue`, so that a client
/// waiting for it is not stuck behind a handler that answers before reading (an echo, say,
/// whose response is the request body).
async fn read_first_frame(request: kind::Request) -> kind::Request {
    let (parts, mut body) = request.into_parts();
    let body = match body.frame().await {
        None => kind::empty(),
        Some(first) => prepend(first, body),
    };
    kind::Request::from_parts(parts, body)
}

/// A served connection that can be asked to finish its exchanges and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    Self: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for http2::Connection<I, S, E>
where
    Self: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<C: Graceful> Graceful for WithStreams<C> {
    fn graceful(self: Pin<&mut Self>) {
        self.get_mut().connection().graceful();
    }
}

/// Runs `connection` until it ends; a shutdown or `stop` lets open exchanges finish, a
/// retirement cuts them.
async fn drive<C: Graceful>(
    mut connection: Pin<&mut C>,
    lifecycle: &Lifecycle,
    stop: impl Future<Output = ()>,
) -> Result<(), hyper::Error> {
    // The signals are shared by every connection of the binding (or the process): polled only
    // once they fire, not on every wake of the connection.
    let mut retired = OnWake::new(lifecycle.retired.clone().cancelled_owned());
    let shutdown = OnWake::new(lifecycle.shutdown.clone().cancelled_owned());
    let stop = OnWake::new(stop);
    tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        _ = &mut retired => return Ok(()),
        _ = shutdown => {}
        _ = stop => {}
    }
    connection.as_mut().graceful();
    tokio::select! {
        biased;
        result = connection.as_mut() => result,
        _ = retired => Ok(()),
    }
}
