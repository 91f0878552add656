//! The Kafka client against a real broker (tansu) and an independent client (Python
//! confluent-kafka, librdkafka).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde_json::{Value, json};
use support::{Broker, BrokerCluster, TcpConnector, create_topic, run_python};
use zilla_binding_kafka::wire::*;

/// Reads every record of a topic from offset 0 of each partition (assigned, no group) and
/// prints them as JSON.
const CONSUME: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 20})
partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
out, deadline = [], time.time() + 20
while len(out) < count and time.time() < deadline:
    m = consumer.poll(0.2)
    if m is None:
        continue
    if m.error():
        raise Exception(str(m.error()))
    out.append({"p": m.partition(), "o": m.offset(), "t": m.timestamp()[1],
                "k": None if m.key() is None else m.key().hex(),
                "v": None if m.value() is None else m.value().hex(),
                "h": [[n, None if v is None else v.hex()] for n, v in (m.headers() or [])]})
consumer.close()
print(json.dumps(out))
"#;

/// Produces the records given on stdin (hex keys, values, headers; optional partition) with
/// the given compression and the murmur2 partitioner; prints where each landed.
const PRODUCE: &str = r#"
import json, sys
from confluent_kafka import Producer
bootstrap, topic, compression = sys.argv[1], sys.argv[2], sys.argv[3]
records = json.load(sys.stdin)
producer = Producer({"bootstrap.servers": bootstrap, "compression.type": compression,
                     "partitioner": "murmur2_random", "linger.ms": 20, "acks": "all"})
landed = [None] * len(records)
def delivered(index):
    def report(err, msg):
        if err is not None:
            raise Exception(str(err))
        landed[index] = {"p": msg.partition(), "o": msg.offset()}
    return report
for i, r in enumerate(records):
    kwargs = {}
    if r.get("p") is not None:
        kwargs["partition"] = r["p"]
    producer.produce(topic,
                     key=None if r["k"] is None else bytes.fromhex(r["k"]),
                     value=None if r["v"] is None else bytes.fromhex(r["v"]),
                     headers=[(n, None if v is None else bytes.fromhex(v)) for n, v in r["h"]],
                     on_delivery=delivered(i), **kwargs)
producer.flush(20)
print(json.dumps(landed))
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn opt_hex(bytes: &Option<Bytes>) -> Value {
    bytes.as_ref().map_or(Value::Null, |b| Value::from(hex(b)))
}

fn headers_json(headers: &[Header]) -> Value {
    headers
        .iter()
        .map(|h| json!([String::from_utf8_lossy(&h.name), opt_hex(&h.value)]))
        .collect()
}

/// Records exercising keys, null keys, tombstones, repeated and null headers, binary data.
fn sample_records(tag: &str) -> Vec<Record> {
    let now = 1_700_000_000_000;
    (0..12)
        .map(|i| Record {
            timestamp: now + i,
            key: (i % 4 != 3).then(|| Bytes::from(format!("key-{tag}-{i}"))),
            value: (i % 5 != 4)
                .then(|| Bytes::from(format!("value {i} {}", "x".repeat(i as usize * 10)))),
            headers: match i % 3 {
                0 => vec![],
                1 => vec![
                    Header::new("h", "one"),
                    Header::new("h", "two"),
                    Header::new("g", vec![0u8, 255]),
                ],
                _ => vec![Header {
                    name: Bytes::from_static(b"null"),
                    value: None,
                }],
            },
        })
        .collect()
}

