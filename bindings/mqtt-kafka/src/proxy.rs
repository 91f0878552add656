//! The `proxy` kind: MQTT sessions, publications and subscriptions served by Kafka topics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use zilla_binding_kafka::kind::{
    Acks, Condition, Filter, Header, KafkaHandler, MergedItem, MergedRequest, MergedStream,
    OffsetSpec, PartitionOffset, ProduceAck, ProduceRequest, Start,
};
use zilla_binding_mqtt::codec::topic;
use zilla_binding_mqtt::codec::{QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use zilla_binding_mqtt::kind::{
    Acknowledgement, Delivery, Message, MqttHandler, MqttSession, OpenedSession, SessionAccepted,
    SessionBegin, SessionEnd, SessionEvent, SessionRefused, SubscribeRequest,
};
use zilla_engine::events::Events;
use zilla_engine::guard::Authorization;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::config::{MqttKafkaCondition, MqttKafkaTopicCondition, MqttKafkaWith};
use crate::headers;

/// The event raised when the sessions topic is not log-compacted (Zilla's name).
pub const NON_COMPACT_SESSIONS_TOPIC: &str = "BINDING_MQTT_KAFKA_NON_COMPACT_SESSIONS_TOPIC";

/// The header naming the session that wrote a takeover record.
const SENDER_ID: &str = "sender-id";
/// The suffix of the takeover record's key.
const MIGRATE_SUFFIX: &str = "#migrate";
/// Publications of one session queued toward Kafka or waiting for their acks.
const PUBLISH_WINDOW: usize = 64;
/// Deliveries of one subscription the subscriber has not acknowledged yet.
const DELIVERY_WINDOW: usize = 64;
/// How long a publication is retried while Kafka is unreachable before it is refused.
const PUBLISH_RETRY_LIMIT: Duration = Duration::from_secs(60);
const RETRY_BACKOFF_MAXIMUM: Duration = Duration::from_secs(2);

/// A read of `topic` from the broker's end now: every record acknowledged after this call
/// returns, and none acknowledged before. (A plain live start follows the cache, whose end
/// may lag what the broker already acknowledged: a just-cleared retained message or a
/// takeover record written before this session would be read as new.)
async fn read_from_now(
    exit: &Arc<dyn KafkaHandler>,
    topic: &str,
    filters: Vec<Filter>,
) -> Result<MergedStream, StreamError> {
    let metadata = exit.metadata(topic).await?;
    let ends = futures_util::future::try_join_all(metadata.partitions.iter().map(|&partition| {
        exit.list_offset(topic, partition, OffsetSpec::Latest)
            .map(move |end| end.map(|offset| PartitionOffset { partition, offset }))
    }))
    .await?;
    exit.merged(MergedRequest {
        topic: topic.to_owned(),
        start: Start::Live,
        offsets: ends,
        filters,
        latest_per_key: false,
    })
    .await
}

/// A compiled route condition.
#[derive(Debug)]
pub(crate) struct TopicCondition {
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

impl TopicCondition {
    pub(crate) fn compile(raw: MqttKafkaCondition) -> Result<Self, String> {
        let filters = |list: Option<Vec<MqttKafkaTopicCondition>>| {
            list.map(|list| {
                list.into_iter()
                    .map(|condition| {
                        if topic::valid_filter(&condition.topic) {
                            Ok(condition.topic)
                        } else {
                            Err(format!("`{}` is not an MQTT topic filter", condition.topic))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
        };
        Ok(Self {
            publish: filters(raw.publish)?,
            subscribe: filters(raw.subscribe)?,
        })
    }

    fn matches_publish(&self, name: &str) -> bool {
        self.publish
            .as_ref()
            .is_some_and(|filters| filters.iter().any(|f| topic::matches(f, name)))
    }

    /// A subscription's filter is matched as text: a route's `+` takes any one level of it
    /// (a `+` included) and `#` the rest.
    fn matches_subscribe(&self, filter: &str) -> bool {
        self.subscribe
            .as_ref()
            .is_some_and(|filters| filters.iter().any(|f| topic::matches(f, filter)))
    }
}

/// A `clients` pattern: the level captured by `{identity}` partitions the topic's messages.
#[derive(Debug)]
pub(crate) struct ClientPattern(regex::Regex);

impl ClientPattern {
    pub(crate) fn compile(pattern: &str) -> Result<Self, String> {
        let levels: Vec<String> = pattern
            .split('/')
            .map(|level| match level {
                "{identity}" => "([^/]+)".to_owned(),
                "+" => "[^/]+".to_owned(),
                "#" => ".*".to_owned(),
                level => regex::escape(level),
            })
            .collect();
        if !pattern.split('/').any(|level| level == "{identity}") {
            return Err(format!("`{pattern}` has no `{{identity}}` level"));
        }
        regex::Regex::new(&format!("^{}$", levels.join("/")))
            .map(Self)
            .map_err(|error| format!("invalid clients pattern `{pattern}`: {error}"))
    }

    fn identity<'t>(&self, name: &'t str) -> Option<&'t str> {
        self.0
            .captures(name)
            .and_then(|captures| captures.get(1))
            .map(|identity| identity.as_str())
    }
}

/// Kafka topics of the binding.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    pub sessions: String,
    pub messages: String,
    pub retained: String,
}

pub(crate) type KafkaRoutes = Routes<TopicCondition, MqttKafkaWith, Arc<dyn KafkaHandler>>;

/// A built mqtt-kafka proxy.
pub(crate) struct MqttKafkaProxy {
    pub name: String,
    pub topics: Topics,
    pub clients: Vec<ClientPattern>,
    pub maximum_qos: QoS,
    pub routes: KafkaRoutes,
    /// Where the sessions topic is read and written.
    pub sessions_exit: Arc<dyn KafkaHandler>,
    pub events: Events,
    /// Whether the sessions topic was found compacted (checked until it is).
    pub sessions_compacted: Mutex<bool>,
}

/// Where a topic's messages go: the Kafka topic and the exit.
struct Destination {
    topic: String,
    exit: Arc<dyn KafkaHandler>,
}

impl MqttKafkaProxy {
    fn publish_destination(
        &self,
        authorization: &Authorization,
        name: &str,
    ) -> Option<Destination> {
        self.routes
            .resolve(Some(authorization), |c| c.matches_publish(name))
            .map(|route| self.destination(route))
    }

    fn subscribe_destination(
        &self,
        authorization: &Authorization,
        filter: &str,
    ) -> Option<Destination> {
        self.routes
            .resolve(Some(authorization), |c| c.matches_subscribe(filter))
            .map(|route| self.destination(route))
    }

    fn destination(
        &self,
        route: &zilla_engine::route::Route<TopicCondition, MqttKafkaWith, Arc<dyn KafkaHandler>>,
    ) -> Destination {
        let topic = route
            .with
            .as_ref()
            .and_then(|with| with.messages.clone())
            .unwrap_or_else(|| self.topics.messages.clone());
        Destination {
            topic,
            exit: route.exit.clone(),
        }
    }

    fn hash_key(&self, name: &str) -> Option<Bytes> {
        self.clients
            .iter()
            .find_map(|pattern| pattern.identity(name))
            .map(|identity| Bytes::copy_from_slice(identity.as_bytes()))
    }

    /// Refuses sessions while the sessions topic is not compacted, as Zilla does.
    async fn check_sessions_topic(&self) -> Result<(), SessionRefused> {
        if self.sessions_compacted.lock().map(|c| *c).unwrap_or(false) {
            return Ok(());
        }
        let config = self
            .sessions_exit
            .describe(&self.topics.sessions)
            .await
            .map_err(SessionRefused::from)?;
        if !config.compacted {
            self.events.emit(
                NON_COMPACT_SESSIONS_TOPIC,
                0,
                format!(
                    "the sessions topic `{}` is not log compacted",
                    self.topics.sessions
                ),
            );
            return Err(SessionRefused {
                reason: ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                reason_string: Some("sessions topic is not log compacted".to_owned()),
            });
        }
        if let Ok(mut compacted) = self.sessions_compacted.lock() {
            *compacted = true;
        }
        Ok(())
    }

    async fn open(self: Arc<Self>, begin: SessionBegin) -> Result<OpenedSession, SessionRefused> {
        self.check_sessions_topic().await?;
        let session_id = uuid::Uuid::new_v4().to_string();
        let migrate_key = format!("{}{MIGRATE_SUFFIX}", begin.client_id);
        // Read before writing, so no later takeover record can be missed.
        let takeovers = read_from_now(
            &self.sessions_exit,
            &self.topics.sessions,
            vec![Filter {
                conditions: vec![Condition::Key(Bytes::from(migrate_key.clone()))],
            }],
        )
        .await
        .map_err(SessionRefused::from)?;
        self.sessions_exit
            .produce(ProduceRequest {
                topic: self.topics.sessions.clone(),
                key: Some(Bytes::from(migrate_key)),
                hash_key: Some(Bytes::from(begin.client_id.clone())),
                value: Some(Bytes::new()),
                headers: vec![Header::new(
                    Bytes::from_static(SENDER_ID.as_bytes()),
                    Bytes::from(session_id.clone()),
                )],
                acks: Acks::Leader,
                ..ProduceRequest::default()
            })
            .await
            .map_err(SessionRefused::from)?;
        let (published, queue) = mpsc::channel(PUBLISH_WINDOW);
        let (ending, ended) = oneshot::channel();
        let context = Arc::new(SessionContext {
            proxy: self.clone(),
            client_id: begin.client_id.clone(),
            authorization: begin.authorization.clone(),
            events: begin.events.clone(),
            closed: CancellationToken::new(),
        });
        tokio::spawn(publish_loop(queue));
        tokio::spawn(lifetime(
            context.clone(),
            session_id,
            takeovers,
            begin.will.map(|will| {
                // The will waits no longer than the session lives.
                let delay = will.delay.min(begin.session_expiry);
                (will.message, delay)
            }),
            ended,
        ));
        tracing::debug!(binding = %self.name, client_id = %begin.client_id, "session opened");
        let accepted = SessionAccepted {
            session_present: false,
            maximum_qos: self.maximum_qos,
            retain_available: true,
            wildcard_available: true,
            subscription_ids_available: true,
            shared_available: false,
            session_expiry: None,
        };
        let session = KafkaSession {
            context,
            published,
            subscriptions: Arc::new(Mutex::new(HashMap::new())),
            ending: Mutex::new(Some(ending)),
        };
        Ok((accepted, Box::new(session)))
    }
}

/// The handler the proxy publishes for the `mqtt` kind.
pub(crate) struct ProxyHandler(pub Arc<MqttKafkaProxy>);

impl MqttHandler for ProxyHandler {
    fn session(&self, begin: SessionBegin) -> BoxFuture<'_, Result<OpenedSession, SessionRefused>> {
        Box::pin(self.0.clone().open(begin))
    }
}

/// What one session shares with its tasks.
struct SessionContext {
    proxy: Arc<MqttKafkaProxy>,
    client_id: String,
    authorization: Authorization,
    events: mpsc::Sender<SessionEvent>,
    /// Cancelled when the session is over (ended, dropped or taken over).
    closed: CancellationToken,
}

/// How a session ended.
enum Ending {
    /// DISCONNECT; with reason 0x04 the will is published all the same.
    Normal { publish_will: bool },
    /// The connection went away without DISCONNECT.
    Abnormal,
}

/// One publication on its way to Kafka.
struct Publication {
    produce: BoxFuture<'static, ReasonCode>,
    outcome: oneshot::Sender<ReasonCode>,
}

/// An open session.
struct KafkaSession {
    context: Arc<SessionContext>,
    published: mpsc::Sender<Publication>,
    /// Subscription tasks by topic filter.
    subscriptions: Arc<Mutex<HashMap<String, CancellationToken>>>,
    ending: Mutex<Option<oneshot::Sender<Ending>>>,
}

impl KafkaSession {
    fn finish(&self, ending: Ending) {
        if let Some(sender) = self.ending.lock().ok().and_then(|mut e| e.take()) {
            let _ = sender.send(ending);
        }
        self.context.closed.cancel();
    }
}

impl Drop for KafkaSession {
    fn drop(&mut self) {
        self.finish(Ending::Abnormal);
    }
}

/// The reason code a publication failure is answered with.
fn publish_reason(error: &StreamError) -> ReasonCode {
    match error {
        StreamError::NoRoute | StreamError::Unauthorized => ReasonCode::NOT_AUTHORIZED,
        StreamError::Protocol(_) => ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
        StreamError::Upstream(_) | StreamError::Io(_) | StreamError::Stopped => {
            ReasonCode::UNSPECIFIED_ERROR
        }
    }
}

/// Produces `request`, retrying while Kafka is unreachable, so that nothing is acknowledged
/// to a publisher before Kafka has it and nothing is refused for a broker restart.
async fn produce_reliably(
    exit: Arc<dyn KafkaHandler>,
    request: ProduceRequest,
) -> Result<ProduceAck, StreamError> {
    let deadline = Instant::now() + PUBLISH_RETRY_LIMIT;
    let mut backoff = Duration::from_millis(50);
    loop {
        match exit.produce(request.clone()).await {
            Ok(ack) => return Ok(ack),
            Err(error @ (StreamError::Upstream(_) | StreamError::Io(_)))
                if Instant::now() + backoff < deadline =>
            {
                tracing::debug!(%error, topic = %request.topic, "produce failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAXIMUM);
            }
            Err(error) => return Err(error),
        }
    }
}

/// The records one publication makes: the message, and for a retained message the retained
/// record (a tombstone for an empty payload, which clears the topic's retained message).
fn publication_records(
    proxy: &MqttKafkaProxy,
    client_id: &str,
    messages_topic: &str,
    message: &Message,
) -> Vec<ProduceRequest> {
    let key = Some(Bytes::copy_from_slice(message.topic.as_bytes()));
    let acks = if message.qos == QoS::AtMostOnce {
        Acks::None
    } else {
        Acks::Leader
    };
    let headers = headers::publish_headers(message, client_id, messages_topic);
    let hash_key = proxy.hash_key(&message.topic);
    let mut records = vec![ProduceRequest {
        topic: messages_topic.to_owned(),
        key: key.clone(),
        hash_key: hash_key.clone(),
        value: Some(message.payload.clone()),
        headers: headers.clone(),
        acks,
        ..ProduceRequest::default()
    }];
    if message.retain {
        let clear = message.payload.is_empty();
        records.push(ProduceRequest {
            topic: proxy.topics.retained.clone(),
            key,
            hash_key,
            value: (!clear).then(|| message.payload.clone()),
            headers: if clear { Vec::new() } else { headers },
            acks,
            ..ProduceRequest::default()
        });
    }
    records
}

/// Produces every record of a publication, in order; the outcome for the publisher.
async fn publish_records(exit: Arc<dyn KafkaHandler>, records: Vec<ProduceRequest>) -> ReasonCode {
    for record in records {
        if let Err(error) = produce_reliably(exit.clone(), record).await {
            tracing::debug!(%error, "publication refused");
            return publish_reason(&error);
        }
    }
    ReasonCode::SUCCESS
}

/// Sends a session's publications to Kafka in order, up to [`PUBLISH_WINDOW`] waiting for
/// their acks at once, and reports each outcome in order.
async fn publish_loop(mut queue: mpsc::Receiver<Publication>) {
    let mut waiting = FuturesOrdered::new();
    loop {
        tokio::select! {
            publication = queue.recv(), if waiting.len() < PUBLISH_WINDOW => {
                let Some(Publication { produce, outcome }) = publication else { break };
                waiting.push_back(produce.map(move |reason| (reason, outcome)));
            }
            Some((reason, outcome)) = waiting.next(), if !waiting.is_empty() => {
                let _ = outcome.send(reason);
            }
        }
    }
    // The session is gone: what was taken still reaches Kafka (a QoS 0 message needs no
    // one to wait for it), unless the gateway stops first.
    while let Some((reason, outcome)) = tokio::select! {
        next = waiting.next() => next,
        () = tokio::time::sleep(PUBLISH_RETRY_LIMIT) => None,
    } {
        let _ = outcome.send(reason);
    }
}

/// Publishes a will (or any message) on behalf of `client_id`.
async fn publish_message(
    proxy: &MqttKafkaProxy,
    client_id: &str,
    authorization: &Authorization,
    message: Message,
) {
    let Some(destination) = proxy.publish_destination(authorization, &message.topic) else {
        tracing::debug!(topic = %message.topic, "no route for the will");
        return;
    };
    let records = publication_records(proxy, client_id, &destination.topic, &message);
    let reason = publish_records(destination.exit, records).await;
    tracing::debug!(client_id, topic = %message.topic, reason = reason.0, "will published");
}

/// Follows a session from open to end: ends it when another session with the same client
/// identifier starts (here or on another gateway sharing the cluster: the takeover record
/// in the sessions topic), and publishes the will when it ends abnormally, after its delay,
/// unless a new session for the client started meanwhile.
async fn lifetime(
    context: Arc<SessionContext>,
    session_id: String,
    mut takeovers: MergedStream,
    will: Option<(Message, u32)>,
    ended: oneshot::Receiver<Ending>,
) {
    let is_takeover = |item: Option<Result<MergedItem, StreamError>>| -> Option<bool> {
        match item? {
            Ok(MergedItem::Message { message, .. }) => Some(
                message
                    .header(SENDER_ID.as_bytes())
                    .is_some_and(|sender| sender.as_ref() != session_id.as_bytes()),
            ),
            Ok(MergedItem::Synced(_)) => Some(false),
            // The read retries on its own; an error is no takeover.
            Err(_) => Some(false),
        }
    };
    let mut ended = ended;
    let ending = loop {
        tokio::select! {
            ending = &mut ended => break ending.unwrap_or(Ending::Abnormal),
            item = takeovers.next() => match is_takeover(item) {
                Some(true) => {
                    tracing::debug!(client_id = %context.client_id, "session taken over");
                    let taken_over = SessionEvent::Ended {
                        reason: ReasonCode::SESSION_TAKEN_OVER,
                        reason_string: None,
                    };
                    let _ = context.events.send(taken_over).await;
                    // The server drops the session once it has told the client.
                    break ended.await.unwrap_or(Ending::Abnormal);
                }
                Some(false) => {}
                None => break ended.await.unwrap_or(Ending::Abnormal),
            },
        }
    };
    let Some((message, delay)) = will else { return };
    let publish = match ending {
        Ending::Normal { publish_will } => publish_will,
        Ending::Abnormal => true,
    };
    if !publish {
        return;
    }
    let deadline = tokio::time::sleep(Duration::from_secs(u64::from(delay)));
    tokio::pin!(deadline);
    if delay > 0 {
        loop {
            tokio::select! {
                () = &mut deadline => break,
                item = takeovers.next() => match is_takeover(item) {
                    Some(true) => {
                        tracing::debug!(client_id = %context.client_id, "reconnected within the will delay");
                        return;
                    }
                    Some(false) => {}
                    None => { (&mut deadline).await; break; }
                },
            }
        }
    }
    publish_message(
        &context.proxy,
        &context.client_id,
        &context.authorization,
        message,
    )
    .await;
}

/// One subscription of a session: its filter and options.
struct SubscriptionSpec {
    filter: String,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
    deliver_retained: bool,
}

/// The filters of a subscription's reads.
fn subscription_filters(context: &SessionContext, spec: &SubscriptionSpec) -> Vec<Filter> {
    let mut conditions = vec![headers::topic_condition(&spec.filter)];
    if spec.options.no_local {
        conditions.push(headers::not_local(&context.client_id));
    }
    vec![Filter { conditions }]
}

/// The most retained messages one subscription replays.
const RETAINED_REPLAY_MAXIMUM: usize = 65_536;

/// The retained messages matching `filters`, by key (MQTT topic), as of the broker's end when
/// called. The cache's end may lag the broker's, so the read goes on until every partition
/// reached the broker's end: a retained message cleared (a tombstone, which carries no
/// headers to filter on, so the read is unfiltered) just before this subscription is not
/// replayed.
async fn retained_messages(
    exit: &Arc<dyn KafkaHandler>,
    topic: &str,
    filters: &[Filter],
    cancelled: &CancellationToken,
) -> Result<std::collections::BTreeMap<Bytes, Arc<zilla_binding_kafka::kind::Message>>, StreamError>
{
    let metadata = exit.metadata(topic).await?;
    let ends = futures_util::future::try_join_all(metadata.partitions.iter().map(|&partition| {
        exit.list_offset(topic, partition, OffsetSpec::Latest)
            .map(move |end| end.map(|offset| PartitionOffset { partition, offset }))
    }))
    .await?;
    let reached = |progress: &[PartitionOffset]| {
        ends.iter().all(|end| {
            end.offset <= 0
                || progress
                    .iter()
                    .any(|p| p.partition == end.partition && p.offset >= end.offset)
        })
    };
    let mut retained = std::collections::BTreeMap::new();
    if reached(&[]) {
        return Ok(retained);
    }
    let mut replay = exit
        .merged(MergedRequest {
            topic: topic.to_owned(),
            start: Start::Historical,
            offsets: Vec::new(),
            filters: Vec::new(),
            latest_per_key: true,
        })
        .await?;
    loop {
        let item = tokio::select! {
            biased;
            () = cancelled.cancelled() => return Ok(std::collections::BTreeMap::new()),
            item = replay.next() => item,
        };
        let progress = match item {
            Some(Ok(MergedItem::Message { message, progress })) => {
                if let Some(key) = message.key.clone() {
                    if message.value.is_none() {
                        retained.remove(&key);
                    } else if zilla_binding_kafka::kind::passes(filters, &message)
                        && (retained.len() < RETAINED_REPLAY_MAXIMUM || retained.contains_key(&key))
                    {
                        retained.insert(key, message);
                    } else {
                        retained.remove(&key);
                    }
                }
                progress
            }
            Some(Ok(MergedItem::Synced(progress))) => progress,
            Some(Err(error)) => return Err(error),
            None => break,
        };
        if reached(&progress) {
            break;
        }
    }
    Ok(retained)
}

/// Delivers the retained messages matching a new subscription, then the messages of `live`
/// (opened before the subscription was acknowledged, so nothing published after SUBACK is
/// missed, nor anything published during the retained replay).
async fn subscription(
    context: Arc<SessionContext>,
    destination: Destination,
    spec: SubscriptionSpec,
    mut live: MergedStream,
    cancelled: CancellationToken,
) {
    let filters = subscription_filters(&context, &spec);
    let mut deliveries = Deliveries {
        context: &context,
        spec: &spec,
        unacknowledged: FuturesOrdered::new(),
    };
    if spec.deliver_retained {
        let topic = &context.proxy.topics.retained;
        match retained_messages(&destination.exit, topic, &filters, &cancelled).await {
            Ok(retained) => {
                for message in retained.values() {
                    if let Some(message) = headers::message_of(message)
                        && !deliveries.deliver(message, true).await
                    {
                        return;
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "retained topic cannot be read"),
        }
    }
    loop {
        // An unsubscribed filter delivers nothing more, even what is already read.
        let item = tokio::select! {
            biased;
            () = cancelled.cancelled() => return,
            item = live.next() => item,
        };
        match item {
            Some(Ok(MergedItem::Message { message, .. })) => {
                if let Some(message) = headers::message_of(&message)
                    && !deliveries.deliver(message, false).await
                {
                    return;
                }
            }
            Some(Ok(MergedItem::Synced(_))) => {}
            Some(Err(error)) => tracing::debug!(%error, "subscription read failed; retrying"),
            None => return,
        }
    }
}

/// Deliveries of one subscription not yet acknowledged by the subscriber.
struct Deliveries<'a> {
    context: &'a SessionContext,
    spec: &'a SubscriptionSpec,
    unacknowledged: FuturesOrdered<oneshot::Receiver<()>>,
}

impl Deliveries<'_> {
    /// Delivers one message; false once the session is gone.
    async fn deliver(&mut self, mut message: Message, replayed: bool) -> bool {
        // A full window waits for the subscriber: the Kafka read does not run ahead of
        // what the subscriber acknowledges by more than the window.
        while self.unacknowledged.len() >= DELIVERY_WINDOW {
            tokio::select! {
                _ = self.unacknowledged.next() => {}
                () = self.context.closed.cancelled() => return false,
            }
        }
        message.qos = message
            .qos
            .min(self.spec.options.qos)
            .min(self.context.proxy.maximum_qos);
        // Retained messages sent because of a new subscription carry the retain flag;
        // live ones only when the subscriber asked for the flag as published, which a
        // message read from the messages topic never had.
        message.retain = replayed;
        message.properties.subscription_ids = self.spec.subscription_id.into_iter().collect();
        let acknowledged = if message.qos == QoS::AtMostOnce {
            None
        } else {
            let (sender, receiver) = oneshot::channel();
            self.unacknowledged.push_back(receiver);
            Some(sender)
        };
        let delivery = SessionEvent::Deliver(Box::new(Delivery {
            message,
            acknowledged,
        }));
        tokio::select! {
            sent = self.context.events.send(delivery) => sent.is_ok(),
            () = self.context.closed.cancelled() => false,
        }
    }
}

/// Subscribes each filter: opens its live read, then starts delivering; the reason codes
/// for SUBACK.
async fn subscribe_filters(
    context: Arc<SessionContext>,
    subscriptions: Arc<Mutex<HashMap<String, CancellationToken>>>,
    request: SubscribeRequest,
) -> Vec<ReasonCode> {
    let proxy = context.proxy.clone();
    let mut reasons = Vec::with_capacity(request.filters.len());
    for (filter, options) in request.filters {
        if topic::shared(&filter).is_some() {
            reasons.push(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
            continue;
        }
        let Some(destination) = proxy.subscribe_destination(&context.authorization, &filter) else {
            reasons.push(ReasonCode::NOT_AUTHORIZED);
            continue;
        };
        let granted = options.qos.min(proxy.maximum_qos);
        let mut spec = SubscriptionSpec {
            filter,
            options: SubscriptionOptions {
                qos: granted,
                ..options
            },
            subscription_id: request.subscription_id,
            deliver_retained: false,
        };
        let live = read_from_now(
            &destination.exit,
            &destination.topic,
            subscription_filters(&context, &spec),
        )
        .await;
        let live = match live {
            Ok(live) => live,
            Err(error) => {
                tracing::debug!(%error, topic = %destination.topic, "subscription cannot read");
                reasons.push(ReasonCode::UNSPECIFIED_ERROR);
                continue;
            }
        };
        let token = context.closed.child_token();
        let previous = subscriptions
            .lock()
            .ok()
            .and_then(|mut subscriptions| subscriptions.insert(spec.filter.clone(), token.clone()));
        let existed = previous.is_some();
        if let Some(previous) = previous {
            previous.cancel();
        }
        spec.deliver_retained = match options.retain_handling {
            RetainHandling::OnSubscribe => true,
            RetainHandling::OnNewSubscribe => !existed,
            RetainHandling::Never => false,
        };
        reasons.push(ReasonCode(granted as u8));
        tokio::spawn(subscription(
            context.clone(),
            destination,
            spec,
            live,
            token,
        ));
    }
    reasons
}

impl MqttSession for KafkaSession {
    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Acknowledgement, StreamError>> {
        Box::pin(async move {
            let context = &self.context;
            let proxy = &context.proxy;
            let produce: BoxFuture<'static, ReasonCode> =
                match proxy.publish_destination(&context.authorization, &message.topic) {
                    Some(destination) => {
                        let records = publication_records(
                            proxy,
                            &context.client_id,
                            &destination.topic,
                            &message,
                        );
                        Box::pin(publish_records(destination.exit, records))
                    }
                    None => Box::pin(async { ReasonCode::NOT_AUTHORIZED }),
                };
            let (outcome, reason) = oneshot::channel();
            self.published
                .send(Publication { produce, outcome })
                .await
                .map_err(|_| StreamError::Stopped)?;
            let acknowledgement: Acknowledgement =
                Box::pin(async move { reason.await.map_err(|_| StreamError::Stopped) });
            Ok(acknowledgement)
        })
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>> {
        let subscribed =
            subscribe_filters(self.context.clone(), self.subscriptions.clone(), request);
        Box::pin(async move {
            let acknowledgement: Acknowledgement<Vec<ReasonCode>> =
                Box::pin(async move { Ok(subscribed.await) });
            Ok(acknowledgement)
        })
    }

    fn unsubscribe(
        &self,
        filters: Vec<String>,
        _user_properties: Vec<(String, String)>,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>> {
        let reasons = filters
            .iter()
            .map(|filter| {
                match self
                    .subscriptions
                    .lock()
                    .ok()
                    .and_then(|mut subscriptions| subscriptions.remove(filter))
                {
                    Some(token) => {
                        token.cancel();
                        ReasonCode::SUCCESS
                    }
                    None => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                }
            })
            .collect();
        Box::pin(async move {
            let acknowledgement: Acknowledgement<Vec<ReasonCode>> =
                Box::pin(async move { Ok(reasons) });
            Ok(acknowledgement)
        })
    }

    fn end(&self, end: SessionEnd) {
        self.finish(Ending::Normal {
            publish_will: end.reason == ReasonCode::DISCONNECT_WITH_WILL,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_conditions_match_topics_and_filters() {
        let condition = TopicCondition::compile(MqttKafkaCondition {
            publish: Some(vec![MqttKafkaTopicCondition {
                topic: "place/+/device/#".into(),
            }]),
            subscribe: Some(vec![MqttKafkaTopicCondition {
                topic: "place/#".into(),
            }]),
        })
        .unwrap();
        assert!(condition.matches_publish("place/a/device/1"));
        assert!(!condition.matches_publish("place/a/other"));
        assert!(condition.matches_subscribe("place/+/device/#"));
        assert!(!condition.matches_subscribe("other/#"));
        assert!(
            TopicCondition::compile(MqttKafkaCondition {
                publish: Some(vec![MqttKafkaTopicCondition {
                    topic: "a/#/b".into()
                }]),
                subscribe: None,
            })
            .is_err()
        );
    }

    #[test]
    fn clients_patterns_capture_the_identity() {
        let pattern = ClientPattern::compile("place/{identity}/#").unwrap();
        assert_eq!(pattern.identity("place/x1/device/7"), Some("x1"));
        assert_eq!(pattern.identity("other/x1/device"), None);
        assert!(ClientPattern::compile("place/+/#").is_err());
    }

    #[test]
    fn failures_are_answered_with_puback_reason_codes() {
        assert_eq!(
            publish_reason(&StreamError::Unauthorized),
            ReasonCode::NOT_AUTHORIZED
        );
        assert_eq!(
            publish_reason(&StreamError::Upstream("down".into())),
            ReasonCode::UNSPECIFIED_ERROR
        );
    }
}
