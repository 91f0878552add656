//! Which connection owns a client identifier, kept in a store as Zilla keeps it: the key
//! `<client-id>#owner` holds the record of the connection that claimed it last. A new
//! connection claims by writing its record; the connection it replaces sees the key change to
//! a record not its own and ends with 0x8E (session taken over). A connection that ends
//! removes the key only while it still holds its own record.

use std::sync::Arc;

use tokio::sync::watch;
use zilla_engine::components::{Store, StoreFull, StoreValue};

/// What Zilla appends to a client identifier to name its owner record.
const OWNER_KEY_SUFFIX: &str = "#owner";
/// A record is a UUID's 32 hexadecimal digits.
const RECORD_LENGTH: usize = 32;

/// One connection's claim on its client identifier.
pub(crate) struct Ownership {
    store: Arc<dyn Store>,
    key: String,
    /// Kept inline: one allocation less per connection.
    record: [u8; RECORD_LENGTH],
    owner: Option<watch::Receiver<StoreValue>>,
}

impl Ownership {
    /// Claims `client_id` for a new connection, taking it from whichever connection holds it.
    pub(crate) fn claim(store: Arc<dyn Store>, client_id: &str) -> Result<Self, StoreFull> {
        let key = format!("{client_id}{OWNER_KEY_SUFFIX}");
        // Unique across processes, should the store be shared by more than one.
        let mut record = [0; RECORD_LENGTH];
        uuid::Uuid::new_v4().simple().encode_lower(&mut record);
        store.put(&key, &record)?;
        let owner = match store.watch(&key) {
            Ok(owner) => owner,
            Err(full) => {
                store.delete(&key, Some(&record));
                return Err(full);
            }
        };
        Ok(Self {
            store,
            key,
            record,
            owner: Some(owner),
        })
    }

    /// Whether another connection claimed the client identifier since this one did.
    pub(crate) fn is_lost(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|owner| owner.borrow().as_deref() != Some(self.record.as_slice()))
    }

    /// Resolves once another connection claims the client identifier.
    pub(crate) async fn lost(&mut self) {
        while !self.is_lost() {
            let Some(owner) = self.owner.as_mut() else {
                break;
            };
            if owner.changed().await.is_err() {
                // The store dropped the key's channel: nothing will change any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        // Stop watching first, so the store can free the key's channel.
        self.owner = None;
        self.store.delete(&self.key, Some(&self.record));
    }
}
