//! PUBLISH (MQTT 3.1.1 §3.3, MQTT 5 §3.3).

use bytes::{BufMut, Bytes, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::{self, Reader};
use super::{DecodeError, EncodeError, QoS, ReasonCode, Version};

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// A redelivery.
    pub dup: bool,
    /// The QoS.
    pub qos: QoS,
    /// Whether the server keeps it for future subscribers.
    pub retain: bool,
    /// The topic name; empty in MQTT 5 when a topic alias stands for it.
    pub topic: String,
    /// The packet identifier (QoS 1 and 2 only).
    pub packet_id: Option<u16>,
    /// PUBLISH properties (MQTT 5).
    pub properties: Properties,
    /// The application message.
    pub payload: Bytes,
}

pub(super) fn decode(
    reader: &mut Reader<'_>,
    flags: u8,
    version: Version,
) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_bits((flags >> 1) & 0x03)?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::malformed("DUP set on QoS 0"));
    }
    let topic = reader.utf8()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(super::packet_id(reader)?),
    };
    let properties = match version {
        Version::V5 => Properties::decode(reader, PropertyContext::Publish)?,
        Version::V3_1_1 => Properties::default(),
    };
    let aliased = properties.topic_alias.is_some();
    if topic.is_empty() {
        if !aliased {
            return Err(DecodeError::new(
                ReasonCode::TOPIC_NAME_INVALID,
                "empty topic name without a topic alias",
            ));
        }
    } else if !super::topic::valid_name(&topic) {
        return Err(DecodeError::new(
            ReasonCode::TOPIC_NAME_INVALID,
            "topic name contains a wildcard",
        ));
    }
    let payload = reader.rest();
    if properties.payload_format == Some(1) && std::str::from_utf8(&payload).is_err() {
        return Err(DecodeError::new(
            ReasonCode::PAYLOAD_FORMAT_INVALID,
            "payload is not UTF-8 as its format says",
        ));
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

/// Writes the body and returns the fixed header flags.
pub(super) fn encode(
    publish: &Publish,
    version: Version,
    out: &mut BytesMut,
) -> Result<u8, EncodeError> {
    if publish.dup && publish.qos == QoS::AtMostOnce {
        return Err(EncodeError::OutOfRange("DUP on QoS 0"));
    }
    wire::check_len(publish.topic.as_bytes())?;
    wire::put_binary(out, publish.topic.as_bytes());
    match (publish.qos, publish.packet_id) {
        (QoS::AtMostOnce, _) => {}
        (_, Some(id)) => out.put_u16(super::check_packet_id(id)?),
        (_, None) => return Err(EncodeError::OutOfRange("packet identifier missing")),
    }
    if version == Version::V5 {
        publish.properties.encode(out, PropertyContext::Publish)?;
    }
    out.put_slice(&publish.payload);
    let mut flags = (publish.qos as u8) << 1;
    if publish.dup {
        flags |= 0x08;
    }
    if publish.retain {
        flags |= 0x01;
    }
    Ok(flags)
}
