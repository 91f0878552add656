//! The client kind's produce is idempotent: a batch the client sends again because its
//! answer was lost is written once. The client reaches tansu through a forwarder that, when
//! armed, swallows the broker's next answer and closes that connection, as a broker killed
//! between writing a batch and answering would; the client sends the batch again on a new
//! connection. confluent-kafka counts the copies the topic holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, ensure};
use bytes::Bytes;
use support::{Broker, BrokerCluster, create_topic, run_python};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zilla_binding_kafka::client::{ClientTuning, KafkaClient};
use zilla_binding_kafka::kind::{Acks, KafkaHandler, ProduceRequest};

/// Records produced, each with its answer lost once.
const RECORDS: usize = 5;

/// Every value of partition 0 of the topic and how many times it is there.
const COUNT: &str = r#"
import json, sys, uuid
from confluent_kafka import Consumer, TopicPartition
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": str(uuid.uuid4()),
                     "enable.auto.commit": False})
low, high = consumer.get_watermark_offsets(TopicPartition(sys.argv[2], 0), timeout=30)
consumer.assign([TopicPartition(sys.argv[2], 0, low)])
copies, seen = {}, low
while seen < high:
    for message in consumer.consume(100, timeout=10):
        if not message.error():
            value = message.value().decode()
            copies[value] = copies.get(value, 0) + 1
            seen = message.offset() + 1
consumer.close()
print(json.dumps(copies))
"#;

/// A TCP forwarder to the broker on `target`; while `lose` is set, the broker's next answer
/// (on any connection) is dropped and that connection closed.
async fn lossy_forwarder(target: u16, lose: Arc<AtomicBool>) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut upstream_read, mut upstream_write) = upstream.into_split();
            let lose = lose.clone();
            let requests = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
            });
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 64 * 1024];
                while let Ok(n) = upstream_read.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    if lose.swap(false, Ordering::SeqCst) {
                        // Written by the broker, never answered: the client sees the
                        // connection close.
                        requests.abort();
                        break;
                    }
                    if client_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = client_write.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// Produces [`RECORDS`] values through a client whose every produce answer is lost once, and
/// returns how many copies of each the topic holds.
async fn copies_after_lost_answers(idempotent: bool) -> Result<HashMap<String, u64>> {
    let broker_port = zilla_tests::free_port()?;
    let lose = Arc::new(AtomicBool::new(false));
    let forwarder = lossy_forwarder(broker_port, lose.clone()).await?;
    let broker = Broker::start_advertising(broker_port, forwarder, &[])?;
    let cluster = broker.cluster()?;
    create_topic(&cluster, "lossy", 1, &[]).await?;
    let client = KafkaClient::new(
        cluster,
        ClientTuning {
            produce_idempotent: idempotent,
            ..ClientTuning::default()
        },
    );
    let produce = |value: String| {
        client.produce(ProduceRequest {
            topic: "lossy".to_owned(),
            partition: Some(0),
            value: Some(Bytes::from(value)),
            acks: Acks::Leader,
            ..ProduceRequest::default()
        })
    };
    // The first record gets the producer id and the connections before answers are lost.
    produce("v-0".to_owned()).await?;
    for i in 1..=RECORDS {
        lose.store(true, Ordering::SeqCst);
        produce(format!("v-{i}")).await?;
        ensure!(!lose.load(Ordering::SeqCst), "no answer was lost for v-{i}");
    }
    let copies = run_python(COUNT, &[&broker.address(), "lossy"], "")?;
    Ok(serde_json::from_value(copies)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sent_again_after_a_lost_answer_are_written_once() -> Result<()> {
    let copies = copies_after_lost_answers(true).await?;
    for i in 0..=RECORDS {
        assert_eq!(copies.get(&format!("v-{i}")), Some(&1), "v-{i}: {copies:?}");
    }
    assert_eq!(copies.len(), RECORDS + 1, "{copies:?}");
    Ok(())
}

/// The same lost answers without idempotence write the resent batches twice: the scenario
/// above does make the client send batches again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_lost_answers_write_copies() -> Result<()> {
    let copies = copies_after_lost_answers(false).await?;
    for i in 1..=RECORDS {
        assert_eq!(copies.get(&format!("v-{i}")), Some(&2), "v-{i}: {copies:?}");
    }
    Ok(())
}
