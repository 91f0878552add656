//! Bytes read back from a cache segment file through the block decoder. Odd first bytes feed
//! the bytes as they are; even ones first give them a consistent block header and a valid
//! CRC, so the fuzzer reaches record parsing instead of stopping at the checksum.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::cache_disk::{BLOCK_HEADER, MAGIC, decode_block};

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode % 2 == 0 && bytes.len() >= BLOCK_HEADER {
        bytes[..4].copy_from_slice(MAGIC);
        let length = (bytes.len() - BLOCK_HEADER) as u32;
        bytes[4..8].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[BLOCK_HEADER..]);
        bytes[8..12].copy_from_slice(&crc.to_be_bytes());
    }
    let _ = decode_block(Bytes::from(bytes), 0, i64::MAX, 0);
});
