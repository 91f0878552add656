//! Body wrappers: the request body limit (413), the body read timeout (408) and the `http.*`
//! metrics, recorded as bodies stream through without buffering.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use zilla_engine::events::Events;
use zilla_engine::metrics::{Attributes, BindingMetrics, Family, Gauge, HistogramHandle};
use zilla_engine::traces::{Span, SpanKind, TraceContext, random_ids};

use crate::expiry::ExpiryWatch;
use crate::kind::{Body, BodyError};
use crate::telemetry::AttributeSources;

/// The `http.*` metrics of one binding; each is `None` unless the config enables it.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    request_size: Option<Family>,
    response_size: Option<Family>,
    active: Option<Family>,
    duration: Option<Family>,
    attributes: AttributeSources,
    /// Where a server's request spans go, while an exporter sends traces.
    spans: Option<Events>,
}

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

impl HttpMetrics {
    /// The handles `metrics` enables, labelled by the binding's `telemetry.attributes`.
    pub fn new(metrics: &BindingMetrics, attributes: &[(String, String)]) -> Self {
        Self {
            request_size: metrics.family("http.request.size"),
            response_size: metrics.family("http.response.size"),
            active: metrics.family("http.active.requests"),
            duration: metrics.family("http.duration"),
            attributes: AttributeSources::new(attributes),
            spans: None,
        }
    }

    /// Also records a span per request (a server's), sent through `events` while an exporter
    /// sends traces.
    pub fn with_spans(self, events: Events) -> Self {
        Self {
            spans: Some(events),
            ..self
        }
    }

    /// Whether an exchange's series read the request header `name`.
    pub fn reads_request_header(&self, name: &HeaderName) -> bool {
        !self.is_empty() && self.attributes.reads_request_header(name)
    }

    /// Whether an exchange's series read the response's header fields.
    pub fn reads_response_headers(&self) -> bool {
        !self.is_empty() && self.attributes.reads_response_headers()
    }

    fn is_empty(&self) -> bool {
        self.request_size.is_none()
            && self.response_size.is_none()
            && self.active.is_none()
            && self.duration.is_none()
    }

    /// Starts recording one exchange; `None` when nothing is enabled. The series are found
    /// in `cache` (the connection's) when these attribute values were seen recently, and
    /// looked up once otherwise; recording itself is atomic adds.
    pub fn start(
        self: &Arc<Self>,
        cache: &SeriesCache,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<ExchangeRecord> {
        let span = self
            .spans
            .as_ref()
            .filter(|events| events.traced())
            .and_then(|events| OpenSpan::start(events, method, uri, headers))
            .map(Box::new);
        if self.is_empty() && span.is_none() {
            return None;
        }
        let series = self.request_series(cache, method, uri, headers);
        if let Some(active) = &series.active {
            active.add(1);
        }
        Some(ExchangeRecord {
            started: Instant::now(),
            series,
            response: None,
            span,
        })
    }

    /// The series of this request's attribute values: the cached ones, or resolved now.
    fn request_series(
        self: &Arc<Self>,
        cache: &SeriesCache,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Arc<RequestSeries> {
        let attributes = &self.attributes;
        recent_or_new(
            &cache.recent,
            RECENT_REQUEST_SERIES,
            |series| attributes.request_matches(&series.values, method, uri, headers),
            || self.new_request_series(attributes.request_values(method, uri, headers)),
        )
    }

    /// The series of request attribute `values`, looked up.
    fn new_request_series(self: &Arc<Self>, values: Vec<Option<String>>) -> Arc<RequestSeries> {
        let labels = self.attributes.request_labels(&values);
        Arc::new(RequestSeries {
            active: self
                .active
                .as_ref()
                .and_then(|family| family.gauge(labels.clone())),
            request_size: self
                .request_size
                .as_ref()
                .and_then(|family| family.histogram(labels.clone())),
            values,
            labels,
            responses: Mutex::new(VecDeque::new()),
            only_response: OnceLock::new(),
            metrics: self.clone(),
        })
    }

    /// The series of a response's attribute values (`None`: no response head was seen) for
    /// a request of `request`.
    fn response_series(
        &self,
        request: &RequestSeries,
        response: Option<(StatusCode, &HeaderMap)>,
    ) -> ResponseSeriesRef {
        let attributes = &self.attributes;
        if attributes.response_count() == 0 {
            // No response attribute: every response of the request series records into the
            // same series, found without a lock and reached through the request series.
            self.only_response_series(request);
            return ResponseSeriesRef::Only;
        }
        ResponseSeriesRef::Listed(recent_or_new(
            &request.responses,
            RECENT_RESPONSE_SERIES,
            |series| match response {
                Some((status, headers)) => {
                    attributes.response_matches(&series.values, status, headers)
                }
                None => series.values.iter().all(Option::is_none),
            },
            || {
                let values = match response {
                    Some((status, headers)) => attributes.response_values(status, headers),
                    None => vec![None; attributes.response_count()],
                };
                Arc::new(self.new_response_series(request, values))
            },
        ))
    }

    /// The one response series of `request` when no response attribute is configured.
    fn only_response_series<'r>(&self, request: &'r RequestSeries) -> &'r ResponseSeries {
        request
            .only_response
            .get_or_init(|| self.new_response_series(request, Vec::new()))
    }

