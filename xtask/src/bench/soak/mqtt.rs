//! The soak's MQTT load: paho-mqtt clients (in one Python process from the peers' virtualenv)
//! connected through haproxy's MQTT frontend to the replicas' `mqtt` servers, which map MQTT
//! onto Kafka (`examples/mqtt.kafka.proxy`, added to each replica's config). Publishers at
//! QoS 1 and QoS 2 publish unique payloads `m-<qos>-<n>` at a fixed rate, noting which were
//! acknowledged (PUBACK, PUBCOMP); subscribers at QoS 1 and QoS 2 with persistent sessions
//! count what they receive. Every client reconnects (paho's automatic reconnection, same
//! client id) whenever its connection ends, resuming its session on whichever replica haproxy
//! picks.
//!
//! The checker reads the messages topic back with confluent-kafka: an acknowledged payload
//! missing from the topic, a QoS 2 payload written twice or received twice by a QoS 2
//! subscriber fails the run; QoS 1 copies (a publisher's resend after a lost PUBACK, a
//! redelivery after a lost subscriber ack) are allowed at least once and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use zilla_tests::{Peer, Process, workspace_dir};

/// The example whose bindings each replica serves next to the SSE ones.
const EXAMPLE: &str = "examples/mqtt.kafka.proxy";
/// The Kafka topic MQTT messages go to (the example's `topics.messages`).
pub const MESSAGES_TOPIC: &str = "mqtt-messages";
/// The topics the example needs, and whether each is compacted.
pub const TOPICS: [(&str, bool); 4] = [
    (MESSAGES_TOPIC, false),
    ("mqtt-devices", false),
    ("mqtt-retained", true),
    ("mqtt-sessions", true),
];
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The script's own drain (at most 60 s of waiting for acks, 60 s for deliveries) and more.
const FINISH_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the result line may take to arrive whole once it has begun.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many MQTT clients of each kind, and the publish rate over all publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttPlan {
    pub qos1_publishers: usize,
    pub qos2_publishers: usize,
    pub qos1_subscribers: usize,
    pub qos2_subscribers: usize,
    /// Messages per second over all publishers.
    pub rate: u64,
}

/// The MQTT clients. `argv`: host, port, QoS 1 and QoS 2 publishers, QoS 1 and QoS 2
/// subscribers, messages per second, seconds of load, the file whose appearance starts it.
/// Prints `ready` once every subscriber has received a warm-up message, then after the load
/// and the drain `result <json>`.
const SCRIPT: &str = r#"
import json, os, sys, threading, time
import paho.mqtt.client as mqtt
host, port = sys.argv[1], int(sys.argv[2])
q1_pubs, q2_pubs, q1_subs, q2_subs = (int(a) for a in sys.argv[3:7])
rate, seconds, go = float(sys.argv[7]), float(sys.argv[8]), sys.argv[9]
TOPIC = "soak/mqtt"

def new_client(client_id):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=False, protocol=mqtt.MQTTv311)
    client.reconnect_delay_set(0.05, 2)
    return client

class Client:
    """A persistent-session client counting its connects and the sessions the gateway lost."""
    def __init__(self, qos, client_id):
        self.qos, self.connects, self.sessions_lost = qos, 0, 0
        self.client = new_client(client_id)
        self.client.on_connect = self.on_connect
    def start(self):
        self.client.connect_async(host, port, keepalive=20)
        self.client.loop_start()
    def on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        self.connects += 1
        # A session the gateway should have kept: what it held is counted as missed.
        self.sessions_lost += int(self.connects > 1 and not flags.session_present)
        self.on_session(client, flags.session_present)

class Subscriber(Client):
    def __init__(self, qos, index):
        super().__init__(qos, f"soak-sub-{qos}-{index}")
        self.received, self.warm = {}, False
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self.on_message
        self.start()
    def on_session(self, client, present):
        if not present:
            client.subscribe(TOPIC, qos=self.qos)
    def on_message(self, client, userdata, message):
        payload = message.payload.decode("utf-8", "replace")
        if payload.startswith("warm-"):
            self.warm = True
        else:
            self.received[payload] = self.received.get(payload, 0) + 1

