//! UNSUBSCRIBE (MQTT 3.1.1 §3.10, MQTT 5 §3.10).

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::{self, Reader};
use super::{DecodeError, EncodeError, Version};

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    /// The packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5): user properties.
    pub properties: Properties,
    /// Topic filters, at least one.
    pub filters: Vec<String>,
}

pub(super) fn decode(
    reader: &mut Reader<'_>,
    version: Version,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = super::packet_id(reader)?;
    let properties = match version {
        Version::V5 => Properties::decode(reader, PropertyContext::Unsubscribe)?,
        Version::V3_1_1 => Properties::default(),
    };
    let mut filters = Vec::new();
    while !reader.is_empty() {
        filters.push(reader.utf8()?);
    }
    if filters.is_empty() {
        return Err(wire::protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

pub(super) fn encode(
    unsubscribe: &Unsubscribe,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if unsubscribe.filters.is_empty() {
        return Err(EncodeError::OutOfRange("no topic filter"));
    }
    out.put_u16(super::check_packet_id(unsubscribe.packet_id)?);
    if version == Version::V5 {
        unsubscribe
            .properties
            .encode(out, PropertyContext::Unsubscribe)?;
    }
    for filter in &unsubscribe.filters {
        wire::check_len(filter.as_bytes())?;
        wire::put_binary(out, filter.as_bytes());
    }
    Ok(())
}