    /// The series of response attribute `values` for a request of `request`, looked up.
    fn new_response_series(
        &self,
        request: &RequestSeries,
        values: Vec<Option<String>>,
    ) -> ResponseSeries {
        let labels = self.attributes.response_labels(&values);
        ResponseSeries {
            response_size: self
                .response_size
                .as_ref()
                .and_then(|family| family.histogram(labels.clone())),
            duration: self.duration.as_ref().and_then(|family| {
                let mut both = request.labels.clone();
                both.extend(labels);
                family.histogram(both)
            }),
            values,
        }
    }
}

/// Request series kept per connection, and response series per request series: enough for
/// the few routes one connection uses, bounded against one that uses thousands.
const RECENT_REQUEST_SERIES: usize = 8;
const RECENT_RESPONSE_SERIES: usize = 4;
/// Attribute values longer than this together are looked up every time instead of kept: a
/// connection holds at most 8 × (1 + 4) entries of about twice this many bytes, so a client
/// sending long paths cannot make each connection hold much.
const MAX_CACHED_VALUE_BYTES: usize = 128;

/// Whether series for `values` may be kept in a connection's cache.
fn cacheable(values: &[Option<String>]) -> bool {
    values.iter().flatten().map(String::len).sum::<usize>() <= MAX_CACHED_VALUE_BYTES
}

/// The series one connection recorded into recently, by attribute values: a request whose
/// values were seen before records without building labels or looking series up.
#[derive(Debug, Default)]
pub struct SeriesCache {
    recent: Mutex<VecDeque<Arc<RequestSeries>>>,
}

/// The series of one combination of request attribute values.
#[derive(Debug)]
struct RequestSeries {
    values: Vec<Option<String>>,
    labels: Attributes,
    active: Option<Gauge>,
    request_size: Option<HistogramHandle>,
    responses: Mutex<VecDeque<Arc<ResponseSeries>>>,
    /// The one response series when no response attribute is configured.
    only_response: OnceLock<ResponseSeries>,
    metrics: Arc<HttpMetrics>,
}

/// The series of one combination of response attribute values, for one request series.
#[derive(Debug)]
struct ResponseSeries {
    values: Vec<Option<String>>,
    response_size: Option<HistogramHandle>,
    duration: Option<HistogramHandle>,
}

/// The response series an exchange records into: its request series' only one (no response
/// attribute is configured), reached through the request series without a reference count of
/// its own, or one of the request series' recent ones.
#[derive(Debug)]
enum ResponseSeriesRef {
    Only,
    Listed(Arc<ResponseSeries>),
}

/// Series kept in a connection's recent lists.
trait Valued {
    /// The attribute values the series is for.
    fn values(&self) -> &[Option<String>];
}