class Publisher(Client):
    def __init__(self, qos, index):
        super().__init__(qos, f"soak-pub-{qos}-{index}")
        self.sent, self.acked_mids = {}, []
        self.connected = threading.Event()
        self.client.max_queued_messages_set(0)
        self.client.on_publish = lambda c, u, mid, rc, p: self.acked_mids.append(mid)
        self.start()
    def on_session(self, client, present):
        self.connected.set()
    def publish(self, payload):
        # Packet ids are unique per client for up to 65535 messages: more than a run sends.
        self.sent[self.client.publish(TOPIC, payload, qos=self.qos).mid] = payload
    def acked(self):
        return [self.sent[mid] for mid in self.acked_mids if mid in self.sent]

subscribers = [Subscriber(1, i) for i in range(q1_subs)] + [Subscriber(2, i) for i in range(q2_subs)]
publishers = [Publisher(1, i) for i in range(q1_pubs)] + [Publisher(2, i) for i in range(q2_pubs)]
deadline = time.time() + 150
for waiter in [s.subscribed for s in subscribers] + [p.connected for p in publishers]:
    if not waiter.wait(max(0.0, deadline - time.time())):
        sys.exit("MQTT clients did not connect and subscribe in time")
warm = 0
while not all(s.warm for s in subscribers):
    if time.time() > deadline:
        sys.exit("subscribers did not receive a warm-up message in time")
    publishers[0].client.publish(TOPIC, f"warm-{warm}", qos=1)
    warm += 1
    time.sleep(0.25)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
start, total = time.time(), int(rate * seconds)
for n in range(total):
    time.sleep(max(0.0, start + n / rate - time.time()))
    publisher = publishers[n % len(publishers)]
    publisher.publish(f"m-{publisher.qos}-{n}")
published_in = time.time() - start
deadline = time.time() + 60
# Warm-up messages are acknowledged too: only the measured ones count.
while sum(len(p.acked()) for p in publishers) < total and time.time() < deadline:
    time.sleep(0.1)
acked = [payload for p in publishers for payload in p.acked()]
deadline, last, quiet_since = time.time() + 60, -1, time.time()
while time.time() < deadline:
    count = sum(sum(s.received.values()) for s in subscribers)
    if count != last:
        last, quiet_since = count, time.time()
    if time.time() - quiet_since > 3 and all(all(a in s.received for a in acked) for s in subscribers):
        break
    time.sleep(0.1)
print("result " + json.dumps({
    "published": total, "published_in": published_in, "acked": acked,
    "subscribers": [{"qos": s.qos, "received": s.received, "connects": s.connects,
                     "sessions_lost": s.sessions_lost} for s in subscribers],
    "publishers": [{"qos": p.qos, "connects": p.connects, "sessions_lost": p.sessions_lost}
                   for p in publishers],
}), flush=True)
os._exit(0)
"#;

/// The replica config: the SSE example's bindings plus the MQTT example's (their names do not
/// overlap), both before the SSE example's `telemetry`, and the MQTT example's `stores` (the
/// SSE example has none) before the bindings.
pub fn with_mqtt_bindings(sse_yaml: &str) -> Result<String> {
    let path = workspace_dir().join(EXAMPLE).join("zilla.yaml");
    let mqtt_yaml = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let bindings = between(&mqtt_yaml, "\nbindings:\n", "\ntelemetry:")
        .with_context(|| format!("{}: no bindings before telemetry", path.display()))?;
    let stores = between(&mqtt_yaml, "\nstores:\n", "\nbindings:\n")
        .map(|stores| format!("\nstores:\n{stores}"))
        .unwrap_or_default();
    let bindings_at = sse_yaml
        .find("\nbindings:\n")
        .context("the SSE example has no bindings section")?;
    let telemetry_at = sse_yaml
        .find("\ntelemetry:")
        .filter(|&at| at > bindings_at)
        .context("the SSE example has no telemetry section after its bindings")?;
    Ok(format!(
        "{}{stores}{}\n{bindings}{}",
        &sse_yaml[..bindings_at],
        &sse_yaml[bindings_at..telemetry_at],
        &sse_yaml[telemetry_at..]
    ))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    Some(&text[from..to])
}

/// The running MQTT clients.
pub struct MqttLoad {
    process: Process,
    go: PathBuf,
    // Last: the go file goes once the process is gone.
    _dir: tempfile::TempDir,
}

