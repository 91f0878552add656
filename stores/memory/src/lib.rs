//! The `memory` store: a key/value store held in the gateway process, as Zilla's `memory`
//! store. Bindings that name it share it; the mqtt server keeps which connection owns each
//! client identifier in it (`options.store`). Its contents live as long as the process and are
//! seen by no other process.
//!
//! ```yaml
//! name: example
//! stores:
//!   memory0:
//!     type: memory
//! bindings:
//!   tcp_server:
//!     type: tcp
//!     kind: server
//!     options:
//!       host: 0.0.0.0
//!       port: 1883
//!     exit: mqtt_server
//!   mqtt_server:
//!     type: mqtt
//!     kind: server
//!     options:
//!       store: memory0
//!     exit: mqtt_client
//!   mqtt_client:
//!     type: mqtt
//!     kind: client
//!     exit: tcp_client
//!   tcp_client:
//!     type: tcp
//!     kind: client
//!     options:
//!       host: localhost
//!       port: 1884
//! ```
//!
//! # Options
//!
//! None, as in Zilla: `options` is refused. The bound on what one store holds is the property
//! `zilla.store.memory.maximum.bytes` (default 64 MiB). Each entry counts its key, its value
//! and a fixed allowance for the map slot and allocations around them; a key being watched
//! counts another allowance for its channel. A write that would take the store past the bound
//! is refused ([`StoreFull`]) and changes nothing.
//!
//! A `HashMap` behind one mutex is all this needs: every operation is a short map update, and
//! no maintained crate offers a byte-bounded map with change notification per key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use zilla_engine::Registry;
use zilla_engine::components::{
    BuildError, ComponentContext, ComponentFactory, Store, StoreFull, StoreValue, StoreWatch,
    StoreWatchers,
};
use zilla_engine::properties::Properties;

/// The property bounding the bytes one memory store holds.
pub const MAXIMUM_BYTES_PROPERTY: &str = "zilla.store.memory.maximum.bytes";

/// What one store holds at most unless `zilla.store.memory.maximum.bytes` says otherwise.
pub const DEFAULT_MAXIMUM_BYTES: usize = 64 << 20;

/// What the allocator adds to each allocation (its header and rounding), on average.
const ALLOCATION_OVERHEAD: usize = 16;

/// What an entry costs beyond its key and value: its map slot (and control byte) at the
/// lowest load the map keeps after growing (7/16), the key's allocation and the value's
/// (with the `Arc`'s two counts). Checked against a counting allocator in
/// `tests/accounting.rs`.
const ENTRY_ALLOWANCE: usize = (std::mem::size_of::<(String, Entry)>() + 1) * 16 / 7
    + 2 * ALLOCATION_OVERHEAD
    + 2 * std::mem::size_of::<usize>();

/// What a watched key costs beyond its entry: the channel's shared state (its value lock,
/// version and notifier), checked in `tests/accounting.rs`.
const WATCH_ALLOWANCE: usize = zilla_engine::store_watch::CHANNEL_BYTES + ALLOCATION_OVERHEAD;

/// Registers the `memory` store type and its property.
pub fn register(registry: &mut Registry) {
    registry
        .store(MemoryStoreFactory)
        .properties(&[MAXIMUM_BYTES_PROPERTY]);
}

/// The bound `properties` set for memory stores.
pub fn maximum_bytes(properties: &Properties) -> usize {
    let maximum = properties.u64(MAXIMUM_BYTES_PROPERTY, DEFAULT_MAXIMUM_BYTES as u64);
    usize::try_from(maximum).unwrap_or(usize::MAX)
}

struct MemoryStoreFactory;

impl ComponentFactory<dyn Store> for MemoryStoreFactory {
    fn type_name(&self) -> &'static str {
        "memory"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        None
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Store>, BuildError> {
        context.refuse_store("a memory store")?;
        Ok(Arc::new(MemoryStore::new(maximum_bytes(
            context.properties,
        ))))
    }
}

/// One key: its value, and the channel telling watchers of changes while any watch.
#[derive(Default)]
struct Entry {
    value: StoreValue,
    watchers: Option<StoreWatchers>,
}

impl Entry {
    fn cost(&self, key: &str) -> usize {
        if self.value.is_none() && self.watchers.is_none() {
            return 0;
        }
        let value = self.value.as_ref().map_or(0, |value| value.len());
        let watch = if self.watchers.is_some() {
            WATCH_ALLOWANCE
        } else {
            0
        };
        key.len() + value + ENTRY_ALLOWANCE + watch
    }

