//! The sse-kafka binding end to end: a gateway built by the engine from a `zilla.yaml`
//! (`tcp → http → sse → sse-kafka → kafka cache_client → cache_server → client → tcp`), a
//! real tansu broker fed by the Python confluent-kafka producer, and `curl` subscribing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use anyhow::Result;
use support::{Broker, Event, Gateway, Record, Subscriber, produce, registry, status};
use zilla_engine::Engine;
use zilla_engine::properties::Properties;

fn event(id: &str, data: &str) -> Event {
    Event {
        id: Some(id.to_owned()),
        event: None,
        data: data.to_owned(),
    }
}

fn records(prefix: &str, range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|index| Record::new(&format!("k{index}"), &format!("{prefix}{index}")))
        .collect()
}

fn sorted_data(events: &[Event]) -> Vec<String> {
    let mut data: Vec<String> = events.iter().map(|event| event.data.clone()).collect();
    data.sort();
    data
}

fn sorted_values(records: &[Record]) -> Vec<String> {
    let mut values: Vec<String> = records.iter().filter_map(|r| r.value.clone()).collect();
    values.sort();
    values
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Produces a sentinel and checks it is the very next event: nothing else was pending.
async fn next_is_sentinel(
    broker: &Broker,
    topic: &str,
    subscriber: &mut Subscriber,
    sentinel: &str,
) -> Result<()> {
    produce(broker, topic, &[Record::new("sentinel", sentinel)]).await?;
    assert_eq!(subscriber.next().await?.data, sentinel);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_with_progress_ids() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("orders", 1, false)?;
    produce(&broker, "orders", &records("v", 0..3)).await?;
    let gateway = Gateway::start(&broker)?;

    let mut subscriber = Subscriber::open(&gateway.url("/events/orders"), &[])?;
    // The id after offset n is {version 1, 1 partition, partition 0 at n + 1}: 01 02 00 zz(n+1).
    assert_eq!(
        subscriber.take(3).await?,
        vec![
            event("AQIAAg==", "v0"),
            event("AQIABA==", "v1"),
            event("AQIABg==", "v2"),
        ]
    );
    produce(&broker, "orders", &records("v", 3..5)).await?;
    assert_eq!(
        subscriber.take(2).await?,
        vec![event("AQIACA==", "v3"), event("AQIACg==", "v4")]
    );
    subscriber.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_the_last_event_id_gets_exactly_what_was_missed() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("feed", 3, false)?;
    let all = records("r", 0..15);
    produce(&broker, "feed", &all[..9]).await?;
    let gateway = Gateway::start(&broker)?;

    let mut first = Subscriber::open(&gateway.url("/events/feed"), &[])?;
    let seen = first.take(4).await?;
    first.close().await;
    produce(&broker, "feed", &all[9..]).await?;

    // `Last-Event-ID` header.
    let last = seen[3].id.clone().expect("events carry ids");
    let header = format!("Last-Event-ID: {last}");
    let mut resumed = Subscriber::open(&gateway.url("/events/feed"), &["-H", &header])?;
    let rest = resumed.take(11).await?;
    let mut together = seen.clone();
    together.extend(rest.iter().cloned());
    assert_eq!(
        sorted_data(&together),
        sorted_values(&all),
        "a gap or a duplicate"
    );
    next_is_sentinel(&broker, "feed", &mut resumed, "end-1").await?;
    resumed.close().await;

    // `?lastEventId=` query parameter, from the middle of what the second subscriber saw.
    let middle = rest[5].id.clone().expect("events carry ids");
    let url = gateway.url(&format!(
        "/events/feed?lastEventId={}",
        percent_encode(&middle)
    ));
    let mut by_query = Subscriber::open(&url, &[])?;
    let tail = by_query.take(rest.len() - 6 + 1).await?;
    let mut expected: Vec<String> = rest[6..].iter().map(|e| e.data.clone()).collect();
    expected.push("end-1".to_owned());
    expected.sort();
    assert_eq!(sorted_data(&tail), expected);
    next_is_sentinel(&broker, "feed", &mut by_query, "end-2").await?;
    by_query.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_resumes_where_the_first_left_off() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("shared", 2, false)?;
    let all = records("s", 0..9);
    produce(&broker, "shared", &all[..6]).await?;

    let first_gateway = Gateway::start(&broker)?;
    let mut first = Subscriber::open(&first_gateway.url("/events/shared"), &[])?;
    let seen = first.take(3).await?;
    first.close().await;
    drop(first_gateway);
    produce(&broker, "shared", &all[6..]).await?;

    let second_gateway = Gateway::start(&broker)?;
    let header = format!("Last-Event-ID: {}", seen[2].id.clone().expect("ids"));
    let mut resumed = Subscriber::open(&second_gateway.url("/events/shared"), &["-H", &header])?;
    let rest = resumed.take(6).await?;
    let mut together = seen;
    together.extend(rest);
    assert_eq!(
        sorted_data(&together),
        sorted_values(&all),
        "a gap or a duplicate"
    );
    next_is_sentinel(&broker, "shared", &mut resumed, "end").await?;
    resumed.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_only_records_with_the_key_and_header() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("items", 2, false)?;
    produce(
        &broker,
        "items",
        &[
            Record::new("k1", "a").header("tag", "red"),
            Record::new("k1", "b").header("tag", "blue"),
            Record::new("k2", "c").header("tag", "red"),
            Record::new("k1", "d"),
            Record::new("k1", "e")
                .header("other", "x")
                .header("tag", "red"),
        ],
    )
    .await?;
    let gateway = Gateway::start(&broker)?;

    let mut subscriber = Subscriber::open(&gateway.url("/items/k1/red"), &[])?;
    let events = subscriber.take(2).await?;
    assert_eq!(
        events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["a", "e"]
    );
    produce(
        &broker,
        "items",
        &[
            Record::new("k2", "f").header("tag", "red"),
            Record::new("k1", "g").header("tag", "blue"),
            Record::new("k1", "h").header("tag", "red"),
        ],
    )
    .await?;
    assert_eq!(subscriber.next().await?.data, "h");
    subscriber.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_delete_events_carrying_the_key() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("deletes", 1, false)?;
    produce(
        &broker,
        "deletes",
        &[Record::new("k", "v"), Record::tombstone("k")],
    )
    .await?;
    let gateway = Gateway::start(&broker)?;

    let mut subscriber = Subscriber::open(&gateway.url("/events/deletes"), &[])?;
    assert_eq!(
        subscriber.take(2).await?,
        vec![
            event("AQIAAg==", "v"),
            Event {
                id: Some("AQIABA==".to_owned()),
                event: Some("delete".to_owned()),
                data: "aw==".to_owned(),
            },
        ]
    );
    subscriber.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_etag_ids_carry_the_key_and_resume() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("revisions", 1, false)?;
    produce(
        &broker,
        "revisions",
        &[
            Record::new("item-1", "x").header("etag", "rev-1"),
            Record::new("item-1", "y").header("etag", "rev-2"),
            Record::new("item-2", "z"),
        ],
    )
    .await?;
    let gateway = Gateway::start(&broker)?;

    let mut subscriber = Subscriber::open(&gateway.url("/keyed/revisions"), &[])?;
    assert_eq!(
        subscriber.take(3).await?,
        vec![
            event(r#"["aXRlbS0x","AQIAAg==/rev-1"]"#, "x"),
            event(r#"["aXRlbS0x","AQIABA==/rev-2"]"#, "y"),
            event(r#"["aXRlbS0y","AQIABg=="]"#, "z"),
        ]
    );
    subscriber.close().await;

    let url = gateway.url(&format!(
        "/keyed/revisions?lastEventId={}",
        percent_encode(r#"["aXRlbS0x","AQIAAg==/rev-1"]"#)
    ));
    let mut resumed = Subscriber::open(&url, &[])?;
    let rest = resumed.take(2).await?;
    assert_eq!(
        rest.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["y", "z"]
    );
    resumed.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_ids_replay_history_and_unrouted_paths_are_refused() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("known", 1, false)?;
    produce(&broker, "known", &records("v", 0..2)).await?;
    let gateway = Gateway::start(&broker)?;
    let mut header = Subscriber::open(
        &gateway.url("/events/known"),
        &["-H", "Last-Event-ID: not-an-id!"],
    )?;
    assert_eq!(
        header.take(2).await?,
        vec![event("AQIAAg==", "v0"), event("AQIABA==", "v1")]
    );
    header.close().await;
    let mut query = Subscriber::open(&gateway.url("/events/known?lastEventId=AgQABAIC"), &[])?;
    assert_eq!(
        query.take(2).await?,
        vec![event("AQIAAg==", "v0"), event("AQIABA==", "v1")]
    );
    query.close().await;
    assert_eq!(status(&gateway.url("/nowhere"), &[]).await?, 404);
    Ok(())
}

/// Loads and builds `proxy` (the YAML of one sse-kafka binding) with a kafka exit; returns the
/// errors' text, or `None` when it is accepted.
fn config_errors(proxy: &str) -> Option<String> {
    let engine = Engine::new(registry(), Properties::default());
    let text = format!(
        "name: test\nbindings:\n{proxy}\n  kafka_cache_client:\n    type: kafka\n    kind: cache_client\n    exit: kafka_cache_server\n  kafka_cache_server:\n    type: kafka\n    kind: cache_server\n    exit: kafka_client\n  kafka_client:\n    type: kafka\n    kind: client\n    exit: tcp_client\n  tcp_client:\n    type: tcp\n    kind: client\n"
    );
    let config = match engine.load(std::path::Path::new("zilla.yaml"), &text) {
        Ok(config) => config,
        Err(errors) => return Some(errors.to_string()),
    };
    engine.apply(config).err().map(|errors| errors.to_string())
}

#[tokio::test]
async fn config_is_checked_before_anything_runs() {
    let accepted = r#"
  sse_kafka_proxy:
    type: sse-kafka
    kind: proxy
    routes:
      - when:
          - path: /items/{id}
        exit: kafka_cache_client
        with:
          topic: items
          filters:
            - key: ${params.id}
            - headers:
                owner: ${guarded['jwt0'].identity}
          event:
            id: ${etag}
    exit: kafka_cache_client"#;
    assert_eq!(config_errors(accepted), None);

    for (proxy, expected) in [
        (
            "  sse_kafka_proxy:\n    type: sse-kafka\n    kind: proxy\n    options: {}\n    exit: kafka_cache_client",
            "options",
        ),
        (
            "  sse_kafka_proxy:\n    type: sse-kafka\n    kind: server\n    exit: kafka_cache_client",
            "kind",
        ),
        (
            "  sse_kafka_proxy:\n    type: sse-kafka\n    kind: proxy\n    routes:\n      - exit: kafka_cache_client\n        with:\n          topic: t\n          event:\n            id: ${key}",
            "event",
        ),
        (
            "  sse_kafka_proxy:\n    type: sse-kafka\n    kind: proxy\n    routes:\n      - exit: kafka_cache_client\n        with:\n          topic: events-${params}",
            "routes[0].with",
        ),
        (
            "  sse_kafka_proxy:\n    type: sse-kafka\n    kind: proxy\n    routes:\n      - exit: kafka_cache_client\n        with:\n          filters: []",
            "topic",
        ),
        (
            "  sse_kafka_proxy:\n    type: sse-kafka\n    kind: proxy\n    exit: tcp_client",
            "kafka",
        ),
    ] {
        let errors = config_errors(proxy).unwrap_or_else(|| panic!("accepted:\n{proxy}"));
        assert!(errors.contains(expected), "{expected} not in: {errors}");
    }
}
