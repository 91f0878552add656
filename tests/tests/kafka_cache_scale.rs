//! The Kafka cache at production size, run by the real binary against a real broker (tansu),
//! with the independent Python confluent-kafka client producing and `curl` as the HTTP
//! client.
//!
//! - A compacted topic of many distinct keys, several times the cache's memory budget: every
//!   key `GET /items/{id}` asks for answers its latest value, whether the cache still holds
//!   its record or must read it from its segment files, the collection `GET /items` streams
//!   every latest value once, and the gateway's RSS stays within the budget plus a stated
//!   overhead throughout.
//! - Fifty topics opened by SSE clients through `topic: ${params.topic}` with a budget smaller
//!   than what they hold together: every client gets every record of its topic, in order, and
//!   topics whose clients left are evicted.
//!
//! Sizes are chosen so each test runs in well under two minutes on a busy machine;
//! `CACHE_SCALE_KEYS=1000000 CACHE_SCALE_MIB=64 CACHE_SCALE_VALUE_BYTES=1000
//! CACHE_SCALE_PARTITIONS=8` runs the first at the size recorded in `docs/benchmarks.md`
//! (about 1 GB; tansu does not answer a fetch of a partition of 500 000 such records).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use zilla_tests::{Broker, Gateway, GatewayBuilder, Peer, RssSampler, curl, rss_bytes};

const MIB: u64 = 1024 * 1024;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Produces records `item-<i>` = `{"id":<i>,"v":"<tag><padding>"}` for `i` in
/// `first..first + count`, in large batches.
const PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
first, count, size, tag = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                     "batch.size": 1000000, "queue.buffering.max.messages": 1000000,
                     "compression.type": "lz4"})
pad = "x" * size
for i in range(first, first + count):
    while True:
        try:
            producer.produce(topic, key=b"item-%d" % i,
                             value=b'{"id":%d,"v":"%s%s"}' % (i, tag.encode(), pad.encode()))
            break
        except BufferError:
            producer.poll(0.05)
left = producer.flush(600)
if left:
    sys.exit("%d records not acknowledged" % left)
"#;

/// What [`PRODUCE`] writes for key `i`.
fn item(i: u64, tag: &str, size: usize) -> String {
    format!("{{\"id\":{i},\"v\":\"{tag}{}\"}}", "x".repeat(size))
}

fn produce(
    broker: &Broker,
    topic: &str,
    first: u64,
    count: u64,
    size: usize,
    tag: &str,
) -> Result<()> {
    let output = Peer::python(PRODUCE)
        .args([
            broker.address(),
            topic.to_owned(),
            first.to_string(),
            count.to_string(),
            size.to_string(),
            tag.to_owned(),
        ])
        .timeout(Duration::from_secs(1800))
        .run()?;
    ensure!(
        output.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

const ITEMS: &str = r#"
name: items
bindings:
  web_tcp:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: web_http
  web_http:
    type: http
    kind: server
    exit: items_mapping
  items_mapping:
    type: http-kafka
    kind: proxy
    routes:
      - when:
          - method: GET
            path: /items
        exit: items_cache
        with:
          capability: fetch
          topic: items
          merge:
            content-type: application/json
      - when:
          - method: GET
            path: /items/{id}
        exit: items_cache
        with:
          capability: fetch
          topic: items
          filters:
            - key: ${params.id}
  items_cache:
    type: kafka
    kind: cache_client
    exit: items_cache_server
  items_cache_server:
    type: kafka
    kind: cache_server
    options:
      bootstrap:
        - items
    exit: kafka_client
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BOOTSTRAP_SERVER}}
    exit: kafka_tcp
  kafka_tcp:
    type: tcp
    kind: client
"#;

/// A gateway on `yaml` in front of `broker`, with a cache budget of `budget` bytes.
fn gateway(yaml: &str, broker: &Broker, budget: u64) -> GatewayBuilder {
    Gateway::builder(yaml)
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        // The values are runs of one letter, which the producer's compression shrinks about
        // fifty-fold: a fetch's batches decompress to the client's bound, which is therefore
        // part of the fixed overhead below; it is kept at 16 MiB rather than the default 64.
        .property(
            "zilla.binding.kafka.client.decompress.max.bytes",
            &(16 * MIB).to_string(),
        )
        .property(
            "zilla.binding.kafka.cache.memory.bytes",
            &budget.to_string(),
        )
}

