//! gRPC over HTTP/2, the bytes: length-prefixed messages, `grpc-timeout`, `grpc-message`.
//!
//! Written here rather than taken from a crate because the one maintained implementation
//! (tonic's) is tied to its own service and body types; this is the small part of it the
//! bindings need, with the size limit checked on the 5-byte prefix before any payload is
//! buffered.

use std::io::Read;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::kind::{Code, Status};

/// The length prefix: one flag byte (compressed or not) and a big-endian `u32` length.
pub const PREFIX: usize = 5;

/// The most a message may hold when nothing else is configured: 4 MiB, gRPC's default.
pub const DEFAULT_MAXIMUM_MESSAGE_SIZE: usize = 4 << 20;

/// How the messages of one direction may be compressed (`grpc-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No compression: a message with the compressed flag set is an error.
    Identity,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// The encoding a `grpc-encoding` value names; `Err` with `UNIMPLEMENTED` for others.
    pub fn parse(value: Option<&str>) -> Result<Self, Status> {
        match value.map(str::trim) {
            None | Some("identity") => Ok(Encoding::Identity),
            Some("gzip") => Ok(Encoding::Gzip),
            Some(other) => Err(Status::new(
                Code::Unimplemented,
                format!("grpc-encoding `{other}` is not supported; use identity or gzip"),
            )),
        }
    }
}

/// What `grpc-accept-encoding` says this side decodes.
pub const ACCEPT_ENCODING: &str = "identity,gzip";

/// gRPC's own header names, built once: a name not among HTTP's standard ones is otherwise
/// allocated each time it is inserted.
pub mod names {
    use http::HeaderName;

    /// `grpc-status`.
    pub const STATUS: HeaderName = HeaderName::from_static("grpc-status");
    /// `grpc-message`.
    pub const MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
    /// `grpc-encoding`.
    pub const ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
    /// `grpc-timeout`.
    pub const TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    /// `grpc-accept-encoding`.
    pub const ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
}

/// Appends `message`, uncompressed, with its prefix.
pub fn encode(message: &[u8], out: &mut BytesMut) {
    out.reserve(PREFIX + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
}

/// A message with its prefix.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode(message, &mut out);
    out.freeze()
}

/// Splits a stream of body chunks into messages.
#[derive(Debug)]
pub struct Decoder {
    buffer: BytesMut,
    maximum: usize,
    encoding: Encoding,
    /// Set by the first refusal: a stream is not decoded past an error.
    failed: Option<Status>,
}

impl Decoder {
    /// A decoder refusing messages over `maximum` bytes (before and after decompression).
    pub fn new(maximum: usize, encoding: Encoding) -> Self {
        Self {
            buffer: BytesMut::new(),
            maximum,
            encoding,
            failed: None,
        }
    }

    /// Adds a chunk. Call [`Self::next_message`] until it yields nothing before adding the next one:
    /// that is what keeps the buffer within one message and one chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buffer.extend_from_slice(chunk);
        }
    }

    /// The next whole message, `Ok(None)` when more bytes are needed. A prefix announcing
    /// more than the maximum is refused as soon as the prefix is seen.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if let Some(status) = &self.failed {
            return Err(status.clone());
        }
        let next = self.decode_one();
        if let Err(status) = &next {
            self.failed = Some(status.clone());
            self.buffer.clear();
        }
        next
    }

    fn decode_one(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buffer.len() < PREFIX {
            return Ok(None);
        }
        let flag = self.buffer[0];
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if flag > 1 {
            return Err(Status::new(
                Code::Internal,
                format!("invalid message flag {flag}"),
            ));
        }
        if length > self.maximum {
            return Err(too_large(length, self.maximum));
        }
        if self.buffer.len() < PREFIX + length {
            return Ok(None);
        }
        self.buffer.advance(PREFIX);
        let payload = self.buffer.split_to(length).freeze();
        if flag == 0 {
            return Ok(Some(payload));
        }
        match self.encoding {
            Encoding::Identity => Err(Status::new(
                Code::Internal,
                "a compressed message without grpc-encoding",
            )),
            Encoding::Gzip => gunzip(&payload, self.maximum).map(Some),
        }
    }

    /// Checks that the stream ended between messages.
    pub fn finish(&self) -> Result<(), Status> {
        if let Some(status) = &self.failed {
            return Err(status.clone());
        }
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(Status::new(
                Code::Internal,
                format!(
                    "the stream ended inside a message ({} bytes)",
                    self.buffer.len()
                ),
            ))
        }
    }
}

fn too_large(length: usize, maximum: usize) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("message of {length} bytes is larger than the maximum of {maximum}"),
    )
}

/// Decompresses a gzip message, reading at most `maximum + 1` bytes of output.
fn gunzip(payload: &[u8], maximum: usize) -> Result<Bytes, Status> {
    let decoder = flate2::read::GzDecoder::new(payload);
    let mut out = Vec::new();
    let limit = u64::try_from(maximum).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|error| Status::new(Code::Internal, format!("gzip: {error}")))?;
    if out.len() > maximum {
        return Err(too_large(out.len(), maximum));
    }
    Ok(Bytes::from(out))
}

