//! The mqtt-kafka binding as `examples/mqtt.kafka.proxy` runs it: paho-mqtt and mosquitto's
//! clients against the gateway, tansu as the Kafka broker, and confluent-kafka reading and
//! writing the topics directly (`tcp → mqtt server → mqtt-kafka → kafka cache → tansu`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zilla_tests::{Broker, Gateway, Peer, python, success, workspace_dir};

fn example() -> PathBuf {
    workspace_dir().join("examples/mqtt.kafka.proxy/zilla.yaml")
}

/// A broker with the example's three topics.
fn broker(sessions_compacted: bool) -> Result<Broker> {
    let broker = Broker::start()?;
    broker.create_topic("mqtt-messages", 2, false)?;
    broker.create_topic("mqtt-devices", 2, false)?;
    broker.create_topic("mqtt-retained", 1, true)?;
    broker.create_topic("mqtt-sessions", 1, sessions_compacted)?;
    Ok(broker)
}

fn gateway(broker: &Broker) -> Result<Gateway> {
    Gateway::from_file(example())
        .env("MQTT_PORT", "0")
        // What a failing test shows of the gateway includes each session's opening and end.
        .env("RUST_LOG", "info,zilla_binding_mqtt_kafka=debug")
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        // Topic aliases are offered (none by default), so an aliased publication is checked
        // to reach Kafka under its full topic.
        .property("zilla.binding.mqtt.topic.alias.maximum", "10")
        // As the broker scenarios' oversized packet expects.
        .property("zilla.binding.mqtt.maximum.packet.size", "4096")
        .start()
}

fn mqtt_port(gateway: &Gateway) -> u16 {
    gateway.address("north_tcp_server").port()
}

/// Runs a scenario of `mqtt_kafka/scenarios.py` (`extra` after port and bootstrap).
fn kafka_scenario(name: &str, port: u16, broker: &Broker, extra: &[&str]) -> Result<()> {
    let output = Peer::new(python())
        .current_dir(workspace_dir().join("tests/tests/mqtt_kafka"))
        .args(["scenarios.py", name, &port.to_string(), &broker.address()])
        .args(extra)
        .timeout(Duration::from_secs(120))
        .run()?;
    success(&output).with_context(|| format!("scenario {name}"))
}

/// Runs a scenario of the mqtt binding's `mqtt/scenarios.py`, written against mosquitto:
/// the gateway must behave as that broker does.
fn broker_scenario(name: &str, port: u16, version: u16) -> Result<()> {
    let output = Peer::new(python())
        .current_dir(workspace_dir().join("tests/tests/mqtt"))
        .args([
            "scenarios.py",
            name,
            &port.to_string(),
            &version.to_string(),
        ])
        .timeout(Duration::from_secs(120))
        .run()?;
    success(&output).with_context(|| format!("scenario {name} v{version}"))
}

fn with_gateway(run: impl FnOnce(&Gateway, &Broker) -> Result<()>) -> Result<()> {
    with_gateway_of(gateway, run)
}

/// As [`with_gateway`], with the gateway `start` makes.
fn with_gateway_of(
    start: impl FnOnce(&Broker) -> Result<Gateway>,
    run: impl FnOnce(&Gateway, &Broker) -> Result<()>,
) -> Result<()> {
    let broker = broker(true)?;
    let mut gateway = start(&broker)?;
    let result =
        run(&gateway, &broker).with_context(|| format!("gateway log:\n{}", gateway.stderr()));
    assert!(gateway.terminate()?.success());
    result
}

#[test]
fn mqtt_clients_get_what_a_broker_gives_them() -> Result<()> {
    with_gateway(|gateway, _| {
        let port = mqtt_port(gateway);
        broker_scenario("pubsub", port, 311)?;
        broker_scenario("pubsub", port, 5)?;
        broker_scenario("retained", port, 5)?;
        broker_scenario("retained", port, 311)?;
        broker_scenario("will", port, 5)?;
        broker_scenario("will_delay", port, 5)?;
        broker_scenario("takeover", port, 5)?;
        broker_scenario("resume", port, 5)?;
        broker_scenario("resume", port, 311)?;
        broker_scenario("alias", port, 5)?;
        broker_scenario("properties", port, 5)?;
        broker_scenario("malformed", port, 5)
    })
}

