//! Bytes an origin may send, read as the client's HTTP/1.1 leg reads them: the head in pieces
//! (the first byte picks their size; the second whether the request was `HEAD` and whether its
//! fields are to be forwarded), interim heads skipped, then the body by its framing. Nothing may panic; every step either takes bytes,
//! asks for more, or ends; a body never yields more than its length or the input.

#![no_main]

use bytes::BytesMut;
use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use zilla_binding_http::h1::{self, BodyFraming, ChunkedDecoder, Decoded};

fuzz_target!(|data: &[u8]| {
    let [piece, head_request, rest @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece).max(1);
    let method = if head_request & 1 == 1 { Method::HEAD } else { Method::GET };
    let forward = head_request & 2 == 2;
    let mut input = rest.chunks(piece);
    let mut buffer = BytesMut::new();
    let mut scratch = h1::HeadScratch::default();
    let head = loop {
        match h1::parse_response_head_into(
            &mut buffer,
            &method,
            forward,
            &mut HeaderMap::new(),
            &mut scratch,
        ) {
            Err(_) => return,
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            Ok(None) => match input.next() {
                Some(bytes) => buffer.extend_from_slice(bytes),
                None => return,
            },
        }
    };
    if let Some(forwarded) = &head.forwarded {
        // Whole lines of the head, never more than it.
        let mut lines = BytesMut::new();
        forwarded.write(&mut lines);
        assert!(lines.len() <= rest.len() && (lines.is_empty() || lines.ends_with(b"\r\n")));
        assert!(head.headers.is_empty());
    }
    let mut body = 0usize;
    match head.framing {
        // Read by length or to the close in the client, with no parsing to go wrong.
        BodyFraming::Empty | BodyFraming::Length(_) | BodyFraming::UntilClose => {}
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            loop {
                match decoder.decode(&mut buffer) {
                    Err(_) | Ok(Decoded::End) => break,
                    Ok(Decoded::Data(data)) => {
                        assert!(!data.is_empty());
                        body += data.len();
                        assert!(body <= rest.len());
                    }
                    Ok(Decoded::Trailers(_)) => assert!(decoder.is_done()),
                    Ok(Decoded::NeedMore) => match input.next() {
                        Some(bytes) => buffer.extend_from_slice(bytes),
                        None => break,
                    },
                }
            }
        }
    }
});
