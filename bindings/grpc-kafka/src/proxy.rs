//! The built proxy: answers each `grpc` call by producing to or fetching from Kafka.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use zilla_binding_grpc::config::{MethodCondition, route_of};
use zilla_binding_grpc::kind::{ResponseSender, response_channel};
use zilla_binding_grpc::metadata::encode_binary;
use zilla_binding_grpc::{
    Code, GrpcHandler, GrpcRequest, GrpcResponse, MessageStream, Metadata, MetadataValue,
    ResponseItem, Status,
};
use zilla_binding_kafka::correlation::CorrelationHash;
use zilla_binding_kafka::kind::{
    Acks, Header, KafkaHandler, MergedItem, MergedRequest, MergedStream, Message, ProduceRequest,
    Start,
};
use zilla_engine::binding::{Binding, StartContext};
use zilla_engine::expr::{Expression, ExpressionContext, RouteScope};
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::message_id;
use crate::route::{FetchTarget, ProduceTarget, Target};

/// The prefix of the Kafka headers that carry gRPC metadata.
pub const META_PREFIX: &str = "meta:";
/// The reply header holding the final grpc-status.
pub const STATUS_HEADER: &[u8] = b"zilla:status";
/// The reply header holding the final grpc-message.
pub const MESSAGE_HEADER: &[u8] = b"zilla:message";

/// gRPC routes capture no `{param}`.
static NO_CAPTURES: zilla_engine::pattern::Captures = Vec::new();

/// Response items held for a client that has not read them yet.
const RESPONSE_CAPACITY: usize = 16;

/// The Kafka header names of `options.correlation.headers` (shared with `kafka-grpc`).
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// Names the gRPC service.
    pub service: Bytes,
    /// Names the gRPC method.
    pub method: Bytes,
    /// Carries the correlation id.
    pub correlation_id: Bytes,
    /// Names the reply topic.
    pub reply_to: Bytes,
}

impl From<crate::config::CorrelationHeaders> for HeaderNames {
    fn from(headers: crate::config::CorrelationHeaders) -> Self {
        Self {
            service: Bytes::from(headers.service),
            method: Bytes::from(headers.method),
            correlation_id: Bytes::from(headers.correlation_id),
            reply_to: Bytes::from(headers.reply_to),
        }
    }
}

/// A built grpc-kafka proxy.
pub(crate) struct GrpcKafkaProxy {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) routes: Routes<MethodCondition, Target, Arc<dyn KafkaHandler>>,
    /// The reliability field number.
    pub(crate) field: u32,
    /// The metadata a client's last message id comes in.
    pub(crate) last_message_id: String,
    /// The metadata the idempotency key comes in.
    pub(crate) idempotency: String,
    pub(crate) headers: HeaderNames,
    /// Cancelled when the binding stops taking new work (shutdown, or a reload replaced
    /// it): fetches end there, and their clients resume elsewhere with their last id.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when calls still in progress must end.
    pub(crate) retired: CancellationToken,
}

impl Binding for GrpcKafkaProxy {
    fn start(&self, context: &StartContext) {
        context.forward_to(self.stopping.clone(), self.retired.clone());
    }
}

impl GrpcHandler for GrpcKafkaProxy {
    fn call(&self, request: GrpcRequest) -> BoxFuture<'_, Result<GrpcResponse, Status>> {
        Box::pin(self.serve(request))
    }
}

/// The Kafka failure of a call as a status.
fn kafka_status(error: &StreamError) -> Status {
    Status::from_stream_error(error)
}

/// A value a route expression cannot give for this call (a guard without a session).
fn denied() -> Status {
    Status::new(Code::PermissionDenied, "not authorized for this topic")
}

impl GrpcKafkaProxy {
    async fn serve(&self, request: GrpcRequest) -> Result<GrpcResponse, Status> {
        let route = route_of(&self.routes, &request)?;
        let exit = route.exit.clone();
        match &route.with {
            Some(Target::Fetch(target)) => self.fetch(exit, target, request).await,
            Some(Target::Produce(target)) => self.produce(exit, target, request).await,
            None => Err(Status::new(Code::Unimplemented, "route has no `with`")),
        }
    }

