//! The `remote_server` kind: reads request records, calls the service for each request and
//! produces its replies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zilla_binding_grpc::kind::{MessageSender, message_channel};
use zilla_binding_grpc::{
    Code, GrpcHandler, GrpcRequest, MessageStream, Metadata, ResponseItem, Status,
};
use zilla_binding_grpc_kafka::proxy::{
    HeaderNames, MESSAGE_HEADER, STATUS_HEADER, meta_headers, metadata_of,
};
use zilla_binding_kafka::kind::{
    Acks, Condition, Filter, Header, KafkaHandler, MergedItem, MergedRequest, Message,
    PartitionOffset, ProduceRequest, Start,
};
use zilla_engine::pattern::Pattern;
use zilla_engine::route::Routes;

use crate::config::{KafkaGrpcCondition, KafkaGrpcWith};

/// Calls in progress per binding: requests beyond wait in Kafka.
pub(crate) const MAXIMUM_CALLS: usize = 256;
/// Request messages read ahead of what the service has taken, per call.
const REQUEST_CAPACITY: usize = 16;
/// The first wait before a failed read or an `UNAVAILABLE` call is retried; doubled up to
/// [`MAXIMUM_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAXIMUM_BACKOFF: Duration = Duration::from_secs(5);

/// A compiled `when` entry: the merged read it opens and the methods it serves.
#[derive(Debug)]
pub(crate) struct Subscription {
    topic: String,
    filter: Filter,
    method: Option<Pattern>,
}

impl Subscription {
    /// Compiles a `when` entry, filtering on key, headers, the reply topic and (when the
    /// method names one service) the service, under the configured header `names`.
    pub(crate) fn compile(raw: KafkaGrpcCondition, names: &HeaderNames) -> Result<Self, String> {
        let method = raw
            .method
            .as_deref()
            .map(|method| Pattern::compile(method, Some('/')))
            .transpose()?;
        let mut conditions = Vec::new();
        if let Some(key) = raw.key {
            conditions.push(Condition::Key(Bytes::from(key)));
        }
        for (name, value) in raw.headers.unwrap_or_default() {
            conditions.push(Condition::Header {
                name: Bytes::from(name),
                value: Bytes::from(value),
            });
        }
        conditions.push(Condition::Header {
            name: names.reply_to.clone(),
            value: Bytes::from(raw.reply_to),
        });
        if let Some(service) = raw
            .method
            .as_deref()
            .and_then(|method| method.split_once('/'))
            .map(|(service, _)| service)
            .filter(|service| !service.contains('*'))
        {
            conditions.push(Condition::Header {
                name: names.service.clone(),
                value: Bytes::copy_from_slice(service.as_bytes()),
            });
        }
        Ok(Self {
            topic: raw.topic,
            filter: Filter { conditions },
            method,
        })
    }
}

/// What every reader of one binding shares.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) kafka: Arc<dyn KafkaHandler>,
    pub(crate) routes: Routes<Subscription, KafkaGrpcWith, Arc<dyn GrpcHandler>>,
    pub(crate) headers: HeaderNames,
    pub(crate) idempotency: String,
    pub(crate) acks: Acks,
    pub(crate) calls: Arc<Semaphore>,
    /// Cancelled when the binding stops reading requests.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when calls still in progress must end.
    pub(crate) retired: CancellationToken,
}

impl Server {
    /// Starts one reader per route `when` entry, tracked by `tasks`, until the binding stops.
    pub(crate) fn start(self: &Arc<Self>, tasks: &TaskTracker) {
        for (route_index, route) in self.routes.iter().enumerate() {
            for when_index in 0..route.when.len() {
                let server = self.clone();
                let calls = tasks.clone();
                tasks.spawn(async move {
                    let stopping = server.stopping.clone();
                    tokio::select! {
                        () = server.read(route_index, when_index, &calls) => {}
                        () = stopping.cancelled() => {}
                    }
                });
            }
        }
    }

    /// Reads the requests of one `when` entry for as long as the binding runs, reopening the
    /// read where it stopped after a failure.
    async fn read(&self, route_index: usize, when_index: usize, tasks: &TaskTracker) {
        let Some(route) = self.routes.iter().nth(route_index) else {
            return;
        };
        let subscription = &route.when[when_index];
        let mut progress: Vec<PartitionOffset> = Vec::new();
        let mut open: HashMap<Bytes, MessageSender> = HashMap::new();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let request = MergedRequest {
                topic: subscription.topic.clone(),
                start: Start::Live,
                offsets: progress.clone(),
                filters: vec![subscription.filter.clone()],
                latest_per_key: false,
            };
            let mut records = match self.kafka.merged(request).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::debug!(binding = %self.name, topic = %subscription.topic, %error, "request read failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAXIMUM_BACKOFF);
                    continue;
                }
            };
            while let Some(item) = records.next().await {
                match item {
                    Ok(MergedItem::Message {
                        message,
                        progress: after,
                    }) => {
                        backoff = FIRST_BACKOFF;
                        progress = after.to_vec();
                        self.dispatch(
                            subscription,
                            &route.exit,
                            route.with.as_ref(),
                            &message,
                            &mut open,
                            tasks,
                        )
                        .await;
                    }
                    Ok(MergedItem::Synced(at)) => progress = at.to_vec(),
                    Err(error) => {
                        tracing::debug!(binding = %self.name, %error, "request read broke; reopening");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAXIMUM_BACKOFF);
        }
    }

