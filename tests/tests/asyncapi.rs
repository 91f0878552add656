//! The pipelines generated from AsyncAPI documents, in the shapes of Zilla's
//! `asyncapi.mqtt.kafka.proxy` and `asyncapi.http.kafka.proxy` examples, run by the real
//! gateway against tansu and driven the way those examples' READMEs drive them (mosquitto's
//! clients, curl, SSE with `curl -N`) with confluent-kafka reading and writing the topics: as
//! `zilla-asyncapi` generates them, as our `examples/asyncapi.*` configs of `type: asyncapi`
//! bindings (composites expanded at load), and as the config `zilla validate -v` prints for
//! those. A payload that breaks the document's schema is refused the protocol's way (MQTT
//! DISCONNECT 0x99, HTTP 400) and reaches no topic; keys the gateway does not build are
//! refused at load with their position.
//!
//! The parser is also checked against `@asyncapi/parser` on a corpus of public documents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use indexmap::IndexMap;
use serde_json::{Value, json};
use zilla_asyncapi::{Overrides, Spec, expand, parse};
use zilla_tests::{
    Broker, Gateway, Peer, curl, free_port, peers_dir, python, success, workspace_dir,
};

const LOOPBACK: (&str, &str) = ("zilla.binding.composite.listen.host", "127.0.0.1");

fn specs_dir() -> PathBuf {
    workspace_dir().join("crates/asyncapi/tests/specs")
}

fn spec(name: &str) -> Result<Spec> {
    let path = specs_dir().join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?;
    parse(&path.to_string_lossy(), &text).map_err(|error| anyhow::anyhow!("{error}"))
}

/// The generated `zilla.yaml` of a server → proxy → client chain of `asyncapi` bindings,
/// listening on loopback (port 0) and bootstrapping from `broker`.
fn generated_config(
    namespace: &str,
    entry: (&str, &str),
    kafka: &str,
    server_url: &str,
    routes: Value,
    broker: &Broker,
) -> Result<String> {
    let specs = IndexMap::from([
        (entry.0.to_owned(), spec(entry.1)?),
        ("kafka_api".to_owned(), spec(kafka)?),
    ]);
    let bindings = json!({
        "north_server": {"type": "asyncapi", "kind": "server",
            "options": {"specs": {entry.0: {}}}, "exit": "south_proxy"},
        "south_proxy": {"type": "asyncapi", "kind": "proxy",
            "options": {"specs": {entry.0: {}, "kafka_api": {}}}, "routes": routes},
        "south_client": {"type": "asyncapi", "kind": "client",
            "options": {"specs": {"kafka_api": {}}}},
    });
    let overrides = Overrides {
        listen_host: Some("127.0.0.1".into()),
        listen_ports: [(server_url.to_owned(), 0)].into(),
        bootstrap: Some(vec![broker.address()]),
    };
    let bindings = bindings.as_object().context("bindings")?;
    let namespaces = expand(namespace, bindings, &specs, &overrides)?;
    let mut yaml = String::new();
    for generated in &namespaces {
        yaml.push_str(&generated.to_yaml()?);
    }
    // Validation failures are events: print them.
    yaml.push_str(&format!(
        "---\nname: {namespace}.telemetry\ntelemetry:\n  exporters:\n    stdout_exporter:\n      type: stdout\n"
    ));
    Ok(yaml)
}

/// Starts the gateway on `yaml`, written to a file first.
fn start(dir: &Path, yaml: &str) -> Result<Gateway> {
    let path = dir.join("zilla.yaml");
    std::fs::write(&path, yaml)?;
    Gateway::from_file(&path)
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()
}

/// The records of `topic` (from its start) as confluent-kafka reads them, once `count` are
/// read or `seconds` have passed.
fn records(broker: &Broker, topic: &str, count: usize, seconds: u32) -> Result<Vec<Value>> {
    let output = Peer::new(python())
        .current_dir(workspace_dir().join("tests/tests/asyncapi"))
        .args(["kafka.py", "records", &broker.address(), topic])
        .args([count.to_string(), seconds.to_string()])
        .timeout(Duration::from_secs(u64::from(seconds) + 60))
        .run()?;
    success(&output)?;
    let records: Vec<Value> = serde_json::from_slice(&output.stdout)?;
    Ok(records)
}