async fn fetch_all(
    cluster: &Cluster,
    topic: &str,
    partitions: &[i32],
    expected: usize,
) -> Result<Vec<(i32, FetchedRecord)>> {
    let options = FetchOptions {
        max_wait: Duration::from_millis(20),
        ..FetchOptions::default()
    };
    let mut offsets: Vec<FetchPartition> = partitions
        .iter()
        .map(|&partition| FetchPartition {
            partition,
            offset: 0,
        })
        .collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < expected && Instant::now() < deadline {
        for fetched in cluster.fetch(topic, &offsets, &options).await? {
            assert!(fetched.error.is_ok(), "{}", fetched.error);
            let slot = offsets
                .iter_mut()
                .find(|p| p.partition == fetched.partition)
                .unwrap();
            slot.offset = fetched.next_offset;
            out.extend(fetched.records.into_iter().map(|r| (fetched.partition, r)));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn connection_negotiates_versions_with_the_broker() -> Result<()> {
    let broker = Broker::start()?;
    let connection = Connection::open(
        &TcpConnector,
        "127.0.0.1",
        broker.port(),
        &ConnectionConfig::default(),
    )
    .await?;
    let versions = connection.api_versions().unwrap();
    // tansu 0.6 advertises Produce v0-11, Fetch v0-17, Metadata v0-12, InitProducerId v0-5.
    assert_eq!(versions.broker_range(0), Some((0, 11)));
    assert_eq!(connection.version(ApiKey::Produce)?, 11);
    assert_eq!(connection.version(ApiKey::Fetch)?, 17);
    assert_eq!(connection.version(ApiKey::Metadata)?, 12);
    assert!(connection.version(ApiKey::InitProducerId)? >= 3);
    for api in ApiKey::ALL {
        assert!(connection.version(api).is_ok(), "{api} not negotiated");
    }

    // Many requests in flight on one connection, each answered to its caller.
    let calls = (0..50).map(|_| {
        let connection = connection.clone();
        async move { connection.call(&MetadataRequest::default()).await }
    });
    for metadata in futures_util::future::join_all(calls).await {
        assert_eq!(metadata?.brokers[0].port, broker.port());
    }
    Ok(())
}

#[tokio::test]
async fn metadata_reports_brokers_and_routes_to_partition_leaders() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "routed", 3, &[]).await?;

    let metadata = cluster.metadata(Some(&["routed"])).await?;
    assert_eq!(metadata.brokers.len(), 1);
    assert_eq!(metadata.brokers[0].host, "127.0.0.1");
    assert_eq!(metadata.brokers[0].port, broker.port());
    let topic = &metadata.topics[0];
    assert_eq!(topic.name, "routed");
    assert!(!topic.id.is_zero());
    let mut partitions: Vec<_> = topic.partitions.iter().map(|p| p.partition).collect();
    partitions.sort();
    assert_eq!(partitions, [0, 1, 2]);
    assert!(
        topic
            .partitions
            .iter()
            .all(|p| p.leader == metadata.brokers[0].node_id)
    );

    for partition in 0..3 {
        let record = Record {
            timestamp: 1,
            key: None,
            value: Some(Bytes::from(format!("to {partition}"))),
            headers: vec![],
        };
        let offset = cluster
            .produce("routed", partition, &[record], &ProduceOptions::default())
            .await?;
        assert_eq!(offset, Some(0));
    }
    let fetched = fetch_all(&cluster, "routed", &[0, 1, 2], 3).await?;
    for (partition, record) in fetched {
        assert_eq!(record.value, Some(Bytes::from(format!("to {partition}"))));
    }

    let unknown = cluster.topic("missing").await.unwrap_err();
    assert!(matches!(unknown, KafkaError::UnknownTopic(_)), "{unknown}");
    Ok(())
}

#[tokio::test]
async fn produced_records_are_read_back_by_confluent_kafka() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    // tansu 0.6 cannot serve snappy batches (its fetch fails with UnexpectedType("Snappy")),
    // so snappy is checked against librdkafka's encoder in the tapped test below.
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("ours-{compression}");
        create_topic(&cluster, &topic, 3, &[]).await?;
        let records = sample_records(&compression.to_string());
        // Keyed records go where murmur2 puts them; unkeyed ones rotate.
        let mut expected = Vec::new();
        let mut by_partition: std::collections::BTreeMap<i32, Vec<Record>> = Default::default();
        for record in &records {
            let partition = cluster.partition_for(&topic, record.key.as_deref()).await?;
            by_partition
                .entry(partition)
                .or_default()
                .push(record.clone());
        }
        for (partition, batch) in &by_partition {
            let options = ProduceOptions {
                compression,
                ..ProduceOptions::default()
            };
            let base = cluster
                .produce(&topic, *partition, batch, &options)
                .await?
                .unwrap();
            for (i, record) in batch.iter().enumerate() {
                expected.push(json!({
                    "p": partition, "o": base + i as i64, "t": record.timestamp,
                    "k": opt_hex(&record.key), "v": opt_hex(&record.value),
                    "h": headers_json(&record.headers),
                }));
            }
        }
        let mut read = run_python(
            CONSUME,
            &[&broker.address(), &topic, &records.len().to_string()],
            "",
        )?
        .as_array()
        .cloned()
        .unwrap_or_default();
        let key = |v: &Value| (v["p"].as_i64(), v["o"].as_i64());
        read.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(read, expected, "{compression}");
    }
    Ok(())
}

