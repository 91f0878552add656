//! Last event ids as a subscriber may send them: anything must decode or be refused, and
//! whatever decodes must encode back to an id that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zilla_binding_sse_kafka::event_id::{decode, encode_progress};

fuzz_target!(|data: &[u8]| {
    let Ok(id) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(progress) = decode(id) {
        let again = decode(&encode_progress(&progress, None));
        assert_eq!(again.as_ref(), Ok(&progress));
    }
});
