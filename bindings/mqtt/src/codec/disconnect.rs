//! DISCONNECT (MQTT 3.1.1 §3.14, MQTT 5 §3.14).

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::Reader;
use super::{DecodeError, EncodeError, ReasonCode, Version};

/// DISCONNECT; in 3.1.1 it has no body (and only a client sends it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why (MQTT 5).
    pub reason: ReasonCode,
    /// Properties (MQTT 5): session expiry, reason string, server reference, user properties.
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with `reason` and no properties.
    pub fn with_reason(reason: ReasonCode) -> Self {
        Self {
            reason,
            properties: Properties::default(),
        }
    }
}

pub(super) fn decode(reader: &mut Reader<'_>, version: Version) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    if version == Version::V5 && !reader.is_empty() {
        disconnect.reason = ReasonCode(reader.u8()?);
        if !reader.is_empty() {
            disconnect.properties = Properties::decode(reader, PropertyContext::Disconnect)?;
        }
    }
    Ok(disconnect)
}

pub(super) fn encode(
    disconnect: &Disconnect,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if version == Version::V5 {
        let has_properties = !disconnect.properties.is_empty();
        if disconnect.reason != ReasonCode::SUCCESS || has_properties {
            out.put_u8(disconnect.reason.0);
        }
        if has_properties {
            disconnect
                .properties
                .encode(out, PropertyContext::Disconnect)?;
        }
    }
    Ok(())
}
