//! The records the proxy keeps in the sessions topic, under Zilla's keys:
//!
//! | key | value |
//! |---|---|
//! | `<clientId>` | session state: expiry, subscriptions with the delivery progress acknowledged and delivered on each and the packet identifier and stage (sent, received, done) of each QoS 1 and 2 delivery past the acknowledged progress, QoS 2 packet identifiers awaiting PUBREL and deliveries awaiting PUBCOMP, QoS 2 publications being written (partition and idempotent producer sequence of each record) |
//! | `<clientId>#will` | will signal (header `type: will-signal`): owning gateway instance, delay, deliver-at, lifetime and will ids |
//! | `<clientId>#will-<lifetimeId>` | the will message: value = payload, header `will` = its topic, QoS, retain flag and properties |
//! | `<clientId>#expiry` | expiry signal (header `type: expiry-signal`): owning instance, delay, expire-at |
//! | `<clientId>#migrate` | takeover record (header `sender-id`) |
//! | `#instance-<instanceId>` | liveness of a gateway instance (header `type: instance`), rewritten every few seconds |
//!
//! Values are JSON documents of this binding, not Zilla's binary encodings: a sessions topic
//! is shared between gateways of this implementation only (messages and retained topics are
//! shared with Zilla). A signal is cancelled by a record with the same key and `type` header
//! and no value (a tombstone the signal readers still see).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zilla_binding_kafka::kind::{Header, PartitionOffset, ProducerSequence};
use zilla_binding_mqtt::codec::{Properties, QoS, RetainHandling, SubscriptionOptions};
use zilla_binding_mqtt::kind::Message;

/// The header naming a signal's type.
pub(crate) const TYPE: &str = "type";
/// `type` of will signals.
pub(crate) const WILL_SIGNAL: &str = "will-signal";
/// `type` of expiry signals.
pub(crate) const EXPIRY_SIGNAL: &str = "expiry-signal";
/// `type` of instance liveness records.
pub(crate) const INSTANCE: &str = "instance";
/// The header of a will message record holding everything but the payload.
pub(crate) const WILL: &str = "will";

/// The key of a client's session state.
pub(crate) fn state_key(client_id: &str) -> Bytes {
    Bytes::from(client_id.to_owned())
}

/// The key of a client's will signal.
pub(crate) fn will_signal_key(client_id: &str) -> Bytes {
    Bytes::from(format!("{client_id}#will"))
}

/// The key of one will message of a client.
pub(crate) fn will_message_key(client_id: &str, lifetime_id: &str) -> Bytes {
    Bytes::from(format!("{client_id}#will-{lifetime_id}"))
}

/// The key of a client's expiry signal.
pub(crate) fn expiry_signal_key(client_id: &str) -> Bytes {
    Bytes::from(format!("{client_id}#expiry"))
}

/// The key of a gateway instance's liveness record.
pub(crate) fn instance_key(instance_id: &str) -> Bytes {
    Bytes::from(format!("#instance-{instance_id}"))
}

/// The `type` header of a signal.
pub(crate) fn type_header(kind: &'static str) -> Header {
    Header::new(
        Bytes::from_static(TYPE.as_bytes()),
        Bytes::from_static(kind.as_bytes()),
    )
}

/// Milliseconds since the epoch.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// What outlives a connection of a client whose session does not end with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionState {
    /// Session expiry interval, seconds (`u32::MAX`: never).
    pub expiry: u32,
    /// The subscriptions.
    pub subscriptions: Vec<SavedSubscription>,
    /// QoS 2 packet identifiers whose message is in Kafka and whose PUBREL has not come.
    #[serde(default)]
    pub awaiting_release: Vec<u16>,
    /// QoS 2 publications taken whose records may or may not be in Kafka yet: kept before
    /// the records are written, so that a resend writes them with the same idempotent
    /// producer sequences, which the broker writes once.
    #[serde(default)]
    pub in_flight: Vec<InFlight>,
    /// QoS 2 deliveries the subscriber answered with PUBREC and has not completed: PUBREL
    /// is sent for them again when the session resumes.
    #[serde(default)]
    pub awaiting_completion: Vec<u16>,
}

/// A QoS 2 publication on its way to Kafka, and where each of its records goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InFlight {
    pub packet_id: u16,
    pub records: Vec<PlacedRecord>,
}

