//! SUBSCRIBE (MQTT 3.1.1 §3.8, MQTT 5 §3.8).

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::{self, Reader};
use super::{DecodeError, EncodeError, QoS, Version};

/// When retained messages are sent on subscribing (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum RetainHandling {
    /// At every subscribe.
    #[default]
    OnSubscribe = 0,
    /// Only when the subscription is new.
    OnNewSubscribe = 1,
    /// Never.
    Never = 2,
}

/// The options of one topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SubscriptionOptions {
    /// The highest QoS delivered.
    pub qos: QoS,
    /// Do not deliver the subscriber's own publications (MQTT 5).
    pub no_local: bool,
    /// Keep the retain flag as published (MQTT 5).
    pub retain_as_published: bool,
    /// When retained messages are sent (MQTT 5).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE. Topic filters are decoded as strings; the server checks them with
/// [`super::topic::valid_filter`] and answers an invalid one in SUBACK (0x8F).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// The packet identifier.
    pub packet_id: u16,
    /// Properties (MQTT 5): one subscription identifier, user properties.
    pub properties: Properties,
    /// Topic filters and their options, at least one.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

pub(super) fn decode(reader: &mut Reader<'_>, version: Version) -> Result<Subscribe, DecodeError> {
    let packet_id = super::packet_id(reader)?;
    let properties = match version {
        Version::V5 => Properties::decode(reader, PropertyContext::Subscribe)?,
        Version::V3_1_1 => Properties::default(),
    };
    let mut filters = Vec::new();
    while !reader.is_empty() {
        let filter = reader.utf8()?;
        let bits = reader.u8()?;
        let reserved = match version {
            Version::V5 => 0xc0,
            Version::V3_1_1 => 0xfc,
        };
        if bits & reserved != 0 {
            return Err(DecodeError::malformed(
                "reserved subscription option bits set",
            ));
        }
        let retain_handling = match (bits >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(wire::protocol("retain handling 3")),
        };
        let options = SubscriptionOptions {
            qos: QoS::from_bits(bits & 0x03)?,
            no_local: bits & 0x04 != 0,
            retain_as_published: bits & 0x08 != 0,
            retain_handling,
        };
        if options.no_local && super::topic::shared(&filter).is_some() {
            return Err(wire::protocol("no local on a shared subscription"));
        }
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(wire::protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

pub(super) fn encode(
    subscribe: &Subscribe,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if subscribe.filters.is_empty() {
        return Err(EncodeError::OutOfRange("no topic filter"));
    }
    out.put_u16(super::check_packet_id(subscribe.packet_id)?);
    if version == Version::V5 {
        subscribe
            .properties
            .encode(out, PropertyContext::Subscribe)?;
    }
    for (filter, options) in &subscribe.filters {
        wire::check_len(filter.as_bytes())?;
        wire::put_binary(out, filter.as_bytes());
        let mut bits = options.qos as u8;
        if version == Version::V5 {
            bits |= u8::from(options.no_local) << 2
                | u8::from(options.retain_as_published) << 3
                | (options.retain_handling as u8) << 4;
        }
        out.put_u8(bits);
    }
    Ok(())
}
