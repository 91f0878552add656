//! The `fan` binding (kind `server`): every stream routed to it joins one group, and the group
//! talks to the `exit` over a single shared stream. Bytes from any member go up that stream
//! (fan-in); every byte the exit answers with goes down to all current members (fan-out). With
//! an `echo` exit, each client sees what every client sends, its own data included.
//!
//! ```yaml
//! name: example
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       host: 0.0.0.0
//!       port: 12345
//!     exit: fan_server
//!   fan_server:
//!     type: fan
//!     kind: server
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Options: none. The binding takes an `exit` and nothing else (no `routes`, `vault`,
//! `catalog` or `entry`), as in Zilla.
//!
//! Behaviour:
//! - The exit stream is opened when the first member joins, and closed (after what members
//!   sent has been written) when the last member leaves. If the exit stream ends while members
//!   remain, it is reopened; reopening a stream that keeps ending quickly is delayed a little
//!   more each time. If the exit cannot be opened at all, every member is closed with an
//!   upstream error.
//! - A member leaves when it closes its sending side or fails; the others are not disturbed.
//!   As in Zilla, it receives nothing more once it has closed its sending side.
//! - Memory is bounded: the group queues at most 64 chunks of up to 16 KiB for each member. The
//!   exit stream is read only while some member has fewer than 8 chunks queued, so the fastest
//!   member sets the pace (backpressure reaches the exit and, through it, the senders). A member
//!   whose queue is full when a chunk arrives, i.e. one that fell 56 chunks behind the fastest,
//!   is dropped: its stream is closed with an error. This keeps a slow or stuck client from
//!   stalling the others or growing memory without limit, at the price of closing it rather
//!   than skipping data (skipping would silently corrupt a byte stream).
//! - Toward the exit, members share one bounded queue and wait when it is full.
//! - A member joining mid-stream receives what the exit sends from then on.

mod group;

use std::sync::Arc;

use zilla_engine::stream::{StreamKind, connect_via_accept};
use zilla_engine::{
    Binding, BindingFactory, BindingKind, BindingSchema, BoxFuture, BuildContext, BuildError,
    ByteStream, Bytes, BytesHandler, Registry, StartContext, StreamError, StreamInfo,
};

use crate::group::Group;

/// Registers the `fan` binding type.
pub fn register(registry: &mut Registry) {
    registry.binding(FanFactory);
}

/// Builds `fan` bindings.
#[derive(Debug, Default, Clone, Copy)]
pub struct FanFactory;

impl BindingFactory for FanFactory {
    fn type_name(&self) -> &'static str {
        "fan"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Bytes::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Bytes::NAME)
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let config = context.config();
        let unsupported = [
            ("routes", !config.routes.is_empty()),
            ("vault", config.vault.is_some()),
            ("catalog", config.catalog.is_some()),
            ("entry", config.entry.is_some()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, present)| *present) {
            return Err(BuildError::at(
                *key,
                format!("a fan binding takes no `{key}`; give it an `exit`"),
            ));
        }
        let exit_name = config
            .exit
            .clone()
            .ok_or_else(|| BuildError::at("exit", "a fan binding needs an `exit`"))?;
        let exit = context.exit::<Bytes>(&exit_name)?;
        let group = Group::new(context.name().to_string(), exit);
        context.publish::<Bytes>(Arc::new(FanHandler {
            group: group.clone(),
        }));
        Ok(Arc::new(FanBinding { group }))
    }
}

/// A built `fan` binding: its one group.
struct FanBinding {
    group: Arc<Group>,
}

impl Binding for FanBinding {
    fn start(&self, context: &StartContext) {
        self.group
            .start(context.retired.clone(), context.tasks.clone());
    }
}

/// The `bytes` entry of a `fan` binding: each accepted stream is a member of the group.
struct FanHandler {
    group: Arc<Group>,
}

impl BytesHandler for FanHandler {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(self.group.clone().serve(stream))
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        let handler: Arc<dyn BytesHandler> = Arc::new(FanHandler {
            group: self.group.clone(),
        });
        Box::pin(async move { connect_via_accept(handler, info) })
    }
}
