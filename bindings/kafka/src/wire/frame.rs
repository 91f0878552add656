//! Kafka framing: length-prefixed frames read whole and bounded (by the client's connections
//! and the proxy's), and the few header fields the proxy looks at. Everything else in a frame
//! the proxy forwards as it came.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

    /// Changes the limit for the frames still to come.
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The next frame, size prefix included; `None` when the peer closed between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(Some(frame));
            }
            match self.missing() {
                Some(missing) => self.grow_for(missing),
                None => self.buffer.reserve(READ_CHUNK),
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

    /// Bytes of the frame at the front read so far.
    pub(crate) fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// Room for more of the frame at the front, which lacks `missing` bytes: the buffer
    /// doubles (by at least a step) as the frame's bytes arrive, never past the frame's size,
    /// so that a size prefix alone reserves little and a large frame ends in a buffer of its
    /// own size (`BytesMut::reserve` would double past it).
    fn grow_for(&mut self, missing: usize) {
        let length = self.buffer.len();
        let total = length + missing;
        if self.buffer.capacity() >= total.min(length + READ_CHUNK) {
            return;
        }
        let wanted = total.min((length * 2).max(length + GROWTH_STEP));
        let mut grown = BytesMut::with_capacity(wanted);
        grown.extend_from_slice(&self.buffer);
        self.buffer = grown;
    }

    /// The next frame when it has already been read whole, without reading more: frames
    /// that arrived together are handled together and leave together.
    pub(crate) fn buffered(&mut self) -> Result<Option<Bytes>, FrameError> {
        match self.missing() {
            Some(0) => {
                let total = 4 + self.size()?;
                Ok(Some(self.buffer.split_to(total).freeze()))
            }
            _ => {
                // An oversized or negative size prefix is an error as soon as it is seen.
                if self.buffer.len() >= 4 {
                    self.size()?;
                }
                Ok(None)
            }
        }
    }

    /// The size after the prefix of the frame at the front, checked against the limit.
    fn size(&self) -> Result<usize, FrameError> {
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
        Ok(size)
    }

    /// How many bytes the frame at the front still lacks; `None` before its size prefix is
    /// in, or when the prefix is invalid (reported by [`Self::buffered`]).
    fn missing(&self) -> Option<usize> {
        if self.buffer.len() < 4 {
            return None;
        }
        let total = 4 + self.size().ok()?;
        Some(total.saturating_sub(self.buffer.len()))
    }
}

/// The most frames one write takes (an `iovec` count well under every system's limit).
const MAX_BATCH: usize = 64;

/// Frames on their way to one side of a connection. Frames that arrived together are queued
/// and leave in one vectored write, so a client pipelining requests costs the broker one
/// segment and one wake-up instead of one per request; nothing is copied.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: VecDeque<Bytes>,
}