impl Valued for RequestSeries {
    fn values(&self) -> &[Option<String>] {
        &self.values
    }
}

impl Valued for ResponseSeries {
    fn values(&self) -> &[Option<String>] {
        &self.values
    }
}

/// The entry of `recent` that `matches`; else `new`'s, kept as the most recent (up to `bound`)
/// when its values are short enough.
fn recent_or_new<T: Valued>(
    recent: &Mutex<VecDeque<Arc<T>>>,
    bound: usize,
    matches: impl Fn(&T) -> bool,
    new: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
    if let Some(found) = self::recent(recent, matches) {
        return found;
    }
    let entry = new();
    if cacheable(entry.values()) {
        remember(recent, entry.clone(), bound);
    }
    entry
}

/// The entry of `recent` that `matches`, moved to the back (most recent).
fn recent<T>(recent: &Mutex<VecDeque<Arc<T>>>, matches: impl Fn(&T) -> bool) -> Option<Arc<T>> {
    let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
    let index = recent.iter().rposition(|entry| matches(entry))?;
    if index + 1 != recent.len() {
        let entry = recent.remove(index)?;
        recent.push_back(entry);
    }
    recent.back().cloned()
}

/// Adds `entry` as the most recent, forgetting the least recent past `bound`.
fn remember<T>(recent: &Mutex<VecDeque<Arc<T>>>, entry: Arc<T>, bound: usize) {
    let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() >= bound {
        recent.pop_front();
    }
    recent.push_back(entry);
}

/// The span of one request, from its arrival to the end of its response.
#[derive(Debug)]
struct OpenSpan {
    events: Events,
    context: TraceContext,
    span_id: [u8; 8],
    /// The caller's span, when the request's `traceparent` named one.
    parent_id: Option<[u8; 8]>,
    method: String,
    path: String,
    start: std::time::SystemTime,
    status: Option<StatusCode>,
}

impl OpenSpan {
    /// A span in the trace the request's `traceparent` names (a child of the caller's span),
    /// or in a new trace.
    fn start(events: &Events, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Self> {
        let (new_trace, span_id) = random_ids()?;
        let caller = headers
            .get(TRACEPARENT)
            .and_then(|value| TraceContext::parse(value.as_bytes()));
        let context = caller.unwrap_or(TraceContext {
            trace_id: new_trace,
            parent_id: span_id,
            // Sampled: every span is sent.
            flags: 1,
        });
        Some(Self {
            events: events.clone(),
            context,
            span_id,
            parent_id: caller.map(|caller| caller.parent_id),
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            start: std::time::SystemTime::now(),
            status: None,
        })
    }

    fn finish(self) {
        let mut attributes = vec![
            ("http.request.method", self.method.clone()),
            ("url.path", self.path.clone()),
        ];
        if let Some(status) = self.status {
            attributes.push(("http.response.status_code", status.as_u16().to_string()));
        }
        self.events.span(&Span {
            qname: self.events.qname().clone(),
            trace_id: self.context.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            name: format!("{} {}", self.method, self.path),
            kind: SpanKind::Server,
            start: self.start,
            end: std::time::SystemTime::now(),
            attributes,
            // OpenTelemetry's HTTP conventions: a server span fails on a 5xx (or no answer).
            error: self.status.is_none_or(|status| status.is_server_error()),
        });
    }
}

/// One exchange being recorded. Finishing it (or dropping it) records the response size and
/// the duration and ends the active request.
#[derive(Debug)]
pub struct ExchangeRecord {
    started: Instant,
    series: Arc<RequestSeries>,
    /// Set by [`Self::respond`].
    response: Option<ResponseSeriesRef>,
    /// Boxed: only traced requests have one, and the record is moved with every response
    /// body, so it stays a few words long without it.
    span: Option<Box<OpenSpan>>,
}

impl ExchangeRecord {
    /// The `traceparent` the request goes on with: this exchange's span as the parent.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let span = self.span.as_ref()?;
        HeaderValue::from_str(&span.context.header(span.span_id)).ok()
    }

