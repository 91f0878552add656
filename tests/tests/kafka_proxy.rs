//! The kafka `proxy` kind through the real binary: confluent-kafka producers, consumer groups
//! and admin clients reach a tansu broker through the gateway only (the broker advertises an
//! address nothing listens on, as a broker on a private network would), hostile frames close
//! only their own connection, and the `kafka.*` metrics count a known workload.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use zilla_tests::{Broker, Gateway, Peer, free_port, kcat, pki, python_json};

/// Ports the gateway listens on: the bootstrap port, then `BROKER_PORTS` for brokers.
const BROKER_PORTS: u16 = 4;

/// The host tansu advertises: loopback, but nothing listens there.
const PRIVATE_HOST: &str = "127.0.0.2";

/// `1 + BROKER_PORTS` consecutive free ports (bootstrap, then brokers); the first.
fn port_block() -> Result<u16> {
    zilla_tests::free_port_block(1 + BROKER_PORTS)
}

/// A gateway proxying to `broker`, reaching it by its advertised port on 127.0.0.1 (the
/// private network's route), with the `kafka.*` metrics on a Prometheus endpoint when
/// `metrics_port` is given.
fn gateway(broker: &Broker, metrics_port: Option<u16>) -> Result<(Gateway, String)> {
    let base = port_block()?;
    let yaml = config(broker, base, metrics_port, false);
    let gateway = Gateway::start(&yaml)?;
    Ok((gateway, format!("127.0.0.1:{base}")))
}

/// The same gateway terminating TLS in front of the proxy with a self-signed `localhost`
/// certificate made by openssl; returns the directory holding it (`localhost.pem`).
fn tls_gateway(broker: &Broker) -> Result<(Gateway, String, tempfile::TempDir)> {
    let certs = tempfile::tempdir()?;
    pki::certificate(
        certs.path(),
        "localhost",
        "/CN=localhost",
        None,
        &["subjectAltName=DNS:localhost"],
    )?;
    let base = port_block()?;
    let gateway = Gateway::builder(&config(broker, base, None, true))
        .file(
            "tls/localhost.key",
            std::fs::read(certs.path().join("localhost.key"))?,
        )
        .file(
            "tls/localhost.crt",
            std::fs::read(certs.path().join("localhost.pem"))?,
        )
        .start()?;
    Ok((gateway, format!("localhost:{base}"), certs))
}

fn config(broker: &Broker, base: u16, metrics_port: Option<u16>, tls: bool) -> String {
    let telemetry = match metrics_port {
        Some(port) => format!(
            r#"
telemetry:
  metrics:
    - kafka.requests
    - kafka.errors
    - kafka.produce.size
    - kafka.fetch.size
    - kafka.active.connections
    - kafka.duration
    - kafka.produce.records
    - kafka.produce.bytes
    - kafka.fetch.records
    - kafka.fetch.bytes
  exporters:
    prometheus:
      type: prometheus
      options:
        endpoints:
          - scheme: http
            port: {port}
            path: /metrics
"#
        ),
        None => String::new(),
    };
    let binding_telemetry = if metrics_port.is_some() {
        "
    telemetry:
      metrics:
        - kafka.*
      attributes:
        api: ${kafka.request.api}
        topic: ${kafka.topic}"
    } else {
        ""
    };
    let (vault, server_exit, tls_server, host) = if tls {
        (
            "
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: tls
        type: pem",
            "tls_server",
            "
  tls_server:
    type: tls
    kind: server
    vault: server
    options:
      keys:
        - localhost
    exit: kafka_proxy",
            "localhost",
        )
    } else {
        ("", "kafka_proxy", "", "127.0.0.1")
    };
    format!(
        r#"
name: test{telemetry}{vault}
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port:
        - {base}
        - "{low}-{high}"
    exit: {server_exit}{tls_server}
  kafka_proxy:
    type: kafka
    kind: proxy
    options:
      servers:
        - 127.0.0.1:{broker}
      external:
        host: {host}
        port: {base}
        ports: "{low}-{high}"
    exit: tcp_client{binding_telemetry}
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
"#,
        low = base + 1,
        high = base + BROKER_PORTS,
        broker = broker.port(),
    )
}

const PRODUCE_CONSUME: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
# A fourth argument is the CA of a TLS gateway.
common = {'bootstrap.servers': bootstrap}
if len(sys.argv) > 4:
    common.update({'security.protocol': 'SSL', 'ssl.ca.location': sys.argv[4]})
metadata = AdminClient(common).list_topics(timeout=20)
brokers = sorted('%s:%d' % (b.host, b.port) for b in metadata.brokers.values())
partitions = len(metadata.topics[topic].partitions)
producer = Producer(dict(common, **{'message.timeout.ms': 20000}))
reports = []
for i in range(count):
    producer.produce(topic, key=b'k%d' % i, value=b'v%d' % i, partition=i % partitions,
        on_delivery=lambda error, m: reports.append((str(error) if error else None, m.partition())))
