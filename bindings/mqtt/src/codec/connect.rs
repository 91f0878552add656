//! CONNECT (MQTT 3.1.1 §3.1, MQTT 5 §3.1).

use bytes::{BufMut, Bytes, BytesMut};

use super::properties::{Properties, PropertyContext};
use super::wire::{self, Reader};
use super::{DecodeError, EncodeError, QoS, ReasonCode, Version};

/// A will message, published by the server when the connection ends abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will properties (MQTT 5): delay, expiry, content type, response topic...
    pub properties: Properties,
    /// Where it is published.
    pub topic: String,
    /// What is published.
    pub payload: Bytes,
    /// At which QoS.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version asked for.
    pub version: Version,
    /// Clean start (MQTT 5) or clean session (3.1.1).
    pub clean_start: bool,
    /// Seconds between control packets; 0 turns keep alive off.
    pub keep_alive: u16,
    /// CONNECT properties (MQTT 5).
    pub properties: Properties,
    /// The client identifier; may be empty.
    pub client_id: String,
    /// The will.
    pub will: Option<Will>,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<Bytes>,
}

pub(super) fn decode(reader: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let unsupported = DecodeError::new(
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        "unsupported protocol name or level",
    );
    let name = reader.utf8()?;
    let level = reader.u8()?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => Version::V3_1_1,
        ("MQTT", 5) => Version::V5,
        _ => return Err(unsupported),
    };
    let flags = reader.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_bits((flags >> 3) & 0x03)?;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::malformed("will QoS or retain without a will"));
    }
    if version == Version::V3_1_1 && password_flag && !username_flag {
        return Err(DecodeError::malformed("password without user name"));
    }
    let keep_alive = reader.u16()?;
    let properties = match version {
        Version::V5 => Properties::decode(reader, PropertyContext::Connect)?,
        Version::V3_1_1 => Properties::default(),
    };
    if properties.auth_data.is_some() && properties.auth_method.is_none() {
        return Err(wire::protocol("authentication data without a method"));
    }
    let client_id = reader.utf8()?;
    let will = if will_flag {
        let properties = match version {
            Version::V5 => Properties::decode(reader, PropertyContext::Will)?,
            Version::V3_1_1 => Properties::default(),
        };
        let topic = reader.utf8()?;
        if !super::topic::valid_name(&topic) {
            return Err(DecodeError::new(
                ReasonCode::TOPIC_NAME_INVALID,
                "will topic is not a valid topic name",
            ));
        }
        let payload = reader.binary()?;
        Some(Will {
            properties,
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = username_flag.then(|| reader.utf8()).transpose()?;
    let password = password_flag.then(|| reader.binary()).transpose()?;
    Ok(Connect {
        version,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

pub(super) fn encode(connect: &Connect, out: &mut BytesMut) -> Result<(), EncodeError> {
    wire::put_binary(out, b"MQTT");
    out.put_u8(connect.version.level());
    let mut flags = 0u8;
    if connect.clean_start {
        flags |= 0x02;
    }
    if let Some(will) = &connect.will {
        flags |= 0x04 | (will.qos as u8) << 3;
        if will.retain {
            flags |= 0x20;
        }
    }
    if connect.password.is_some() {
        if connect.version == Version::V3_1_1 && connect.username.is_none() {
            return Err(EncodeError::OutOfRange("password without user name"));
        }
        flags |= 0x40;
    }
    if connect.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(connect.keep_alive);
    if connect.version == Version::V5 {
        connect.properties.encode(out, PropertyContext::Connect)?;
    }
    wire::check_len(connect.client_id.as_bytes())?;
    wire::put_binary(out, connect.client_id.as_bytes());
    if let Some(will) = &connect.will {
        if connect.version == Version::V5 {
            will.properties.encode(out, PropertyContext::Will)?;
        }
        wire::check_len(will.topic.as_bytes())?;
        wire::put_binary(out, will.topic.as_bytes());
        wire::check_len(&will.payload)?;
        wire::put_binary(out, &will.payload);
    }
    if let Some(username) = &connect.username {
        wire::check_len(username.as_bytes())?;
        wire::put_binary(out, username.as_bytes());
    }
    if let Some(password) = &connect.password {
        wire::check_len(password)?;
        wire::put_binary(out, password);
    }
    Ok(())
}