    /// Wraps the request body to record its size; a body that is already over (most GETs)
    /// is recorded at once, unwrapped.
    pub fn request_body(&self, body: Body) -> Body {
        match &self.series.request_size {
            None => body,
            Some(histogram) if body.is_end_stream() => {
                histogram.record(0);
                body
            }
            Some(histogram) => Counted::boxed(body, RecordSize(histogram.clone())),
        }
    }

    /// Takes the response attributes from its head.
    pub fn respond(&mut self, status: StatusCode, headers: &HeaderMap) {
        if let Some(span) = &mut self.span {
            span.status = Some(status);
        }
        let metrics = &self.series.metrics;
        if metrics.response_size.is_some() || metrics.duration.is_some() {
            self.response = Some(metrics.response_series(&self.series, Some((status, headers))));
        }
    }

    /// Wraps the response body so that its end finishes this record.
    pub fn response_body(self, body: Body) -> Body {
        Counted::boxed(body, self)
    }
}

/// What to do with a body's byte count at its end.
trait OnEnd: Send + Unpin + 'static {
    fn end(self, bytes: u64);
}

struct RecordSize(HistogramHandle);

impl OnEnd for RecordSize {
    fn end(self, bytes: u64) {
        self.0.record(bytes);
    }
}

impl OnEnd for ExchangeRecord {
    fn end(self, bytes: u64) {
        let metrics = &self.series.metrics;
        if metrics.response_size.is_some() || metrics.duration.is_some() {
            let response = self
                .response
                .unwrap_or_else(|| metrics.response_series(&self.series, None));
            let response = match &response {
                ResponseSeriesRef::Only => metrics.only_response_series(&self.series),
                ResponseSeriesRef::Listed(series) => series,
            };
            if let Some(size) = &response.response_size {
                size.record(bytes);
            }
            if let Some(duration) = &response.duration {
                duration
                    .record(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        if let Some(active) = &self.series.active {
            active.add(-1);
        }
        if let Some(span) = self.span {
            span.finish();
        }
    }
}

/// Counts data bytes and reports them once to `on_end`, at the end of the body or when it is
/// dropped. A server's response also ends when `expiry`'s session expires, and holds `held`
/// (what keeps the exchange counted as open) until it is done with: one wrapper, one
/// allocation per body, however many of these apply.
struct Counted<E: OnEnd, H = ()> {
    inner: Body,
    bytes: u64,
    on_end: Option<E>,
    expiry: Option<ExpiryWatch>,
    _held: H,
}

impl<E: OnEnd> Counted<E> {
    /// `inner`, counted for `on_end`.
    fn boxed(inner: Body, on_end: E) -> Body {
        crate::kind::boxed(Counted {
            inner,
            bytes: 0,
            on_end: Some(on_end),
            expiry: None,
            _held: (),
        })
    }
}

/// A server's response body, with what its exchange still has to do: end `record` with the
/// bytes sent, end the response when `expiry`'s session expires, and hold `held` until the
/// body is done with.
pub fn exchange_body<H: Send + Unpin + 'static>(
    inner: Body,
    record: Option<ExchangeRecord>,
    expiry: Option<ExpiryWatch>,
    held: H,
) -> Body {
    crate::kind::boxed(exchange_body_unboxed(inner, record, expiry, held))
}

/// [`exchange_body`] for a caller that sends the body itself: not boxed, so it costs no
/// allocation and no dispatch through a box per frame.
pub fn exchange_body_unboxed<H: Send + Unpin + 'static>(
    inner: Body,
    record: Option<ExchangeRecord>,
    expiry: Option<ExpiryWatch>,
    held: H,
) -> impl HttpBody<Data = Bytes, Error = BodyError> + Send + Unpin + 'static {
    Counted {
        inner,
        bytes: 0,
        on_end: record,
        expiry,
        _held: held,
    }
}