    /// Hands one request record to its call, starting the call on its first record.
    async fn dispatch(
        &self,
        subscription: &Subscription,
        exit: &Arc<dyn GrpcHandler>,
        with: Option<&KafkaGrpcWith>,
        message: &Message,
        open: &mut HashMap<Bytes, MessageSender>,
        tasks: &TaskTracker,
    ) {
        let Some(correlation_id) = message.header(&self.headers.correlation_id).cloned() else {
            tracing::debug!(binding = %self.name, offset = message.offset, "request without correlation id; skipped");
            return;
        };
        if let Some(sender) = open.get(&correlation_id) {
            let delivered = match &message.value {
                Some(value) => sender.send(Ok(value.clone())).await.is_ok(),
                None => {
                    if let Some(status) = broken_off(message) {
                        let _ = sender.send(Err(status)).await;
                    }
                    false
                }
            };
            if !delivered {
                // The request ended, or its call is over.
                open.remove(&correlation_id);
            }
            return;
        }
        let (Some(service), Some(method), Some(reply_to)) = (
            text(message.header(&self.headers.service)),
            text(message.header(&self.headers.method)),
            text(message.header(&self.headers.reply_to)),
        ) else {
            tracing::debug!(binding = %self.name, offset = message.offset, "request without service, method or reply-to; skipped");
            return;
        };
        if subscription
            .method
            .as_ref()
            .is_some_and(|pattern| !pattern.matches(&format!("{service}/{method}")))
        {
            return;
        }
        let Some(with) = with else {
            return;
        };
        // Calls that ended leave their senders closed.
        open.retain(|_, sender| !sender.is_closed());
        let permit = tokio::select! {
            permit = self.calls.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = self.stopping.cancelled() => return,
        };
        let (sender, messages) = message_channel(REQUEST_CAPACITY);
        match &message.value {
            Some(value) => {
                let _ = sender.send(Ok(value.clone())).await;
                open.insert(correlation_id.clone(), sender);
            }
            None => {
                if let Some(status) = broken_off(message) {
                    let _ = sender.send(Err(status)).await;
                }
                drop(sender);
            }
        }
        let mut metadata = metadata_of(message);
        if metadata.get(&self.idempotency).is_none() {
            metadata.push_text(self.idempotency.clone(), idempotency_key(&correlation_id));
        }
        let call = Call {
            exit: exit.clone(),
            scheme: with.scheme.clone(),
            authority: with.authority.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            metadata,
            reply: Reply {
                kafka: self.kafka.clone(),
                topic: reply_to.to_owned(),
                key: message.key.clone(),
                correlation_header: self.headers.correlation_id.clone(),
                correlation_id,
                acks: self.acks,
            },
        };
        let retired = self.retired.clone();
        let name = self.name.clone();
        tasks.spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = call.run(messages) => {
                    if let Err(error) = result {
                        tracing::debug!(binding = %name, %error, "reply not produced");
                    }
                }
                () = retired.cancelled() => {}
            }
        });
    }
}

/// The status an end-of-request record carries when the caller broke off.
fn broken_off(message: &Message) -> Option<Status> {
    let status = zilla_binding_grpc_kafka::proxy::status_of(message);
    (status.code != Code::Ok).then_some(status)
}

fn text(value: Option<&Bytes>) -> Option<&str> {
    value.and_then(|value| std::str::from_utf8(value).ok())
}

/// The idempotency key a correlation id (`<key>-<32 hex digits>`) was made from; the whole id
/// when it has another shape.
fn idempotency_key(correlation_id: &[u8]) -> String {
    let text = String::from_utf8_lossy(correlation_id);
    match text.rsplit_once('-') {
        Some((key, digest))
            if !key.is_empty()
                && digest.len() == 32
                && digest.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            key.to_owned()
        }
        _ => text.into_owned(),
    }
}

/// Where one request's replies go.
struct Reply {
    kafka: Arc<dyn KafkaHandler>,
    topic: String,
    key: Option<Bytes>,
    correlation_header: Bytes,
    correlation_id: Bytes,
    acks: Acks,
}

impl Reply {
    async fn produce(
        &self,
        value: Option<Bytes>,
        extra: impl IntoIterator<Item = Header>,
    ) -> Result<(), zilla_engine::stream::StreamError> {
        let mut headers = vec![Header::new(
            self.correlation_header.clone(),
            self.correlation_id.clone(),
        )];
        headers.extend(extra);
        self.kafka
            .produce(ProduceRequest {
                topic: self.topic.clone(),
                key: self.key.clone(),
                value,
                headers,
                acks: self.acks,
                ..ProduceRequest::default()
            })
            .await
            .map(|_| ())
    }

