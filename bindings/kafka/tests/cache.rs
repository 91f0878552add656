//! The cache against a real broker: one fetch serves many subscribers, compacted replay, and
//! a broker restart that subscribers ride out without gap or duplicate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use support::{Broker, TcpConnector, create_topic, run_python};
use zilla_binding_kafka::cache::{Cache, CacheHandler, CacheTuning};
use zilla_binding_kafka::client::{ClientTuning, KafkaClient};
use zilla_binding_kafka::kind::{
    Condition, Filter, KafkaHandler, MergedItem, MergedRequest, MergedStream, ProduceRequest, Start,
};
use zilla_binding_kafka::wire::{Cluster, ClusterConfig};

fn client(broker: &Broker) -> Result<Arc<KafkaClient>> {
    client_waiting(broker, Duration::from_millis(20))
}

/// A client whose fetches park at the log end for `max_wait`.
fn client_waiting(broker: &Broker, max_wait: Duration) -> Result<Arc<KafkaClient>> {
    let cluster = Cluster::new(
        Arc::new(TcpConnector),
        ClusterConfig {
            bootstrap: vec![broker.address()],
            reconnect_backoff_max: Duration::from_millis(200),
            retry_timeout: Duration::from_secs(60),
            ..ClusterConfig::default()
        },
    )?;
    let tuning = ClientTuning {
        fetch_max_wait: max_wait,
        ..ClientTuning::default()
    };
    Ok(Arc::new(KafkaClient::new(cluster, tuning)))
}

fn cache(client: Arc<KafkaClient>) -> CacheHandler {
    cache_waiting(client, Duration::from_millis(20))
}

fn cache_waiting(client: Arc<KafkaClient>, max_wait: Duration) -> CacheHandler {
    let tuning = CacheTuning {
        fetch_max_wait_ms: max_wait.as_millis() as i32,
        ..CacheTuning::default()
    };
    CacheHandler::new(Arc::new(Cache::new(client, HashMap::new(), tuning)))
}

async fn synced(stream: &mut MergedStream) -> Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .context("no sync")?
        {
            Some(Ok(MergedItem::Synced(_))) => return Ok(()),
            Some(Ok(MergedItem::Message { .. } | MergedItem::Snapshot(_))) => {}
            Some(Err(error)) => return Err(error.into()),
            None => anyhow::bail!("stream ended"),
        }
    }
}

/// The next `count` messages as `(key, value)` text pairs.
async fn take(stream: &mut MergedStream, count: usize) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    while out.len() < count {
        let item = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .with_context(|| format!("only {} of {count} messages", out.len()))?;
        match item {
            Some(Ok(MergedItem::Message { message, .. })) => out.push((
                String::from_utf8_lossy(message.key.as_deref().unwrap_or_default()).into_owned(),
                message
                    .value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
            Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => {}
            Some(Err(error)) => return Err(error.into()),
            None => anyhow::bail!("stream ended"),
        }
    }
    Ok(out)
}

/// Established connections to the broker's port, counted by `ss`.
fn broker_sockets(port: u16) -> Result<usize> {
    let output = std::process::Command::new("ss")
        .args(["-Htn", "state", "established", "dst"])
        .arg(format!("127.0.0.1:{port}"))
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).lines().count())
}

const PRODUCE: &str = r#"
import json, sys
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
for record in json.load(sys.stdin):
    producer.produce(topic, key=record["k"], value=record["v"])
producer.flush(20)
print("[]")
"#;

fn produce_with_python(
    broker: &Broker,
    topic: &str,
    records: &[(&str, Option<&str>)],
) -> Result<()> {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(k, v)| serde_json::json!({"k": k, "v": v}))
        .collect();
    run_python(
        PRODUCE,
        &[&broker.address(), topic],
        &serde_json::to_string(&records)?,
    )?;
    Ok(())
}