impl<E: OnEnd, H> Counted<E, H> {
    fn finish(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end.end(self.bytes);
        }
    }

    fn expired(&mut self) -> bool {
        self.expiry.as_mut().is_some_and(ExpiryWatch::expired)
    }
}

impl<E: OnEnd, H> Drop for Counted<E, H> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<E: OnEnd, H: Send + Unpin + 'static> HttpBody for Counted<E, H> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // Expired: the response ends here, cleanly (Zilla resets it then).
        if self.expired() {
            self.finish();
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => {}
            Poll::Pending => {
                // Waiting: wake at the expiry to end the response then.
                if self.expiry.as_mut().is_some_and(|expiry| expiry.wait(cx)) {
                    self.finish();
                    return Poll::Ready(None);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body was longer than the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body longer than {0} bytes")]
pub struct TooLarge(pub u64);

/// Fails a body that grows past `limit` bytes, and says so in `exceeded`, so that the
/// exchange can be answered with 413 if its response has not started.
pub fn limited(body: Body, limit: u64, exceeded: Arc<AtomicBool>) -> Body {
    crate::kind::boxed(Limited {
        inner: body,
        remaining: limit,
        limit,
        exceeded,
    })
}

struct Limited {
    inner: Body,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let length = data.len() as u64;
            if length > self.remaining {
                self.exceeded.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Box::new(TooLarge(self.limit)))));
            }
            self.remaining -= length;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that sent nothing for the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for {} ms", .0.as_millis())]
pub struct Stalled(pub std::time::Duration);

/// Fails a body when no frame arrives for `timeout`, and says so in `stalled`, so that the
/// exchange can be answered with 408 and a client trickling its body (slowloris) does not hold
/// the connection. Arrivals only store the time; the timer is re-armed when it fires, and made
/// only once the body first has to wait (the body of a small request mostly arrives with its
/// head and never does).
pub fn read_timeout(body: Body, timeout: std::time::Duration, stalled: Arc<AtomicBool>) -> Body {
    crate::kind::boxed(ReadTimeout {
        inner: body,
        timeout,
        last_frame: zilla_engine::time::recent(),
        timer: None,
        stalled,
    })
}

struct ReadTimeout {
    inner: Body,
    timeout: std::time::Duration,
    last_frame: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl HttpBody for ReadTimeout {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(polled) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.last_frame = zilla_engine::time::recent();
            return Poll::Ready(polled);
        }
        let (last_frame, timeout) = (this.last_frame, this.timeout);
        let timer = this.timer.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(
                zilla_engine::limits::deadline_after(last_frame, timeout),
            ))
        });
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = zilla_engine::limits::deadline_after(this.last_frame, this.timeout);
            if due <= tokio::time::Instant::now() {
                this.stalled.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Box::new(Stalled(this.timeout)))));
            }
            timer.as_mut().reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is longer than the bound.
    #[error("body longer than {0} bytes")]
    TooLarge(u64),
    /// Reading it failed.
    #[error("{0}")]
    Failed(BodyError),
}

/// A body read whole, up to `bound` bytes: its data and trailers.
pub async fn read_bounded(
    mut body: Body,
    bound: u64,
) -> Result<(Bytes, Option<http::HeaderMap>), ReadError> {
    use http_body_util::BodyExt;
    if body.size_hint().lower() > bound {
        return Err(ReadError::TooLarge(bound));
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length: u64 = 0;
    let mut trailers: Option<http::HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Failed)?;
        match frame.into_data() {
            Ok(data) => {
                length += data.len() as u64;
                if length > bound {
                    return Err(ReadError::TooLarge(bound));
                }
                chunks.push(data);
            }
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers
                        .get_or_insert_with(http::HeaderMap::new)
                        .extend(more);
                }
            }
        }
    }
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    };
    Ok((data, trailers))
}

/// Reads and drops a body that is at most `bound` bytes, so that a request answered without
/// its body ends cleanly (no HTTP/2 stream reset the client may mistake for a failure); a
/// longer or failing body is left where it is.
pub async fn drain(body: Body, bound: u64) {
    let _ = read_bounded(body, bound).await;
}

