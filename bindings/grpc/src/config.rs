//! Typed options and route conditions of the grpc binding.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::Deserialize;
use zilla_engine::pattern::Pattern;
use zilla_engine::route::{Route, Routes};

use crate::kind::{Code, GrpcRequest, MetadataValue, Status};

/// `options` of a grpc binding.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcOptions {
    /// Zilla 1.x: `.proto` files naming the services. Refused: name them with the binding's
    /// `catalog` instead, as Zilla 2.x does.
    #[schemars(extend(
        "x-unsupported" = "grpc `options.services` (Zilla 1.x) is not supported; name the .proto files with the binding's `catalog`"
    ))]
    pub services: Option<Vec<String>>,
}

/// One entry of the binding-level `catalog`: the subject holding a `.proto` file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtoReference {
    /// The subject whose schema is the `.proto` text; importable as `<subject>.proto`.
    pub subject: String,
    /// The subject's version; `latest` by default.
    pub version: Option<String>,
}

/// A route condition of a grpc binding: all given parts must match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcCondition {
    /// `pkg.Service/Method`, with `*` wildcards (`pkg.Service/*`).
    pub method: Option<String>,
    /// Metadata that must be present with these values: text, or `{base64: ...}` for binary
    /// (`-bin`) metadata.
    pub metadata: Option<BTreeMap<String, MetadataCondition>>,
}

/// The value a metadata condition expects.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MetadataCondition {
    /// A text value.
    Text(String),
    /// A binary value, in base64.
    Binary {
        /// The value's bytes, in base64.
        base64: String,
    },
}

/// A compiled route condition (`method` pattern and `metadata` values), also used by the
/// bindings that take `grpc` calls with the same `when` shape (`grpc-kafka`).
#[derive(Debug)]
pub struct MethodCondition {
    method: Option<Pattern>,
    metadata: Vec<(String, Bytes)>,
}

/// The route `request` takes among `routes` (matched by method and metadata, under the
/// call's guard sessions), or the `UNIMPLEMENTED` status gRPC answers a call no route takes.
pub fn route_of<'a, W, E>(
    routes: &'a Routes<MethodCondition, W, E>,
    request: &GrpcRequest,
) -> Result<&'a Route<MethodCondition, W, E>, Status> {
    routes
        .resolve(request.authorization(), |condition| {
            condition.matches(request)
        })
        .ok_or_else(|| {
            Status::new(
                Code::Unimplemented,
                format!("no route for {}", request.full_method()),
            )
        })
}

impl MethodCondition {
    /// Compiles a `when` entry.
    pub fn compile(raw: GrpcCondition) -> Result<Self, String> {
        let method = raw
            .method
            .map(|method| Pattern::compile(&method, Some('/')))
            .transpose()?;
        let mut metadata = Vec::new();
        for (name, value) in raw.metadata.into_iter().flatten() {
            let bytes = match value {
                MetadataCondition::Text(text) => Bytes::from(text),
                MetadataCondition::Binary { base64 } => STANDARD
                    .decode(base64.trim())
                    .map(Bytes::from)
                    .map_err(|error| format!("metadata `{name}`: invalid base64: {error}"))?,
            };
            metadata.push((name.to_ascii_lowercase(), bytes));
        }
        Ok(Self { method, metadata })
    }

    /// Whether `request` calls a matching method with the metadata asked for.
    pub fn matches(&self, request: &GrpcRequest) -> bool {
        if let Some(method) = &self.method
            && !method.matches(request.full_method())
        {
            return false;
        }
        self.metadata.iter().all(|(name, expected)| {
            request.metadata.iter().any(|(key, value)| {
                key == name
                    && match value {
                        MetadataValue::Text(text) => text.as_bytes() == expected.as_ref(),
                        MetadataValue::Binary(bytes) => bytes == expected,
                    }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::GrpcRequest;

    fn condition(json: serde_json::Value) -> MethodCondition {
        MethodCondition::compile(serde_json::from_value(json).unwrap()).unwrap()
    }

    #[test]
    fn methods_and_metadata_match() {
        let mut request = GrpcRequest::new(
            "example.EchoService",
            "EchoUnary",
            Box::pin(futures_util::stream::empty()),
        );
        request.metadata.push_text("custom-text", "custom value");
        request
            .metadata
            .push_binary("custom-binary-bin", Bytes::from_static(b"custom value"));
        assert!(
            condition(serde_json::json!({"method": "example.EchoService/*"})).matches(&request)
        );
        assert!(
            condition(serde_json::json!({"method": "example.EchoService/EchoUnary"}))
                .matches(&request)
        );
        assert!(!condition(serde_json::json!({"method": "example.Other/*"})).matches(&request));
        assert!(
            condition(serde_json::json!({
                "metadata": {"custom-text": "custom value", "custom-binary-bin": {"base64": "Y3VzdG9tIHZhbHVl"}}
            }))
            .matches(&request)
        );
        assert!(
            !condition(serde_json::json!({"metadata": {"custom-text": "other"}})).matches(&request)
        );
        assert!(!condition(serde_json::json!({"metadata": {"absent": "x"}})).matches(&request));
    }

    #[test]
    fn invalid_base64_is_a_load_error() {
        let raw: GrpcCondition =
            serde_json::from_value(serde_json::json!({"metadata": {"k-bin": {"base64": "!!"}}}))
                .unwrap();
        assert!(MethodCondition::compile(raw).is_err());
    }
}