/// Where one record of a QoS 2 publication goes: its partition and producer sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlacedRecord {
    pub topic: String,
    pub partition: i32,
    pub sequence: ProducerSequence,
}

/// One subscription and how far its subscriber acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SavedSubscription {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
    /// The Kafka topic read.
    pub topic: String,
    /// Next offset per partition: everything before was acknowledged by the subscriber.
    pub offsets: Vec<(i32, i64)>,
    /// Next offset per partition past the last QoS 1 or 2 message delivered: what is
    /// delivered again below it goes with the DUP flag.
    #[serde(default)]
    pub delivered: Vec<(i32, i64)>,
    /// QoS 1 and 2 deliveries past `offsets` not yet done with: the packet identifier each
    /// was sent with and how far the subscriber went, so that a resumed session sends again
    /// only what the subscriber has not received, with the same identifier.
    #[serde(default)]
    pub outstanding: Vec<Outstanding>,
}

/// One QoS 1 or 2 delivery past the acknowledged offsets of its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Outstanding {
    pub partition: i32,
    pub offset: i64,
    /// The packet identifier it was last sent with.
    pub packet_id: u16,
    pub stage: Stage,
}

/// How far a delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Stage {
    /// PUBLISH sent, no PUBACK or PUBREC yet: sent again with its identifier and DUP.
    Sent,
    /// QoS 2 answered with PUBREC, PUBCOMP not yet come: only PUBREL is sent again.
    Received,
    /// PUBACK or PUBCOMP came: not sent again.
    Done,
}

impl SavedSubscription {
    pub(crate) fn new(
        filter: &str,
        options: &SubscriptionOptions,
        subscription_id: Option<u32>,
        topic: &str,
        offsets: &[PartitionOffset],
    ) -> Self {
        Self {
            filter: filter.to_owned(),
            qos: options.qos as u8,
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            retain_handling: options.retain_handling as u8,
            subscription_id,
            topic: topic.to_owned(),
            offsets: offsets.iter().map(|p| (p.partition, p.offset)).collect(),
            delivered: Vec::new(),
            outstanding: Vec::new(),
        }
    }

    /// The outstanding delivery of the record at `offset` of `partition`.
    pub(crate) fn outstanding_at(&self, partition: i32, offset: i64) -> Option<Outstanding> {
        self.outstanding
            .iter()
            .find(|o| o.partition == partition && o.offset == offset)
            .copied()
    }

    /// Notes the record at `offset` of `partition` sent with `packet_id`, unless `maximum`
    /// deliveries are outstanding already.
    pub(crate) fn note_sent(
        &mut self,
        partition: i32,
        offset: i64,
        packet_id: u16,
        maximum: usize,
    ) {
        let sent = Outstanding {
            partition,
            offset,
            packet_id,
            stage: Stage::Sent,
        };
        let count = self.outstanding.len();
        match self
            .outstanding
            .iter_mut()
            .find(|o| o.partition == partition && o.offset == offset)
        {
            Some(known) => *known = sent,
            None if count < maximum => self.outstanding.push(sent),
            None => {}
        }
    }

    /// Moves the delivery of `packet_id` at stage `from` to stage `to`; whether one was.
    pub(crate) fn advance(&mut self, packet_id: u16, from: Stage, to: Stage) -> bool {
        match self
            .outstanding
            .iter_mut()
            .find(|o| o.packet_id == packet_id && o.stage == from)
        {
            Some(known) => {
                known.stage = to;
                true
            }
            None => false,
        }
    }

    /// Moves the delivery of the record at `offset` of `partition` from `Sent` to `Done`.
    pub(crate) fn done_at(&mut self, partition: i32, offset: i64) {
        if let Some(known) = self
            .outstanding
            .iter_mut()
            .find(|o| o.partition == partition && o.offset == offset && o.stage == Stage::Sent)
        {
            known.stage = Stage::Done;
        }
    }

    /// Forgets the deliveries below the acknowledged offsets: they are not read again.
    pub(crate) fn forget_acknowledged(&mut self) {
        let offsets = &self.offsets;
        self.outstanding.retain(|o| {
            offsets
                .iter()
                .all(|&(partition, next)| partition != o.partition || o.offset >= next)
        });
    }