    /// Drops the channel once nobody watches.
    fn prune(&mut self) {
        if self
            .watchers
            .as_ref()
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            self.watchers = None;
        }
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// The sum of the entries' costs.
    held: usize,
}

/// A bounded key/value store in process memory.
pub struct MemoryStore {
    maximum: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("maximum", &self.maximum)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store holding at most `maximum` bytes.
    pub fn new(maximum: usize) -> Self {
        Self {
            maximum,
            state: Mutex::default(),
        }
    }

    /// The bytes held now, as counted against the bound.
    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// The number of keys held or watched.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds and watches nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state whole before anything that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to the entry of `key` if the result fits the bound; returns what
    /// `change` returned, or why it did not fit (and the entry is left as it was).
    fn update<R>(&self, key: &str, change: impl FnOnce(&mut Entry) -> R) -> Result<R, StoreFull> {
        let mut state = self.lock();
        let state = &mut *state;
        // The entry is changed where it is: taking it out and putting it back would copy its
        // key into a new allocation on every write, and free the old one, which scatters
        // short-lived holes among the entries a store of many keys keeps.
        let existing = state.entries.get_mut(key);
        let present = existing.is_some();
        let mut absent = Entry::default();
        let entry = existing.unwrap_or(&mut absent);
        let held = state.held - entry.cost(key);
        entry.prune();
        let before = entry.cost(key);
        let previous_value = entry.value.clone();
        let had_watchers = entry.watchers.is_some();
        let result = change(entry);
        let after = entry.cost(key);
        let fits = held
            .checked_add(after)
            .is_some_and(|total| total <= self.maximum);
        if !fits && after > before {
            entry.value = previous_value;
            if !had_watchers {
                entry.watchers = None;
            }
            let restored = entry.cost(key);
            state.held = held + restored;
            settle(&mut state.entries, key, present, restored, absent);
            return Err(StoreFull {
                held: state.held,
                maximum: self.maximum,
                needed: after - restored,
            });
        }
        // Watchers are told under the lock, in the order the writes happened: told after it,
        // two racing writes could leave them believing the one the store did not keep.
        if entry.value != previous_value
            && let Some(watchers) = &entry.watchers
        {
            watchers.send_replace(entry.value.clone());
        }
        state.held = held + after;
        settle(&mut state.entries, key, present, after, absent);
        Ok(result)
    }
}

/// Keeps the entry of `key` in `entries` while it costs anything: removes one that no longer
/// does, and puts in `absent`, the entry made for a key not there before, if it now does.
fn settle(
    entries: &mut HashMap<String, Entry>,
    key: &str,
    present: bool,
    cost: usize,
    absent: Entry,
) {
    if cost == 0 {
        if present {
            entries.remove(key);
        }
    } else if !present {
        entries.insert(key.to_owned(), absent);
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> StoreValue {
        self.lock()
            .entries
            .get(key)
            .and_then(|entry| entry.value.clone())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<StoreValue, StoreFull> {
        let value: Arc<[u8]> = value.into();
        self.update(key, |entry| entry.value.replace(value))
    }

    fn put_if_absent(&self, key: &str, value: &[u8]) -> Result<StoreValue, StoreFull> {
        if let Some(existing) = self.get(key) {
            return Ok(Some(existing));
        }
        let value: Arc<[u8]> = value.into();
        self.update(key, |entry| match &entry.value {
            Some(existing) => Some(existing.clone()),
            None => {
                entry.value = Some(value);
                None
            }
        })
    }

    fn delete(&self, key: &str, expected: Option<&[u8]>) -> bool {
        // Removing never grows the store, so it always fits.
        self.update(key, |entry| {
            let matches = entry
                .value
                .as_deref()
                .is_some_and(|value| expected.is_none_or(|expected| value == expected));
            if matches {
                entry.value = None;
            }
            matches
        })
        .unwrap_or(false)
    }

    fn watch(&self, key: &str) -> Result<StoreWatch, StoreFull> {
        self.update(key, |entry| {
            entry
                .watchers
                .get_or_insert_with(|| StoreWatchers::new(entry.value.clone()))
                .subscribe()
        })
    }
}

#[cfg(test)]
mod tests;
