//! The cache against a real broker: one fetch serves many subscribers, compacted replay, and
//! a broker restart that subscribers ride out without gap or duplicate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use support::{Broker, TcpConnector, create_topic, run_python};
use zilla_binding_kafka::cache::{Cache, CacheHandler, CacheTuning};
use zilla_binding_kafka::client::{ClientTuning, KafkaClient};
use zilla_binding_kafka::kind::{
    KafkaHandler, MergedItem, MergedRequest, MergedStream, ProduceRequest, Start,
};
use zilla_binding_kafka::wire::{Cluster, ClusterConfig};

fn client(broker: &Broker) -> Result<Arc<KafkaClient>> {
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
        fetch_max_wait: Duration::from_millis(20),
        ..ClientTuning::default()
    };
    Ok(Arc::new(KafkaClient::new(cluster, tuning)))
}

fn cache(client: Arc<KafkaClient>) -> CacheHandler {
    let tuning = CacheTuning {
        fetch_max_wait_ms: 20,
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
            Some(Ok(MergedItem::Message { .. })) => {}
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
            Some(Ok(MergedItem::Synced(_))) => {}
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

    let records: Vec<(String, String)> = (0..20)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let borrowed: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())))
        .collect();
    produce_with_python(&broker, "events", &borrowed)?;
    let expected: Vec<(String, Option<String>)> =
        records.into_iter().map(|(k, v)| (k, Some(v))).collect();
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
