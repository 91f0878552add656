//! The Kafka record layout of MQTT messages, as Zilla writes it, so that Zilla gateways and
//! this one can share the same topics.
//!
//! A PUBLISH becomes a record whose key is the MQTT topic name and whose headers are, in
//! this order: one `zilla:filter` per topic level; `zilla:local` (the publishing client
//! identifier, for no-local); `zilla:expiry` (the message expiry interval in seconds, a
//! 4-byte big-endian integer) when set; `zilla:content-type` when set; `zilla:format`
//! (`TEXT` or `BINARY`) when the payload format is given and the payload is not empty;
//! for a response topic, `zilla:reply-to` (the Kafka topic the message went to),
//! `zilla:reply-key` (the response topic) and one `zilla:reply-filter` per level of it;
//! `zilla:correlation-id` (the correlation data) when set; the user properties as plain
//! headers; and `zilla:qos` (`0`, `1` or `2`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use zilla_binding_kafka::kind::{Condition, Header, HeaderMatch, Message as Record};
use zilla_binding_mqtt::codec::{Properties, QoS};
use zilla_binding_mqtt::kind::Message;

/// One header per topic level: what subscriptions match with SKIP/SKIP_MANY sequences.
pub const FILTER: &str = "zilla:filter";
/// The publishing client identifier.
pub const LOCAL: &str = "zilla:local";
/// The message expiry interval, seconds, 4-byte big-endian.
pub const EXPIRY: &str = "zilla:expiry";
/// The content type.
pub const CONTENT_TYPE: &str = "zilla:content-type";
/// The payload format: `TEXT` or `BINARY`.
pub const FORMAT: &str = "zilla:format";
/// The Kafka topic a response is expected on.
pub const REPLY_TO: &str = "zilla:reply-to";
/// The MQTT response topic.
pub const REPLY_KEY: &str = "zilla:reply-key";
/// One header per level of the response topic.
pub const REPLY_FILTER: &str = "zilla:reply-filter";
/// The correlation data.
pub const CORRELATION_ID: &str = "zilla:correlation-id";
/// The QoS the message was published at.
pub const QOS: &str = "zilla:qos";

/// Headers reserved by the layout: every other header is a user property.
const RESERVED_PREFIX: &str = "zilla:";

fn header(name: &str, value: impl Into<Bytes>) -> Header {
    Header::new(Bytes::copy_from_slice(name.as_bytes()), value.into())
}

fn levels<'a>(name: &'static str, topic: &'a str) -> impl Iterator<Item = Header> + 'a {
    topic
        .split('/')
        .map(move |level| header(name, Bytes::copy_from_slice(level.as_bytes())))
}

/// The headers of the record for `message`, published by `client_id` to the Kafka topic
/// `messages_topic`.
pub fn publish_headers(message: &Message, client_id: &str, messages_topic: &str) -> Vec<Header> {
    let properties = &message.properties;
    let mut headers: Vec<Header> = levels(FILTER, &message.topic).collect();
    headers.push(header(LOCAL, client_id.to_owned()));
    if let Some(expiry) = properties.message_expiry {
        headers.push(header(
            EXPIRY,
            Bytes::copy_from_slice(&expiry.to_be_bytes()),
        ));
    }
    if let Some(content_type) = &properties.content_type {
        headers.push(header(CONTENT_TYPE, content_type.clone()));
    }
    if let Some(format) = properties.payload_format
        && !message.payload.is_empty()
    {
        let name = if format == 1 { "TEXT" } else { "BINARY" };
        headers.push(header(FORMAT, name));
    }
    if let Some(response_topic) = &properties.response_topic {
        headers.push(header(REPLY_TO, messages_topic.to_owned()));
        headers.push(header(REPLY_KEY, response_topic.clone()));
        headers.extend(levels(REPLY_FILTER, response_topic));
    }
    if let Some(correlation) = &properties.correlation_data {
        headers.push(header(CORRELATION_ID, correlation.clone()));
    }
    for (name, value) in &properties.user {
        headers.push(header(name, value.clone()));
    }
    headers.push(header(QOS, (message.qos as u8).to_string()));
    headers
}

