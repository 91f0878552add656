//! UNSUBACK (MQTT 3.1.1 §3.11, MQTT 5 §3.11).

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::Reader;
use super::{DecodeError, EncodeError, ReasonCode, Version};

/// UNSUBACK; in 3.1.1 it carries only the packet identifier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5): reason string, user properties.
    pub properties: Properties,
    /// One reason code per topic filter (MQTT 5).
    pub reasons: Vec<ReasonCode>,
}

pub(super) fn decode(reader: &mut Reader<'_>, version: Version) -> Result<UnsubAck, DecodeError> {
    let packet_id = super::packet_id(reader)?;
    let mut unsuback = UnsubAck {
        packet_id,
        ..UnsubAck::default()
    };
    if version == Version::V5 {
        unsuback.properties = Properties::decode(reader, PropertyContext::UnsubAck)?;
        while !reader.is_empty() {
            unsuback.reasons.push(ReasonCode(reader.u8()?));
        }
    }
    Ok(unsuback)
}

pub(super) fn encode(
    unsuback: &UnsubAck,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    out.put_u16(super::check_packet_id(unsuback.packet_id)?);
    if version == Version::V5 {
        unsuback.properties.encode(out, PropertyContext::UnsubAck)?;
        for reason in &unsuback.reasons {
            out.put_u8(reason.0);
        }
    }
    Ok(())
}
