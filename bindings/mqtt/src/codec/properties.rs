//! MQTT 5 properties: one struct for every packet, checked against the packet it came in.
//!
//! A property that is not allowed in its packet, or an unknown identifier, makes the packet
//! malformed; a property given twice (other than user properties and, in PUBLISH,
//! subscription identifiers) is a protocol error, as are out-of-range values.

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::{self, Reader};
use super::{DecodeError, EncodeError};

/// Where a property list is found; each allows its own set of properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT.
    Connect,
    /// The will properties of CONNECT.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

const PAYLOAD_FORMAT: u8 = 0x01;
const MESSAGE_EXPIRY: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_ID: u8 = 0x0b;
const SESSION_EXPIRY: u8 = 0x11;
const ASSIGNED_CLIENT_ID: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTH_METHOD: u8 = 0x15;
const AUTH_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFO: u8 = 0x17;
const WILL_DELAY: u8 = 0x18;
const REQUEST_RESPONSE_INFO: u8 = 0x19;
const RESPONSE_INFO: u8 = 0x1a;
const SERVER_REFERENCE: u8 = 0x1c;
const REASON_STRING: u8 = 0x1f;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDS_AVAILABLE: u8 = 0x29;
const SHARED_AVAILABLE: u8 = 0x2a;

/// Whether property `id` may appear in `context` (MQTT 5 table 2-4).
fn allowed(id: u8, context: PropertyContext) -> bool {
    use PropertyContext::*;
    match id {
        USER_PROPERTY => true,
        PAYLOAD_FORMAT | MESSAGE_EXPIRY | CONTENT_TYPE | RESPONSE_TOPIC | CORRELATION_DATA => {
            matches!(context, Publish | Will)
        }
        SUBSCRIPTION_ID => matches!(context, Publish | Subscribe),
        SESSION_EXPIRY => matches!(context, Connect | ConnAck | Disconnect),
        ASSIGNED_CLIENT_ID
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFO
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_AVAILABLE
        | SUBSCRIPTION_IDS_AVAILABLE
        | SHARED_AVAILABLE => context == ConnAck,
        AUTH_METHOD | AUTH_DATA => matches!(context, Connect | ConnAck | Auth),
        REQUEST_PROBLEM_INFO | REQUEST_RESPONSE_INFO => context == Connect,
        WILL_DELAY => context == Will,
        SERVER_REFERENCE => matches!(context, ConnAck | Disconnect),
        REASON_STRING => matches!(
            context,
            ConnAck | Ack | SubAck | UnsubAck | Disconnect | Auth
        ),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => {
            matches!(context, Connect | ConnAck)
        }
        TOPIC_ALIAS => context == Publish,
        _ => false,
    }
}

/// Every MQTT 5 property; absent ones are `None` (or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0: unspecified bytes, 1: UTF-8.
    pub payload_format: Option<u8>,
    /// Seconds until the message expires.
    pub message_expiry: Option<u32>,
    /// The payload's MIME type.
    pub content_type: Option<String>,
    /// Where a response goes.
    pub response_topic: Option<String>,
    /// What a response carries back.
    pub correlation_data: Option<Bytes>,
    /// Subscription identifiers (several in PUBLISH, one in SUBSCRIBE).
    pub subscription_ids: Vec<u32>,
    /// Seconds the session outlives its connection.
    pub session_expiry: Option<u32>,
    /// The client id the server chose.
    pub assigned_client_id: Option<String>,
    /// The keep alive the server wants.
    pub server_keep_alive: Option<u16>,
    /// The extended authentication method.
    pub auth_method: Option<String>,
    /// Extended authentication data.
    pub auth_data: Option<Bytes>,
    /// 0: no reason strings or user properties beyond CONNACK/DISCONNECT.
    pub request_problem_info: Option<u8>,
    /// Seconds before the will is published.
    pub will_delay: Option<u32>,
    /// 1: the client asks for response information.
    pub request_response_info: Option<u8>,
    /// The basis of response topics.
    pub response_info: Option<String>,
    /// Another server to use.
    pub server_reference: Option<String>,
    /// A human-readable reason.
    pub reason_string: Option<String>,
    /// How many QoS 1 and 2 publications the sender takes at once.
    pub receive_maximum: Option<u16>,
    /// The highest topic alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// A topic alias.
    pub topic_alias: Option<u16>,
    /// The highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<u8>,
    /// Whether the server supports retained messages.
    pub retain_available: Option<u8>,
    /// Name/value pairs, in order; names may repeat.
    pub user: Vec<(String, String)>,
    /// The largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// Whether the server supports wildcard subscriptions.
    pub wildcard_available: Option<u8>,
    /// Whether the server supports subscription identifiers.
    pub subscription_ids_available: Option<u8>,
    /// Whether the server supports shared subscriptions.
    pub shared_available: Option<u8>,
}

