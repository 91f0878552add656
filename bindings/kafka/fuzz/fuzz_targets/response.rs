//! Response bytes of every API and version this client speaks, through the bounds check and
//! the decoders: malformed input must come back as an error.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::wire::{ApiKey, check_response};

fuzz_target!(|data: &[u8]| {
    let [api, version, body @ ..] = data else {
        return;
    };
    let api = ApiKey::ALL[usize::from(*api) % ApiKey::ALL.len()];
    let version = i16::from(*version % 20);
    let _ = check_response(api, version, Bytes::copy_from_slice(body));
});
