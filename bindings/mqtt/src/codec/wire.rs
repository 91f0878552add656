//! Primitive MQTT data types: integers, variable byte integers, UTF-8 strings, binary data.

use bytes::{BufMut, Bytes, BytesMut};

use super::{DecodeError, ReasonCode};

/// A reader over the body of one packet; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    /// The whole body, to slice payloads without copying.
    source: &'a Bytes,
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(source: &'a Bytes) -> Self {
        Self {
            data: source.as_ref(),
            source,
            offset: 0,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.offset
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < count {
            return Err(DecodeError::malformed("packet ends early"));
        }
        let slice = &self.data[self.offset..self.offset + count];
        self.offset += count;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A variable byte integer (1 to 4 bytes, minimal or not: the spec allows both).
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for index in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// Binary data: a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let length = usize::from(self.u16()?);
        self.bytes(length)
    }

    /// `count` bytes as a slice of the packet.
    pub(crate) fn bytes(&mut self, count: usize) -> Result<Bytes, DecodeError> {
        let start = self.offset;
        self.take(count)?;
        Ok(self.source.slice(start..start + count))
    }

    /// The rest of the packet.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.offset;
        self.offset = self.data.len();
        self.source.slice(start..)
    }

    /// A UTF-8 encoded string: well-formed UTF-8 without U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).
    pub(crate) fn utf8(&mut self) -> Result<String, DecodeError> {
        let length = usize::from(self.u16()?);
        let bytes = self.take(length)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| DecodeError::malformed("string is not well-formed UTF-8"))?;
        if text.contains('\0') {
            return Err(DecodeError::malformed("string contains U+0000"));
        }
        Ok(text.to_owned())
    }

    /// A sub-reader over the next `count` bytes.
    pub(crate) fn split(&mut self, count: usize) -> Result<Reader<'a>, DecodeError> {
        let start = self.offset;
        self.take(count)?;
        Ok(Reader {
            data: &self.data[..start + count],
            source: self.source,
            offset: start,
        })
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::malformed(
                "unexpected bytes at the end of the packet",
            ))
        }
    }
}

/// The length of `value` as a variable byte integer.
pub(crate) fn varint_len(value: u32) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, mut value: u32) {
    loop {
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

/// Writes a string or binary field. Lengths were checked by [`check_len`] before encoding.
pub(crate) fn put_binary(out: &mut BytesMut, value: &[u8]) {
    out.put_u16(value.len() as u16);
    out.put_slice(value);
}

/// The largest string or binary field.
pub(crate) const MAX_FIELD: usize = u16::MAX as usize;

/// Checks that a string or binary field fits its two-byte length.
pub(crate) fn check_len(value: &[u8]) -> Result<(), super::EncodeError> {
    if value.len() > MAX_FIELD {
        Err(super::EncodeError::FieldTooLong)
    } else {
        Ok(())
    }
}

/// A protocol error (not a malformed packet): the spec's 0x82.
pub(crate) fn protocol(message: &'static str) -> DecodeError {
    DecodeError::new(ReasonCode::PROTOCOL_ERROR, message)
}
