//! Request spans with W3C trace context (`traceparent`), handed to the exporters that send
//! traces (an `otlp` exporter whose `signals` list `traces`).
//!
//! A binding that serves requests (the `http` server) starts a span per request when any
//! exporter takes spans ([`crate::events::Events::traced`]): its trace is the one the
//! request's `traceparent` names, or a new one, and the span is a child of the caller's. The
//! request goes on inward with a `traceparent` naming this span, so what the request produces
//! (a Kafka record's headers) carries the same trace. Ids come from the operating system's
//! random source.

use std::sync::Arc;
use std::time::SystemTime;

/// A W3C trace context, as the `traceparent` header carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The id of the span that made the request (never all zeros).
    pub parent_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>`, or a later version's value
    /// that starts the same way (W3C: read what version 00 defines, ignore the rest). `None`
    /// for anything else, including all-zero ids and version `ff`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?.trim();
        if value.len() < 55 {
            return None;
        }
        let [version]: [u8; 1] = hex(value.get(..2)?)?;
        let rest = value.get(2..)?;
        if version == 0xff
            || (version == 0 && value.len() != 55)
            || (value.len() > 55 && value.as_bytes().get(55) != Some(&b'-'))
        {
            return None;
        }
        let rest = rest.strip_prefix('-')?;
        let trace_id: [u8; 16] = hex(rest.get(..32)?)?;
        let rest = rest.get(32..)?.strip_prefix('-')?;
        let parent_id: [u8; 8] = hex(rest.get(..16)?)?;
        let rest = rest.get(16..)?.strip_prefix('-')?;
        let [flags]: [u8; 1] = hex(rest.get(..2)?)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The `traceparent` value (version 00) naming `span_id` as the parent of what follows.
    pub fn header(&self, span_id: [u8; 8]) -> String {
        format!(
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&span_id),
            self.flags
        )
    }
}

/// Lower-case hex of `bytes`, as OTLP/JSON writes trace and span ids.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// `N` bytes from `2 * N` hex digits (either case).
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(bytes)
}

/// Random ids: a new trace's id and a span id. `None` only when the operating system has no
/// randomness to give, and then no span is recorded.
pub fn random_ids() -> Option<([u8; 16], [u8; 8])> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).ok()?;
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    trace_id.copy_from_slice(&bytes[..16]);
    span_id.copy_from_slice(&bytes[16..]);
    // All zeros is invalid in both; the odds are nil, but the ids must be valid.
    trace_id[15] |= u8::from(trace_id == [0; 16]);
    span_id[7] |= u8::from(span_id == [0; 8]);
    Some((trace_id, span_id))
}

/// What a span stands for, as OpenTelemetry's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// A request served (`SPAN_KIND_SERVER`).
    Server,
    /// A request made (`SPAN_KIND_CLIENT`).
    Client,
    /// A message produced (`SPAN_KIND_PRODUCER`).
    Producer,
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct Span {
    /// The binding that recorded it: `namespace:name`.
    pub qname: Arc<str>,
    /// Its trace.
    pub trace_id: [u8; 16],
    /// Its own id.
    pub span_id: [u8; 8],
    /// The caller's span, when the request named one.
    pub parent_id: Option<[u8; 8]>,
    /// E.g. `POST /items`.
    pub name: String,
    /// Server, client or producer.
    pub kind: SpanKind,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// OpenTelemetry attributes (`http.request.method`, `http.response.status_code`, ...).
    pub attributes: Vec<(&'static str, String)>,
    /// Whether it failed (OpenTelemetry `STATUS_CODE_ERROR`).
    pub error: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_w3c_traceparent() {
        let context = TraceContext::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(
            to_hex(&context.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(to_hex(&context.parent_id), "00f067aa0ba902b7");
        assert_eq!(context.flags, 1);
        assert_eq!(context.header(context.parent_id), EXAMPLE);
        let child = context.header([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            child,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
        // Upper case is read; a later version's extra fields are ignored.
        assert!(TraceContext::parse(EXAMPLE.to_uppercase().as_bytes()).is_some());
        let later = format!("cc{}-what-comes-next", &EXAMPLE[2..]);
        assert!(TraceContext::parse(later.as_bytes()).is_some());
    }

    #[test]
    fn refuses_what_w3c_calls_invalid() {
        for value in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceContext::parse(value.as_bytes()), None, "{value}");
        }
    }

    #[test]
    fn random_ids_are_valid_and_differ() {
        let (trace, span) = random_ids().unwrap();
        let (other, _) = random_ids().unwrap();
        assert_ne!(trace, [0; 16]);
        assert_ne!(span, [0; 8]);
        assert_ne!(trace, other);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic_and_valid_contexts_round_trip(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
            trace in any::<[u8; 16]>(),
            parent in any::<[u8; 8]>(),
            flags in any::<u8>(),
        ) {
            let _ = TraceContext::parse(&bytes);
            prop_assume!(trace != [0; 16] && parent != [0; 8]);
            let context = TraceContext { trace_id: trace, parent_id: parent, flags };
            prop_assert_eq!(
                TraceContext::parse(context.header(parent).as_bytes()),
                Some(context)
            );
        }
    }
}
