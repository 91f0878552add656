//! A request body as a client may send it, through the path the `grpc` server runs: the
//! framing decoder (gzip included, with a small bound) in chunks of the sizes the first byte
//! picks, then each message checked against a proto message with every kind of field. Nothing
//! may panic, no message may exceed the bound, and a decoder that refused once stays refused.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zilla_binding_grpc::codec::{Decoder, Encoding};
use zilla_binding_grpc::proto::{self, Services};

const MAXIMUM: usize = 4096;

const PROTO: &str = r#"
syntax = "proto3";
package fuzz;
import "google/protobuf/timestamp.proto";
message Inner { repeated sint64 values = 1 [packed = true]; map<string, bytes> extra = 2; }
message Everything {
  string text = 1; bytes data = 2; int32 small = 3; fixed64 wide = 4; double real = 5;
  bool flag = 6; Inner inner = 7; repeated Inner many = 8; google.protobuf.Timestamp at = 9;
  oneof choice { string left = 10; uint32 right = 11; }
  enum Kind { ZERO = 0; ONE = 1; } Kind kind = 12;
}
service Fuzz { rpc Call(Everything) returns (Everything); }
"#;

fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let pool = proto::compile(&[("fuzz.proto".to_owned(), PROTO.to_owned())])
            .unwrap_or_else(|error| panic!("fuzz proto: {error}"));
        Services::new(&pool)
    })
}

fuzz_target!(|data: &[u8]| {
    let [chunk, rest @ ..] = data else {
        return;
    };
    let method = services().method("fuzz.Fuzz", "Call").unwrap();
    let encoding = if chunk % 2 == 0 { Encoding::Gzip } else { Encoding::Identity };
    let mut decoder = Decoder::new(MAXIMUM, encoding);
    let size = usize::from(*chunk / 2).max(1);
    for piece in rest.chunks(size) {
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= MAXIMUM);
                    let _ = method.check_input(&message);
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.next_message().is_err());
                    return;
                }
            }
        }
    }
    let _ = decoder.finish();
});
