//! Every component type Zilla defines, by category, and every metric group: a config written
//! for Zilla may name any of them, and one this build lacks is reported as "not built into this
//! distribution", not as a typo. The list lives here, with the distribution, because the engine knows no component.

use zilla_engine::registry::Category;

const ZILLA_TYPES: &[(Category, &[&str])] = &[
    (
        Category::Binding,
        &[
            "amqp",
            "asyncapi",
            "echo",
            "fan",
            "filesystem",
            "grpc",
            "grpc-kafka",
            "http",
            "http-filesystem",
            "http-kafka",
            "kafka",
            "kafka-grpc",
            "mcp",
            "mcp-http",
            "mcp-kafka",
            "mcp-openapi",
            "mqtt",
            "mqtt-kafka",
            "openapi",
            "openapi-asyncapi",
            "pgsql",
            "pgsql-kafka",
            "proxy",
            "risingwave",
            "sse",
            "sse-kafka",
            "tcp",
            "tls",
            "ws",
        ],
    ),
    (Category::Vault, &["filesystem"]),
    (Category::Guard, &["jwt", "inline", "x509"]),
    (
        Category::Catalog,
        &[
            "apicurio",
            "apicurio-registry",
            "filesystem",
            "inline",
            "karapace",
            "karapace-schema-registry",
            "schema-registry",
        ],
    ),
    (Category::Store, &["memory"]),
    (Category::Exporter, &["otlp", "prometheus", "stdout"]),
    (
        Category::Model,
        &[
            "avro", "boolean", "bytes", "double", "float", "int32", "int64", "json", "protobuf",
            "string",
        ],
    ),
];

/// The metric groups Zilla defines (`http.*`, `grpc.*`, ...).
const ZILLA_METRIC_GROUPS: &[&str] = &["stream", "http", "grpc", "mcp"];

/// Declares Zilla's types and metric groups in `registry`.
pub(crate) fn declare(registry: &mut zilla_engine::Registry) {
    for (category, types) in ZILLA_TYPES {
        registry.known_types(*category, types);
    }
    registry.known_metric_groups(ZILLA_METRIC_GROUPS);
}
