//! The `http.kafka.avro.json` example end to end: the real binary against a real broker
//! (tansu), driven by `curl`, with confluent-kafka's schema registry client and its
//! `AvroSerializer` / `AvroDeserializer` (fastavro underneath) on the other side of the topic.
//!
//! No schema registry server ships as a package we can run here, so the test runs the harness's
//! small one ([`zilla_tests::SchemaRegistry`]), which implements the documented REST subset the
//! peers use. It only stores and hands out schema text; the bytes the gateway writes and reads
//! are checked by confluent-kafka's own Avro serializers, which fetch the schemas from it
//! exactly as they would from Confluent's registry.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use zilla_tests::curl_status_body as curl;
use zilla_tests::{Broker, Gateway, Peer, SchemaRegistry, free_port, workspace_dir};

const ITEM_SCHEMA: &str = r#"{"type":"record","name":"Item","namespace":"example","fields":[{"name":"id","type":"string"},{"name":"status","type":"string"}]}"#;

/// Reads `count` records from the start with `AvroDeserializer`: `[{"k", "v"}]`, `v` the
/// decoded record (or `{"error": ...}` when it does not decode).
const CONSUME_AVRO: &str = r#"
import json, sys, uuid
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
bootstrap, registry, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
consumer.subscribe([topic])
records = []
while len(records) < count:
    message = consumer.poll(20)
    if message is None:
        break
    if message.error():
        continue
    try:
        value = deserialize(message.value(), SerializationContext(topic, MessageField.VALUE))
    except Exception as error:
        value = {"error": str(error)}
    records.append({"k": message.key().decode(), "v": value})
low, high = consumer.get_watermark_offsets(consumer.assignment()[0])
consumer.close()
print(json.dumps({"records": records, "end": high}))
"#;

/// Produces `[key, record]` pairs with `AvroSerializer`, using the latest registered schema.
const PRODUCE_AVRO: &str = r#"
import json, sys
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
bootstrap, registry, topic = sys.argv[1], sys.argv[2], sys.argv[3]
client = SchemaRegistryClient({"url": registry})
schema = client.get_latest_version(topic + "-value").schema
serialize = AvroSerializer(client, schema.schema_str,
                           conf={"auto.register.schemas": False, "use.latest.version": True})
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
for key, record in json.loads(sys.argv[4]):
    value = serialize(record, SerializationContext(topic, MessageField.VALUE))
    producer.produce(topic, key=key, value=value)
producer.flush(20)
"#;

struct Setup {
    broker: Broker,
    registry: SchemaRegistry,
    registry_url: String,
    gateway: Gateway,
}

fn setup() -> Result<Setup> {
    setup_with_workers(None)
}

/// [`setup`], with the gateway running `workers` connection workers when given.
fn setup_with_workers(workers: Option<usize>) -> Result<Setup> {
    let broker = Broker::start()?;
    broker.create_topic("items-snapshots", 1, true)?;
    let registry = SchemaRegistry::start()?;
    let registry_url = registry.url().to_owned();
    let id = registry.register("items-snapshots-value", "AVRO", ITEM_SCHEMA)?;
    ensure!(id == 1, "schema registered as {id}");
    let mut gateway =
        Gateway::from_file(workspace_dir().join("examples/http.kafka.avro.json/zilla.yaml"))
            .env("HTTP_PORT", "0")
            .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
            .env("SCHEMA_REGISTRY_URL", &registry_url)
            .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20");
    if let Some(workers) = workers {
        gateway = gateway.workers(workers);
    }
    let gateway = gateway.start()?;
    Ok(Setup {
        broker,
        registry,
        registry_url,
        gateway,
    })
}

fn post(base: &str, key: &str, body: &str) -> Result<(u16, String)> {
    zilla_tests::post_keyed(
        &format!("{base}/items"),
        "application/json",
        key,
        &["-d", body],
    )
}

/// Posts the Avro datum in `path` (registry-framed or not) to `/events`: the status.
fn post_avro(base: &str, path: &std::path::Path, key: &str) -> Result<u16> {
    let data = format!("@{}", path.display());
    Ok(zilla_tests::post_keyed(
        &format!("{base}/events"),
        "application/avro-binary",
        key,
        &["--data-binary", &data],
    )?
    .0)
}

