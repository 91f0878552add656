//! `cargo xtask bench cache-scale`: scenario S11, the Kafka cache at production size, run by
//! the release binary against tansu, with the peers' Python confluent-kafka producing and real
//! `curl` processes as the HTTP clients.
//!
//! Part 1, lookups on a compacted topic: [`KEYS`] distinct keys of ~1 KB (values of SHA-256
//! chains, which do not compress, so the cache holds what a real topic would) in a compacted
//! topic of [`PARTITIONS`] partitions, behind http-kafka with a [`BUDGET`] memory budget,
//! many times smaller than the topic. Every key is looked up once (`GET /items/{id}`) and
//! must answer its value, whether the cache still holds its record in memory or reads it from
//! its segment files; then updated and new keys must answer their new values, and one
//! `GET /items` streams the whole merged collection. The gateway's RSS is sampled throughout.
//!
//! Part 2, history of a delete-policy topic: [`RECORDS`] records of ~1 KB cached from start-up
//! (`bootstrap`), while SSE clients of a `defaultOffset: live` route measure how soon a new
//! record reaches them; then an SSE client of a `defaultOffset: historical` route resumes
//! after the first event (`Last-Event-ID`) and must get every other record exactly once, in
//! order per partition.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use zilla_tests::{Gateway, Peer, RssSampler, python, rss_bytes};

use super::optimized::rerun_optimized;
use super::options::Options;
use super::tansu::Broker;
use super::{bench_dir, commit, record, stop_gateway, today, zilla_binary};

const MIB: u64 = 1024 * 1024;
/// Distinct keys of part 1 (about 1 GB of values).
const KEYS: u64 = 1_000_000;
const QUICK_KEYS: u64 = 100_000;
/// Records of part 2 (about 2 GB).
const RECORDS: u64 = 2_000_000;
const QUICK_RECORDS: u64 = 200_000;
/// tansu 0.6.0 answers a fetch in time proportional to what is left of the partition from the
/// fetched offset on, so a topic of a gigabyte is served in reasonable time only when spread
/// over many partitions (64 serve 1 GB to confluent-kafka in about 37 s on the 2-core
/// machine).
const PARTITIONS: u64 = 64;
/// The cache's memory budget, `zilla.binding.kafka.cache.memory.bytes`.
const BUDGET: u64 = 64 * MIB;
/// SHA-256 digests per value: 15 × 64 hex digits = 960 characters.
const DIGESTS: usize = 15;
/// tansu's SQLite maintenance compacts the compacted topic by grouping every stored record by
/// key; over a million records that takes longer than the default 2 s between passes and the
/// broker then answers nothing else. Nothing here needs compaction (each key is written once,
/// five of them twice).
const MAINTENANCE: Duration = Duration::from_secs(3600);
/// How long the gateway holds a `GET` the cache cannot answer yet (it answers 504 then): long
/// enough that waiting for the fill is a few requests, not thousands.
const REQUEST_TIMEOUT_MILLIS: &str = "60000";
/// curl processes looking keys up at once (the machine has 2 cores).
const CURLS: u64 = 2;
/// URLs per curl process: each process reuses its connection across them (keep-alive); a
/// bounded config file per process keeps its start-up cost negligible without one file of a
/// million lines.
const CHUNK: u64 = 50_000;
/// Separates curl's body from its `-w` status line; values never contain it.
const WRITE_OUT_MARK: &str = "#zilla-bench#";
/// Live subscriptions measured in part 2, each with one marker record.
const TRIES: u64 = 20;
/// How long one live subscription may wait for its marker before the try fails.
const MARKER_TIMEOUT_SECS: &str = "120";

/// Runs S11 and records its figures (unless `--quick`).
pub fn run(options: &Options) -> Result<()> {
    // Every lookup's body is checked against its SHA-256 chain, which an unoptimised xtask
    // computes too slowly to keep up with the gateway.
    if rerun_optimized()? {
        return Ok(());
    }
    let binary = zilla_binary(options)?;
    let (keys, records) = if options.quick {
        (QUICK_KEYS, QUICK_RECORDS)
    } else {
        (KEYS, RECORDS)
    };
    let dir = bench_dir("zilla-bench-cache-scale-")?;
    let lookups = lookups(&binary, keys, dir.path()).context("part 1, lookups")?;
    println!("{}", lookups.summary());
    let history = history(&binary, records).context("part 2, history")?;
    println!("{}", history.summary());
    if options.quick {
        println!("--quick: printed, not recorded");
        return Ok(());
    }
    record("cache-scale", &table(&lookups, &history))
}

// ---------------------------------------------------------------------------------------------
// Part 1: lookups on a compacted topic