/// The `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `timeout`: the finest unit whose amount fits in 8 digits.
pub fn format_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (size, unit) in units {
        let amount = nanos.div_ceil(size);
        if amount <= MAX {
            return format!("{amount}{unit}");
        }
    }
    format!("{MAX}H")
}

/// `grpc-message` as sent: percent-encoded outside printable ASCII and `%`.
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `grpc-message` as received, percent-decoded; invalid escapes are kept as they are.
pub fn decode_message(message: &[u8]) -> String {
    let mut out = Vec::with_capacity(message.len());
    let mut index = 0;
    while index < message.len() {
        let byte = message[index];
        if byte == b'%' && index + 2 < message.len() {
            let hex = std::str::from_utf8(&message[index + 1..index + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            if let Some(decoded) = hex {
                out.push(decoded);
                index += 3;
                continue;
            }
        }
        out.push(byte);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_its_payload_arrives() {
        let mut decoder = Decoder::new(10, Encoding::Identity);
        decoder.push(&[0, 0, 0, 0, 11]);
        let status = decoder.next_message().unwrap_err();
        assert_eq!(status.code, Code::ResourceExhausted);
        // Refused for good: what follows is not decoded.
        decoder.push(&[0, 0, 0, 0, 0]);
        assert_eq!(decoder.next_message().unwrap_err(), status);
        assert_eq!(decoder.finish().unwrap_err(), status);
    }

    #[test]
    fn compressed_messages_need_an_encoding() {
        let compressed = gzip(b"hello");
        let mut framed = vec![1];
        framed.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        framed.extend_from_slice(&compressed);
        let mut identity = Decoder::new(100, Encoding::Identity);
        identity.push(&framed);
        assert_eq!(identity.next_message().unwrap_err().code, Code::Internal);
        let mut gzip_decoder = Decoder::new(100, Encoding::Gzip);
        gzip_decoder.push(&framed);
        assert_eq!(
            gzip_decoder.next_message().unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        let mut small = Decoder::new(3, Encoding::Gzip);
        small.push(&framed);
        // The compressed form is larger than 3 bytes already.
        assert_eq!(
            small.next_message().unwrap_err().code,
            Code::ResourceExhausted
        );
    }

    #[test]
    fn a_gzip_bomb_is_stopped_at_the_maximum() {
        let compressed = gzip(&vec![0u8; 1 << 20]);
        let mut framed = vec![1];
        framed.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        framed.extend_from_slice(&compressed);
        let mut decoder = Decoder::new(64 * 1024, Encoding::Gzip);
        decoder.push(&framed);
        assert_eq!(
            decoder.next_message().unwrap_err().code,
            Code::ResourceExhausted
        );
    }

    #[test]
    fn bad_flags_and_truncation_are_internal() {
        let mut decoder = Decoder::new(100, Encoding::Identity);
        decoder.push(&[2, 0, 0, 0, 0]);
        assert_eq!(decoder.next_message().unwrap_err().code, Code::Internal);
        let mut decoder = Decoder::new(100, Encoding::Identity);
        decoder.push(&[0, 0, 0, 0, 4, 1]);
        assert_eq!(decoder.next_message().unwrap(), None);
        assert_eq!(decoder.finish().unwrap_err().code, Code::Internal);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("123456789S"), None);
        assert_eq!(parse_timeout("S"), None);
        assert_eq!(parse_timeout("-1S"), None);
        assert_eq!(parse_timeout("10x"), None);
        assert_eq!(format_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_timeout(Duration::from_secs(1000)), "1000000m");
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("50% off\n"), "50%25 off%0A");
        assert_eq!(decode_message(b"50%25 off%0A"), "50% off\n");
        assert_eq!(decode_message(b"%zz%4"), "%zz%4");
        assert_eq!(decode_message("é".as_bytes()), "é");
    }

    proptest! {
        /// Any messages, framed and cut into any chunks, decode to the same messages.
        #[test]
        fn framing_round_trips_across_chunk_boundaries(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(1usize..64, 1..16),
        ) {
            let mut wire = BytesMut::new();
            for message in &messages {
                encode(message, &mut wire);
            }
            let mut decoder = Decoder::new(300, Encoding::Identity);
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let size = (*cut.next().unwrap()).min(rest.len());
                decoder.push(&rest[..size]);
                rest = &rest[size..];
                while let Some(message) = decoder.next_message().unwrap() {
                    decoded.push(message.to_vec());
                }
            }
            decoder.finish().unwrap();
            prop_assert_eq!(decoded, messages);
        }

        /// Arbitrary bytes never panic the decoder, and it never holds more than one maximum
        /// message plus one chunk.
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut decoder = Decoder::new(128, Encoding::Gzip);
            'outer: for chunk in &chunks {
                decoder.push(chunk);
                loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => prop_assert!(message.len() <= 128),
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
                prop_assert!(decoder.buffer.len() <= PREFIX + 128 + 64);
            }
        }

        #[test]
        fn timeouts_round_trip_without_shrinking(millis in 0u64..10_000_000_000) {
            let timeout = Duration::from_millis(millis);
            let parsed = parse_timeout(&format_timeout(timeout)).unwrap();
            prop_assert!(parsed >= timeout);
        }

        #[test]
        fn status_messages_round_trip(message in ".*") {
            prop_assert_eq!(decode_message(encode_message(&message).as_bytes()), message);
        }
    }
}
