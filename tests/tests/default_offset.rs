//! Kafka `topics[].defaultOffset` on each kind that takes it (`client`, `cache_client`,
//! `cache_server`), through the real binary against tansu: an SSE client (curl) that gives no
//! `last-event-id` reads the topic through sse-kafka. With `historical` it first sees the
//! record that was in the topic before it connected; with `live` it never sees that record,
//! only records produced (by kcat) after its read began.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use zilla_tests::{Broker, Gateway, Peer, Process, kcat, sse_events};

const TOPIC: &str = "events";
const HISTORY: &str = "before-anyone-listened";

/// The kind whose `topics[].defaultOffset` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    CacheClient,
    CacheServer,
}

/// `topics: [{name: events, defaultOffset: <offset>}]` at an options block's indentation.
fn topics(offset: &str) -> String {
    format!("      topics:\n        - name: {TOPIC}\n          defaultOffset: {offset}\n")
}

/// tcp → http → sse → sse-kafka → (cache_client → cache_server →) kafka client → tansu, with
/// `defaultOffset` set on `kind` only.
fn config(kind: Kind, offset: &str) -> String {
    let on = |this: Kind| {
        if this == kind {
            topics(offset)
        } else {
            String::new()
        }
    };
    let options = |this: Kind| match on(this) {
        topics if topics.is_empty() => topics,
        topics => format!("    options:\n{topics}"),
    };
    let (entry, caches) = match kind {
        Kind::Client => ("kafka_client", String::new()),
        Kind::CacheClient | Kind::CacheServer => (
            "kafka_cache_client",
            format!(
                "  kafka_cache_client:\n    type: kafka\n    kind: cache_client\n{}    \
                 exit: kafka_cache_server\n  kafka_cache_server:\n    type: kafka\n    \
                 kind: cache_server\n{}    exit: kafka_client\n",
                options(Kind::CacheClient),
                options(Kind::CacheServer)
            ),
        ),
    };
    let client_topics = on(Kind::Client);
    format!(
        "name: test
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
    exit: sse_server
  sse_server:
    type: sse
    kind: server
    exit: sse_kafka
  sse_kafka:
    type: sse-kafka
    kind: proxy
    routes:
      - when:
          - path: /events
        exit: {entry}
        with:
          topic: {TOPIC}
{caches}  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{{{env.KAFKA_BOOTSTRAP_SERVER}}}}
{client_topics}    exit: kafka_tcp
  kafka_tcp:
    type: tcp
    kind: client
"
    )
}

fn produce(broker: &Broker, value: &str) -> Result<()> {
    kcat(
        &["-b", &broker.address(), "-t", TOPIC, "-P"],
        &format!("{value}\n"),
    )?;
    Ok(())
}

/// The data of the events `watcher` has printed so far.
fn seen(watcher: &Process) -> Vec<String> {
    sse_events(&watcher.stdout())
        .into_iter()
        .map(|(_, data)| data)
        .collect()
}

/// Starts a gateway on `config` and an SSE client on it.
fn watch(broker: &Broker, config: &str) -> Result<(Gateway, Process)> {
    let gateway = Gateway::builder(config)
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    let watcher = Peer::new("curl")
        .args(["-sN", "--max-time", "60"])
        .arg(format!("http://{}/events", gateway.address("tcp_server")))
        .spawn()?;
    Ok((gateway, watcher))
}

/// The record that predates the client comes first.
fn replays_history(broker: &Broker, config: &str, case: &str) -> Result<()> {
    let (mut gateway, watcher) = watch(broker, config)?;
    watcher.wait_for_stdout(HISTORY, Duration::from_secs(30))?;
    let data = seen(&watcher);
    ensure!(
        data.first().map(String::as_str) == Some(HISTORY),
        "{case}: {data:?}"
    );
    drop(watcher);
    ensure!(gateway.terminate()?.success());
    Ok(())
}

/// Records are produced until one reaches the client (its read begins some time after it
/// connected); none of the history ever does.
fn skips_history(broker: &Broker, config: &str, case: &str) -> Result<()> {
    let (mut gateway, watcher) = watch(broker, config)?;
    let prefix = format!("live-{case}-");
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        produce(broker, &format!("{prefix}{attempt}"))?;
        if watcher
            .wait_for_stdout(&prefix, Duration::from_millis(500))
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("{case}: no record arrived: {:?}", watcher.stdout());
        }
    }
    let data = seen(&watcher);
    ensure!(
        !data.is_empty() && data.iter().all(|value| value.starts_with(&prefix)),
        "{case}: {data:?}"
    );
    drop(watcher);
    ensure!(gateway.terminate()?.success());
    Ok(())
}

fn broker_with_history() -> Result<Broker> {
    let broker = Broker::start()?;
    broker.create_topic(TOPIC, 1, false)?;
    produce(&broker, HISTORY)?;
    Ok(broker)
}

#[test]
fn live_skips_the_history_and_historical_replays_it_on_every_kind() -> Result<()> {
    let broker = broker_with_history()?;
    for kind in [Kind::Client, Kind::CacheClient, Kind::CacheServer] {
        let case = format!("{kind:?}");
        replays_history(&broker, &config(kind, "historical"), &case)?;
        skips_history(&broker, &config(kind, "live"), &case)?;
    }
    Ok(())
}

#[test]
fn a_cache_clients_default_offset_wins_over_its_cache_servers() -> Result<()> {
    let broker = broker_with_history()?;
    let with_server = |client: &str, server: &str| {
        config(Kind::CacheClient, client).replace(
            "kind: cache_server\n",
            &format!("kind: cache_server\n    options:\n{}", topics(server)),
        )
    };
    let config = with_server("live", "historical");
    ensure!(config.matches("defaultOffset").count() == 2, "{config}");
    skips_history(&broker, &config, "client-live-server-historical")?;
    replays_history(
        &broker,
        &with_server("historical", "live"),
        "client-historical-server-live",
    )
}
