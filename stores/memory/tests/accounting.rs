//! The bound counts the bytes a store really holds: with every allocation of the process
//! counted, filling a store (and watching its keys) allocates no more than the store says it
//! holds, however many keys, and not wildly less either.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Counting every allocation takes a global allocator, whose trait is unsafe; it only forwards
// to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use zilla_engine::components::Store;
use zilla_store_memory::MemoryStore;

/// Bytes allocated and not yet freed, as requested of the allocator (its own headers and
/// rounding come on top; the store's allowances cover them).
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// One test, so no other test's allocations fall into the measurement.
#[test]
fn what_a_store_counts_covers_what_it_allocates() {
    for keys in [1_000usize, 20_000, 100_000] {
        let store = MemoryStore::new(usize::MAX);
        let names: Vec<String> = (0..keys).map(|i| format!("client-{i}#owner")).collect();
        let mut receivers = Vec::with_capacity(keys);
        let before = live();
        for name in &names {
            store.put(name, b"0123456789abcdef").unwrap();
        }
        let allocated = (live() - before) as usize;
        let held = store.held();
        assert!(
            held >= allocated,
            "{keys} keys: counted {held} bytes, allocated {allocated}"
        );
        assert!(
            held <= allocated * 3,
            "{keys} keys: counted {held} bytes for {allocated} allocated"
        );

        let before = live();
        for name in &names {
            receivers.push(store.watch(name).unwrap());
        }
        let allocated_watching = (live() - before) as usize;
        let held_watching = store.held() - held;
        assert!(
            held_watching >= allocated_watching,
            "{keys} watched keys: counted {held_watching} bytes, allocated {allocated_watching}"
        );
        assert!(
            held_watching <= allocated_watching * 3,
            "{keys} watched keys: counted {held_watching} bytes for {allocated_watching} allocated"
        );
        drop(receivers);
    }
}
