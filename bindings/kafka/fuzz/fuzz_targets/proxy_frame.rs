//! Frames a Kafka proxy reads from clients and brokers: request headers, Produce `acks`, and
//! the responses it rewrites (Metadata, FindCoordinator, ApiVersions, DescribeCluster) at
//! every version; malformed input must come back as an error.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::proxy::inspect_frame;

fuzz_target!(|data: &[u8]| {
    let [api, version, frame @ ..] = data else {
        return;
    };
    let api = [3, 10, 18, 60, 0, 1][usize::from(*api) % 6];
    let version = i16::from(*version % 16);
    let _ = inspect_frame(api, version, &Bytes::copy_from_slice(frame));
});
