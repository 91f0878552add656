//! The cache's memory budget: one count of the bytes every cached partition holds (records,
//! their slots, the record index and the key index), shared by every `cache_server` of the gateway
//! (`zilla.binding.kafka.cache.memory.bytes`), and the eviction that keeps the count under
//! it.
//!
//! Past the budget the coldest partitions lose their oldest records first: partitions nobody
//! reads, least recently read first, then partitions with readers down to a small tail, then
//! those tails too. Nothing is lost for readers: a reader that needs an evicted record reads
//! it through from Kafka (see `cache`). The key index is counted but never evicted, since an
//! item lookup depends on it to find an old key without reading the whole partition.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// What eviction needs of a cached partition.
pub(crate) trait Evictable: Send + Sync {
    /// Whether readers are on it, and when it was last read (milliseconds on the budget's
    /// clock; larger is more recent).
    fn temperature(&self) -> (bool, u64);

    /// Drops its oldest records (superseded ones first) until `want` bytes are freed or only
    /// its newest `keep` bytes are left. Returns the bytes freed.
    fn evict(&self, want: usize, keep: usize) -> usize;
}

/// The cached partitions a budget evicts from.
pub(crate) struct Members<T: ?Sized>(Mutex<Vec<Weak<T>>>);

impl<T: ?Sized> Members<T> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    pub(crate) fn register(&self, member: Weak<T>) {
        let mut members = self.0.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|member| member.strong_count() > 0);
        members.push(member);
    }

    /// The members alive, with their `temperature`, coldest first: unread ones, then the
    /// least recently read.
    pub(crate) fn coldest_first(
        &self,
        temperature: impl Fn(&T) -> (bool, u64),
    ) -> Vec<((bool, u64), Arc<T>)> {
        let mut members: Vec<_> = {
            let mut members = self.0.lock().unwrap_or_else(|e| e.into_inner());
            members.retain(|member| member.strong_count() > 0);
            members
                .iter()
                .filter_map(Weak::upgrade)
                .map(|member| (temperature(&member), member))
                .collect()
        };
        members.sort_by_key(|(temperature, _)| *temperature);
        members
    }
}

/// The budget alive in `slot`, shared by every `cache_server` built while another one is
/// alive: `update` gives it the newest configured limit; `make` makes one when none is.
pub(crate) fn shared<T>(
    slot: &OnceLock<Mutex<Weak<T>>>,
    make: impl FnOnce() -> Arc<T>,
    update: impl FnOnce(&T),
) -> Arc<T> {
    let mut shared = slot
        .get_or_init(|| Mutex::new(Weak::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(budget) = shared.upgrade() {
        update(&budget);
        return budget;
    }
    let budget = make();
    *shared = Arc::downgrade(&budget);
    budget
}

/// Bytes a partition with readers keeps when eviction first reaches it: the records its live
/// readers are about to read.
const READ_TAIL_BYTES: usize = 256 * 1024;

/// The cache's memory budget.
pub struct MemoryBudget {
    limit: AtomicUsize,
    held: AtomicUsize,
    members: Members<dyn Evictable>,
    /// One eviction at a time; a fetch that finds one running does not wait for it.
    evicting: Mutex<()>,
    clock: std::time::Instant,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("held", &self.held())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes of its own.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicUsize::new(limit),
            held: AtomicUsize::new(0),
            members: Members::new(),
            evicting: Mutex::new(()),
            clock: std::time::Instant::now(),
        })
    }

    /// The gateway's budget: every `cache_server` built while another one is alive shares
    /// it (the newest configured limit applies).
    pub fn shared(limit: usize) -> Arc<Self> {
        static SHARED: OnceLock<Mutex<Weak<MemoryBudget>>> = OnceLock::new();
        shared(
            &SHARED,
            || Self::new(limit),
            |budget| budget.limit.store(limit, Ordering::Relaxed),
        )
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The bytes the cache holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Milliseconds since the budget was made: the clock of [`Evictable::temperature`].
    pub(crate) fn now(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    pub(crate) fn charge(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn release(&self, bytes: usize) {
        // Every release matches an earlier charge; saturating keeps a bug from wrapping.
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    pub(crate) fn register(&self, member: Weak<dyn Evictable>) {
        self.members.register(member);
    }

    /// Evicts until the cache holds at most nine tenths of the budget, when it holds more
    /// than the budget (the margin keeps every fetch from evicting a little).
    pub(crate) fn enforce(&self) {
        let limit = self.limit();
        if self.held() <= limit {
            return;
        }
        let Ok(_evicting) = self.evicting.try_lock() else {
            return;
        };
        let target = limit - limit / 10;
        let members = self.members.coldest_first(|member| member.temperature());
        let read_tail = READ_TAIL_BYTES.min(limit / 64);
        for pass in 0..3 {
            for ((read, _), member) in &members {
                let held = self.held();
                if held <= target {
                    return;
                }
                let keep = match (pass, read) {
                    (0, true) => continue,
                    (1, true) => read_tail,
                    _ => 0,
                };
                member.evict(held - target, keep);
            }
        }
        if self.held() > limit {
            tracing::warn!(
                held = self.held(),
                limit,
                "kafka cache over its memory budget after evicting every record: the key \
                 indexes and the disk blocks readers hold exceed it (raise \
                 zilla.binding.kafka.cache.memory.bytes)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Member {
        budget: Arc<MemoryBudget>,
        bytes: Mutex<usize>,
        read: bool,
        last: u64,
    }

    impl Evictable for Member {
        fn temperature(&self) -> (bool, u64) {
            (self.read, self.last)
        }

        fn evict(&self, want: usize, keep: usize) -> usize {
            let mut bytes = self.bytes.lock().unwrap();
            let freed = want.min(bytes.saturating_sub(keep));
            *bytes -= freed;
            self.budget.release(freed);
            freed
        }
    }

    fn member(budget: &Arc<MemoryBudget>, bytes: usize, read: bool, last: u64) -> Arc<Member> {
        budget.charge(bytes);
        let member = Arc::new(Member {
            budget: budget.clone(),
            bytes: Mutex::new(bytes),
            read,
            last,
        });
        let weak: Weak<dyn Evictable> = Arc::downgrade(&(member.clone() as Arc<dyn Evictable>));
        budget.register(weak);
        member
    }

    #[test]
    fn unread_and_cold_partitions_go_first() {
        let budget = MemoryBudget::new(1000);
        let hot = member(&budget, 400, true, 10);
        let cold = member(&budget, 400, true, 5);
        let unread = member(&budget, 400, false, 20);
        budget.enforce();
        assert_eq!(budget.held(), 900);
        assert_eq!(*unread.bytes.lock().unwrap(), 100);
        assert_eq!(*cold.bytes.lock().unwrap(), 400);
        assert_eq!(*hot.bytes.lock().unwrap(), 400);
        // More than the unread partition holds: the coldest read one loses down to its tail.
        let _more = member(&budget, 600, false, 30);
        budget.enforce();
        assert!(budget.held() <= 900, "{budget:?}");
        assert_eq!(
            *hot.bytes.lock().unwrap(),
            400,
            "the hottest is touched last"
        );
    }

    #[test]
    fn shared_budgets_are_one_while_alive() {
        let first = MemoryBudget::shared(10);
        let second = MemoryBudget::shared(20);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.limit(), 20);
    }
}
