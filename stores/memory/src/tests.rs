use std::sync::Arc;

use proptest::prelude::*;
use zilla_engine::components::Store;

use super::*;

/// What one entry of `key` and `value` costs.
fn cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_ALLOWANCE
}

#[test]
fn put_get_and_delete() {
    let store = MemoryStore::new(1 << 20);
    assert_eq!(store.put("a", b"one"), Ok(None));
    assert_eq!(store.get("a").as_deref(), Some(&b"one"[..]));
    assert_eq!(
        store.put("a", b"two").unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(store.held(), cost("a", b"two"));
    assert!(
        !store.delete("a", Some(b"one")),
        "deleted a value it no longer holds"
    );
    assert!(store.delete("a", Some(b"two")));
    assert_eq!(store.get("a"), None);
    assert!(!store.delete("a", None));
    assert_eq!(store.held(), 0);
    assert!(store.is_empty());
}

#[test]
fn put_if_absent_keeps_the_first_value() {
    let store = MemoryStore::new(1 << 20);
    assert_eq!(store.put_if_absent("k", b"first"), Ok(None));
    let existing = store.put_if_absent("k", b"second").unwrap();
    assert_eq!(existing.as_deref(), Some(&b"first"[..]));
    assert_eq!(store.get("k").as_deref(), Some(&b"first"[..]));
}

#[test]
fn a_write_past_the_bound_is_refused_and_changes_nothing() {
    let maximum = cost("a", &[0; 10]) + cost("b", &[0; 10]);
    let store = MemoryStore::new(maximum);
    store.put("a", &[1; 10]).unwrap();
    store.put("b", &[2; 10]).unwrap();
    assert_eq!(store.held(), maximum);
    let refused = store.put("c", &[3; 1]).unwrap_err();
    assert_eq!(refused.maximum, maximum);
    assert_eq!(refused.held, maximum);
    assert_eq!(refused.needed, cost("c", &[3; 1]));
    assert_eq!(store.get("c"), None);
    // Growing a held value past the bound is refused too; the old value stays.
    assert!(store.put("a", &[9; 11]).is_err());
    assert_eq!(store.get("a").as_deref(), Some(&[1; 10][..]));
    assert!(store.put_if_absent("d", b"x").is_err());
    assert_eq!(store.held(), maximum);
    // A smaller value always fits, and frees room.
    store.put("a", &[1; 1]).unwrap();
    assert!(store.put("b", &[2; 20]).is_err());
    store.put("b", &[2; 19]).unwrap();
    assert_eq!(store.held(), maximum);
}

#[test]
fn watchers_see_every_change_and_count_against_the_bound() {
    let store = MemoryStore::new(1 << 20);
    store.put("owner", b"one").unwrap();
    let mut watch = store.watch("owner").unwrap();
    assert_eq!(watch.borrow_and_update().as_deref(), Some(&b"one"[..]));
    assert_eq!(store.held(), cost("owner", b"one") + WATCH_ALLOWANCE);
    store.put("owner", b"two").unwrap();
    assert!(watch.has_changed().unwrap());
    assert_eq!(watch.borrow_and_update().as_deref(), Some(&b"two"[..]));
    store.delete("owner", None);
    assert!(watch.has_changed().unwrap());
    assert_eq!(watch.borrow_and_update(), None);
    // Watching keeps the key's channel; once the watcher is gone, the next touch frees it.
    assert_eq!(
        store.held(),
        "owner".len() + ENTRY_ALLOWANCE + WATCH_ALLOWANCE
    );
    drop(watch);
    assert!(!store.delete("owner", None));
    assert_eq!(store.held(), 0);
    assert!(store.is_empty());
}

#[test]
fn a_watch_past_the_bound_is_refused() {
    let store = MemoryStore::new(cost("k", b"v"));
    store.put("k", b"v").unwrap();
    assert!(store.watch("k").is_err());
    assert_eq!(store.held(), cost("k", b"v"));
    assert!(store.watch("other").is_err());
    assert_eq!(store.len(), 1);
}

#[test]
fn a_refused_write_does_not_wake_watchers() {
    let store = MemoryStore::new(cost("k", b"v") + WATCH_ALLOWANCE);
    store.put("k", b"v").unwrap();
    let watch = store.watch("k").unwrap();
    assert!(store.put("k", b"longer").is_err());
    assert!(!watch.has_changed().unwrap());
}

#[test]
fn concurrent_writers_keep_the_count_exact() {
    let store = Arc::new(MemoryStore::new(1 << 20));
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                for round in 0..2_000 {
                    let key = format!("k{}", round % 50);
                    let value = vec![thread as u8; round % 17];
                    match round % 4 {
                        0 => drop(store.put(&key, &value)),
                        1 => drop(store.put_if_absent(&key, &value)),
                        2 => drop(store.delete(&key, None)),
                        _ => drop(store.watch(&key)),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    // Recount from what is held: the running count must agree.
    let state = store.lock();
    let recount: usize = state
        .entries
        .iter()
        .map(|(key, entry)| entry.cost(key))
        .sum();
    assert_eq!(state.held, recount);
}

#[test]
fn concurrent_claims_leave_one_owner_and_everyone_else_sees_it() {
    // How the mqtt server uses a store: each claimant puts its record then watches; every
    // claimant but the last writer sees a value that is not its own.
    let store = Arc::new(MemoryStore::new(1 << 20));
    let threads: Vec<_> = (0..8u8)
        .map(|claimant| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.put("client#owner", &[claimant]).unwrap();
                store.watch("client#owner").unwrap()
            })
        })
        .collect();
    let watches: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let owner = store.get("client#owner").unwrap();
    let owners = watches
        .iter()
        .enumerate()
        .filter(|(claimant, watch)| watch.borrow().as_deref() == Some(&[*claimant as u8][..]))
        .count();
    assert_eq!(owners, 1);
    assert!(
        watches
            .iter()
            .all(|watch| watch.borrow().as_ref() == Some(&owner))
    );
}

proptest! {
    #[test]
    fn the_bound_holds_whatever_the_writes(
        operations in proptest::collection::vec((0u8..4, 0u8..6, 0usize..40), 1..200),
        maximum in 0usize..600,
    ) {
        let store = MemoryStore::new(maximum);
        let mut watches = Vec::new();
        for (operation, key, length) in operations {
            let key = format!("key{key}");
            let value = vec![7; length];
            match operation {
                0 => drop(store.put(&key, &value)),
                1 => drop(store.put_if_absent(&key, &value)),
                2 => drop(store.delete(&key, None)),
                _ => {
                    if let Ok(watch) = store.watch(&key) {
                        watches.push(watch);
                    }
                }
            }
            prop_assert!(store.held() <= maximum);
            if watches.len() > 3 {
                watches.remove(0);
            }
        }
    }
}