#[test]
fn messages_past_their_expiry_are_not_delivered_to_a_resumed_session() -> Result<()> {
    with_gateway(|gateway, broker| {
        kafka_scenario("expired_messages", mqtt_port(gateway), broker, &[])
    })
}

#[test]
fn sessions_expire_and_qos2_is_not_written_twice_when_resent() -> Result<()> {
    with_gateway(|gateway, broker| {
        let port = mqtt_port(gateway);
        kafka_scenario("session_expires", port, broker, &[])?;
        kafka_scenario("qos2_resent", port, broker, &[])?;
        kafka_scenario("overlapping", port, broker, &[])
    })
}

#[test]
fn a_session_moves_to_another_gateway_with_its_queued_messages() -> Result<()> {
    two_gateway_scenario("session_moves")
}

#[test]
fn unacknowledged_deliveries_come_again_with_dup_on_another_gateway() -> Result<()> {
    two_gateway_scenario("redelivered_with_dup")
}

#[test]
fn qos2_deliveries_awaiting_pubrel_are_released_on_another_gateway() -> Result<()> {
    two_gateway_scenario("qos2_released_again")
}

#[test]
fn the_will_of_a_killed_gateways_client_is_published_once_by_another() -> Result<()> {
    killed_gateway_scenario("will_of_killed", "connected")
}

#[test]
fn qos2_publications_in_flight_at_a_kill_reach_kafka_exactly_once() -> Result<()> {
    killed_gateway_scenario("qos2_across_a_kill", "publishing")
}

#[test]
fn qos2_deliveries_outstanding_at_a_kill_keep_their_packet_ids_v5() -> Result<()> {
    killed_gateway_scenario("qos2_outstanding_v5", "outstanding")
}

#[test]
fn qos2_deliveries_outstanding_at_a_kill_keep_their_packet_ids_v311() -> Result<()> {
    killed_gateway_scenario("qos2_outstanding_v311", "outstanding")
}

/// Runs a scenario with two gateways on one broker: once it prints `ready`, the first
/// gateway is killed (SIGKILL) and the scenario told so through its last argument, a file.
fn killed_gateway_scenario(name: &str, ready: &str) -> Result<()> {
    let broker = broker(true)?;
    let mut doomed = gateway(&broker)?;
    let mut survivor = gateway(&broker)?;
    let result = (|| -> Result<()> {
        let dir = tempfile::tempdir()?;
        let go = dir.path().join("go");
        let mut scenario = Peer::new(python())
            .current_dir(workspace_dir().join("tests/tests/mqtt_kafka"))
            .args([
                "scenarios.py",
                name,
                &mqtt_port(&doomed).to_string(),
                &broker.address(),
                &mqtt_port(&survivor).to_string(),
            ])
            .arg(&go)
            .timeout(Duration::from_secs(180))
            .spawn()?;
        scenario.wait_for_stdout(ready, Duration::from_secs(60))?;
        doomed.signal("KILL")?;
        doomed.wait(Duration::from_secs(10))?;
        std::fs::write(&go, b"")?;
        let status = scenario.wait(Duration::from_secs(170))?;
        ensure!(
            status.success(),
            "scenario failed: {}\n{}",
            scenario.stdout(),
            scenario.stderr()
        );
        Ok(())
    })();
    let result = result.with_context(|| format!("survivor log:\n{}", survivor.stderr()));
    assert!(survivor.terminate()?.success());
    result
}

#[test]
fn records_carry_zillas_key_and_headers() -> Result<()> {
    with_gateway(|gateway, broker| {
        kafka_scenario("publish_headers", mqtt_port(gateway), broker, &[])
    })
}

#[test]
fn a_session_past_its_subscription_quota_is_refused_new_filters() -> Result<()> {
    let start = |broker: &Broker| {
        Gateway::from_file(example())
            .env("MQTT_PORT", "0")
            .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
            .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
            .property("zilla.binding.mqtt.kafka.subscriptions.maximum", "3")
            .start()
    };
    with_gateway_of(start, |gateway, broker| {
        kafka_scenario("subscription_quota", mqtt_port(gateway), broker, &[])
    })
}

