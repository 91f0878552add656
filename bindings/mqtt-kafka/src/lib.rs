//! The `mqtt-kafka` binding: an MQTT broker whose messages, retained messages and session
//! signals live in Kafka topics, so that gateways sharing a Kafka cluster serve the same
//! clients, and Kafka producers and consumers exchange messages with MQTT clients.
//!
//! A `proxy` (accepts `mqtt`, opens `kafka`; its exit is normally a kafka `cache_client`, so
//! that one Kafka fetch per partition serves every subscriber of the gateway) takes the
//! sessions an `mqtt` server opens:
//!
//! - **Publish.** Each PUBLISH becomes one record on the Kafka topic of the first route whose
//!   `when.publish` matches the MQTT topic (`with.messages`, else `options.topics.messages`):
//!   key = the MQTT topic, value = the payload, headers in Zilla's layout (see [`headers`]:
//!   `zilla:filter` per topic level, `zilla:local`, `zilla:expiry`, `zilla:content-type`,
//!   `zilla:format`, `zilla:reply-to`/`zilla:reply-key`/`zilla:reply-filter`,
//!   `zilla:correlation-id`, user properties, `zilla:qos`). A `clients` pattern whose
//!   `{identity}` level matches the topic makes that level the partitioning key. A retained
//!   message is also written to `options.topics.retained`, keyed by topic (an empty retained
//!   payload writes a tombstone there, clearing the topic's retained message). A QoS 1
//!   PUBACK or QoS 2 PUBREC is sent only once Kafka has acknowledged every record of the
//!   message (leader acks; QoS 0 is produced without acks). While Kafka is unreachable a
//!   publication is retried for up to 60 s before it is refused; a refusal is answered with
//!   0x87 (no route or not authorized), 0x83 (Kafka rejected the record) or 0x80, and an
//!   MQTT 3.1.1 client is disconnected instead, as it has no reason codes. Publications of
//!   one session are sent in order, up to 64 awaiting their acks.
//! - **Subscribe.** Each topic filter of a SUBSCRIBE is served by a merged read of the
//!   route's messages topic from the broker's end at the time of the SUBSCRIBE (asked with
//!   ListOffsets before SUBACK, so a message acknowledged before SUBACK is not delivered
//!   and one acknowledged after it is, whatever the cache has fetched), filtered on the
//!   `zilla:filter` header sequence (`+` = one level, `#` = any number), so through a cache
//!   the Kafka fetches do not grow with the number of subscribers. Before live messages, the
//!   retained messages matching the filter are read from the retained topic (latest per key;
//!   at most 65 536 of them or 64 MiB of keys, values and headers per subscription, those past
//!   either left out with a warning) and delivered with the retain flag, following the retain handling option (0: on every
//!   subscribe, 1: only when the filter was not already subscribed, 2: never). Live messages
//!   are delivered without the retain flag (retain-as-published has no flag to keep: the
//!   messages topic holds none). No-local excludes records whose `zilla:local` is the
//!   subscriber. The delivered QoS is the lowest of the record's `zilla:qos` (QoS 2 for
//!   records without one, such as those written by other Kafka producers), the granted QoS
//!   and `publish.qosMax`; expired messages (`zilla:expiry` past the record timestamp) are
//!   skipped and the others carry their remaining expiry. At QoS 1 and 2 a subscription
//!   reads no further ahead than 64 deliveries the subscriber has not acknowledged.
//!   Subscription identifiers are carried; shared subscriptions are refused with 0x9E. A
//!   session holds at most `zilla.binding.mqtt.kafka.subscriptions.maximum` subscriptions
//!   (distinct filters; default 100, at least 1), since each is a Kafka read and a task of its
//!   own: a new filter past that is refused with 0x97 (quota exceeded; failure 0x80 in MQTT
//!   3.1.1), while one replacing a subscription with the same filter is not new. SUBSCRIBEs
//!   answered concurrently share the count. A resumed session keeps the subscriptions it
//!   saved, even past a quota lowered since.
//!   Records written by other Kafka producers are delivered too (topic = key, headers not
//!   prefixed `zilla:` as user properties).
//! - **Sessions.** The sessions topic must be log-compacted: otherwise sessions are refused
//!   (CONNACK 0x83) and the `BINDING_MQTT_KAFKA_NON_COMPACT_SESSIONS_TOPIC` event is raised.
//!   Everything a session leaves behind lives there, keyed by client identifier and
//!   partitioned by it, so any gateway sharing
//!   the cluster can resume it:
//!   - *Takeover.* Each new session writes a takeover record (`<clientId>#migrate`, header
//!     `sender-id` naming the session); a later record of that key (a higher offset of its
//!     partition) from another session, on this gateway or any other, ends this one with
//!     DISCONNECT 0x8E. One reader per gateway follows the takeover records for all its
//!     sessions, from the broker's end when the binding starts (a session waits for it to
//!     start, up to 30 s, else CONNACK 0x88); an idle session holds no read of its own, no
//!     task and no publication queue until it publishes. Of two sessions of one client
//!     connecting at once, the one whose record Kafka placed last stays.
//!   - *State.* A session with a session expiry (MQTT 5) or without clean session (3.1.1)
//!     writes its state under `<clientId>` whenever it changes: its subscriptions, how far
//!     the subscriber acknowledged each (the next offset per partition of the messages topic
//!     after the last message acknowledged, all before it acknowledged too), and the QoS 2
//!     packet identifiers awaiting PUBREL. A CONNECT without clean start reads it back: CONNACK
//!     says session present, the subscriptions are served again from those offsets, so QoS 1
//!     and 2 messages published while the client was away, and those it received but never
//!     acknowledged, are delivered (retained messages not replayed; those delivered before go
//!     with the DUP flag: the state also keeps how far each subscription delivered QoS 1 and
//!     2 messages). The state keeps the packet identifier of each QoS 1 and 2 delivery past
//!     what the subscriber acknowledged in order (up to 128 per subscription, twice the
//!     delivery window) and its stage: a delivery without PUBACK or PUBREC is sent again
//!     with its packet identifier and DUP (MQTT 5 §4.4), and one answered with PUBACK or
//!     PUBREC is not sent again, even while an earlier one is unacknowledged. A QoS 2 delivery
//!     answered with PUBREC keeps its packet identifier until PUBCOMP, and a resumed session
//!     sends PUBREL for it again instead of the PUBLISH, so a client that hands QoS 2
//!     messages over on PUBREL (paho) gets each once. PUBREL is sent only once the state
//!     holding the PUBREC is in Kafka; the identifier of a PUBLISH is written with the next
//!     state write (within about 20 ms and a Kafka write): a delivery sent just before its
//!     gateway is killed may come again under a new identifier, which a client receiving QoS
//!     2 messages on PUBREL still hands over once. While a resumed session has deliveries to
//!     send again, their identifiers go to no other delivery. A QoS 2 PUBLISH
//!     sent again with an identifier awaiting PUBREL is answered PUBREC without a second
//!     record. The PUBREC of a QoS 2 publication of such a
//!     session is sent once that identifier is in Kafka too. A clean start deletes the state.
//!     The state is read up to the broker's end at the CONNECT (asked with ListOffsets), so
//!     one written just before, by this gateway or another, is found whatever the cache has
//!     fetched; a read that gets no closer to that end for 30 s (Kafka unreachable) refuses
//!     the CONNECT with 0x88.
//!   - *Exactly once.* The QoS 2 publications of such a session are written by idempotent
//!     producers (InitProducerId, one per session and Kafka topic), one after the other:
//!     before a publication's records are written, their partitions and producer sequences
//!     are kept in the state under its packet identifier. A client that sends the PUBLISH
//!     again because the gateway died before PUBREC (to this gateway or another) has its
//!     records written again with the same producer sequences, and the broker, which keeps
//!     one record per producer sequence, keeps one copy whether or not the first write
//!     reached it. This costs two state writes per QoS 2 publication.
//!   - *Expiry.* While a session is connected its expiry signal (`<clientId>#expiry`) says
//!     "not yet"; when it ends, its gateway makes the signal due the session expiry interval
//!     later, and deletes the state then (a session expiry of 0 deletes it at once; 3.1.1
//!     sessions without clean session never expire). A new connection cancels the signal.
//!   - *Will.* The will message is written at CONNECT (`<clientId>#will-<lifetimeId>`) with its
//!     signal (`<clientId>#will`). When the session ends without DISCONNECT (or with reason
//!     0x04) the signal becomes due after the will delay (capped by the session expiry), and
//!     the will is then published to the messages topic (and the retained topic if flagged),
//!     unless a new session for the client replaced the signal meanwhile; DISCONNECT with
//!     0x00 deletes both records. A session taken over publishes a will without delay itself.
//!   - *Gateways that stop.* Every gateway follows the signals of the sessions topic and
//!     writes a liveness record (`#instance-<id>`) every 2 s. When a gateway has been silent
//!     for 10 s (killed, or cut off from Kafka), another one claims its signals by rewriting
//!     them under its own name, a signal still "not yet" becoming due its delay from the claim,
//!     and acts on the last claim 1 s after reading it: the will of a client of a killed
//!     gateway is published once, by one survivor, about 10 s plus its delay after the kill.
//!
//! What is not kept the way Zilla keeps it: record values in the sessions topic are JSON
//! documents of this binding, not Zilla's binary encodings, and delivery progress is kept in
//! the session state instead of a consumer group `zilla:<ns>-<binding>-<clientId>` (the
//! `kafka` stream kind has no consumer-group operations yet), so a sessions topic is not
//! shared with Java Zilla gateways (messages and retained topics are). A QoS 2 publication
//! sent again after the gateway died is written once only if it is sent again in order (as
//! MQTT requires): a broker refuses a producer sequence out of order, and the publication is
//! then answered with 0x80. Sessions that end with their connection (no session expiry, or
//! clean session in 3.1.1) write QoS 2 publications with leader acks only. A will published by a
//! gateway that did not hold the session goes through the first route matching its topic,
//! without guards, and only if the session's own authorization allowed that topic at
//! CONNECT.
//!
//! ```yaml
//! name: example
//! bindings:
//!   mqtt_tcp:
//!     type: tcp
//!     kind: server
//!     options:
//!       host: 0.0.0.0
//!       port: 1883
//!     exit: mqtt_server
//!   mqtt_server:
//!     type: mqtt
//!     kind: server
//!     exit: mqtt_kafka_proxy
//!   mqtt_kafka_proxy:
//!     type: mqtt-kafka
//!     kind: proxy
//!     options:
//!       topics:
//!         sessions: mqtt-sessions
//!         messages: mqtt-messages
//!         retained: mqtt-retained
//!       clients:
//!         - place/{identity}/#
//!     routes:
//!       - when:
//!           - publish:
//!               - topic: place/+/device/#
//!           - subscribe:
//!               - topic: place/+/device/#
//!         with:
//!           messages: mqtt-devices
//!         exit: kafka_cache_client
//!     exit: kafka_cache_client
//!   kafka_cache_client:
//!     type: kafka
//!     kind: cache_client
//!     exit: kafka_cache_server
//!   kafka_cache_server:
//!     type: kafka
//!     kind: cache_server
//!     exit: kafka_client
//!   kafka_client:
//!     type: kafka
//!     kind: client
//!     options:
//!       servers:
//!         - localhost:9092
//!     exit: kafka_tcp
//!   kafka_tcp:
//!     type: tcp
//!     kind: client
//! ```
//!
//! Options: `topics.sessions`, `topics.messages`, `topics.retained` (all required),
//! `clients` (topic patterns with one `{identity}` level, `+` and `#`), `publish.qosMax`
//! (`at_most_once`, `at_least_once`, `exactly_once`, the default). `server` (redirection)
//! is refused as not supported. Routes: `when: [{publish: [{topic}]}, {subscribe:
//! [{topic}]}]` (MQTT filters; a route with no `publish` condition takes no publication,
//! one with no `subscribe` condition no subscription, except a route with no `when` and the
//! binding's `exit`, which take all), `with.messages`, `guarded`. The sessions topic is read
//! and written through the binding's `exit` (or, without one, the last route's exit).

