//! The `proxy` kind: MQTT sessions, publications and subscriptions served by Kafka topics.

/// Will and expiry signals, and the liveness of gateways: part of the proxy, which they act for.
pub(crate) mod signals;
/// The one reader of takeover records that serves every session of the gateway.
pub(crate) mod takeovers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use zilla_binding_kafka::kind::{
    Acks, Condition, Filter, Header, KafkaHandler, MergedItem, MergedRequest, MergedStream,
    Message as KafkaRecord, OffsetSpec, PartitionOffset, ProduceAck, ProduceRequest,
    ProducerIdentity, ProducerSequence, Start,
};
use zilla_binding_mqtt::codec::topic;
use zilla_binding_mqtt::codec::{QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use zilla_binding_mqtt::kind::{
    Acknowledgement, Delivery, EventSender, Message, MqttHandler, MqttSession, OnSent,
    OpenedSession, SessionAccepted, SessionBegin, SessionEnd, SessionEvent, SessionRefused,
    SubscribeRequest,
};
use zilla_engine::events::Events;
use zilla_engine::guard::Authorization;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::config::{MqttKafkaCondition, MqttKafkaTopicCondition, MqttKafkaWith};
use crate::headers;
use crate::records::{
    self, ExpirySignal, InFlight, Outstanding, PlacedRecord, SavedSubscription, SessionState,
    Stage, WillHeader, WillSignal,
};
use signals::{Signals, signal_record};
use takeovers::Takeovers;

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
/// Deliveries of one subscription past its acknowledged offsets whose packet identifier and
/// stage the session state keeps (the window's, and as many done with behind an
/// unacknowledged one).
const OUTSTANDING_MAXIMUM: usize = 2 * DELIVERY_WINDOW;
/// How long a publication is retried while Kafka is unreachable before it is refused.
const PUBLISH_RETRY_LIMIT: Duration = Duration::from_secs(60);
const RETRY_BACKOFF_MAXIMUM: Duration = Duration::from_secs(2);

/// A read of `topic` from `resume` (next offsets per partition), and for partitions it does
/// not name from the broker's end now: every record acknowledged after this call returns,
/// and none acknowledged before. (A plain live start follows the cache, whose end may lag
/// what the broker already acknowledged: a just-cleared retained message or a takeover
/// record written before this session would be read as new.) Also returns where the read
/// starts.
async fn read_from(
    exit: &Arc<dyn KafkaHandler>,
    topic: &str,
    filters: Vec<Filter>,
    resume: &[PartitionOffset],
) -> Result<(MergedStream, Vec<PartitionOffset>), StreamError> {
    let metadata = exit.metadata(topic).await?;
    let starts = futures_util::future::try_join_all(metadata.partitions.iter().map(|&partition| {
        let resumed = resume.iter().find(|p| p.partition == partition).copied();
        async move {
            match resumed {
                Some(resumed) => Ok(resumed),
                None => exit
                    .list_offset(topic, partition, OffsetSpec::Latest)
                    .await
                    .map(|offset| PartitionOffset { partition, offset }),
            }
        }
    }))
    .await?;
    let stream = exit
        .merged(MergedRequest {
            topic: topic.to_owned(),
            start: Start::Live,
            offsets: starts.clone(),
            filters,
            latest_per_key: false,
            partitions: Vec::new(),
        })
        .await?;
    Ok((stream, starts))
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
    /// Subscriptions (distinct filters) one session may hold: each is a Kafka read and a
    /// task of its own, and its saved state is written with every change.
    pub subscriptions_maximum: usize,
    pub routes: KafkaRoutes,
    /// Where the sessions topic is read and written.
    pub sessions_exit: Arc<dyn KafkaHandler>,
    pub events: Events,
    /// Whether the sessions topic was found compacted (checked until it is).
    pub sessions_compacted: Mutex<bool>,
    /// This gateway instance, as will and expiry signals name it.
    pub instance_id: String,
    /// The will and expiry signals of the sessions topic, as last read.
    pub signals: Mutex<Signals>,
    /// The sessions a takeover record can end, followed by one reader for all of them.
    pub takeovers: Takeovers,
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

    /// A record of the sessions topic, partitioned by client.
    fn session_record(&self, client_id: &str, key: Bytes, value: Option<Bytes>) -> ProduceRequest {
        ProduceRequest {
            topic: self.topics.sessions.clone(),
            key: Some(key),
            hash_key: Some(Bytes::from(client_id.to_owned())),
            value,
            acks: Acks::Leader,
            ..ProduceRequest::default()
        }
    }

    /// The state a client's earlier session left, unless it expired.
    async fn saved_state(&self, client_id: &str) -> Result<Option<SessionState>, StreamError> {
        let key = records::state_key(client_id);
        let filters = vec![Filter {
            conditions: vec![Condition::Key(key.clone())],
        }];
        let never = CancellationToken::new();
        let latest = latest_records(
            &self.sessions_exit,
            &self.topics.sessions,
            &filters,
            true,
            &never,
        )
        .await?;
        let expired = self
            .signals
            .lock()
            .map(|signals| signals.expired(client_id, records::now_millis()))
            .unwrap_or(false);
        Ok(latest
            .get(&key)
            .and_then(|record| record.value.as_deref())
            .and_then(records::decode::<SessionState>)
            .filter(|_| !expired))
    }

    async fn open(self: Arc<Self>, begin: SessionBegin) -> Result<OpenedSession, SessionRefused> {
        self.check_sessions_topic().await?;
        let client_id = begin.client_id.clone();
        let session_id = uuid::Uuid::new_v4();
        let migrate_key = format!("{client_id}{MIGRATE_SUFFIX}");
        // Followed before writing, by the gateway's reader of takeover records, which reads
        // from before this write: no later takeover record can be missed.
        if !self.takeovers.ready().await {
            return Err(SessionRefused::from(StreamError::Upstream(
                "the sessions topic cannot be read".to_owned(),
            )));
        }
        let closed = CancellationToken::new();
        self.takeovers
            .follow(&client_id, session_id, closed.clone(), begin.events.clone());
        let mut following = Following {
            takeovers: &self.takeovers,
            client_id: &client_id,
            session_id,
            open: false,
        };
        let mut migrate =
            self.session_record(&client_id, Bytes::from(migrate_key), Some(Bytes::new()));
        migrate.headers = vec![Header::new(
            Bytes::from_static(SENDER_ID.as_bytes()),
            Bytes::from(session_id.to_string()),
        )];
        let written = self
            .sessions_exit
            .produce(migrate)
            .await
            .map_err(SessionRefused::from)?;
        self.takeovers
            .written(&client_id, session_id, written.partition, written.offset);
        let resumed = if begin.clean_start {
            None
        } else {
            self.saved_state(&client_id)
                .await
                .map_err(SessionRefused::from)?
        };
        let session_present = resumed.is_some();
        let persistent = begin.session_expiry > 0;
        let mut writes = Vec::new();
        if resumed.is_none() {
            // A clean start, or nothing to resume: what an earlier session left is discarded.
            writes.push(self.session_record(&client_id, records::state_key(&client_id), None));
        }
        let will = begin.will.map(|will| {
            let authorized = self
                .publish_destination(&begin.authorization, &will.message.topic)
                .is_some();
            SessionWill {
                // The will waits no longer than the session lives.
                delay: will.delay.min(begin.session_expiry),
                message: will.message,
                lifetime_id: uuid::Uuid::new_v4().to_string(),
                will_id: uuid::Uuid::new_v4().to_string(),
                authorized,
            }
        });
        // The new session's signals replace the earlier session's, cancelling what was due.
        match &will {
            Some(will) => {
                let mut message = self.session_record(
                    &client_id,
                    records::will_message_key(&client_id, &will.lifetime_id),
                    Some(will.message.payload.clone()),
                );
                message.headers = vec![Header::new(
                    Bytes::from_static(records::WILL.as_bytes()),
                    records::encode(&WillHeader::of(
                        &will.message,
                        &will.will_id,
                        will.authorized,
                    )),
                )];
                writes.push(message);
                writes.push(self.will_signal(&client_id, will, -1));
            }
            None => writes.push(signal_record(
                &self,
                records::WILL_SIGNAL,
                records::will_signal_key(&client_id),
                Some(&client_id),
                None,
            )),
        }
        writes.push(self.expiry_signal(&client_id, begin.session_expiry, -1));
        futures_util::future::try_join_all(
            writes
                .into_iter()
                .map(|record| self.sessions_exit.produce(record)),
        )
        .await
        .map_err(SessionRefused::from)?;
        let awaiting_release = resumed
            .as_ref()
            .map(|state| state.awaiting_release.iter().copied().collect())
            .unwrap_or_default();
        let awaiting_completion: BTreeSet<u16> = resumed
            .as_ref()
            .map(|state| state.awaiting_completion.iter().copied().collect())
            .unwrap_or_default();
        let in_flight = resumed
            .as_ref()
            .map(|state| {
                state
                    .in_flight
                    .iter()
                    .map(|entry| (entry.packet_id, entry.records.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let context = Arc::new(SessionContext {
            proxy: self.clone(),
            client_id: client_id.clone(),
            authorization: begin.authorization.clone(),
            events: begin.events.clone(),
            closed,
            persistent,
            expiry: AtomicU32::new(begin.session_expiry),
            subscriptions: Mutex::new(BTreeMap::new()),
            starting_subscriptions: AtomicUsize::new(0),
            awaiting_release: Mutex::new(awaiting_release),
            in_flight: Mutex::new(in_flight),
            awaiting_completion: Mutex::new(awaiting_completion.clone()),
            producers: OnceLock::new(),
            changed: Notify::new(),
            version: AtomicU64::new(0),
            written: persistent.then(|| watch::channel(0).0),
        });
        if let Some(state) = resumed {
            restore_subscriptions(&context, state.subscriptions).await;
        }
        let awaiting_acknowledgement = context
            .subscriptions
            .lock()
            .map(|subscriptions| {
                subscriptions
                    .values()
                    .flat_map(|s| s.saved.outstanding.iter())
                    .filter(|o| o.stage == Stage::Sent)
                    .map(|o| o.packet_id)
                    .collect()
            })
            .unwrap_or_default();
        let awaiting_release = context
            .awaiting_release
            .lock()
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        if persistent {
            context.change();
            tokio::spawn(state_writer(context.clone()));
        }
        tracing::debug!(binding = %self.name, %client_id, session_present, "session opened");
        let accepted = SessionAccepted {
            session_present,
            maximum_qos: self.maximum_qos,
            retain_available: true,
            wildcard_available: true,
            subscription_ids_available: true,
            shared_available: false,
            session_expiry: None,
            awaiting_release,
            awaiting_completion: awaiting_completion.into_iter().collect(),
            awaiting_acknowledgement,
        };
        // From here the session unfollows itself when it finishes.
        following.open = true;
        drop(following);
        let session = KafkaSession {
            context,
            published: OnceLock::new(),
            finishing: Mutex::new(Some(Finishing {
                session_id,
                will: will.map(Box::new),
            })),
        };
        Ok((accepted, Box::new(session)))
    }

    /// The will signal of `will`, due at `deliver_at` (-1: not while connected).
    fn will_signal(&self, client_id: &str, will: &SessionWill, deliver_at: i64) -> ProduceRequest {
        let signal = WillSignal {
            instance_id: self.instance_id.clone(),
            client_id: client_id.to_owned(),
            delay: will.delay,
            deliver_at,
            lifetime_id: will.lifetime_id.clone(),
            will_id: will.will_id.clone(),
        };
        signal_record(
            self,
            records::WILL_SIGNAL,
            records::will_signal_key(client_id),
            Some(client_id),
            Some(records::encode(&signal)),
        )
    }

    /// The expiry signal of a session expiring `expiry` seconds after it ends, due at
    /// `expire_at` (-1: not while connected); its cancellation for a session that does not
    /// outlive its connection or never expires.
    fn expiry_signal(&self, client_id: &str, expiry: u32, expire_at: i64) -> ProduceRequest {
        let key = records::expiry_signal_key(client_id);
        let value = (expiry > 0 && expiry != u32::MAX).then(|| {
            records::encode(&ExpirySignal {
                instance_id: self.instance_id.clone(),
                client_id: client_id.to_owned(),
                delay: expiry,
                expire_at,
            })
        });
        signal_record(self, records::EXPIRY_SIGNAL, key, Some(client_id), value)
    }
}

/// A session being opened: unfollowed unless it opens.
struct Following<'a> {
    takeovers: &'a Takeovers,
    client_id: &'a str,
    session_id: uuid::Uuid,
    open: bool,
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        if !self.open {
            self.takeovers.unfollow(self.client_id, self.session_id);
        }
    }
}

/// The handler the proxy publishes for the `mqtt` kind.
pub(crate) struct ProxyHandler(pub Arc<MqttKafkaProxy>);

impl MqttHandler for ProxyHandler {
    fn session(&self, begin: SessionBegin) -> BoxFuture<'_, Result<OpenedSession, SessionRefused>> {
        Box::pin(self.0.clone().open(begin))
    }
}

/// A session's will, as kept in the sessions topic.
struct SessionWill {
    message: Message,
    /// Seconds, already capped by the session expiry.
    delay: u32,
    lifetime_id: String,
    will_id: String,
    authorized: bool,
}

/// A subscription being served.
struct ActiveSubscription {
    cancel: CancellationToken,
    /// What is saved of it, its acknowledged progress included.
    saved: SavedSubscription,
}

/// What one session shares with its tasks.
struct SessionContext {
    proxy: Arc<MqttKafkaProxy>,
    client_id: String,
    authorization: Authorization,
    events: EventSender,
    /// Cancelled when the session is over (ended, dropped or taken over).
    closed: CancellationToken,
    /// Whether the session outlives its connection (its state is written to Kafka).
    persistent: bool,
    /// Session expiry interval, seconds (DISCONNECT may change it).
    expiry: AtomicU32,
    /// Subscriptions by topic filter.
    subscriptions: Mutex<BTreeMap<String, ActiveSubscription>>,
    /// New subscriptions being started, which count against the quota already.
    starting_subscriptions: AtomicUsize,
    /// QoS 2 packet identifiers whose message is in Kafka and whose PUBREL has not come.
    awaiting_release: Mutex<BTreeSet<u16>>,
    /// QoS 2 publications being written, by packet identifier: where each record goes.
    in_flight: Mutex<BTreeMap<u16, Vec<PlacedRecord>>>,
    /// QoS 2 deliveries answered with PUBREC and not completed.
    awaiting_completion: Mutex<BTreeSet<u16>>,
    /// The idempotent producers of the session's QoS 2 publications; held while one is
    /// written, so that each producer's records reach a partition in sequence order. Made
    /// with the first, and boxed: most sessions never publish at QoS 2.
    producers: OnceLock<Box<tokio::sync::Mutex<Producers>>>,
    /// Notified when the state to save changed.
    changed: Notify,
    /// Counts the changes of the state to save.
    version: AtomicU64,
    /// The version last written to Kafka; only sessions that outlive their connection
    /// write their state.
    written: Option<watch::Sender<u64>>,
}

impl SessionContext {
    /// Marks the state changed; the version that will hold the change.
    fn change(&self) -> u64 {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.notify_one();
        version
    }

    /// Waits until the state as of `version` is in Kafka (or the session is over).
    async fn saved(&self, version: u64) {
        let Some(written) = &self.written else {
            return;
        };
        let mut written = written.subscribe();
        tokio::select! {
            _ = written.wait_for(|written| *written >= version) => {}
            () = self.closed.cancelled() => {}
        }
    }

    fn state(&self) -> SessionState {
        SessionState {
            expiry: self.expiry.load(Ordering::Relaxed),
            subscriptions: self
                .subscriptions
                .lock()
                .map(|subscriptions| {
                    let mut saved: Vec<_> =
                        subscriptions.values().map(|s| s.saved.clone()).collect();
                    saved.sort_by(|a, b| a.filter.cmp(&b.filter));
                    saved
                })
                .unwrap_or_default(),
            awaiting_release: self
                .awaiting_release
                .lock()
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
            awaiting_completion: self
                .awaiting_completion
                .lock()
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
            in_flight: self
                .in_flight
                .lock()
                .map(|in_flight| {
                    in_flight
                        .iter()
                        .map(|(&packet_id, records)| InFlight {
                            packet_id,
                            records: records.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn state_record(&self) -> ProduceRequest {
        self.proxy.session_record(
            &self.client_id,
            records::state_key(&self.client_id),
            Some(records::encode(&self.state())),
        )
    }

    /// Applies `update` to one of the kept sets of packet identifiers; a change is saved.
    fn update_ids(
        &self,
        ids: &Mutex<BTreeSet<u16>>,
        update: impl FnOnce(&mut BTreeSet<u16>) -> bool,
    ) {
        let changed = ids.lock().is_ok_and(|mut ids| update(&mut ids));
        if changed && self.persistent {
            self.change();
        }
    }

    /// Records that the subscription of `filter` delivered the QoS 1 or 2 message at
    /// `offset` of `partition`, so that a later connection sends it again with DUP.
    fn delivered(&self, filter: &str, partition: i32, offset: i64) {
        let moved = self
            .subscriptions
            .lock()
            .ok()
            .and_then(|mut subscriptions| {
                subscriptions
                    .get_mut(filter)
                    .map(|subscription| subscription.saved.note_delivered(partition, offset))
            })
            .unwrap_or(false);
        if moved && self.persistent {
            self.change();
        }
    }

    /// Applies `update` to the saved state of the subscription of `filter`; the change is
    /// saved.
    fn update_subscription(&self, filter: &str, update: impl FnOnce(&mut SavedSubscription)) {
        if let Ok(mut subscriptions) = self.subscriptions.lock()
            && let Some(subscription) = subscriptions.get_mut(filter)
        {
            update(&mut subscription.saved);
        }
        if self.persistent {
            self.change();
        }
    }

    /// Notes the record at `offset` of `partition` sent by the subscription of `filter` with
    /// `packet_id`. A delivery of any subscription that held the identifier before is done
    /// with it: the server gives an identifier again only once it is acknowledged.
    fn note_sent(&self, filter: &str, partition: i32, offset: i64, packet_id: u16) {
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            for subscription in subscriptions.values_mut() {
                subscription
                    .saved
                    .advance(packet_id, Stage::Sent, Stage::Done);
            }
            if let Some(subscription) = subscriptions.get_mut(filter) {
                subscription
                    .saved
                    .note_sent(partition, offset, packet_id, OUTSTANDING_MAXIMUM);
            }
        }
        if self.persistent {
            self.change();
        }
    }

    /// The delivery of the record at `offset` of `partition` by the subscription of `filter`
    /// outstanding from an earlier connection.
    fn outstanding_at(&self, filter: &str, partition: i32, offset: i64) -> Option<Outstanding> {
        self.subscriptions.lock().ok().and_then(|subscriptions| {
            subscriptions
                .get(filter)
                .and_then(|s| s.saved.outstanding_at(partition, offset))
        })
    }

    /// Moves the delivery sent with `packet_id` from stage `from` to `to`, whichever
    /// subscription sent it.
    fn advance_delivery(&self, packet_id: u16, from: Stage, to: Stage) {
        let moved = self.subscriptions.lock().is_ok_and(|mut subscriptions| {
            subscriptions
                .values_mut()
                .any(|s| s.saved.advance(packet_id, from, to))
        });
        if moved && self.persistent {
            self.change();
        }
    }

    /// Records how far the subscriber acknowledged the subscription of `filter`.
    fn acknowledged(&self, filter: &str, progress: &[PartitionOffset]) {
        if let Ok(mut subscriptions) = self.subscriptions.lock()
            && let Some(subscription) = subscriptions.get_mut(filter)
        {
            subscription.saved.offsets = progress.iter().map(|p| (p.partition, p.offset)).collect();
            subscription.saved.forget_acknowledged();
        }
        if self.persistent {
            self.change();
        }
    }
}

/// How long state changes are gathered into one write.
const STATE_WRITE_DELAY: Duration = Duration::from_millis(20);

/// Writes the session's state whenever it changes, one write at a time, until the session
/// is over (its last state is written when it ends, see [`conclude`]).
async fn state_writer(context: Arc<SessionContext>) {
    loop {
        tokio::select! {
            () = context.closed.cancelled() => return,
            () = context.changed.notified() => {}
        }
        tokio::time::sleep(STATE_WRITE_DELAY).await;
        if context.closed.is_cancelled() {
            return;
        }
        let version = context.version.load(Ordering::Acquire);
        let record = context.state_record();
        match produce_reliably(context.proxy.sessions_exit.clone(), record).await {
            Ok(_) => {
                if let Some(written) = &context.written {
                    written.send_replace(version);
                }
            }
            Err(error) => {
                tracing::debug!(%error, client_id = %context.client_id, "session state not written");
                // Tried again with the next change.
                context.changed.notify_one();
            }
        }
    }
}

/// How a session ended.
enum Ending {
    /// DISCONNECT; with reason 0x04 the will is published all the same.
    Normal { publish_will: bool },
    /// Another connection with the same client identifier took the session over.
    TakenOver,
    /// The connection went away without DISCONNECT.
    Abnormal,
}

/// One publication on its way to Kafka.
struct Publication {
    produce: BoxFuture<'static, ReasonCode>,
    outcome: oneshot::Sender<ReasonCode>,
}

/// What a session needs once it ends.
struct Finishing {
    session_id: uuid::Uuid,
    /// Boxed: a will carries a whole message, and most sessions have none.
    will: Option<Box<SessionWill>>,
}

/// An open session.
struct KafkaSession {
    context: Arc<SessionContext>,
    /// The queue toward [`publish_loop`], started by the first publication: most sessions
    /// of an idle fleet never publish.
    published: OnceLock<mpsc::Sender<Publication>>,
    /// Taken when the session finishes.
    finishing: Mutex<Option<Finishing>>,
}

impl KafkaSession {
    fn finish(&self, ending: Ending) {
        let Some(Finishing { session_id, will }) =
            self.finishing.lock().ok().and_then(|mut f| f.take())
        else {
            return;
        };
        let context = &self.context;
        // A session a takeover record ended finishes as taken over, whatever the server says.
        let ending = if context
            .proxy
            .takeovers
            .unfollow(&context.client_id, session_id)
        {
            Ending::TakenOver
        } else {
            ending
        };
        context.closed.cancel();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(conclude(context.clone(), will, ending));
            }
            Err(_) => {
                tracing::debug!(client_id = %context.client_id, "session end not written: no runtime");
            }
        }
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

/// The idempotent producers of one session's QoS 2 publications: one per Kafka topic, and
/// the next sequence number of each partition.
#[derive(Default)]
struct Producers {
    identities: HashMap<String, ProducerIdentity>,
    next: HashMap<(String, i32), i32>,
}

impl Producers {
    /// Chooses where `record` goes: its partition (as the Kafka client would for its key)
    /// and the next sequence of the topic's producer there (a new producer at first use).
    async fn place(
        &mut self,
        exit: &Arc<dyn KafkaHandler>,
        record: &ProduceRequest,
    ) -> Result<PlacedRecord, StreamError> {
        let topic = &record.topic;
        let producer = match self.identities.get(topic) {
            Some(&producer) => producer,
            None => {
                let producer = exit.init_producer(topic).await?;
                self.identities.insert(topic.clone(), producer);
                self.next.retain(|(known, _), _| known != topic);
                producer
            }
        };
        let metadata = exit.metadata(topic).await?;
        let count = u32::try_from(metadata.partitions.len()).unwrap_or(u32::MAX);
        let partition = record
            .hash_key
            .as_ref()
            .or(record.key.as_ref())
            .and_then(|key| zilla_binding_kafka::wire::partition_for_key(key, count))
            .and_then(|index| {
                metadata
                    .partitions
                    .get(usize::try_from(index).ok()?)
                    .copied()
            })
            .ok_or_else(|| StreamError::Upstream(format!("no partition of `{topic}`")))?;
        let next = self.next.entry((topic.clone(), partition)).or_insert(0);
        let sequence = *next;
        // Kafka's sequences wrap to 0 after i32::MAX.
        *next = sequence.checked_add(1).unwrap_or(0);
        Ok(PlacedRecord {
            topic: topic.clone(),
            partition,
            sequence: ProducerSequence { producer, sequence },
        })
    }

    /// Forgets the producer of `topic`: one of its sequences was spent without a known
    /// outcome, so what follows needs a new producer.
    fn forget(&mut self, topic: &str) {
        self.identities.remove(topic);
        self.next.retain(|(known, _), _| known != topic);
    }
}

/// Writes the records of a QoS 2 publication of a persistent session exactly once: each
/// record gets a partition and an idempotent producer sequence, kept in the session state
/// under the packet identifier before the record is written. A resend of the same packet
/// identifier (after a reconnection, on this gateway or another) writes the records with
/// the kept sequences: the broker keeps one copy whether or not the first write reached it.
async fn publish_exactly_once(
    context: Arc<SessionContext>,
    exit: Arc<dyn KafkaHandler>,
    packet_id: u16,
    mut records: Vec<ProduceRequest>,
) -> ReasonCode {
    let mut producers = context.producers.get_or_init(Box::default).lock().await;
    let kept = context
        .in_flight
        .lock()
        .ok()
        .and_then(|in_flight| in_flight.get(&packet_id).cloned())
        .filter(|placed| {
            placed.len() == records.len()
                && placed.iter().zip(&records).all(|(p, r)| p.topic == r.topic)
        });
    let placed = match kept {
        Some(placed) => placed,
        None => {
            let mut placed = Vec::with_capacity(records.len());
            for record in &records {
                match producers.place(&exit, record).await {
                    Ok(place) => placed.push(place),
                    Err(error) => {
                        tracing::debug!(%error, "no idempotent producer for a QoS 2 publication");
                        return publish_reason(&error);
                    }
                }
            }
            if let Ok(mut in_flight) = context.in_flight.lock() {
                in_flight.insert(packet_id, placed.clone());
            }
            let version = context.change();
            context.saved(version).await;
            placed
        }
    };
    for (record, place) in records.iter_mut().zip(&placed) {
        record.partition = Some(place.partition);
        record.idempotent = Some(place.sequence);
    }
    for record in records {
        let topic = record.topic.clone();
        if let Err(error) = produce_reliably(exit.clone(), record).await {
            tracing::debug!(%error, "QoS 2 publication refused");
            producers.forget(&topic);
            if let Ok(mut in_flight) = context.in_flight.lock() {
                in_flight.remove(&packet_id);
            }
            context.change();
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

/// The first route that takes publications to `topic`, its guards aside.
fn unguarded_destination(proxy: &MqttKafkaProxy, topic: &str) -> Option<Destination> {
    proxy
        .routes
        .iter()
        .find(|route| route.when.is_empty() || route.when.iter().any(|c| c.matches_publish(topic)))
        .map(|route| proxy.destination(route))
}

/// Publishes a will on behalf of `client_id`. `authorized` says the session's guards allowed
/// its topic when it connected: the gateway delivering it may not hold that session.
pub(crate) async fn publish_will(
    proxy: &MqttKafkaProxy,
    client_id: &str,
    authorized: bool,
    message: Message,
) {
    let destination = if authorized {
        unguarded_destination(proxy, &message.topic)
    } else {
        None
    };
    let Some(destination) = destination else {
        tracing::debug!(topic = %message.topic, "no route for the will");
        return;
    };
    let records = publication_records(proxy, client_id, &destination.topic, &message);
    let reason = publish_records(destination.exit, records).await;
    tracing::debug!(client_id, topic = %message.topic, reason = reason.0, "will published");
}

/// Writes what outlives a session once it ended: its last state, its expiry signal, and its
/// will signal due after the will delay when it ended abnormally (delivered by the signal
/// readers, see [`signals`]). A session taken over (by another connection on this gateway or
/// a takeover record of another gateway, see [`takeovers`]) writes none of these (the new
/// session's replace them) and publishes a will without delay itself.
async fn conclude(context: Arc<SessionContext>, will: Option<Box<SessionWill>>, ending: Ending) {
    let proxy = &context.proxy;
    let client_id = &context.client_id;
    let publish = match ending {
        Ending::TakenOver => {
            if let Some(will) = will {
                if will.delay == 0 {
                    publish_will(proxy, client_id, will.authorized, will.message).await;
                }
                let key = records::will_message_key(client_id, &will.lifetime_id);
                let removed = proxy.session_record(client_id, key, None);
                let _ = produce_reliably(proxy.sessions_exit.clone(), removed).await;
            }
            return;
        }
        Ending::Normal { publish_will } => publish_will,
        Ending::Abnormal => true,
    };
    let expiry = context.expiry.load(Ordering::Relaxed);
    let now = records::now_millis();
    let mut writes = Vec::new();
    if context.persistent && expiry > 0 {
        writes.push(context.state_record());
    } else {
        writes.push(proxy.session_record(client_id, records::state_key(client_id), None));
    }
    if expiry != u32::MAX {
        writes.push(proxy.expiry_signal(client_id, expiry, now + i64::from(expiry) * 1000));
    }
    if let Some(will) = &will {
        if publish {
            let delay = will.delay.min(expiry);
            writes.push(proxy.will_signal(client_id, will, now + i64::from(delay) * 1000));
        } else {
            let key = records::will_message_key(client_id, &will.lifetime_id);
            writes.push(proxy.session_record(client_id, key, None));
            writes.push(signal_record(
                proxy,
                records::WILL_SIGNAL,
                records::will_signal_key(client_id),
                Some(client_id),
                None,
            ));
        }
    }
    for record in writes {
        if let Err(error) = produce_reliably(proxy.sessions_exit.clone(), record).await {
            tracing::debug!(%error, %client_id, "session end not written");
        }
    }
}

/// One subscription of a session: its filter and options.
struct SubscriptionSpec {
    filter: String,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
    deliver_retained: bool,
    /// How far the subscription delivered QoS 1 and 2 messages over earlier connections
    /// (next offset per partition): messages below are delivered again with DUP.
    delivered: Vec<(i32, i64)>,
    /// Its deliveries outstanding over earlier connections.
    outstanding: Vec<Outstanding>,
}

/// The filters of a subscription's reads.
fn subscription_filters(context: &SessionContext, spec: &SubscriptionSpec) -> Vec<Filter> {
    let mut conditions = vec![headers::topic_condition(&spec.filter)];
    if spec.options.no_local {
        conditions.push(headers::not_local(&context.client_id));
    }
    vec![Filter { conditions }]
}

/// The most records one read of latest values keeps (retained messages replayed to one
/// subscription), and the most bytes of keys, values and headers: keys past either are not
/// kept (and a warning says so).
const LATEST_RECORDS_MAXIMUM: usize = 65_536;
const LATEST_RECORDS_BYTES_MAXIMUM: usize = 64 << 20;
/// The first and the longest pause before a read of the latest records starts again
/// where the cache's end stopped it.
const LATEST_RECORDS_PAUSE_MINIMUM: Duration = Duration::from_millis(10);
const LATEST_RECORDS_PAUSE_MAXIMUM: Duration = Duration::from_millis(200);
/// How long a read of the latest records waits, with no partition getting closer to the
/// broker's end, for the cache to fetch more (Kafka unreachable, or partitions the cache does
/// not know yet) before it fails.
const LATEST_RECORDS_PATIENCE: Duration = Duration::from_secs(30);

/// The latest record of every key of the compacted `topic` matching `filters`, as of the
/// broker's end when called. The cache's end may lag the broker's, so the read goes on
/// until every partition reached the broker's end: a record deleted just before is not
/// returned. With `filter_in_read` the read itself is filtered (only key filters: their
/// tombstones match too, and a key's records all match or none does); otherwise it reads
/// everything and filters values (header filters: a tombstone carries no headers, yet must
/// delete what it replaces). An error when the cache gets no closer to the broker's end for
/// [`LATEST_RECORDS_PATIENCE`].
pub(crate) async fn latest_records(
    exit: &Arc<dyn KafkaHandler>,
    topic: &str,
    filters: &[Filter],
    filter_in_read: bool,
    cancelled: &CancellationToken,
) -> Result<BTreeMap<Bytes, Arc<KafkaRecord>>, StreamError> {
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
    let mut latest = BTreeMap::new();
    if reached(&[]) {
        return Ok(latest);
    }
    // Bytes of the records in `latest`, and whether a key was left out for the bounds.
    let mut bytes = 0usize;
    let mut left_out = false;
    // How far each partition got toward its end: while it moves, the cache is catching up.
    let standing = |progress: &[PartitionOffset]| -> Vec<i64> {
        ends.iter()
            .map(|end| {
                progress
                    .iter()
                    .find(|p| p.partition == end.partition)
                    .map_or(-1, |p| p.offset.min(end.offset))
            })
            .collect()
    };
    // Where the next read starts (empty: at the beginning), and how long to let the cache
    // fetch before it.
    let mut from: Vec<PartitionOffset> = Vec::new();
    let mut pause = LATEST_RECORDS_PAUSE_MINIMUM;
    let mut stood = standing(&[]);
    let mut waiting_since: Option<tokio::time::Instant> = None;
    loop {
        let mut replay = exit
            .merged(MergedRequest {
                topic: topic.to_owned(),
                start: Start::Historical,
                offsets: from.clone(),
                filters: if filter_in_read {
                    filters.to_vec()
                } else {
                    Vec::new()
                },
                latest_per_key: true,
                partitions: Vec::new(),
            })
            .await?;
        loop {
            let item = tokio::select! {
                biased;
                () = cancelled.cancelled() => return Ok(BTreeMap::new()),
                item = replay.next() => item,
            };
            let progress = match item {
                Some(Ok(MergedItem::Message { message, progress })) => {
                    if let Some(key) = message.key.clone() {
                        let earlier = latest.remove(&key);
                        bytes -= earlier.as_ref().map_or(0, |m| m.payload_bytes());
                        let wanted = message.value.is_some()
                            && (filter_in_read
                                || zilla_binding_kafka::kind::passes(filters, &message));
                        let size = message.payload_bytes();
                        let room = latest.len() < LATEST_RECORDS_MAXIMUM
                            && bytes + size <= LATEST_RECORDS_BYTES_MAXIMUM;
                        if wanted && room {
                            bytes += size;
                            latest.insert(key, message);
                        } else if wanted && !left_out {
                            left_out = true;
                            tracing::warn!(
                                topic,
                                records = latest.len(),
                                bytes,
                                "latest records past the bounds of one read are left out"
                            );
                        }
                    }
                    progress
                }
                Some(Ok(MergedItem::Synced(progress))) => {
                    // A read of no partition (the cache found none) has nothing to wait for.
                    if reached(&progress) || progress.is_empty() {
                        return Ok(latest);
                    }
                    // The read reached the cache's end, short of the broker's. What the cache
                    // fetches next and yields no item (records the filters skip, control
                    // records, records its models drop) would leave this read waiting for a
                    // later record that may never come: read again from here once the cache
                    // fetched more.
                    let now = standing(&progress);
                    if now != stood {
                        stood = now;
                        waiting_since = None;
                        pause = LATEST_RECORDS_PAUSE_MINIMUM;
                    }
                    from = progress.to_vec();
                    break;
                }
                // The latest record per key is kept above whether or not the read deduplicates.
                Some(Ok(MergedItem::Snapshot(_))) => continue,
                Some(Err(error)) => return Err(error),
                None => return Ok(latest),
            };
            if reached(&progress) {
                return Ok(latest);
            }
        }
        drop(replay);
        let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= LATEST_RECORDS_PATIENCE {
            return Err(StreamError::Upstream(format!(
                "the cache of `{topic}` did not reach the broker's end"
            )));
        }
        tokio::select! {
            biased;
            () = cancelled.cancelled() => return Ok(BTreeMap::new()),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(LATEST_RECORDS_PAUSE_MAXIMUM);
    }
}

/// Delivers the retained messages matching a new subscription, then the messages of `live`
/// (opened before the subscription was acknowledged, so nothing published after SUBACK is
/// missed, nor anything published during the retained replay), recording how far the
/// subscriber acknowledged them.
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
        match latest_records(&destination.exit, topic, &filters, false, &cancelled).await {
            Ok(retained) => {
                for message in retained.values() {
                    if let Some(message) = headers::message_of(message)
                        && !deliveries.deliver(message, true, None, None).await
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
        tokio::select! {
            biased;
            () = cancelled.cancelled() => return,
            Some(progress) = deliveries.unacknowledged.next() => deliveries.settled(progress),
            item = live.next() => match item {
                Some(Ok(MergedItem::Message { message, progress })) => {
                    let place = (message.partition, message.offset);
                    let delivered = match headers::message_of(&message) {
                        Some(message) => {
                            deliveries.deliver(message, false, Some(progress), Some(place)).await
                        }
                        // Nothing to deliver: acknowledged as far as the subscriber is.
                        None => {
                            if deliveries.unacknowledged.is_empty() {
                                deliveries.settled(Some(progress));
                            }
                            true
                        }
                    };
                    if !delivered {
                        return;
                    }
                }
                Some(Ok(MergedItem::Synced(progress))) => {
                    if deliveries.unacknowledged.is_empty() {
                        deliveries.settled(Some(progress));
                    }
                }
                Some(Ok(MergedItem::Snapshot(_))) => {}
                Some(Err(error)) => tracing::debug!(%error, "subscription read failed; retrying"),
                None => return,
            },
        }
    }
}

/// What a delivery's acknowledgement resolves to: the read's progress past it (`None` for a
/// retained message, which is not read from the messages topic).
type Settled = BoxFuture<'static, Option<Arc<[PartitionOffset]>>>;

/// Deliveries of one subscription not yet acknowledged by the subscriber.
struct Deliveries<'a> {
    context: &'a Arc<SessionContext>,
    spec: &'a SubscriptionSpec,
    unacknowledged: FuturesOrdered<Settled>,
}

impl Deliveries<'_> {
    /// Records the progress of a delivery the subscriber acknowledged (with every one
    /// before it).
    fn settled(&self, progress: Option<Arc<[PartitionOffset]>>) {
        if let Some(progress) = progress {
            self.context.acknowledged(&self.spec.filter, &progress);
        }
    }

    /// Delivers one message (`place`: its partition and offset in the messages topic);
    /// false once the session is gone.
    async fn deliver(
        &mut self,
        mut message: Message,
        replayed: bool,
        progress: Option<Arc<[PartitionOffset]>>,
        place: Option<(i32, i64)>,
    ) -> bool {
        // A full window waits for the subscriber: the Kafka read does not run ahead of
        // what the subscriber acknowledges by more than the window.
        while self.unacknowledged.len() >= DELIVERY_WINDOW {
            tokio::select! {
                Some(settled) = self.unacknowledged.next() => self.settled(settled),
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
        let mut dup = false;
        let mut packet_id = None;
        let mut on_sent = None;
        let mut done_on_acknowledgement = None;
        if let Some((partition, offset)) = place
            && message.qos != QoS::AtMostOnce
        {
            match self
                .context
                .outstanding_at(&self.spec.filter, partition, offset)
                .map(|o| (o.stage, o.packet_id))
            {
                // The subscriber has it (PUBREC: its PUBREL is sent again at CONNACK).
                Some((Stage::Received | Stage::Done, _)) => {
                    self.unacknowledged
                        .push_back(Box::pin(std::future::ready(progress)));
                    return true;
                }
                // Sent over an earlier connection: again with its identifier (MQTT 5 §4.4).
                Some((Stage::Sent, id)) => {
                    dup = true;
                    packet_id = Some(id);
                }
                None => dup = records::delivered_before(&self.spec.delivered, partition, offset),
            }
            self.context.delivered(&self.spec.filter, partition, offset);
            if self.context.persistent {
                let context = Arc::clone(self.context);
                let filter = self.spec.filter.clone();
                on_sent = Some(OnSent(Box::new(move |id| {
                    context.note_sent(&filter, partition, offset, id);
                })));
                if message.qos == QoS::AtLeastOnce {
                    done_on_acknowledgement = Some((
                        Arc::clone(self.context),
                        self.spec.filter.clone(),
                        partition,
                        offset,
                    ));
                }
            }
        }
        let acknowledged = if message.qos == QoS::AtMostOnce {
            self.unacknowledged
                .push_back(Box::pin(std::future::ready(progress)));
            None
        } else {
            let (sender, receiver) = oneshot::channel::<()>();
            self.unacknowledged.push_back(Box::pin(async move {
                // A delivery the session dropped unacknowledged settles nothing.
                let acknowledged = receiver.await.ok();
                // PUBACK: not sent again, though an earlier one is not acknowledged yet.
                if acknowledged.is_some()
                    && let Some((context, filter, partition, offset)) = done_on_acknowledgement
                {
                    context.update_subscription(&filter, |saved| saved.done_at(partition, offset));
                }
                acknowledged.and(progress)
            }));
            Some(sender)
        };
        let delivery = SessionEvent::Deliver(Box::new(Delivery {
            message,
            acknowledged,
            dup,
            packet_id,
            on_sent,
        }));
        tokio::select! {
            sent = self.context.events.send(delivery) => sent.is_ok(),
            () = self.context.closed.cancelled() => false,
        }
    }
}

/// Starts serving one subscription: opens its read (from `resume`, else from now), and
/// registers it under its filter, replacing (and ending) one with the same filter. Whether
/// a subscription with that filter existed before.
async fn start_subscription(
    context: &Arc<SessionContext>,
    destination: Destination,
    mut spec: SubscriptionSpec,
    resume: &[PartitionOffset],
    retain_handling: Option<RetainHandling>,
) -> Result<bool, StreamError> {
    let (live, starts) = read_from(
        &destination.exit,
        &destination.topic,
        subscription_filters(context, &spec),
        resume,
    )
    .await?;
    let cancel = context.closed.child_token();
    let mut saved = SavedSubscription::new(
        &spec.filter,
        &spec.options,
        spec.subscription_id,
        &destination.topic,
        &starts,
    );
    saved.delivered = spec.delivered.clone();
    saved.outstanding = spec.outstanding.clone();
    let previous = context
        .subscriptions
        .lock()
        .ok()
        .and_then(|mut subscriptions| {
            subscriptions.insert(
                spec.filter.clone(),
                ActiveSubscription {
                    cancel: cancel.clone(),
                    saved,
                },
            )
        });
    let existed = previous.is_some();
    if let Some(previous) = previous {
        previous.cancel.cancel();
    }
    spec.deliver_retained = match retain_handling {
        Some(RetainHandling::OnSubscribe) => true,
        Some(RetainHandling::OnNewSubscribe) => !existed,
        Some(RetainHandling::Never) | None => false,
    };
    context.change();
    tokio::spawn(subscription(
        context.clone(),
        destination,
        spec,
        live,
        cancel,
    ));
    Ok(existed)
}

/// Serves again the subscriptions of a resumed session, each from where its subscriber
/// acknowledged (so what was published meanwhile is delivered), without retained messages.
/// A subscription the session's authorization no longer routes is dropped.
async fn restore_subscriptions(context: &Arc<SessionContext>, saved: Vec<SavedSubscription>) {
    for subscription in saved {
        let Some(destination) = context
            .proxy
            .subscribe_destination(&context.authorization, &subscription.filter)
        else {
            continue;
        };
        let resume = if destination.topic == subscription.topic {
            subscription.partition_offsets()
        } else {
            Vec::new()
        };
        let spec = SubscriptionSpec {
            filter: subscription.filter.clone(),
            options: subscription.options(),
            subscription_id: subscription.subscription_id,
            deliver_retained: false,
            delivered: if destination.topic == subscription.topic {
                subscription.delivered.clone()
            } else {
                Vec::new()
            },
            outstanding: if destination.topic == subscription.topic {
                subscription.outstanding.clone()
            } else {
                Vec::new()
            },
        };
        if let Err(error) = start_subscription(context, destination, spec, &resume, None).await {
            tracing::debug!(%error, filter = %subscription.filter, "subscription not restored");
        }
    }
}

/// A place in a session's subscription quota, taken for a new filter while its subscription
/// starts (it then counts among the session's subscriptions), and given back when dropped.
struct SubscriptionPlace<'a>(Option<&'a AtomicUsize>);

impl<'a> SubscriptionPlace<'a> {
    /// A place for `filter`, or `None` when the session holds its maximum; a filter the session
    /// already subscribes needs none.
    fn take(context: &'a SessionContext, filter: &str) -> Option<Self> {
        let subscriptions = context.subscriptions.lock().ok()?;
        if subscriptions.contains_key(filter) {
            return Some(Self(None));
        }
        // Taken under the subscriptions' lock, which every start also holds to insert.
        let starting = context.starting_subscriptions.load(Ordering::Acquire);
        if subscriptions.len() + starting >= context.proxy.subscriptions_maximum {
            return None;
        }
        context
            .starting_subscriptions
            .fetch_add(1, Ordering::AcqRel);
        Some(Self(Some(&context.starting_subscriptions)))
    }
}

impl Drop for SubscriptionPlace<'_> {
    fn drop(&mut self) {
        if let Some(starting) = self.0 {
            starting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Subscribes each filter: opens its live read, then starts delivering; the reason codes
/// for SUBACK.
async fn subscribe_filters(
    context: Arc<SessionContext>,
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
        // A new filter past the session's quota is refused; one replacing a subscription
        // with the same filter is not new. Its place is taken before its read is opened, so
        // SUBSCRIBEs sent back to back (answered concurrently) cannot all pass one count.
        let Some(_place) = SubscriptionPlace::take(&context, &filter) else {
            reasons.push(ReasonCode::QUOTA_EXCEEDED);
            continue;
        };
        let granted = options.qos.min(proxy.maximum_qos);
        let spec = SubscriptionSpec {
            filter,
            options: SubscriptionOptions {
                qos: granted,
                ..options
            },
            subscription_id: request.subscription_id,
            deliver_retained: false,
            delivered: Vec::new(),
            outstanding: Vec::new(),
        };
        // A subscription replacing one with the same filter goes on from where the
        // subscriber acknowledged the replaced one: no message is lost to the replacement.
        let (resume, delivered, outstanding) = context
            .subscriptions
            .lock()
            .ok()
            .and_then(|subscriptions| {
                subscriptions
                    .get(&spec.filter)
                    .filter(|existing| existing.saved.topic == destination.topic)
                    .map(|existing| {
                        (
                            existing.saved.partition_offsets(),
                            existing.saved.delivered.clone(),
                            existing.saved.outstanding.clone(),
                        )
                    })
            })
            .unwrap_or_default();
        let spec = SubscriptionSpec {
            delivered,
            outstanding,
            ..spec
        };
        let topic = destination.topic.clone();
        match start_subscription(
            &context,
            destination,
            spec,
            &resume,
            Some(options.retain_handling),
        )
        .await
        {
            Ok(_) => reasons.push(ReasonCode(granted as u8)),
            Err(error) => {
                tracing::debug!(%error, %topic, "subscription cannot read");
                reasons.push(ReasonCode::UNSPECIFIED_ERROR);
            }
        }
    }
    reasons
}

impl KafkaSession {
    /// Queues a publication: `produce` makes its records from the destination's exit and
    /// records; a topic no route takes is refused.
    fn queue_publication(
        &self,
        message: Message,
        produce: impl FnOnce(
            Arc<dyn KafkaHandler>,
            Vec<ProduceRequest>,
        ) -> BoxFuture<'static, ReasonCode>
        + Send
        + 'static,
    ) -> BoxFuture<'_, Result<Acknowledgement, StreamError>> {
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
                        produce(destination.exit, records)
                    }
                    None => Box::pin(async { ReasonCode::NOT_AUTHORIZED }),
                };
            let (outcome, reason) = oneshot::channel();
            let published = self.published.get_or_init(|| {
                let (published, queue) = mpsc::channel(PUBLISH_WINDOW);
                tokio::spawn(publish_loop(queue));
                published
            });
            published
                .send(Publication { produce, outcome })
                .await
                .map_err(|_| StreamError::Stopped)?;
            let acknowledgement: Acknowledgement =
                Box::pin(async move { reason.await.map_err(|_| StreamError::Stopped) });
            Ok(acknowledgement)
        })
    }
}

impl MqttSession for KafkaSession {
    fn publish(&self, message: Message) -> BoxFuture<'_, Result<Acknowledgement, StreamError>> {
        self.queue_publication(message, |exit, records| {
            Box::pin(publish_records(exit, records))
        })
    }

    fn publish_exactly_once(
        &self,
        packet_id: u16,
        message: Message,
    ) -> BoxFuture<'_, Result<Acknowledgement, StreamError>> {
        if !self.context.persistent {
            // Nothing outlives the connection: a resend cannot come from a new one.
            return self.publish(message);
        }
        let context = self.context.clone();
        self.queue_publication(message, move |exit, records| {
            Box::pin(publish_exactly_once(context, exit, packet_id, records))
        })
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Acknowledgement<Vec<ReasonCode>>, StreamError>> {
        let subscribed = subscribe_filters(self.context.clone(), request);
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
                    .context
                    .subscriptions
                    .lock()
                    .ok()
                    .and_then(|mut subscriptions| subscriptions.remove(filter))
                {
                    Some(subscription) => {
                        subscription.cancel.cancel();
                        ReasonCode::SUCCESS
                    }
                    None => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                }
            })
            .collect();
        self.context.change();
        Box::pin(async move {
            let acknowledgement: Acknowledgement<Vec<ReasonCode>> =
                Box::pin(async move { Ok(reasons) });
            Ok(acknowledgement)
        })
    }

    fn received(&self, packet_id: u16) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let context = &self.context;
            if !context.persistent {
                return;
            }
            if let Ok(mut ids) = context.awaiting_release.lock() {
                ids.insert(packet_id);
            }
            if let Ok(mut in_flight) = context.in_flight.lock() {
                in_flight.remove(&packet_id);
            }
            let version = context.change();
            context.saved(version).await;
        })
    }

    fn delivery_received(&self, packet_id: u16) -> BoxFuture<'static, ()> {
        let context = self.context.clone();
        if !context.persistent {
            return Box::pin(std::future::ready(()));
        }
        context.update_ids(&context.awaiting_completion, |ids| ids.insert(packet_id));
        context.advance_delivery(packet_id, Stage::Sent, Stage::Received);
        let version = context.change();
        Box::pin(async move { context.saved(version).await })
    }

    fn delivery_completed(&self, packet_id: u16) {
        self.context
            .update_ids(&self.context.awaiting_completion, |ids| {
                ids.remove(&packet_id)
            });
        self.context
            .advance_delivery(packet_id, Stage::Received, Stage::Done);
    }

    fn released(&self, packet_id: u16) {
        self.context
            .update_ids(&self.context.awaiting_release, |ids| ids.remove(&packet_id));
    }

    fn end(&self, end: SessionEnd) {
        if let Some(expiry) = end.session_expiry {
            self.context.expiry.store(expiry, Ordering::Relaxed);
        }
        let ending = if end.reason == ReasonCode::SESSION_TAKEN_OVER {
            Ending::TakenOver
        } else {
            Ending::Normal {
                publish_will: end.reason == ReasonCode::DISCONNECT_WITH_WILL,
            }
        };
        self.finish(ending);
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

    /// A one-partition compacted topic whose fetches see only the records below `visible`,
    /// while the broker's end (ListOffsets) counts them all: a cache that lags the broker.
    struct LaggingBroker {
        records: Mutex<Vec<KafkaRecord>>,
        visible: watch::Sender<i64>,
    }

    impl LaggingBroker {
        /// The client's state at offset 0, visible, and its expiry signal at 1, not yet.
        fn one_behind() -> Arc<Self> {
            Arc::new(LaggingBroker {
                records: Mutex::new(vec![
                    Self::record(0, "client", "state"),
                    Self::record(1, "client#expiry", "signal"),
                ]),
                visible: watch::channel(1).0,
            })
        }

        fn record(offset: i64, key: &str, value: &str) -> KafkaRecord {
            KafkaRecord {
                partition: 0,
                offset,
                timestamp: 0,
                key: Some(Bytes::from(key.to_owned())),
                value: Some(Bytes::from(value.to_owned())),
                headers: Vec::new(),
            }
        }
    }

    impl KafkaHandler for LaggingBroker {
        fn merged(&self, _: MergedRequest) -> BoxFuture<'_, Result<MergedStream, StreamError>> {
            Box::pin(async { Err(StreamError::NoRoute) })
        }

        fn produce(&self, _: ProduceRequest) -> BoxFuture<'_, Result<ProduceAck, StreamError>> {
            Box::pin(async { Err(StreamError::NoRoute) })
        }

        fn metadata(
            &self,
            _: &str,
        ) -> BoxFuture<'_, Result<zilla_binding_kafka::kind::TopicMetadata, StreamError>> {
            Box::pin(async {
                Ok(zilla_binding_kafka::kind::TopicMetadata {
                    partitions: vec![0],
                })
            })
        }

        fn describe(
            &self,
            _: &str,
        ) -> BoxFuture<'_, Result<zilla_binding_kafka::kind::TopicConfig, StreamError>> {
            Box::pin(async {
                Ok(zilla_binding_kafka::kind::TopicConfig {
                    compacted: true,
                    ..zilla_binding_kafka::kind::TopicConfig::default()
                })
            })
        }

        fn fetch(
            &self,
            request: zilla_binding_kafka::kind::FetchRequest,
        ) -> BoxFuture<'_, Result<zilla_binding_kafka::kind::FetchBatch, StreamError>> {
            Box::pin(async move {
                let mut visible = self.visible.subscribe();
                // Parked at the visible end, as a broker parks a fetch at the log end.
                let _ = tokio::time::timeout(
                    Duration::from_millis(request.max_wait_ms.max(0) as u64),
                    visible.wait_for(|&visible| visible > request.offset),
                )
                .await;
                let visible = *visible.borrow();
                let messages: Vec<KafkaRecord> = self
                    .records
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| r.offset >= request.offset && r.offset < visible)
                    .cloned()
                    .collect();
                Ok(zilla_binding_kafka::kind::FetchBatch {
                    next_offset: messages.last().map_or(request.offset, |r| r.offset + 1),
                    messages,
                    high_watermark: visible,
                    log_start_offset: 0,
                })
            })
        }

        fn list_offset(
            &self,
            _: &str,
            _: i32,
            spec: OffsetSpec,
        ) -> BoxFuture<'_, Result<i64, StreamError>> {
            let end = match spec {
                OffsetSpec::Latest => self.records.lock().unwrap().len() as i64,
                _ => 0,
            };
            Box::pin(async move { Ok(end) })
        }
    }

    /// The real cache in front of `broker`, parking its fetches for 20 ms.
    fn lagging_cache(broker: Arc<LaggingBroker>) -> Arc<dyn KafkaHandler> {
        let cache = zilla_binding_kafka::cache::Cache::new(
            broker,
            HashMap::new(),
            zilla_binding_kafka::cache::CacheTuning {
                fetch_max_wait_ms: 20,
                ..zilla_binding_kafka::cache::CacheTuning::default()
            },
        );
        Arc::new(zilla_binding_kafka::cache::CacheHandler::new(Arc::new(
            cache,
        )))
    }

    /// The broker already has a record of another key that the cache has not fetched: the
    /// key's read reaches the cache's end short of the broker's, and the record, once
    /// fetched, is skipped by the filter. The read must still end, with the key's record.
    #[tokio::test]
    async fn a_key_read_ends_when_the_cache_lags_the_broker() {
        let broker = LaggingBroker::one_behind();
        let exit = lagging_cache(broker.clone());
        // The cache caches the topic and fetches what is visible.
        let mut warm = exit
            .merged(MergedRequest {
                topic: "sessions".into(),
                start: Start::Historical,
                offsets: Vec::new(),
                filters: Vec::new(),
                latest_per_key: false,
                partitions: Vec::new(),
            })
            .await
            .unwrap();
        while !matches!(warm.next().await, Some(Ok(MergedItem::Synced(_)))) {}
        let key = Bytes::from_static(b"client");
        let filters = vec![Filter {
            conditions: vec![Condition::Key(key.clone())],
        }];
        let reading = tokio::spawn({
            let exit = exit.clone();
            let filters = filters.clone();
            async move {
                latest_records(&exit, "sessions", &filters, true, &CancellationToken::new()).await
            }
        });
        // Let the read reach the cache's end, then let the cache fetch the rest.
        tokio::time::sleep(Duration::from_millis(200)).await;
        broker.visible.send_replace(2);
        let latest = tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("the read never ended")
            .unwrap()
            .unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[&key].value.as_deref(), Some(&b"state"[..]));
    }

    /// Latest records past the byte bound of one read are left out: 80 retained messages of
    /// 1 MiB each give the first that fit in 64 MiB, not all 80 (nor as many as the count
    /// bound allows).
    #[tokio::test]
    async fn a_read_of_latest_records_keeps_within_its_byte_bound() {
        let value = Bytes::from(vec![b'v'; 1 << 20]);
        let records: Vec<KafkaRecord> = (0..80)
            .map(|offset| KafkaRecord {
                value: Some(value.clone()),
                ..LaggingBroker::record(offset, &format!("topic/{offset:02}"), "")
            })
            .collect();
        let broker = Arc::new(LaggingBroker {
            records: Mutex::new(records),
            visible: watch::channel(80).0,
        });
        let exit = lagging_cache(broker);
        let latest = latest_records(&exit, "retained", &[], false, &CancellationToken::new())
            .await
            .unwrap();
        let bytes: usize = latest.values().map(|m| m.payload_bytes()).sum();
        assert!(bytes <= LATEST_RECORDS_BYTES_MAXIMUM, "{bytes} bytes kept");
        assert_eq!(latest.len(), 63);
        let kept: Vec<_> = latest.keys().cloned().collect();
        let first: Vec<_> = (0..63)
            .map(|offset| Bytes::from(format!("topic/{offset:02}")))
            .collect();
        assert_eq!(kept, first);
    }

    /// A cache that never fetches what the broker already has: the read fails once no
    /// partition got closer to the broker's end for the patience, instead of waiting forever.
    #[tokio::test(start_paused = true)]
    async fn a_key_read_fails_when_the_cache_never_reaches_the_broker() {
        let broker = LaggingBroker::one_behind();
        let exit = lagging_cache(broker);
        let filters = vec![Filter {
            conditions: vec![Condition::Key(Bytes::from_static(b"client"))],
        }];
        let started = tokio::time::Instant::now();
        let never = CancellationToken::new();
        let read = latest_records(&exit, "sessions", &filters, true, &never);
        let result = tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("the read never ended");
        assert!(
            matches!(result, Err(StreamError::Upstream(_))),
            "{result:?}"
        );
        assert!(started.elapsed() >= LATEST_RECORDS_PATIENCE);
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