/// `GET /items/{id}` of `item-<i>`: its status and body.
fn get_item(base: &str, i: u64) -> Result<(u16, String)> {
    let response = curl(&[&format!("{base}/items/item-{i}")])?;
    Ok((response.status, response.body))
}

#[test]
fn every_key_of_a_compacted_topic_beyond_the_budget_answers_its_latest_value() -> Result<()> {
    let keys = setting("CACHE_SCALE_KEYS", 20_000);
    let budget = setting("CACHE_SCALE_MIB", 2) * MIB;
    let size = setting("CACHE_SCALE_VALUE_BYTES", 100) as usize;
    // Compaction has nothing to do here (every key is written once, then five again), and
    // tansu's would keep it from answering at a million records.
    let broker = Broker::start_maintained_every(Duration::from_secs(3600))?;
    broker.create_topic("items", setting("CACHE_SCALE_PARTITIONS", 2) as u32, true)?;
    let started = Instant::now();
    produce(&broker, "items", 0, keys, size, "a")?;
    let produced = started.elapsed();

    let mut gateway = gateway(ITEMS, &broker, budget)
        // Answered 504 before curl gives up, while the cache is still fetching the topic.
        .property("zilla.binding.http.kafka.request.timeout.millis", "20000");
    if let Ok(disk) = std::env::var("CACHE_SCALE_DISK_BYTES") {
        gateway = gateway.property("zilla.binding.kafka.cache.disk.bytes", &disk);
    }
    let gateway = gateway.start()?;
    let baseline = rss_bytes(gateway.pid());
    let sampler = RssSampler::start(gateway.pid());
    let base = format!("http://{}", gateway.address("web_tcp"));

    // The newest key is answered once the cache has fetched the topic (it is bootstrapped);
    // until then the GET times out with 504.
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = get_item(&base, keys - 1)?;
        // The broker serves the whole topic first: allow for its size.
        let fill_deadline = Duration::from_secs(300.max(keys * size as u64 / (2 * MIB)));
        if status != 504 || started.elapsed() > fill_deadline {
            break (status, body);
        }
    };
    ensure!(status == 200, "newest key: {status} {body}");
    ensure!(body == item(keys - 1, "a", size), "newest key: {body}");
    let filled = started.elapsed();

    // Keys from the whole range, most long evicted from memory: each is fetched from Kafka
    // by the offset the key index keeps, never a 404.
    let started = Instant::now();
    let sample: Vec<u64> = (0..keys)
        .step_by((keys / 10).max(1) as usize)
        .chain(keys - 5..keys)
        .collect();
    let mut times = Vec::new();
    for &i in &sample {
        let asked = Instant::now();
        let (status, body) = get_item(&base, i)?;
        times.push(asked.elapsed());
        ensure!(status == 200, "item-{i}: {status} {body}");
        ensure!(body == item(i, "a", size), "item-{i}: {body}");
    }
    let looked_up = started.elapsed();
    let slowest = times.iter().max().copied().unwrap_or_default();
    // What memory let go of is in the cache's segment files: the partitions hold every
    // record produced (about 130 bytes each on disk).
    let on_disk = segment_bytes(&gateway.engine_dir().join("cache/items.items_cache_server"));
    ensure!(
        on_disk >= keys * (size as u64 + 20) || std::env::var("CACHE_SCALE_DISK_BYTES").is_ok(),
        "{on_disk} bytes of segment files for {keys} records"
    );

    // Old keys updated and new keys added while the gateway runs: the latest values.
    produce(&broker, "items", 0, 5, size, "b")?;
    produce(&broker, "items", keys, 5, size, "c")?;
    for i in (0..5).chain(keys..keys + 5) {
        let tag = if i < keys { "b" } else { "c" };
        let (status, body) = get_item(&base, i)?;
        ensure!(status == 200, "item-{i}: {status} {body}");
        ensure!(
            body == item(i, tag, size),
            "item-{i} is not the latest: {body}"
        );
    }
    let (status, _) = get_item(&base, keys + 1000)?;
    ensure!(status == 404, "a key never produced: {status}");

    // The whole collection, streamed from the replay (mostly from the segment files) rather
    // than held: the RSS bound below covers it too.
    let started = Instant::now();
    let collection = curl(&["--max-time", "600", &format!("{base}/items")])?;
    ensure!(
        collection.status == 200,
        "collection: {}",
        collection.status
    );
    let values = collection.body.matches("{\"id\":").count() as u64;
    ensure!(
        values == keys + 5,
        "the collection has {values} values for {} keys",
        keys + 5
    );
    ensure!(
        collection.body.starts_with('[') && collection.body.ends_with(']'),
        "the collection is one JSON array"
    );
    let collected = started.elapsed();

    let peak = sampler.peak();
    drop(sampler);
    println!(
        "{keys} keys of {} B ({} MiB produced in {produced:?}); budget {} MiB; first GET after \
         {filled:?}; {} GETs across the key range in {looked_up:?} (slowest {slowest:?}); the \
         collection ({} MiB) in {collected:?}; gateway RSS {} MiB at start, at most {} MiB (+{} MiB)",
        size + 20,
        keys * (size as u64 + 30) / MIB,
        budget / MIB,
        sample.len(),
        collection.body.len() as u64 / MIB,
        baseline / MIB,
        peak / MIB,
        peak.saturating_sub(baseline) / MIB,
    );
    // The fixed overhead: fetch responses in flight (up to the client's fetch.max.bytes per
    // broker session), their batches decompressed (up to decompress.max.bytes per fetch),
    // decoded batches queued per partition, and the allocator's retained memory.
    let overhead = 96 * MIB;
    ensure!(
        peak.saturating_sub(baseline) <= budget + overhead,
        "RSS grew by {} MiB with a {} MiB budget",
        peak.saturating_sub(baseline) / MIB,
        budget / MIB
    );
    Ok(())
}