pub mod config;
pub mod headers;

mod proxy;
mod records;

use std::sync::{Arc, Mutex};

use zilla_binding_kafka::kind::Kafka;
use zilla_binding_mqtt::Mqtt;
use zilla_binding_mqtt::codec::QoS;
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, StartContext};
use zilla_engine::stream::StreamKind;
use zilla_engine::{BindingKind, BuildError, Registry};

use config::{MqttKafkaCondition, MqttKafkaOptions, MqttKafkaWith, QosName};
use proxy::{ClientPattern, MqttKafkaProxy, ProxyHandler, TopicCondition, Topics};

pub use proxy::NON_COMPACT_SESSIONS_TOPIC;

/// Registers the `mqtt-kafka` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(MqttKafkaFactory);
    registry.properties(&[SUBSCRIPTIONS_MAXIMUM]);
}

/// How many subscriptions (distinct topic filters) one session may hold.
const SUBSCRIPTIONS_MAXIMUM: &str = "zilla.binding.mqtt.kafka.subscriptions.maximum";
const DEFAULT_SUBSCRIPTIONS_MAXIMUM: u64 = 100;

/// Builds mqtt-kafka bindings.
#[derive(Debug)]
pub struct MqttKafkaFactory;

impl BindingFactory for MqttKafkaFactory {
    fn type_name(&self) -> &'static str {
        "mqtt-kafka"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Proxy]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Mqtt::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Kafka::NAME)
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<MqttKafkaOptions>()),
            options_required: true,
            when: Some(BindingSchema::of::<MqttKafkaCondition>()),
            with: Some(BindingSchema::of::<MqttKafkaWith>()),
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: MqttKafkaOptions = context.options()?;
        let routes = context.routes::<Kafka, MqttKafkaCondition, TopicCondition, MqttKafkaWith>(
            TopicCondition::compile,
        )?;
        let Some(sessions_exit) = routes.iter().last().map(|route| route.exit.clone()) else {
            return Err(BuildError::at(
                "",
                "an mqtt-kafka proxy needs `routes` (or an `exit`) to a kafka binding",
            ));
        };
        let clients = options
            .clients
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(index, pattern)| {
                ClientPattern::compile(pattern)
                    .map_err(|message| BuildError::at(format!("options.clients[{index}]"), message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let maximum_qos = match options.publish.and_then(|publish| publish.qos_max) {
            Some(QosName::AtMostOnce) => QoS::AtMostOnce,
            Some(QosName::AtLeastOnce) => QoS::AtLeastOnce,
            Some(QosName::ExactlyOnce) | None => QoS::ExactlyOnce,
        };
        let instance_id = proxy::signals::instance_id(&context.name().to_string());
        let proxy = Arc::new(MqttKafkaProxy {
            name: context.name().to_string(),
            topics: Topics {
                sessions: options.topics.sessions,
                messages: options.topics.messages,
                retained: options.topics.retained,
            },
            clients,
            maximum_qos,
            subscriptions_maximum: usize::try_from(
                context
                    .properties()
                    .u64(SUBSCRIPTIONS_MAXIMUM, DEFAULT_SUBSCRIPTIONS_MAXIMUM),
            )
            .unwrap_or(usize::MAX)
            .max(1),
            routes,
            sessions_exit,
            events: context.events().clone(),
            sessions_compacted: Mutex::new(false),
            instance_id: instance_id.clone(),
            signals: Mutex::new(proxy::signals::Signals::new(instance_id)),
            takeovers: proxy::takeovers::Takeovers::default(),
        });
        context.publish::<Mqtt>(Arc::new(ProxyHandler(proxy.clone())));
        Ok(Arc::new(Built(proxy)))
    }
}

/// A built proxy: its handler, the follower of the sessions topic's signals and the reader
/// of its takeover records.
struct Built(Arc<MqttKafkaProxy>);

impl Binding for Built {
    fn start(&self, context: &StartContext) {
        // Wills and expiries are due whether or not this gateway holds sessions: it may
        // have to deliver those of a gateway that stopped.
        tokio::spawn(proxy::signals::run(
            self.0.clone(),
            context.shutdown.clone(),
        ));
        // Sessions open once it reads: started with the binding, not by the first CONNECT.
        tokio::spawn(proxy::takeovers::run(
            self.0.clone(),
            context.shutdown.clone(),
        ));
    }
}