#[test]
fn kafka_records_reach_mqtt_subscribers_no_local_holds_and_shared_is_refused() -> Result<()> {
    with_gateway(|gateway, broker| {
        let port = mqtt_port(gateway);
        kafka_scenario("from_kafka", port, broker, &[])?;
        kafka_scenario("no_local", port, broker, &[])?;
        kafka_scenario("shared_refused", port, broker, &[])
    })
}

#[test]
fn mosquitto_clients_round_trip_through_kafka() -> Result<()> {
    with_gateway(|gateway, _| {
        let port = mqtt_port(gateway).to_string();
        let subscriber = Peer::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-q", "1"])
            .args(["-t", "devices/+/temp", "-v", "-W", "90"])
            .spawn()?;
        // The subscription is live once SUBACK is in: mosquitto_sub prints nothing before,
        // so publish until the first message shows up.
        let mut first_seen = false;
        for _ in 0..100 {
            let published = Peer::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-q", "1"])
                .args(["-t", "devices/d1/temp", "-m", "21.5"])
                .run()?;
            success(&published)?;
            if subscriber.stdout().contains("devices/d1/temp 21.5") {
                first_seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(
            first_seen,
            "mosquitto_sub got nothing: {}",
            subscriber.stderr()
        );
        let published = Peer::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "311", "-q", "1"])
            .args(["-t", "devices/d2/temp", "-m", "19.0"])
            .run()?;
        success(&published)?;
        subscriber.wait_for_stdout("devices/d2/temp 19.0", Duration::from_secs(30))?;
        Ok(())
    })
}

#[test]
fn device_topics_go_to_their_route_topic_partitioned_by_device() -> Result<()> {
    with_gateway(|gateway, broker| {
        kafka_scenario("sticky_partitions", mqtt_port(gateway), broker, &[])
    })
}

#[test]
fn qos1_is_acknowledged_only_once_kafka_has_the_message() -> Result<()> {
    let mut broker = broker(true)?;
    let mut gateway = gateway(&broker)?;
    let result = (|| -> Result<()> {
        let dir = tempfile::tempdir()?;
        let go = dir.path().join("go");
        let mut publisher = Peer::new(python())
            .current_dir(workspace_dir().join("tests/tests/mqtt_kafka"))
            .args([
                "scenarios.py",
                "publish_blocked",
                &mqtt_port(&gateway).to_string(),
                &broker.address(),
                "devices/outage/temp",
            ])
            .arg(&go)
            .timeout(Duration::from_secs(180))
            .spawn()?;
        publisher.wait_for_stdout("connected", Duration::from_secs(30))?;
        broker.stop();
        std::fs::write(&go, b"")?;
        std::thread::sleep(Duration::from_secs(3));
        ensure!(
            !publisher.stdout().contains("acked"),
            "PUBACK while Kafka was down: {}",
            publisher.stdout()
        );
        broker.restart()?;
        publisher.wait_for_stdout("acked 0", Duration::from_secs(120))?;
        ensure!(publisher.wait(Duration::from_secs(30))?.success());
        let output = Peer::python(
            r#"
import sys, uuid
from confluent_kafka import Consumer
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": str(uuid.uuid4()),
                     "auto.offset.reset": "earliest"})
consumer.subscribe(["mqtt-devices"])
for _ in range(60):
    message = consumer.poll(1)
    if message is not None and not message.error() and message.key() == b"devices/outage/temp":
        print(message.value().decode())
        break
consumer.close()
"#,
        )
        .arg(broker.address())
        .timeout(Duration::from_secs(90))
        .run()?;
        success(&output)?;
        ensure!(
            String::from_utf8_lossy(&output.stdout).contains("kept through the outage"),
            "the acknowledged message is not in Kafka"
        );
        Ok(())
    })();
    let result = result.with_context(|| format!("gateway log:\n{}", gateway.stderr()));
    assert!(gateway.terminate()?.success());
    result
}

#[test]
fn a_session_on_another_gateway_takes_over() -> Result<()> {
    two_gateway_scenario("takeover_other")
}