fn consume(setup: &Setup, count: usize) -> Result<Value> {
    let output = Peer::python(CONSUME_AVRO)
        .args([
            setup.broker.address(),
            setup.registry_url.clone(),
            "items-snapshots".to_owned(),
            count.to_string(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "consumer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

#[test]
fn json_posted_lands_as_registry_framed_avro_and_invalid_json_never_lands() -> Result<()> {
    let mut setup = setup()?;
    let base = format!("http://{}", setup.gateway.address("web_tcp"));
    assert_eq!(post(&base, "1", r#"{"id": "1", "status": "OK"}"#)?.0, 204);
    for invalid in [
        r#"{"id": 2, "status": "OK"}"#,
        r#"{"id": "2"}"#,
        r#"{"id": "2", "status": "OK", "extra": true}"#,
        r#"{"id": "2", "#,
    ] {
        let (status, _) = post(&base, "2", invalid)?;
        assert_eq!(status, 400, "{invalid}");
    }
    assert_eq!(post(&base, "3", r#"{"status": "DONE", "id": "3"}"#)?.0, 204);

    // confluent-kafka's deserializer reads both records with the registered schema, and the
    // partition holds nothing else: the refused bodies never reached Kafka.
    let seen = consume(&setup, 2)?;
    assert_eq!(
        seen["records"],
        json!([
            {"k": "1", "v": {"id": "1", "status": "OK"}},
            {"k": "3", "v": {"id": "3", "status": "DONE"}}
        ]),
        "{seen}"
    );
    assert_eq!(seen["end"], 2, "{seen}");

    // And they read back as JSON.
    let (status, body) = curl(&[&format!("{base}/items/1")])?;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"id":"1","status":"OK"}"#)
    );
    assert!(setup.gateway.terminate()?.success());
    Ok(())
}

#[test]
fn avro_produced_by_confluent_kafka_reads_as_json_over_get_and_sse() -> Result<()> {
    let mut setup = setup()?;
    let base = format!("http://{}", setup.gateway.address("web_tcp"));
    let watcher = Peer::new("curl")
        .args(["-sN", "--max-time", "30", &format!("{base}/items/events")])
        .spawn()?;
    let output = Peer::python(PRODUCE_AVRO)
        .args([
            setup.broker.address(),
            setup.registry_url.clone(),
            "items-snapshots".to_owned(),
            json!([["a", {"id": "a", "status": "NEW"}], ["b", {"id": "b", "status": "OLD"}]])
                .to_string(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A record that is not Avro of a registered schema is skipped, not served.
    let garbage = Peer::python(
        "import sys\nfrom confluent_kafka import Producer\np = Producer({'bootstrap.servers': sys.argv[1]})\np.produce('items-snapshots', key='c', value=b'not avro')\np.flush(20)\n",
    )
    .arg(setup.broker.address())
    .run()?;
    ensure!(garbage.status.success(), "garbage producer failed");

    let (status, body) = curl(&[&format!("{base}/items/a")])?;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"id":"a","status":"NEW"}"#)
    );
    let (status, body) = curl(&[&format!("{base}/items")])?;
    assert_eq!(status, 200);
    let mut items: Vec<Value> = serde_json::from_str(&body)?;
    items.sort_by_key(|item| item["id"].as_str().map(str::to_owned));
    assert_eq!(
        items,
        [
            json!({"id": "a", "status": "NEW"}),
            json!({"id": "b", "status": "OLD"})
        ]
    );
    assert_eq!(curl(&[&format!("{base}/items/c")])?.0, 404);

    watcher.wait_for_stdout(r#"{"id":"b","status":"OLD"}"#, Duration::from_secs(20))?;
    let stream = watcher.stdout();
    assert!(
        stream.contains(r#"data:{"id":"a","status":"NEW"}"#),
        "{stream}"
    );
    assert!(!stream.contains("not avro"), "{stream}");
    setup
        .gateway
        .wait_for_stdout("MODEL_AVRO_VALIDATION_FAILED", Duration::from_secs(10))?;
    assert!(setup.gateway.terminate()?.success());
    Ok(())
}

#[test]
fn an_unreachable_registry_fails_the_start_naming_it() -> Result<()> {
    let url = format!("http://127.0.0.1:{}", free_port()?);
    let started =
        Gateway::from_file(workspace_dir().join("examples/http.kafka.avro.json/zilla.yaml"))
            .env("HTTP_PORT", "0")
            .env("KAFKA_BOOTSTRAP_SERVER", "127.0.0.1:9")
            .env("SCHEMA_REGISTRY_URL", &url)
            .start();
    let Err(error) = started else {
        anyhow::bail!("the gateway started without its registry");
    };
    let log = format!("{error:#}");
    assert!(log.contains(&url), "{log}");
    assert!(log.contains("avro:registry"), "{log}");
    assert!(log.contains("options.topics[0].value"), "{log}");
    Ok(())
}

/// Serializes each record with `AvroSerializer` (registry framing) into the files named.
const SERIALIZE_AVRO: &str = r#"
import json, sys
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
registry, subject = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": registry})
schema = client.get_latest_version(subject).schema
serialize = AvroSerializer(client, schema.schema_str,
                           conf={"auto.register.schemas": False, "use.latest.version": True})
for path, record in json.loads(sys.argv[3]):
    with open(path, "wb") as out:
        out.write(serialize(record, SerializationContext("events", MessageField.VALUE)))
"#;

#[test]
fn framed_avro_is_checked_against_the_schema_its_id_names_and_produced_as_it_came() -> Result<()> {
    let mut setup = setup()?;
    setup.broker.create_topic("events", 1, false)?;
    let id = u32::try_from(
        setup
            .registry
            .register("events-value", "AVRO", ITEM_SCHEMA)?,
    )?;
    let dir = tempfile::tempdir()?;
    let valid = dir.path().join("valid.avro");
    let output = Peer::python(SERIALIZE_AVRO)
        .args([
            setup.registry_url.clone(),
            "events-value".to_owned(),
            json!([[valid, {"id": "e1", "status": "OK"}]]).to_string(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "serializer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let framed = std::fs::read(&valid)?;
    ensure!(
        framed[0] == 0 && framed[1..5] == id.to_be_bytes(),
        "framed with id {id}: {framed:?}"
    );
    // The same datum naming a schema the registry does not hold, and with no frame at all.
    let unknown = dir.path().join("unknown.avro");
    let mut renamed = framed.clone();
    renamed[1..5].copy_from_slice(&(id + 100).to_be_bytes());
    std::fs::write(&unknown, renamed)?;
    let bare = dir.path().join("bare.avro");
    std::fs::write(&bare, &framed[5..])?;

    let base = format!("http://{}", setup.gateway.address("web_tcp"));
    let send = |path: &std::path::Path, key: &str| post_avro(&base, path, key);
    assert_eq!(send(&unknown, "u")?, 400);
    assert_eq!(send(&bare, "b")?, 400);
    assert_eq!(send(&valid, "v")?, 204);

    // confluent-kafka's deserializer reads the one record that landed, byte for byte as sent.
    let output = Peer::python(CONSUME_AVRO)
        .args([
            setup.broker.address(),
            setup.registry_url.clone(),
            "events".to_owned(),
            "1".to_owned(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "consumer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(
        seen["records"],
        json!([{"k": "v", "v": {"id": "e1", "status": "OK"}}]),
        "{seen}"
    );
    assert_eq!(seen["end"], 1, "{seen}");
    assert!(setup.gateway.terminate()?.success());
    Ok(())
}

#[test]
fn an_https_registry_is_verified_against_the_trust_store_the_environment_names() -> Result<()> {
    let dir = tempfile::tempdir()?;
    zilla_tests::pki::certificate(dir.path(), "ca", "/CN=Registry CA", None, &[])?;
    zilla_tests::pki::server_certificate(dir.path(), "registry", "ca", "127.0.0.1")?;
    let ca = dir.path().join("ca.pem");
    let registry = SchemaRegistry::start_tls(
        &dir.path().join("registry.pem"),
        &dir.path().join("registry.key"),
        &ca,
    )?;
    registry.register("items-value", "AVRO", ITEM_SCHEMA)?;
    // `validate` builds the model, which resolves its subject from the registry.
    let yaml = format!(
        "name: test
catalogs:
  registry:
    type: schema-registry
    options:
      url: {}
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
      requests:
        - path: /items
          method: POST
          content:
            model: avro
            catalog:
              registry:
                - subject: items-value
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        registry.url()
    );
    ensure!(registry.url().starts_with("https://"), "{}", registry.url());
    let ca = ca.display().to_string();
    let trusted = zilla_tests::validate_with_env(&yaml, &[("SSL_CERT_FILE", ca.as_str())])?;
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    // Without the CA the registry's certificate is not trusted, and the load says so.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "")?;
    let empty = empty.display().to_string();
    let untrusted = zilla_tests::validate_with_env(&yaml, &[("SSL_CERT_FILE", empty.as_str())])?;
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success(), "{said}");
    assert!(
        said.contains("TLS") && said.contains("items-value"),
        "{said}"
    );
    Ok(())
}

/// The items schema with one more field, as a second version of a subject.
const ITEM_SCHEMA_V2: &str = r#"{"type":"record","name":"Item","namespace":"example","fields":[{"name":"id","type":"string"},{"name":"status","type":"string"},{"name":"note","type":["null","string"],"default":null}]}"#;

/// Writes `record` serialized by `AvroSerializer` with the subject's latest schema to `path`.
fn serialize(setup: &Setup, subject: &str, path: &std::path::Path, record: Value) -> Result<()> {
    let output = Peer::python(SERIALIZE_AVRO)
        .args([
            setup.registry_url.clone(),
            subject.to_owned(),
            json!([[path, record]]).to_string(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "serializer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A registry that stops answering after the start (paused: its port still accepts
/// connections, nothing answers). Schemas the gateway holds keep serving; a message naming an
/// id it has not seen is refused with 400 after a bounded wait, and the catalog's event names
/// the catalog and the registry; requests that need nothing from the registry are not held
/// up meanwhile. The gateway runs one worker, so a wait holding the worker's thread would
/// hold every request.
#[test]
fn a_registry_that_stops_answering_later_holds_up_only_messages_naming_new_ids() -> Result<()> {
    let mut setup = setup_with_workers(Some(1))?;
    setup.broker.create_topic("events", 1, false)?;
    setup
        .registry
        .register("events-value", "AVRO", ITEM_SCHEMA)?;
    let dir = tempfile::tempdir()?;
    let known = dir.path().join("known.avro");
    serialize(
        &setup,
        "events-value",
        &known,
        json!({"id": "e1", "status": "OK"}),
    )?;
    let base = format!("http://{}", setup.gateway.address("web_tcp"));
    let send = |path: &std::path::Path, key: &str| post_avro(&base, path, key);
    // The gateway learns the id of `known` from the registry on its first use.
    assert_eq!(send(&known, "k1")?, 204);
    assert_eq!(post(&base, "a", r#"{"id": "a", "status": "OK"}"#)?.0, 204);

    // A second version the gateway has not seen, then the registry stops answering.
    let new_id = setup
        .registry
        .register("events-value", "AVRO", ITEM_SCHEMA_V2)?;
    let new = dir.path().join("new.avro");
    serialize(
        &setup,
        "events-value",
        &new,
        json!({"id": "e2", "status": "OK", "note": "n"}),
    )?;
    ensure!(std::fs::read(&new)?[1..5] == u32::try_from(new_id)?.to_be_bytes());
    setup.registry.pause()?;

    // Cached schemas keep serving: framed Avro of a known id, JSON converted with the
    // subject's cached schema, and a record read back as JSON.
    assert_eq!(send(&known, "k2")?, 204);
    assert_eq!(post(&base, "b", r#"{"id": "b", "status": "DONE"}"#)?.0, 204);
    assert_eq!(
        curl(&[&format!("{base}/items/a")])?,
        (200, r#"{"id":"a","status":"OK"}"#.to_owned())
    );

    // A message naming the new id waits for the registry, in the background...
    let started = std::time::Instant::now();
    let mut waiting = Peer::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "content-type: application/avro-binary",
            "-H",
            "idempotency-key: n1",
            "--data-binary",
            &format!("@{}", new.display()),
            &format!("{base}/events"),
        ])
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    // ...while other requests on the same worker are answered at once.
    let other = std::time::Instant::now();
    assert_eq!(
        curl(&[&format!("{base}/items/a")])?,
        (200, r#"{"id":"a","status":"OK"}"#.to_owned())
    );
    assert_eq!(send(&known, "k3")?, 204);
    let other = other.elapsed();
    ensure!(
        waiting.try_status()?.is_none(),
        "the request naming the new id was answered before the others"
    );
    assert!(other < Duration::from_millis(1000), "held up for {other:?}");

    // The message naming the new id is refused after the bounded wait, and the catalog says
    // why, naming itself and the registry.
    assert!(waiting.wait(Duration::from_secs(20))?.success());
    let waited = started.elapsed();
    assert_eq!(waiting.stdout(), "400");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(6),
        "refused after {waited:?}"
    );
    setup.gateway.wait_for_stdout(
        "CATALOG_SCHEMA_REGISTRY_UNRETRIEVABLE_SCHEMA_ID",
        Duration::from_secs(5),
    )?;
    let stdout = setup.gateway.stdout();
    let line = stdout
        .lines()
        .find(|line| line.contains("CATALOG_SCHEMA_REGISTRY_UNRETRIEVABLE_SCHEMA_ID"))
        .unwrap_or_default();
    assert!(line.contains(&format!("schema id {new_id}")), "{line}");
    assert!(line.contains("avro:registry"), "{line}");
    assert!(line.contains(&setup.registry_url), "{line}");
    // Asked again at once, it is refused without another wait.
    let again = std::time::Instant::now();
    assert_eq!(send(&new, "n2")?, 400);
    assert!(
        again.elapsed() < Duration::from_millis(1000),
        "{:?}",
        again.elapsed()
    );

    // Once the registry answers again, the new id is fetched and the message accepted.
    setup.registry.resume()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while send(&new, "n3")? != 204 {
        ensure!(
            std::time::Instant::now() < deadline,
            "the new id was never accepted"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(setup.gateway.terminate()?.success());
    Ok(())
}

/// A record in Kafka naming a schema id the gateway has not seen, read while the registry does
/// not answer: the read waits for the registry a bounded time, then skips the record (the
/// catalog's event says why), and reads of other records on the same worker are not held up.
#[test]
fn a_record_naming_a_new_id_is_skipped_after_a_bounded_wait_while_the_registry_is_down()
-> Result<()> {
    let mut setup = setup_with_workers(Some(1))?;
    let base = format!("http://{}", setup.gateway.address("web_tcp"));
    assert_eq!(post(&base, "a", r#"{"id": "a", "status": "OK"}"#)?.0, 204);
    // A second version, which the gateway's cached subject does not know yet, written by
    // confluent-kafka's serializer.
    let new_id = setup
        .registry
        .register("items-snapshots-value", "AVRO", ITEM_SCHEMA_V2)?;
    let output = Peer::python(PRODUCE_AVRO)
        .args([
            setup.broker.address(),
            setup.registry_url.clone(),
            "items-snapshots".to_owned(),
            json!([["n", {"id": "n", "status": "NEW", "note": "v2"}]]).to_string(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        curl(&[&format!("{base}/items/a")])?,
        (200, r#"{"id":"a","status":"OK"}"#.to_owned())
    );
    setup.registry.pause()?;

    let started = std::time::Instant::now();
    let mut waiting = Peer::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/items/n"),
        ])
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let other = std::time::Instant::now();
    assert_eq!(
        curl(&[&format!("{base}/items/a")])?,
        (200, r#"{"id":"a","status":"OK"}"#.to_owned())
    );
    let other = other.elapsed();
    ensure!(
        waiting.try_status()?.is_none(),
        "the read of the record naming the new id was answered before the other"
    );
    assert!(other < Duration::from_millis(1000), "held up for {other:?}");
    assert!(waiting.wait(Duration::from_secs(20))?.success());
    let waited = started.elapsed();
    assert_eq!(waiting.stdout(), "404");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(6),
        "answered after {waited:?}"
    );
    setup.gateway.wait_for_stdout(
        &format!("Unable to fetch schema id {new_id}"),
        Duration::from_secs(5),
    )?;

    // Once the registry answers again, the record reads as JSON.
    setup.registry.resume()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = curl(&[&format!("{base}/items/n")])?;
        if status == 200 {
            // Avro's JSON encoding: a union's value is named by its branch.
            assert_eq!(body, r#"{"id":"n","status":"NEW","note":{"string":"v2"}}"#);
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the record never read: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(setup.gateway.terminate()?.success());
    Ok(())
}
