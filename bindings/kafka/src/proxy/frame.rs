//! Kafka framing for the proxy: length-prefixed frames read whole and bounded, and the few
//! header fields the proxy looks at. Everything else in a frame is forwarded as it came.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much is read from a socket at a time; also the step by which a large frame's buffer
/// grows, so a peer announcing a huge frame costs memory only as it sends it.
const READ_CHUNK: usize = 64 * 1024;
const GROWTH_STEP: usize = 1024 * 1024;

/// Why a connection's frames cannot be read any more.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The size prefix is negative or larger than allowed.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    Oversized { size: i64, max: usize },
    /// The peer closed in the middle of a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// The frame is too short for its header.
    #[error("frame too short for a Kafka header")]
    Short,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads whole frames (size prefix included) from one side of a connection.
pub(crate) struct FrameReader<R> {
    io: R,
    buffer: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames of at most `max` bytes after the size prefix.
    pub(crate) fn new(io: R, max: usize) -> Self {
        Self {
            io,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            max,
        }
    }

    /// The next frame, size prefix included; `None` when the peer closed between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if self.buffer.len() >= 4 {
                let size = i32::from_be_bytes([
                    self.buffer[0],
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                ]);
                let Ok(size) = usize::try_from(size) else {
                    return Err(FrameError::Oversized {
                        size: i64::from(size),
                        max: self.max,
                    });
                };
                if size > self.max {
                    return Err(FrameError::Oversized {
                        size: size as i64,
                        max: self.max,
                    });
                }
                let total = 4 + size;
                if self.buffer.len() >= total {
                    return Ok(Some(self.buffer.split_to(total).freeze()));
                }
                let missing = total - self.buffer.len();
                self.buffer.reserve(missing.min(GROWTH_STEP));
            } else {
                self.buffer.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }
}

/// The fixed start of every request header (v0, v1 and v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// The header of a request frame (size prefix included).
pub(crate) fn request_header(frame: &[u8]) -> Result<RequestHeader, FrameError> {
    if frame.len() < 12 {
        return Err(FrameError::Short);
    }
    Ok(RequestHeader {
        api_key: i16::from_be_bytes([frame[4], frame[5]]),
        api_version: i16::from_be_bytes([frame[6], frame[7]]),
        correlation_id: i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]),
    })
}

/// The correlation id of a response frame (size prefix included).
pub(crate) fn response_correlation_id(frame: &[u8]) -> Result<i32, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Short);
    }
    Ok(i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]))
}

/// Whether a Produce request (whole frame) waits for an answer: Kafka answers none when
/// `acks` is 0. `None` when the frame is too short or malformed to tell.
pub(crate) fn produce_acks(frame: &[u8], version: i16) -> Option<i16> {
    let mut body = frame.get(12..)?;
    // Request header: client_id (nullable int16 string), then tagged fields from v9.
    let client_id = body.try_get_i16().ok()?;
    if client_id > 0 {
        body = body.get(client_id as usize..)?;
    }
    let flexible = version >= 9;
    if flexible {
        skip_tagged_fields(&mut body)?;
    }
    if version >= 3 {
        // transactional_id: nullable string, compact from v9.
        if flexible {
            let length = unsigned_varint(&mut body)?;
            if length > 1 {
                body = body.get(length as usize - 1..)?;
            }
        } else {
            let length = body.try_get_i16().ok()?;
            if length > 0 {
                body = body.get(length as usize..)?;
            }
        }
    }
    body.try_get_i16().ok()
}

/// Skips the tagged fields that end a flexible header.
pub(crate) fn skip_tagged_fields(body: &mut &[u8]) -> Option<()> {
    let count = unsigned_varint(body)?;
    for _ in 0..count {
        unsigned_varint(body)?;
        let size = unsigned_varint(body)? as usize;
        *body = body.get(size..)?;
    }
    Some(())
}

/// Reads a Kafka unsigned varint (at most 5 bytes).
pub(crate) fn unsigned_varint(body: &mut &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for shift in (0..35).step_by(7) {
        let byte = body.try_get_u8().ok()?;
        value |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn frames_are_split_at_their_size_and_bounded() {
        let mut input = frame(b"abcdefgh");
        input.extend(frame(b"12345678"));
        input.extend(frame(&[0; 65]));
        let mut reader = FrameReader::new(&input[..], 64);
        assert_eq!(reader.next().await.unwrap().unwrap()[4..], b"abcdefgh"[..]);
        assert_eq!(reader.next().await.unwrap().unwrap()[4..], b"12345678"[..]);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::Oversized { size: 65, .. })
        ));
    }

    #[tokio::test]
    async fn negative_sizes_and_truncation_are_errors() {
        let input = (-1i32).to_be_bytes();
        let mut reader = FrameReader::new(&input[..], 64);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::Oversized { size: -1, .. })
        ));
        let input = frame(b"abcdefgh");
        let mut reader = FrameReader::new(&input[..6], 64);
        assert!(matches!(reader.next().await, Err(FrameError::Truncated)));
        let mut reader = FrameReader::new(&[][..], 64);
        assert!(reader.next().await.unwrap().is_none());
    }

    #[test]
    fn produce_acks_is_found_in_old_and_flexible_headers() {
        // v7: header (key, version, correlation, client id "ab"), transactional id null, acks -1.
        let mut v7 = vec![
            0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 2, b'a', b'b', 0xff, 0xff,
        ];
        v7.extend((-1i16).to_be_bytes());
        assert_eq!(produce_acks(&v7, 7), Some(-1));
        // v9: client id "a", no tagged fields, compact transactional id "t", acks 0.
        let v9 = vec![
            0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1, 0, 1, b'a', 0, 2, b't', 0, 0,
        ];
        assert_eq!(produce_acks(&v9, 9), Some(0));
        assert_eq!(produce_acks(&v9[..17], 9), None);
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), version in 0i16..12) {
            let _ = produce_acks(&bytes, version);
            let _ = request_header(&bytes);
            let _ = response_correlation_id(&bytes);
        }
    }
}