/// Produces `k0`=`v0` ... with confluent-kafka; returns them as `take` gives them back.
fn produce_numbered(
    broker: &Broker,
    topic: &str,
    count: usize,
) -> Result<Vec<(String, Option<String>)>> {
    let records: Vec<(String, Option<String>)> = (0..count)
        .map(|i| (format!("k{i}"), Some(format!("v{i}"))))
        .collect();
    let borrowed: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    produce_with_python(broker, topic, &borrowed)?;
    Ok(records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fetch_serves_a_thousand_subscribers() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(client.cluster(), "events", 1, &[]).await?;
    let cache = Arc::new(cache(client));
    let live = |cache: Arc<CacheHandler>| async move {
        cache
            .merged(MergedRequest {
                topic: "events".into(),
                start: Start::Live,
                ..MergedRequest::default()
            })
            .await
    };
    let mut first = live(cache.clone()).await?;
    synced(&mut first).await?;
    // A live subscriber is in sync once the log end is known, which can be before the
    // partition's parked fetch has its connection: a record received proves it has.
    produce_with_python(&broker, "events", &[("warm", Some("up"))])?;
    assert_eq!(
        take(&mut first, 1).await?,
        vec![("warm".to_owned(), Some("up".to_owned()))]
    );
    let with_one = broker_sockets(broker.port())?;
    let mut subscribers = vec![first];
    for _ in 1..1000 {
        let mut stream = live(cache.clone()).await?;
        synced(&mut stream).await?;
        subscribers.push(stream);
    }
    assert_eq!(
        broker_sockets(broker.port())?,
        with_one,
        "sockets grew with subscribers"
    );

    let expected = produce_numbered(&broker, "events", 20)?;
    let mut readers = Vec::new();
    for mut stream in subscribers {
        readers.push(tokio::spawn(async move { take(&mut stream, 20).await }));
    }
    for reader in readers {
        assert_eq!(reader.await??, expected);
    }
    assert_eq!(broker_sockets(broker.port())?, with_one);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_replays_latest_value_per_key_with_deletes() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(
        client.cluster(),
        "items",
        1,
        &[("cleanup.policy", "compact")],
    )
    .await?;
    produce_with_python(
        &broker,
        "items",
        &[
            ("a", Some("a1")),
            ("b", Some("b1")),
            ("a", Some("a2")),
            ("c", Some("c1")),
            ("b", None),
        ],
    )?;
    let cache = cache(client);
    let mut stream = cache
        .merged(MergedRequest {
            topic: "items".into(),
            start: Start::Historical,
            latest_per_key: true,
            ..MergedRequest::default()
        })
        .await?;
    // The replay first names the end it reads to (all five records), so a reader can pass on
    // each record as it comes.
    let first = within("snapshot", stream.next()).await?;
    match first {
        Some(Ok(MergedItem::Snapshot(ends))) => assert_eq!(
            ends.iter()
                .map(|end| (end.partition, end.offset))
                .collect::<Vec<_>>(),
            [(0, 5)]
        ),
        other => anyhow::bail!("a replay began with {other:?}"),
    }
    let mut replay = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await? {
            Some(Ok(MergedItem::Message { message, .. })) => replay.push((
                String::from_utf8_lossy(message.key.as_deref().unwrap_or_default()).into_owned(),
                message.value.clone(),
            )),
            Some(Ok(MergedItem::Synced(_))) => break,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        replay,
        vec![
            ("a".to_owned(), Some(Bytes::from_static(b"a2"))),
            ("c".to_owned(), Some(Bytes::from_static(b"c1"))),
            ("b".to_owned(), None),
        ]
    );
    // An item lookup (one key) starts at the key's latest record: the value, then sync.
    for (key, value) in [("a", Some("a2")), ("b", None), ("c", Some("c1"))] {
        let mut lookup = cache
            .merged(MergedRequest {
                topic: "items".into(),
                start: Start::Historical,
                latest_per_key: true,
                filters: vec![Filter {
                    conditions: vec![Condition::Key(Bytes::from(key))],
                }],
                ..MergedRequest::default()
            })
            .await?;
        assert_eq!(
            first_message(&mut lookup).await?,
            (key.to_owned(), value.map(str::to_owned))
        );
        let after = within("lookup sync", lookup.next()).await?;
        assert!(
            matches!(after, Some(Ok(MergedItem::Synced(_)))),
            "{key}: {after:?}"
        );
    }
    let mut missing = cache
        .merged(MergedRequest {
            topic: "items".into(),
            start: Start::Historical,
            latest_per_key: true,
            filters: vec![Filter {
                conditions: vec![Condition::Key(Bytes::from("zz"))],
            }],
            ..MergedRequest::default()
        })
        .await?;
    assert!(matches!(
        within("missing snapshot", missing.next()).await?,
        Some(Ok(MergedItem::Snapshot(_)))
    ));
    let first = within("missing sync", missing.next()).await?;
    assert!(
        matches!(first, Some(Ok(MergedItem::Synced(_)))),
        "{first:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_ride_out_a_broker_restart_without_gap_or_duplicate() -> Result<()> {
    let mut broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(client.cluster(), "orders", 2, &[]).await?;
    let cache = cache(client.clone());
    let mut stream = cache
        .merged(MergedRequest {
            topic: "orders".into(),
            start: Start::Live,
            ..MergedRequest::default()
        })
        .await?;
    synced(&mut stream).await?;
    let produce = |client: Arc<KafkaClient>, i: usize| async move {
        client
            .produce(ProduceRequest {
                topic: "orders".into(),
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                ..ProduceRequest::default()
            })
            .await
    };
    for i in 0..10 {
        produce(client.clone(), i).await?;
    }
    broker.restart_with(&[])?;
    // Produces during the outage either succeed once the broker is back or fail: retry them.
    for i in 10..20 {
        let mut attempts = 0;
        while let Err(error) = produce(client.clone(), i).await {
            attempts += 1;
            assert!(attempts < 20, "produce {i} kept failing: {error}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut got = take(&mut stream, 20).await?;
    got.sort();
    let mut expected: Vec<(String, Option<String>)> = (0..20)
        .map(|i| (format!("k{i}"), Some(format!("v{i}"))))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    // Nothing more: no duplicate arrives after the twenty.
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(
        !matches!(extra, Ok(Some(Ok(MergedItem::Message { .. })))),
        "duplicate: {extra:?}"
    );
    Ok(())
}

/// Produces records with headers and a null value, compressed with `compression`.
const PRODUCE_COMPRESSED: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic, compression = sys.argv[1], sys.argv[2], sys.argv[3]
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                     "compression.type": compression})
for i in range(50):
    producer.produce(topic, key=f"k{i}", value=None if i == 7 else f"value-{i}-" + "x" * i,
                     headers=[("n", str(i).encode()), ("n", b"again")])
producer.flush(20)
print("[]")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_compressed_by_another_client_are_served_identically() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    // tansu cannot serve snappy batches back; the wire tests cover snappy decoding.
    for compression in ["gzip", "lz4", "zstd"] {
        let topic = format!("compressed-{compression}");
        create_topic(client.cluster(), &topic, 1, &[]).await?;
        run_python(
            PRODUCE_COMPRESSED,
            &[&broker.address(), &topic, compression],
            "",
        )?;
        let cache = cache(client.clone());
        let mut stream = cache
            .merged(MergedRequest {
                topic: topic.clone(),
                start: Start::Historical,
                ..MergedRequest::default()
            })
            .await?;
        let mut seen = 0;
        while seen < 50 {
            let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .with_context(|| format!("{compression}: only {seen} records"))?;
            let Some(Ok(MergedItem::Message { message, .. })) = item else {
                continue;
            };
            let i = seen;
            assert_eq!(message.key.as_deref(), Some(format!("k{i}").as_bytes()));
            let expected = (i != 7).then(|| format!("value-{i}-{}", "x".repeat(i)));
            assert_eq!(
                message.value.as_deref(),
                expected.as_deref().map(str::as_bytes),
                "{compression}"
            );
            let headers: Vec<(&[u8], Option<&[u8]>)> = message
                .headers
                .iter()
                .map(|h| (h.name.as_ref(), h.value.as_deref()))
                .collect();
            assert_eq!(
                headers,
                vec![
                    (&b"n"[..], Some(i.to_string().as_bytes())),
                    (&b"n"[..], Some(&b"again"[..]))
                ]
            );
            seen += 1;
        }
    }
    Ok(())
}

/// `future`, or an error naming `what` after ten seconds.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .with_context(|| format!("{what} did not finish within 10 s"))
}

fn request(topic: &str, start: Start) -> MergedRequest {
    MergedRequest {
        topic: topic.into(),
        start,
        ..MergedRequest::default()
    }
}

fn record(topic: &str, key: &str, value: &str) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        key: Some(Bytes::from(key.to_owned())),
        value: Some(Bytes::from(value.to_owned())),
        ..ProduceRequest::default()
    }
}

