//! Which connection owns a client identifier, kept in a store as Zilla keeps it: the key
//! `<client-id>#owner` holds the record of the connection that claimed it last. A new
//! connection claims by writing its record; the connection it replaces sees the key change to
//! a record not its own and ends with 0x8E (session taken over). A connection that ends
//! removes the key only while it still holds its own record.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use zilla_engine::components::{Store, StoreFull, StoreWatch};

/// What Zilla appends to a client identifier to name its owner record.
const OWNER_KEY_SUFFIX: &str = "#owner";
/// A record is a UUID's 32 hexadecimal digits.
const RECORD_LENGTH: usize = 32;

/// One connection's claim on its client identifier.
pub(crate) struct Ownership {
    store: Arc<dyn Store>,
    /// The connection's client identifier; the key is made from it again when the claim is
    /// given up, rather than kept for the connection's whole life.
    client_id: String,
    /// Kept inline: one allocation less per connection.
    record: [u8; RECORD_LENGTH],
    owner: Option<StoreWatch>,
}

impl Ownership {
    /// Claims `client_id` for a new connection, taking it from whichever connection holds it.
    pub(crate) fn claim(store: Arc<dyn Store>, client_id: String) -> Result<Self, StoreFull> {
        let key = owner_key(&client_id);
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
            client_id,
            record,
            owner: Some(owner),
        })
    }

    /// The client identifier claimed.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether another connection claimed the client identifier since this one did.
    pub(crate) fn is_lost(&self) -> bool {
        self.owner
            .as_ref()
            .is_some_and(|owner| owner.borrow().as_deref() != Some(self.record.as_slice()))
    }

    /// Resolves once another connection claims the client identifier. Polls the watch
    /// rather than awaiting its `changed` future: an idle connection waits on this, and a
    /// poll keeps no state of its own in the connection's future.
    pub(crate) fn lost(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            loop {
                if self.is_lost() {
                    return Poll::Ready(());
                }
                let Some(owner) = self.owner.as_mut() else {
                    return Poll::Ready(());
                };
                match owner.poll_changed(cx) {
                    Poll::Ready(Ok(())) => {}
                    // The store dropped the key's channel: nothing will change any more.
                    Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
                }
            }
        })
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        // Stop watching first, so the store can free the key's channel.
        self.owner = None;
        self.store
            .delete(&owner_key(&self.client_id), Some(&self.record));
    }
}

fn owner_key(client_id: &str) -> String {
    format!("{client_id}{OWNER_KEY_SUFFIX}")
}
