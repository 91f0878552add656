//! The `text/event-stream` format (WHATWG HTML, "Server-sent events"): an encoder for the
//! server and an incremental, bounded decoder for the client.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::kind::SseEvent;

/// Appends one event: `timestamp` (when asked for and known), `id`, `event`, then one `data`
/// line per line of data (`\r\n` and `\r` count as line ends), then the blank line that
/// dispatches it.
pub fn write_event(event: &SseEvent, timestamps: bool, out: &mut BytesMut) {
    if timestamps && let Some(timestamp) = event.timestamp {
        let millis = timestamp
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        write_field(out, "timestamp", format!("0x{millis:x}").as_bytes());
    }
    if let Some(id) = &event.id {
        write_field(out, "id", single_line(id).as_bytes());
    }
    if let Some(kind) = &event.event {
        let kind = single_line(kind);
        if !kind.is_empty() {
            write_field(out, "event", kind.as_bytes());
        }
    }
    for line in lines(&event.data) {
        write_field(out, "data", line);
    }
    out.put_u8(b'\n');
}

/// Appends the reconnection time, as its own block.
pub fn write_retry(retry: u64, out: &mut BytesMut) {
    write_field(out, "retry", retry.to_string().as_bytes());
    out.put_u8(b'\n');
}

/// Appends a comment, as its own block (subscribers ignore it; it keeps idle connections
/// alive and flushes intermediaries).
pub fn write_comment(comment: &str, out: &mut BytesMut) {
    out.put_u8(b':');
    out.put_slice(single_line(comment).as_bytes());
    out.put_slice(b"\n\n");
}

fn write_field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_u8(b':');
    // A decoder drops one space after the colon: keep a value's own leading space.
    if value.first() == Some(&b' ') {
        out.put_u8(b' ');
    }
    out.put_slice(value);
    out.put_u8(b'\n');
}

/// `id` and `event` are one line: a line break inside would end the field early.
fn single_line(value: &str) -> Cow<'_, str> {
    if value.contains(['\r', '\n']) {
        Cow::Owned(value.replace(['\r', '\n'], ""))
    } else {
        Cow::Borrowed(value)
    }
}

/// The lines of `data`; an empty payload is one empty line, so that it is still dispatched.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => {
                rest = None;
                Some(current)
            }
            Some(end) => {
                let skip = if current[end] == b'\r' && current.get(end + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = Some(&current[end + skip..]);
                Some(&current[..end])
            }
        }
    })
}

/// Why an event stream could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A line or an event's data outgrew the bound.
    #[error("event stream line or event longer than {0} bytes")]
    TooLong(usize),
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes a `text/event-stream` fed in chunks of any size. Holds at most `max` bytes of one
/// line plus `max` bytes of one event's data.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    line: BytesMut,
    bom_checked: bool,
    /// The previous chunk ended with `\r`: a `\n` starting the next one ends no new line.
    skip_lf: bool,
    data: BytesMut,
    data_lines: usize,
    event: Option<String>,
    id: Option<String>,
    timestamp: Option<SystemTime>,
    last_event_id: Option<String>,
    retry: Option<u64>,
}

impl Decoder {
    /// A decoder that refuses lines or event data longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            line: BytesMut::new(),
            bom_checked: false,
            skip_lf: false,
            data: BytesMut::new(),
            data_lines: 0,
            event: None,
            id: None,
            timestamp: None,
            last_event_id: None,
            retry: None,
        }
    }

    /// The id to reconnect with: the last `id` field seen, in this or an earlier event.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection time the server asked for, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Decodes `chunk`, appending each event it completes to `events`.
    pub fn feed(&mut self, chunk: &[u8], events: &mut Vec<SseEvent>) -> Result<(), DecodeError> {
        let mut rest = chunk;
        if self.skip_lf && !rest.is_empty() {
            self.skip_lf = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.extend_line(&rest[..end])?;
            let line = self.line.split().freeze();
            self.process(&line, events)?;
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.skip_lf = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
        }
        self.extend_line(rest)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if self.line.len() + bytes.len() > self.max {
            return Err(DecodeError::TooLong(self.max));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), DecodeError> {
        let mut line = line;
        if !self.bom_checked {
            self.bom_checked = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(DecodeError::TooLong(self.max));
                }
                self.data.extend_from_slice(value);
                self.data.put_u8(b'\n');
                self.data_lines += 1;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // An id with NUL is ignored, as the spec says.
            b"id" if !value.contains(&0) => {
                let id = String::from_utf8_lossy(value).into_owned();
                self.last_event_id = Some(id.clone());
                self.id = Some(id);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value)
                    .ok()
                    .and_then(|digits| digits.parse().ok());
            }
            b"timestamp" => {
                self.timestamp = value
                    .strip_prefix(b"0x")
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    .map(|millis| UNIX_EPOCH + Duration::from_millis(millis));
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take().filter(|kind| !kind.is_empty());
        let id = self.id.take();
        let timestamp = self.timestamp.take();
        if self.data_lines == 0 {
            return;
        }
        self.data_lines = 0;
        let mut data = self.data.split();
        data.truncate(data.len().saturating_sub(1));
        events.push(SseEvent {
            id,
            event,
            data: data.freeze(),
            timestamp,
        });
    }
}

