//! The built proxy: answers each `http` exchange by producing to or fetching from Kafka.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zilla_binding_http::kind::{
    Body, BodyError, HttpHandler, Request, Response, authorization, boxed, empty, full, status_of,
    status_response,
};
use zilla_binding_kafka::kind::{
    Acks, Filter, Header, KafkaHandler, MergedItem, MergedRequest, MergedStream, Message,
    PartitionOffset, ProduceRequest, Start, TopicConfig,
};
use zilla_binding_kafka::progress;
use zilla_engine::binding::{Binding, StartContext};
use zilla_engine::guard::Authorization;
use zilla_engine::limits::deadline_after;
use zilla_engine::pattern::Captures;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};
use zilla_engine::traces::TraceContext;

use crate::etag;
use crate::headers::{Preferences, first, insert, reply_head, request_headers};
use crate::route::{Condition, FetchTarget, ProduceTarget, Scope, Target};
use zilla_binding_kafka::correlation::CorrelationHash;

/// How long a topic's `max.message.bytes` is trusted before it is asked again.
const TOPIC_CONFIG_TTL: Duration = Duration::from_secs(60);
/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";
/// Bytes a record needs besides its key, value and headers (batch and record framing).
const RECORD_OVERHEAD: usize = 128;

/// A built http-kafka proxy.
pub(crate) struct HttpKafkaProxy {
    pub(crate) qname: String,
    pub(crate) namespace: String,
    pub(crate) routes: Routes<Condition, Target, Arc<dyn KafkaHandler>>,
    /// Request header holding the idempotency key.
    pub(crate) idempotency_header: HeaderName,
    /// Kafka header naming the reply topic.
    pub(crate) reply_to_header: Bytes,
    /// Kafka header carrying the correlation id.
    pub(crate) correlation_header: Bytes,
    /// How long to wait for Kafka before answering 504.
    pub(crate) timeout: Duration,
    /// The longest `prefer: wait` honoured.
    pub(crate) maximum_wait: Duration,
    /// How long a synchronous produce waits for its reply after Kafka acknowledged it.
    pub(crate) reply_timeout: Duration,
    /// `max.message.bytes` per topic, with when it was read.
    pub(crate) limits: Mutex<HashMap<String, (Instant, usize)>>,
    /// Cancelled when the gateway shuts down or a reload retires the binding.
    pub(crate) stopping: CancellationToken,
}

impl Binding for HttpKafkaProxy {
    fn start(&self, context: &StartContext) {
        let stopping = self.stopping.clone();
        let retired = context.retired.clone();
        let shutdown = context.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = retired.cancelled() => {}
                _ = shutdown.cancelled() => {}
                _ = stopping.cancelled() => {}
            }
            stopping.cancel();
        });
    }
}

impl HttpHandler for HttpKafkaProxy {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        Box::pin(async move { Ok(self.serve(request).await) })
    }
}

/// A request without its body.
type Head = http::Request<()>;

/// How the next item of a merged read turned out.
enum Next {
    Item(MergedItem),
    Ended,
    TimedOut,
    Failed(StreamError),
}