producer.flush(30)
consumer = Consumer(dict(common, **{'group.id': 'reader', 'enable.auto.commit': False}))
consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
seen, deadline = [], time.time() + 30
while len(seen) < count and time.time() < deadline:
    m = consumer.poll(0.5)
    if m is None:
        continue
    if m.error():
        raise SystemExit(str(m.error()))
    seen.append(m.value().decode())
consumer.close()
print(json.dumps({'brokers': brokers, 'partitions': partitions,
    'errors': [r[0] for r in reports if r[0]], 'delivered_to': sorted({r[1] for r in reports}),
    'consumed': sorted(seen)}))
"#;

const DIRECT_PRODUCE: &str = r#"
import json, sys
from confluent_kafka import Producer
producer = Producer({'bootstrap.servers': sys.argv[1], 'message.timeout.ms': 3000,
    'log_level': 0})
reports = []
producer.produce(sys.argv[2], value=b'direct', on_delivery=lambda e, m: reports.append(str(e)))
producer.flush(10)
print(json.dumps(reports))
"#;

#[test]
fn clients_reach_a_private_broker_through_the_proxy_only() -> Result<()> {
    let broker = Broker::start_advertising_host(PRIVATE_HOST, &[])?;
    broker.create_topic("orders", 3, false)?;
    let (mut gateway, bootstrap) = gateway(&broker, None)?;

    // Direct, the client follows the advertised address and cannot deliver.
    let direct = python_json(DIRECT_PRODUCE, &[&broker.address(), "orders"], "")?;
    let direct = direct.to_string();
    ensure!(
        direct.contains("_MSG_TIMED_OUT"),
        "direct produce: {direct}"
    );

    let count = 30;
    let result = python_json(
        PRODUCE_CONSUME,
        &[&bootstrap, "orders", &count.to_string()],
        "",
    )?;
    let base: u16 = bootstrap.rsplit(':').next().context("port")?.parse()?;
    // tansu's broker id (111) lies outside the range: it gets the lowest broker port.
    assert_eq!(
        result["brokers"],
        serde_json::json!([format!("127.0.0.1:{}", base + 1)])
    );
    assert_eq!(result["partitions"], 3);
    assert_eq!(result["errors"], serde_json::json!([]));
    assert_eq!(result["delivered_to"], serde_json::json!([0, 1, 2]));
    let mut expected: Vec<String> = (0..count).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(result["consumed"], serde_json::json!(expected));
    assert!(gateway.terminate()?.success());
    Ok(())
}

const GROUP: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
conf = {'bootstrap.servers': bootstrap, 'group.id': 'workers', 'auto.offset.reset': 'earliest',
    'enable.auto.commit': False, 'session.timeout.ms': 10000, 'heartbeat.interval.ms': 500}
def assigned(c):
    return sorted(tp.partition for tp in c.assignment())
def until(condition, consumers, what):
    deadline = time.time() + 60
    while not condition():
        if time.time() > deadline:
            raise SystemExit('timed out waiting for ' + what)
        for c in consumers:
            c.poll(0.1)
first = Consumer(conf)
first.subscribe([topic])
until(lambda: assigned(first) == [0, 1], [first], 'the first assignment')
alone = assigned(first)
second = Consumer(conf)
second.subscribe([topic])
until(lambda: len(assigned(first)) == 1 and len(assigned(second)) == 1, [first, second],
    'the rebalance')
split = sorted(assigned(first) + assigned(second))
producer = Producer({'bootstrap.servers': bootstrap})
for i in range(10):
    producer.produce(topic, value=b'm%d' % i, partition=i % 2)
producer.flush(30)
consumed, deadline = [], time.time() + 60
while len(consumed) < 10 and time.time() < deadline:
    for c in (first, second):
        m = c.poll(0.1)
        if m is not None and not m.error():
            consumed.append(m.value().decode())
            c.commit(message=m, asynchronous=False)
first.close()
second.close()
third = Consumer(conf)
third.subscribe([topic])
until(lambda: assigned(third) == [0, 1], [third], 'the third assignment')
for i in range(2):
    producer.produce(topic, value=b'late%d' % i, partition=i % 2)
producer.flush(30)
late, deadline = [], time.time() + 30
while len(late) < 2 and time.time() < deadline:
    m = third.poll(0.2)
    if m is not None and not m.error():
        late.append(m.value().decode())
third.close()
print(json.dumps({'alone': alone, 'split': split, 'consumed': sorted(consumed),
    'after_commit': sorted(late)}))
"#;

