//! SUBACK (MQTT 3.1.1 §3.9, MQTT 5 §3.9).

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::Reader;
use super::{DecodeError, EncodeError, ReasonCode, Version};

/// SUBACK: one reason code per topic filter, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5): reason string, user properties.
    pub properties: Properties,
    /// Granted QoS (0x00 to 0x02) or a failure; 3.1.1 knows only 0x80 as failure.
    pub reasons: Vec<ReasonCode>,
}

pub(super) fn decode(reader: &mut Reader<'_>, version: Version) -> Result<SubAck, DecodeError> {
    let packet_id = super::packet_id(reader)?;
    let properties = match version {
        Version::V5 => Properties::decode(reader, PropertyContext::SubAck)?,
        Version::V3_1_1 => Properties::default(),
    };
    let mut reasons = Vec::new();
    while !reader.is_empty() {
        let code = reader.u8()?;
        if version == Version::V3_1_1 && !matches!(code, 0 | 1 | 2 | 0x80) {
            return Err(DecodeError::malformed("unknown SUBACK return code"));
        }
        reasons.push(ReasonCode(code));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

pub(super) fn encode(
    suback: &SubAck,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    out.put_u16(super::check_packet_id(suback.packet_id)?);
    if version == Version::V5 {
        suback.properties.encode(out, PropertyContext::SubAck)?;
    }
    for reason in &suback.reasons {
        let code = match version {
            Version::V3_1_1 if reason.is_error() => 0x80,
            _ => reason.0,
        };
        out.put_u8(code);
    }
    Ok(())
}