#[tokio::test]
async fn murmur2_partitions_match_librdkafka() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "keys", 7, &[]).await?;
    let keys: Vec<String> = (0..40)
        .map(|i| format!("customer-{i}-{}", "k".repeat(i % 9)))
        .collect();
    let input: Vec<Value> = keys
        .iter()
        .map(|k| json!({"k": hex(k.as_bytes()), "v": "00", "h": []}))
        .collect();
    let landed = run_python(
        PRODUCE,
        &[&broker.address(), "keys", "none"],
        &serde_json::to_string(&input)?,
    )?;
    for (key, landed) in keys.iter().zip(landed.as_array().unwrap()) {
        let theirs = landed["p"].as_i64().unwrap();
        let ours = partition_for_key(key.as_bytes(), 7).unwrap();
        assert_eq!(i64::from(ours), theirs, "key {key}");
        assert_eq!(
            i64::from(cluster.partition_for("keys", Some(key.as_bytes())).await?),
            theirs
        );
    }
    Ok(())
}

#[tokio::test]
async fn records_produced_by_confluent_kafka_are_fetched_identically() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    for compression in ["none", "gzip", "lz4", "zstd"] {
        let topic = format!("theirs-{compression}");
        create_topic(&cluster, &topic, 2, &[]).await?;
        let records = sample_records(compression);
        let input: Vec<Value> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({"k": opt_hex(&r.key), "v": opt_hex(&r.value),
                       "h": headers_json(&r.headers), "p": i % 2})
            })
            .collect();
        let landed = run_python(
            PRODUCE,
            &[&broker.address(), &topic, compression],
            &serde_json::to_string(&input)?,
        )?;
        let fetched = fetch_all(&cluster, &topic, &[0, 1], records.len()).await?;
        assert_eq!(fetched.len(), records.len(), "{compression}");
        for ((record, landed), sent) in records.iter().zip(landed.as_array().unwrap()).zip(&input) {
            let (partition, offset) =
                (landed["p"].as_i64().unwrap(), landed["o"].as_i64().unwrap());
            let (_, got) = fetched
                .iter()
                .find(|(p, r)| i64::from(*p) == partition && r.offset == offset)
                .unwrap_or_else(|| panic!("{compression}: {partition}/{offset} not fetched"));
            assert_eq!(got.key, record.key, "{compression}");
            assert_eq!(got.value, record.value, "{compression}");
            assert_eq!(headers_json(&got.headers), sent["h"], "{compression}");
        }
    }
    Ok(())
}

/// Every complete, CRC-valid record batch found anywhere in `bytes`.
fn batches_in(bytes: &[u8]) -> Vec<RecordBatch> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + BATCH_HEADER_SIZE <= bytes.len() {
        if bytes[at + 16] == 2 {
            let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            let end = at + 12 + length.max(0) as usize;
            if length > 0 && end <= bytes.len() {
                let candidate = Bytes::copy_from_slice(&bytes[at..end]);
                if let Ok(batch) = decode_batch(candidate, &DecodeLimits::default()) {
                    found.push(batch);
                    at = end;
                    continue;
                }
            }
        }
        at += 1;
    }
    found
}

#[tokio::test]
async fn snappy_batches_written_by_librdkafka_decode_identically() -> Result<()> {
    // tansu stores snappy batches but cannot fetch them, so the batches are taken from the
    // produce requests librdkafka sends, through a recording forwarder.
    let (broker, tap) = support::start_tapped().await?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "theirs-snappy", 1, &[]).await?;
    let records = sample_records("snappy");
    let input: Vec<Value> = records
        .iter()
        .map(|r| json!({"k": opt_hex(&r.key), "v": opt_hex(&r.value), "h": headers_json(&r.headers), "p": 0}))
        .collect();
    let python = tokio::task::spawn_blocking(move || {
        run_python(
            PRODUCE,
            &[&tap.address(), "theirs-snappy", "snappy"],
            &serde_json::to_string(&input).unwrap(),
        )
        .map(|landed| (landed, tap))
    });
    let (landed, tap) = python.await??;
    assert_eq!(landed.as_array().unwrap().len(), records.len());

    let batches: Vec<RecordBatch> = tap.captured().iter().flat_map(|c| batches_in(c)).collect();
    assert!(!batches.is_empty(), "no record batch captured");
    let decoded: Vec<FetchedRecord> = batches
        .into_iter()
        .inspect(|batch| assert_eq!(batch.compression, Compression::Snappy))
        .flat_map(|batch| batch.records)
        .collect();
    assert_eq!(decoded.len(), records.len());
    for (got, sent) in decoded.iter().zip(&records) {
        assert_eq!(got.key, sent.key);
        assert_eq!(got.value, sent.value);
        assert_eq!(got.headers, sent.headers);
    }
    Ok(())
}