/// The condition a record's `zilla:filter` headers must meet to match the MQTT topic
/// `filter` (`+` one level, `#` any number of levels).
pub fn topic_condition(filter: &str) -> Condition {
    Condition::Headers {
        name: Bytes::from_static(FILTER.as_bytes()),
        values: filter
            .split('/')
            .map(|level| match level {
                "+" => HeaderMatch::Skip,
                "#" => HeaderMatch::SkipMany,
                level => HeaderMatch::Value(Bytes::copy_from_slice(level.as_bytes())),
            })
            .collect(),
    }
}

/// The condition that excludes what `client_id` published (no-local).
pub fn not_local(client_id: &str) -> Condition {
    Condition::Not(Box::new(Condition::Header {
        name: Bytes::from_static(LOCAL.as_bytes()),
        value: Bytes::copy_from_slice(client_id.as_bytes()),
    }))
}

fn text(value: &Option<Bytes>) -> Option<String> {
    value
        .as_deref()
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .map(str::to_owned)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// The MQTT message a record carries, or `None` when it carries none: no key, a key that is
/// not a valid topic name, a tombstone, or a message whose expiry has passed (then its
/// remaining expiry is what the delivery announces). Records written by other producers
/// without the `zilla:` headers are delivered too, their headers as user properties.
pub fn message_of(record: &Record) -> Option<Message> {
    let topic = text(&record.key)?;
    if !zilla_binding_mqtt::codec::topic::valid_name(&topic) {
        return None;
    }
    let payload = record.value.clone()?;
    let mut properties = Properties::default();
    let mut qos = QoS::ExactlyOnce;
    for header in &record.headers {
        let Ok(name) = std::str::from_utf8(&header.name) else {
            continue;
        };
        match name {
            EXPIRY => {
                let bytes: [u8; 4] = header.value.as_deref()?.try_into().ok()?;
                let expiry = u32::from_be_bytes(bytes);
                let elapsed = (now_millis() - record.timestamp).max(0) / 1000;
                let remaining = i64::from(expiry) - elapsed;
                if remaining <= 0 {
                    return None;
                }
                properties.message_expiry = u32::try_from(remaining).ok();
            }
            CONTENT_TYPE => properties.content_type = text(&header.value),
            FORMAT => {
                properties.payload_format = match header.value.as_deref() {
                    Some(b"TEXT") => Some(1),
                    Some(b"BINARY") => Some(0),
                    _ => None,
                }
            }
            REPLY_KEY => properties.response_topic = text(&header.value),
            CORRELATION_ID => properties.correlation_data = header.value.clone(),
            QOS => {
                qos = match header.value.as_deref() {
                    Some(b"0") => QoS::AtMostOnce,
                    Some(b"1") => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                }
            }
            name if name.starts_with(RESERVED_PREFIX) => {}
            name => {
                if let Some(value) = text(&header.value) {
                    properties.user.push((name.to_owned(), value));
                }
            }
        }
    }
    Some(Message {
        topic,
        qos,
        retain: false,
        payload,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names_and_values(headers: &[Header]) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .map(|header| {
                (
                    String::from_utf8(header.name.to_vec()).unwrap(),
                    header.value.clone().unwrap_or_default().to_vec(),
                )
            })
            .collect()
    }

    fn full_message() -> Message {
        Message {
            topic: "sensor/one".into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            payload: Bytes::from_static(b"message"),
            properties: Properties {
                message_expiry: Some(15),
                content_type: Some("message".into()),
                payload_format: Some(1),
                response_topic: Some("sensor/one".into()),
                correlation_data: Some(Bytes::from_static(b"info")),
                user: vec![("row".into(), "1".into())],
                ..Properties::default()
            },
        }
    }

    #[test]
    fn publish_headers_are_zillas_layout_in_zillas_order() {
        let headers = publish_headers(&full_message(), "client", "mqtt-messages");
        let expected: Vec<(String, Vec<u8>)> = [
            (FILTER, b"sensor".to_vec()),
            (FILTER, b"one".to_vec()),
            (LOCAL, b"client".to_vec()),
            (EXPIRY, vec![0, 0, 0, 15]),
            (CONTENT_TYPE, b"message".to_vec()),
            (FORMAT, b"TEXT".to_vec()),
            (REPLY_TO, b"mqtt-messages".to_vec()),
            (REPLY_KEY, b"sensor/one".to_vec()),
            (REPLY_FILTER, b"sensor".to_vec()),
            (REPLY_FILTER, b"one".to_vec()),
            (CORRELATION_ID, b"info".to_vec()),
            ("row", b"1".to_vec()),
            (QOS, b"1".to_vec()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        assert_eq!(names_and_values(&headers), expected);
    }

    #[test]
    fn no_format_header_for_an_empty_payload_or_no_format() {
        let mut message = full_message();
        message.payload = Bytes::new();
        let headers = publish_headers(&message, "c", "m");
        assert!(!headers.iter().any(|h| h.name.as_ref() == FORMAT.as_bytes()));
        let message = Message {
            topic: "a".into(),
            ..Message::default()
        };
        let names: Vec<_> = names_and_values(&publish_headers(&message, "c", "m"))
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, [FILTER, LOCAL, QOS]);
    }

    #[test]
    fn a_record_carries_back_the_message_it_was_made_from() {
        let message = full_message();
        let record = Record {
            partition: 0,
            offset: 0,
            timestamp: now_millis(),
            key: Some(Bytes::from(message.topic.clone())),
            value: Some(message.payload.clone()),
            headers: publish_headers(&message, "client", "mqtt-messages"),
        };
        let back = message_of(&record).unwrap();
        assert_eq!(back.topic, message.topic);
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.payload, message.payload);
        let expiry = back.properties.message_expiry.unwrap();
        assert!((14..=15).contains(&expiry), "{expiry}");
        assert_eq!(
            Properties {
                message_expiry: None,
                ..back.properties
            },
            Properties {
                message_expiry: None,
                ..message.properties
            }
        );
    }

    #[test]
    fn expired_tombstoned_and_keyless_records_carry_nothing() {
        let mut message = full_message();
        message.properties.message_expiry = Some(1);
        let record = Record {
            partition: 0,
            offset: 0,
            timestamp: now_millis() - 5_000,
            key: Some(Bytes::from_static(b"sensor/one")),
            value: Some(Bytes::from_static(b"x")),
            headers: publish_headers(&message, "c", "m"),
        };
        assert!(message_of(&record).is_none());
        let fresh = Record {
            timestamp: now_millis(),
            ..record.clone()
        };
        assert!(message_of(&fresh).is_some());
        assert!(
            message_of(&Record {
                value: None,
                ..fresh.clone()
            })
            .is_none()
        );
        assert!(
            message_of(&Record {
                key: None,
                ..fresh.clone()
            })
            .is_none()
        );
        assert!(
            message_of(&Record {
                key: Some(Bytes::from_static(b"a/+")),
                ..fresh
            })
            .is_none()
        );
    }

    #[test]
    fn foreign_records_are_delivered_with_their_headers_as_user_properties() {
        let record = Record {
            partition: 0,
            offset: 0,
            timestamp: now_millis(),
            key: Some(Bytes::from_static(b"sensor/two")),
            value: Some(Bytes::from_static(b"{}")),
            headers: vec![header("content-type", "application/json")],
        };
        let message = message_of(&record).unwrap();
        assert_eq!(message.qos, QoS::ExactlyOnce);
        assert_eq!(
            message.properties.user,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
    }

    proptest! {
        /// A record made from a topic matches exactly the filters MQTT says match it.
        #[test]
        fn header_filters_match_as_mqtt_filters_do(
            topic in proptest::collection::vec("[ab]{0,2}", 1..5),
            filter in proptest::collection::vec(prop_oneof!["[ab]{0,2}", Just("+".to_owned())], 0..5),
            many in any::<bool>(),
        ) {
            let topic = topic.join("/");
            let mut filter = filter;
            if many || filter.is_empty() {
                filter.push("#".to_owned());
            }
            let filter = filter.join("/");
            let message = Message { topic: topic.clone(), ..Message::default() };
            let record = Record {
                partition: 0,
                offset: 0,
                timestamp: 0,
                key: Some(Bytes::from(topic.clone())),
                value: Some(Bytes::new()),
                headers: publish_headers(&message, "c", "m"),
            };
            prop_assert_eq!(
                topic_condition(&filter).matches(&record),
                zilla_binding_mqtt::codec::topic::matches(&filter, &topic),
                "{} against {}", filter, topic
            );
        }
    }
}
