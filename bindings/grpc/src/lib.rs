//! The `grpc` stream kind (see [`kind`]): one gRPC call, with its method, metadata,
//! deadline, request messages, response messages and final status with trailers.
//!
//! Generic bindings (`echo`, `fan`) serve `grpc` callers through the `messages` adapter
//! registered here ([`messages`]): each request message becomes one message and what comes
//! back is the response, ending with `OK`.

pub mod kind;
pub mod messages;
pub mod metadata;

use zilla_engine::Registry;

pub use kind::{
    Code, Grpc, GrpcHandler, GrpcRequest, GrpcResponse, MessageStream, Metadata, MetadataValue,
    ResponseItem, ResponseStream, Status,
};

/// Registers the adapter that carries `grpc` calls to generic bindings.
pub fn register(registry: &mut Registry) {
    registry.adapter::<zilla_engine::messages::Messages, Grpc>(messages::grpc_over_messages);
}
