//! Fetched record bytes through the batch decoder, decompression included, with small bounds
//! on what batches decompress and decode to, per batch and per response. Odd first bytes feed the bytes as they are; even ones first make the
//! bytes a well-formed batch header with a valid CRC, so the fuzzer reaches decompression and
//! record parsing instead of stopping at the checksum.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::wire::{
    BATCH_HEADER_SIZE, DecodeLimits, DecompressBudget, decode_batches, decode_batches_within,
};

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode % 2 == 0 && bytes.len() >= BATCH_HEADER_SIZE {
        let length = (bytes.len() - 12) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        bytes[16] = 2;
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        max_fetch_decompressed_bytes: 1 << 16,
    };
    let bytes = Bytes::from(bytes);
    let _ = decode_batches(bytes.clone(), &limits);
    let _ = decode_batches_within(bytes, &mut DecompressBudget::new(&limits));
});