/// Runs a scenario with two gateways on one broker: the first's port, then the second's.
fn two_gateway_scenario(name: &str) -> Result<()> {
    let broker = broker(true)?;
    let mut first = gateway(&broker)?;
    let mut second = gateway(&broker)?;
    let result = kafka_scenario(
        name,
        mqtt_port(&first),
        &broker,
        &[&mqtt_port(&second).to_string()],
    )
    .with_context(|| format!("logs:\n{}\n---\n{}", first.stderr(), second.stderr()));
    assert!(first.terminate()?.success());
    assert!(second.terminate()?.success());
    result
}

/// `publish.qosMax` caps what clients may publish and what subscribers are granted.
const QOS_MAX: &str = "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: mqtt_server
  mqtt_server:
    type: mqtt
    kind: server
    exit: mqtt_kafka
  mqtt_kafka:
    type: mqtt-kafka
    kind: proxy
    options:
      topics:
        sessions: mqtt-sessions
        messages: mqtt-messages
        retained: mqtt-retained
      publish:
        qosMax: at_most_once
    exit: cache_client
  cache_client:
    type: kafka
    kind: cache_client
    exit: cache_server
  cache_server:
    type: kafka
    kind: cache_server
    exit: kafka_client
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BOOTSTRAP_SERVER}}
    exit: kafka_tcp
  kafka_tcp:
    type: tcp
    kind: client
";

#[test]
fn qos_max_limits_publishers_and_subscribers() -> Result<()> {
    let broker = broker(true)?;
    let mut gateway = Gateway::builder(QOS_MAX)
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .start()?;
    let result = kafka_scenario(
        "qos_max",
        gateway.address("tcp_server").port(),
        &broker,
        &[],
    )
    .with_context(|| format!("gateway log:\n{}", gateway.stderr()));
    assert!(gateway.terminate()?.success());
    result
}

#[test]
fn a_sessions_topic_that_is_not_compacted_refuses_sessions() -> Result<()> {
    let broker = broker(false)?;
    let mut gateway = gateway(&broker)?;
    let port = mqtt_port(&gateway).to_string();
    let refused = Peer::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "5",
            "-t",
            "a/b",
            "-m",
            "x",
        ])
        .run()?;
    ensure!(!refused.status.success(), "the session was accepted");
    gateway.wait_for_stdout(
        "BINDING_MQTT_KAFKA_NON_COMPACT_SESSIONS_TOPIC",
        Duration::from_secs(10),
    )?;
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// The example's `memory0` store keeps which connection owns each client identifier: a
/// second connection with the same identifier takes the first over (paho, 5 and 3.1.1), and
/// the store's bound (`zilla.store.memory.maximum.bytes`, here room for one client) refuses
/// a client it cannot record with CONNACK 0x89 (server busy) until the first leaves.
#[test]
fn client_ids_are_owned_through_the_memory_store() -> Result<()> {
    let broker = broker(true)?;
    let mut gateway = Gateway::from_file(example())
        .env("MQTT_PORT", "0")
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        // One client's owner record and its watch fit (about 300 bytes), a second one's not.
        .property("zilla.store.memory.maximum.bytes", "500")
        .start()?;
    let result = (|| -> Result<()> {
        let port = mqtt_port(&gateway);
        broker_scenario("takeover", port, 5)?;
        broker_scenario("takeover", port, 311)?;
        let port = port.to_string();
        // Line-buffered: its debug lines (the CONNACK) are not flushed otherwise.
        let mut holder = Peer::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "5",
                "-d",
            ])
            .args(["-i", "holder", "-t", "devices/+/held", "-W", "90"])
            .spawn()?;
        holder.wait_for_stdout("received CONNACK (0)", Duration::from_secs(30))?;
        let publish = || {
            Peer::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-d"])
                .args(["-i", "other", "-t", "devices/d1/held", "-m", "x"])
                .run()
        };
        let refused = publish()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&refused.stdout),
            String::from_utf8_lossy(&refused.stderr)
        );
        ensure!(
            !refused.status.success() && text.contains("CONNACK (137)"),
            "a client past the store's bound was not refused as busy: {text}"
        );
        holder.terminate()?;
        // Once the holder's record is gone, the other client fits.
        let mut accepted = false;
        for _ in 0..50 {
            if publish()?.status.success() {
                accepted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(accepted, "the store kept the holder's record after it left");
        Ok(())
    })()
    .with_context(|| format!("gateway log:\n{}", gateway.stderr()));
    assert!(gateway.terminate()?.success());
    result
}