    /// What a call's expressions read: its guard sessions (gRPC routes capture nothing).
    fn scope<'a>(&'a self, request: &'a GrpcRequest) -> RouteScope<'a> {
        RouteScope {
            captures: &NO_CAPTURES,
            authorization: request.authorization(),
            namespace: &self.namespace,
        }
    }

    fn evaluate(
        &self,
        expression: &Expression,
        context: &dyn ExpressionContext,
    ) -> Result<String, Status> {
        expression.evaluate(context).ok_or_else(denied)
    }

    // ---- fetch -----------------------------------------------------------------------------

    /// Streams the topic's records (from the client's last message id on, else from the
    /// start), each message carrying its id.
    async fn fetch(
        &self,
        exit: Arc<dyn KafkaHandler>,
        target: &FetchTarget,
        request: GrpcRequest,
    ) -> Result<GrpcResponse, Status> {
        let context = self.scope(&request);
        let topic = self.evaluate(&target.topic, &context)?;
        let filters = target
            .filters
            .iter()
            .map(|filter| filter.evaluate(&context))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(denied)?;
        let offsets = match request.metadata.get(&self.last_message_id) {
            Some(MetadataValue::Text(text)) => message_id::resume_offsets(Ok(text.as_str())),
            Some(MetadataValue::Binary(raw)) => message_id::resume_offsets(Err(raw.as_ref())),
            None => Vec::new(),
        };
        tracing::debug!(binding = %self.name, topic, resume = !offsets.is_empty(), "fetch");
        let records = exit
            .merged(MergedRequest {
                topic,
                start: Start::Historical,
                offsets,
                filters,
                latest_per_key: false,
                partitions: Vec::new(),
            })
            .await
            .map_err(|error| kafka_status(&error))?;
        let field = self.field;
        let stopping = self.stopping.clone();
        let messages = records
            .filter_map(move |item| {
                std::future::ready(match item {
                    Ok(MergedItem::Message { message, progress }) => {
                        let value = message.value.as_deref().unwrap_or_default();
                        Some(Ok(message_id::append(field, value, &progress)))
                    }
                    Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_)) => None,
                    Err(error) => Some(Err(kafka_status(&error))),
                })
            })
            .take_until(stopping.cancelled_owned())
            .chain(futures_util::stream::once(async {
                // Only a read that ended (the binding stopping) gets here.
                Err::<Bytes, Status>(Status::new(Code::Unavailable, "the gateway is stopping"))
            }));
        Ok(GrpcResponse::from_messages(Box::pin(messages)))
    }

    // ---- produce ---------------------------------------------------------------------------

    /// Produces each request message as one record, then the end of the request; with a
    /// reply topic, answers with the replies correlated with the request.
    async fn produce(
        &self,
        exit: Arc<dyn KafkaHandler>,
        target: &ProduceTarget,
        request: GrpcRequest,
    ) -> Result<GrpcResponse, Status> {
        let given_key = request
            .metadata
            .get(&self.idempotency)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let replayable = given_key.is_some();
        let idempotency_key = given_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let context = self.scope(&request);
        let topic = self.evaluate(&target.topic, &context)?;
        let key = target
            .key
            .as_ref()
            .map(|key| self.evaluate(key, &context))
            .transpose()?;
        let overrides = target
            .overrides
            .iter()
            .map(|(name, value)| Ok((name.clone(), Bytes::from(self.evaluate(value, &context)?))))
            .collect::<Result<Vec<_>, Status>>()?;
        let reply_to = target
            .reply_to
            .as_ref()
            .map(|reply_to| self.evaluate(reply_to, &context))
            .transpose()?;
        let draft = Draft::new(
            &self.headers,
            &request,
            overrides,
            reply_to.as_deref(),
            &idempotency_key,
        );
        let records = Records {
            topic,
            key: Bytes::from(key.unwrap_or_else(|| draft.correlation_id.clone())),
            acks: target.acks,
            draft,
        };
        let Some(reply_to) = reply_to else {
            records
                .send_all(exit.as_ref(), request.messages, &CancellationToken::new())
                .await?;
            let reply: MessageStream =
                Box::pin(futures_util::stream::once(async { Ok(Bytes::new()) }));
            return Ok(GrpcResponse::from_messages(reply));
        };

        // Read the reply topic before producing, so no reply can be missed. A client-chosen
        // idempotency key may be a retry, whose replies are already there.
        let correlation_id = records.draft.correlation_id.clone();
        let mut replies = exit
            .merged(MergedRequest::replies(
                reply_to,
                self.headers.correlation_id.clone(),
                Bytes::from(correlation_id),
                replayable,
            ))
            .await
            .map_err(|error| kafka_status(&error))?;
        if !replayable {
            wait_synced(&mut replies).await?;
        }
        let unary = request.server_streaming == Some(false);
        let (head_sender, head) = oneshot::channel();
        let (items, response) = response_channel(RESPONSE_CAPACITY);
        let messages = request.messages;
        let deadline = request.deadline;
        let retired = self.retired.clone();
        // The request is produced by a task of its own, so a call that ends early (the client
        // cancelled, the deadline passed, the gateway stops) still ends its request in Kafka,
        // as broken off, and the service side lets go of it.
        let abandoned = CancellationToken::new();
        let producer = {
            let abandoned = abandoned.clone();
            tokio::spawn(async move { records.send_all(exit.as_ref(), messages, &abandoned).await })
        };
        tokio::spawn(async move {
            let producing = async {
                let result = producer.await.unwrap_or_else(|_| {
                    Err(Status::new(Code::Internal, "the request producer failed"))
                });
                // Once everything is produced, only the replies are left to wait for.
                if result.is_ok() {
                    std::future::pending::<()>().await;
                }
                result
            };
            tokio::select! {
                () = relay(replies, head_sender, &items, producing, unary) => {}
                () = items.closed() => {}
                () = until(deadline) => {
                    let _ = items.send(ResponseItem::Status(Status::new(Code::DeadlineExceeded, "deadline exceeded"))).await;
                }
                () = retired.cancelled() => {
                    let _ = items.send(ResponseItem::Status(Status::new(Code::Unavailable, "the gateway is stopping"))).await;
                }
            }
            abandoned.cancel();
        });
        match head.await {
            Ok(Ok(metadata)) => Ok(GrpcResponse {
                metadata,
                items: response,
            }),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::new(Code::Unavailable, "the gateway is stopping")),
        }
    }
}

