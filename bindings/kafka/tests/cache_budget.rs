//! The cache's memory budget at a size that needs it: records produced by confluent-kafka to
//! a real broker, several times the cache's budget. The bytes the cache counts stay within
//! the budget, the process's RSS stays within the budget plus a fixed overhead, every key
//! looked up answers its value, and a reader resuming from offset 0 gets every record once,
//! in order. Runs in a process of its own (its own test binary), so the RSS is this test's.
//!
//! By default 8 000 records of 1 KB against a 2 MiB budget, which the test broker (tansu on
//! sqlite) serves in well under two minutes; `CACHE_BUDGET_RECORDS=200000
//! CACHE_BUDGET_MIB=32` runs the same checks with 200 MB against 32 MiB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures_util::StreamExt;
use support::{Broker, TcpConnector, create_topic, run_python};
use zilla_binding_kafka::cache::{Cache, CacheHandler, CacheTuning};
use zilla_binding_kafka::client::{ClientTuning, KafkaClient};
use zilla_binding_kafka::kind::{
    Condition, Filter, KafkaHandler, MergedItem, MergedRequest, MergedStream, PartitionOffset,
    Start,
};
use zilla_binding_kafka::wire::{Cluster, ClusterConfig};

const MIB: usize = 1024 * 1024;

/// Produces `count` records `key-<i>` = `<i>:` + `size` bytes.
const PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
count, size = int(sys.argv[3]), int(sys.argv[4])
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                     "batch.size": 1000000, "compression.type": "none"})
pad = b"x" * size
def send(key, value):
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:
            producer.poll(0.05)
for i in range(count):
    send(b"key-%d" % i, b"%d:" % i + pad)
print("[%d]" % producer.flush(120))
"#;

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The value of `key-<i>`.
fn expected_value(i: usize, size: usize) -> Vec<u8> {
    let mut value = format!("{i}:").into_bytes();
    value.resize(value.len() + size, b'x');
    value
}

/// The messages of `stream` up to its sync.
async fn until_synced(stream: &mut MergedStream) -> Result<Vec<(Bytes, Option<Bytes>)>> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .context("no sync within 30 s")?
        {
            Some(Ok(MergedItem::Synced(_))) => return Ok(out),
            Some(Ok(MergedItem::Snapshot(_))) => {}
            Some(Ok(MergedItem::Message { message, .. })) => out.push((
                message.key.clone().unwrap_or_default(),
                message.value.clone(),
            )),
            Some(Err(error)) => return Err(error.into()),
            None => bail!("stream ended"),
        }
    }
}

