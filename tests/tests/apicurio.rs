//! The `apicurio` catalog end to end: the `http.kafka.avro.json` example with its catalog
//! swapped for an `apicurio` one, the real binary against a real broker (tansu), driven by
//! `curl`, with Python's confluent-kafka client and fastavro on the other side of the topic.
//!
//! No Apicurio server ships as a package we can run here, so the test runs the harness's
//! small one ([`zilla_tests::ApicurioRegistry`]), which implements the documented REST subset
//! (v2 and v3 paths). It only stores and hands out schemas; the records the gateway writes are
//! checked against Apicurio's documented framing (magic byte 0, then the id in 8 bytes, or 4
//! with `id-encoding: legacy`) and their Avro datum decoded by fastavro, and records framed
//! that way with fastavro's encoder are read back as JSON.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use zilla_tests::curl_status_body as curl;
use zilla_tests::{ApicurioRegistry, Broker, Gateway, Peer, free_port, workspace_dir};

const ITEM_SCHEMA: &str = r#"{"type":"record","name":"Item","namespace":"example","fields":[{"name":"id","type":"string"},{"name":"status","type":"string"}]}"#;

/// `produce <bootstrap> <topic> <schema> <prefix hex> <key> <record>`: one record framed with
/// the prefix and fastavro's encoding; `consume <bootstrap> <topic> <schema> <count>
/// <prefix length>`: `[{"k", "prefix" (hex), "v" (decoded by fastavro)}]`.
const AVRO_PEER: &str = r#"
import io, json, sys, uuid, fastavro
from confluent_kafka import Consumer, Producer
mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
schema = fastavro.parse_schema(json.loads(sys.argv[4]))
if mode == "produce":
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, json.loads(sys.argv[7]))
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, key=sys.argv[6], value=bytes.fromhex(sys.argv[5]) + out.getvalue())
    producer.flush(20)
else:
    count, length = int(sys.argv[5]), int(sys.argv[6])
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
        value = message.value()
        records.append({"k": message.key().decode(), "prefix": value[:length].hex(),
                        "v": fastavro.schemaless_reader(io.BytesIO(value[length:]), schema)})
    consumer.close()
    print(json.dumps(records))
"#;

/// The example's config with its catalog an `apicurio` one with `options` (YAML lines, each
/// indented as an option).
fn config(options: &str) -> Result<String> {
    let example =
        std::fs::read_to_string(workspace_dir().join("examples/http.kafka.avro.json/zilla.yaml"))?;
    let catalog = "  registry:\n    type: schema-registry\n    options:\n      url: ${{env.SCHEMA_REGISTRY_URL}}\n      max-age: 30\n";
    ensure!(example.contains(catalog), "the example's catalog changed");
    Ok(example.replace(
        catalog,
        &format!(
            "  registry:\n    type: apicurio\n    options:\n      url: ${{{{env.SCHEMA_REGISTRY_URL}}}}\n{options}"
        ),
    ))
}

fn post(base: &str, key: &str, body: &str) -> Result<(u16, String)> {
    zilla_tests::post_keyed(
        &format!("{base}/items"),
        "application/json",
        key,
        &["-d", body],
    )
}

/// One configuration end to end: JSON posted lands framed with `id` in `id_bytes` bytes and
/// decodes with fastavro; invalid JSON gets 400; a record framed that way by fastavro reads
/// back as JSON.
fn round_trip(
    options: &str,
    url_path: &str,
    group: &str,
    use_content_id: bool,
    id_bytes: usize,
) -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("items-snapshots", 1, true)?;
    let registry = ApicurioRegistry::start()?;
    // Another artifact with the same content first, so the subject's global id (2) and
    // content id (1) differ and the framing shows which one was used.
    registry.register(group, "items-copy", ITEM_SCHEMA)?;
    let ids = registry.register(group, "items-snapshots-value", ITEM_SCHEMA)?;
    ensure!(ids.global_id == 2 && ids.content_id == 1, "{ids:?}");
    let id = if use_content_id {
        ids.content_id
    } else {
        ids.global_id
    };
    let prefix = format!("00{:0width$x}", id, width = id_bytes * 2);

    let mut gateway = Gateway::builder(&config(options)?)
        .env("HTTP_PORT", "0")
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .env(
            "SCHEMA_REGISTRY_URL",
            format!("{}{url_path}", registry.url()),
        )
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    let base = format!("http://{}", gateway.address("web_tcp"));
    assert_eq!(post(&base, "1", r#"{"id": "1", "status": "OK"}"#)?.0, 204);
    assert_eq!(post(&base, "2", r#"{"id": 2, "status": "OK"}"#)?.0, 400);

    let output = Peer::python(AVRO_PEER)
        .args([
            "consume".to_owned(),
            broker.address(),
            "items-snapshots".to_owned(),
            ITEM_SCHEMA.to_owned(),
            "1".to_owned(),
            (1 + id_bytes).to_string(),
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
        seen,
        json!([{"k": "1", "prefix": prefix, "v": {"id": "1", "status": "OK"}}]),
        "{seen}"
    );

    let output = Peer::python(AVRO_PEER)
        .args([
            "produce".to_owned(),
            broker.address(),
            "items-snapshots".to_owned(),
            ITEM_SCHEMA.to_owned(),
            prefix.clone(),
            "p".to_owned(),
            json!({"id": "p", "status": "NEW"}).to_string(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = curl(&[&format!("{base}/items/p")])?;
        if status == 200 {
            assert_eq!(body, r#"{"id":"p","status":"NEW"}"#);
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the framed record never read back: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn v2_global_ids_in_eight_bytes_by_default() -> Result<()> {
    round_trip("", "", "default", false, 8)
}

#[test]
fn v3_content_ids_in_four_bytes_when_legacy() -> Result<()> {
    round_trip(
        "      group-id: orders\n      use-id: contentId\n      id-encoding: legacy\n      max-age: 30\n",
        "/apis/registry/v3",
        "orders",
        true,
        4,
    )
}

#[test]
fn an_unreachable_registry_fails_the_load_naming_it() -> Result<()> {
    let url = format!("http://127.0.0.1:{}", free_port()?);
    let output = zilla_tests::validate_with_env(
        &config("")?,
        &[
            ("HTTP_PORT", "0"),
            ("KAFKA_BOOTSTRAP_SERVER", "127.0.0.1:9"),
            ("SCHEMA_REGISTRY_URL", url.as_str()),
        ],
    )?;
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains(&url), "{said}");
    assert!(said.contains("avro:registry"), "{said}");
    assert!(said.contains("options.topics[0].value"), "{said}");
    Ok(())
}

#[test]
fn options_outside_zillas_are_refused_at_their_place() -> Result<()> {
    let env = [
        ("HTTP_PORT", "0"),
        ("KAFKA_BOOTSTRAP_SERVER", "127.0.0.1:9"),
        ("SCHEMA_REGISTRY_URL", "http://127.0.0.1:9"),
    ];
    for (options, expected) in [
        ("      use-id: global\n", "use-id"),
        ("      id-encoding: short\n", "id-encoding"),
        ("      credentials: {}\n", "credentials"),
    ] {
        let output = zilla_tests::validate_with_env(&config(options)?, &env)?;
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{options}: {said}");
        assert!(said.contains(expected), "{options}: {said}");
    }
    Ok(())
}
