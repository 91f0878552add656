//! PUBACK, PUBREC, PUBREL and PUBCOMP (MQTT 5 §3.4 to §3.7): four packets with one layout,
//! so one file.

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::Reader;
use super::{DecodeError, EncodeError, ReasonCode, Version};

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// The packet identifier acknowledged.
    pub packet_id: u16,
    /// The outcome (MQTT 5; always success in 3.1.1).
    pub reason: ReasonCode,
    /// Properties (MQTT 5): reason string, user properties.
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement of `packet_id`.
    pub fn success(packet_id: u16) -> Self {
        Self {
            packet_id,
            ..Self::default()
        }
    }
}

pub(super) fn decode(reader: &mut Reader<'_>, version: Version) -> Result<Ack, DecodeError> {
    let packet_id = super::packet_id(reader)?;
    let mut ack = Ack::success(packet_id);
    if version == Version::V5 && !reader.is_empty() {
        ack.reason = ReasonCode(reader.u8()?);
        if !reader.is_empty() {
            ack.properties = Properties::decode(reader, PropertyContext::Ack)?;
        }
    }
    Ok(ack)
}

pub(super) fn encode(ack: &Ack, version: Version, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u16(super::check_packet_id(ack.packet_id)?);
    if version == Version::V5 {
        // The shortest form that carries what is set (MQTT 5 §3.4.2.1).
        let has_properties = !ack.properties.is_empty();
        if ack.reason != ReasonCode::SUCCESS || has_properties {
            out.put_u8(ack.reason.0);
        }
        if has_properties {
            ack.properties.encode(out, PropertyContext::Ack)?;
        }
    }
    Ok(())
}