    /// The record that ends the replies: no value, `zilla:status` and `zilla:message`.
    async fn finish(
        &self,
        status: &Status,
        extra: Vec<Header>,
    ) -> Result<(), zilla_engine::stream::StreamError> {
        let mut headers = extra;
        headers.push(Header::new(
            Bytes::from_static(STATUS_HEADER),
            status.code.as_u32().to_string(),
        ));
        if !status.message.is_empty() {
            headers.push(Header::new(
                Bytes::from_static(MESSAGE_HEADER),
                status.message.clone(),
            ));
        }
        self.produce(None, headers).await
    }
}

/// One request, called and answered.
struct Call {
    exit: Arc<dyn GrpcHandler>,
    scheme: String,
    authority: String,
    service: String,
    method: String,
    metadata: Metadata,
    reply: Reply,
}

impl Call {
    /// Calls the service, again after a backoff while it is `UNAVAILABLE` before it took any
    /// request message, and produces what it answers.
    async fn run(self, messages: MessageStream) -> Result<(), zilla_engine::stream::StreamError> {
        let messages = Arc::new(Mutex::new(messages));
        let mut backoff = FIRST_BACKOFF;
        let response = loop {
            let taken = Arc::new(AtomicBool::new(false));
            let lent = lend(messages.clone(), taken.clone());
            let mut request = GrpcRequest::new(self.service.clone(), self.method.clone(), lent);
            request.scheme = self.scheme.clone();
            request.authority = self.authority.clone();
            request.metadata = self.metadata.clone();
            match self.exit.call(request).await {
                Err(status)
                    if status.code == Code::Unavailable && !taken.load(Ordering::Acquire) =>
                {
                    tracing::debug!(%status, service = %self.service, "service unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAXIMUM_BACKOFF);
                }
                other => break other,
            }
        };
        let mut response = match response {
            Ok(response) => response,
            Err(status) => return self.reply.finish(&status, Vec::new()).await,
        };
        let mut meta: Vec<Header> = meta_headers(&response.metadata).collect();
        while let Some(item) = response.items.next().await {
            match item {
                ResponseItem::Message(value) => {
                    self.reply
                        .produce(Some(value), std::mem::take(&mut meta))
                        .await?;
                }
                ResponseItem::Status(status) => return self.reply.finish(&status, meta).await,
            }
        }
        self.reply.finish(&Status::ok(), meta).await
    }
}

/// A stream that reads from `shared` and records in `taken` that it gave out a message, so a
/// call that failed before taking any can be tried again with the same messages.
fn lend(shared: Arc<Mutex<MessageStream>>, taken: Arc<AtomicBool>) -> MessageStream {
    Box::pin(futures_util::stream::poll_fn(move |context| {
        let mut stream = shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let polled = stream.as_mut().poll_next(context);
        if matches!(polled, std::task::Poll::Ready(Some(_))) {
            taken.store(true, Ordering::Release);
        }
        polled
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn idempotency_keys_come_from_correlation_ids() {
        assert_eq!(
            idempotency_key(
                b"59410e57-3e0f-4b61-9328-f645a7968ac8-d41d8cd98f00b204e9800998ecf8427e"
            ),
            "59410e57-3e0f-4b61-9328-f645a7968ac8"
        );
        assert_eq!(idempotency_key(b"plain"), "plain");
        assert_eq!(idempotency_key(b"a-short"), "a-short");
    }

    #[test]
    fn conditions_filter_on_reply_to_and_service() {
        let subscription = Subscription::compile(
            KafkaGrpcCondition {
                topic: "requests".into(),
                key: Some("k".into()),
                headers: Some([("h".to_owned(), "v".to_owned())].into()),
                reply_to: "responses".into(),
                method: Some("example.EchoService/*".into()),
            },
            &HeaderNames {
                service: Bytes::from_static(b"svc"),
                method: Bytes::from_static(b"m"),
                correlation_id: Bytes::from_static(b"c"),
                reply_to: Bytes::from_static(b"r"),
            },
        )
        .unwrap();
        assert_eq!(
            subscription.filter.conditions,
            vec![
                Condition::Key(Bytes::from_static(b"k")),
                Condition::Header {
                    name: Bytes::from_static(b"h"),
                    value: Bytes::from_static(b"v"),
                },
                Condition::Header {
                    name: Bytes::from_static(b"r"),
                    value: Bytes::from_static(b"responses"),
                },
                Condition::Header {
                    name: Bytes::from_static(b"svc"),
                    value: Bytes::from_static(b"example.EchoService"),
                },
            ]
        );
        assert!(
            subscription
                .method
                .as_ref()
                .unwrap()
                .matches("example.EchoService/EchoUnary")
        );
    }

    #[tokio::test]
    async fn a_lent_stream_says_whether_it_gave_anything() {
        let (sender, messages) = message_channel(4);
        let shared = Arc::new(Mutex::new(messages));
        let taken = Arc::new(AtomicBool::new(false));
        drop(lend(shared.clone(), taken.clone()));
        assert!(!taken.load(Ordering::Acquire));
        sender.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        let mut again = lend(shared, taken.clone());
        assert_eq!(again.next().await, Some(Ok(Bytes::from_static(b"a"))));
        assert!(taken.load(Ordering::Acquire));
    }
}