#[tokio::test]
async fn list_offsets_finds_earliest_and_latest() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "offsets", 1, &[]).await?;
    let earliest = cluster
        .list_offsets(
            "offsets",
            0,
            OffsetSpec::Earliest,
            Isolation::ReadUncommitted,
        )
        .await?;
    let latest = cluster
        .list_offsets("offsets", 0, OffsetSpec::Latest, Isolation::ReadUncommitted)
        .await?;
    assert_eq!((earliest.offset, latest.offset), (0, 0));

    let records = sample_records("offsets");
    cluster
        .produce("offsets", 0, &records, &ProduceOptions::default())
        .await?;
    let latest = cluster
        .list_offsets("offsets", 0, OffsetSpec::Latest, Isolation::ReadUncommitted)
        .await?;
    assert_eq!(latest.offset, records.len() as i64);
    let earliest = cluster
        .list_offsets(
            "offsets",
            0,
            OffsetSpec::Earliest,
            Isolation::ReadUncommitted,
        )
        .await?;
    assert_eq!(earliest.offset, 0);

    let negative = cluster
        .list_offsets(
            "offsets",
            0,
            OffsetSpec::Timestamp(-3),
            Isolation::ReadUncommitted,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(negative, KafkaError::InvalidArgument(_)),
        "{negative}"
    );
    // The connection is still fine: nothing was sent.
    cluster
        .list_offsets("offsets", 0, OffsetSpec::Latest, Isolation::ReadCommitted)
        .await?;
    Ok(())
}

/// The requests of each connection's captured bytes, by API key.
fn requests_with_api(captured: &[Vec<u8>], api: i16) -> usize {
    let mut count = 0;
    for mut bytes in captured.iter().map(Vec::as_slice) {
        while bytes.len() >= 6 {
            let size = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if i16::from_be_bytes([bytes[4], bytes[5]]) == api {
                count += 1;
            }
            bytes = &bytes[(4 + size).min(bytes.len())..];
        }
    }
    count
}

/// Offsets of every partition of a topic asked for at once (as a reader starting on all of
/// them does) go to the broker as one ListOffsets request, and each answer is the one a
/// request of its own gets.
#[tokio::test]
async fn offsets_asked_for_together_go_in_one_request() -> Result<()> {
    let (_broker, tap) = support::start_tapped().await?;
    let config = ClusterConfig {
        bootstrap: vec![tap.address()],
        retry_timeout: Duration::from_secs(10),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::new(std::sync::Arc::new(TcpConnector), config)?;
    create_topic(&cluster, "together", 16, &[]).await?;
    for partition in [0, 5, 9] {
        let records = sample_records("together");
        cluster
            .produce(
                "together",
                partition,
                &records[..partition as usize % 3 + 1],
                &ProduceOptions::default(),
            )
            .await?;
    }
    cluster.topic("together").await?;
    // The tap records what it forwarded once the broker has it: let it catch up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = requests_with_api(&tap.captured(), 2);
    let asked = (0..16).chain([5]);
    let together = futures_util::future::try_join_all(asked.map(|partition| {
        cluster.list_offsets(
            "together",
            partition,
            OffsetSpec::Latest,
            Isolation::ReadUncommitted,
        )
    }))
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let requests = requests_with_api(&tap.captured(), 2) - before;
    assert_eq!(
        requests, 1,
        "ListOffsets requests for 16 partitions asked at once"
    );
    assert_eq!(together[16], together[5], "the partition asked twice");
    for (partition, listed) in together.iter().take(16).enumerate() {
        assert_eq!(listed.partition, partition as i32);
        let alone = cluster
            .list_offsets(
                "together",
                partition as i32,
                OffsetSpec::Latest,
                Isolation::ReadUncommitted,
            )
            .await?;
        assert_eq!(listed.offset, alone.offset, "partition {partition}");
    }
    let produced: Vec<i64> = together.iter().map(|listed| listed.offset).collect();
    assert_eq!(&produced[..10], &[1, 0, 0, 0, 0, 3, 0, 0, 0, 1]);
    Ok(())
}

#[tokio::test]
async fn describe_configs_fills_in_kafka_defaults() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "compacted", 1, &[("cleanup.policy", "compact")]).await?;
    let configs = cluster.describe_configs("compacted").await?;
    assert_eq!(configs["cleanup.policy"].value.as_deref(), Some("compact"));
    assert_ne!(configs["cleanup.policy"].source, ConfigSource::KafkaDefault);
    assert_eq!(configs["retention.ms"].value.as_deref(), Some("604800000"));
    assert_eq!(
        configs["max.message.bytes"].value.as_deref(),
        Some("1048588")
    );
    for (name, _) in TOPIC_DEFAULTS {
        assert!(configs.contains_key(*name), "{name}");
    }

    create_topic(&cluster, "plain", 1, &[]).await?;
    let configs = cluster.describe_configs("plain").await?;
    assert_eq!(configs["cleanup.policy"].value.as_deref(), Some("delete"));
    Ok(())
}

