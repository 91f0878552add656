//! Thread-per-core workers: connections handed out in turn, and a task spawned by a task on a
//! worker stays on that worker. Its own test binary, since workers are started once per process.

use std::collections::HashSet;

use zilla_runtime::workers;

#[tokio::test]
async fn work_is_handed_to_each_worker_in_turn_and_stays_there() -> Result<(), String> {
    workers::start(2).map_err(|error| error.to_string())?;
    assert_eq!(workers::count(), 2);
    // This test's own thread is not a worker.
    assert_eq!(workers::current(), None);
    let mut seen = Vec::new();
    let mut threads = HashSet::new();
    for _ in 0..4 {
        let (index, thread, inner) = workers::spawn(async {
            let index = workers::current();
            let thread = std::thread::current().id();
            // `tokio::spawn` on a worker spawns on the same worker.
            let inner = tokio::spawn(async { (workers::current(), std::thread::current().id()) })
                .await
                .map_err(|error| error.to_string());
            (index, thread, inner)
        })
        .await
        .map_err(|error| error.to_string())?;
        assert_eq!(inner?, (index, thread));
        seen.push(index.ok_or("spawned off the workers")?);
        threads.insert(thread);
    }
    // Round robin: alternating between the two workers.
    assert_eq!(seen[0], seen[2]);
    assert_eq!(seen[1], seen[3]);
    assert_ne!(seen[0], seen[1]);
    assert_eq!(threads.len(), 2);
    // A second start changes nothing.
    workers::start(5).map_err(|error| error.to_string())?;
    assert_eq!(workers::count(), 2);
    Ok(())
}
