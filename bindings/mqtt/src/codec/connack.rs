//! CONNACK (MQTT 3.1.1 §3.2, MQTT 5 §3.2).

use bytes::{BufMut, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::Reader;
use super::{DecodeError, EncodeError, ReasonCode, Version};

/// CONNACK. The reason is an MQTT 5 code; for 3.1.1 it is mapped to a return code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Whether the server resumed a session.
    pub session_present: bool,
    /// Success, or why the connection is refused.
    pub reason: ReasonCode,
    /// CONNACK properties (MQTT 5).
    pub properties: Properties,
}

/// The 3.1.1 return code closest to a 5 reason code.
fn return_code(reason: ReasonCode) -> u8 {
    match reason {
        ReasonCode::SUCCESS => 0,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED => 5,
        _ => 3,
    }
}

fn from_return_code(code: u8) -> Result<ReasonCode, DecodeError> {
    Ok(match code {
        0 => ReasonCode::SUCCESS,
        1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        3 => ReasonCode::SERVER_UNAVAILABLE,
        4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        5 => ReasonCode::NOT_AUTHORIZED,
        _ => return Err(DecodeError::malformed("unknown CONNACK return code")),
    })
}

#[cfg(test)]
/// Whether `reason` may appear in a 3.1.1 CONNACK without losing meaning.
pub(super) fn v3_round_trips(reason: ReasonCode) -> bool {
    matches!(reason.0, 0x00 | 0x84 | 0x85 | 0x88 | 0x86 | 0x87)
}

pub(super) fn decode(reader: &mut Reader<'_>, version: Version) -> Result<ConnAck, DecodeError> {
    let flags = reader.u8()?;
    if flags & 0xfe != 0 {
        return Err(DecodeError::malformed("reserved CONNACK flags set"));
    }
    let session_present = flags & 0x01 != 0;
    let code = reader.u8()?;
    let (reason, properties) = match version {
        Version::V3_1_1 => (from_return_code(code)?, Properties::default()),
        Version::V5 => (
            ReasonCode(code),
            Properties::decode(reader, PropertyContext::ConnAck)?,
        ),
    };
    if session_present && reason.is_error() {
        return Err(DecodeError::malformed("session present on a refusal"));
    }
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

pub(super) fn encode(
    connack: &ConnAck,
    version: Version,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let session_present = connack.session_present && !connack.reason.is_error();
    out.put_u8(u8::from(session_present));
    match version {
        Version::V3_1_1 => out.put_u8(return_code(connack.reason)),
        Version::V5 => {
            out.put_u8(connack.reason.0);
            connack.properties.encode(out, PropertyContext::ConnAck)?;
        }
    }
    Ok(())
}