/// The first message of `stream` as `(key, value)` text, within ten seconds.
async fn first_message(stream: &mut MergedStream) -> Result<(String, Option<String>)> {
    let mut got = within("first message", async {
        let mut got = Vec::new();
        while got.is_empty() {
            match stream.next().await {
                Some(Ok(MergedItem::Message { message, .. })) => got.push((
                    String::from_utf8_lossy(message.key.as_deref().unwrap_or_default())
                        .into_owned(),
                    message
                        .value
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                )),
                Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => {}
                Some(Err(error)) => return Err(anyhow::Error::from(error)),
                None => anyhow::bail!("stream ended"),
            }
        }
        Ok(got)
    })
    .await??;
    got.pop().context("no message")
}

/// Fetches here park at the log end for 30 s, longer than any wait of the test: produce,
/// offsets, metadata and a newly cached topic's first records must not queue behind them, and
/// every followed partition of the broker shares the same connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_waits_behind_a_parked_fetch() -> Result<()> {
    let broker = Broker::start()?;
    let parked_wait = Duration::from_secs(30);
    let client = client_waiting(&broker, parked_wait)?;
    create_topic(client.cluster(), "parked", 4, &[]).await?;
    create_topic(client.cluster(), "fresh", 1, &[]).await?;
    let cache = cache_waiting(client.clone(), parked_wait);
    let mut parked = within(
        "opening parked",
        cache.merged(request("parked", Start::Live)),
    )
    .await??;
    within("parked sync", synced(&mut parked)).await??;
    // Let the session's fetch reach the broker and park there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sockets = broker_sockets(broker.port())?;

    let started = Instant::now();
    let ack = within("produce", client.produce(record("fresh", "k", "v"))).await??;
    let produced = started.elapsed();
    assert_eq!(ack.offset, Some(0));

    let started = Instant::now();
    let mut fresh = within(
        "opening fresh",
        cache.merged(request("fresh", Start::Historical)),
    )
    .await??;
    let opened = started.elapsed();
    assert_eq!(
        first_message(&mut fresh).await?,
        ("k".into(), Some("v".into()))
    );
    let first = started.elapsed();

    let started = Instant::now();
    let mut again = within(
        "opening fresh again",
        cache.merged(request("fresh", Start::Historical)),
    )
    .await??;
    assert_eq!(
        first_message(&mut again).await?,
        ("k".into(), Some("v".into()))
    );
    let cached = started.elapsed();

    assert_eq!(
        broker_sockets(broker.port())?,
        sockets,
        "a second topic on the same broker opened more connections"
    );
    assert!(sockets <= 3, "{sockets} connections to one broker");
    println!(
        "with fetches parked for {parked_wait:?}: produce {produced:?}, uncached topic open \
         {opened:?} and first record {first:?}, cached topic first record {cached:?}, \
         {sockets} broker connections"
    );
    Ok(())
}