fn produce(broker: &Broker, topic: &str, key: &str, value: &str, headers: &[&str]) -> Result<()> {
    let output = Peer::new(python())
        .current_dir(workspace_dir().join("tests/tests/asyncapi"))
        .args(["kafka.py", "produce", &broker.address(), topic, key, value])
        .args(headers)
        .timeout(Duration::from_secs(60))
        .run()?;
    success(&output)
}

fn with_gateway(gateway: &mut Gateway, run: impl FnOnce(&Gateway) -> Result<()>) -> Result<()> {
    let result = run(gateway).with_context(|| {
        format!(
            "gateway log:\n{}\nevents:\n{}",
            gateway.stderr(),
            gateway.stdout()
        )
    });
    ensure!(
        gateway.terminate()?.success(),
        "the gateway did not stop cleanly"
    );
    result
}

#[test]
fn mqtt_kafka_proxy_generated_from_asyncapi_documents() -> Result<()> {
    let broker = Broker::start()?;
    lighting_topics(&broker)?;
    let routes = json!([
        {"when": [{"spec": "mqtt_api", "operation": "reportMeasurement"},
                  {"spec": "mqtt_api", "operation": "switchLamp"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "produceLighting"}},
        {"when": [{"spec": "mqtt_api", "operation": "watchMeasurements"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "consumeLighting"}},
    ]);
    let yaml = generated_config(
        "lighting",
        ("mqtt_api", "lighting-mqtt.yaml"),
        "lighting-kafka.yaml",
        "mqtt://localhost:7183",
        routes,
        &broker,
    )?;
    let dir = tempfile::tempdir()?;
    let mut gateway = start(dir.path(), &yaml)?;
    with_gateway(&mut gateway, |gateway| {
        let port = gateway.address("lighting.north_server:tcp_server0").port();
        lighting_behaves_as_documented(gateway, &broker, port)
    })
}

/// What the lighting documents promise, through the gateway's MQTT port: a measurement
/// published reaches a subscriber and Kafka, keyed by its topic; payloads that break the
/// schemas are refused with DISCONNECT 0x99 and reach no topic.
fn lighting_behaves_as_documented(gateway: &Gateway, broker: &Broker, port: u16) -> Result<()> {
    {
        let port = port.to_string();
        let mqtt = ["-h", "127.0.0.1", "-p", port.as_str(), "-V", "5"];
        let subscriber = Peer::new("mosquitto_sub")
            .args(mqtt)
            .args(["-t", "lighting/+/measured", "-v", "-W", "90"])
            .spawn()?;
        let valid = r#"{"lumens":50,"at":"2026-12-05T12:34:32Z"}"#;
        // mosquitto_sub prints nothing once subscribed: publish until the message shows up.
        let mut seen = false;
        for _ in 0..100 {
            let published = Peer::new("mosquitto_pub")
                .args(mqtt)
                .args(["-t", "lighting/5/measured", "-m", valid])
                .run()?;
            success(&published)?;
            if subscriber
                .stdout()
                .contains(&format!("lighting/5/measured {valid}"))
            {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(seen, "mosquitto_sub got nothing: {}", subscriber.stderr());

        // Invalid: the schema says lumens >= 0. Zilla's README shows DISCONNECT (153).
        let refused = Peer::new("mosquitto_pub")
            .args(mqtt)
            .args(["-t", "lighting/5/measured", "-q", "1", "-d"])
            .args(["-m", r#"{"lumens":-1,"at":"2026-12-05T12:34:32Z"}"#])
            .run()?;
        let said = String::from_utf8_lossy(&refused.stdout).into_owned()
            + &String::from_utf8_lossy(&refused.stderr);
        ensure!(
            said.contains("DISCONNECT (153)") || said.contains("Payload format invalid"),
            "no 0x99 refusal: {said}"
        );
        // A command that is not `on`/`off` is refused too; a valid one goes to its topic.
        let command = Peer::new("mosquitto_pub")
            .args(mqtt)
            .args([
                "-t",
                "lighting/5/switch",
                "-q",
                "1",
                "-d",
                "-m",
                r#"{"state":"dim"}"#,
            ])
            .run()?;
        let said = String::from_utf8_lossy(&command.stdout);
        ensure!(said.contains("DISCONNECT (153)"), "no 0x99 refusal: {said}");
        let switched = Peer::new("mosquitto_pub")
            .args(mqtt)
            .args([
                "-t",
                "lighting/5/switch",
                "-q",
                "1",
                "-m",
                r#"{"state":"on"}"#,
            ])
            .run()?;
        success(&switched)?;

        let records = records(broker, "lighting-events", 1000, 10)?;
        let values: Vec<&str> = records.iter().filter_map(|r| r["value"].as_str()).collect();
        ensure!(values.contains(&valid), "{values:?}");
        ensure!(values.contains(&r#"{"state":"on"}"#), "{values:?}");
        ensure!(
            !values
                .iter()
                .any(|value| value.contains("\"lumens\":-1") || value.contains("dim")),
            "a refused payload reached Kafka: {values:?}"
        );
        ensure!(
            records.iter().all(|r| r["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("lighting/5/"))),
            "records are keyed by MQTT topic: {records:?}"
        );
        gateway.wait_for_stdout("MODEL_JSON_VALIDATION_FAILED", Duration::from_secs(10))?;
        Ok(())
    }
}

/// The lighting topics, created on `broker`.
fn lighting_topics(broker: &Broker) -> Result<()> {
    broker.create_topic("lighting-events", 1, false)?;
    broker.create_topic("mqtt-messages", 1, false)?;
    broker.create_topic("mqtt-retained", 1, true)?;
    broker.create_topic("mqtt-sessions", 1, true)
}

/// `examples/asyncapi.mqtt.kafka.proxy` copied into `dir`, listening on `port` and
/// bootstrapping from `broker`; returns the config's path.
fn mqtt_kafka_example(dir: &Path, port: u16, broker: &Broker) -> Result<PathBuf> {
    let example = workspace_dir().join("examples/asyncapi.mqtt.kafka.proxy");
    for file in ["zilla.yaml", "mqtt-asyncapi.yaml", "kafka-asyncapi.yaml"] {
        let text = std::fs::read_to_string(example.join(file))?
            .replace("7183", &port.to_string())
            .replace("localhost:9092", &broker.address());
        std::fs::write(dir.join(file), text)?;
    }
    Ok(dir.join("zilla.yaml"))
}

/// The example's `type: asyncapi` bindings, run as composites by the gateway, and then the
/// config `zilla validate -v` prints for it, composites expanded: both behave as documented.
#[test]
fn asyncapi_mqtt_kafka_proxy_example_and_its_expansion_behave_the_same() -> Result<()> {
    let broker = Broker::start()?;
    lighting_topics(&broker)?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = mqtt_kafka_example(dir.path(), port, &broker)?;
    let mut gateway = Gateway::from_file(&config)
        .property(LOOPBACK.0, LOOPBACK.1)
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    with_gateway(&mut gateway, |gateway| {
        ensure!(
            gateway.address("lighting:north_mqtt_server").port() == port,
            "the server listens on the document's port"
        );
        lighting_behaves_as_documented(gateway, &broker, port)
    })?;

    let validated = zilla_tests::zilla(["validate", "-v", "-c"])?
        .arg(&config)
        .args(["-P", &format!("{}={}", LOOPBACK.0, LOOPBACK.1)])
        .output()?;
    success(&validated)?;
    let expanded = String::from_utf8(validated.stdout)?;
    ensure!(
        expanded.contains("type: mqtt-kafka") && !expanded.contains("type: asyncapi"),
        "{expanded}"
    );
    // Beside the documents: the expanded config still reads them through its catalog.
    let expanded_path = dir.path().join("expanded.yaml");
    std::fs::write(&expanded_path, &expanded)?;
    let mut gateway = Gateway::from_file(&expanded_path)
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    with_gateway(&mut gateway, |gateway| {
        lighting_behaves_as_documented(gateway, &broker, port)
    })
}

/// Keys of the asyncapi binding this gateway does not build are refused at load, with the
/// position of the key and "not supported".
#[test]
fn asyncapi_keys_not_built_are_refused_at_their_position() -> Result<()> {
    let broker = Broker::start()?;
    let dir = tempfile::tempdir()?;
    let config = mqtt_kafka_example(dir.path(), free_port()?, &broker)?;
    let text = std::fs::read_to_string(&config)?;
    let cases = [
        (
            "    options:\n      specs:\n        mqtt_api:\n          server:",
            "    options:\n      tls: {}\n      specs:\n        mqtt_api:\n          server:",
            "options.tls",
        ),
        (
            "          server: mqtt://",
            "          security: {}\n          server: mqtt://",
            "options.specs.mqtt_api.security",
        ),
        (
            "              subject: kafka\ntelemetry",
            "              subject: kafka\n              overlay: x\ntelemetry",
            "overlay",
        ),
        (
            "            operation: watchMeasurements\n",
            "            operation: watchMeasurements\n            tag: lights\n",
            "tag",
        ),
    ];
    for (from, to, key) in cases {
        ensure!(text.contains(from), "the example changed: {from}");
        std::fs::write(&config, text.replacen(from, to, 1))?;
        let validated = zilla_tests::zilla(["validate", "-c"])?
            .arg(&config)
            .output()?;
        let said = String::from_utf8_lossy(&validated.stderr).into_owned()
            + &String::from_utf8_lossy(&validated.stdout);
        ensure!(!validated.status.success(), "{key} was accepted");
        ensure!(
            said.contains("zilla.yaml:") && said.contains(key) && said.contains("not supported"),
            "{key}: {said}"
        );
    }
    Ok(())
}

#[test]
fn http_kafka_proxy_generated_from_asyncapi_documents() -> Result<()> {
    let broker = Broker::start()?;
    shelter_topics(&broker)?;
    let routes = json!([
        {"when": [{"spec": "http_api", "operation": "createPet"}],
         "exit": "south_client", "with": {"spec": "kafka_api"}},
        {"when": [{"spec": "http_api", "operation": "listPets"},
                  {"spec": "http_api", "operation": "getPet"},
                  {"spec": "http_api", "operation": "streamPets"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "readPets"}},
        {"when": [{"spec": "http_api", "operation": "registerAdopter"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "registerAdopter"}},
    ]);
    let yaml = generated_config(
        "shelter",
        ("http_api", "shelter-http.yaml"),
        "shelter-kafka.yaml",
        "http://localhost:7114",
        routes,
        &broker,
    )?;
    let dir = tempfile::tempdir()?;
    let mut gateway = start(dir.path(), &yaml)?;
    with_gateway(&mut gateway, |gateway| {
        let port = gateway.address("shelter.north_server:tcp_server0").port();
        shelter_behaves_as_documented(gateway, &broker, port)
    })
}

/// The shelter topics, created on `broker`.
fn shelter_topics(broker: &Broker) -> Result<()> {
    broker.create_topic("shelter-pets", 1, true)?;
    broker.create_topic("shelter-adopters", 1, false)?;
    broker.create_topic("shelter-verified-adopters", 1, false)
}

/// What the shelter documents promise, through the gateway's HTTP port: pets created, listed
/// and read back from Kafka, an invalid pet answered 400 and kept out of Kafka, and an adopter
/// registered asynchronously, answered through the reply topic.
fn shelter_behaves_as_documented(gateway: &Gateway, broker: &Broker, port: u16) -> Result<()> {
    {
        let base = format!("http://127.0.0.1:{port}");
        let json_body = ["--header", "Content-Type: application/json"];
        let created = curl(&[
            json_body[0],
            json_body[1],
            "--header",
            "Idempotency-Key: rocky",
            "--data",
            r#"{"name":"Rocky","id":1}"#,
            &format!("{base}/pets"),
        ])?;
        ensure!(created.status == 204, "create: {created:?}");
        let invalid = curl(&[
            json_body[0],
            json_body[1],
            "--data",
            r#"{"name":"","id":-4}"#,
            &format!("{base}/pets"),
        ])?;
        ensure!(invalid.status == 400, "invalid create: {invalid:?}");
        let listed = curl(&[
            "--header",
            "Accept: application/json",
            &format!("{base}/pets"),
        ])?;
        ensure!(listed.status == 200, "list: {listed:?}");
        let pets: Value = serde_json::from_str(&listed.body)?;
        ensure!(pets == json!([{"name": "Rocky", "id": 1}]), "{pets}");
        // The pets as server-sent events, for as long as curl listens.
        let events = Peer::new("curl")
            .args([
                "-sS",
                "-N",
                "--max-time",
                "3",
                &format!("{base}/pets/events"),
            ])
            .timeout(Duration::from_secs(20))
            .run()?;
        let events = String::from_utf8_lossy(&events.stdout);
        ensure!(
            events.contains("data:") && events.contains("Rocky"),
            "events: {events}"
        );
        let one = curl(&[&format!("{base}/pets/rocky")])?;
        ensure!(one.status == 200, "get: {one:?}");
        ensure!(serde_json::from_str::<Value>(&one.body)?["name"] == "Rocky");

        // Asynchronous: 202 with a location, the answer produced to the reply topic with the
        // correlation id, then fetched at the location.
        let accepted = curl(&[
            json_body[0],
            json_body[1],
            "--header",
            "Prefer: respond-async",
            "--data",
            r#"{"name":"Ada","pets":[{"name":"Rocky"}]}"#,
            &format!("{base}/adopters"),
        ])?;
        ensure!(accepted.status == 202, "register: {accepted:?}");
        let location = accepted
            .header("location")
            .context("no location")?
            .to_owned();
        let correlation = location
            .strip_prefix("/adopters;cid=")
            .with_context(|| format!("location {location}"))?
            .to_owned();
        let requests = records(broker, "shelter-adopters", 1, 30)?;
        ensure!(
            requests[0]["headers"]["zilla:correlation-id"] == correlation.as_str(),
            "{requests:?}"
        );
        produce(
            broker,
            "shelter-verified-adopters",
            "ada",
            r#"{"name":"Ada","status":"approved"}"#,
            &[&format!("zilla:correlation-id={correlation}")],
        )?;
        let answered = curl(&["--header", "Prefer: wait=20", &format!("{base}{location}")])?;
        ensure!(answered.status == 200, "answer: {answered:?}");
        ensure!(answered.body.contains("approved"), "{answered:?}");

        let pets = records(broker, "shelter-pets", 1000, 5)?;
        ensure!(pets.len() == 1, "only the valid pet is in Kafka: {pets:?}");
        gateway.wait_for_stdout("MODEL_JSON_VALIDATION_FAILED", Duration::from_secs(10))?;
        Ok(())
    }
}

/// `examples/asyncapi.http.kafka.proxy` as composites, then its expansion (`zilla validate
/// -v`) on a fresh broker: both behave as the shelter documents say.
#[test]
fn asyncapi_http_kafka_proxy_example_and_its_expansion_behave_the_same() -> Result<()> {
    let example = workspace_dir().join("examples/asyncapi.http.kafka.proxy");
    let broker = Broker::start()?;
    shelter_topics(&broker)?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    for file in ["zilla.yaml", "http-asyncapi.yaml", "kafka-asyncapi.yaml"] {
        let text = std::fs::read_to_string(example.join(file))?
            .replace("7114", &port.to_string())
            .replace("localhost:9092", &broker.address());
        std::fs::write(dir.path().join(file), text)?;
    }
    let config = dir.path().join("zilla.yaml");
    let validated = zilla_tests::zilla(["validate", "-v", "-c"])?
        .arg(&config)
        .args(["-P", &format!("{}={}", LOOPBACK.0, LOOPBACK.1)])
        .output()?;
    success(&validated)?;
    let expanded = String::from_utf8(validated.stdout)?;
    ensure!(
        expanded.contains("type: http-kafka")
            && expanded.contains("type: sse-kafka")
            && !expanded.contains("type: asyncapi"),
        "{expanded}"
    );
    let mut gateway = Gateway::from_file(&config)
        .property(LOOPBACK.0, LOOPBACK.1)
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    with_gateway(&mut gateway, |gateway| {
        shelter_behaves_as_documented(gateway, &broker, port)
    })?;

    // The expansion, on a fresh broker and port (the checks count records).
    let fresh = Broker::start()?;
    shelter_topics(&fresh)?;
    let fresh_port = free_port()?;
    let expanded = expanded
        .replace(&broker.address(), &fresh.address())
        .replace(&format!("port: {port}"), &format!("port: {fresh_port}"));
    let path = dir.path().join("expanded.yaml");
    std::fs::write(&path, expanded)?;
    let mut gateway = Gateway::from_file(&path)
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    with_gateway(&mut gateway, |gateway| {
        shelter_behaves_as_documented(gateway, &fresh, fresh_port)
    })
}

/// Public AsyncAPI documents: the examples the `@asyncapi/cli` package ships (also as 3.0
/// documents where they are 3.1), documents assembled from the example objects of
/// `@asyncapi/specs` (2.6.0 and 3.0.0), and our test documents. Whatever `@asyncapi/parser`
/// finds valid in a version we read is accepted, or refused with a located message naming
/// what is not supported; nothing panics.
#[test]
fn parser_agrees_with_asyncapi_parser_on_public_documents() -> Result<()> {
    let node_modules = peers_dir().join("node/node_modules");
    let examples = peers_dir().join("node/corpus/cli-examples");
    ensure!(
        node_modules.join("@asyncapi/parser").exists() && examples.exists(),
        "install the peers: cargo xtask peers"
    );
    let dir = tempfile::tempdir()?;
    let mut corpus: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path)?;
        if text.contains("3.1.0") {
            corpus.push((format!("v30-{name}"), text.replacen("3.1.0", "3.0.0", 1)));
        }
        corpus.push((name, text));
    }
    let fragments = node_modules.join("@asyncapi/specs/examples");
    for version in ["2.6.0", "3.0.0"] {
        let first = |file: &str| -> Result<Value> {
            let text = std::fs::read_to_string(fragments.join(version).join(file))?;
            let list: Value = serde_json::from_str(&text)?;
            Ok(list[0].clone())
        };
        let mut whole = json!({
            "asyncapi": version,
            "info": first("info.json")?,
            "servers": first("servers.json")?,
            "channels": first("channels.json")?,
            "components": first("components.json")?,
        });
        if version == "3.0.0" {
            whole["operations"] = first("operations.json")?;
        }
        corpus.push((format!("specs-{version}-whole.json"), whole.to_string()));
        let channel = if version == "2.6.0" {
            "channelItem.json"
        } else {
            "channel.json"
        };
        for (key, file) in [("channels", channel), ("servers", "server.json")] {
            let mut one = json!({"asyncapi": version, "info": first("info.json")?, "channels": {}});
            one[key] = json!({"example": first(file)?});
            corpus.push((format!("specs-{version}-{file}"), one.to_string()));
        }
    }
    for entry in std::fs::read_dir(specs_dir())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        corpus.push((format!("ours-{name}"), std::fs::read_to_string(&path)?));
    }
    for (name, text) in &corpus {
        std::fs::write(dir.path().join(name), text)?;
    }
    let output = Peer::new("node")
        .env("NODE_PATH", &node_modules)
        .arg(workspace_dir().join("tests/tests/asyncapi/validate.cjs"))
        .arg(dir.path())
        .timeout(Duration::from_secs(300))
        .run()?;
    success(&output)?;
    let verdicts: Value = serde_json::from_slice(&output.stdout)?;

    let mut accepted = 0;
    let mut report = Vec::new();
    for (name, text) in &corpus {
        let valid = verdicts[name]["valid"].as_bool().context("no verdict")?;
        let ours = parse(name, text);
        if let Err(error) = &ours {
            ensure!(
                error.position.line >= 1 && error.to_string().starts_with(name.as_str()),
                "{name}: unlocated refusal {error}"
            );
        }
        let supported_version = [
            "asyncapi: 2.",
            "asyncapi: 3.0",
            "\"asyncapi\":\"2.",
            "\"asyncapi\":\"3.0",
        ]
        .iter()
        .any(|marker| text.replace("'", "").replace(": \"", ": ").contains(marker));
        match (&ours, valid) {
            (Ok(_), true) => accepted += 1,
            (Err(error), true) if supported_version => {
                // A valid document we read may be refused only for what the gateway does
                // not support, and the message says so.
                ensure!(
                    error.message.contains("not supported")
                        || error.message.contains("outside the document"),
                    "{name}: valid for @asyncapi/parser, refused: {error}"
                );
            }
            _ => {}
        }
        report.push(format!(
            "{name}: parser {} / ours {}",
            if valid { "valid" } else { "invalid" },
            match &ours {
                Ok(_) => "accepted".to_owned(),
                Err(error) => format!("refused ({error})"),
            }
        ));
    }
    ensure!(
        accepted >= 10,
        "too few documents accepted:\n{}",
        report.join("\n")
    );
    Ok(())
}