/// Encodes `events` into one buffer (tests and small answers).
pub fn encode_all<'a>(events: impl IntoIterator<Item = &'a SseEvent>, timestamps: bool) -> Bytes {
    let mut out = BytesMut::new();
    for event in events {
        write_event(event, timestamps, &mut out);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(text: &[u8]) -> Vec<SseEvent> {
        let mut decoder = Decoder::new(1 << 20);
        let mut events = Vec::new();
        decoder.feed(text, &mut events).unwrap();
        events
    }

    #[test]
    fn writes_fields_and_splits_data_lines() {
        let event = SseEvent::data("a\r\nb\rc\nd")
            .with_id("7")
            .with_event("update");
        let text = encode_all([&event], false);
        assert_eq!(
            &text[..],
            b"id:7\nevent:update\ndata:a\ndata:b\ndata:c\ndata:d\n\n"
        );
    }

    #[test]
    fn empty_data_is_still_an_event_and_leading_spaces_survive() {
        let text = encode_all(
            [&SseEvent::data(""), &SseEvent::data(" x").with_id(" 1")],
            false,
        );
        assert_eq!(&text[..], b"data:\n\nid:  1\ndata:  x\n\n");
        let events = decode_all(&text);
        assert_eq!(events[0].data, Bytes::new());
        assert_eq!(events[1].data, Bytes::from(" x"));
        assert_eq!(events[1].id.as_deref(), Some(" 1"));
    }

    #[test]
    fn line_breaks_in_id_and_event_are_dropped() {
        let event = SseEvent::data("x").with_id("1\n2").with_event("a\rb");
        assert_eq!(
            &encode_all([&event], false)[..],
            b"id:12\nevent:ab\ndata:x\n\n"
        );
    }

    #[test]
    fn timestamps_only_when_asked() {
        let mut event = SseEvent::data("x");
        event.timestamp = Some(UNIX_EPOCH + Duration::from_millis(0x1234));
        assert_eq!(&encode_all([&event], false)[..], b"data:x\n\n");
        assert_eq!(
            &encode_all([&event], true)[..],
            b"timestamp:0x1234\ndata:x\n\n"
        );
        assert_eq!(decode_all(b"timestamp:0x1234\ndata:x\n\n"), vec![event]);
    }

    #[test]
    fn retry_and_comment_blocks() {
        let mut out = BytesMut::new();
        write_retry(2000, &mut out);
        write_comment("", &mut out);
        assert_eq!(&out[..], b"retry:2000\n\n:\n\n");
        let mut decoder = Decoder::new(1024);
        let mut events = Vec::new();
        decoder.feed(&out, &mut events).unwrap();
        assert!(events.is_empty());
        assert_eq!(decoder.retry(), Some(2000));
    }

    #[test]
    fn decodes_the_spec_examples() {
        // Comments, a field without colon, a field with no space, multi-line data, BOM, CRLF.
        let text = b"\xEF\xBB\xBF: test stream\r\n\r\ndata: first event\r\nid: 1\r\n\r\ndata:second event\r\nid\r\n\r\ndata:  third event\r\n\r\ndata\r\n\r\ndata\r\ndata\r\n\r\ndata:\r\n";
        let events = decode_all(text);
        let data: Vec<&[u8]> = events.iter().map(|e| &e.data[..]).collect();
        assert_eq!(
            data,
            vec![
                &b"first event"[..],
                b"second event",
                b" third event",
                b"",
                b"\n"
            ]
        );
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[1].id.as_deref(), Some(""));
        assert_eq!(events[2].id, None);
    }

    #[test]
    fn last_event_id_persists_and_nul_ids_are_ignored() {
        let mut decoder = Decoder::new(1024);
        let mut events = Vec::new();
        decoder
            .feed(
                b"id:5\ndata:a\n\ndata:b\n\nid:x\0y\ndata:c\n\n",
                &mut events,
            )
            .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].id, None);
        assert_eq!(events[2].id, None);
        assert_eq!(decoder.last_event_id(), Some("5"));
    }

    #[test]
    fn event_type_without_data_is_not_dispatched_and_does_not_leak() {
        let events = decode_all(b"event:a\n\ndata:x\n\n");
        assert_eq!(events, vec![SseEvent::data("x")]);
    }

    #[test]
    fn cr_at_a_chunk_end_then_lf_is_one_line_end() {
        let mut decoder = Decoder::new(1024);
        let mut events = Vec::new();
        decoder.feed(b"data:a\r", &mut events).unwrap();
        decoder.feed(b"\ndata:b\r", &mut events).unwrap();
        decoder.feed(b"\r", &mut events).unwrap();
        assert_eq!(events, vec![SseEvent::data("a\nb")]);
    }

    #[test]
    fn bom_split_across_chunks() {
        let mut decoder = Decoder::new(1024);
        let mut events = Vec::new();
        decoder.feed(b"\xEF\xBB", &mut events).unwrap();
        decoder.feed(b"\xBFdata:x\n\n", &mut events).unwrap();
        assert_eq!(events, vec![SseEvent::data("x")]);
    }

    #[test]
    fn long_lines_and_events_are_refused() {
        let mut decoder = Decoder::new(8);
        let mut events = Vec::new();
        assert_eq!(
            decoder.feed(b"data:0123", &mut events),
            Err(DecodeError::TooLong(8))
        );
        let mut decoder = Decoder::new(8);
        decoder.feed(b"data:01\ndata:01\n", &mut events).unwrap();
        assert_eq!(
            decoder.feed(b"data:01\n", &mut events),
            Err(DecodeError::TooLong(8))
        );
    }

    fn event_strategy() -> impl Strategy<Value = SseEvent> {
        (
            proptest::option::of("[^\r\n\0]{0,8}"),
            proptest::option::of("[^\r\n]{1,8}"),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of(0u64..1 << 45),
        )
            .prop_map(|(id, event, data, millis)| SseEvent {
                id,
                event,
                data: Bytes::from(data),
                timestamp: millis.map(|m| UNIX_EPOCH + Duration::from_millis(m)),
            })
    }

    fn normalized(data: &[u8]) -> Bytes {
        let mut out = Vec::new();
        for (index, line) in lines(data).enumerate() {
            if index > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(line);
        }
        Bytes::from(out)
    }

    proptest! {
        #[test]
        fn events_round_trip_in_any_chunking(
            events in proptest::collection::vec(event_strategy(), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut out = BytesMut::new();
            write_retry(2000, &mut out);
            write_comment("hello", &mut out);
            for event in &events {
                write_event(event, true, &mut out);
            }
            let text = out.freeze();
            let mut offsets: Vec<usize> = cuts.iter().map(|cut| cut.index(text.len() + 1)).collect();
            offsets.sort_unstable();
            let mut decoder = Decoder::new(1 << 16);
            let mut decoded = Vec::new();
            let mut start = 0;
            for offset in offsets.into_iter().chain([text.len()]) {
                decoder.feed(&text[start..offset], &mut decoded).unwrap();
                start = offset;
            }
            let expected: Vec<SseEvent> = events
                .iter()
                .map(|event| SseEvent { data: normalized(&event.data), ..event.clone() })
                .collect();
            prop_assert_eq!(decoded, expected);
            prop_assert_eq!(decoder.retry(), Some(2000));
        }
    }
}