    /// Notes the record at `offset` of `partition` delivered; whether that moved the mark.
    pub(crate) fn note_delivered(&mut self, partition: i32, offset: i64) -> bool {
        match self
            .delivered
            .iter_mut()
            .find(|(known, _)| *known == partition)
        {
            Some((_, next)) if *next > offset => false,
            Some((_, next)) => {
                *next = offset + 1;
                true
            }
            None => {
                self.delivered.push((partition, offset + 1));
                true
            }
        }
    }

    pub(crate) fn options(&self) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: QoS::from_bits(self.qos).unwrap_or(QoS::AtMostOnce),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: match self.retain_handling {
                0 => RetainHandling::OnSubscribe,
                1 => RetainHandling::OnNewSubscribe,
                _ => RetainHandling::Never,
            },
        }
    }

    pub(crate) fn partition_offsets(&self) -> Vec<PartitionOffset> {
        self.offsets
            .iter()
            .map(|&(partition, offset)| PartitionOffset { partition, offset })
            .collect()
    }
}

/// Whether the record at `offset` of `partition` is below the `delivered` marks (next offset
/// per partition past the last message delivered).
pub(crate) fn delivered_before(delivered: &[(i32, i64)], partition: i32, offset: i64) -> bool {
    delivered
        .iter()
        .any(|&(known, next)| known == partition && offset < next)
}

/// A will waiting for its session to end: live (`deliver_at` -1) or due at `deliver_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WillSignal {
    /// The gateway instance that delivers it.
    pub instance_id: String,
    pub client_id: String,
    /// Seconds between the end of the session and the will.
    pub delay: u32,
    /// Milliseconds since the epoch; -1 while the session is connected.
    pub deliver_at: i64,
    pub lifetime_id: String,
    pub will_id: String,
}

/// A session that expires `delay` seconds after it ended (`expire_at` -1 while connected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExpirySignal {
    pub instance_id: String,
    pub client_id: String,
    pub delay: u32,
    pub expire_at: i64,
}

/// A gateway instance saying it is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceAlive {
    pub instance_id: String,
    pub at: i64,
}

/// Everything of a will message but its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WillHeader {
    pub will_id: String,
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    /// Whether the session's authorization allowed publishing to `topic`: a gateway that
    /// delivers the will of a session it does not hold has no guard session to ask.
    pub authorized: bool,
    pub payload_format: Option<u8>,
    pub message_expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user: Vec<(String, String)>,
}

impl WillHeader {
    pub(crate) fn of(message: &Message, will_id: &str, authorized: bool) -> Self {
        let properties = &message.properties;
        Self {
            will_id: will_id.to_owned(),
            topic: message.topic.clone(),
            qos: message.qos as u8,
            retain: message.retain,
            authorized,
            payload_format: properties.payload_format,
            message_expiry: properties.message_expiry,
            content_type: properties.content_type.clone(),
            response_topic: properties.response_topic.clone(),
            correlation_data: properties
                .correlation_data
                .as_ref()
                .map(|data| data.to_vec()),
            user: properties.user.clone(),
        }
    }

    pub(crate) fn message(&self, payload: Bytes) -> Message {
        Message {
            topic: self.topic.clone(),
            qos: QoS::from_bits(self.qos).unwrap_or(QoS::AtMostOnce),
            retain: self.retain,
            payload,
            properties: Properties {
                payload_format: self.payload_format,
                message_expiry: self.message_expiry,
                content_type: self.content_type.clone(),
                response_topic: self.response_topic.clone(),
                correlation_data: self.correlation_data.clone().map(Bytes::from),
                user: self.user.clone(),
                ..Properties::default()
            },
        }
    }
}

