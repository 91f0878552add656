//! What the engine knows about stream kinds besides their types: which kind a binding can be
//! reached through when it publishes another ([`Kinds::adapter`]), and how a hop of a kind is
//! metered. A built binding's handlers, by kind, are its [`Published`] entries.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::messages::{Messages, bytes_over_messages, messages_over_bytes};
use crate::metered::meter_bytes;
use crate::metrics::StreamMetrics;
use crate::stream::{Bytes, BytesHandler, StreamKind};

/// A published handler, type-erased: an `Arc<K::Handler>` for its kind `K`.
type Entry = Box<dyn Any + Send + Sync>;

/// Handlers a built binding offers, by stream kind name.
#[derive(Default)]
pub struct Published {
    pub(crate) entries: HashMap<&'static str, Entry>,
    /// `stream.*.received` of the publishing binding.
    pub(crate) received: Option<Arc<StreamMetrics>>,
}

impl fmt::Debug for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}

impl Published {
    /// Offers `handler` for stream kind `K`.
    pub fn publish<K: StreamKind>(&mut self, handler: Arc<K::Handler>) {
        self.entries.insert(K::NAME, Box::new(handler));
    }

    /// The handler for stream kind `K`, if offered.
    pub fn get<K: StreamKind>(&self) -> Option<Arc<K::Handler>> {
        self.entries
            .get(K::NAME)
            .and_then(|entry| entry.downcast_ref::<Arc<K::Handler>>())
            .cloned()
    }
}

/// Turns a published entry of one kind into a boxed `Arc<To::Handler>`.
type Adapt = Arc<dyn Fn(&(dyn Any + Send + Sync)) -> Option<Box<dyn Any>> + Send + Sync>;

/// A way to serve streams of kind `to` with a handler of kind `from`.
struct Adapter {
    from: &'static str,
    to: &'static str,
    adapt: Adapt,
}

/// The adapters between stream kinds.
pub struct Kinds {
    adapters: Vec<Adapter>,
}

impl fmt::Debug for Kinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.adapters.iter().map(|a| (a.from, a.to)))
            .finish()
    }
}

impl Default for Kinds {
    /// The engine's own adapters, between `bytes` and `messages`.
    fn default() -> Self {
        let mut kinds = Self {
            adapters: Vec::new(),
        };
        kinds.adapter::<Messages, Bytes>(bytes_over_messages);
        kinds.adapter::<Bytes, Messages>(messages_over_bytes);
        kinds
    }
}

impl Kinds {
    /// Lets a binding that publishes kind `From` be the exit of a caller of kind `To`.
    pub fn adapter<From: StreamKind, To: StreamKind>(
        &mut self,
        adapt: fn(Arc<From::Handler>) -> Arc<To::Handler>,
    ) {
        let erased = move |published: &(dyn Any + Send + Sync)| {
            published
                .downcast_ref::<Arc<From::Handler>>()
                .map(|handler| Box::new(adapt(handler.clone())) as Box<dyn Any>)
        };
        self.adapters.push(Adapter {
            from: From::NAME,
            to: To::NAME,
            adapt: Arc::new(erased),
        });
    }

    /// Whether a caller emitting kind `emitted` can use an exit that accepts `accepted`.
    pub fn carries(&self, emitted: &str, accepted: &str) -> bool {
        emitted == accepted
            || self
                .adapters
                .iter()
                .any(|adapter| adapter.from == accepted && adapter.to == emitted)
    }

    /// The handler of kind `K` that `published` offers, directly or through an adapter, with
    /// the hop's `stream.*` metrics recorded when it is a `bytes` hop and `sent` (the caller's)
    /// or the publisher's are enabled.
    pub(crate) fn handler<K: StreamKind>(
        &self,
        published: &Published,
        sent: Option<Arc<StreamMetrics>>,
    ) -> Option<Arc<K::Handler>> {
        let handler = published.get::<K>().or_else(|| {
            self.adapters
                .iter()
                .filter(|adapter| adapter.to == K::NAME)
                .find_map(|adapter| {
                    let entry = published.entries.get(adapter.from)?;
                    let adapted = (adapter.adapt)(entry.as_ref())?;
                    adapted
                        .downcast::<Arc<K::Handler>>()
                        .ok()
                        .map(|boxed| *boxed)
                })
        })?;
        let metered: Box<dyn Any> = Box::new(handler.clone());
        match metered.downcast::<Arc<dyn BytesHandler>>() {
            Ok(bytes) => {
                let bytes = meter_bytes(*bytes, sent, published.received.clone());
                (Box::new(bytes) as Box<dyn Any>)
                    .downcast::<Arc<K::Handler>>()
                    .ok()
                    .map(|boxed| *boxed)
            }
            Err(_) => Some(handler),
        }
    }
}