/// Waits until `deadline`; forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits until a live read of the reply topic is positioned at its end.
async fn wait_synced(replies: &mut MergedStream) -> Result<(), Status> {
    loop {
        match replies.next().await {
            Some(Ok(MergedItem::Synced(_))) => return Ok(()),
            Some(Ok(MergedItem::Message { .. } | MergedItem::Snapshot(_))) => {}
            Some(Err(error)) => return Err(kafka_status(&error)),
            None => return Err(Status::new(Code::Unavailable, "the reply topic read ended")),
        }
    }
}

/// Relays the replies to the client: the first reply's `meta:*` headers become the response
/// metadata (sent through `head`), each value a message, and the record without a value ends
/// the call with its `zilla:status`. A failed produce ends the call with its status.
///
/// For a method known to answer with one message (`unary`), the value is held until the final
/// record and only the last one is sent: a service gateway that died after producing a reply
/// but before its final record leaves that reply in the topic, and the member that calls the
/// service again produces a complete answer after it. Sending both would give the caller two
/// messages, which gRPC clients refuse (grpcio waits until its deadline), on every retry.
async fn relay(
    mut replies: MergedStream,
    head: oneshot::Sender<Result<Metadata, Status>>,
    items: &ResponseSender,
    producing: impl Future<Output = Result<(), Status>>,
    unary: bool,
) {
    let mut head = Some(head);
    let mut producing = std::pin::pin!(producing);
    let mut held: Option<Arc<Message>> = None;
    loop {
        let reply = tokio::select! {
            result = &mut producing => match result {
                Ok(()) => continue,
                Err(status) => Err(status),
            },
            item = replies.next() => match item {
                Some(Ok(MergedItem::Message { message, .. })) => Ok(message),
                Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => continue,
                Some(Err(error)) => Err(kafka_status(&error)),
                None => Err(Status::new(Code::Unavailable, "the reply topic read ended")),
            },
        };
        let message = match reply {
            Ok(message) => message,
            Err(status) => {
                finish(&mut head, items, status).await;
                return;
            }
        };
        match &message.value {
            Some(_) if unary => {
                if held.is_some() {
                    tracing::debug!(
                        "a later reply replaces one not sent: the call was answered again"
                    );
                }
                held = Some(message);
            }
            Some(value) => {
                if let Some(head) = head.take() {
                    let _ = head.send(Ok(metadata_of(&message)));
                }
                if items
                    .send(ResponseItem::Message(value.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            None => {
                let status = status_of(&message);
                if let Some(reply) = held.take().filter(|_| status.code == Code::Ok)
                    && let Some(value) = &reply.value
                {
                    if let Some(head) = head.take() {
                        let _ = head.send(Ok(metadata_of(&reply)));
                    }
                    if items
                        .send(ResponseItem::Message(value.clone()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                finish(&mut head, items, status).await;
                return;
            }
        }
    }
}

/// Ends the call with `status`: trailers-only when nothing was sent yet and it is an error.
async fn finish(
    head: &mut Option<oneshot::Sender<Result<Metadata, Status>>>,
    items: &ResponseSender,
    status: Status,
) {
    match head.take() {
        Some(head) if status.code != Code::Ok => {
            let _ = head.send(Err(status));
        }
        Some(head) => {
            let _ = head.send(Ok(Metadata::new()));
            let _ = items.send(ResponseItem::Status(status)).await;
        }
        None => {
            let _ = items.send(ResponseItem::Status(status)).await;
        }
    }
}

/// The final status a reply record carries: `zilla:status` (default OK) and `zilla:message`.
pub fn status_of(message: &Message) -> Status {
    let code = message
        .header(STATUS_HEADER)
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.trim().parse::<u32>().ok())
        .map_or(Code::Ok, Code::from_u32);
    let text = message
        .header(MESSAGE_HEADER)
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default();
    Status::new(code, text)
}

/// The gRPC metadata the `meta:*` headers of a record carry (`-bin` values in base64).
pub fn metadata_of(message: &Message) -> Metadata {
    let mut metadata = Metadata::new();
    for header in &message.headers {
        let Some(name) = header
            .name
            .strip_prefix(META_PREFIX.as_bytes())
            .and_then(|name| std::str::from_utf8(name).ok())
        else {
            continue;
        };
        let value = header.value.as_deref().unwrap_or_default();
        let name = name.to_ascii_lowercase();
        if name.ends_with("-bin") {
            if let Some(decoded) = zilla_binding_grpc::metadata::decode_binary(value) {
                metadata.push_binary(name, decoded);
            }
        } else if let Ok(text) = std::str::from_utf8(value) {
            metadata.push_text(name, text);
        }
    }
    metadata
}

/// The `meta:*` headers of `metadata` (`-bin` values in base64).
pub fn meta_headers(metadata: &Metadata) -> impl Iterator<Item = Header> + '_ {
    metadata.iter().map(|(name, value)| {
        let value = match value {
            MetadataValue::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
            MetadataValue::Binary(bytes) => Bytes::from(encode_binary(bytes)),
        };
        Header::new(format!("{META_PREFIX}{name}"), value)
    })
}

/// The headers every record of one call carries, and its correlation id.
struct Draft {
    /// Overrides, then (with a reply topic) service, method, reply-to and correlation id.
    headers: Vec<Header>,
    /// The request metadata as `meta:*` headers, on message records only.
    meta: Vec<Header>,
    correlation_id: String,
    /// Whether the call has a reply topic.
    replying: bool,
}

impl Draft {
    /// The correlation id is `<idempotency key>-<md5>`, the MD5 covering (with a reply topic)
    /// the service, method and reply-to headers, names and values, then each override value,
    /// as Zilla computes it.
    fn new(
        names: &HeaderNames,
        request: &GrpcRequest,
        overrides: Vec<(Bytes, Bytes)>,
        reply_to: Option<&str>,
        idempotency_key: &str,
    ) -> Self {
        let mut hash = CorrelationHash::default();
        if let Some(reply_to) = reply_to {
            hash.header(&names.service, request.service.as_bytes());
            hash.header(&names.method, request.method.as_bytes());
            hash.header(&names.reply_to, reply_to.as_bytes());
        }
        for (_, value) in &overrides {
            hash.update(value);
        }
        let correlation_id = hash.finish(idempotency_key);
        let mut headers: Vec<Header> = overrides
            .into_iter()
            .map(|(name, value)| Header::new(name, value))
            .collect();
        if let Some(reply_to) = reply_to {
            headers.push(Header::new(
                names.service.clone(),
                Bytes::copy_from_slice(request.service.as_bytes()),
            ));
            headers.push(Header::new(
                names.method.clone(),
                Bytes::copy_from_slice(request.method.as_bytes()),
            ));
            headers.push(Header::new(
                names.reply_to.clone(),
                Bytes::copy_from_slice(reply_to.as_bytes()),
            ));
            headers.push(Header::new(
                names.correlation_id.clone(),
                Bytes::copy_from_slice(correlation_id.as_bytes()),
            ));
        }
        Self {
            headers,
            meta: meta_headers(&request.metadata).collect(),
            correlation_id,
            replying: reply_to.is_some(),
        }
    }
}

/// The records of one call.
struct Records {
    topic: String,
    key: Bytes,
    acks: Acks,
    draft: Draft,
}

impl Records {
    fn record(&self, value: Option<Bytes>, headers: Vec<Header>) -> ProduceRequest {
        ProduceRequest {
            topic: self.topic.clone(),
            key: Some(self.key.clone()),
            value,
            headers,
            acks: self.acks,
            ..ProduceRequest::default()
        }
    }

    /// Produces each request message, in order, each acknowledged before the next, then (with
    /// a reply topic) the end of the request: a record without value, carrying
    /// `zilla:status` when the caller broke off.
    async fn send_all(
        &self,
        exit: &dyn KafkaHandler,
        messages: impl Stream<Item = Result<Bytes, Status>>,
        abandoned: &CancellationToken,
    ) -> Result<(), Status> {
        let mut messages = std::pin::pin!(messages);
        let broken = loop {
            let next = tokio::select! {
                next = messages.next() => next,
                () = abandoned.cancelled() => Some(Err(Status::new(Code::Cancelled, "the call ended before its request"))),
            };
            match next {
                Some(Ok(message)) => {
                    let mut headers = self.draft.headers.clone();
                    headers.extend(self.draft.meta.iter().cloned());
                    exit.produce(self.record(Some(message), headers))
                        .await
                        .map_err(|error| kafka_status(&error))?;
                }
                Some(Err(status)) => break Some(status),
                None => break None,
            }
        };
        if self.draft.replying {
            let mut headers = self.draft.headers.clone();
            if let Some(status) = &broken {
                headers.push(Header::new(
                    Bytes::from_static(STATUS_HEADER),
                    Bytes::from(Code::Aborted.as_u32().to_string()),
                ));
                tracing::debug!(%status, "request broken off; ending it as aborted");
            }
            exit.produce(self.record(None, headers))
                .await
                .map_err(|error| kafka_status(&error))?;
        }
        match broken {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names() -> HeaderNames {
        HeaderNames {
            service: Bytes::from_static(b"zilla:service"),
            method: Bytes::from_static(b"zilla:method"),
            correlation_id: Bytes::from_static(b"zilla:correlation-id"),
            reply_to: Bytes::from_static(b"zilla:reply-to"),
        }
    }

    fn text(headers: &[Header]) -> Vec<(String, String)> {
        headers
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

    /// The records Zilla's conformance scripts expect for the same calls.
    #[test]
    fn records_match_zilla() {
        let key = "59410e57-3e0f-4b61-9328-f645a7968ac8";
        for (method, digest) in [
            ("EchoUnary", "479f2c3fb58bc3f04bbe15440a657670"),
            ("EchoClientStream", "97e816c79fb6624b7d221026cc36107c"),
        ] {
            let mut request = GrpcRequest::new(
                "example.EchoService",
                method,
                Box::pin(futures_util::stream::empty()),
            );
            request.metadata.push_text("custom", "test");
            request.metadata.push_text("idempotency-key", key);
            request
                .metadata
                .push_binary("raw-bin", Bytes::from_static(b"\x00\xff"));
            let draft = Draft::new(
                &names(),
                &request,
                vec![(
                    Bytes::from_static(b"zilla:identity"),
                    Bytes::from_static(b"test"),
                )],
                Some("responses"),
                key,
            );
            let correlation_id = format!("{key}-{digest}");
            assert_eq!(draft.correlation_id, correlation_id);
            assert!(draft.replying);
            let expected: Vec<(String, String)> = [
                ("zilla:identity", "test"),
                ("zilla:service", "example.EchoService"),
                ("zilla:method", method),
                ("zilla:reply-to", "responses"),
                ("zilla:correlation-id", correlation_id.as_str()),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
            assert_eq!(text(&draft.headers), expected);
            assert_eq!(
                text(&draft.meta),
                [
                    ("meta:custom".to_owned(), "test".to_owned()),
                    ("meta:idempotency-key".to_owned(), key.to_owned()),
                    ("meta:raw-bin".to_owned(), "AP8".to_owned()),
                ]
            );
        }
        // One-way: only the overrides, and the id still covers them.
        let request = GrpcRequest::new(
            "example.EchoService",
            "EchoUnary",
            Box::pin(futures_util::stream::empty()),
        );
        let draft = Draft::new(&names(), &request, Vec::new(), None, "k");
        assert!(!draft.replying);
        assert!(draft.headers.is_empty());
        assert_eq!(draft.correlation_id, "k-d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn replies_give_metadata_and_status() {
        let reply = Message {
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: vec![
                Header::new("meta:x-echo", "v1"),
                Header::new("meta:x-raw-bin", "AP8"),
                Header::new("zilla:status", "5"),
                Header::new("zilla:message", "no such thing"),
            ],
        };
        let metadata = metadata_of(&reply);
        assert_eq!(
            metadata.get("x-echo"),
            Some(&MetadataValue::Text("v1".into()))
        );
        assert_eq!(
            metadata.get("x-raw-bin"),
            Some(&MetadataValue::Binary(Bytes::from_static(b"\x00\xff")))
        );
        assert_eq!(
            status_of(&reply),
            Status::new(Code::NotFound, "no such thing")
        );
        let ok = Message {
            headers: Vec::new(),
            ..reply
        };
        assert_eq!(status_of(&ok), Status::ok());
    }

    /// Replies as a service gateway that died after its first reply, and the member that
    /// called the service again, leave them: a value, then a complete answer.
    async fn relayed(unary: bool) -> (Metadata, Vec<ResponseItem>) {
        let record = |value: Option<&'static str>, meta: &'static str, status: bool| {
            let mut headers = vec![Header::new("meta:x-run", meta)];
            if status {
                headers.push(Header::new("zilla:status", "0"));
            }
            MergedItem::Message {
                message: Arc::new(Message {
                    partition: 0,
                    offset: 0,
                    timestamp: 0,
                    key: None,
                    value: value.map(|value: &'static str| Bytes::from_static(value.as_bytes())),
                    headers,
                }),
                progress: Arc::from(Vec::new()),
            }
        };
        let replies: MergedStream = Box::pin(futures_util::stream::iter(vec![
            Ok(record(Some("cut"), "first", false)),
            Ok(record(Some("answer"), "second", false)),
            Ok(record(None, "second", true)),
        ]));
        let (head_sender, head) = oneshot::channel();
        let (items, stream) = response_channel(8);
        relay(
            replies,
            head_sender,
            &items,
            std::future::pending::<Result<(), Status>>(),
            unary,
        )
        .await;
        drop(items);
        let metadata = head.await.unwrap().unwrap();
        (metadata, stream.collect().await)
    }

    #[tokio::test]
    async fn a_unary_call_answered_again_gets_only_the_last_answer() {
        let (metadata, items) = relayed(true).await;
        assert_eq!(
            metadata.get("x-run"),
            Some(&MetadataValue::Text("second".into()))
        );
        assert_eq!(
            items,
            vec![
                ResponseItem::Message(Bytes::from_static(b"answer")),
                ResponseItem::Status(Status::ok())
            ]
        );
        // A stream of messages is relayed as it comes.
        let (_, items) = relayed(false).await;
        assert_eq!(items.len(), 3, "{items:?}");
    }
}