#[tokio::test]
async fn consumer_group_join_sync_heartbeat_commit_fetch_leave() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "grouped", 2, &[]).await?;

    let coordinator = cluster.find_coordinator("g1").await?;
    assert_eq!(coordinator.port, broker.port());

    let join = JoinGroupRequest {
        group_id: "g1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(1),
        member_id: String::new(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"\x00\x01subscription"))],
    };
    let joined = cluster.join_group(&join).await?;
    assert!(!joined.member_id.is_empty());
    assert!(joined.is_leader());
    assert_eq!(joined.members.len(), 1);
    assert_eq!(joined.members[0].metadata, join.protocols[0].1);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));

    let assignment = Bytes::from_static(b"\x00\x01assignment");
    let assigned = cluster
        .sync_group(&SyncGroupRequest {
            group_id: "g1".into(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: joined.protocol_name.clone(),
            assignments: vec![(joined.member_id.clone(), assignment.clone())],
        })
        .await?;
    assert_eq!(assigned, assignment);

    let heartbeat = HeartbeatRequest {
        group_id: "g1".into(),
        generation_id: joined.generation_id,
        member_id: joined.member_id.clone(),
        group_instance_id: None,
    };
    cluster.heartbeat(&heartbeat).await?;

    cluster
        .offset_commit(&OffsetCommitRequest {
            group_id: "g1".into(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            topic: "grouped".into(),
            offsets: vec![(0, 42, Some("meta".into())), (1, 7, None)],
        })
        .await?;
    let mut committed = cluster
        .offset_fetch(&OffsetFetchRequest {
            group_id: "g1".into(),
            topic: "grouped".into(),
            partitions: vec![0, 1],
        })
        .await?;
    committed.sort_by_key(|c| c.partition);
    assert_eq!(
        committed
            .iter()
            .map(|c| (c.partition, c.offset))
            .collect::<Vec<_>>(),
        [(0, 42), (1, 7)]
    );

    cluster
        .leave_group(&LeaveGroupRequest {
            group_id: "g1".into(),
            member_id: joined.member_id.clone(),
            group_instance_id: None,
        })
        .await?;
    let after_leave = cluster.heartbeat(&heartbeat).await.unwrap_err();
    assert!(after_leave.code().is_some(), "{after_leave}");
    Ok(())
}

#[tokio::test]
async fn init_producer_id_and_topic_admin() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    let identity = cluster
        .init_producer_id(None, Duration::from_secs(60))
        .await?;
    assert!(identity.producer_id >= 0);

    create_topic(&cluster, "admin", 2, &[]).await?;
    let again = cluster
        .create_topics(&[NewTopic::new("admin", 2)], Duration::from_secs(5))
        .await?;
    assert_eq!(again[0].error, ErrorCode::TOPIC_ALREADY_EXISTS);
    assert_eq!(cluster.partition_count("admin").await?, 2);

    let deleted = cluster
        .delete_topics(&["admin"], Duration::from_secs(5))
        .await?;
    assert!(deleted[0].error.is_ok(), "{}", deleted[0].error);
    let gone = cluster.topic("admin").await.unwrap_err();
    assert!(matches!(gone, KafkaError::UnknownTopic(_)), "{gone}");
    Ok(())
}