#[test]
fn a_consumer_group_joins_rebalances_and_commits_through_the_proxy() -> Result<()> {
    let broker = Broker::start_advertising_host(PRIVATE_HOST, &[])?;
    broker.create_topic("jobs", 2, false)?;
    let (mut gateway, bootstrap) = gateway(&broker, None)?;
    let result = python_json(GROUP, &[&bootstrap, "jobs"], "")?;
    assert_eq!(result["alone"], serde_json::json!([0, 1]));
    assert_eq!(result["split"], serde_json::json!([0, 1]));
    let mut expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(result["consumed"], serde_json::json!(expected));
    // Committed offsets hold: the next member of the group reads only what came after.
    assert_eq!(
        result["after_commit"],
        serde_json::json!(["late0", "late1"])
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

const ADMIN: &str = r#"
import json, sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({'bootstrap.servers': sys.argv[1]})
if len(sys.argv) > 2:
    admin.create_topics([NewTopic(sys.argv[2], num_partitions=2, replication_factor=1)])[sys.argv[2]].result(timeout=20)
metadata = admin.list_topics(timeout=20)
topics = {name: len(t.partitions) for name, t in metadata.topics.items()}
cluster = admin.describe_cluster(request_timeout=20).result()
print(json.dumps({'topics': topics, 'nodes': sorted('%s:%d' % (n.host, n.port) for n in cluster.nodes),
    'cluster_id': cluster.cluster_id}))
"#;

#[test]
fn the_admin_client_works_through_the_proxy_as_direct() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("existing", 1, false)?;
    let (mut gateway, bootstrap) = gateway(&broker, None)?;
    let proxied = python_json(ADMIN, &[&bootstrap, "created"], "")?;
    let direct = python_json(ADMIN, &[&broker.address()], "")?;
    assert_eq!(proxied["topics"]["created"], 2);
    assert_eq!(proxied["topics"]["existing"], 1);
    // The same cluster, seen the same way, but every broker named by the gateway.
    assert_eq!(proxied["topics"], direct["topics"]);
    assert_eq!(proxied["cluster_id"], direct["cluster_id"]);
    assert_eq!(direct["nodes"], serde_json::json!([broker.address()]));
    let base: u16 = bootstrap.rsplit(':').next().context("port")?.parse()?;
    assert_eq!(
        proxied["nodes"],
        serde_json::json!([format!("127.0.0.1:{}", base + 1)])
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// An ApiVersions v0 request (no client id).
fn api_versions(correlation_id: i32, version: i16) -> Vec<u8> {
    let mut frame = 10i32.to_be_bytes().to_vec();
    frame.extend(18i16.to_be_bytes());
    frame.extend(version.to_be_bytes());
    frame.extend(correlation_id.to_be_bytes());
    frame.extend((-1i16).to_be_bytes());
    frame
}

/// A Heartbeat v0 request of member `nobody` in group `nogroup`.
fn heartbeat(correlation_id: i32) -> Vec<u8> {
    let mut body = 12i16.to_be_bytes().to_vec();
    body.extend(0i16.to_be_bytes());
    body.extend(correlation_id.to_be_bytes());
    body.extend((-1i16).to_be_bytes());
    for (index, text) in [&b"nogroup"[..], &b"nobody"[..]].into_iter().enumerate() {
        body.extend((text.len() as i16).to_be_bytes());
        body.extend(text);
        if index == 0 {
            body.extend(1i32.to_be_bytes());
        }
    }
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Reads one response frame: its correlation id and the rest.
fn read_response(stream: &mut TcpStream) -> Result<(i32, Vec<u8>)> {
    let mut size = [0; 4];
    stream.read_exact(&mut size)?;
    let mut body = vec![0; usize::try_from(i32::from_be_bytes(size))?];
    stream.read_exact(&mut body)?;
    ensure!(body.len() >= 4, "short response");
    let correlation = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    Ok((correlation, body[4..].to_vec()))
}

/// Whether the gateway closed `stream` (reads end) within the wait.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(error) => {
                return matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                );
            }
        }
    }
}

fn connect(address: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(stream)
}

#[test]
fn hostile_frames_close_only_their_own_connection() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("events", 1, false)?;
    let (mut gateway, bootstrap) = gateway(&broker, None)?;

    let mut bystander = connect(&bootstrap)?;
    bystander.write_all(&api_versions(1, 0))?;
    assert_eq!(read_response(&mut bystander)?.0, 1);

    // A size prefix over the limit (Kafka's 100 MiB), a negative one, and a frame too short
    // for a request header: each connection is closed.
    for hostile in [
        i32::MAX.to_be_bytes().to_vec(),
        (-5i32).to_be_bytes().to_vec(),
        vec![0, 0, 0, 2, 0, 18],
    ] {
        let mut stream = connect(&bootstrap)?;
        stream.write_all(&hostile)?;
        assert!(closed(&mut stream), "{hostile:?} left the connection open");
    }
    // A port of the brokers' range no broker was given yet is closed too.
    let base: u16 = bootstrap.rsplit(':').next().context("port")?.parse()?;
    let mut unmapped = connect(&format!("127.0.0.1:{}", base + 2))?;
    unmapped.write_all(&api_versions(1, 0))?;
    assert!(closed(&mut unmapped));

    // The connection opened before carries on, and new clients work.
    bystander.write_all(&api_versions(2, 0))?;
    assert_eq!(read_response(&mut bystander)?.0, 2);
    let result = python_json(PRODUCE_CONSUME, &[&bootstrap, "events", "3"], "")?;
    assert_eq!(result["errors"], serde_json::json!([]));
    assert_eq!(result["consumed"], serde_json::json!(["v0", "v1", "v2"]));
    drop(bystander);
    assert!(gateway.terminate()?.success(), "{}", gateway.stderr());
    Ok(())
}