/// With default fetch waits: how long a new reader waits, and whether produce latency grows
/// with the number of cached partitions. Figures are printed; behaviour is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_figures_with_default_fetch_wait() -> Result<()> {
    let broker = Broker::start()?;
    let wait = ClientTuning::default().fetch_max_wait;
    let client = client_waiting(&broker, wait)?;
    create_topic(client.cluster(), "one", 1, &[]).await?;
    create_topic(client.cluster(), "many", 200, &[]).await?;
    create_topic(client.cluster(), "target", 1, &[]).await?;
    client.produce(record("one", "k", "v")).await?;
    let cache = cache_waiting(client.clone(), wait);

    let started = Instant::now();
    let mut first = within("opening", cache.merged(request("one", Start::Historical))).await??;
    let opened = started.elapsed();
    assert_eq!(
        first_message(&mut first).await?,
        ("k".into(), Some("v".into()))
    );
    let uncached = started.elapsed();
    let started = Instant::now();
    let mut second = within("opening", cache.merged(request("one", Start::Historical))).await??;
    assert_eq!(
        first_message(&mut second).await?,
        ("k".into(), Some("v".into()))
    );
    let cached = started.elapsed();

    let p99 = |client: Arc<KafkaClient>| async move {
        let mut times = Vec::new();
        for i in 0..200 {
            let started = Instant::now();
            client
                .produce(record("target", &format!("k{i}"), "v"))
                .await?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok::<_, anyhow::Error>(times[times.len() * 99 / 100 - 1])
    };
    let with_one = p99(client.clone()).await?;
    let mut many = within("opening many", cache.merged(request("many", Start::Live))).await??;
    within("many sync", synced(&mut many)).await??;
    tokio::time::sleep(wait).await;
    let with_many = p99(client.clone()).await?;
    println!(
        "fetch max wait {wait:?}: uncached topic open {opened:?}, first record {uncached:?}; \
         cached topic first record {cached:?}; produce p99 with 1 cached partition \
         {with_one:?}, with 201 {with_many:?}"
    );
    Ok(())
}

