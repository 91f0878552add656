//! Frames a Kafka proxy reads from clients and brokers: request headers, Produce `acks`, the
//! requests a topic allow-list splits, and the responses it rewrites (Metadata,
//! FindCoordinator, ApiVersions, DescribeCluster) or narrows to allowed topics at every
//! version; malformed input must come back as an error.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::proxy::inspect_frame;

fuzz_target!(|data: &[u8]| {
    let [api, version, frame @ ..] = data else {
        return;
    };
    let api = [
        3, 10, 18, 60, 0, 1, 2, 8, 9, 11, 14, 15, 19, 20, 21, 23, 24, 28, 32, 33, 37, 44,
    ][usize::from(*api) % 22];
    let version = i16::from(*version % 16);
    let _ = inspect_frame(api, version, &Bytes::copy_from_slice(frame));
});
