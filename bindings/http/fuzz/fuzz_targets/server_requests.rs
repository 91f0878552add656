//! Bytes a client may send, read as the server's HTTP/1.1 loop reads them: heads in pieces (the
//! first byte picks their size), one request after another. Nothing may panic; every step
//! either takes a whole head, asks for more, or leaves the bytes for the full server with none
//! lost; no request taken carries a body or asks for more than an answer.

#![no_main]

use bytes::BytesMut;
use http::{Method, header};
use libfuzzer_sys::fuzz_target;
use zilla_binding_http::h1::{self, HeadScratch, RequestHead};

fuzz_target!(|data: &[u8]| {
    let [piece, rest @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece).max(1);
    let mut input = rest.chunks(piece);
    let mut buffer = BytesMut::new();
    let mut scratch = HeadScratch::default();
    let mut consumed = 0usize;
    loop {
        let before = buffer.len();
        match h1::parse_request_head(&mut buffer, 8192, &mut scratch) {
            RequestHead::Simple { request, .. } => {
                assert!(buffer.len() < before);
                consumed += before - buffer.len();
                assert!(consumed <= rest.len());
                assert!(request.method() != Method::CONNECT);
                assert!(!request.headers().contains_key(header::TRANSFER_ENCODING));
                assert!(!request.headers().contains_key(header::UPGRADE));
                assert!(!request.headers().contains_key(header::EXPECT));
                assert!(
                    request
                        .headers()
                        .get_all(header::CONTENT_LENGTH)
                        .iter()
                        .all(|length| length == "0")
                );
            }
            RequestHead::Partial => {
                assert_eq!(buffer.len(), before);
                match input.next() {
                    Some(bytes) => buffer.extend_from_slice(bytes),
                    None => return,
                }
            }
            RequestHead::Other(taken) => {
                assert_eq!(taken.len() + buffer.len(), before);
                return;
            }
        }
    }
});