#[tokio::test]
async fn an_idempotent_batch_sent_again_is_written_once() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "once", 1, &[]).await?;
    let identity = cluster
        .init_producer_id(None, Duration::from_secs(60))
        .await?;
    let options = |sequence| ProduceOptions {
        acks: Acks::Leader,
        idempotent: Some((identity.producer_id, identity.producer_epoch, sequence)),
        ..ProduceOptions::default()
    };
    let records = sample_records("once");
    let first = &records[..1];
    assert_eq!(
        cluster.produce("once", 0, first, &options(0)).await?,
        Some(0)
    );
    // The same producer sequence again: acknowledged, not written.
    assert_eq!(cluster.produce("once", 0, first, &options(0)).await?, None);
    assert_eq!(
        cluster.produce("once", 0, first, &options(1)).await?,
        Some(1)
    );
    let fetched = fetch_all(&cluster, "once", &[0], 2).await?;
    assert_eq!(fetched.len(), 2);
    let end = cluster
        .list_offsets("once", 0, OffsetSpec::Latest, Isolation::ReadUncommitted)
        .await?;
    assert_eq!(end.offset, 2);
    Ok(())
}

#[tokio::test]
async fn fetch_at_log_end_returns_after_max_wait() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "idle", 1, &[]).await?;
    let options = FetchOptions {
        max_wait: Duration::from_millis(50),
        ..FetchOptions::default()
    };
    let started = Instant::now();
    let fetched = cluster
        .fetch(
            "idle",
            &[FetchPartition {
                partition: 0,
                offset: 0,
            }],
            &options,
        )
        .await?;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(fetched[0].records.is_empty());
    assert_eq!(fetched[0].high_watermark, 0);
    assert_eq!(fetched[0].next_offset, 0);
    Ok(())
}

#[tokio::test]
async fn acks_none_returns_without_an_answer() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "fire", 1, &[]).await?;
    let options = ProduceOptions {
        acks: Acks::None,
        ..ProduceOptions::default()
    };
    let records = sample_records("fire");
    assert_eq!(cluster.produce("fire", 0, &records, &options).await?, None);
    let leader = ProduceOptions {
        acks: Acks::Leader,
        ..ProduceOptions::default()
    };
    assert_eq!(
        cluster.produce("fire", 0, &records, &leader).await?,
        Some(records.len() as i64)
    );
    let fetched = fetch_all(&cluster, "fire", &[0], 2 * records.len()).await?;
    assert_eq!(fetched.len(), 2 * records.len());
    Ok(())
}

#[tokio::test]
async fn fetch_from_inside_a_batch_skips_earlier_records() -> Result<()> {
    let broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "inside", 1, &[]).await?;
    let records = sample_records("inside");
    let options = ProduceOptions {
        compression: Compression::Lz4,
        ..ProduceOptions::default()
    };
    cluster.produce("inside", 0, &records, &options).await?;
    let fetch = FetchOptions {
        max_wait: Duration::from_millis(20),
        ..FetchOptions::default()
    };
    let fetched = cluster
        .fetch(
            "inside",
            &[FetchPartition {
                partition: 0,
                offset: 5,
            }],
            &fetch,
        )
        .await?;
    let offsets: Vec<i64> = fetched[0].records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (5..records.len() as i64).collect::<Vec<_>>());
    assert_eq!(fetched[0].records[0].value, records[5].value);
    assert_eq!(fetched[0].next_offset, records.len() as i64);
    assert_eq!(fetched[0].high_watermark, records.len() as i64);
    Ok(())
}

#[tokio::test]
async fn client_reconnects_after_a_broker_restart() -> Result<()> {
    let mut broker = Broker::start()?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "durable", 1, &[]).await?;
    let first = Record {
        value: Some(Bytes::from_static(b"before")),
        ..Record::default()
    };
    cluster
        .produce("durable", 0, &[first], &ProduceOptions::default())
        .await?;

    broker.restart_with(&[])?;

    let second = Record {
        value: Some(Bytes::from_static(b"after")),
        ..Record::default()
    };
    let offset = cluster
        .produce("durable", 0, &[second], &ProduceOptions::default())
        .await?;
    assert_eq!(offset, Some(1));
    let values: Vec<_> = fetch_all(&cluster, "durable", &[0], 2)
        .await?
        .into_iter()
        .map(|(_, r)| r.value.unwrap())
        .collect();
    assert_eq!(
        values,
        [Bytes::from_static(b"before"), Bytes::from_static(b"after")]
    );
    Ok(())
}