/// A body of `data` then `trailers`, as read by [`read_bounded`].
pub fn replay(data: Bytes, trailers: Option<http::HeaderMap>) -> Body {
    crate::kind::boxed(Replayed {
        data: (!data.is_empty()).then_some(data),
        trailers,
    })
}

struct Replayed {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl HttpBody for Replayed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|trailers| Ok(Frame::trailers(trailers))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

/// `body` with `first` (a frame already read from it) put back in front.
pub fn prepend(first: Result<Frame<Bytes>, BodyError>, body: Body) -> Body {
    crate::kind::boxed(Prepended {
        first: Some(first),
        rest: body,
    })
}

struct Prepended {
    first: Option<Result<Frame<Bytes>, BodyError>>,
    rest: Body,
}

impl HttpBody for Prepended {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let length = match &self.first {
            Some(Ok(first)) => first.data_ref().map_or(0, |data| data.len() as u64),
            _ => 0,
        };
        let mut hint = SizeHint::new();
        // Upper first: a lower bound above the upper one is refused.
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(length));
        }
        hint.set_lower(rest.lower().saturating_add(length));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::BTreeMap;
    use zilla_engine::config::model::QualifiedName;
    use zilla_engine::metrics::{Metric, Metrics};

    fn stream(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
            .collect();
        crate::kind::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn limit_fails_the_body_past_the_limit() {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = limited(stream(&[b"12345", b"678"]), 8, exceeded.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "12345678");
        assert!(!exceeded.load(Ordering::Acquire));
        let body = limited(stream(&[b"12345", b"6789"]), 8, exceeded.clone());
        let error = body.collect().await.unwrap_err();
        assert!(error.to_string().contains("longer than 8"));
        assert!(exceeded.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn metrics_record_sizes_duration_and_active() {
        let metrics = Metrics::new([&crate::telemetry::HTTP_METRICS]);
        let all = [
            "http.request.size",
            "http.response.size",
            "http.active.requests",
            "http.duration",
        ];
        metrics.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            all.iter().map(|m| (*m).to_owned()).collect(),
        )]));
        let binding = metrics.binding(&QualifiedName::new("ns", "http0"), &["http.*".to_owned()]);
        let http = Arc::new(HttpMetrics::new(&binding, &[]));
        let cache = SeriesCache::default();
        let start = || {
            http.start(
                &cache,
                &Method::GET,
                &Uri::from_static("/"),
                &HeaderMap::new(),
            )
            .unwrap()
        };
        let record = start();
        let request = record.request_body(stream(&[b"abc", b"de"]));
        let response = record.response_body(stream(&[b"0123456789"]));
        let value = |name: &str| -> String {
            metrics
                .table()
                .lines()
                .find(|line| line.contains(name))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(value("http.active.requests").ends_with(" 1"));
        assert_eq!(request.collect().await.unwrap().to_bytes(), "abcde");
        assert_eq!(response.collect().await.unwrap().to_bytes(), "0123456789");
        assert!(value("http.active.requests").ends_with(" 0"));
        assert!(value("http.request.size").ends_with("count=1 sum=5"));
        assert!(value("http.response.size").ends_with("count=1 sum=10"));
        let duration = metrics
            .snapshot()
            .into_iter()
            .find(|series| series.descriptor.name == "http.duration")
            .unwrap();
        let Metric::Histogram(histogram) = &*duration.value else {
            panic!("a histogram")
        };
        assert_eq!(histogram.count(), 1);

        // A response dropped unread still ends the request.
        let record = start();
        drop(record.response_body(stream(&[b"x"])));
        assert!(value("http.active.requests").ends_with(" 0"));
        assert!(value("http.response.size").ends_with("count=2 sum=10"));
    }

    /// A registry with every `http.*` metric enabled for binding `ns:http0`.
    fn every_http_metric() -> (Metrics, BindingMetrics) {
        let metrics = Metrics::new([&crate::telemetry::HTTP_METRICS]);
        metrics.set_namespace_metrics(BTreeMap::from([(
            "ns".to_owned(),
            crate::telemetry::HTTP_METRICS
                .metrics
                .iter()
                .map(|m| m.name.to_owned())
                .collect(),
        )]));
        let binding = metrics.binding(&QualifiedName::new("ns", "http0"), &["http.*".to_owned()]);
        (metrics, binding)
    }

    #[tokio::test]
    async fn attributes_label_each_metric_as_zilla_does() {
        let (metrics, binding) = every_http_metric();
        let attributes = [
            ("method".to_owned(), "${http.request.method}".to_owned()),
            ("status".to_owned(), "${http.response.status}".to_owned()),
        ];
        let http = Arc::new(HttpMetrics::new(&binding, &attributes));
        let cache = SeriesCache::default();
        for (method, status) in [
            (Method::GET, StatusCode::OK),
            (Method::GET, StatusCode::OK),
            (Method::POST, StatusCode::NOT_FOUND),
        ] {
            let mut record = http
                .start(
                    &cache,
                    &method,
                    &Uri::from_static("/items"),
                    &HeaderMap::new(),
                )
                .unwrap();
            let request = record.request_body(stream(&[b"abc"]));
            request.collect().await.unwrap();
            record.respond(status, &HeaderMap::new());
            record
                .response_body(stream(&[b"0123456789"]))
                .collect()
                .await
                .unwrap();
        }
        let table = metrics.table();
        for expected in [
            "ns http0 http.request.size{method=GET} count=2 sum=6",
            "ns http0 http.request.size{method=POST} count=1 sum=3",
            "ns http0 http.response.size{status=200} count=2 sum=20",
            "ns http0 http.response.size{status=404} count=1 sum=10",
            "ns http0 http.active.requests{method=GET} 0",
            "ns http0 http.active.requests{method=POST} 0",
            "ns http0 http.duration{method=GET,status=200} count=2",
            "ns http0 http.duration{method=POST,status=404} count=1",
        ] {
            assert!(table.contains(expected), "{expected} missing from\n{table}");
        }
    }

    #[tokio::test]
    async fn a_connection_resolves_series_once_per_recent_attribute_values() {
        let (metrics, binding) = every_http_metric();
        let attributes = [
            ("path".to_owned(), "${http.request.path}".to_owned()),
            ("agent".to_owned(), "${http.request.user-agent}".to_owned()),
            ("status".to_owned(), "${http.response.status}".to_owned()),
        ];
        let http = Arc::new(HttpMetrics::new(&binding, &attributes));
        let cache = SeriesCache::default();
        let exchange = |path: &str, status: StatusCode| {
            let uri: Uri = path.parse().unwrap();
            let mut record = http
                .start(&cache, &Method::GET, &uri, &HeaderMap::new())
                .unwrap();
            record.respond(status, &HeaderMap::new());
            record
        };
        let listed = |record: &ExchangeRecord| match record.response.as_ref().unwrap() {
            ResponseSeriesRef::Listed(series) => series.clone(),
            ResponseSeriesRef::Only => panic!("a response attribute is configured"),
        };
        let first = exchange("/a", StatusCode::OK);
        let again = exchange("/a", StatusCode::OK);
        assert!(Arc::ptr_eq(&first.series, &again.series));
        assert!(Arc::ptr_eq(&listed(&first), &listed(&again)));
        let other_status = exchange("/a", StatusCode::NOT_FOUND);
        assert!(Arc::ptr_eq(&first.series, &other_status.series));
        assert!(!Arc::ptr_eq(&listed(&first), &listed(&other_status)));
        for record in [first, again, other_status] {
            record
                .response_body(crate::kind::empty())
                .collect()
                .await
                .unwrap();
        }
        // More paths than the cache keeps: each still records into its own series.
        for round in 0..2 {
            for index in 0..(RECENT_REQUEST_SERIES + 4) {
                let record = exchange(&format!("/p{index}"), StatusCode::OK);
                record
                    .request_body(stream(&[b"ab"]))
                    .collect()
                    .await
                    .unwrap();
                record
                    .response_body(stream(&[b"xyz"]))
                    .collect()
                    .await
                    .unwrap();
                assert!(cache.recent.lock().unwrap().len() <= RECENT_REQUEST_SERIES);
                let _ = round;
            }
        }
        // A long path records into its series without being kept.
        let long = format!("/{}", "x".repeat(MAX_CACHED_VALUE_BYTES));
        let kept = cache.recent.lock().unwrap().len();
        for _ in 0..2 {
            let record = exchange(&long, StatusCode::OK);
            record
                .response_body(crate::kind::empty())
                .collect()
                .await
                .unwrap();
        }
        assert_eq!(cache.recent.lock().unwrap().len(), kept);
        assert!(
            cache
                .recent
                .lock()
                .unwrap()
                .iter()
                .all(|series| series.values[0].as_deref() != Some(long.as_str()))
        );
        let table = metrics.table();
        assert!(
            table.contains(&format!("http.duration{{path={long},status=200}} count=2")),
            "{table}"
        );
        for expected in [
            "ns http0 http.duration{path=/a,status=200} count=2",
            "ns http0 http.duration{path=/a,status=404} count=1",
            "ns http0 http.request.size{path=/p0} count=2 sum=4",
            "ns http0 http.request.size{path=/p11} count=2 sum=4",
            "ns http0 http.response.size{status=200} count=28 sum=72",
            "ns http0 http.active.requests{path=/p11} 0",
        ] {
            assert!(table.contains(expected), "{expected} missing from\n{table}");
        }
    }

    #[tokio::test]
    async fn bounded_reads_keep_data_and_trailers() {
        let (data, trailers) = read_bounded(stream(&[b"ab", b"cd"]), 4).await.unwrap();
        assert_eq!(data, "abcd");
        assert!(trailers.is_none());
        let replayed = replay(data, None);
        assert_eq!(replayed.size_hint().exact(), Some(4));
        assert_eq!(replayed.collect().await.unwrap().to_bytes(), "abcd");

        let error = read_bounded(stream(&[b"ab", b"cde"]), 4).await.unwrap_err();
        assert!(matches!(error, ReadError::TooLarge(4)), "{error}");
        let error = read_bounded(crate::kind::full("abcde"), 4)
            .await
            .unwrap_err();
        assert!(matches!(error, ReadError::TooLarge(4)), "{error}");

        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let body = crate::kind::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        let (data, read_trailers) = read_bounded(body, 10).await.unwrap();
        assert_eq!(read_trailers.as_ref(), Some(&trailers));
        let collected = replay(data, read_trailers).collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "x");

        let (data, _) = read_bounded(crate::kind::empty(), 0).await.unwrap();
        assert!(data.is_empty());
        assert!(replay(data, None).is_end_stream());

        let failing: Vec<Result<Frame<Bytes>, BodyError>> = vec![Err("reset".into())];
        let body = crate::kind::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
            failing,
        )));
        let error = read_bounded(body, 10).await.unwrap_err();
        assert!(matches!(error, ReadError::Failed(_)), "{error}");
    }

    #[tokio::test]
    async fn prepended_frames_come_first() {
        let mut body = stream(&[b"ab", b"cd"]);
        let first = body.frame().await.unwrap();
        let body = prepend(first, body);
        assert_eq!(body.size_hint().exact(), None);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcd");
        let mut exact = crate::kind::full("abcd");
        let first = exact.frame().await.unwrap();
        let exact = prepend(first, exact);
        assert_eq!(exact.size_hint().exact(), Some(4));
        assert_eq!(exact.collect().await.unwrap().to_bytes(), "abcd");
    }

    #[test]
    fn nothing_enabled_records_nothing() {
        assert!(
            Arc::new(HttpMetrics::default())
                .start(
                    &SeriesCache::default(),
                    &Method::GET,
                    &Uri::from_static("/"),
                    &HeaderMap::new()
                )
                .is_none()
        );
    }
}
