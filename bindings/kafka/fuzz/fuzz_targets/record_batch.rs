//! Fetched record bytes through the batch decoder, decompression included, with a small
//! decompression bound.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::wire::{DecodeLimits, decode_batches};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
    };
    let _ = decode_batches(Bytes::copy_from_slice(data), &limits);
});
