//! Bytes from a peer through the packet decoder, as a server (version learnt from CONNECT) or
//! as a 3.1.1 or 5 connection: bad input must come back as an error with a reason code, and
//! whatever decodes must encode and decode again to the same packet.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use zilla_binding_mqtt::codec::{Decoder, Version, encode};

fuzz_target!(|data: &[u8]| {
    let [mode, bytes @ ..] = data else {
        return;
    };
    let mut decoder = Decoder::new(64 * 1024);
    decoder.version = match mode % 3 {
        0 => None,
        1 => Some(Version::V3_1_1),
        _ => Some(Version::V5),
    };
    let mut buffer = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decoder.decode(&mut buffer) {
        let version = decoder.version.unwrap_or(Version::V5);
        let mut encoded = BytesMut::new();
        if encode(&packet, version, &mut encoded).is_ok() {
            let mut again = Decoder::new(u32::MAX);
            again.version = Some(version);
            let decoded = again.decode(&mut encoded);
            assert_eq!(decoded, Ok(Some(packet)));
        }
    }
});