impl Outbox {
    /// Queues `frame` behind those already waiting.
    pub(crate) fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.frames.push_back(frame);
        }
    }

    /// Whether enough frames are waiting that they should go before more are queued.
    pub(crate) fn full(&self) -> bool {
        self.frames.len() >= MAX_BATCH
    }

    /// Writes every waiting frame, in order.
    pub(crate) async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        while !self.frames.is_empty() {
            let written = {
                let slices: Vec<IoSlice<'_>> = self
                    .frames
                    .iter()
                    .take(MAX_BATCH)
                    .map(|frame| IoSlice::new(frame))
                    .collect();
                io.write_vectored(&slices).await?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
        }
        io.flush().await
    }

    /// Drops the first `written` bytes of the waiting frames.
    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.frames.pop_front();
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

    /// A size prefix announcing a frame near the limit costs memory only as its bytes come: a
    /// peer that announces 64 MiB and sends 3 MiB leaves a buffer of a few MiB, not 64.
    #[tokio::test]
    async fn a_large_frame_is_buffered_as_it_arrives() {
        let mut input = (64i32 << 20).to_be_bytes().to_vec();
        input.extend(std::iter::repeat_n(7u8, 3 << 20));
        let mut reader = FrameReader::new(&input[..], 64 << 20);
        assert!(matches!(reader.next().await, Err(FrameError::Truncated)));
        assert!(reader.buffer.len() >= 3 << 20);
        assert!(
            reader.buffer.capacity() <= 8 << 20,
            "{} bytes reserved",
            reader.buffer.capacity()
        );
    }

    /// A large frame read whole leaves no room past it: its buffer grew to its size, not by
    /// doubling past it.
    #[tokio::test]
    async fn a_large_frame_ends_in_a_buffer_of_its_size() {
        let size = (5 << 20) + 3;
        let mut input = (size as i32).to_be_bytes().to_vec();
        input.extend(std::iter::repeat_n(7u8, size));
        let mut reader = FrameReader::new(&input[..], 64 << 20);
        let frame = reader.next().await.unwrap().unwrap();
        assert_eq!(frame.len(), 4 + size);
        assert!(
            reader.buffer.capacity() <= READ_CHUNK,
            "{} bytes reserved past the frame",
            reader.buffer.capacity()
        );
    }

    #[tokio::test]
    async fn buffered_frames_come_without_reading_more() {
        let mut input = frame(b"abcdefgh");
        input.extend(frame(b"12345678"));
        input.extend(&frame(b"tail")[..5]);
        let mut reader = FrameReader::new(&input[..], 64);
        assert!(reader.buffered().unwrap().is_none(), "nothing read yet");
        assert_eq!(reader.next().await.unwrap().unwrap()[4..], b"abcdefgh"[..]);
        // The second frame came in the same read as the first.
        assert_eq!(reader.buffered().unwrap().unwrap()[4..], b"12345678"[..]);
        assert!(
            reader.buffered().unwrap().is_none(),
            "the third is incomplete"
        );
        assert!(matches!(reader.next().await, Err(FrameError::Truncated)));

        let oversized = frame(&[0; 65]);
        let mut reader = FrameReader::new(&oversized[..], 64);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::Oversized { size: 65, .. })
        ));
    }

    /// A writer that takes at most `step` bytes per call and counts its calls.
    struct Trickle {
        written: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.calls += 1;
            let take = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..take]);
            std::task::Poll::Ready(Ok(take))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            self.calls += 1;
            let mut taken = 0;
            for buf in bufs {
                let take = buf.len().min(self.step - taken);
                self.written.extend_from_slice(&buf[..take]);
                taken += take;
                if taken == self.step {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn waiting_frames_leave_together_and_in_order() {
        let frames = [frame(b"first"), frame(b"second"), frame(b"third")];
        let mut outbox = Outbox::default();
        for one in &frames {
            outbox.push(Bytes::from(one.clone()));
        }
        let mut wide = Trickle {
            written: Vec::new(),
            step: usize::MAX,
            calls: 0,
        };
        outbox.flush(&mut wide).await.unwrap();
        assert_eq!(wide.written, frames.concat());
        assert_eq!(wide.calls, 1, "three frames, one write");

        // Short writes resume where they stopped, inside a frame or between frames.
        for one in &frames {
            outbox.push(Bytes::from(one.clone()));
        }
        let mut narrow = Trickle {
            written: Vec::new(),
            step: 4,
            calls: 0,
        };
        outbox.flush(&mut narrow).await.unwrap();
        assert_eq!(narrow.written, frames.concat());
        outbox.flush(&mut narrow).await.unwrap();
        assert_eq!(narrow.written, frames.concat(), "nothing left to send");
    }

    #[test]
    fn an_outbox_is_full_at_its_batch() {
        let mut outbox = Outbox::default();
        for _ in 0..MAX_BATCH - 1 {
            outbox.push(Bytes::from_static(b"x"));
        }
        assert!(!outbox.full());
        outbox.push(Bytes::from_static(b""));
        assert!(!outbox.full(), "empty frames are not queued");
        outbox.push(Bytes::from_static(b"x"));
        assert!(outbox.full());
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
