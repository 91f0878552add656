//! The `fan` binding (kind `server`): every stream routed to it joins one group, and the group
//! talks to the `exit` over a single shared session. Messages from any member go up that
//! session (fan-in); every message the exit answers with goes down to all current members
//! (fan-out). With an `echo` exit, each client sees what every client sends, its own included.
//!
//! It works on every stream kind through the engine's `messages` kind: behind a `ws` server
//! each WebSocket message is one message (text stays text). It also takes `bytes` streams
//! directly, each read being a message, so that a member that stops reading can be closed
//! while a write to it is pending. It depends on no protocol crate.
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
//! - The exit session is opened when the first member joins, and closed once what members
//!   sent was taken by the exit, when the last member leaves. If the exit session ends while
//!   members remain, it is reopened; reopening a session that keeps ending quickly is delayed a
//!   little more each time. If the exit cannot be opened at all, every member is closed with
//!   an upstream error.
//! - A member leaves when it closes its sending side or fails; the others are not disturbed.
//!   As in Zilla, it receives nothing more once it has closed its sending side.
//! - Memory is bounded: the group queues at most 1 MiB of messages for each member (a message
//!   counts its payload plus 64 bytes; a member with nothing queued always takes the next one).
//!   The exit session is read only while some member has less than 128 KiB queued, so the
//!   fastest member sets the pace (backpressure reaches the exit and, through it, the
//!   senders). A member whose queue is full when a message arrives, i.e. one that fell about
//!   900 KiB behind the fastest, is dropped: its stream is closed with an error. This keeps a
//!   slow or stuck client from stalling the others or growing memory without limit, at the
//!   price of closing it rather than skipping data (skipping would silently corrupt a byte
//!   stream).
//! - Toward the exit, members share a budget of 1 MiB and wait when it is spent.
//! - A member joining mid-stream receives what the exit sends from then on.

mod group;

use std::sync::Arc;

use zilla_engine::messages::{MessageHandler, Messages, Session};
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
        &[Bytes::NAME, Messages::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Messages::NAME)
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
        let exit = context.exit::<Messages>(&exit_name)?;
        let group = Group::new(context.name().to_string(), exit);
        let handler = Arc::new(FanHandler {
            group: group.clone(),
        });
        context.publish::<Bytes>(handler.clone());
        context.publish::<Messages>(handler);
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

/// The entry of a `fan` binding: each stream or session is a member of the group.
struct FanHandler {
    group: Arc<Group>,
}

impl BytesHandler for FanHandler {
    fn accept(&self, stream: ByteStream) -> BoxFuture<'_, Result<(), StreamError>> {
        Box::pin(self.group.clone().serve_bytes(stream))
    }

    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        let handler: Arc<dyn BytesHandler> = Arc::new(FanHandler {
            group: self.group.clone(),
        });
        Box::pin(async move { connect_via_accept(handler, info) })
    }
}

impl MessageHandler for FanHandler {
    fn handle(
        &self,
        info: StreamInfo,
        incoming: Session,
    ) -> BoxFuture<'_, Result<Session, StreamError>> {
        // Members share one exit session, so what each was opened with goes nowhere.
        Box::pin(async move { self.group.join(&info, incoming.messages).map(Session::new) })
    }
}