#[tokio::test]
async fn scram_sha512_authenticates_against_the_broker() -> Result<()> {
    let mut broker = Broker::start()?;
    broker.cli(&["user", "create", "alice", "s3cret"])?;
    broker.restart_with(&["--authentication"])?;

    let sasl = |mechanism, password: &str| ConnectionConfig {
        sasl: Some(SaslConfig {
            mechanism,
            username: "alice".into(),
            password: password.into(),
        }),
        ..ConnectionConfig::default()
    };
    let cluster = broker.cluster_with(sasl(SaslMechanism::ScramSha512, "s3cret"))?;
    create_topic(&cluster, "secured", 1, &[]).await?;
    let metadata = cluster.metadata(Some(&["secured"])).await?;
    assert_eq!(metadata.topics[0].name, "secured");

    let wrong = Connection::open(
        &TcpConnector,
        "127.0.0.1",
        broker.port(),
        &sasl(SaslMechanism::ScramSha512, "wrong"),
    )
    .await
    .unwrap_err();
    assert!(matches!(wrong, KafkaError::Authentication(_)), "{wrong}");

    let unauthenticated = Connection::open(
        &TcpConnector,
        "127.0.0.1",
        broker.port(),
        &ConnectionConfig::default(),
    )
    .await;
    if let Ok(connection) = unauthenticated {
        assert!(connection.call(&MetadataRequest::default()).await.is_err());
    }
    Ok(())
}

/// Batches that decompress to far more than they weigh (4 MiB of zeros in ~200 bytes of
/// zstd each), many in one fetch response: decoding stops at the fetch's decompression
/// budget, and the next fetches bring the rest, so every record arrives and no fetch
/// decompresses more than its budget (the first batch of a response aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_is_bounded_per_fetch() -> Result<()> {
    let broker = Broker::start()?;
    let producer = broker.cluster()?;
    create_topic(&producer, "bombs", 1, &[]).await?;
    let record = Record {
        value: Some(Bytes::from(vec![0u8; 4 << 20])),
        ..Record::default()
    };
    let options = ProduceOptions {
        compression: Compression::Zstd,
        ..ProduceOptions::default()
    };
    let count = 12;
    for _ in 0..count {
        producer
            .produce("bombs", 0, std::slice::from_ref(&record), &options)
            .await?;
    }
    let cluster = Cluster::new(
        std::sync::Arc::new(TcpConnector),
        ClusterConfig {
            bootstrap: vec![broker.address()],
            decode_limits: DecodeLimits {
                max_decompressed_bytes: 8 << 20,
                max_fetch_decompressed_bytes: 8 << 20,
            },
            ..ClusterConfig::default()
        },
    )?;
    let fetch = FetchOptions {
        max_wait: Duration::ZERO,
        max_bytes: 50 << 20,
        partition_max_bytes: 50 << 20,
        ..FetchOptions::default()
    };
    // With the default 64 MiB budget one response brings them all: the broker does send many
    // batches at once, so it is the budget that holds the bounded client back below.
    let unbounded = producer
        .fetch(
            "bombs",
            &[FetchPartition {
                partition: 0,
                offset: 0,
            }],
            &fetch,
        )
        .await?;
    assert!(
        unbounded[0].records.len() > 2,
        "one response held several batches"
    );
    let mut offset = 0;
    let mut fetches = 0;
    while offset < count {
        let fetched = cluster
            .fetch(
                "bombs",
                &[FetchPartition {
                    partition: 0,
                    offset,
                }],
                &fetch,
            )
            .await?;
        let records = &fetched[0].records;
        assert!(
            records.len() <= 2,
            "{} records of 4 MiB decompressed in one fetch with an 8 MiB budget",
            records.len()
        );
        for record in records {
            assert_eq!(record.offset, offset);
            assert_eq!(record.value.as_deref(), Some(&[0u8; 4 << 20][..]));
            offset += 1;
        }
        fetches += 1;
        assert!(fetches <= count, "no progress at offset {offset}");
    }
    Ok(())
}
