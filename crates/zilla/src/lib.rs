//! zilla-rs as a library: the engine plus the components this build was compiled with, chosen
//! by cargo features (one per component, named after its config type, e.g. `binding-tcp`).
//!
//! Embedding chosen bindings:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use zilla::engine::{Engine, properties::Properties};
//!
//! let engine = Engine::new(zilla::registry(), Properties::default());
//! let text = "name: example\nbindings:\n  tcp0:\n    type: tcp\n    kind: server\n    options:\n      port: 12345\n    exit: echo0\n  echo0:\n    type: echo\n    kind: server\n";
//! let config = engine.load(std::path::Path::new("zilla.yaml"), text)?;
//! engine.apply(config)?;
//! # Ok(())
//! # }
//! ```

pub use zilla_engine as engine;

mod zilla_types;

/// A registry holding every component compiled into this build.
pub fn registry() -> zilla_engine::Registry {
    let mut registry = zilla_engine::Registry::new();
    register_all(&mut registry);
    registry
}

/// Registers every component compiled into this build: the one feature-gated list.
#[allow(unused_variables)]
pub fn register_all(registry: &mut zilla_engine::Registry) {
    zilla_types::declare(registry);
    #[cfg(feature = "binding-tcp")]
    zilla_binding_tcp::register(registry);
    #[cfg(feature = "binding-tls")]
    zilla_binding_tls::register(registry);
    #[cfg(feature = "binding-echo")]
    zilla_binding_echo::register(registry);
    #[cfg(feature = "binding-fan")]
    zilla_binding_fan::register(registry);
    #[cfg(feature = "binding-http")]
    zilla_binding_http::register(registry);
    #[cfg(feature = "binding-sse")]
    zilla_binding_sse::register(registry);
    #[cfg(feature = "binding-ws")]
    zilla_binding_ws::register(registry);
    #[cfg(feature = "binding-filesystem")]
    zilla_binding_filesystem::register(registry);
    #[cfg(feature = "binding-http-filesystem")]
    zilla_binding_http_filesystem::register(registry);
    #[cfg(feature = "binding-kafka")]
    zilla_binding_kafka::register(registry);
    #[cfg(feature = "binding-mqtt")]
    zilla_binding_mqtt::register(registry);
    #[cfg(feature = "binding-mqtt-kafka")]
    zilla_binding_mqtt_kafka::register(registry);
    #[cfg(feature = "binding-grpc")]
    zilla_binding_grpc::register(registry);
    #[cfg(feature = "binding-grpc-kafka")]
    zilla_binding_grpc_kafka::register(registry);
    #[cfg(feature = "binding-kafka-grpc")]
    zilla_binding_kafka_grpc::register(registry);
    #[cfg(feature = "binding-sse-kafka")]
    zilla_binding_sse_kafka::register(registry);
    #[cfg(feature = "binding-http-kafka")]
    zilla_binding_http_kafka::register(registry);
    #[cfg(feature = "vault-filesystem")]
    zilla_vault_filesystem::register(registry);
    #[cfg(feature = "exporter-stdout")]
    zilla_exporter_stdout::register(registry);
    #[cfg(feature = "exporter-prometheus")]
    zilla_exporter_prometheus::register(registry);
    #[cfg(feature = "exporter-otlp")]
    zilla_exporter_otlp::register(registry);
    #[cfg(feature = "catalog-inline")]
    zilla_catalog_inline::register(registry);
    #[cfg(feature = "validator-json")]
    zilla_validator_json::register(registry);
    #[cfg(feature = "guard-jwt")]
    zilla_guard_jwt::register(registry);
    #[cfg(feature = "guard-inline")]
    zilla_guard_inline::register(registry);
    #[cfg(feature = "guard-x509")]
    zilla_guard_x509::register(registry);
    #[cfg(feature = "validator-core")]
    zilla_validator_core::register(registry);
    #[cfg(feature = "validator-avro")]
    zilla_validator_avro::register(registry);
    #[cfg(feature = "model-protobuf")]
    zilla_validator_protobuf::register(registry);
    #[cfg(feature = "catalog-schema-registry")]
    zilla_catalog_schema_registry::register(registry);
    #[cfg(feature = "catalog-apicurio")]
    zilla_catalog_apicurio::register(registry);
    #[cfg(feature = "catalog-filesystem")]
    zilla_catalog_filesystem::register(registry);
    #[cfg(feature = "store-memory")]
    zilla_store_memory::register(registry);
    #[cfg(feature = "binding-openapi")]
    zilla_binding_openapi::register(registry);
    #[cfg(feature = "binding-asyncapi")]
    zilla_binding_asyncapi::register(registry);
    #[cfg(feature = "binding-openapi-asyncapi")]
    zilla_binding_openapi_asyncapi::register(registry);
}

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