/// Produces `count` records `<topic>-<i>:<padding>` to each topic named on the command line.
const PRODUCE_TOPICS: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, count, size, topics = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
for topic in topics:
    for i in range(count):
        producer.produce(topic, value=b"%s-%d:%s" % (topic.encode(), i, b"x" * size))
    producer.poll(0)
left = producer.flush(120)
if left:
    sys.exit("%d records not acknowledged" % left)
"#;

const FANOUT: &str = r#"
name: fanout
telemetry:
  metrics:
    - kafka.cache.size
    - kafka.cache.disk.size
bindings:
  web_tcp:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: web_http
  web_http:
    type: http
    kind: server
    exit: events_sse
  events_sse:
    type: sse
    kind: server
    exit: events_mapping
  events_mapping:
    type: sse-kafka
    kind: proxy
    routes:
      - when:
          - path: /events/{topic}
        exit: events_cache
        with:
          topic: ${params.topic}
  events_cache:
    type: kafka
    kind: cache_client
    exit: events_cache_server
  events_cache_server:
    type: kafka
    kind: cache_server
    telemetry:
      metrics:
        - kafka.cache.*
    exit: kafka_client
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BOOTSTRAP_SERVER}}
    exit: kafka_tcp
  kafka_tcp:
    type: tcp
    kind: client
"#;

/// The `data` of each event in an SSE stream's text.
fn event_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.trim().to_owned())
        .collect()
}

/// One SSE client per topic, all at once: each must receive every record of its topic, in
/// order, and nothing else.
fn read_every_topic(base: &str, topics: &[String], count: usize, size: usize) -> Result<()> {
    let clients = topics
        .iter()
        .map(|topic| {
            Peer::new("curl")
                .args(["-sN", "--max-time", "90", &format!("{base}/events/{topic}")])
                .spawn()
        })
        .collect::<Result<Vec<_>>>()?;
    for (topic, client) in topics.iter().zip(&clients) {
        let last = format!("{topic}-{}:", count - 1);
        client
            .wait_for_stdout(&last, Duration::from_secs(90))
            .with_context(|| format!("{topic}: {}", client.stdout()))?;
        // The last record may still be arriving; the whole event ends with a blank line.
        std::thread::sleep(Duration::from_millis(50));
        let expected: Vec<String> = (0..count)
            .map(|i| format!("{topic}-{i}:{}", "x".repeat(size)))
            .collect();
        let got = event_data(&client.stdout());
        ensure!(
            got == expected,
            "{topic}: {} events, first {:?}",
            got.len(),
            got.first().map(|data| &data[..data.len().min(20)])
        );
    }
    Ok(())
}

