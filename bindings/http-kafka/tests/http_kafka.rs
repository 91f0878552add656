//! The http-kafka binding end to end: the pipeline `tcp server → http server → http-kafka →
//! kafka cache_client → kafka cache_server → kafka client → tcp client` built by the engine
//! from a config, driven by the real `curl`, against the real broker tansu, with the Python
//! confluent-kafka client as the independent Kafka peer (producing, consuming, and acting as
//! the service that answers requests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use support::{
    Broker, CONSUME, Exchange, Gateway, PRODUCE, SERVICE, check, config, curl, eventually, finish,
    run_python, spawn_python,
};

/// The routes of Zilla's `http.kafka.crud` example.
const CRUD: &str = r#"    routes:
      - when:
          - method: POST
            path: /items
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: items-snapshots
          key: ${idempotencyKey}
      - when:
          - method: PUT
            path: /items/{id}
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: items-snapshots
          key: ${params.id}
      - when:
          - method: DELETE
            path: /items/{id}
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: items-snapshots
          key: ${params.id}
      - when:
          - method: GET
            path: /items
        exit: north_kafka_cache_client
        with:
          capability: fetch
          topic: items-snapshots
          merge:
            content-type: application/json
      - when:
          - method: GET
            path: /items/{id}
        exit: north_kafka_cache_client
        with:
          capability: fetch
          topic: items-snapshots
          filters:
            - key: ${params.id}"#;

/// The routes of Zilla's `http.kafka.sync` example, with options spelled out.
const SYNC: &str = r#"    options:
      idempotency:
        header: idempotency-key
      correlation:
        headers:
          reply-to: zilla:reply-to
          correlation-id: zilla:correlation-id
    routes:
      - when:
          - path: /items/{id}
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: items-requests
          acks: leader_only
          key: ${params.id}
          overrides:
            x-item: item-${params.id}
          reply-to: items-responses"#;

/// The routes of Zilla's `http.kafka.async` example.
const ASYNC: &str = r#"    routes:
      - when:
          - method: PUT
            path: /items/{id}
          - method: GET
            path: /items/{id};cid={correlationId}
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: items-requests
          key: ${params.id}
          reply-to: items-responses
          async:
            location: /items/${params.id};cid=${correlationId}"#;

/// One-way routes as in Zilla's `http.kafka.oneway` example, plus `acks: none` and a small
/// topic.
const ONEWAY: &str = r#"    routes:
      - when:
          - path: /events
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: events
      - when:
          - path: /fire
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: events
          acks: none
      - when:
          - path: /small
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: small"#;

fn consume(broker: &Broker, topic: &str, count: usize) -> Result<Vec<Value>> {
    let records = run_python(CONSUME, &[&broker.address(), topic, &count.to_string()], "")?;
    Ok(records.as_array().cloned().unwrap_or_default())
}

fn header<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record["headers"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str())
}

