//! Services from `.proto` text: compiled at load with `protox` (the protobuf model's
//! [`zilla_validator_protobuf::schema`]), messages checked against their descriptors, so any service
//! works at run time without generated code.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, MessageDescriptor};

pub use zilla_validator_protobuf::schema::{compile, file_name};

/// One method of a service.
#[derive(Debug, Clone)]
pub struct Method {
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
    server_streaming: bool,
}

impl Method {
    /// `Ok` when `message` decodes as the method's input type.
    pub fn check_input(&self, message: &[u8]) -> Result<(), String> {
        check(&self.input, message)
    }

    /// `Ok` when `message` decodes as the method's output type.
    pub fn check_output(&self, message: &[u8]) -> Result<(), String> {
        check(&self.output, message)
    }

    /// The input type's full name.
    pub fn input_name(&self) -> &str {
        self.input.full_name()
    }

    /// Whether the client sends a stream of messages.
    pub fn client_streaming(&self) -> bool {
        self.client_streaming
    }

    /// Whether the server answers with a stream of messages.
    pub fn server_streaming(&self) -> bool {
        self.server_streaming
    }
}

/// `Ok` when `message` decodes as `descriptor`: walked, not built, so that checking costs no
/// memory however the message is made ([`zilla_validator_protobuf::wire`]).
pub fn check(descriptor: &MessageDescriptor, message: &[u8]) -> Result<(), String> {
    zilla_validator_protobuf::wire::check(descriptor, message).map_err(|error| error.to_string())
}

/// Every method of every service in a pool, by `pkg.Service` and method name.
#[derive(Debug, Default)]
pub struct Services {
    /// By service, then method: looked up per call without building a `service/method` key.
    methods: HashMap<String, HashMap<String, Method>>,
}

impl Services {
    /// The services declared in `pool`.
    pub fn new(pool: &DescriptorPool) -> Self {
        let mut methods: HashMap<String, HashMap<String, Method>> = HashMap::new();
        for service in pool.services() {
            let of_service = methods.entry(service.full_name().to_owned()).or_default();
            for method in service.methods() {
                of_service.insert(
                    method.name().to_owned(),
                    Method {
                        input: method.input(),
                        output: method.output(),
                        client_streaming: method.is_client_streaming(),
                        server_streaming: method.is_server_streaming(),
                    },
                );
            }
        }
        Self { methods }
    }

    /// `service`/`method`, if declared.
    pub fn method(&self, service: &str, method: &str) -> Option<&Method> {
        self.methods.get(service)?.get(method)
    }

    /// How many methods there are.
    pub fn len(&self) -> usize {
        self.methods.values().map(HashMap::len).sum()
    }

    /// Whether no service declares a method.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &str = r#"
        syntax = "proto3";
        package example;
        import "google/protobuf/timestamp.proto";
        message EchoMessage { string message = 1; google.protobuf.Timestamp at = 2; }
        service EchoService {
          rpc EchoUnary(EchoMessage) returns (EchoMessage);
          rpc EchoBidiStream(stream EchoMessage) returns (stream EchoMessage);
        }
    "#;

    #[test]
    fn services_compile_and_check_messages() {
        let pool = compile(&[(file_name("echo"), ECHO.to_owned())]).unwrap();
        let services = Services::new(&pool);
        assert_eq!(services.len(), 2);
        let unary = services.method("example.EchoService", "EchoUnary").unwrap();
        assert!(!unary.client_streaming() && !unary.server_streaming());
        let bidi = services
            .method("example.EchoService", "EchoBidiStream")
            .unwrap();
        assert!(bidi.client_streaming() && bidi.server_streaming());
        assert!(services.method("example.EchoService", "Nope").is_none());
        // field 1, length 5, "hello"
        assert!(unary.check_input(b"\x0a\x05hello").is_ok());
        assert!(unary.check_input(b"").is_ok());
        // field 1 claims 5 bytes, 2 follow
        assert!(unary.check_input(b"\x0a\x05he").is_err());
        // field 1 is a string: invalid UTF-8 is not one
        assert!(unary.check_input(b"\x0a\x02\xff\xfe").is_err());
        // field 1 with the varint wire type
        assert!(unary.check_input(b"\x08\x01").is_err());
        assert_eq!(unary.input_name(), "example.EchoMessage");
    }
}