#[test]
fn fifty_topics_through_params_share_a_small_budget_and_are_evicted_when_left() -> Result<()> {
    let (topic_count, count, size) = (50, 40, 1000);
    let broker = Broker::start()?;
    let topics: Vec<String> = (0..topic_count).map(|i| format!("topic{i}")).collect();
    for topic in &topics {
        broker.create_topic(topic, 1, false)?;
    }
    let output = Peer::python(PRODUCE_TOPICS)
        .args([broker.address(), count.to_string(), size.to_string()])
        .args(topics.iter().cloned())
        .timeout(Duration::from_secs(180))
        .run()?;
    ensure!(
        output.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 2 MB of records against a 512 KiB budget: the topics evict each other's records.
    let budget = 512 * 1024u64;
    let gateway = gateway(FANOUT, &broker, budget)
        .env("RUST_LOG", "info,zilla_binding_kafka::cache=debug")
        .property("zilla.binding.kafka.cache.idle.evict.millis", "1000")
        .start()?;
    let base = format!("http://{}", gateway.address("web_tcp"));
    read_every_topic(&base, &topics, count, size)?;
    // What the cache holds is within its budget, and it held something.
    let held = cache_size(&gateway)?;
    ensure!(held > 0 && held <= budget, "kafka.cache.size {held}");
    // Every record read is in the segment files too (2 MB produced).
    let on_disk = gauge(&gateway, "kafka.cache.disk.size")?;
    ensure!(
        on_disk >= (topic_count * count * size) as u64,
        "kafka.cache.disk.size {on_disk}"
    );

    // The clients left: every topic is evicted after the idle timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = gateway.stderr();
        let evicted: Vec<&String> = topics
            .iter()
            .filter(|topic| {
                log.lines()
                    .filter(|line| line.contains("evicted idle topics"))
                    .any(|line| line.contains(&format!("\"{topic}\"")))
            })
            .collect();
        if evicted.len() == topics.len() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {} topics evicted",
            evicted.len(),
            topics.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing is held once every topic is gone (the gauge is sampled every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache_size(&gateway)? != 0 {
        ensure!(
            Instant::now() < deadline,
            "kafka.cache.size {} after every topic was evicted",
            cache_size(&gateway)?
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // An evicted topic's segment files go with it.
    let left = segment_bytes(
        &gateway
            .engine_dir()
            .join("cache/fanout.events_cache_server"),
    );
    ensure!(
        left == 0,
        "{left} bytes of segment files after every topic was evicted"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&gateway, "kafka.cache.disk.size")? != 0 {
        ensure!(
            Instant::now() < deadline,
            "kafka.cache.disk.size not 0 once every topic went"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Readers coming back after the eviction get every record again.
    read_every_topic(&base, &topics, count, size)?;
    Ok(())
}

/// Bytes of `.log` segment files under `directory`'s partition directories.
fn segment_bytes(directory: &std::path::Path) -> u64 {
    let partitions = std::fs::read_dir(directory).into_iter().flatten().flatten();
    partitions
        .flat_map(|partition| {
            std::fs::read_dir(partition.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|file| file.path().extension().is_some_and(|e| e == "log"))
        .filter_map(|file| file.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// `kafka.cache.size` of the cache server, as `zilla metrics` prints it.
fn cache_size(gateway: &Gateway) -> Result<u64> {
    gauge(gateway, "kafka.cache.size")
}

/// Gauge `name` of the cache server, as `zilla metrics` prints it.
fn gauge(gateway: &Gateway, name: &str) -> Result<u64> {
    let output = gateway.command(["metrics"])?.output()?;
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    let prefix = format!("fanout events_cache_server {name} ");
    table
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {name} in:\n{table}"))
}