impl MqttLoad {
    /// Starts the clients on `target` and waits until every subscriber is live.
    pub fn start(target: SocketAddr, plan: &MqttPlan, load: Duration) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("zilla-soak-mqtt-")
            .tempdir()?;
        let go = dir.path().join("go");
        let process = Peer::python(SCRIPT)
            .arg(target.ip().to_string())
            .arg(target.port().to_string())
            .arg(plan.qos1_publishers.to_string())
            .arg(plan.qos2_publishers.to_string())
            .arg(plan.qos1_subscribers.to_string())
            .arg(plan.qos2_subscribers.to_string())
            .arg(plan.rate.to_string())
            .arg(load.as_secs_f64().to_string())
            .arg(&go)
            .timeout(load + READY_TIMEOUT + FINISH_TIMEOUT)
            .spawn()?;
        process
            .wait_for_stdout("ready", READY_TIMEOUT)
            .with_context(|| format!("MQTT clients: {}", process.stderr()))?;
        Ok(Self {
            process,
            go,
            _dir: dir,
        })
    }

    /// Starts publishing.
    pub fn go(&self) -> Result<()> {
        std::fs::write(&self.go, b"").context("cannot start the MQTT publishers")
    }

    /// Waits for the publishers to finish and the subscribers to drain.
    pub fn finish(self) -> Result<MqttOutcome> {
        self.process
            .wait_for_stdout("result ", FINISH_TIMEOUT)
            .with_context(|| format!("MQTT clients: {}", self.process.stderr()))?;
        // The line is longer than one read of the pipe: wait for its end, not just its start.
        let deadline = std::time::Instant::now() + LINE_TIMEOUT;
        let json = loop {
            let stdout = self.process.stdout();
            let line = stdout
                .split_inclusive('\n')
                .find_map(|line| line.strip_prefix("result "))
                .filter(|line| line.ends_with('\n'))
                .map(str::to_owned);
            if let Some(line) = line {
                break line;
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("the MQTT result line did not end: {stdout}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        serde_json::from_str(json.trim_end())
            .context("the MQTT result is not what the script prints")
    }
}

/// What the MQTT clients saw.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttOutcome {
    pub published: u64,
    /// Seconds the publishing took (behind when it overran the schedule).
    pub published_in: f64,
    /// Payloads acknowledged (PUBACK at QoS 1, PUBCOMP at QoS 2).
    pub acked: Vec<String>,
    pub subscribers: Vec<MqttSubscriber>,
    pub publishers: Vec<MqttPublisher>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttPublisher {
    pub connects: u64,
    /// Reconnections that found no session: the gateway lost it.
    pub sessions_lost: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttSubscriber {
    pub qos: u8,
    /// Each measured payload received and how many times.
    pub received: HashMap<String, u64>,
    pub connects: u64,
    /// Reconnections that found no session: the gateway lost it.
    pub sessions_lost: u64,
}

/// The QoS a measured payload `m-<qos>-<n>` was published with.
fn published_qos(payload: &str) -> Option<u8> {
    let rest = payload.strip_prefix("m-")?;
    let (qos, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    qos.parse().ok()
}

/// The messages topic compared with what the MQTT clients saw.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttComparison {
    pub published: u64,
    pub acknowledged: u64,
    /// Distinct measured payloads in the topic.
    pub in_topic: u64,
    /// Acknowledged but not in the topic: must be 0.
    pub acknowledged_missing: u64,
    /// Extra copies in the topic of QoS 1 payloads (a publisher's resend): allowed, counted.
    pub qos1_written_again: u64,
    /// Extra copies in the topic of QoS 2 payloads: must be 0.
    pub qos2_written_again: u64,
    /// Receptions beyond one per copy in the topic of a QoS 2 payload by a QoS 2
    /// subscriber: must be 0.
    pub qos2_duplicates: u64,
    /// Other receptions beyond one per copy in the topic (delivered at QoS 1): allowed, counted.
    pub qos1_duplicates: u64,
    /// Payloads in the topic a subscriber never received, over all subscribers.
    pub missed: u64,
    /// Received payloads that are not in the topic.
    pub phantom: u64,
    pub subscribers: usize,
    /// delivered ÷ expected of the subscriber that received least.
    pub lowest_ratio: f64,
    pub reconnects: u64,
    pub sessions_lost: u64,
    /// Publishers' reconnections, and those that found no session.
    pub publisher_reconnects: u64,
    pub publisher_sessions_lost: u64,
    /// The first few QoS 2 payloads written more than once (`m-2-<n>`: due n ÷ rate s into the load).
    pub qos2_written_again_examples: Vec<String>,
    pub published_in: f64,
}

impl MqttComparison {
    pub fn new(topic: &[String], outcome: &MqttOutcome) -> Self {
        let mut copies: HashMap<&str, u64> = HashMap::new();
        for value in topic {
            if published_qos(value).is_some() {
                *copies.entry(value.as_str()).or_default() += 1;
            }
        }
        let written_again = |qos: u8| {
            copies
                .iter()
                .filter(|(payload, _)| published_qos(payload) == Some(qos))
                .map(|(_, n)| n - 1)
                .sum()
        };
        let mut comparison = Self {
            published: outcome.published,
            acknowledged: outcome.acked.len() as u64,
            in_topic: copies.len() as u64,
            acknowledged_missing: outcome
                .acked
                .iter()
                .filter(|payload| !copies.contains_key(payload.as_str()))
                .count() as u64,
            qos1_written_again: written_again(1),
            qos2_written_again: written_again(2),
            qos2_duplicates: 0,
            qos1_duplicates: 0,
            missed: 0,
            phantom: 0,
            subscribers: outcome.subscribers.len(),
            lowest_ratio: 1.0,
            reconnects: 0,
            sessions_lost: 0,
            publisher_reconnects: outcome
                .publishers
                .iter()
                .map(|p| p.connects.saturating_sub(1))
                .sum(),
            publisher_sessions_lost: outcome.publishers.iter().map(|p| p.sessions_lost).sum(),
            qos2_written_again_examples: {
                let mut twice: Vec<(u64, &str)> = copies
                    .iter()
                    .filter(|(payload, n)| **n > 1 && published_qos(payload) == Some(2))
                    .filter_map(|(payload, _)| {
                        Some((payload.rsplit('-').next()?.parse().ok()?, *payload))
                    })
                    .collect();
                twice.sort_unstable();
                twice
                    .iter()
                    .take(10)
                    .map(|(_, p)| (*p).to_owned())
                    .collect()
            },
            published_in: outcome.published_in,
        };
        for subscriber in &outcome.subscribers {
            let mut delivered = 0u64;
            for (payload, &received) in &subscriber.received {
                let Some(&held) = copies.get(payload.as_str()) else {
                    comparison.phantom += received;
                    continue;
                };
                delivered += 1;
                let extra = received.saturating_sub(held);
                if subscriber.qos == 2 && published_qos(payload) == Some(2) {
                    comparison.qos2_duplicates += extra;
                } else {
                    comparison.qos1_duplicates += extra;
                }
            }
            comparison.missed += comparison.in_topic.saturating_sub(delivered);
            let ratio = delivered as f64 / comparison.in_topic.max(1) as f64;
            comparison.lowest_ratio = comparison.lowest_ratio.min(ratio);
            comparison.reconnects += subscriber.connects.saturating_sub(1);
            comparison.sessions_lost += subscriber.sessions_lost;
        }
        comparison
    }

    /// The broken guarantees: an acknowledged payload missing, a QoS 2 payload written or
    /// received twice, nothing written.
    pub fn broken(&self) -> Vec<String> {
        let mut broken = Vec::new();
        if self.acknowledged_missing > 0 {
            broken.push(format!(
                "{} acknowledged MQTT messages are not in the topic",
                self.acknowledged_missing
            ));
        }
        if self.qos2_written_again > 0 {
            broken.push(format!(
                "{} QoS 2 MQTT messages were written more than once (first: {})",
                self.qos2_written_again,
                self.qos2_written_again_examples.join(", ")
            ));
        }
        if self.qos2_duplicates > 0 {
            broken.push(format!(
                "QoS 2 MQTT subscribers received {} QoS 2 messages twice",
                self.qos2_duplicates
            ));
        }
        if self.in_topic == 0 {
            broken.push("no MQTT message was written".to_owned());
        }
        broken
    }

    pub fn summary(&self) -> String {
        format!(
            "MQTT: acknowledged {} of {} (published in {:.0} s), in the topic {}, acknowledged-but-missing {}; \
             QoS 2 written again {}, QoS 2 duplicates {}; QoS 1 written again {}, QoS 1 duplicates {} (allowed); \
             {} subscribers, delivered ÷ expected lowest {:.4}, missed {}, not in the topic {}; reconnects {}, sessions lost {}; \
             publishers' reconnects {}, sessions lost {}",
            self.acknowledged,
            self.published,
            self.published_in,
            self.in_topic,
            self.acknowledged_missing,
            self.qos2_written_again,
            self.qos2_duplicates,
            self.qos1_written_again,
            self.qos1_duplicates,
            self.subscribers,
            self.lowest_ratio,
            self.missed,
            self.phantom,
            self.reconnects,
            self.sessions_lost,
            self.publisher_reconnects,
            self.publisher_sessions_lost,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(acked: &[&str], subscribers: &[(u8, &[(&str, u64)])]) -> MqttOutcome {
        MqttOutcome {
            published: 4,
            published_in: 1.0,
            acked: acked.iter().map(|a| (*a).to_owned()).collect(),
            subscribers: subscribers
                .iter()
                .map(|(qos, received)| MqttSubscriber {
                    qos: *qos,
                    received: received
                        .iter()
                        .map(|(p, n)| ((*p).to_owned(), *n))
                        .collect(),
                    connects: 2,
                    sessions_lost: 0,
                })
                .collect(),
            publishers: vec![MqttPublisher {
                connects: 3,
                sessions_lost: 1,
            }],
        }
    }

    fn topic(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn qos1_copies_are_counted_and_qos2_copies_break_the_run() {
        let topic = topic(&["warm-0", "m-1-0", "m-1-0", "m-2-1", "m-1-2"]);
        let seen = outcome(
            &["m-1-0", "m-2-1", "m-1-2"],
            &[
                (1, &[("m-1-0", 3), ("m-2-1", 2), ("m-1-2", 1)]),
                (2, &[("m-1-0", 2), ("m-2-1", 1), ("m-1-2", 1)]),
            ],
        );
        let c = MqttComparison::new(&topic, &seen);
        assert_eq!((c.in_topic, c.acknowledged_missing), (3, 0));
        assert_eq!((c.qos1_written_again, c.qos2_written_again), (1, 0));
        // m-1-0 is held twice: 3 receptions are one extra; m-2-1 twice at QoS 1 is one more.
        assert_eq!((c.qos1_duplicates, c.qos2_duplicates), (2, 0));
        assert_eq!((c.missed, c.phantom, c.reconnects), (0, 0, 2));
        assert!(c.broken().is_empty(), "{:?}", c.broken());

        let twice = outcome(&["m-2-1"], &[(2, &[("m-2-1", 2)])]);
        let c = MqttComparison::new(&topic, &twice);
        assert_eq!(c.qos2_duplicates, 1);
        assert_eq!(c.broken().len(), 1, "{:?}", c.broken());
        assert_eq!((c.publisher_reconnects, c.publisher_sessions_lost), (2, 1));

        let written_twice = MqttComparison::new(
            &["m-2-7".to_owned(), "m-2-7".to_owned()],
            &outcome(&["m-2-7"], &[(2, &[("m-2-7", 2)])]),
        );
        assert_eq!(written_twice.qos2_written_again_examples, ["m-2-7"]);
        assert_eq!(written_twice.broken().len(), 1);
    }

    #[test]
    fn an_acknowledged_message_missing_from_the_topic_breaks_the_run() {
        let topic = topic(&["m-1-0"]);
        let seen = outcome(&["m-1-0", "m-1-1"], &[(1, &[("m-1-0", 1), ("m-9-9", 1)])]);
        let c = MqttComparison::new(&topic, &seen);
        assert_eq!((c.acknowledged_missing, c.phantom, c.missed), (1, 1, 0));
        assert_eq!(c.broken().len(), 1);
        let c = MqttComparison::new(&topic, &outcome(&[], &[(1, &[])]));
        assert_eq!((c.missed, c.lowest_ratio), (1, 0.0));
    }

    #[test]
    fn the_replica_config_holds_both_examples_bindings_before_telemetry() -> Result<()> {
        let path = workspace_dir().join("examples/sse.kafka.fanout/zilla.yaml");
        let yaml = with_mqtt_bindings(&std::fs::read_to_string(path)?)?;
        let telemetry = yaml.find("\ntelemetry:").context("no telemetry")?;
        for binding in ["\n  events_mapping:\n", "\n  north_mqtt_kafka_mapping:\n"] {
            let at = yaml.find(binding).context(binding)?;
            assert!(at < telemetry, "{binding} after telemetry:\n{yaml}");
        }
        assert_eq!(yaml.matches("\nbindings:").count(), 1, "{yaml}");
        // The MQTT server's store comes along, before the bindings.
        let stores = yaml.find("\nstores:\n  memory0:").context("no stores")?;
        assert!(stores < yaml.find("\nbindings:").context("no bindings")?);
        Ok(())
    }
}