/// Reads `total` records from `stream` and checks that each partition's offsets run from 0
/// without gap or duplicate, and that every value is what was produced.
async fn read_everything(stream: &mut MergedStream, count: usize, size: usize) -> Result<()> {
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut seen = vec![0u8; count];
    let mut read = 0;
    while read < count {
        let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .with_context(|| format!("only {read} of {count} records"))?;
        let message = match item {
            Some(Ok(MergedItem::Message { message, .. })) => message,
            Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("stream ended after {read}"),
        };
        let expected = next.entry(message.partition).or_insert(0);
        ensure!(
            message.offset == *expected,
            "partition {} gave offset {} where {} was next",
            message.partition,
            message.offset,
            expected
        );
        *expected += 1;
        let key = std::str::from_utf8(message.key.as_deref().unwrap_or_default())?;
        let i: usize = key.strip_prefix("key-").context("key")?.parse()?;
        let value = message.value.as_deref().unwrap_or_default();
        ensure!(value == expected_value(i, size), "{key} has a wrong value");
        ensure!(seen[i] == 0, "{key} read twice");
        seen[i] = 1;
        read += 1;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_several_times_the_budget_stay_within_it_and_none_is_lost() -> Result<()> {
    let setting = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    // No key is written twice: the broker compacts the topic, and the replay below checks
    // that offsets run without a gap.
    let (count, size) = (setting("CACHE_BUDGET_RECORDS", 8_000), 1000usize);
    let budget = setting("CACHE_BUDGET_MIB", 2) * MIB;
    let broker = Broker::start()?;
    let cluster = Cluster::new(
        Arc::new(TcpConnector),
        ClusterConfig {
            bootstrap: vec![broker.address()],
            retry_timeout: Duration::from_secs(60),
            ..ClusterConfig::default()
        },
    )?;
    let client = Arc::new(KafkaClient::new(
        cluster,
        ClientTuning {
            fetch_max_wait: Duration::from_millis(20),
            ..ClientTuning::default()
        },
    ));
    create_topic(client.cluster(), "big", 2, &[("cleanup.policy", "compact")]).await?;
    let started = Instant::now();
    run_python(
        PRODUCE,
        &[
            &broker.address(),
            "big",
            &count.to_string(),
            &size.to_string(),
        ],
        "",
    )?;
    let produced = started.elapsed();

    let tuning = CacheTuning {
        fetch_max_wait_ms: 20,
        memory_bytes: budget,
        ..CacheTuning::default()
    };
    let cache = Arc::new(Cache::new(client.clone(), HashMap::new(), tuning));
    let handler = CacheHandler::new(cache.clone());
    let baseline = rss();

    // Samples RSS and the bytes the cache counts until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let (peak_rss, peak_held) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, peak_rss, peak_held, cache) = (
            stop.clone(),
            peak_rss.clone(),
            peak_held.clone(),
            cache.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss(), Ordering::Relaxed);
                peak_held.fetch_max(cache.budget().held(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // The first reader makes the cache fetch all 200 MB; eviction keeps the last part.
    let started = Instant::now();
    let mut first = handler
        .merged(MergedRequest {
            topic: "big".into(),
            start: Start::Historical,
            ..MergedRequest::default()
        })
        .await?;
    read_everything(&mut first, count, size).await?;
    drop(first);
    let filled = started.elapsed();
    let held_after_fill = cache.budget().held();

    // Item lookups of keys the cache evicted long ago and of the last keys: each answers its
    // value, once.
    let started = Instant::now();
    let mut keys: Vec<usize> = (0..count).step_by(count / 40).collect();
    keys.extend(count - 3..count);
    for &i in &keys {
        let key = Bytes::from(format!("key-{i}"));
        let mut lookup = handler
            .merged(MergedRequest {
                topic: "big".into(),
                start: Start::Historical,
                filters: vec![Filter {
                    conditions: vec![Condition::Key(key.clone())],
                }],
                latest_per_key: true,
                ..MergedRequest::default()
            })
            .await?;
        let found = until_synced(&mut lookup).await?;
        ensure!(
            found == [(key, Some(Bytes::from(expected_value(i, size))))],
            "key-{i} answered {} records",
            found.len()
        );
    }
    let looked_up = started.elapsed();

    // A client resuming from offset 0 of every partition reads everything again, mostly
    // through from Kafka.
    let started = Instant::now();
    let mut resumed = handler
        .merged(MergedRequest {
            topic: "big".into(),
            offsets: vec![
                PartitionOffset {
                    partition: 0,
                    offset: 0,
                },
                PartitionOffset {
                    partition: 1,
                    offset: 0,
                },
            ],
            ..MergedRequest::default()
        })
        .await?;
    read_everything(&mut resumed, count, size).await?;
    let replayed = started.elapsed();
    drop(resumed);

    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let (peak_rss, peak_held) = (
        peak_rss.load(Ordering::Relaxed),
        peak_held.load(Ordering::Relaxed),
    );
    println!(
        "{count} records, {} MiB produced in {produced:?}; budget {} MiB; cache held {} MiB \
         after the fill, at most {} MiB; RSS {} MiB before, at most {} MiB (+{} MiB); fill and \
         read {filled:?}, {} lookups {looked_up:?}, resume from 0 {replayed:?}",
        count * size / MIB,
        budget / MIB,
        held_after_fill / MIB,
        peak_held / MIB,
        baseline / MIB,
        peak_rss / MIB,
        peak_rss.saturating_sub(baseline) / MIB,
        keys.len(),
    );
    ensure!(
        held_after_fill <= budget,
        "held {held_after_fill} after the fill"
    );
    // Between a fetch's append and its eviction the count may pass the budget by what one
    // fetch of each partition brings.
    ensure!(
        peak_held <= budget + 2 * CacheTuning::default().fetch_max_bytes as usize,
        "held up to {peak_held}"
    );
    // The fixed overhead: fetch responses in flight (a session's response is up to the
    // client's fetch.max.bytes, and each partition queues two decoded batches), the readers'
    // read-through buffers and the allocator's retained memory.
    let overhead = 128 * MIB;
    ensure!(
        peak_rss.saturating_sub(baseline) <= budget + overhead,
        "RSS grew by {} MiB",
        peak_rss.saturating_sub(baseline) / MIB
    );
    Ok(())
}