/// JSON of a record value.
pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain structs cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A record value, if it is one of ours.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(value: &[u8]) -> Option<T> {
    serde_json::from_slice(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let state = SessionState {
            expiry: 300,
            subscriptions: vec![SavedSubscription::new(
                "a/+/c",
                &SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: false,
                    retain_handling: RetainHandling::Never,
                },
                Some(7),
                "mqtt-messages",
                &[PartitionOffset {
                    partition: 1,
                    offset: 42,
                }],
            )],
            awaiting_release: vec![3],
            awaiting_completion: vec![5],
            in_flight: vec![InFlight {
                packet_id: 9,
                records: vec![PlacedRecord {
                    topic: "mqtt-messages".into(),
                    partition: 1,
                    sequence: ProducerSequence {
                        producer: zilla_binding_kafka::kind::ProducerIdentity { id: 4, epoch: 0 },
                        sequence: 17,
                    },
                }],
            }],
        };
        let decoded: SessionState = decode(&encode(&state)).unwrap();
        assert_eq!(decoded, state);
        let options = decoded.subscriptions[0].options();
        assert_eq!(options.qos, QoS::AtLeastOnce);
        assert!(options.no_local);
        assert_eq!(options.retain_handling, RetainHandling::Never);
        assert_eq!(decoded.subscriptions[0].partition_offsets()[0].offset, 42);
        let mut subscription = decoded.subscriptions[0].clone();
        let before = |s: &SavedSubscription, p, o| delivered_before(&s.delivered, p, o);
        assert!(!before(&subscription, 1, 42));
        assert!(subscription.note_delivered(1, 44));
        assert!(!subscription.note_delivered(1, 43));
        assert!(before(&subscription, 1, 43) && before(&subscription, 1, 44));
        assert!(!before(&subscription, 1, 45) && !before(&subscription, 0, 1));
        let decoded: SavedSubscription = decode(&encode(&subscription)).unwrap();
        assert_eq!(decoded, subscription);
        let message = Message {
            topic: "x/y".into(),
            qos: QoS::ExactlyOnce,
            retain: true,
            payload: Bytes::from_static(b"bye"),
            properties: Properties {
                correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                user: vec![("k".into(), "v".into())],
                message_expiry: Some(9),
                ..Properties::default()
            },
        };
        let header: WillHeader = decode(&encode(&WillHeader::of(&message, "w", true))).unwrap();
        assert_eq!(header.message(message.payload.clone()), message);
        assert!(decode::<WillSignal>(b"not json").is_none());
    }

    #[test]
    fn outstanding_deliveries_keep_their_ids_until_acknowledged_past() {
        let mut subscription = SavedSubscription::new(
            "a/#",
            &SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..SubscriptionOptions::default()
            },
            None,
            "mqtt-messages",
            &[PartitionOffset {
                partition: 0,
                offset: 10,
            }],
        );
        subscription.note_sent(0, 10, 7, 3);
        subscription.note_sent(0, 11, 8, 3);
        subscription.note_sent(1, 4, 9, 3);
        // Over the bound: not kept (it would come again under a new identifier).
        subscription.note_sent(0, 12, 10, 3);
        assert_eq!(subscription.outstanding.len(), 3);
        assert!(subscription.outstanding_at(0, 12).is_none());
        // Sent again (a resumed session) with the same identifier: one entry.
        subscription.note_sent(0, 10, 7, 3);
        assert_eq!(subscription.outstanding.len(), 3);
        assert!(subscription.advance(8, Stage::Sent, Stage::Received));
        assert!(!subscription.advance(8, Stage::Sent, Stage::Received));
        subscription.done_at(1, 4);
        let stage = |s: &SavedSubscription, p, o| s.outstanding_at(p, o).map(|o| o.stage);
        assert_eq!(stage(&subscription, 0, 10), Some(Stage::Sent));
        assert_eq!(stage(&subscription, 0, 11), Some(Stage::Received));
        assert_eq!(stage(&subscription, 1, 4), Some(Stage::Done));
        let decoded: SavedSubscription = decode(&encode(&subscription)).unwrap();
        assert_eq!(decoded, subscription);
        // Acknowledged past offset 10 of partition 0: that delivery is not read again.
        subscription.offsets = vec![(0, 11), (1, 4)];
        subscription.forget_acknowledged();
        assert!(subscription.outstanding_at(0, 10).is_none());
        assert_eq!(subscription.outstanding.len(), 2);
        // State written before outstanding deliveries were kept still reads.
        let older = br#"{"filter":"a","qos":1,"noLocal":false,"retainAsPublished":false,
            "retainHandling":0,"subscriptionId":null,"topic":"t","offsets":[[0,1]]}"#;
        assert!(decode::<SavedSubscription>(older).is_some_and(|s| s.outstanding.is_empty()));
    }

    #[test]
    fn keys_are_zillas() {
        assert_eq!(state_key("c1"), Bytes::from_static(b"c1"));
        assert_eq!(will_signal_key("c1"), Bytes::from_static(b"c1#will"));
        assert_eq!(
            will_message_key("c1", "l"),
            Bytes::from_static(b"c1#will-l")
        );
        assert_eq!(expiry_signal_key("c1"), Bytes::from_static(b"c1#expiry"));
    }
}