/// A cache that keeps almost nothing: a reader starting at the beginning is served from
/// Kafka (read-through) for what the cache dropped, in order, with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_behind_the_cache_read_through_from_kafka() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(client.cluster(), "deep", 1, &[]).await?;
    let expected = produce_numbered(&broker, "deep", 200)?;
    let tuning = CacheTuning {
        fetch_max_wait_ms: 20,
        partition_bytes: 1,
        ..CacheTuning::default()
    };
    let cache = CacheHandler::new(Arc::new(Cache::new(client, HashMap::new(), tuning)));
    // The first reader makes the cache fetch everything, keeping only the last record.
    let mut first = cache.merged(request("deep", Start::Historical)).await?;
    assert_eq!(take(&mut first, 200).await?, expected);
    let mut second = cache.merged(request("deep", Start::Historical)).await?;
    assert_eq!(take(&mut second, 200).await?, expected);
    let extra = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match second.next().await {
                Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(extra.is_err(), "more than the 200 records: {extra:?}");
    Ok(())
}

/// The history is fetched one small batch at a time (fetch bytes of 1): a live subscriber that
/// arrives meanwhile gets the next produced record from a fetch of the partition's end, and a
/// historical one still gets every record once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_readers_do_not_wait_for_the_history() -> Result<()> {
    let broker = Broker::start()?;
    let client = client_waiting(&broker, Duration::from_millis(100))?;
    create_topic(client.cluster(), "long", 1, &[]).await?;
    let history = 400;
    for i in 0..history {
        // One record per batch: each of the cache's fetches brings one.
        client
            .produce(record("long", &format!("k{i}"), &format!("v{i}")))
            .await?;
    }
    let tuning = CacheTuning {
        fetch_max_wait_ms: 100,
        fetch_max_bytes: 1,
        ..CacheTuning::default()
    };
    let cache = CacheHandler::new(Arc::new(Cache::new(client.clone(), HashMap::new(), tuning)));
    let mut historical = cache.merged(request("long", Start::Historical)).await?;
    let mut live = within("opening live", cache.merged(request("long", Start::Live))).await??;
    let started = Instant::now();
    client.produce(record("long", "live", "now")).await?;
    assert_eq!(
        first_message(&mut live).await?,
        ("live".into(), Some("now".into()))
    );
    let live_after = started.elapsed();
    let mut expected: Vec<(String, Option<String>)> = (0..history)
        .map(|i| (format!("k{i}"), Some(format!("v{i}"))))
        .collect();
    expected.push(("live".into(), Some("now".into())));
    let started = Instant::now();
    assert_eq!(take(&mut historical, history + 1).await?, expected);
    println!(
        "live record after {live_after:?} while {history} one-record batches of history were \
         being fetched; history complete {:?} later",
        started.elapsed()
    );
    Ok(())
}