/// Produces `item-<i>` = [`item_value`] for `i` in `first..first + count`, in large lz4
/// batches as a bulk loader would; exits non-zero when a record is not acknowledged.
const PRODUCE_ITEMS: &str = r#"
import hashlib, sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
first, count, tag, digests = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].encode(), int(sys.argv[6])
failed = []
def delivered(error, message):
    if error is not None:
        failed.append(error)
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                     "batch.size": 1000000, "queue.buffering.max.messages": 1000000,
                     "compression.type": "lz4", "on_delivery": delivered})
for i in range(first, first + count):
    digest, parts = hashlib.sha256(b"%d" % i).digest(), []
    for _ in range(digests):
        parts.append(digest)
        digest = hashlib.sha256(digest).digest()
    value = b'{"id":%d,"tag":"%s","v":"%s"}' % (i, tag, b"".join(parts).hex().encode())
    while True:
        try:
            producer.produce(topic, key=b"item-%d" % i, value=value)
            break
        except BufferError:
            producer.poll(0.05)
    if i % 1000 == 0:
        producer.poll(0)
left = producer.flush(1800)
if left or failed:
    sys.exit("%d records not acknowledged, %d failed (first: %s)" % (left, len(failed), failed[:1]))
"#;

/// The value [`PRODUCE_ITEMS`] writes for key `item-<i>`:
/// `{"id":<i>,"tag":"<tag>","v":"<hex>"}`, the hex being the SHA-256 chain h1 = sha256("<i>"),
/// h(k+1) = sha256(h(k)), [`DIGESTS`] digests concatenated.
fn item_value(i: u64, tag: &str) -> String {
    let mut value = format!("{{\"id\":{i},\"tag\":\"{tag}\",\"v\":\"");
    let mut digest = Sha256::digest(i.to_string().as_bytes());
    for _ in 0..DIGESTS {
        for byte in digest.iter() {
            // Writing to a String cannot fail.
            let _ = write!(value, "{byte:02x}");
        }
        digest = Sha256::digest(digest.as_slice());
    }
    value.push_str("\"}");
    value
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
            path: /items/{id}
        exit: items_cache
        with:
          capability: fetch
          topic: items
          filters:
            - key: ${params.id}
      - when:
          - method: GET
            path: /items
        exit: items_cache
        with:
          capability: fetch
          topic: items
          merge:
            content-type: application/json
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

/// Part 1's figures.
struct Lookups {
    keys: u64,
    produced: Duration,
    /// From the gateway's start to the newest key answering 200.
    filled: Duration,
    looked_up: u64,
    lookup_time: Duration,
    /// `time_total` of each lookup, as curl measured it, in ms: p50, p99, max.
    lookup_ms: [f64; 3],
    /// From the updates' acknowledgement to all ten answering their new values.
    updates_seen: Duration,
    collection_values: u64,
    collection_bytes: u64,
    collection_time: Duration,
    collection_peak: u64,
    rss_start: u64,
    rss_peak: u64,
    segment_bytes: u64,
}

impl Lookups {
    fn lookups_per_second(&self) -> f64 {
        self.looked_up as f64 / self.lookup_time.as_secs_f64()
    }

    fn summary(&self) -> String {
        format!(
            "cache-scale lookups: {} keys produced in {:.0} s, newest answered after {:.1} s; \
             {} GETs (every key, {CURLS} curls) all 200 with their values, {:.0} lookups/s, \
             time_total p50 {:.2} ms p99 {:.2} ms max {:.1} ms; 10 updated/new keys answered \
             in {:.2} s; GET /items: {} values, {:.0} MiB in {:.1} s, RSS peak during it {:.0} \
             MiB; RSS {:.0} MiB at start, peak {:.0} MiB (+{:.0} MiB against a {} MiB \
             budget); segment files {:.0} MiB",
            self.keys,
            self.produced.as_secs_f64(),
            self.filled.as_secs_f64(),
            self.looked_up,
            self.lookups_per_second(),
            self.lookup_ms[0],
            self.lookup_ms[1],
            self.lookup_ms[2],
            self.updates_seen.as_secs_f64(),
            self.collection_values,
            mib(self.collection_bytes),
            self.collection_time.as_secs_f64(),
            mib(self.collection_peak),
            mib(self.rss_start),
            mib(self.rss_peak),
            mib(self.rss_peak.saturating_sub(self.rss_start)),
            BUDGET / MIB,
            mib(self.segment_bytes),
        )
    }
}

fn lookups(binary: &Path, keys: u64, dir: &Path) -> Result<Lookups> {
    let broker = Broker::start_maintained_every(MAINTENANCE)?;
    broker.create_topic_with("items", PARTITIONS as u32, &["cleanup.policy=compact"])?;
    progress(&format!("producing {keys} keys"));
    let started = Instant::now();
    produce_items(&broker, 0, keys, "a")?;
    let produced = started.elapsed();

    let mut gateway = Gateway::builder(ITEMS)
        .binary(binary)
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .property(
            "zilla.binding.kafka.cache.memory.bytes",
            &BUDGET.to_string(),
        )
        .property(
            "zilla.binding.http.kafka.request.timeout.millis",
            REQUEST_TIMEOUT_MILLIS,
        )
        .start()?;
    let pid = gateway.pid();
    let rss_start = rss_bytes(pid);
    let sampler = RssSampler::start(pid);
    let base = format!("http://{}", gateway.address("web_tcp"));

    // The cache fetches the whole topic from start-up (bootstrap); the newest key answers once
    // its partition is fetched to the end, until then the GET is held and answered 504.
    progress("waiting for the newest key");
    let started = Instant::now();
    let fill_deadline = Duration::from_secs(600 + keys / 1000);
    let newest = keys - 1;
    loop {
        let (status, body) = get(&base, &format!("/items/item-{newest}"))?;
        if status == 200 {
            ensure!(
                body == item_value(newest, "a"),
                "item-{newest}: {}",
                clip(&body)
            );
            break;
        }
        ensure!(
            started.elapsed() < fill_deadline,
            "item-{newest} still answers {status} after {fill_deadline:?}: {}",
            clip(&body)
        );
        // A 504 has already waited the request timeout; anything else is asked again soon.
        if status != 504 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let filled = started.elapsed();

    progress(&format!("looking up every key ({CURLS} curls)"));
    let started = Instant::now();
    let outcome = look_up_every_key(&base, keys, dir)?;
    let lookup_time = started.elapsed();
    if let Some(first) = &outcome.first_mismatch {
        bail!(
            "{} of {} lookups did not answer 200 with their value; first: {first}",
            outcome.mismatches,
            outcome.times.len()
        );
    }
    ensure!(
        outcome.times.len() as u64 == keys,
        "{} lookups for {keys} keys",
        outcome.times.len()
    );
    let mut times = outcome.times;
    times.sort_by(f64::total_cmp);
    let lookup_ms = [
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN),
    ];

    // Old keys updated and new keys added while the gateway runs: each must answer its new
    // value once the cache has fetched it (a fetch round of the cache after the acks).
    produce_items(&broker, 0, 5, "b")?;
    produce_items(&broker, keys, 5, "b")?;
    let started = Instant::now();
    for i in (0..5).chain(keys..keys + 5) {
        let expected = item_value(i, "b");
        loop {
            let (status, body) = get(&base, &format!("/items/item-{i}"))?;
            if status == 200 && body == expected {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "item-{i} does not answer its new value: {status} {}",
                clip(&body)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let updates_seen = started.elapsed();

    progress("GET /items");
    let collection_sampler = RssSampler::start(pid);
    let started = Instant::now();
    let (collection_values, collection_bytes) = stream_collection(&base)?;
    let collection_time = started.elapsed();
    let collection_peak = collection_sampler.peak();
    drop(collection_sampler);
    ensure!(
        collection_values == keys + 5,
        "GET /items gave {collection_values} values, not {}",
        keys + 5
    );

    // Each sampler reads every 20 ms at its own instants: a spike one of them caught is the
    // peak of both.
    let rss_peak = sampler.peak().max(collection_peak);
    drop(sampler);
    let segment_bytes = segment_bytes(&gateway.engine_dir().join("cache"));
    stop_gateway(&mut gateway)?;
    drop(broker);
    Ok(Lookups {
        keys,
        produced,
        filled,
        looked_up: keys,
        lookup_time,
        lookup_ms,
        updates_seen,
        collection_values,
        collection_bytes,
        collection_time,
        collection_peak,
        rss_start,
        rss_peak,
        segment_bytes,
    })
}

fn produce_items(broker: &Broker, first: u64, count: u64, tag: &str) -> Result<()> {
    let output = Peer::python(PRODUCE_ITEMS)
        .args([
            broker.address(),
            "items".to_owned(),
            first.to_string(),
            count.to_string(),
            tag.to_owned(),
            DIGESTS.to_string(),
        ])
        .timeout(Duration::from_secs(3600))
        .run()
        .context("the producer (install it with `cargo xtask peers --only python`)")?;
    ensure!(
        output.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// One `GET` with curl: status and body.
fn get(base: &str, path: &str) -> Result<(u16, String)> {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-w", "\n%{http_code}"])
        .arg(format!("{base}{path}"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run curl")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status
        .trim()
        .parse()
        .with_context(|| format!("curl GET {path}: {text:?}"))?;
    Ok((status, body.to_owned()))
}

/// What the curl processes of [`look_up_every_key`] saw.
#[derive(Default)]
struct LookupOutcome {
    /// `time_total` of every lookup, in ms.
    times: Vec<f64>,
    mismatches: u64,
    first_mismatch: Option<String>,
}

/// `GET /items/item-<i>` for every key, by [`CURLS`] curl processes at a time, each working
/// through its contiguous share in chunks of [`CHUNK`] URLs.
fn look_up_every_key(base: &str, keys: u64, dir: &Path) -> Result<LookupOutcome> {
    let share = keys.div_ceil(CURLS);
    let outcomes: Vec<Result<LookupOutcome>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CURLS)
            .map(|worker| {
                let range = (worker * share).min(keys)..((worker + 1) * share).min(keys);
                scope.spawn(move || look_up_range(base, range, dir, worker))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a lookup thread panicked")))
            })
            .collect()
    });
    let mut total = LookupOutcome::default();
    for outcome in outcomes {
        let outcome = outcome?;
        total.times.extend(outcome.times);
        total.mismatches += outcome.mismatches;
        if total.first_mismatch.is_none() {
            total.first_mismatch = outcome.first_mismatch;
        }
    }
    Ok(total)
}

fn look_up_range(
    base: &str,
    range: std::ops::Range<u64>,
    dir: &Path,
    worker: u64,
) -> Result<LookupOutcome> {
    let mut outcome = LookupOutcome::default();
    let mut first = range.start;
    while first < range.end {
        let last = (first + CHUNK).min(range.end);
        let config = dir.join(format!("lookups-{worker}.curlrc"));
        let mut urls = String::new();
        for i in first..last {
            let _ = writeln!(urls, "url = \"{base}/items/item-{i}\"");
        }
        std::fs::write(&config, urls).with_context(|| format!("cannot write {config:?}"))?;
        look_up_chunk(&config, first..last, &mut outcome)?;
        progress(&format!(
            "curl {worker}: looked up item-{first}..item-{last} ({} mismatches so far)",
            outcome.mismatches
        ));
        first = last;
    }
    Ok(outcome)
}

/// Runs one curl over the URLs of `config` (keys `range`, in order) and checks each answer as
/// it streams in: the body, then the `-w` line with status and `time_total`.
fn look_up_chunk(
    config: &Path,
    range: std::ops::Range<u64>,
    outcome: &mut LookupOutcome,
) -> Result<()> {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-w"])
        .arg(format!(
            "\n{WRITE_OUT_MARK} %{{http_code}} %{{time_total}}\n"
        ))
        .arg("-K")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run curl")?;
    let stdout = child.stdout.take().context("curl has no stdout")?;
    let mut lines = BufReader::with_capacity(1 << 20, stdout).lines();
    let mut body = String::new();
    let mut keys = range.clone();
    while let Some(line) = lines.next().transpose().context("reading curl's output")? {
        let Some(write_out) = line.strip_prefix(WRITE_OUT_MARK) else {
            // A body of several lines is wrong anyway; it is kept whole for the report.
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(&line);
            continue;
        };
        let i = keys
            .next()
            .context("curl answered more URLs than it was given")?;
        let mut fields = write_out.split_whitespace();
        let status = fields.next().unwrap_or_default();
        let time: f64 = fields
            .next()
            .and_then(|time| time.parse().ok())
            .with_context(|| format!("curl's write-out: {write_out:?}"))?;
        outcome.times.push(time * 1000.0);
        if status != "200" || body != item_value(i, "a") {
            outcome.mismatches += 1;
            if outcome.first_mismatch.is_none() {
                outcome.first_mismatch = Some(format!("item-{i}: {status} {}", clip(&body)));
            }
        }
        body.clear();
    }
    let status = child.wait()?;
    ensure!(
        keys.next().is_none(),
        "curl ({status}) stopped before the end of item-{}..item-{}",
        range.start,
        range.end
    );
    Ok(())
}

/// `GET /items` streamed through curl: the values (`{"id":` occurrences) and bytes of the
/// body, counted as it arrives rather than held.
fn stream_collection(base: &str) -> Result<(u64, u64)> {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "3600", "-w", "\n%{http_code}"])
        .arg(format!("{base}/items"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run curl")?;
    let mut stdout = child.stdout.take().context("curl has no stdout")?;
    const NEEDLE: &[u8] = b"{\"id\":";
    let mut buffer = vec![0u8; 1 << 20];
    // The last bytes of the previous read (fewer than a needle, so none is counted twice)
    // before each new read, so that a needle split across two reads is counted.
    let mut window: Vec<u8> = Vec::with_capacity(buffer.len() + NEEDLE.len());
    // The last bytes of the output, where curl writes the status.
    let mut tail: Vec<u8> = Vec::new();
    let (mut values, mut bytes) = (0u64, 0u64);
    loop {
        let read = stdout.read(&mut buffer).context("reading GET /items")?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
        window.extend_from_slice(&buffer[..read]);
        values += window
            .windows(NEEDLE.len())
            .filter(|candidate| *candidate == NEEDLE)
            .count() as u64;
        window.drain(..window.len() - window.len().min(NEEDLE.len() - 1));
        tail.extend_from_slice(&buffer[..read]);
        tail.drain(..tail.len() - tail.len().min(16));
    }
    let exit = child.wait()?;
    let tail = String::from_utf8_lossy(&tail).into_owned();
    let (_, status) = tail.rsplit_once('\n').unwrap_or(("", &tail));
    ensure!(
        exit.success() && status == "200",
        "GET /items: curl {exit}, status {status:?}"
    );
    Ok((values, bytes.saturating_sub(1 + status.len() as u64)))
}

// ---------------------------------------------------------------------------------------------
// Part 2: history of a delete-policy topic

/// Produces records `{"i":<i>,"v":"<hex>"}` of about 1 KB to partition `i % partitions` for
/// `i` in `0..count`; the hex is random, so the cache and the broker carry real bytes.
const PRODUCE_EVENTS: &str = r#"
import os, sys
from confluent_kafka import Producer
bootstrap, topic, count, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
failed = []
def delivered(error, message):
    if error is not None:
        failed.append(error)
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                     "batch.size": 1000000, "queue.buffering.max.messages": 1000000,
                     "compression.type": "lz4", "on_delivery": delivered})
for i in range(count):
    value = b'{"i":%d,"v":"%s"}' % (i, os.urandom(500).hex().encode())
    while True:
        try:
            producer.produce(topic, value=value, partition=i % partitions)
            break
        except BufferError:
            producer.poll(0.05)
    if i % 1000 == 0:
        producer.poll(0)
left = producer.flush(1800)
if left or failed:
    sys.exit("%d records not acknowledged, %d failed (first: %s)" % (left, len(failed), failed[:1]))
"#;

/// Stays connected and, for each number `k` read from stdin, produces
/// `{"marker":<k>,"t":<time.time()>}` to partition `k % partitions`, flushes, and answers
/// `sent <k> <unacknowledged>`.
const MARKERS: &str = r#"
import sys, time
from confluent_kafka import Producer
bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
# Connected, with the topic's metadata, before the first marker: the first try does not pay
# for it.
producer.list_topics(topic, timeout=30)
print("ready", flush=True)
for line in sys.stdin:
    k = int(line)
    producer.produce(topic, value=b'{"marker":%d,"t":%.6f}' % (k, time.time()),
                     partition=k % partitions)
    left = producer.flush(30)
    print("sent %d %d" % (k, left), flush=True)
"#;

const EVENTS: &str = r#"
name: history
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
    exit: web_sse
  web_sse:
    type: sse
    kind: server
    exit: events_mapping
  events_mapping:
    type: sse-kafka
    kind: proxy
    routes:
      - when:
          - path: /live
        exit: live_cache
        with:
          topic: events
      - when:
          - path: /history
        exit: history_cache
        with:
          topic: events
  live_cache:
    type: kafka
    kind: cache_client
    options:
      topics:
        - name: events
          defaultOffset: live
    exit: events_cache_server
  history_cache:
    type: kafka
    kind: cache_client
    options:
      topics:
        - name: events
          defaultOffset: historical
    exit: events_cache_server
  events_cache_server:
    type: kafka
    kind: cache_server
    options:
      bootstrap:
        - events
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

/// Part 2's figures.
struct History {
    records: u64,
    produced: Duration,
    /// Produce-to-SSE latency of the markers, in ms: p50, p99, max.
    live_ms: [f64; 3],
    /// From starting curl to its response headers, in ms: the first try (right after
    /// start-up), then the median and the longest of the others.
    headers_ms: [f64; 3],
    /// Segment files when the last live try ended, and at the end.
    segment_bytes_after_tries: u64,
    segment_bytes_total: u64,
    resumed: u64,
    resume_time: Duration,
}

impl History {
    fn records_per_second(&self) -> f64 {
        self.resumed as f64 / self.resume_time.as_secs_f64()
    }

    fn summary(&self) -> String {
        format!(
            "cache-scale history: {} records produced in {:.0} s; {TRIES} live subscriptions \
             from start-up: marker latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms, headers \
             after {:.1} ms (first try), p50 {:.1} ms max {:.1} ms (the others), {:.0} MiB of {:.0} MiB of segment files cached when the last \
             ended; resumed after the first event: {} records, each once and in order per \
             partition, in {:.1} s ({:.0} records/s)",
            self.records,
            self.produced.as_secs_f64(),
            self.live_ms[0],
            self.live_ms[1],
            self.live_ms[2],
            self.headers_ms[0],
            self.headers_ms[1],
            self.headers_ms[2],
            mib(self.segment_bytes_after_tries),
            mib(self.segment_bytes_total),
            self.resumed,
            self.resume_time.as_secs_f64(),
            self.records_per_second(),
        )
    }
}

fn history(binary: &Path, records: u64) -> Result<History> {
    let broker = Broker::start_maintained_every(MAINTENANCE)?;
    broker.create_topic("events", PARTITIONS as u32)?;
    progress(&format!("producing {records} records"));
    let started = Instant::now();
    let output = Peer::python(PRODUCE_EVENTS)
        .args([
            broker.address(),
            "events".to_owned(),
            records.to_string(),
            PARTITIONS.to_string(),
        ])
        .timeout(Duration::from_secs(3600))
        .run()
        .context("the producer (install it with `cargo xtask peers --only python`)")?;
    ensure!(
        output.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let produced = started.elapsed();
    let mut markers = Markers::start(&broker)?;

    let mut gateway = Gateway::builder(EVENTS)
        .binary(binary)
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .start()?;
    let base = format!("http://{}", gateway.address("web_tcp"));
    let cache = gateway.engine_dir().join("cache");

    // Right after start-up the cache server is fetching the whole topic (bootstrap): a live
    // subscriber must not wait for that history.
    progress(&format!("{TRIES} live subscriptions"));
    let mut latencies = Vec::new();
    let mut headers = Vec::new();
    for k in 0..TRIES {
        let (latency, header_time) =
            live_try(&base, &mut markers, k).with_context(|| format!("live try {k}"))?;
        latencies.push(latency.as_secs_f64() * 1000.0);
        headers.push(header_time.as_secs_f64() * 1000.0);
    }
    let segment_bytes_after_tries = segment_bytes(&cache);
    let first_headers = headers.first().copied().unwrap_or(f64::NAN);
    let mut others = headers.get(1..).unwrap_or_default().to_vec();
    others.sort_by(f64::total_cmp);
    let headers_ms = [
        first_headers,
        percentile(&others, 0.50),
        others.last().copied().unwrap_or(f64::NAN),
    ];
    latencies.sort_by(f64::total_cmp);
    let live_ms = [
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    ];

    progress("resuming the history after its first event");
    let (id, first) = first_history_event(&base)?;
    let started = Instant::now();
    let resumed = resume_history(&base, &id, first, records)?;
    let resume_time = started.elapsed();
    let segment_bytes_total = segment_bytes(&cache);

    markers.stop();
    stop_gateway(&mut gateway)?;
    drop(broker);
    Ok(History {
        records,
        produced,
        live_ms,
        headers_ms,
        segment_bytes_after_tries,
        segment_bytes_total,
        resumed,
        resume_time,
    })
}

/// The long-running [`MARKERS`] producer.
struct Markers {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Markers {
    fn start(broker: &Broker) -> Result<Self> {
        let mut child = Command::new(python())
            .args(["-c", MARKERS, &broker.address(), "events"])
            .arg(PARTITIONS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("the peers' python (install it with `cargo xtask peers --only python`)")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("python has no stdout")?);
        let mut markers = Self {
            child,
            stdin,
            stdout,
        };
        let line = markers.answer()?;
        ensure!(line == "ready", "marker producer: {line:?}");
        Ok(markers)
    }

    fn answer(&mut self) -> Result<String> {
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line)?;
        ensure!(read > 0, "the marker producer exited");
        Ok(line.trim().to_owned())
    }

    /// Produces marker `k` and waits for its acknowledgement.
    fn send(&mut self, k: u64) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the marker producer is stopped")?;
        writeln!(stdin, "{k}")?;
        stdin.flush()?;
        let line = self.answer()?;
        ensure!(line == format!("sent {k} 0"), "marker producer: {line:?}");
        Ok(())
    }

    fn stop(&mut self) {
        // Closing stdin ends its loop; it has nothing left to flush.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A curl subscription to `/live`: produces marker `k` once the response headers have arrived
/// and returns the latency from its production to its `data:` line, and the time to headers.
fn live_try(base: &str, markers: &mut Markers, k: u64) -> Result<(Duration, Duration)> {
    let spawned = Instant::now();
    let mut curl = Curl::spawn(&[
        "-sN",
        "-i",
        "--max-time",
        MARKER_TIMEOUT_SECS,
        &format!("{base}/live"),
    ])?;
    let status = curl.line()?.context("no response")?;
    ensure!(status.starts_with("HTTP/1.1 200"), "response: {status}");
    while !curl.line()?.context("no end of headers")?.is_empty() {}
    let headers = spawned.elapsed();
    markers.send(k)?;
    let needle = format!("{{\"marker\":{k},");
    loop {
        let line = curl
            .line()?
            .with_context(|| format!("marker {k} did not arrive within {MARKER_TIMEOUT_SECS} s"))?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if !data.starts_with(&needle) {
            continue;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let marker: serde_json::Value =
            serde_json::from_str(data).with_context(|| format!("marker: {data}"))?;
        let sent = marker["t"].as_f64().context("marker without t")?;
        return Ok((Duration::from_secs_f64((now - sent).max(0.0)), headers));
    }
}

/// A curl process whose output is read line by line as it streams; killed when dropped.
struct Curl {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Curl {
    fn spawn(args: &[&str]) -> Result<Self> {
        let mut child = Command::new("curl")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run curl")?;
        let stdout = child.stdout.take().context("curl has no stdout")?;
        Ok(Self {
            child,
            stdout: BufReader::with_capacity(1 << 20, stdout),
        })
    }

    /// The next line without its line ending (SSE and HTTP headers end lines with `\r\n` or
    /// `\n`), or `None` once curl has exited.
    fn line(&mut self) -> Result<Option<String>> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
    }
}

impl Drop for Curl {
    fn drop(&mut self) {
        // Our own child, by its pid: a subscription is ended by closing its connection.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `i` of a record `{"i":<i>,...}`; `None` for anything else (the markers).
fn record_index(data: &str) -> Option<u64> {
    let rest = data.strip_prefix("{\"i\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The first event of `/history` (no position: `defaultOffset: historical`): its id and `i`.
fn first_history_event(base: &str) -> Result<(String, u64)> {
    let mut curl = Curl::spawn(&["-sN", "--max-time", "120", &format!("{base}/history")])?;
    let mut id = None;
    loop {
        let line = curl.line()?.context("no event on /history")?;
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().to_owned());
        } else if let Some(data) = line.strip_prefix("data:") {
            let i = record_index(data.trim())
                .with_context(|| format!("first event: {}", clip(data)))?;
            let id = id.context("the first event has no id")?;
            return Ok((id, i));
        }
    }
}

/// Resumes `/history` after the event `id` (record `first`) and reads until every other record
/// of `0..records` came: per partition `p` (records `i` with `i % PARTITIONS == p`), ascending
/// by exactly [`PARTITIONS`] from the partition's start (after `first` in its partition), so a
/// gap, a repeat or a record out of order fails. Returns how many came.
fn resume_history(base: &str, id: &str, first: u64, records: u64) -> Result<u64> {
    let timeout = (1800 + records / 500).to_string();
    let mut curl = Curl::spawn(&[
        "-sN",
        "--max-time",
        &timeout,
        "-H",
        &format!("Last-Event-ID: {id}"),
        &format!("{base}/history"),
    ])?;
    let mut next: Vec<u64> = (0..PARTITIONS).collect();
    next[(first % PARTITIONS) as usize] = first + PARTITIONS;
    let expected = records - 1;
    let mut received = 0u64;
    while received < expected {
        let line = curl.line()?.with_context(|| {
            format!("the resumed stream ended after {received} of {expected} records")
        })?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        // The markers of the live tries follow each partition's records; they are not counted.
        let Some(i) = record_index(data.trim()) else {
            continue;
        };
        let partition = (i % PARTITIONS) as usize;
        ensure!(
            i == next[partition],
            "partition {partition}: record {i} after {} (expected {}): {}",
            next[partition].saturating_sub(PARTITIONS),
            next[partition],
            if i < next[partition] {
                "a repeat"
            } else {
                "a gap"
            }
        );
        next[partition] += PARTITIONS;
        received += 1;
    }
    // Each partition ends past the last record: every i in 0..records came once, `first`
    // before the resume.
    for (partition, next) in next.iter().enumerate() {
        ensure!(
            *next >= records && *next < records + PARTITIONS,
            "partition {partition} stopped at {next}"
        );
    }
    Ok(received)
}

// ---------------------------------------------------------------------------------------------
// Shared

/// Says where a run is (a full run takes a long while), on stderr, apart from the summary.
fn progress(message: &str) {
    eprintln!("cache-scale: {message}");
}

/// Bytes of the `.log` segment files anywhere under `directory` (the cache keeps one
/// directory per cache server, with one per partition in it).
fn segment_bytes(directory: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => segment_bytes(&path),
                Ok(_) if path.extension().is_some_and(|extension| extension == "log") => {
                    entry.metadata().map_or(0, |metadata| metadata.len())
                }
                _ => 0,
            }
        })
        .sum()
}

/// The value at quantile `q` of an ascending sample (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// The start of a body, for an error message.
fn clip(text: &str) -> String {
    text.chars().take(120).collect()
}

/// The figures as recorded in docs/benchmarks.md.
fn table(lookups: &Lookups, history: &History) -> String {
    let mut rows = vec![
        (
            "lookups: every key once, 2 curls with keep-alive",
            format!(
                "{} GETs, 0 mismatches, {:.0} lookups/s",
                lookups.looked_up,
                lookups.lookups_per_second()
            ),
        ),
        (
            "lookup time_total p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.1} ms",
                lookups.lookup_ms[0], lookups.lookup_ms[1], lookups.lookup_ms[2]
            ),
        ),
        (
            "fill: start to the newest key's 200",
            format!("{:.1} s", lookups.filled.as_secs_f64()),
        ),
        (
            "5 updated and 5 new keys answer their values",
            format!("within {:.2} s", lookups.updates_seen.as_secs_f64()),
        ),
        (
            "`GET /items` (merged, streamed)",
            format!(
                "{} values, {:.0} MiB in {:.1} s; RSS peak during it {:.0} MiB",
                lookups.collection_values,
                mib(lookups.collection_bytes),
                lookups.collection_time.as_secs_f64(),
                mib(lookups.collection_peak)
            ),
        ),
        (
            "gateway RSS: start / peak / peak − start",
            format!(
                "{:.0} / {:.0} / +{:.0} MiB against a {} MiB budget",
                mib(lookups.rss_start),
                mib(lookups.rss_peak),
                mib(lookups.rss_peak.saturating_sub(lookups.rss_start)),
                BUDGET / MIB
            ),
        ),
        (
            "cache segment files (items)",
            format!("{:.0} MiB", mib(lookups.segment_bytes)),
        ),
    ];
    rows.extend([
        (
            "live: produce → SSE `data:` p50 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} ms ({TRIES} subscriptions from start-up)",
                history.live_ms[0], history.live_ms[1], history.live_ms[2]
            ),
        ),
        (
            "live: curl start → response headers, first try / p50 / max of the others",
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                history.headers_ms[0], history.headers_ms[1], history.headers_ms[2]
            ),
        ),
        (
            "history cached when the last live try ended",
            format!(
                "{:.0} of {:.0} MiB of segment files",
                mib(history.segment_bytes_after_tries),
                mib(history.segment_bytes_total)
            ),
        ),
        (
            "history: resumed after the first event (`Last-Event-ID`)",
            format!(
                "{} records, none missing or repeated, in order per partition, in {:.1} s \
                 ({:.0} records/s)",
                history.resumed,
                history.resume_time.as_secs_f64(),
                history.records_per_second()
            ),
        ),
    ]);
    let mut table = String::from("| figure | value |\n|---|---|\n");
    for (figure, value) in rows {
        let _ = writeln!(table, "| {figure} | {value} |");
    }
    let _ = write!(
        table,
        "\n- {} at `{}`, release build, tansu 0.6.0 on SQLite in /dev/shm (maintenance every \
         hour), {PARTITIONS} partitions per topic.\n\
         - Part 1: {} keys of ~1 KB (`{{\"id\",\"tag\",\"v\"}}`, v 960 hex digits of a SHA-256 \
         chain) in a compacted topic, produced in {:.0} s by confluent-kafka (lz4); memory \
         budget {} MiB.\n\
         - Part 2: {} records of ~1 KB in a delete-policy topic, produced in {:.0} s, cached \
         from start-up (`bootstrap`); routes `/live` (`defaultOffset: live`) and `/history` \
         (`defaultOffset: historical`) share one cache server.\n",
        today(),
        commit(),
        lookups.keys,
        lookups.produced.as_secs_f64(),
        BUDGET / MIB,
        history.records,
        history.produced.as_secs_f64(),
    );
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_values_are_the_sha256_chain_of_the_key() {
        let value = item_value(7, "a");
        assert!(value.starts_with("{\"id\":7,\"tag\":\"a\",\"v\":\""));
        assert!(value.ends_with("\"}"));
        let hex = &value["{\"id\":7,\"tag\":\"a\",\"v\":\"".len()..value.len() - 2];
        assert_eq!(hex.len(), 960);
        // sha256("7")
        assert!(
            hex.starts_with("7902699be42c8a8e46fbbb4501726517e86b22c56a189f7625a6da49081b2451")
        );
    }

    #[test]
    fn record_indexes_are_read_and_markers_skipped() {
        assert_eq!(record_index("{\"i\":42,\"v\":\"ab\"}"), Some(42));
        assert_eq!(record_index("{\"marker\":3,\"t\":1.5}"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sample: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sample, 0.5), 50.0);
        assert_eq!(percentile(&sample, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
