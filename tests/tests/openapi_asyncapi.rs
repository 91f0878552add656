//! `examples/openapi.asyncapi.kafka.proxy`, in the shape of Zilla's `openapi.asyncapi.kakfa.proxy`
//! example: an `openapi` server exiting to an `openapi-asyncapi` proxy exiting to an
//! `asyncapi` Kafka client, run by the real gateway against tansu, driven with curl as that
//! example's README drives it, and with confluent-kafka reading and writing the topics: the
//! records (keys, values, headers) the REST calls produce, a body that breaks the OpenAPI
//! schema kept out of Kafka, the collection and items read back, and request/reply over
//! Kafka both synchronously and with `prefer: respond-async`. Then the same checks on the
//! config `zilla validate -v` prints for it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use zilla_tests::{Broker, Gateway, Peer, curl, free_port, python, success, workspace_dir};

const LOOPBACK: (&str, &str) = ("zilla.binding.composite.listen.host", "127.0.0.1");

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
    Ok(serde_json::from_slice(&output.stdout)?)
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

fn topics(broker: &Broker) -> Result<()> {
    broker.create_topic("shelter-pets", 1, true)?;
    broker.create_topic("shelter-pet-updates", 1, false)?;
    broker.create_topic("shelter-pet-answers", 1, false)
}

