//! The MQTT 3.1.1 and 5 wire codec: one file per packet, strict on input.
//!
//! [`Decoder::decode`] frames one packet from a buffer: it reads the fixed header first and
//! refuses a packet over the maximum size before any of its body is buffered. Every field is
//! checked as the specification asks (reserved flags, UTF-8 strings without U+0000, packet
//! identifiers, topic names, property placement and duplicates) and a failure carries the
//! reason code the specification gives for it, so a server can answer with CONNACK or
//! DISCONNECT. [`encode`] writes a packet for a given protocol version, leaving out what the
//! version cannot carry (properties and reason codes in 3.1.1).

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod properties;
mod publish;
mod suback;
mod subscribe;
pub mod topic;
mod unsuback;
mod unsubscribe;
mod wire;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use ack::Ack;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use properties::{Properties, PropertyContext};
pub use publish::Publish;
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

use wire::Reader;

/// The largest value of a variable byte integer, and so the largest remaining length.
pub const MAX_VARINT: u32 = 268_435_455;

/// An MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V3_1_1,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl Version {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Version::V3_1_1 => 4,
            Version::V5 => 5,
        }
    }

    /// The name Zilla's config uses (`v3.1.1`, `v5`).
    pub fn config_name(self) -> &'static str {
        match self {
            Version::V3_1_1 => "v3.1.1",
            Version::V5 => "v5",
        }
    }
}

/// A quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its wire value; 3 is malformed.
    pub fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::malformed("QoS 3")),
        }
    }
}

/// An MQTT 5 reason code (also used, mapped, for 3.1.1 return codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReasonCode(pub u8);

