//! Progress tokens (HTTP etags, SSE event ids) as a client may send them: decoding never
//! panics, and whatever decodes encodes back to a token that decodes to the same offsets.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::progress::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(offsets) = decode(token) {
        assert_eq!(decode(&encode(&offsets, None)), Ok(offsets));
    }
});