/// What the documents promise, through the gateway's HTTP port.
fn pets_behave_as_documented(broker: &Broker, port: u16) -> Result<()> {
    let base = format!("http://127.0.0.1:{port}");
    let json_body = ["--header", "Content-Type: application/json"];

    // createPet: produced keyed by the idempotency key, with the content type as header.
    let created = curl(&[
        json_body[0],
        json_body[1],
        "--header",
        "Idempotency-Key: 1",
        "--data",
        r#"{ "id": 1, "name": "Spike" }"#,
        &format!("{base}/pets"),
    ])?;
    ensure!(created.status == 204, "create: {created:?}");
    // Breaks the Pet schema (`name` must not be empty): 400, nothing produced.
    let invalid = curl(&[
        json_body[0],
        json_body[1],
        "--header",
        "Idempotency-Key: 2",
        "--data",
        r#"{ "id": 2, "name": "" }"#,
        &format!("{base}/pets"),
    ])?;
    ensure!(invalid.status == 400, "invalid create: {invalid:?}");
    let pets = records(broker, "shelter-pets", 1000, 5)?;
    ensure!(
        pets == vec![json!({
            "key": "1",
            "value": r#"{ "id": 1, "name": "Spike" }"#,
            "headers": {"content-type": "application/json"},
        })],
        "records: {pets:?}"
    );

    // listPets: every latest value as one array; getPet: one by key.
    let listed = curl(&[
        "--header",
        "Accept: application/json",
        &format!("{base}/pets"),
    ])?;
    ensure!(listed.status == 200, "list: {listed:?}");
    let listed: Value = serde_json::from_str(&listed.body)?;
    ensure!(listed == json!([{"id": 1, "name": "Spike"}]), "{listed}");
    let one = curl(&[&format!("{base}/pets/1")])?;
    ensure!(one.status == 200, "get: {one:?}");
    ensure!(serde_json::from_str::<Value>(&one.body)?["name"] == "Spike");
    let none = curl(&[&format!("{base}/pets/7")])?;
    ensure!(none.status == 404, "get unknown: {none:?}");

    // updatePet with `prefer: respond-async`: 202 and a location; the request record carries
    // the reply topic and correlation id; the answer produced on the reply topic is fetched
    // at the location.
    let accepted = curl(&[
        json_body[0],
        json_body[1],
        "--header",
        "Prefer: respond-async",
        "--request",
        "PUT",
        "--data",
        r#"{ "id": 1, "name": "Spike the Second" }"#,
        &format!("{base}/pets/1"),
    ])?;
    ensure!(accepted.status == 202, "update: {accepted:?}");
    let location = accepted
        .header("location")
        .context("no location")?
        .to_owned();
    let correlation = location
        .strip_prefix("/pets/1;cid=")
        .with_context(|| format!("location {location}"))?
        .to_owned();
    let updates = records(broker, "shelter-pet-updates", 1, 30)?;
    let update = updates.first().context("no update record")?;
    ensure!(update["key"] == "1", "{update}");
    ensure!(
        update["value"] == r#"{ "id": 1, "name": "Spike the Second" }"#,
        "{update}"
    );
    let headers = &update["headers"];
    ensure!(
        headers["zilla:correlation-id"] == correlation.as_str()
            && headers["zilla:reply-to"] == "shelter-pet-answers"
            && headers[":method"] == "PUT"
            && headers[":path"] == "/pets/1"
            && headers["content-type"] == "application/json",
        "{update}"
    );
    produce(
        broker,
        "shelter-pet-answers",
        "1",
        r#"{"updated":true}"#,
        &[&format!("zilla:correlation-id={correlation}")],
    )?;
    let answered = curl(&["--header", "Prefer: wait=20", &format!("{base}{location}")])?;
    ensure!(answered.status == 200, "answer: {answered:?}");
    ensure!(answered.body == r#"{"updated":true}"#, "{answered:?}");

    // updatePet without `prefer`: the request waits for its reply.
    let url = format!("{base}/pets/1");
    let waiting = std::thread::spawn(move || {
        curl(&[
            "--header",
            "Content-Type: application/json",
            "--request",
            "PUT",
            "--data",
            r#"{ "id": 1, "name": "Spike the Third" }"#,
            &url,
        ])
    });
    let updates = records(broker, "shelter-pet-updates", 2, 30)?;
    let correlation = updates
        .get(1)
        .and_then(|update| update["headers"]["zilla:correlation-id"].as_str())
        .with_context(|| format!("no second update: {updates:?}"))?
        .to_owned();
    produce(
        broker,
        "shelter-pet-answers",
        "1",
        r#"{"updated":"again"}"#,
        &[
            &format!("zilla:correlation-id={correlation}"),
            ":status=200",
        ],
    )?;
    let answered = waiting
        .join()
        .map_err(|_| anyhow::anyhow!("curl thread panicked"))??;
    ensure!(answered.status == 200, "sync update: {answered:?}");
    ensure!(answered.body == r#"{"updated":"again"}"#, "{answered:?}");

    // deletePet: a tombstone keyed by the path parameter; the pet is gone.
    let deleted = curl(&["--request", "DELETE", &format!("{base}/pets/1")])?;
    ensure!(deleted.status == 204, "delete: {deleted:?}");
    // (The topic is compacted: the broker may already have dropped the record it replaces.)
    let pets = records(broker, "shelter-pets", 2, 10)?;
    ensure!(
        pets.last()
            .is_some_and(|record| record["key"] == "1" && record["value"].is_null()),
        "records: {pets:?}"
    );
    let gone = curl(&[&format!("{base}/pets/1")])?;
    ensure!(gone.status == 404, "get deleted: {gone:?}");
    Ok(())
}

fn run(config: &Path, broker: &Broker, port: u16) -> Result<()> {
    let mut gateway = Gateway::from_file(config)
        .property(LOOPBACK.0, LOOPBACK.1)
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    let result = pets_behave_as_documented(broker, port).with_context(|| {
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

/// The example as composites, then its expansion (`zilla validate -v`) on a fresh broker and
/// port: both behave as the documents say.
#[test]
fn openapi_asyncapi_kafka_proxy_example_and_its_expansion_behave_the_same() -> Result<()> {
    let example = workspace_dir().join("examples/openapi.asyncapi.kafka.proxy");
    let broker = Broker::start()?;
    topics(&broker)?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    for file in ["zilla.yaml", "pets-openapi.yaml", "pets-asyncapi.yaml"] {
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
            && !expanded.contains("type: openapi")
            && !expanded.contains("type: asyncapi"),
        "{expanded}"
    );
    run(&config, &broker, port)?;

    let fresh = Broker::start()?;
    topics(&fresh)?;
    let fresh_port = free_port()?;
    let expanded = expanded
        .replace(&broker.address(), &fresh.address())
        .replace(&format!("port: {port}"), &format!("port: {fresh_port}"));
    let path = dir.path().join("expanded.yaml");
    std::fs::write(&path, expanded)?;
    run(&path, &fresh, fresh_port)
}