#[allow(missing_docs)]
impl ReasonCode {
    pub const SUCCESS: Self = Self(0x00);
    pub const GRANTED_QOS_1: Self = Self(0x01);
    pub const GRANTED_QOS_2: Self = Self(0x02);
    pub const DISCONNECT_WITH_WILL: Self = Self(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: Self = Self(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: Self = Self(0x11);
    pub const CONTINUE_AUTHENTICATION: Self = Self(0x18);
    pub const REAUTHENTICATE: Self = Self(0x19);
    pub const UNSPECIFIED_ERROR: Self = Self(0x80);
    pub const MALFORMED_PACKET: Self = Self(0x81);
    pub const PROTOCOL_ERROR: Self = Self(0x82);
    pub const IMPLEMENTATION_SPECIFIC_ERROR: Self = Self(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = Self(0x84);
    pub const CLIENT_IDENTIFIER_NOT_VALID: Self = Self(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: Self = Self(0x86);
    pub const NOT_AUTHORIZED: Self = Self(0x87);
    pub const SERVER_UNAVAILABLE: Self = Self(0x88);
    pub const SERVER_BUSY: Self = Self(0x89);
    pub const BANNED: Self = Self(0x8a);
    pub const SERVER_SHUTTING_DOWN: Self = Self(0x8b);
    pub const BAD_AUTHENTICATION_METHOD: Self = Self(0x8c);
    pub const KEEP_ALIVE_TIMEOUT: Self = Self(0x8d);
    pub const SESSION_TAKEN_OVER: Self = Self(0x8e);
    pub const TOPIC_FILTER_INVALID: Self = Self(0x8f);
    pub const TOPIC_NAME_INVALID: Self = Self(0x90);
    pub const PACKET_IDENTIFIER_IN_USE: Self = Self(0x91);
    pub const PACKET_IDENTIFIER_NOT_FOUND: Self = Self(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: Self = Self(0x93);
    pub const TOPIC_ALIAS_INVALID: Self = Self(0x94);
    pub const PACKET_TOO_LARGE: Self = Self(0x95);
    pub const MESSAGE_RATE_TOO_HIGH: Self = Self(0x96);
    pub const QUOTA_EXCEEDED: Self = Self(0x97);
    pub const ADMINISTRATIVE_ACTION: Self = Self(0x98);
    pub const PAYLOAD_FORMAT_INVALID: Self = Self(0x99);
    pub const RETAIN_NOT_SUPPORTED: Self = Self(0x9a);
    pub const QOS_NOT_SUPPORTED: Self = Self(0x9b);
    pub const USE_ANOTHER_SERVER: Self = Self(0x9c);
    pub const SERVER_MOVED: Self = Self(0x9d);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0x9e);
    pub const CONNECTION_RATE_EXCEEDED: Self = Self(0x9f);
    pub const MAXIMUM_CONNECT_TIME: Self = Self(0xa0);
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Self = Self(0xa1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0xa2);

    /// Whether this code reports a failure (0x80 and above).
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }
}

/// Why a packet could not be decoded, with the reason code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (reason code {:#04x})", reason.0)]
pub struct DecodeError {
    /// The reason code for CONNACK or DISCONNECT.
    pub reason: ReasonCode,
    /// What was wrong.
    pub message: &'static str,
}

impl DecodeError {
    /// An error with `reason`.
    pub fn new(reason: ReasonCode, message: &'static str) -> Self {
        Self { reason, message }
    }

    /// A malformed packet (0x81).
    pub fn malformed(message: &'static str) -> Self {
        Self::new(ReasonCode::MALFORMED_PACKET, message)
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field is over 65535 bytes.
    #[error("a field is longer than 65535 bytes")]
    FieldTooLong,
    /// The packet is over the largest remaining length.
    #[error("the packet is too large to encode")]
    TooLarge,
    /// A property was set where the packet cannot carry it.
    #[error("property {0:#04x} is not allowed in this packet")]
    PropertyNotAllowed(u8),
    /// A value is outside what the field can carry.
    #[error("{0} out of range")]
    OutOfRange(&'static str),
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet type, as written in the fixed header.
    pub fn type_code(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

/// Frames and decodes packets of one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// The protocol version; `None` until CONNECT is decoded (server side), which sets it.
    pub version: Option<Version>,
    /// The largest packet accepted, fixed header included.
    pub maximum_packet_size: u32,
}

impl Decoder {
    /// A decoder that learns the version from CONNECT.
    pub fn new(maximum_packet_size: u32) -> Self {
        Self {
            version: None,
            maximum_packet_size,
        }
    }

    /// The whole length of the packet at the start of `buffer`, once its fixed header is
    /// there. A packet over the maximum size is refused here, before its body is read.
    pub fn frame_len(&self, buffer: &[u8]) -> Result<Option<usize>, DecodeError> {
        let mut remaining = 0usize;
        for index in 0..4 {
            let Some(&byte) = buffer.get(1 + index) else {
                return Ok(None);
            };
            remaining |= usize::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                let total = 2 + index + remaining;
                if total > self.maximum_packet_size as usize {
                    return Err(DecodeError::new(
                        ReasonCode::PACKET_TOO_LARGE,
                        "packet over the maximum packet size",
                    ));
                }
                return Ok(Some(total));
            }
        }
        Err(DecodeError::malformed(
            "remaining length longer than 4 bytes",
        ))
    }

    /// Takes one whole packet off the front of `buffer`; `Ok(None)` when more bytes are
    /// needed.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(total) = self.frame_len(buffer)? else {
            return Ok(None);
        };
        if buffer.len() < total {
            return Ok(None);
        }
        let mut frame = buffer.split_to(total).freeze();
        let first = frame.get_u8();
        while frame[0] & 0x80 != 0 {
            frame.advance(1);
        }
        frame.advance(1);
        let packet = self.decode_body(first, &frame)?;
        Ok(Some(packet))
    }

    fn decode_body(&mut self, first: u8, body: &Bytes) -> Result<Packet, DecodeError> {
        let kind = first >> 4;
        let flags = first & 0x0f;
        let mut reader = Reader::new(body);
        if kind == 1 {
            if flags != 0 {
                return Err(DecodeError::malformed("reserved CONNECT flags set"));
            }
            let connect = connect::decode(&mut reader)?;
            self.version = Some(connect.version);
            return Ok(Packet::Connect(Box::new(connect)));
        }
        let version = self.version.unwrap_or(Version::V5);
        let expected_flags = match kind {
            3 => flags,
            6 | 8 | 10 => 0b0010,
            _ => 0,
        };
        if flags != expected_flags {
            return Err(DecodeError::malformed("reserved fixed header flags set"));
        }
        let packet = match kind {
            2 => Packet::ConnAck(connack::decode(&mut reader, version)?),
            3 => Packet::Publish(publish::decode(&mut reader, flags, version)?),
            4 => Packet::PubAck(ack::decode(&mut reader, version)?),
            5 => Packet::PubRec(ack::decode(&mut reader, version)?),
            6 => Packet::PubRel(ack::decode(&mut reader, version)?),
            7 => Packet::PubComp(ack::decode(&mut reader, version)?),
            8 => Packet::Subscribe(subscribe::decode(&mut reader, version)?),
            9 => Packet::SubAck(suback::decode(&mut reader, version)?),
            10 => Packet::Unsubscribe(unsubscribe::decode(&mut reader, version)?),
            11 => Packet::UnsubAck(unsuback::decode(&mut reader, version)?),
            12 => Packet::PingReq,
            13 => Packet::PingResp,
            14 => Packet::Disconnect(disconnect::decode(&mut reader, version)?),
            15 if version == Version::V5 => Packet::Auth(auth::decode(&mut reader)?),
            _ => return Err(DecodeError::malformed("reserved packet type")),
        };
        reader.finish()?;
        Ok(packet)
    }
}

/// Writes `packet` for `version` to `out`.
pub fn encode(packet: &Packet, version: Version, out: &mut BytesMut) -> Result<(), EncodeError> {
    let mut body = BytesMut::new();
    let mut flags = 0u8;
    match packet {
        Packet::Connect(connect) => connect::encode(connect, &mut body)?,
        Packet::ConnAck(connack) => connack::encode(connack, version, &mut body)?,
        Packet::Publish(publish) => flags = publish::encode(publish, version, &mut body)?,
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubComp(ack) => {
            ack::encode(ack, version, &mut body)?
        }
        Packet::PubRel(ack) => {
            flags = 0b0010;
            ack::encode(ack, version, &mut body)?
        }
        Packet::Subscribe(subscribe) => {
            flags = 0b0010;
            subscribe::encode(subscribe, version, &mut body)?
        }
        Packet::SubAck(suback) => suback::encode(suback, version, &mut body)?,
        Packet::Unsubscribe(unsubscribe) => {
            flags = 0b0010;
            unsubscribe::encode(unsubscribe, version, &mut body)?
        }
        Packet::UnsubAck(unsuback) => unsuback::encode(unsuback, version, &mut body)?,
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => disconnect::encode(disconnect, version, &mut body)?,
        Packet::Auth(auth) => {
            if version != Version::V5 {
                return Err(EncodeError::OutOfRange("AUTH in MQTT 3.1.1"));
            }
            auth::encode(auth, &mut body)?
        }
    }
    let length = u32::try_from(body.len())
        .ok()
        .filter(|&length| length <= MAX_VARINT)
        .ok_or(EncodeError::TooLarge)?;
    out.reserve(1 + wire::varint_len(length) + body.len());
    out.put_u8(packet.type_code() << 4 | flags);
    wire::put_varint(out, length);
    out.put_slice(&body);
    Ok(())
}

/// Reads a packet identifier, which is never 0 ([MQTT-2.2.1-3]).
pub(crate) fn packet_id(reader: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match reader.u16()? {
        0 => Err(DecodeError::malformed("packet identifier 0")),
        id => Ok(id),
    }
}

/// Checks a packet identifier before writing it.
pub(crate) fn check_packet_id(id: u16) -> Result<u16, EncodeError> {
    if id == 0 {
        Err(EncodeError::OutOfRange("packet identifier 0"))
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests;