fn scrape(port: u16) -> Result<String> {
    let output = Peer::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(20))
        .run()?;
    ensure!(output.status.success(), "scrape failed");
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The value of the one sample named `series` (name and labels as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn kafka_metrics_count_a_known_workload() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("counted", 1, false)?;
    broker.create_topic("tallied", 2, false)?;
    let metrics_port = free_port()?;
    let (mut gateway, bootstrap) = gateway(&broker, Some(metrics_port))?;
    let labels = r#"namespace="test",binding="kafka_proxy""#;

    // Four ApiVersions requests on one raw connection, then a Heartbeat from a member no
    // group knows, answered with UNKNOWN_MEMBER_ID.
    let mut raw = connect(&bootstrap)?;
    for correlation in 1..=4 {
        raw.write_all(&api_versions(correlation, 0))?;
        let (id, body) = read_response(&mut raw)?;
        assert_eq!((id, &body[..2]), (correlation, &[0u8, 0][..]));
    }
    raw.write_all(&heartbeat(5))?;
    let (id, body) = read_response(&mut raw)?;
    assert_eq!((id, &body[..2]), (5, &25i16.to_be_bytes()[..]));

    // A producer and a consumer per topic: three records to `counted`, five to `tallied`.
    let result = python_json(PRODUCE_CONSUME, &[&bootstrap, "counted", "3"], "")?;
    assert_eq!(result["consumed"], serde_json::json!(["v0", "v1", "v2"]));
    let result = python_json(PRODUCE_CONSUME, &[&bootstrap, "tallied", "5"], "")?;
    assert_eq!(
        result["consumed"],
        serde_json::json!(["v0", "v1", "v2", "v3", "v4"])
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape(metrics_port)?;
        // The python clients are gone; only the raw connection is open.
        if sample(&text, &format!("kafka_active_connections{{{labels}}}")) == Some(1.0) {
            break text;
        }
        ensure!(
            Instant::now() < deadline,
            "active connections never 1:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let api = |name: &str| format!(r#"{{{labels},api="{name}"}}"#);
    let versions = sample(
        &text,
        &format!("kafka_requests_total{}", api("ApiVersions")),
    )
    .context("no ApiVersions requests")?;
    // The raw four, plus at least one per connection the python clients opened.
    assert!(versions >= 5.0, "{versions}\n{text}");
    assert_eq!(
        sample(&text, &format!("kafka_requests_total{}", api("Heartbeat"))),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("kafka_errors_total{}", api("Heartbeat"))),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("kafka_errors_total{}", api("ApiVersions"))).unwrap_or(0.0),
        0.0,
        "no ApiVersions answer carried an error: {text}"
    );
    // Every answered request is timed: the Heartbeat once, each ApiVersions once.
    assert_eq!(
        sample(
            &text,
            &format!("kafka_duration_milliseconds_count{}", api("Heartbeat"))
        ),
        Some(1.0),
        "{text}"
    );
    // A client shutting down may close a connection before its ApiVersions answer comes
    // back (librdkafka does, now and then): that request is counted but never timed. The raw
    // connection's four are.
    let timed = sample(
        &text,
        &format!("kafka_duration_milliseconds_count{}", api("ApiVersions")),
    )
    .context("no ApiVersions durations")?;
    assert!(
        (4.0..=versions).contains(&timed),
        "{timed} of {versions}\n{text}"
    );
    let produces = sample(&text, &format!("kafka_requests_total{}", api("Produce"))).unwrap_or(0.0);
    assert!(produces >= 1.0);
    assert_eq!(
        sample(
            &text,
            &format!("kafka_duration_milliseconds_count{}", api("Produce"))
        ),
        Some(produces),
        "acks=all produces are all answered and timed: {text}"
    );
    assert!(
        sample(&text, &format!("kafka_requests_total{}", api("Metadata"))).unwrap_or(0.0) >= 1.0
    );
    let produced = sample(&text, &format!("kafka_produce_size_bytes_sum{{{labels}}}"))
        .context("no produce sizes")?;
    assert!(produced >= 6.0, "{produced}");
    let fetches = sample(&text, &format!("kafka_fetch_size_bytes_count{{{labels}}}"))
        .context("no fetch sizes")?;
    assert!(fetches >= 1.0);

    // Records per topic, as produced and as consumed (each consumer read its topic once from
    // offset 0, and every record was there before it started).
    let topic = |name: &str| format!(r#"{{{labels},topic="{name}"}}"#);
    let mut record_bytes = 0.0;
    for (name, count) in [("counted", 3.0), ("tallied", 5.0)] {
        assert_eq!(
            sample(
                &text,
                &format!("kafka_produce_records_total{}", topic(name))
            ),
            Some(count),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("kafka_fetch_records_total{}", topic(name))),
            Some(count),
            "{text}"
        );
        // A batch header alone is 61 bytes.
        let produced_bytes = sample(&text, &format!("kafka_produce_bytes_total{}", topic(name)))
            .context("no produce bytes")?;
        assert!(
            produced_bytes >= 61.0 + count * 4.0,
            "{produced_bytes}\n{text}"
        );
        let fetched_bytes = sample(&text, &format!("kafka_fetch_bytes_total{}", topic(name)))
            .context("no fetch bytes")?;
        assert!(
            fetched_bytes >= 61.0 + count * 4.0,
            "{fetched_bytes}\n{text}"
        );
        record_bytes += produced_bytes;
    }
    // Record sets are part of the Produce requests they came in.
    assert!(record_bytes <= produced, "{record_bytes} > {produced}");
    // Only topics label the record metrics.
    assert!(
        !text.contains(
            "kafka_produce_records_total{namespace=\"test\",binding=\"kafka_proxy\",api="
        ),
        "{text}"
    );

    drop(raw);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(
        &scrape(metrics_port)?,
        &format!("kafka_active_connections{{{labels}}}"),
    ) != Some(0.0)
    {
        ensure!(
            Instant::now() < deadline,
            "active connections never back to 0"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gateway.terminate()?.success());
    Ok(())
}

const SCRAM_PRODUCE_CONSUME: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
bootstrap, secret = sys.argv[1], sys.argv[2]
auth = {'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_PLAINTEXT',
    'sasl.mechanism': 'SCRAM-SHA-512', 'sasl.username': 'alice', 'sasl.password': secret}
producer = Producer(dict(auth, **{'message.timeout.ms': 8000}))
reports = []
producer.produce('secured', value=b'hello', on_delivery=lambda e, m: reports.append(str(e) if e else None))
producer.flush(15)
seen = []
if reports == [None]:
    consumer = Consumer(dict(auth, **{'group.id': 'secured', 'enable.auto.commit': False}))
    consumer.assign([TopicPartition('secured', 0, 0)])
    deadline = time.time() + 20
    while not seen and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    consumer.close()
print(json.dumps({'reports': reports, 'seen': seen}))
"#;

#[test]
fn clients_authenticate_to_the_broker_with_scram_through_the_proxy() -> Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic("secured", 1, false)?;
    broker.require_authentication(&[("alice", "s3cret")])?;
    let (mut gateway, bootstrap) = gateway(&broker, None)?;
    let accepted = python_json(SCRAM_PRODUCE_CONSUME, &[&bootstrap, "s3cret"], "")?;
    assert_eq!(accepted["reports"], serde_json::json!([null]));
    assert_eq!(accepted["seen"], serde_json::json!(["hello"]));
    // The broker's own refusal reaches the client: nothing is delivered.
    let refused = python_json(SCRAM_PRODUCE_CONSUME, &[&bootstrap, "wrong"], "")?;
    let reports = refused["reports"].to_string();
    assert!(
        !reports.contains("null") && reports != "[]",
        "a wrong secret was accepted: {refused}"
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn tls_clients_reach_every_broker_through_the_proxy() -> Result<()> {
    let broker = Broker::start_advertising_host(PRIVATE_HOST, &[])?;
    broker.create_topic("sealed", 2, false)?;
    let (mut gateway, bootstrap, certs) = tls_gateway(&broker)?;
    let ca = certs.path().join("localhost.pem");
    let ca = ca.to_str().context("path")?;
    let result = python_json(PRODUCE_CONSUME, &[&bootstrap, "sealed", "10", ca], "")?;
    let base: u16 = bootstrap.rsplit(':').next().context("port")?.parse()?;
    assert_eq!(
        result["brokers"],
        serde_json::json!([format!("localhost:{}", base + 1)])
    );
    assert_eq!(result["errors"], serde_json::json!([]));
    assert_eq!(result["delivered_to"], serde_json::json!([0, 1]));
    assert_eq!(result["consumed"].as_array().map(Vec::len), Some(10));
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn kcat_lists_produces_and_consumes_through_the_proxy() -> Result<()> {
    let broker = Broker::start_advertising_host(PRIVATE_HOST, &[])?;
    broker.create_topic("lines", 1, false)?;
    let (mut gateway, bootstrap) = gateway(&broker, None)?;
    let base: u16 = bootstrap.rsplit(':').next().context("port")?.parse()?;
    let listing = kcat(&["-b", &bootstrap, "-L", "-J"], "")?;
    let listing: serde_json::Value = serde_json::from_str(&listing)?;
    assert_eq!(
        listing["brokers"][0]["name"],
        format!("127.0.0.1:{}", base + 1),
        "{listing}"
    );
    kcat(
        &["-b", &bootstrap, "-t", "lines", "-P"],
        "one\ntwo\nthree\n",
    )?;
    let consumed = kcat(
        &[
            "-b",
            &bootstrap,
            "-t",
            "lines",
            "-C",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        "",
    )?;
    assert_eq!(consumed, "one\ntwo\nthree\n");
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn routes_leading_to_different_exits_are_refused_at_load() -> Result<()> {
    let refused = Gateway::start(
        r#"
name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: kafka_proxy
  kafka_proxy:
    type: kafka
    kind: proxy
    options:
      servers:
        - 127.0.0.1:9092
      external:
        host: 127.0.0.1
        port: 9092
        ports: "9100-9103"
    routes:
      - when:
          - topic: orders
        exit: tcp_client
      - when:
          - topic: audit
        exit: other_client
  tcp_client:
    type: tcp
    kind: client
  other_client:
    type: tcp
    kind: client
"#,
    );
    let Err(error) = refused else {
        anyhow::bail!("a kafka proxy routing to two exits started");
    };
    let message = format!("{error:#}");
    // file:line:col of the second route's exit.
    assert!(
        message.contains("routes[1].exit") && message.contains("same exit"),
        "{message}"
    );
    assert!(message.contains(":27:"), "{message}");
    Ok(())
}

/// A gateway in front of a broker requiring SCRAM-SHA-512 of its own user `zilla`: clients
/// authenticate to the gateway as `alice` (who may use `orders`) or `bob` (who may use
/// `ledger`), and the gateway to the broker as `zilla`.
fn secured_gateway(broker: &Broker) -> Result<(Gateway, String)> {
    let base = port_block()?;
    let yaml = format!(
        r#"
name: test
guards:
  alice:
    type: inline
    options:
      identity: alice
      credentials: alice-secret
  bob:
    type: inline
    options:
      identity: bob
      credentials: bob-secret
  gateway:
    type: inline
    options:
      identity: zilla
      credentials: broker-secret
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port:
        - {base}
        - "{low}-{high}"
    exit: kafka_proxy
  kafka_proxy:
    type: kafka
    kind: proxy
    options:
      servers:
        - 127.0.0.1:{broker}
      external:
        host: 127.0.0.1
        port: {base}
        ports: "{low}-{high}"
      authentication:
        mechanisms: [scram-sha-256, scram-sha-512, plain]
        guards: [alice, bob]
      authorization:
        gateway:
          credentials:
            mechanism: scram-sha-512
            username: "{{identity}}"
            password: "{{credentials}}"
    routes:
      - when:
          - topic: orders
        guarded:
          alice: []
        exit: tcp_client
      - when:
          - topic: ledger
        guarded:
          bob: []
        exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
"#,
        low = base + 1,
        high = base + BROKER_PORTS,
        broker = broker.port(),
    );
    let gateway = Gateway::start(&yaml)?;
    Ok((gateway, format!("127.0.0.1:{base}")))
}

const EDGE_CLIENT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
bootstrap, mechanism, user, secret, allowed, forbidden = sys.argv[1:7]
errors = []
auth = {'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_PLAINTEXT',
    'sasl.mechanism': mechanism, 'sasl.username': user, 'sasl.password': secret,
    'error_cb': lambda e: errors.append(e.name()), 'log_level': 0}
producer = Producer(dict(auth, **{'message.timeout.ms': 8000}))
reports = {}
for topic in (allowed, forbidden):
    for i in range(3):
        producer.produce(topic, value=b'%s-%d' % (topic.encode(), i),
            on_delivery=lambda e, m, t=topic: reports.setdefault(t, []).append(e.name() if e else None))
producer.flush(20)
result = {'reports': reports}
if all(r is None for r in reports.get(allowed, [None])):
    admin = AdminClient(auth)
    listed = admin.list_topics(timeout=15)
    result['listed'] = sorted(listed.topics)
    named = admin.list_topics(topic=forbidden, timeout=15).topics[forbidden]
    result['named_error'] = named.error.name() if named.error else None
    # A consumer group on the allowed topic: join, consume, commit.
    consumer = Consumer(dict(auth, **{'group.id': 'edge-' + user, 'auto.offset.reset': 'earliest',
        'enable.auto.commit': False}))
    consumer.subscribe([allowed])
    seen, deadline = [], time.time() + 30
    while len(seen) < 3 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(allowed, 0)], timeout=15)
    consumer.close()
    result['consumed'] = sorted(seen)
    result['committed'] = committed[0].offset
    # A consumer assigned the forbidden topic gets none of its records.
    reader = Consumer(dict(auth, **{'group.id': 'edge-forbidden-' + user}))
    reader.assign([TopicPartition(forbidden, 0, 0)])
    refused, deadline = None, time.time() + 20
    while refused is None and time.time() < deadline:
        m = reader.poll(0.5)
        if m is not None and m.error():
            refused = m.error().name()
        elif m is not None:
            refused = 'consumed ' + m.value().decode()
    reader.close()
    result['fetch_error'] = refused
result['errors'] = sorted(set(errors))
print(json.dumps(result))
"#;

#[test]
fn clients_authenticate_at_the_gateway_and_reach_only_their_topics() -> Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic("orders", 1, false)?;
    broker.create_topic("ledger", 1, false)?;
    broker.require_authentication(&[("zilla", "broker-secret")])?;
    let (mut gateway, bootstrap) = secured_gateway(&broker)?;

    // alice with SCRAM-SHA-256 (which the broker does not even offer): orders only.
    let alice = python_json(
        EDGE_CLIENT,
        &[
            &bootstrap,
            "SCRAM-SHA-256",
            "alice",
            "alice-secret",
            "orders",
            "ledger",
        ],
        "",
    )?;
    assert_eq!(
        alice["reports"]["orders"],
        serde_json::json!([null, null, null]),
        "{alice}"
    );
    assert_eq!(
        alice["reports"]["ledger"],
        serde_json::json!([
            "TOPIC_AUTHORIZATION_FAILED",
            "TOPIC_AUTHORIZATION_FAILED",
            "TOPIC_AUTHORIZATION_FAILED"
        ]),
        "{alice}"
    );
    assert_eq!(alice["listed"], serde_json::json!(["orders"]), "{alice}");
    assert_eq!(
        alice["named_error"], "TOPIC_AUTHORIZATION_FAILED",
        "{alice}"
    );
    assert_eq!(
        alice["consumed"],
        serde_json::json!(["orders-0", "orders-1", "orders-2"]),
        "{alice}"
    );
    assert_eq!(alice["committed"], 3, "{alice}");
    // librdkafka does not fetch a partition whose topic metadata is refused (it raises no
    // error either): nothing of `ledger` reaches alice.
    assert!(
        !alice["fetch_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("consumed"),
        "{alice}"
    );

    // bob with PLAIN: ledger only.
    let bob = python_json(
        EDGE_CLIENT,
        &[&bootstrap, "PLAIN", "bob", "bob-secret", "ledger", "orders"],
        "",
    )?;
    assert_eq!(
        bob["reports"]["ledger"],
        serde_json::json!([null, null, null]),
        "{bob}"
    );
    assert_eq!(
        bob["reports"]["orders"],
        serde_json::json!([
            "TOPIC_AUTHORIZATION_FAILED",
            "TOPIC_AUTHORIZATION_FAILED",
            "TOPIC_AUTHORIZATION_FAILED"
        ]),
        "{bob}"
    );
    assert_eq!(bob["listed"], serde_json::json!(["ledger"]), "{bob}");

    // A wrong password, with either mechanism, delivers nothing.
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let refused = python_json(
            EDGE_CLIENT,
            &[&bootstrap, mechanism, "alice", "wrong", "orders", "ledger"],
            "",
        )?;
        let reports = refused["reports"]["orders"].as_array().context("reports")?;
        assert!(
            reports.len() == 3 && reports.iter().all(|r| !r.is_null()),
            "{refused}"
        );
        assert!(
            refused["errors"].to_string().contains("_AUTHENTICATION"),
            "{refused}"
        );
    }

    // Straight to the broker, the clients' own credentials are nobody's there.
    let direct = python_json(
        EDGE_CLIENT,
        &[
            &broker.address(),
            "SCRAM-SHA-512",
            "alice",
            "alice-secret",
            "orders",
            "ledger",
        ],
        "",
    )?;
    let reports = direct["reports"]["orders"].as_array().context("reports")?;
    assert!(
        reports.len() == 3 && reports.iter().all(|r| !r.is_null()),
        "{direct}"
    );

    // The gateway has kept only what alice and bob were allowed to produce.
    let consumed = kcat_sasl(&broker, "orders")?;
    assert_eq!(consumed, "orders-0\norders-1\norders-2\n");
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// Everything in `topic`, read straight from the broker as its own user `zilla`.
fn kcat_sasl(broker: &Broker, topic: &str) -> Result<String> {
    kcat_as_zilla(broker, &["-t", topic, "-C", "-o", "beginning", "-e", "-q"])
}

/// kcat straight to the broker as its own user `zilla`, with `args`.
fn kcat_as_zilla(broker: &Broker, args: &[&str]) -> Result<String> {
    let address = broker.address();
    let mut all = vec![
        "-b",
        &address,
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanism=SCRAM-SHA-512",
        "-X",
        "sasl.username=zilla",
        "-X",
        "sasl.password=broker-secret",
    ];
    all.extend_from_slice(args);
    kcat(&all, "")
}

const GROUP_ADMIN: &str = r#"
import json, sys
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
bootstrap, user, secret, mode = sys.argv[1:5]
errors = []
auth = {'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_PLAINTEXT',
    'sasl.mechanism': 'PLAIN', 'sasl.username': user, 'sasl.password': secret,
    'error_cb': lambda e: errors.append(e.name()), 'log_level': 0}
def outcome(future):
    try:
        future.result(timeout=20)
        return None
    except KafkaException as e:
        return e.args[0].name()
def commit(consumer, topic, offset):
    try:
        parts = consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        failed = [p.error.name() for p in parts if p.error]
        return failed[0] if failed else None
    except KafkaException as e:
        return e.args[0].name()
result = {}
if mode == 'commit':
    # Commits to the group `shared`, in turn, each `topic=offset` given.
    consumer = Consumer(dict(auth, **{'group.id': 'shared', 'enable.auto.commit': False}))
    result['commits'] = []
    for spec in sys.argv[5:]:
        topic, offset = spec.split('=')
        result['commits'].append(commit(consumer, topic, int(offset)))
    last = sys.argv[-1].split('=')[0]
    result['committed'] = consumer.committed([TopicPartition(last, 0)], timeout=15)[0].offset
    consumer.close()
else:
    allowed, forbidden = sys.argv[5:7]
    admin = AdminClient(auth)
    listed = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions('shared')])['shared'].result(timeout=20)
    result['group_offsets'] = sorted('%s:%d:%d' % (p.topic, p.partition, p.offset)
        for p in listed.topic_partitions)
    result['create'] = outcome(admin.create_topics(
        [NewTopic(forbidden + '-new', num_partitions=1, replication_factor=1)])[forbidden + '-new'])
    result['delete'] = outcome(admin.delete_topics([forbidden])[forbidden])
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, allowed),
        ConfigResource(ResourceType.TOPIC, forbidden)])
    result['describe'] = {}
    for resource, future in described.items():
        try:
            result['describe'][resource.name] = len(future.result(timeout=20))
        except KafkaException as e:
            result['describe'][resource.name] = e.args[0].name()