/// A topic nobody reads any more is evicted (its fetches stop); a `bootstrap` topic stays, and
/// an evicted topic read again is cached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_topics_are_evicted_and_bootstrap_topics_stay() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(client.cluster(), "passing", 1, &[]).await?;
    create_topic(client.cluster(), "pinned", 1, &[]).await?;
    let tuning = CacheTuning {
        fetch_max_wait_ms: 20,
        ..CacheTuning::default()
    };
    let cache = Arc::new(Cache::new(client.clone(), HashMap::new(), tuning));
    within("bootstrap", cache.bootstrap("pinned")).await??;
    let handler = CacheHandler::new(cache.clone());
    let mut reader = handler.merged(request("passing", Start::Live)).await?;
    within("sync", synced(&mut reader)).await??;
    assert_eq!(cache.cached_topics(), ["passing", "pinned"]);
    assert!(
        cache.evict_idle(Duration::ZERO).is_empty(),
        "evicted while read"
    );
    drop(reader);
    assert_eq!(cache.evict_idle(Duration::ZERO), ["passing"]);
    assert_eq!(cache.cached_topics(), ["pinned"]);

    client.produce(record("passing", "k", "v")).await?;
    let mut again = handler
        .merged(request("passing", Start::Historical))
        .await?;
    assert_eq!(
        first_message(&mut again).await?,
        ("k".into(), Some("v".into()))
    );
    assert_eq!(cache.cached_topics(), ["passing", "pinned"]);
    Ok(())
}

/// Produces `count` records `k<i>` = `v<i>` with a `tenant: t<i % 10>` header, and
/// `flag: on` on every seventh.
const PRODUCE_WITH_HEADERS: &str = r#"
import sys
from confluent_kafka import Producer
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
for i in range(count):
    headers = [("tenant", b"t%d" % (i % 10))]
    if i % 7 == 0:
        headers.append(("flag", b"on"))
    producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, headers=headers)
    if i % 1000 == 0:
        producer.poll(0)
producer.flush(60)
print("[]")
"#;

/// Header and key filters are answered through the cache's record index: a reader gets
/// exactly the records that pass, in order, from a cache that holds everything and from one
/// that keeps almost nothing (then read through from Kafka).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_filters_get_exactly_the_matching_records() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(client.cluster(), "tenants", 1, &[]).await?;
    let count = 3000;
    run_python(
        PRODUCE_WITH_HEADERS,
        &[&broker.address(), "tenants", &count.to_string()],
        "",
    )?;
    let header = |name: &'static str, value: &'static str| Condition::Header {
        name: Bytes::from_static(name.as_bytes()),
        value: Bytes::from_static(value.as_bytes()),
    };
    let filters = vec![
        Filter {
            conditions: vec![header("tenant", "t3")],
        },
        Filter {
            conditions: vec![header("flag", "on"), header("tenant", "t5")],
        },
        Filter {
            conditions: vec![Condition::Key(Bytes::from_static(b"k42"))],
        },
    ];
    let expected: Vec<(String, Option<String>)> = (0..count)
        .filter(|i| i % 10 == 3 || (i % 7 == 0 && i % 10 == 5) || *i == 42)
        .map(|i| (format!("k{i}"), Some(format!("v{i}"))))
        .collect();
    let filtered = MergedRequest {
        filters: filters.clone(),
        ..request("tenants", Start::Historical)
    };
    for partition_bytes in [64 * 1024 * 1024, 1] {
        let tuning = CacheTuning {
            fetch_max_wait_ms: 20,
            partition_bytes,
            ..CacheTuning::default()
        };
        let cache = CacheHandler::new(Arc::new(Cache::new(client.clone(), HashMap::new(), tuning)));
        // The first reader makes the cache fetch the whole topic.
        let mut all = cache.merged(request("tenants", Start::Historical)).await?;
        assert_eq!(take(&mut all, count).await?.len(), count);
        let mut reader = cache.merged(filtered.clone()).await?;
        assert_eq!(
            take(&mut reader, expected.len()).await?,
            expected,
            "partition bytes {partition_bytes}"
        );
        let extra = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match reader.next().await {
                    Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => continue,
                    other => return other,
                }
            }
        })
        .await;
        assert!(extra.is_err(), "a record that does not pass: {extra:?}");
    }
    Ok(())
}

/// Every message and the partitions of the last progress, until the read is synced.
async fn until_synced(stream: &mut MergedStream) -> Result<(Vec<(i32, String)>, Vec<i32>)> {
    let mut messages = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .context("no sync")?
        {
            Some(Ok(MergedItem::Message { message, .. })) => messages.push((
                message.partition,
                String::from_utf8_lossy(message.value.as_deref().unwrap_or_default()).into_owned(),
            )),
            Some(Ok(MergedItem::Snapshot(_))) => {}
            Some(Ok(MergedItem::Synced(progress))) => {
                return Ok((messages, progress.iter().map(|p| p.partition).collect()));
            }
            Some(Err(error)) => return Err(error.into()),
            None => anyhow::bail!("stream ended"),
        }
    }
}

