//! A Kafka client authenticating with SASL SCRAM-SHA-512 to tansu (`--authentication`), its
//! username and password taken from an `inline` guard (Zilla 2.x `options.authorization`).
//! curl produces through http-kafka; confluent-kafka, authenticating on its own, reads back.

use std::time::Duration;

use anyhow::{Result, ensure};
use zilla_tests::{Broker, Gateway, Peer};

const CONFIG: &str = r#"name: test
guards:
  secrets:
    type: inline
    options:
      identity: alice
      credentials: ${{env.KAFKA_SECRET}}
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: http_server
  http_server:
    type: http
    kind: server
    options:
      versions: [http/1.1]
    exit: http_kafka_proxy
  http_kafka_proxy:
    type: http-kafka
    kind: proxy
    routes:
      - when:
          - method: POST
            path: /events
        exit: kafka_cache_client
        with:
          capability: produce
          topic: events
          acks: leader_only
  kafka_cache_client:
    type: kafka
    kind: cache_client
    exit: kafka_cache_server
  kafka_cache_server:
    type: kafka
    kind: cache_server
    exit: kafka_client
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BROKER}}
      authorization:
        secrets:
          credentials:
            mechanism: scram-sha-512
            username: "{identity}"
            password: "{credentials}"
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
"#;

const CONSUME: &str = r#"
import sys, confluent_kafka
consumer = confluent_kafka.Consumer({
    "bootstrap.servers": sys.argv[1], "group.id": "check", "auto.offset.reset": "earliest",
    "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "alice", "sasl.password": sys.argv[2]})
consumer.assign([confluent_kafka.TopicPartition("events", 0, confluent_kafka.OFFSET_BEGINNING)])
for _ in range(40):
    message = consumer.poll(0.5)
    if message is not None and message.error() is None:
        print(message.value().decode())
        break
consumer.close()
"#;

fn post(url: &str) -> Result<u16> {
    let output = Peer::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "content-type: text/plain",
            "-d",
            "hello secured kafka",
            url,
        ])
        .run()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

#[test]
fn kafka_client_authenticates_with_credentials_from_an_inline_guard() -> Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic("events", 1, false)?;
    broker.require_authentication(&[("alice", "s3cret")])?;

    let mut gateway = Gateway::builder(CONFIG)
        .env("KAFKA_BROKER", broker.address())
        .env("KAFKA_SECRET", "s3cret")
        .start()?;
    let url = format!("http://{}/events", gateway.address("tcp_server"));
    ensure!(post(&url)? / 100 == 2, "produce refused");
    let output = Peer::python(CONSUME)
        .args([&broker.address(), "s3cret"])
        .timeout(Duration::from_secs(40))
        .run()?;
    assert_eq!(
        String::from_utf8(output.stdout)?.trim(),
        "hello secured kafka"
    );
    assert!(gateway.terminate()?.success());

    // A wrong secret in the guard: the broker refuses the client, so nothing is produced.
    let mut refused = Gateway::builder(CONFIG)
        .env("KAFKA_BROKER", broker.address())
        .env("KAFKA_SECRET", "wrong")
        .start()?;
    let url = format!("http://{}/events", refused.address("tcp_server"));
    let status = post(&url)?;
    assert!(
        status >= 500,
        "produce with bad credentials answered {status}"
    );
    assert!(refused.terminate()?.success());
    Ok(())
}