result['errors'] = sorted(set(errors))
print(json.dumps(result))
"#;

/// Topics kcat lists through the secured gateway as `user`.
fn kcat_topics(bootstrap: &str, user: &str, secret: &str) -> Result<Vec<String>> {
    let listing = kcat(
        &[
            "-b",
            bootstrap,
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanism=PLAIN",
            "-X",
            &format!("sasl.username={user}"),
            "-X",
            &format!("sasl.password={secret}"),
            "-L",
            "-J",
        ],
        "",
    )?;
    let listing: serde_json::Value = serde_json::from_str(&listing)?;
    let mut topics: Vec<String> = listing["topics"]
        .as_array()
        .context("topics")?
        .iter()
        .filter_map(|t| t["topic"].as_str().map(str::to_owned))
        .collect();
    topics.sort();
    Ok(topics)
}

#[test]
fn group_offsets_and_admin_requests_reach_only_allowed_topics() -> Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic("orders", 1, false)?;
    broker.create_topic("ledger", 1, false)?;
    broker.require_authentication(&[("zilla", "broker-secret")])?;
    let (mut gateway, bootstrap) = secured_gateway(&broker)?;

    // bob commits ledger in the group `shared`; alice's commit of ledger is refused with the
    // topic's error code, and her next commit on the same connection goes through.
    let bob = python_json(
        GROUP_ADMIN,
        &[&bootstrap, "bob", "bob-secret", "commit", "ledger=2"],
        "",
    )?;
    assert_eq!(bob["commits"], serde_json::json!([null]), "{bob}");
    let alice = python_json(
        GROUP_ADMIN,
        &[
            &bootstrap,
            "alice",
            "alice-secret",
            "commit",
            "ledger=1",
            "orders=3",
        ],
        "",
    )?;
    assert_eq!(
        alice["commits"],
        serde_json::json!(["TOPIC_AUTHORIZATION_FAILED", null]),
        "{alice}"
    );
    assert_eq!(alice["committed"], 3, "{alice}");
    assert!(
        !alice["errors"].to_string().contains("TRANSPORT"),
        "the connection stayed open: {alice}"
    );

    // The group's offsets for every topic: each sees only its own topic's.
    let alice = python_json(
        GROUP_ADMIN,
        &[
            &bootstrap,
            "alice",
            "alice-secret",
            "admin",
            "orders",
            "ledger",
        ],
        "",
    )?;
    assert_eq!(
        alice["group_offsets"],
        serde_json::json!(["orders:0:3"]),
        "{alice}"
    );
    assert_eq!(alice["create"], "TOPIC_AUTHORIZATION_FAILED", "{alice}");
    assert_eq!(alice["delete"], "TOPIC_AUTHORIZATION_FAILED", "{alice}");
    assert_eq!(
        alice["describe"]["ledger"], "TOPIC_AUTHORIZATION_FAILED",
        "{alice}"
    );
    // In the same request, orders is described by the broker (tansu lists no entries).
    assert!(
        alice["describe"]["orders"].is_u64(),
        "orders is described: {alice}"
    );
    let bob = python_json(
        GROUP_ADMIN,
        &[&bootstrap, "bob", "bob-secret", "admin", "ledger", "orders"],
        "",
    )?;
    assert_eq!(
        bob["group_offsets"],
        serde_json::json!(["ledger:0:2"]),
        "{bob}"
    );

    // kcat lists each one's own topic; nothing was created or deleted.
    assert_eq!(
        kcat_topics(&bootstrap, "alice", "alice-secret")?,
        vec!["orders"]
    );
    assert_eq!(
        kcat_topics(&bootstrap, "bob", "bob-secret")?,
        vec!["ledger"]
    );
    let everything = kcat_as_zilla(&broker, &["-L", "-J"])?;
    let everything: serde_json::Value = serde_json::from_str(&everything)?;
    let mut names: Vec<&str> = everything["topics"]
        .as_array()
        .context("topics")?
        .iter()
        .filter_map(|t| t["topic"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["ledger", "orders"], "{everything}");
    assert!(gateway.terminate()?.success());
    Ok(())
}