fn json_body(exchange: &Exchange) -> Value {
    serde_json::from_str(&exchange.body).unwrap_or_else(|_| panic!("not JSON: {:?}", exchange.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_on_a_compacted_topic() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic_with("items-snapshots", 1, &["cleanup.policy=compact"])?;
    let gateway = Gateway::start(&config(&broker, &["items-snapshots"], CRUD));
    let items = gateway.url("/items");

    let empty = eventually(&[&items], |e| e.status == 200).await;
    assert_eq!(empty.body, "[]");
    assert_eq!(empty.header("content-type"), Some("application/json"));

    // Create with a client-chosen key, as the example's test does.
    let created = curl(&[
        "-X",
        "POST",
        &items,
        "-H",
        "Idempotency-Key: 1",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"greeting":"Hello, world1"}"#,
    ])
    .await;
    assert_eq!(created.status, 204);
    assert!(created.body.is_empty());
    let one = eventually(&[&gateway.url("/items/1")], |e| e.status == 200).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, r#"{"greeting":"Hello, world1"}"#);
    assert_eq!(one.header("content-type"), Some("application/json"));
    assert!(one.header("etag").is_some());

    // Create without a key: a UUID is the key.
    let put = curl(&[
        "-X",
        "PUT",
        &gateway.url("/items/2"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"greeting":"two"}"#,
    ])
    .await;
    assert_eq!(put.status, 204);
    let anonymous = curl(&[
        "-X",
        "POST",
        &items,
        "-H",
        "Content-Type: text/plain",
        "-d",
        "\"three\"",
    ])
    .await;
    assert_eq!(anonymous.status, 204);
    let all = eventually(&[&items], |e| {
        e.status == 200 && json_body(e).as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    assert_eq!(
        json_body(&all),
        json!([{"greeting":"Hello, world1"}, {"greeting":"two"}, "three"])
    );

    // Update and delete.
    let updated = curl(&[
        "-X",
        "PUT",
        &gateway.url("/items/1"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"greeting":"Hello again"}"#,
    ])
    .await;
    assert_eq!(updated.status, 204);
    let deleted = curl(&["-X", "DELETE", &gateway.url("/items/2")]).await;
    assert_eq!(deleted.status, 204);
    let gone = eventually(&[&gateway.url("/items/2")], |e| e.status == 404).await;
    assert_eq!(gone.status, 404);
    assert!(gone.body.is_empty());
    let one = eventually(&[&gateway.url("/items/1")], |e| e.body.contains("again")).await;
    assert_eq!(one.body, r#"{"greeting":"Hello again"}"#);
    let all = eventually(&[&items], |e| {
        json_body(e).as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(
        json_body(&all),
        json!(["three", {"greeting":"Hello again"}])
    );
    assert_eq!(curl(&[&gateway.url("/items/none")]).await.status, 404);

    // What the independent client reads: the records with their keys and content types, and
    // the delete as a tombstone.
    let records = consume(&broker, "items-snapshots", 5)?;
    assert_eq!(records.len(), 5);
    assert_eq!(records[0]["key"], "1");
    assert_eq!(
        header(&records[0], "content-type"),
        Some("application/json")
    );
    assert_eq!(records[1]["key"], "2");
    let generated = records[2]["key"].as_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID key: {generated}");
    assert_eq!(header(&records[2], "content-type"), Some("text/plain"));
    assert_eq!(records[4]["key"], "2");
    assert_eq!(records[4]["value"], Value::Null);
    assert!(records[4]["headers"].as_array().unwrap().is_empty());

    gateway.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_etags_not_modified_and_waiting_for_changes() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic_with("items-snapshots", 1, &["cleanup.policy=compact"])?;
    let gateway = Gateway::start(&config(&broker, &["items-snapshots"], CRUD));
    let key = "5cf7a1d5-3772-49ef-86e7-ba6f2c7d7d07";
    let item = gateway.url(&format!("/items/{key}"));
    let items = gateway.url("/items");
    let produce = |value: &str, etag: &str| {
        let records = json!([{
            "key": key,
            "value": value,
            "headers": [["content-type", "application/json"], ["etag", etag]],
        }]);
        run_python(
            PRODUCE,
            &[&broker.address(), "items-snapshots"],
            &records.to_string(),
        )
    };

    let empty = eventually(&[&items], |e| e.status == 200).await;
    assert_eq!(empty.body, "[]");
    let empty_tag = empty.header("etag").unwrap().to_owned();
    assert_eq!(
        curl(&["-H", &format!("If-None-Match: {empty_tag}"), &items])
            .await
            .status,
        304
    );

    produce(r#"{"message":"Hello World"}"#, "revision=1")?;
    let all = eventually(&[&items], |e| e.body != "[]").await;
    assert_eq!(all.body, r#"[{"message":"Hello World"}]"#);
    let all_tag = all.header("etag").unwrap().to_owned();
    assert_ne!(all_tag, empty_tag);

    let one = curl(&[&item]).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, r#"{"message":"Hello World"}"#);
    let tag = one.header("etag").unwrap().to_owned();
    // Zilla's tag: the progress after the record (one partition, next offset 1), then the
    // record's own etag header.
    assert_eq!(tag, "AQIAAg==/revision=1");

    let cached = curl(&["-H", &format!("If-None-Match: {tag}"), &item]).await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("etag"), Some(tag.as_str()));
    assert!(cached.body.is_empty());
    let cached = curl(&["-H", &format!("If-None-Match: {all_tag}"), &items]).await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("content-type"), Some("application/json"));

    // Waiting without a change ends with 304 after the wait.
    let started = Instant::now();
    let waited = curl(&[
        "-H",
        &format!("If-None-Match: {tag}"),
        "-H",
        "Prefer: wait=1",
        &item,
    ])
    .await;
    assert_eq!(waited.status, 304);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // Waiting with a change answers as soon as it arrives, for the item and the collection.
    let item_wait = {
        let (tag, item) = (tag.clone(), item.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let exchange = curl(&[
                "-H",
                &format!("If-None-Match: {tag}"),
                "-H",
                "Prefer: wait=20",
                &item,
            ])
            .await;
            (exchange, started.elapsed())
        })
    };
    let items_wait = {
        let (tag, items) = (all_tag.clone(), items.clone());
        tokio::spawn(async move {
            curl(&[
                "-H",
                &format!("If-None-Match: {tag}"),
                "-H",
                "Prefer: wait=20",
                &items,
            ])
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    produce(r#"{"message":"Changed"}"#, "revision=2")?;
    let (changed, elapsed) = item_wait.await?;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, r#"{"message":"Changed"}"#);
    assert_eq!(changed.header("etag"), Some("AQIABA==/revision=2"));
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let changed_all = items_wait.await?;
    assert_eq!(changed_all.status, 200);
    assert_eq!(changed_all.body, r#"[{"message":"Changed"}]"#);
    assert_ne!(changed_all.header("etag"), Some(all_tag.as_str()));

    // An old tag is answered with the current value at once.
    let stale = curl(&["-H", &format!("If-None-Match: {tag}"), &item]).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, r#"{"message":"Changed"}"#);

    // A wait on a missing item ends with 404.
    let missing = curl(&["-H", "Prefer: wait=1", &gateway.url("/items/missing")]).await;
    assert_eq!(missing.status, 404);

    gateway.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_request_reply_through_a_python_service() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic_with("items-requests", 1, &[])?;
    broker.create_topic_with("items-responses", 1, &[])?;
    let gateway = Gateway::start(&config(&broker, &["items-responses"], SYNC));
    let service = spawn_python(SERVICE, &[&broker.address(), "items-requests", "3", "201"])?;

    let body = r#"{"greeting":"Hello, World!"}"#;
    let replied = curl(&[
        "-X",
        "PUT",
        &gateway.url("/items/42?v=1"),
        "-H",
        "Idempotency-Key: request-1",
        "-H",
        "Content-Type: application/json",
        "-H",
        "If-Match: AQIAAg==/revision=1",
        "-d",
        body,
    ])
    .await;
    assert_eq!(replied.status, 201, "{replied:?}");
    assert_eq!(replied.header("content-type"), Some("application/json"));
    assert_eq!(replied.header("x-service"), Some("python"));
    assert_eq!(
        json_body(&replied),
        json!({"echo": body, "if-match": "revision=1"})
    );

    // HTTP/2, a generated idempotency key, and an if-match the service refuses.
    let refused = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "POST",
        &gateway.url("/items/43"),
        "-H",
        "If-Match: AQIAAg==/revision=41",
        "-d",
        "x",
    ])
    .await;
    assert_eq!(refused.status, 412);

    // A request whose if-match has no record tag goes without one.
    let plain = curl(&[
        "-X",
        "DELETE",
        &gateway.url("/items/44"),
        "-H",
        "If-Match: AQIAAg==",
    ])
    .await;
    assert_eq!(plain.status, 201);
    assert_eq!(json_body(&plain)["if-match"], Value::Null);

    let seen = finish(service).await?;
    let seen = seen.as_array().unwrap();
    assert_eq!(seen.len(), 3);
    let first = &seen[0];
    assert_eq!(first["key"], "42");
    assert_eq!(first["value"], body);
    let names: Vec<&str> = first["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap())
        .collect();
    assert_eq!(&names[..3], [":scheme", ":method", ":path"]);
    assert!(names.contains(&":authority"));
    assert!(!names.contains(&"content-length"));
    assert_eq!(
        &names[names.len() - 3..],
        ["zilla:reply-to", "x-item", "zilla:correlation-id"]
    );
    assert_eq!(header(first, ":method"), Some("PUT"));
    assert_eq!(header(first, ":path"), Some("/items/42?v=1"));
    assert_eq!(header(first, "idempotency-key"), Some("request-1"));
    assert_eq!(header(first, "if-match"), Some("revision=1"));
    assert_eq!(header(first, "zilla:reply-to"), Some("items-responses"));
    assert_eq!(header(first, "x-item"), Some("item-42"));

    // The correlation id is the idempotency key and the MD5 of key, headers and body, which
    // the peer checks on its own.
    let correlation_id = header(first, "zilla:correlation-id").unwrap();
    let digest = run_python(
        r#"
import hashlib, json, sys
record = json.load(sys.stdin)
md5 = hashlib.md5(record["key"].encode())
for name, value in record["headers"][:-1]:
    md5.update(name.encode()); md5.update(value.encode())
md5.update(record["value"].encode())
print(json.dumps(md5.hexdigest()))
"#,
        &[],
        &first.to_string(),
    )?;
    assert_eq!(
        correlation_id,
        format!("request-1-{}", digest.as_str().unwrap())
    );
    let generated = header(&seen[1], "idempotency-key");
    assert_eq!(generated, None, "no idempotency key header was sent");
    assert_eq!(header(&seen[1], ":method"), Some("POST"));
    assert_eq!(header(&seen[1], ":scheme"), Some("http"));

    // The same request again (a retry) is answered with the first reply, from the topic.
    let retried = curl(&[
        "-X",
        "PUT",
        &gateway.url("/items/42?v=1"),
        "-H",
        "Idempotency-Key: request-1",
        "-H",
        "Content-Type: application/json",
        "-H",
        "If-Match: AQIAAg==/revision=1",
        "-d",
        body,
    ])
    .await;
    assert_eq!(retried.status, 201);
    assert_eq!(retried.body, replied.body);

    gateway.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_accepted_then_location_answers_with_the_reply() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic_with("items-requests", 1, &[])?;
    broker.create_topic_with("items-responses", 1, &[])?;
    let gateway = Gateway::start(&config(&broker, &["items-responses"], ASYNC));

    let accepted = curl(&[
        "-X",
        "PUT",
        &gateway.url("/items/7"),
        "-H",
        "Idempotency-Key: 1700000000",
        "-H",
        "Prefer: respond-async",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"greeting":"Hello"}"#,
    ])
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    assert_eq!(accepted.header("content-length"), Some("0"));
    let location = accepted.header("location").unwrap().to_owned();
    let correlation_id = location.strip_prefix("/items/7;cid=").unwrap().to_owned();
    assert!(
        correlation_id.starts_with("1700000000-"),
        "{correlation_id}"
    );
    assert_eq!(correlation_id.len(), "1700000000-".len() + 32);

    // No reply yet: 202 with the location again, also after a short wait.
    let pending = curl(&[&gateway.url(&location)]).await;
    assert_eq!(pending.status, 202);
    assert_eq!(pending.header("location"), Some(location.as_str()));
    let started = Instant::now();
    let pending = curl(&["-H", "Prefer: wait=1", &gateway.url(&location)]).await;
    assert_eq!(pending.status, 202);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A waiting GET gets the reply as soon as the service answers.
    let waiting = {
        let url = gateway.url(&location);
        tokio::spawn(async move { curl(&["-H", "Prefer: wait=20", &url]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = run_python(
        SERVICE,
        &[&broker.address(), "items-requests", "1", "200"],
        "",
    )?;
    assert_eq!(
        header(&seen[0], "zilla:correlation-id"),
        Some(correlation_id.as_str())
    );
    assert_eq!(header(&seen[0], "prefer"), None, "prefer is not copied");
    let replied = waiting.await?;
    assert_eq!(replied.status, 200, "{replied:?}");
    assert_eq!(json_body(&replied)["echo"], r#"{"greeting":"Hello"}"#);

    // Later GETs find the reply on the topic.
    let again = curl(&[&gateway.url(&location)]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, replied.body);

    // Without `prefer: respond-async` the same route answers synchronously.
    let service = spawn_python(SERVICE, &[&broker.address(), "items-requests", "2", "200"])?;
    let sync = curl(&["-X", "PUT", &gateway.url("/items/8"), "-d", "sync"]).await;
    assert_eq!(sync.status, 200);
    assert_eq!(json_body(&sync)["echo"], "sync");
    finish(service).await?;

    gateway.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oneway_and_bad_input() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic_with("events", 1, &[])?;
    broker.create_topic_with("small", 1, &["max.message.bytes=1024"])?;
    let gateway = Gateway::start(&config(&broker, &[], ONEWAY));

    let sent = curl(&[
        "-X",
        "POST",
        &gateway.url("/events"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"event":"one"}"#,
    ])
    .await;
    assert_eq!(sent.status, 204);
    // Not valid JSON: no model is configured, so it passes through as it is.
    let invalid = curl(&[
        "-X",
        "POST",
        &gateway.url("/events"),
        "-H",
        "Content-Type: application/json",
        "-d",
        "{not json",
    ])
    .await;
    assert_eq!(invalid.status, 204);
    let fired = curl(&["-X", "POST", &gateway.url("/fire"), "-d", "fire"]).await;
    assert_eq!(fired.status, 204);
    let records = consume(&broker, "events", 3)?;
    let values: Vec<&str> = records
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, [r#"{"event":"one"}"#, "{not json", "fire"]);
    assert_eq!(
        header(&records[0], "content-type"),
        Some("application/json")
    );
    assert_eq!(records[0]["key"], Value::Null);

    // Unknown path.
    let unknown = curl(&["-X", "POST", &gateway.url("/nowhere"), "-d", "x"]).await;
    assert_eq!(unknown.status, 404);

    // Larger than the topic allows: 413, and nothing is produced.
    let large = "x".repeat(2000);
    let too_large = curl(&["-X", "POST", &gateway.url("/small"), "-d", &large]).await;
    assert_eq!(too_large.status, 413);
    let chunked = curl(&[
        "-X",
        "POST",
        &gateway.url("/small"),
        "-H",
        "Transfer-Encoding: chunked",
        "-d",
        &large,
    ])
    .await;
    assert_eq!(chunked.status, 413);
    let fits = curl(&["-X", "POST", &gateway.url("/small"), "-d", "fits"]).await;
    assert_eq!(fits.status, 204);
    let small = consume(&broker, "small", 1)?;
    assert_eq!(small.len(), 1);
    assert_eq!(small[0]["value"], "fits");

    gateway.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_never_answered_2xx_and_others_are_unaffected() -> Result<()> {
    let mut broker = Broker::start()?;
    broker.create_topic_with("events", 1, &[])?;
    broker.create_topic_with("items-requests", 1, &[])?;
    broker.create_topic_with("items-responses", 1, &[])?;
    let routes = format!("{ONEWAY}\n{}", SYNC.split_once("    routes:\n").unwrap().1);
    let gateway = Gateway::start_with(
        &config(&broker, &["items-responses"], &routes),
        &["zilla.binding.http.kafka.request.timeout.millis=3000"],
    );

    // A request waiting for a reply that does not come does not hold up other clients.
    let waiting = {
        let url = gateway.url("/items/1");
        tokio::spawn(async move {
            tokio::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "3",
                ])
                .args(["-X", "PUT", &url, "-d", "no service"])
                .output()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let other = curl(&["-X", "POST", &gateway.url("/events"), "-d", "meanwhile"]).await;
    assert_eq!(other.status, 204);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let waited = waiting.await??;
    assert_eq!(
        String::from_utf8_lossy(&waited.stdout),
        "000",
        "still waiting at curl's limit"
    );

    broker.stop();
    for path in ["/events", "/items/2"] {
        let failed = curl(&["-X", "POST", &gateway.url(path), "-d", "lost"]).await;
        assert!(
            failed.status == 503 || failed.status == 504,
            "{path}: {failed:?}"
        );
        assert!(failed.body.is_empty());
    }

    gateway.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_request_without_reply_is_504_and_huge_waits_are_clamped() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic_with("items-requests", 1, &[])?;
    broker.create_topic_with("items-responses", 1, &[])?;
    // The async route beside the sync one, on `/later/...`, for waiting on a location.
    let later = ASYNC
        .split_once("    routes:\n")
        .unwrap()
        .1
        .replace("/items/", "/later/");
    let routes = format!("{SYNC}\n{later}");
    let gateway = Gateway::start_with(
        &config(&broker, &["items-responses"], &routes),
        &[
            "zilla.binding.http.kafka.reply.timeout.millis=1500",
            "zilla.binding.http.kafka.maximum.wait.millis=1000",
        ],
    );

    // No service answers: 504 once the reply deadline passes, the request record produced.
    let unanswered = curl(&[
        "--max-time",
        "20",
        "-X",
        "PUT",
        &gateway.url("/items/1"),
        "-d",
        "nobody listens",
    ])
    .await;
    assert_eq!(unanswered.status, 504, "{unanswered:?}");
    assert!(unanswered.body.is_empty());
    let produced = consume(&broker, "items-requests", 1)?;
    assert_eq!(produced.len(), 1);

    // A wait no timer can hold is cut to the maximum: 202 again, no panic.
    for wait in ["99999999999", "999999999999999999999999999999"] {
        let pending = curl(&[
            "--max-time",
            "20",
            "-H",
            &format!("Prefer: wait={wait}"),
            &gateway.url("/later/1;cid=1-none"),
        ])
        .await;
        assert_eq!(pending.status, 202, "{pending:?}");
    }
    // The gateway still serves.
    let still = curl(&["--max-time", "20", &gateway.url("/later/1;cid=1-none")]).await;
    assert_eq!(still.status, 202);

    gateway.stop().await;
    Ok(())
}

/// An http-kafka binding in front of a kafka chain that is built but never reached.
fn mapping(binding: &str) -> String {
    format!(
        r#"
name: test
bindings:
  http0:
    type: http-kafka
    kind: proxy
{binding}
  kafka0:
    type: kafka
    kind: cache_client
    exit: kafka1
  kafka1:
    type: kafka
    kind: cache_server
    exit: kafka2
  kafka2:
    type: kafka
    kind: client
    options:
      servers:
        - 127.0.0.1:9
    exit: tcp0
  tcp0:
    type: tcp
    kind: client
"#
    )
}

/// Configs in the shapes Zilla's own http-kafka configs take (every option, async, the
/// correlation-id header, dynamic topics, child filters, merge patch) load and build.
#[tokio::test]
async fn zilla_config_shapes_are_accepted() {
    let accepted = [
        r#"    options:
      idempotency:
        header: idempotency-key
      correlation:
        headers:
          reply-to: zilla:reply-to
          correlation-id: zilla:correlation-id
    routes:
      - exit: kafka0
        when:
          - method: POST
            path: /items/{id}/{command}
          - method: GET
            path: /items/{id}/{command};{correlationId}
        with:
          capability: produce
          topic: items-commands
          acks: leader_only
          key: ${params.id}
          overrides:
            zilla:command: ${params.command}
          reply-to: items-replies
          async:
            location: /items/${params.id}/${params.command};${correlationId}"#,
        r#"    routes:
      - exit: kafka0
        when:
          - method: POST
            path: /items
        with:
          capability: produce
          topic: items-commands
          acks: in_sync_replicas
          key: ${idempotencyKey}
          reply-to: items-replies
          correlation-id: requestId
      - exit: kafka0
        when:
          - method: DELETE
            path: /items/{id}
        with:
          capability: produce
          topic: items-commands
          acks: none
          key: ${params.id}"#,
        r#"    routes:
      - exit: kafka0
        when:
          - method: GET
            path: /items/{itemId}/children/{childId}
        with:
          capability: fetch
          topic: items-children-snapshots
          filters:
            - key: ${params.childId}
              headers:
                item-id: ${params.itemId}
      - exit: kafka0
        when:
          - method: GET
            path: /items
        with:
          capability: fetch
          topic: items-snapshots
          merge:
            content-type: application/json
            patch:
              initial: "[]"
              path: /-
      - exit: kafka0
        when:
          - method: GET
            path: /my-items/{id}
        with:
          capability: fetch
          topic: ${params.id}-items
          filters:
            - key: ${params.id}"#,
    ];
    for binding in accepted {
        if let Err(errors) = check(&mapping(binding)) {
            panic!("refused:\n{binding}\n{errors}");
        }
    }
}

#[tokio::test]
async fn invalid_configs_are_refused_with_their_place() {
    let refused = [
        (
            "    exit: kafka0\n    routes:\n      - exit: kafka0\n        with:\n          capability: fetch\n          topic: t",
            "exit",
        ),
        ("    routes:\n      - exit: kafka0", "with"),
        (
            "    routes:\n      - exit: kafka0\n        with:\n          capability: produce\n          topic: t\n          async:\n            location: /x;${correlationId}",
            "routes[0].with",
        ),
        (
            "    routes:\n      - exit: kafka0\n        with:\n          capability: fetch\n          topic: t\n          acks: none",
            "acks",
        ),
        (
            "    routes:\n      - exit: kafka0\n        when:\n          - path: items\n        with:\n          capability: produce\n          topic: t",
            "path",
        ),
        (
            "    routes:\n      - exit: kafka0\n        with:\n          capability: produce\n          topic: t\n          key: ${correlationId}",
            "correlationId",
        ),
        (
            "    options:\n      idempotency: {}\n    routes:\n      - exit: kafka0\n        with:\n          capability: fetch\n          topic: t",
            "options.idempotency",
        ),
    ];
    for (binding, mentioned) in refused {
        let errors = check(&mapping(binding)).expect_err(binding);
        assert!(errors.contains(mentioned), "{binding}\n{errors}");
        assert!(errors.contains("zilla.yaml:"), "{errors}");
    }
}
