//! AUTH (MQTT 5 §3.15).

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::{self, Reader};
use super::{DecodeError, EncodeError, ReasonCode};

/// AUTH: a step of extended authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success (0x00), continue (0x18) or re-authenticate (0x19).
    pub reason: ReasonCode,
    /// Properties: authentication method and data, reason string, user properties.
    pub properties: Properties,
}

pub(super) fn decode(reader: &mut Reader<'_>) -> Result<Auth, DecodeError> {
    let mut auth = Auth::default();
    if !reader.is_empty() {
        auth.reason = ReasonCode(reader.u8()?);
        if !matches!(auth.reason.0, 0x00 | 0x18 | 0x19) {
            return Err(DecodeError::malformed("unknown AUTH reason code"));
        }
        if !reader.is_empty() {
            auth.properties = Properties::decode(reader, PropertyContext::Auth)?;
        }
    }
    if auth.reason != ReasonCode::SUCCESS && auth.properties.auth_method.is_none() {
        return Err(wire::protocol("AUTH without an authentication method"));
    }
    Ok(auth)
}

pub(super) fn encode(auth: &Auth, out: &mut BytesMut) -> Result<(), EncodeError> {
    let has_properties = !auth.properties.is_empty();
    if auth.reason != ReasonCode::SUCCESS || has_properties {
        out.put_u8(auth.reason.0);
    }
    if has_properties {
        auth.properties.encode(out, PropertyContext::Auth)?;
    }
    Ok(())
}