fn once<T>(field: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if field.is_some() {
        return Err(wire::protocol("property given twice"));
    }
    *field = Some(value);
    Ok(())
}

fn flag(value: u8) -> Result<u8, DecodeError> {
    if value > 1 {
        Err(wire::protocol("property value must be 0 or 1"))
    } else {
        Ok(value)
    }
}

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Reads a property list (its length first) allowed in `context`.
    pub(crate) fn decode(
        reader: &mut Reader<'_>,
        context: PropertyContext,
    ) -> Result<Self, DecodeError> {
        let length = reader.varint()? as usize;
        let mut reader = reader.split(length)?;
        let mut properties = Properties::default();
        while !reader.is_empty() {
            let id = reader.varint()?;
            let id = u8::try_from(id)
                .map_err(|_| DecodeError::malformed("unknown property identifier"))?;
            if !allowed(id, context) {
                return Err(DecodeError::malformed(
                    "property not allowed in this packet",
                ));
            }
            let p = &mut properties;
            match id {
                PAYLOAD_FORMAT => once(&mut p.payload_format, flag(reader.u8()?)?)?,
                MESSAGE_EXPIRY => once(&mut p.message_expiry, reader.u32()?)?,
                CONTENT_TYPE => once(&mut p.content_type, reader.utf8()?)?,
                RESPONSE_TOPIC => {
                    let topic = reader.utf8()?;
                    if !super::topic::valid_name(&topic) {
                        return Err(DecodeError::new(
                            super::ReasonCode::TOPIC_NAME_INVALID,
                            "response topic is not a valid topic name",
                        ));
                    }
                    once(&mut p.response_topic, topic)?
                }
                CORRELATION_DATA => once(&mut p.correlation_data, reader.binary()?)?,
                SUBSCRIPTION_ID => {
                    let value = reader.varint()?;
                    if value == 0 {
                        return Err(wire::protocol("subscription identifier 0"));
                    }
                    if context == PropertyContext::Subscribe && !p.subscription_ids.is_empty() {
                        return Err(wire::protocol("property given twice"));
                    }
                    p.subscription_ids.push(value);
                }
                SESSION_EXPIRY => once(&mut p.session_expiry, reader.u32()?)?,
                ASSIGNED_CLIENT_ID => once(&mut p.assigned_client_id, reader.utf8()?)?,
                SERVER_KEEP_ALIVE => once(&mut p.server_keep_alive, reader.u16()?)?,
                AUTH_METHOD => once(&mut p.auth_method, reader.utf8()?)?,
                AUTH_DATA => once(&mut p.auth_data, reader.binary()?)?,
                REQUEST_PROBLEM_INFO => once(&mut p.request_problem_info, flag(reader.u8()?)?)?,
                WILL_DELAY => once(&mut p.will_delay, reader.u32()?)?,
                REQUEST_RESPONSE_INFO => once(&mut p.request_response_info, flag(reader.u8()?)?)?,
                RESPONSE_INFO => once(&mut p.response_info, reader.utf8()?)?,
                SERVER_REFERENCE => once(&mut p.server_reference, reader.utf8()?)?,
                REASON_STRING => once(&mut p.reason_string, reader.utf8()?)?,
                RECEIVE_MAXIMUM => {
                    let value = reader.u16()?;
                    if value == 0 {
                        return Err(wire::protocol("receive maximum 0"));
                    }
                    once(&mut p.receive_maximum, value)?
                }
                TOPIC_ALIAS_MAXIMUM => once(&mut p.topic_alias_maximum, reader.u16()?)?,
                TOPIC_ALIAS => {
                    let value = reader.u16()?;
                    if value == 0 {
                        return Err(DecodeError::new(
                            super::ReasonCode::TOPIC_ALIAS_INVALID,
                            "topic alias 0",
                        ));
                    }
                    once(&mut p.topic_alias, value)?
                }
                MAXIMUM_QOS => once(&mut p.maximum_qos, flag(reader.u8()?)?)?,
                RETAIN_AVAILABLE => once(&mut p.retain_available, flag(reader.u8()?)?)?,
                USER_PROPERTY => {
                    let name = reader.utf8()?;
                    let value = reader.utf8()?;
                    p.user.push((name, value));
                }
                MAXIMUM_PACKET_SIZE => {
                    let value = reader.u32()?;
                    if value == 0 {
                        return Err(wire::protocol("maximum packet size 0"));
                    }
                    once(&mut p.maximum_packet_size, value)?
                }
                WILDCARD_AVAILABLE => once(&mut p.wildcard_available, flag(reader.u8()?)?)?,
                SUBSCRIPTION_IDS_AVAILABLE => {
                    once(&mut p.subscription_ids_available, flag(reader.u8()?)?)?
                }
                SHARED_AVAILABLE => once(&mut p.shared_available, flag(reader.u8()?)?)?,
                _ => return Err(DecodeError::malformed("unknown property identifier")),
            }
        }
        Ok(properties)
    }

    /// Writes the property list, its length first. Properties not allowed in `context` are a
    /// caller bug, reported as an error rather than sent.
    pub(crate) fn encode(
        &self,
        out: &mut BytesMut,
        context: PropertyContext,
    ) -> Result<(), EncodeError> {
        let mut body = BytesMut::new();
        let mut put = |id: u8, write: &dyn Fn(&mut BytesMut)| -> Result<(), EncodeError> {
            if !allowed(id, context) {
                return Err(EncodeError::PropertyNotAllowed(id));
            }
            body.put_u8(id);
            write(&mut body);
            Ok(())
        };
        let p = self;
        fn text(value: &str) -> Result<&[u8], EncodeError> {
            wire::check_len(value.as_bytes())?;
            Ok(value.as_bytes())
        }
        if let Some(v) = p.payload_format {
            put(PAYLOAD_FORMAT, &|b| b.put_u8(v))?;
        }
        if let Some(v) = p.message_expiry {
            put(MESSAGE_EXPIRY, &|b| b.put_u32(v))?;
        }
        if let Some(v) = &p.content_type {
            let v = text(v)?;
            put(CONTENT_TYPE, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = &p.response_topic {
            let v = text(v)?;
            put(RESPONSE_TOPIC, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = &p.correlation_data {
            wire::check_len(v)?;
            put(CORRELATION_DATA, &|b| wire::put_binary(b, v))?;
        }
        for &v in &p.subscription_ids {
            if v == 0 || v > super::MAX_VARINT {
                return Err(EncodeError::OutOfRange("subscription identifier"));
            }
            put(SUBSCRIPTION_ID, &|b| wire::put_varint(b, v))?;
        }
        if let Some(v) = p.session_expiry {
            put(SESSION_EXPIRY, &|b| b.put_u32(v))?;
        }
        if let Some(v) = &p.assigned_client_id {
            let v = text(v)?;
            put(ASSIGNED_CLIENT_ID, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = p.server_keep_alive {
            put(SERVER_KEEP_ALIVE, &|b| b.put_u16(v))?;
        }
        if let Some(v) = &p.auth_method {
            let v = text(v)?;
            put(AUTH_METHOD, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = &p.auth_data {
            wire::check_len(v)?;
            put(AUTH_DATA, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = p.request_problem_info {
            put(REQUEST_PROBLEM_INFO, &|b| b.put_u8(v))?;
        }
        if let Some(v) = p.will_delay {
            put(WILL_DELAY, &|b| b.put_u32(v))?;
        }
        if let Some(v) = p.request_response_info {
            put(REQUEST_RESPONSE_INFO, &|b| b.put_u8(v))?;
        }
        if let Some(v) = &p.response_info {
            let v = text(v)?;
            put(RESPONSE_INFO, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = &p.server_reference {
            let v = text(v)?;
            put(SERVER_REFERENCE, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = &p.reason_string {
            let v = text(v)?;
            put(REASON_STRING, &|b| wire::put_binary(b, v))?;
        }
        if let Some(v) = p.receive_maximum {
            put(RECEIVE_MAXIMUM, &|b| b.put_u16(v))?;
        }
        if let Some(v) = p.topic_alias_maximum {
            put(TOPIC_ALIAS_MAXIMUM, &|b| b.put_u16(v))?;
        }
        if let Some(v) = p.topic_alias {
            put(TOPIC_ALIAS, &|b| b.put_u16(v))?;
        }
        if let Some(v) = p.maximum_qos {
            put(MAXIMUM_QOS, &|b| b.put_u8(v))?;
        }
        if let Some(v) = p.retain_available {
            put(RETAIN_AVAILABLE, &|b| b.put_u8(v))?;
        }
        for (name, value) in &p.user {
            let name = text(name)?;
            let value = text(value)?;
            put(USER_PROPERTY, &|b| {
                wire::put_binary(b, name);
                wire::put_binary(b, value);
            })?;
        }
        if let Some(v) = p.maximum_packet_size {
            put(MAXIMUM_PACKET_SIZE, &|b| b.put_u32(v))?;
        }
        if let Some(v) = p.wildcard_available {
            put(WILDCARD_AVAILABLE, &|b| b.put_u8(v))?;
        }
        if let Some(v) = p.subscription_ids_available {
            put(SUBSCRIPTION_IDS_AVAILABLE, &|b| b.put_u8(v))?;
        }
        if let Some(v) = p.shared_available {
            put(SHARED_AVAILABLE, &|b| b.put_u8(v))?;
        }
        let length = u32::try_from(body.len())
            .ok()
            .filter(|&length| length <= super::MAX_VARINT)
            .ok_or(EncodeError::TooLarge)?;
        wire::put_varint(out, length);
        out.put_slice(&body);
        Ok(())
    }

    /// Drops what does not fit in `context`, e.g. when a PUBLISH's properties go into a will.
    pub fn retain_allowed(&mut self, context: PropertyContext) {
        let keep = |id| allowed(id, context);
        macro_rules! clear {
            ($($id:ident => $field:ident),* $(,)?) => {
                $(if !keep($id) { self.$field = Default::default(); })*
            };
        }
        clear!(
            PAYLOAD_FORMAT => payload_format, MESSAGE_EXPIRY => message_expiry,
            CONTENT_TYPE => content_type, RESPONSE_TOPIC => response_topic,
            CORRELATION_DATA => correlation_data, SUBSCRIPTION_ID => subscription_ids,
            SESSION_EXPIRY => session_expiry, ASSIGNED_CLIENT_ID => assigned_client_id,
            SERVER_KEEP_ALIVE => server_keep_alive, AUTH_METHOD => auth_method,
            AUTH_DATA => auth_data, REQUEST_PROBLEM_INFO => request_problem_info,
            WILL_DELAY => will_delay, REQUEST_RESPONSE_INFO => request_response_info,
            RESPONSE_INFO => response_info, SERVER_REFERENCE => server_reference,
            REASON_STRING => reason_string, RECEIVE_MAXIMUM => receive_maximum,
            TOPIC_ALIAS_MAXIMUM => topic_alias_maximum, TOPIC_ALIAS => topic_alias,
            MAXIMUM_QOS => maximum_qos, RETAIN_AVAILABLE => retain_available,
            MAXIMUM_PACKET_SIZE => maximum_packet_size, WILDCARD_AVAILABLE => wildcard_available,
            SUBSCRIPTION_IDS_AVAILABLE => subscription_ids_available,
            SHARED_AVAILABLE => shared_available,
        );
    }
}