/// A consumer group member reads only the partitions assigned to it: a merged read naming
/// partitions neither yields nor tracks the others, from the client and from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_chosen_partitions_reads_only_those() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(client.cluster(), "requests", 3, &[]).await?;
    for partition in 0..3 {
        for i in 0..4 {
            client
                .produce(ProduceRequest {
                    topic: "requests".into(),
                    partition: Some(partition),
                    value: Some(Bytes::from(format!("p{partition}-{i}"))),
                    ..ProduceRequest::default()
                })
                .await?;
        }
    }
    let chosen = MergedRequest {
        topic: "requests".into(),
        start: Start::Historical,
        partitions: vec![0, 2],
        ..MergedRequest::default()
    };
    let cache = cache(client.clone());
    let handlers: [(&str, &dyn KafkaHandler); 2] = [("client", client.as_ref()), ("cache", &cache)];
    for (name, handler) in handlers {
        let mut stream = handler.merged(chosen.clone()).await?;
        let (mut messages, progress) = until_synced(&mut stream).await?;
        messages.sort();
        let expected: Vec<(i32, String)> = [0, 2]
            .into_iter()
            .flat_map(|p| (0..4).map(move |i| (p, format!("p{p}-{i}"))))
            .collect();
        assert_eq!(messages, expected, "{name}");
        assert_eq!(progress, vec![0, 2], "{name}");
    }
    Ok(())
}

/// A compacted topic whose records come without keys: with `extract-key` the cache keys them
/// by a field of their JSON value, so an item lookup finds the latest record of an id, and
/// `extract-headers` makes another field a header that filters match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_key_and_label_keyless_json_records_as_they_enter_the_cache() -> Result<()> {
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(
        client.cluster(),
        "items",
        1,
        &[("cleanup.policy", "compact")],
    )
    .await?;
    for value in [
        r#"{"id":"a","v":1}"#,
        r#"{"id":"b","v":1}"#,
        r#"{"id":"a","v":2}"#,
        "not json",
    ] {
        client
            .produce(ProduceRequest {
                topic: "items".into(),
                value: Some(Bytes::from(value)),
                ..ProduceRequest::default()
            })
            .await?;
    }
    let options: zilla_binding_kafka::config::KafkaOptions =
        serde_json::from_value(serde_json::json!({
            "topics": [{
                "name": "items",
                "transforms": [
                    {"extract-key": "${message.value.id}"},
                    {"extract-headers": {"version": "${message.value.v}"}}
                ]
            }]
        }))?;
    let transforms = zilla_binding_kafka::transforms::build(&options)
        .map_err(|(path, message)| anyhow::anyhow!("{path}: {message}"))?;
    let cache = CacheHandler::new(Arc::new(
        Cache::new(
            client.clone(),
            HashMap::new(),
            CacheTuning {
                fetch_max_wait_ms: 20,
                ..CacheTuning::default()
            },
        )
        .transforming(transforms),
    ));

    // The latest record of `a`, found by its extracted key.
    let mut lookup = cache
        .merged(MergedRequest {
            topic: "items".into(),
            start: Start::Historical,
            latest_per_key: true,
            filters: vec![Filter {
                conditions: vec![Condition::Key(Bytes::from_static(b"a"))],
            }],
            ..MergedRequest::default()
        })
        .await?;
    let found = take(&mut lookup, 1).await?;
    assert_eq!(
        found,
        vec![("a".to_owned(), Some(r#"{"id":"a","v":2}"#.to_owned()))]
    );

    // Every record with `version: 1` (an extracted header), and the one that is not JSON left
    // without a key.
    let mut all = cache
        .merged(MergedRequest {
            topic: "items".into(),
            start: Start::Historical,
            ..MergedRequest::default()
        })
        .await?;
    let mut records = Vec::new();
    while records.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(20), all.next())
            .await
            .context("records")?
        {
            Some(Ok(MergedItem::Message { message, .. })) => records.push(message),
            Some(Ok(MergedItem::Synced(_) | MergedItem::Snapshot(_))) => {}
            Some(Err(error)) => return Err(error.into()),
            None => anyhow::bail!("stream ended"),
        }
    }
    let versions: Vec<(Option<Bytes>, Option<Bytes>)> = records
        .iter()
        .map(|message| (message.key.clone(), message.header(b"version").cloned()))
        .collect();
    assert_eq!(
        versions,
        vec![
            (
                Some(Bytes::from_static(b"a")),
                Some(Bytes::from_static(b"1"))
            ),
            (
                Some(Bytes::from_static(b"b")),
                Some(Bytes::from_static(b"1"))
            ),
            (
                Some(Bytes::from_static(b"a")),
                Some(Bytes::from_static(b"2"))
            ),
            (None, None),
        ]
    );
    Ok(())
}