/// The next item of `stream`, waiting until `deadline` at most, and never past the binding
/// stopping (which fails the read, so long waits end with the gateway).
async fn next(
    stream: &mut MergedStream,
    deadline: Option<Instant>,
    stopping: &CancellationToken,
) -> Next {
    let item = tokio::select! {
        _ = stopping.cancelled() => return Next::Failed(StreamError::Stopped),
        item = stream.next() => item,
        _ = sleep_until(deadline) => return Next::TimedOut,
    };
    match item {
        Some(Ok(item)) => Next::Item(item),
        Some(Err(error)) => Next::Failed(error),
        None => Next::Ended,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl HttpKafkaProxy {
    async fn serve(&self, request: Request) -> Response {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let resolved = self
            .routes
            .resolve_with(authorization(&request), |condition| {
                condition.matches(method.as_str(), &path)
            });
        let Some((route, captures)) = resolved else {
            tracing::debug!(binding = %self.qname, %method, path, "no route");
            return status_response(StatusCode::NOT_FOUND);
        };
        let exit = route.exit.clone();
        // The body is taken apart from the head, which is shared across awaits.
        let (parts, body) = request.into_parts();
        let head = Head::from_parts(parts, ());
        match &route.with {
            Some(Target::Fetch(target)) => {
                self.fetch(exit.as_ref(), target, &captures, &head).await
            }
            Some(Target::Produce(target)) => {
                self.produce(exit.as_ref(), target, &captures, &head, body)
                    .await
            }
            None => status_response(StatusCode::NOT_FOUND),
        }
    }

    fn scope<'a>(
        &'a self,
        captures: &'a Captures,
        authorization: Option<&'a Authorization>,
        idempotency_key: Option<&'a str>,
        correlation_id: Option<&'a str>,
    ) -> Scope<'a> {
        Scope::new(
            captures,
            authorization,
            &self.namespace,
            idempotency_key,
            correlation_id,
        )
    }

    /// Opens a merged read, waiting at most the Kafka timeout.
    async fn open(
        &self,
        exit: &dyn KafkaHandler,
        request: MergedRequest,
    ) -> Result<MergedStream, StatusCode> {
        let topic = request.topic.clone();
        self.within("fetch", &topic, exit.merged(request)).await
    }

    /// Opens the read of `reply_to` for the replies carrying `correlation_id`; `replayable`
    /// reads from the topic's start, so an earlier reply to a retried request is found.
    async fn open_replies(
        &self,
        exit: &dyn KafkaHandler,
        reply_to: String,
        correlation_id: &str,
        replayable: bool,
    ) -> Result<MergedStream, StatusCode> {
        let request = MergedRequest::replies(
            reply_to,
            self.correlation_header.clone(),
            Bytes::copy_from_slice(correlation_id.as_bytes()),
            replayable,
        );
        self.open(exit, request).await
    }

    /// The next item of `stream`, waiting at most the Kafka timeout counted from `opened`.
    async fn next_in_time(&self, stream: &mut MergedStream, opened: Instant) -> Next {
        next(
            stream,
            Some(deadline_after(opened, self.timeout)),
            &self.stopping,
        )
        .await
    }

    /// Opens the latest record per key of `topic` passing `filters`, read from `offsets` on
    /// (from the start where it names no partition): both ways to fetch start here.
    async fn open_latest(
        &self,
        exit: &dyn KafkaHandler,
        topic: String,
        offsets: Vec<PartitionOffset>,
        filters: Vec<Filter>,
    ) -> Result<MergedStream, StatusCode> {
        let request = MergedRequest {
            topic,
            start: Start::Historical,
            offsets,
            filters,
            latest_per_key: true,
            partitions: Vec::new(),
        };
        self.open(exit, request).await
    }

    /// Waits at most the Kafka timeout for one request to Kafka (`what`: `fetch`, `produce`)
    /// on `topic`; a failure is answered with its status, the timeout with `504`.
    async fn within<T>(
        &self,
        what: &str,
        topic: &str,
        request: impl Future<Output = Result<T, StreamError>>,
    ) -> Result<T, StatusCode> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                tracing::debug!(binding = %self.qname, topic, %error, "{what} failed");
                Err(status_of(&error))
            }
            Err(_) => {
                tracing::debug!(binding = %self.qname, topic, "{what} timed out");
                Err(StatusCode::GATEWAY_TIMEOUT)
            }
        }
    }

    // ---- fetch -----------------------------------------------------------------------------

    async fn fetch(
        &self,
        exit: &dyn KafkaHandler,
        target: &FetchTarget,
        captures: &Captures,
        request: &Head,
    ) -> Response {
        let scope = self.scope(captures, authorization(request), None, None);
        let topic = scope.render(&target.topic);
        let filters = target.filters(&scope);
        let headers = request.headers();
        let preferences = Preferences::of(headers, self.maximum_wait);
        let query = FetchQuery {
            topic,
            filters,
            if_none_match: first(headers, IF_NONE_MATCH.as_str()).and_then(etag::parse),
            preferences,
        };
        let result = if target.merge {
            self.fetch_all(exit, query).await
        } else {
            self.fetch_one(exit, query).await
        };
        result.unwrap_or_else(status_response)
    }

    /// The latest record passing the filters: read from the client's tag on (or from the
    /// start), until caught up or, with `prefer: wait`, until something arrives.
    async fn fetch_one(
        &self,
        exit: &dyn KafkaHandler,
        query: FetchQuery,
    ) -> Result<Response, StatusCode> {
        let FetchQuery {
            topic,
            filters,
            if_none_match,
            preferences,
        } = query;
        let offsets = if_none_match
            .as_ref()
            .and_then(|(tag, _)| progress::decode(tag).ok())
            .unwrap_or_default();
        let opened = Instant::now();
        let mut stream = self.open_latest(exit, topic, offsets, filters).await?;
        let catch_up = deadline_after(opened, self.timeout);
        let wait = preferences.wait.map(|wait| deadline_after(opened, wait));
        let mut latest: Option<(Arc<Message>, Arc<[PartitionOffset]>)> = None;
        let mut synced = false;
        loop {
            let deadline = if synced { wait } else { Some(catch_up) };
            match next(&mut stream, deadline, &self.stopping).await {
                Next::Item(MergedItem::Message { message, progress }) => {
                    latest = Some((message, progress));
                    if synced {
                        break;
                    }
                }
                Next::Item(MergedItem::Synced(_)) => {
                    synced = true;
                    if latest.is_some() || wait.is_none_or(|wait| wait <= Instant::now()) {
                        break;
                    }
                }
                Next::Item(MergedItem::Snapshot(_)) => {}
                Next::Ended => break,
                Next::TimedOut if synced => break,
                Next::TimedOut => return Err(StatusCode::GATEWAY_TIMEOUT),
                Next::Failed(error) => return Err(status_of(&error)),
            }
        }
        Ok(match latest {
            Some((message, progress)) => item(&message, &progress),
            None => match if_none_match {
                Some((tag, _)) => {
                    let mut response = status_response(StatusCode::NOT_MODIFIED);
                    insert(response.headers_mut(), ETAG, tag.as_bytes());
                    response
                }
                None => status_response(StatusCode::NOT_FOUND),
            },
        })
    }

    /// Every latest value passing the filters, as one JSON array whose tag is the progress
    /// it reflects. Streamed as the cache replays it when the read deduplicates by key
    /// ([`MergedItem::Snapshot`]), else collected first.
    async fn fetch_all(
        &self,
        exit: &dyn KafkaHandler,
        query: FetchQuery,
    ) -> Result<Response, StatusCode> {
        let opened = Instant::now();
        let mut stream = self
            .open_latest(exit, query.topic.clone(), Vec::new(), query.filters.clone())
            .await?;
        match self.next_in_time(&mut stream, opened).await {
            Next::Item(MergedItem::Snapshot(ends)) => {
                self.stream_all(exit, query, stream, ends, opened).await
            }
            first => self.collect_all(stream, first, query, opened).await,
        }
    }

    /// A collection from a read that brings each key once: the tag is the replay's ends,
    /// known before the first value, so the array is sent as it is read and never held.
    async fn stream_all(
        &self,
        exit: &dyn KafkaHandler,
        query: FetchQuery,
        mut stream: MergedStream,
        mut ends: Arc<[PartitionOffset]>,
        opened: Instant,
    ) -> Result<Response, StatusCode> {
        let known = query
            .if_none_match
            .as_ref()
            .and_then(|(tag, _)| progress::decode(tag).ok())
            .is_some_and(|known| *known == *ends);
        if known {
            let Some(wait) = query.preferences.wait else {
                return Ok(collection_not_modified(&ends));
            };
            // The client holds this collection: it is answered again only once a record
            // past the ends arrives within the wait, and then from a replay of its own.
            let deadline = deadline_after(opened, wait);
            loop {
                match next(&mut stream, Some(deadline), &self.stopping).await {
                    Next::Item(MergedItem::Message { message, .. }) if beyond(&ends, &message) => {
                        break;
                    }
                    Next::Item(_) => {}
                    Next::TimedOut | Next::Ended => return Ok(collection_not_modified(&ends)),
                    Next::Failed(error) => return Err(status_of(&error)),
                }
            }
            drop(stream);
            let reopened = Instant::now();
            stream = self
                .open_latest(exit, query.topic, Vec::new(), query.filters)
                .await?;
            match self.next_in_time(&mut stream, reopened).await {
                Next::Item(MergedItem::Snapshot(now)) => ends = now,
                Next::TimedOut => return Err(StatusCode::GATEWAY_TIMEOUT),
                Next::Failed(error) => return Err(status_of(&error)),
                Next::Item(_) | Next::Ended => return Err(StatusCode::SERVICE_UNAVAILABLE),
            }
        }
        // The first value is waited for before the head goes out, so a cache still fetching
        // the topic's history past the request timeout is a 504, not a cut 200.
        let first = loop {
            match self.next_in_time(&mut stream, opened).await {
                Next::Item(MergedItem::Message { message, .. }) => {
                    if let Some(value) = collected_value(&message) {
                        break Some(value);
                    }
                }
                Next::Item(MergedItem::Synced(_)) => break None,
                Next::Item(MergedItem::Snapshot(_)) => {}
                Next::Ended => return Err(StatusCode::SERVICE_UNAVAILABLE),
                Next::TimedOut => return Err(StatusCode::GATEWAY_TIMEOUT),
                Next::Failed(error) => return Err(status_of(&error)),
            }
        };
        let body = CollectionBody {
            stream,
            gap: self.timeout,
            stopping: self.stopping.clone(),
            state: match first {
                Some(value) => CollectionState::Value(Bytes::from_static(b"["), value),
                None => CollectionState::Last(Bytes::from_static(b"[]")),
            },
        };
        let mut response = Response::new(body.into_body());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        insert(headers, ETAG, progress::encode(&ends, None).as_bytes());
        Ok(response)
    }

    /// A collection from a read that may bring a key more than once (the `client` kind,
    /// topics that are not compacted): the latest value per key is collected until synced,
    /// then sent.
    async fn collect_all(
        &self,
        mut stream: MergedStream,
        first: Next,
        query: FetchQuery,
        opened: Instant,
    ) -> Result<Response, StatusCode> {
        let (if_none_match, preferences) = (query.if_none_match, query.preferences);
        let mut items = Latest::default();
        let mut progress: Arc<[PartitionOffset]> = Arc::new([]);
        let mut item = first;
        loop {
            match item {
                Next::Item(MergedItem::Message { message, .. }) => items.add(message),
                Next::Item(MergedItem::Synced(synced)) => {
                    progress = synced;
                    break;
                }
                Next::Item(MergedItem::Snapshot(_)) => {}
                Next::Ended => break,
                Next::TimedOut => return Err(StatusCode::GATEWAY_TIMEOUT),
                Next::Failed(error) => return Err(status_of(&error)),
            }
            item = self.next_in_time(&mut stream, opened).await;
        }
        let known = if_none_match
            .as_ref()
            .and_then(|(tag, _)| progress::decode(tag).ok())
            .is_some_and(|known| *known == *progress);
        if known {
            let mut changed = false;
            let waited = match preferences.wait {
                Some(wait) => {
                    next(
                        &mut stream,
                        Some(deadline_after(opened, wait)),
                        &self.stopping,
                    )
                    .await
                }
                None => Next::TimedOut,
            };
            match waited {
                Next::Item(MergedItem::Message {
                    message,
                    progress: after,
                }) => {
                    items.add(message);
                    progress = after;
                    changed = true;
                    // Take what arrived together with the change, without waiting for more.
                    while let Some(Some(Ok(item))) = stream.next().now_or_never() {
                        if let MergedItem::Message {
                            message,
                            progress: after,
                        } = item
                        {
                            items.add(message);
                            progress = after;
                        }
                    }
                }
                Next::Failed(error) => return Err(status_of(&error)),
                Next::Item(MergedItem::Synced(_) | MergedItem::Snapshot(_))
                | Next::Ended
                | Next::TimedOut => {}
            }
            if !changed {
                return Ok(collection_not_modified(&progress));
            }
        }
        let mut response = Response::new(items.into_json_array());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        insert(headers, ETAG, progress::encode(&progress, None).as_bytes());
        Ok(response)
    }

    // ---- produce ---------------------------------------------------------------------------

    async fn produce(
        &self,
        exit: &dyn KafkaHandler,
        target: &ProduceTarget,
        captures: &Captures,
        request: &Head,
        body: Body,
    ) -> Response {
        if request.method() == Method::GET
            && let Some(correlation_id) = target.async_correlation_id(request.uri().path())
        {
            return self
                .correlate(exit, target, captures, request, &correlation_id)
                .await
                .unwrap_or_else(status_response);
        }
        self.produce_record(exit, target, captures, request, body)
            .await
            .unwrap_or_else(status_response)
    }

    async fn produce_record(
        &self,
        exit: &dyn KafkaHandler,
        target: &ProduceTarget,
        captures: &Captures,
        request: &Head,
        body: Body,
    ) -> Result<Response, StatusCode> {
        let given_key =
            first(request.headers(), self.idempotency_header.as_str()).map(str::to_owned);
        let replayable = given_key.is_some();
        let idempotency_key = given_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let guarded = authorization(request);
        let scope = self.scope(captures, guarded, Some(&idempotency_key), None);
        let topic = scope.render(&target.topic);
        let key = target
            .key
            .as_ref()
            .map(|key| Bytes::from(scope.render(key)));
        let reply_to = target
            .reply_to
            .as_ref()
            .map(|reply_to| scope.render(reply_to));
        let overrides: Vec<(Bytes, Bytes)> = target
            .overrides
            .iter()
            .map(|(name, value)| (name.clone(), Bytes::from(scope.render(value))))
            .collect();
        let copied = match reply_to {
            Some(_) => request_headers(request),
            None => Vec::new(),
        };
        let preferences = Preferences::of(request.headers(), self.maximum_wait);
        let deleting = request.method() == Method::DELETE;
        let content_type = request.headers().get(CONTENT_TYPE).cloned();
        let traceparent = trace_context(request.headers());

        let limit = self.max_message_bytes(exit, &topic).await?;
        let declared = first(request.headers(), CONTENT_LENGTH.as_str())
            .and_then(|length| length.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        let body = read_body(body, limit).await?;

        let draft = Draft {
            topic,
            key,
            copied,
            reply_to: reply_to
                .clone()
                .map(|topic| (self.reply_to_header.clone(), topic)),
            content_type: content_type.map(|value| Bytes::copy_from_slice(value.as_bytes())),
            traceparent,
            overrides,
            body,
            deleting,
            correlation_header: target
                .correlation_header
                .clone()
                .unwrap_or_else(|| self.correlation_header.clone()),
            acks: target.acks,
        };
        let (record, correlation_id) = draft.into_record(&idempotency_key);
        if record_size(&record) > limit {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }

        let Some(reply_to) = reply_to else {
            self.send(exit, record).await?;
            return Ok(status_response(StatusCode::NO_CONTENT));
        };
        if preferences.respond_async && !target.async_headers.is_empty() {
            self.send(exit, record).await?;
            let scope = self.scope(captures, guarded, None, Some(&correlation_id));
            return Ok(self.accepted(target, &scope));
        }

        // Sync: read the reply topic before producing, so the reply cannot be missed. A
        // client-chosen idempotency key may be a retry, whose reply is already there.
        let opened = Instant::now();
        let mut replies = self
            .open_replies(exit, reply_to, &correlation_id, replayable)
            .await?;
        let mut reply = None;
        loop {
            match self.next_in_time(&mut replies, opened).await {
                Next::Item(MergedItem::Message { message, .. }) => {
                    reply.get_or_insert(message);
                }
                Next::Item(MergedItem::Synced(_)) => break,
                Next::Item(MergedItem::Snapshot(_)) => {}
                Next::Ended => return Err(StatusCode::SERVICE_UNAVAILABLE),
                Next::TimedOut => return Err(StatusCode::GATEWAY_TIMEOUT),
                Next::Failed(error) => return Err(status_of(&error)),
            }
        }
        self.send(exit, record).await?;
        let produced = Instant::now();
        let reply = match reply {
            Some(reply) => reply,
            None => loop {
                let deadline = deadline_after(produced, self.reply_timeout);
                match next(&mut replies, Some(deadline), &self.stopping).await {
                    Next::Item(MergedItem::Message { message, .. }) => break message,
                    Next::Item(MergedItem::Synced(_) | MergedItem::Snapshot(_)) => {}
                    Next::TimedOut => {
                        tracing::debug!(binding = %self.qname, "no reply in time: 504");
                        return Err(StatusCode::GATEWAY_TIMEOUT);
                    }
                    Next::Ended => return Err(StatusCode::SERVICE_UNAVAILABLE),
                    Next::Failed(error) => return Err(status_of(&error)),
                }
            },
        };
        Ok(self.replied(&reply))
    }

    /// A `GET` on an async location: the reply when it is there (or arrives within
    /// `prefer: wait`), else `202` with the location again.
    async fn correlate(
        &self,
        exit: &dyn KafkaHandler,
        target: &ProduceTarget,
        captures: &Captures,
        request: &Head,
        correlation_id: &str,
    ) -> Result<Response, StatusCode> {
        let scope = self.scope(captures, authorization(request), None, Some(correlation_id));
        let Some(reply_to) = target.reply_to.as_ref().map(|r| scope.render(r)) else {
            return Err(StatusCode::NOT_FOUND);
        };
        let preferences = Preferences::of(request.headers(), self.maximum_wait);
        let opened = Instant::now();
        let mut replies = self
            .open_replies(exit, reply_to, correlation_id, true)
            .await?;
        let wait = preferences.wait.map(|wait| deadline_after(opened, wait));
        let mut synced = false;
        loop {
            let deadline = if synced {
                wait
            } else {
                Some(deadline_after(opened, self.timeout))
            };
            match next(&mut replies, deadline, &self.stopping).await {
                Next::Item(MergedItem::Message { message, .. }) => {
                    return Ok(self.replied(&message));
                }
                Next::Item(MergedItem::Synced(_)) => {
                    synced = true;
                    if wait.is_none_or(|wait| wait <= Instant::now()) {
                        break;
                    }
                }
                Next::Item(MergedItem::Snapshot(_)) => {}
                Next::Ended => break,
                Next::TimedOut if synced => break,
                Next::TimedOut => return Err(StatusCode::GATEWAY_TIMEOUT),
                Next::Failed(error) => return Err(status_of(&error)),
            }
        }
        Ok(self.accepted(target, &scope))
    }

    /// `202 Accepted` with the route's async headers.
    fn accepted(&self, target: &ProduceTarget, scope: &Scope<'_>) -> Response {
        let mut response = status_response(StatusCode::ACCEPTED);
        let headers = response.headers_mut();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        for (name, template) in &target.async_headers {
            insert(headers, name.clone(), scope.render(template).as_bytes());
        }
        response
    }

    /// The HTTP response a reply record makes.
    fn replied(&self, reply: &Message) -> Response {
        let (status, headers) = reply_head(reply, &self.correlation_header);
        let body = match (status, &reply.value) {
            (StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED, _) | (_, None) => empty(),
            (_, Some(value)) => full(value.clone()),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// Produces `record`, waiting at most the Kafka timeout for its acknowledgement.
    async fn send(
        &self,
        exit: &dyn KafkaHandler,
        record: ProduceRequest,
    ) -> Result<(), StatusCode> {
        let topic = record.topic.clone();
        self.within("produce", &topic, exit.produce(record))
            .await
            .map(|_| ())
    }

    /// The topic's `max.message.bytes`, asked of Kafka at most once a minute. When Kafka does
    /// not say, Kafka's default applies.
    async fn max_message_bytes(
        &self,
        exit: &dyn KafkaHandler,
        topic: &str,
    ) -> Result<usize, StatusCode> {
        let cached = self
            .limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(topic)
            .filter(|(read, _)| read.elapsed() < TOPIC_CONFIG_TTL)
            .map(|(_, limit)| *limit);
        if let Some(limit) = cached {
            return Ok(limit);
        }
        let default = TopicConfig::default().max_message_bytes;
        match tokio::time::timeout(self.timeout, exit.describe(topic)).await {
            Ok(Ok(config)) => {
                let limit = usize::try_from(config.max_message_bytes.max(0)).unwrap_or(usize::MAX);
                self.limits
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(topic.to_owned(), (Instant::now(), limit));
                Ok(limit)
            }
            Ok(Err(error)) => {
                tracing::debug!(binding = %self.qname, topic, %error, "topic config unknown");
                Ok(usize::try_from(default).unwrap_or(usize::MAX))
            }
            Err(_) => Err(StatusCode::GATEWAY_TIMEOUT),
        }
    }
}

/// What a fetch asks for: the topic and filters its route gives, and the client's
/// `if-none-match` (a tag and its trailing part) and `prefer`.
struct FetchQuery {
    topic: String,
    filters: Vec<Filter>,
    if_none_match: Option<(String, Option<String>)>,
    preferences: Preferences,
}

/// The request's `traceparent`, when it is a valid W3C trace context: whatever else a client
/// sends under the name is left out of the record.
fn trace_context(headers: &http::HeaderMap) -> Option<Bytes> {
    headers
        .get(TRACEPARENT)
        .filter(|value| TraceContext::parse(value.as_bytes()).is_some())
        .map(|value| Bytes::copy_from_slice(value.as_bytes()))
}

/// What a produced record is made of, before the correlation id is known.
struct Draft {
    topic: String,
    key: Option<Bytes>,
    /// The request's headers ([`request_headers`]); used only when replying.
    copied: Vec<(Bytes, Bytes)>,
    /// The reply-to header name and the reply topic.
    reply_to: Option<(Bytes, String)>,
    content_type: Option<Bytes>,
    /// The request's W3C trace context, carried on to the record so that consumers join the
    /// trace.
    traceparent: Option<Bytes>,
    overrides: Vec<(Bytes, Bytes)>,
    body: Bytes,
    deleting: bool,
    correlation_header: Bytes,
    acks: Acks,
}

impl Draft {
    /// The record and its correlation id. With a reply topic, the record carries the request
    /// headers, the reply topic, the overrides and, last, the correlation id; without, only
    /// the content type, the `traceparent` and the overrides, and a `DELETE` is a tombstone.
    /// Trace context headers are not part of the correlation id: each attempt of a request
    /// has its own span, and a retry must still find the first attempt's reply.
    fn into_record(self, idempotency_key: &str) -> (ProduceRequest, String) {
        let mut hash = CorrelationHash::default();
        if let Some(key) = &self.key {
            hash.update(key);
        }
        let mut headers = Vec::new();
        match &self.reply_to {
            Some((reply_to_header, reply_to)) => {
                // Only the part of the tag after `/` (the record's own tag) goes to Kafka.
                let if_match = self
                    .copied
                    .iter()
                    .find(|(name, _)| name.as_ref() == IF_MATCH.as_str().as_bytes())
                    .and_then(|(_, value)| std::str::from_utf8(value).ok())
                    .and_then(etag::parse)
                    .and_then(|(_, suffix)| suffix);
                for (name, value) in self.copied {
                    let value = match name.as_ref() {
                        b"content-length" | b"prefer" => continue,
                        b"if-match" => match &if_match {
                            Some(suffix) => Bytes::from(suffix.clone()),
                            None => continue,
                        },
                        _ => value,
                    };
                    if !matches!(name.as_ref(), b"traceparent" | b"tracestate") {
                        hash.header(&name, &value);
                    }
                    headers.push(Header::new(name, value));
                }
                hash.header(reply_to_header, reply_to.as_bytes());
                headers.push(Header::new(reply_to_header.clone(), reply_to.clone()));
            }
            None => {
                if let Some(content_type) = self.content_type {
                    headers.push(Header::new(
                        Bytes::from_static(b"content-type"),
                        content_type,
                    ));
                }
                if let Some(traceparent) = self.traceparent {
                    headers.push(Header::new(Bytes::from_static(b"traceparent"), traceparent));
                }
            }
        }
        for (name, value) in self.overrides {
            hash.header(&name, &value);
            headers.push(Header::new(name, value));
        }
        hash.update(&self.body);
        let correlation_id = hash.finish(idempotency_key);
        if self.reply_to.is_some() {
            headers.push(Header::new(self.correlation_header, correlation_id.clone()));
        }
        let value = if self.deleting && self.reply_to.is_none() {
            None
        } else {
            Some(self.body)
        };
        let record = ProduceRequest {
            topic: self.topic,
            key: self.key,
            value,
            headers,
            acks: self.acks,
            ..ProduceRequest::default()
        };
        (record, correlation_id)
    }
}

/// The body, refusing more than `limit` bytes.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, StatusCode> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::debug!(%error, "request body failed");
            StatusCode::BAD_REQUEST
        })?;
        if let Ok(data) = frame.into_data() {
            length += data.len();
            if length > limit {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            chunks.push(data);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// About what `record` takes in a record batch.
fn record_size(record: &ProduceRequest) -> usize {
    RECORD_OVERHEAD
        + record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + record
            .headers
            .iter()
            .map(|header| header.name.len() + header.value.as_ref().map_or(0, Bytes::len) + 2)
            .sum::<usize>()
}

/// The answer for one record: its value (`200`, or `204` when empty) with its content type
/// and tag, or `404` for a tombstone.
fn item(message: &Message, progress: &[PartitionOffset]) -> Response {
    let Some(value) = &message.value else {
        return status_response(StatusCode::NOT_FOUND);
    };
    let mut response = if value.is_empty() {
        status_response(StatusCode::NO_CONTENT)
    } else {
        Response::new(full(value.clone()))
    };
    let headers = response.headers_mut();
    if let Some(content_type) = message.header(b"content-type") {
        insert(headers, CONTENT_TYPE, content_type);
    }
    let tag = progress::encode(progress, message.header(b"etag").map(Bytes::as_ref));
    insert(headers, ETAG, tag.as_bytes());
    response
}

/// `304` for a collection whose tag is `progress`.
fn collection_not_modified(progress: &[PartitionOffset]) -> Response {
    let mut response = status_response(StatusCode::NOT_MODIFIED);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    insert(headers, ETAG, progress::encode(progress, None).as_bytes());
    response
}

/// Whether `message` lies past the `ends` a replay reads up to: a change since the replay
/// began.
fn beyond(ends: &[PartitionOffset], message: &Message) -> bool {
    ends.iter()
        .find(|end| end.partition == message.partition)
        .is_none_or(|end| message.offset >= end.offset)
}

/// The value a record adds to a collection: none for deletes (tombstones) and empty values.
fn collected_value(message: &Message) -> Option<Bytes> {
    message.value.clone().filter(|value| !value.is_empty())
}

/// What a streamed collection sends next.
enum CollectionState {
    /// A separator (`[` or `,`), then a value.
    Value(Bytes, Bytes),
    /// A value whose separator went out.
    Pending(Bytes),
    /// Waiting for the replay's next record.
    Reading,
    /// The closing bytes, then the end.
    Last(Bytes),
    Done,
}

/// The body of a streamed collection: `[` value `,` value … `]`, each value sent as the
/// replay brings it (the cached bytes, not copied). A replay that fails, ends early or brings
/// nothing for the request timeout cuts the body, so the client sees an incomplete response
/// rather than a short array.
struct CollectionBody {
    stream: MergedStream,
    /// The longest wait for the replay's next record.
    gap: Duration,
    stopping: CancellationToken,
    state: CollectionState,
}

impl CollectionBody {
    fn into_body(self) -> Body {
        let frames = futures_util::stream::unfold(self, |mut body| async move {
            let chunk = body.advance().await?;
            Some((chunk.map(Frame::data), body))
        });
        boxed(http_body_util::StreamBody::new(frames))
    }

    async fn advance(&mut self) -> Option<Result<Bytes, BodyError>> {
        loop {
            match std::mem::replace(&mut self.state, CollectionState::Reading) {
                CollectionState::Value(separator, value) => {
                    self.state = CollectionState::Pending(value);
                    return Some(Ok(separator));
                }
                CollectionState::Pending(value) => return Some(Ok(value)),
                CollectionState::Last(bytes) => {
                    self.state = CollectionState::Done;
                    return Some(Ok(bytes));
                }
                CollectionState::Done => {
                    self.state = CollectionState::Done;
                    return None;
                }
                CollectionState::Reading => {}
            }
            let deadline = Instant::now() + self.gap;
            let error: BodyError =
                match next(&mut self.stream, Some(deadline), &self.stopping).await {
                    Next::Item(MergedItem::Message { message, .. }) => {
                        if let Some(value) = collected_value(&message) {
                            self.state = CollectionState::Value(Bytes::from_static(b","), value);
                        }
                        continue;
                    }
                    Next::Item(MergedItem::Synced(_)) => {
                        self.state = CollectionState::Last(Bytes::from_static(b"]"));
                        continue;
                    }
                    Next::Item(MergedItem::Snapshot(_)) => continue,
                    Next::Ended => "the collection's read ended before it was complete".into(),
                    Next::TimedOut => {
                        format!("no record of the collection within {:?}", self.gap).into()
                    }
                    Next::Failed(error) => Box::new(error),
                };
            tracing::debug!(%error, "collection cut");
            self.state = CollectionState::Done;
            return Some(Err(error));
        }
    }
}

/// The latest value per key, in the order the latest values arrived; deletes (tombstones) and
/// empty values leave nothing.
#[derive(Default)]
struct Latest {
    entries: Vec<Option<Arc<Message>>>,
    by_key: HashMap<Bytes, usize>,
}

impl Latest {
    fn add(&mut self, message: Arc<Message>) {
        if let Some(key) = &message.key
            && let Some(index) = self.by_key.remove(key)
        {
            self.entries[index] = None;
        }
        if collected_value(&message).is_some() {
            if let Some(key) = &message.key {
                self.by_key.insert(key.clone(), self.entries.len());
            }
            self.entries.push(Some(message));
        }
    }

    fn values(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.entries
            .iter()
            .flatten()
            .filter_map(|message| message.value.clone())
    }

    /// `[` value `,` value … `]`, sent as a stream of the cached values (not copied).
    fn into_json_array(self) -> Body {
        let mut chunks = Vec::with_capacity(2 * self.by_key.len() + 2);
        chunks.push(Bytes::from_static(b"["));
        for (index, value) in self.values().enumerate() {
            if index > 0 {
                chunks.push(Bytes::from_static(b","));
            }
            chunks.push(value);
        }
        chunks.push(Bytes::from_static(b"]"));
        let frames = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))),
        );
        boxed(http_body_util::StreamBody::new(frames))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn message(offset: i64, key: Option<&str>, value: Option<&str>) -> Arc<Message> {
        Arc::new(Message {
            partition: 0,
            offset,
            timestamp: 0,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        })
    }

    async fn text(body: Body) -> String {
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn draft(request: &Head, body: &str, deleting: bool, replying: bool) -> Draft {
        Draft {
            topic: "items-commands".into(),
            key: Some(Bytes::from_static(b"92d0bf92-63e0-4cfc-ae73-71dee92d1544")),
            copied: request_headers(request),
            reply_to: replying.then(|| {
                (
                    Bytes::from_static(b"zilla:reply-to"),
                    "items-replies".to_owned(),
                )
            }),
            content_type: request
                .headers()
                .get(CONTENT_TYPE)
                .map(|value| Bytes::copy_from_slice(value.as_bytes())),
            traceparent: trace_context(request.headers()),
            overrides: vec![(
                Bytes::from_static(b"zilla:identity"),
                Bytes::from_static(b"test"),
            )],
            body: Bytes::copy_from_slice(body.as_bytes()),
            deleting,
            correlation_header: Bytes::from_static(b"zilla:correlation-id"),
            acks: Acks::Leader,
        }
    }

    fn names(record: &ProduceRequest) -> Vec<(String, String)> {
        record
            .headers
            .iter()
            .map(|header| {
                (
                    String::from_utf8_lossy(&header.name).into_owned(),
                    String::from_utf8_lossy(header.value.as_deref().unwrap_or_default())
                        .into_owned(),
                )
            })
            .collect()
    }

    /// A request's `traceparent` reaches the record, and two attempts of one request (each
    /// with its own span) still share their correlation id.
    #[test]
    fn trace_context_goes_to_the_record_but_not_into_the_correlation_id() {
        let request = |span: &str| {
            http::Request::builder()
                .method("POST")
                .uri("http://example.com/items")
                .header("content-type", "application/json")
                .header("idempotency-key", "k-1")
                .header(
                    "traceparent",
                    format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01"),
                )
                .body(())
                .unwrap()
        };
        let first = request("00f067aa0ba902b7");
        let second = request("b7ad6b7169203331");
        for replying in [false, true] {
            let (record, first_id) = draft(&first, "{}", false, replying).into_record("k-1");
            let (_, second_id) = draft(&second, "{}", false, replying).into_record("k-1");
            assert_eq!(first_id, second_id, "replying: {replying}");
            let traced: Vec<_> = names(&record)
                .into_iter()
                .filter(|(name, _)| name == "traceparent")
                .collect();
            assert_eq!(
                traced,
                vec![(
                    "traceparent".to_owned(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()
                )],
                "replying: {replying}"
            );
        }
    }

    /// A `traceparent` that is not a W3C trace context is not written to the record.
    #[test]
    fn an_invalid_traceparent_stays_out_of_the_record() {
        for value in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let request = http::Request::builder()
                .method("POST")
                .uri("http://example.com/items")
                .header("traceparent", value)
                .body(())
                .unwrap();
            let (record, _) = draft(&request, "{}", false, false).into_record("k-1");
            assert!(
                names(&record).iter().all(|(name, _)| name != "traceparent"),
                "{value}"
            );
        }
    }

    /// The records Zilla's conformance scripts expect for the same requests (HTTP/2 heads).
    #[test]
    fn records_match_zilla() {
        let delete = http::Request::builder()
            .method("DELETE")
            .version(http::Version::HTTP_2)
            .uri("https://example.com:9090/items/92d0bf92-63e0-4cfc-ae73-71dee92d1544")
            .header("if-match", "AQQABAIC/revision=42")
            .header("idempotency-key", "7101a8ea-5745-43c8-8d0c-b2f9baba7004")
            .body(())
            .unwrap();
        let (record, correlation_id) =
            draft(&delete, "", true, true).into_record("7101a8ea-5745-43c8-8d0c-b2f9baba7004");
        assert_eq!(
            correlation_id,
            "7101a8ea-5745-43c8-8d0c-b2f9baba7004-fefb91820c229ec5b1459da0ab6bc515"
        );
        let expected: Vec<(String, String)> = [
            (":method", "DELETE"),
            (":scheme", "https"),
            (":authority", "example.com:9090"),
            (":path", "/items/92d0bf92-63e0-4cfc-ae73-71dee92d1544"),
            ("if-match", "revision=42"),
            ("idempotency-key", "7101a8ea-5745-43c8-8d0c-b2f9baba7004"),
            ("zilla:reply-to", "items-replies"),
            ("zilla:identity", "test"),
            ("zilla:correlation-id", correlation_id.as_str()),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(names(&record), expected);
        assert_eq!(
            record.value.as_deref(),
            Some(&b""[..]),
            "a replied delete is empty"
        );

        let put = http::Request::builder()
            .method("PUT")
            .version(http::Version::HTTP_2)
            .uri("https://example.com:9090/items/92d0bf92-63e0-4cfc-ae73-71dee92d1544")
            .header("content-type", "application/json")
            .header("content-length", "20")
            .header("idempotency-key", "3f96592e-c8f1-4167-8c46-85f2aabb70a5")
            .header("prefer", "wait=5")
            .body(())
            .unwrap();
        let body = "{ \"name\": \"widget\" }";
        let (_, correlation_id) =
            draft(&put, body, false, true).into_record("3f96592e-c8f1-4167-8c46-85f2aabb70a5");
        assert_eq!(
            correlation_id,
            "3f96592e-c8f1-4167-8c46-85f2aabb70a5-ee284177921a96f23e9b3166f12ca058"
        );

        // Without a reply topic: the content type and the overrides only.
        let (record, _) = draft(&put, body, false, false).into_record("k");
        assert_eq!(
            names(&record),
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("zilla:identity".to_owned(), "test".to_owned())
            ]
        );
        let (record, _) = draft(&delete, "", true, false).into_record("k");
        assert_eq!(record.value, None, "a one-way delete is a tombstone");
    }

    #[tokio::test]
    async fn collections_keep_the_latest_value_per_key() {
        let mut latest = Latest::default();
        latest.add(message(0, Some("a"), Some("1")));
        latest.add(message(1, Some("b"), Some("2")));
        latest.add(message(2, Some("a"), Some("3")));
        latest.add(message(3, Some("c"), Some("4")));
        latest.add(message(4, Some("b"), None));
        latest.add(message(5, None, Some("5")));
        latest.add(message(6, Some("d"), Some("")));
        assert_eq!(text(latest.into_json_array()).await, "[3,4,5]");
        assert_eq!(text(Latest::default().into_json_array()).await, "[]");
    }

    #[tokio::test]
    async fn items_answer_with_value_type_and_tag() {
        let progress = [
            PartitionOffset {
                partition: 0,
                offset: 2,
            },
            PartitionOffset {
                partition: 1,
                offset: 1,
            },
        ];
        let mut record = (*message(1, Some("k"), Some("{ \"name\": \"gadget\" }"))).clone();
        record.headers = vec![
            Header::new("content-type", "application/json"),
            Header::new("etag", "revision=42"),
        ];
        let response = item(&record, &progress);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["etag"], "AQQABAIC/revision=42");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(text(response.into_body()).await, "{ \"name\": \"gadget\" }");
        let deleted = item(&message(2, Some("k"), None), &progress);
        assert_eq!(deleted.status(), StatusCode::NOT_FOUND);
        let empty = item(&message(2, Some("k"), Some("")), &progress);
        assert_eq!(empty.status(), StatusCode::NO_CONTENT);
        assert_eq!(empty.headers()["etag"], "AQQABAIC");
    }
}
