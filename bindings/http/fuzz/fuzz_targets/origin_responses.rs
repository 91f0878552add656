//! Bytes an origin may send, read as the client's HTTP/1.1 leg reads them: the head in pieces
//! (the first byte picks their size; the second whether the request was `HEAD`), interim heads
//! skipped, then the body by its framing. Nothing may panic; every step either takes bytes,
//! asks for more, or ends; a body never yields more than its length or the input.

#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use zilla_binding_http::h1::{self, BodyFraming, ChunkedDecoder, Decoded};

fuzz_target!(|data: &[u8]| {
    let [piece, head_request, rest @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece).max(1);
    let method = if head_request & 1 == 1 { Method::HEAD } else { Method::GET };
    let mut input = rest.chunks(piece);
    let mut buffer = BytesMut::new();
    let head = loop {
        match h1::parse_response_head(&mut buffer, &method) {
            Err(_) => return,
            Ok(Some(head)) if head.status.is_informational() => continue,
            Ok(Some(head)) => break head,
            Ok(None) => match input.next() {
                Some(bytes) => buffer.extend_from_slice(bytes),
                None => return,
            },
        }
    };
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