/// Every message of a latest-per-key replay of `topic` (or of one `key`) up to its sync.
async fn replay(
    cache: &CacheHandler,
    topic: &str,
    key: Option<&str>,
) -> Result<Vec<(String, Option<String>)>> {
    let filters = key
        .map(|key| Filter {
            conditions: vec![Condition::Key(Bytes::from(key.to_owned()))],
        })
        .into_iter()
        .collect();
    let mut stream = cache
        .merged(MergedRequest {
            topic: topic.into(),
            start: Start::Historical,
            latest_per_key: true,
            filters,
            ..MergedRequest::default()
        })
        .await?;
    let mut got = Vec::new();
    loop {
        match within("replay", stream.next()).await? {
            Some(Ok(MergedItem::Message { message, .. })) => got.push((
                String::from_utf8_lossy(message.key.as_deref().unwrap_or_default()).into_owned(),
                message
                    .value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
            Some(Ok(MergedItem::Snapshot(_))) => {}
            Some(Ok(MergedItem::Synced(_))) => return Ok(got),
            Some(Err(error)) => return Err(error.into()),
            None => anyhow::bail!("stream ended"),
        }
    }
}

/// The broker returns `retention.bytes` and `delete.retention.ms` set on a topic through
/// DescribeConfigs, and the cache removes a tombstone once it is older than
/// `delete.retention.ms`, with nothing new fetched meanwhile: from replays, and from item
/// lookups of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_leave_the_cache_after_delete_retention() -> Result<()> {
    const DELETE_RETENTION_MS: u64 = 10_000;
    let broker = Broker::start()?;
    let client = client(&broker)?;
    create_topic(
        client.cluster(),
        "bounded",
        1,
        &[("cleanup.policy", "delete"), ("retention.bytes", "65536")],
    )
    .await?;
    let bounded = client.describe("bounded").await?;
    assert!(bounded.deleting);
    assert_eq!(bounded.retention_bytes, 65_536);
    let retention = DELETE_RETENTION_MS.to_string();
    create_topic(
        client.cluster(),
        "expiring",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", &retention),
        ],
    )
    .await?;
    let expiring = client.describe("expiring").await?;
    assert!(expiring.compacted);
    assert_eq!(expiring.delete_retention_ms, DELETE_RETENTION_MS as i64);
    assert_eq!(expiring.retention_bytes, -1, "Kafka's default");

    let produced = Instant::now();
    produce_with_python(
        &broker,
        "expiring",
        &[("a", Some("a1")), ("b", Some("b1")), ("a", None)],
    )?;
    let cache = cache(client);
    let young = replay(&cache, "expiring", None).await?;
    anyhow::ensure!(
        produced.elapsed() < Duration::from_millis(DELETE_RETENTION_MS),
        "the first replay came too late to see the tombstone young"
    );
    assert_eq!(
        young,
        [
            ("b".to_owned(), Some("b1".to_owned())),
            ("a".to_owned(), None)
        ]
    );
    assert_eq!(
        replay(&cache, "expiring", Some("a")).await?,
        [("a".to_owned(), None)]
    );

    tokio::time::sleep(
        Duration::from_millis(DELETE_RETENTION_MS).saturating_sub(produced.elapsed()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replayed = replay(&cache, "expiring", None).await?;
        if replayed.len() == 1 {
            assert_eq!(replayed, [("b".to_owned(), Some("b1".to_owned()))]);
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the tombstone is still replayed: {replayed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        replay(&cache, "expiring", Some("a")).await?,
        [],
        "the key is not found"
    );
    Ok(())
}
