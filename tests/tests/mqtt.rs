//! The mqtt server and client in front of mosquitto, driven by paho-mqtt (3.1.1, 5, and over
//! WebSocket), MQTT.js over WebSocket and mosquitto's own clients: tcp → mqtt server → mqtt
//! client → tcp → mosquitto.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use zilla_tests::{Gateway, Peer, Process, free_port, peers_dir, python, success, workspace_dir};

const PROXY: &str = "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: mqtt_server
  http_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: http_codec
  http_codec:
    type: http
    kind: server
    options:
      versions: [http/1.1]
    exit: ws_server
  ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: mqtt
        exit: mqtt_server
  mqtt_server:
    type: mqtt
    kind: server
    routes:
      - when:
          - publish:
              - topic: '#'
          - subscribe:
              - topic: '#'
        exit: mqtt_client
  mqtt_client:
    type: mqtt
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.BROKER_PORT}}
";

/// A mosquitto broker on a free port, killed when dropped.
struct Mosquitto {
    port: u16,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (process, port) =
            zilla_tests::mosquitto_with(dir.path(), "max_queued_messages 1000\n")?;
        Ok(Self {
            port,
            _process: process,
            _dir: dir,
        })
    }
}

fn gateway(broker: &Mosquitto) -> Result<Gateway> {
    Gateway::builder(PROXY)
        .env("BROKER_PORT", broker.port.to_string())
        .property("zilla.binding.mqtt.topic.alias.maximum", "8")
        .property("zilla.binding.mqtt.maximum.packet.size", "4096")
        .start()
}

/// A gateway on [`PROXY`] in front of `broker` with one property set.
fn proxy_with(broker: &Mosquitto, property: &str, value: &str) -> Result<Gateway> {
    Gateway::builder(PROXY)
        .env("BROKER_PORT", broker.port.to_string())
        .property(property, value)
        .start()
}

fn scripts() -> PathBuf {
    workspace_dir().join("tests/tests/mqtt")
}

/// Runs one paho scenario of `mqtt/scenarios.py`.
fn scenario(name: &str, port: u16, extra: u16) -> Result<()> {
    let output = Peer::new(python())
        .current_dir(scripts())
        .args(["scenarios.py", name, &port.to_string(), &extra.to_string()])
        .timeout(Duration::from_secs(60))
        .run()?;
    success(&output).with_context(|| format!("scenario {name}"))?;
    Ok(())
}

fn with_gateway(run: impl FnOnce(&Gateway) -> Result<()>) -> Result<()> {
    let broker = Mosquitto::start()?;
    run_then_stop(gateway(&broker)?, run)
}

/// Runs `run` against `gateway`, then stops it; a failure carries the gateway's log.
fn run_then_stop(mut gateway: Gateway, run: impl FnOnce(&Gateway) -> Result<()>) -> Result<()> {
    let result = run(&gateway).with_context(|| format!("gateway log:\n{}", gateway.stderr()));
    assert!(gateway.terminate()?.success());
    result
}

#[test]
fn publish_subscribe_at_every_qos_in_both_versions() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("pubsub", port, 311)?;
        scenario("pubsub", port, 5)
    })
}

#[test]
fn retained_messages_are_replayed_and_cleared() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("retained", port, 311)?;
        scenario("retained", port, 5)
    })
}

#[test]
fn wills_are_published_on_abnormal_close_only() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("will", port, 311)?;
        scenario("will", port, 5)?;
        scenario("will_delay", port, 5)
    })
}

#[test]
fn sessions_resume_with_queued_messages() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("resume", port, 311)?;
        scenario("resume", port, 5)
    })
}

#[test]
fn a_second_connection_takes_the_session_over() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("takeover", port, 311)?;
        scenario("takeover", port, 5)
    })
}

#[test]
fn topic_aliases_and_message_properties() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("alias", port, 5)?;
        scenario("properties", port, 5)
    })
}

#[test]
fn bad_packets_get_reason_codes_and_others_carry_on() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("malformed", port, 5)
    })
}

#[test]
fn mqtt_over_websocket_meets_mqtt_over_tcp() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        let ws_port = gateway.address("http_server").port();
        scenario("websocket", port, ws_port)
    })
}

/// mosquitto_rr (MQTT 5 request/response) through the gateway: its request reaches a paho
/// responder with the response topic it waits on, and the answer comes back to it there.
#[test]
fn mosquitto_rr_gets_its_answer_through_the_gateway() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port().to_string();
        let suffix = std::process::id();
        let request = format!("rr-{suffix}/request");
        let response = format!("rr-{suffix}/response");
        let mut responder = Peer::new(python())
            .current_dir(scripts())
            .args(["scenarios.py", "responder", &port, "0", &request])
            .timeout(Duration::from_secs(60))
            .spawn()?;
        responder.wait_for_stdout("ready", Duration::from_secs(20))?;
        let output = Peer::new("mosquitto_rr")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-q", "1"])
            .args(["-t", &request, "-e", &response, "-m", "ping", "-W", "10"])
            .timeout(Duration::from_secs(30))
            .run()?;
        success(&output).context("mosquitto_rr")?;
        let answer = String::from_utf8_lossy(&output.stdout);
        ensure!(answer.trim() == "pong:ping", "mosquitto_rr got {answer:?}");
        let status = responder.wait(Duration::from_secs(20))?;
        ensure!(
            status.success(),
            "responder: {}\n{}",
            responder.stdout(),
            responder.stderr()
        );
        Ok(())
    })
}

/// MQTT.js, the client Node.js and browser applications use, over WebSocket through the
/// gateway to mosquitto (`mqtt/mqttjs.js`): QoS 0, 1 and 2 between an MQTT 3.1.1 publisher and
/// an MQTT 5 subscriber, MQTT 5 properties, and a retained message set and cleared.
#[test]
fn mqtt_js_over_websocket() -> Result<()> {
    with_gateway(|gateway| {
        let ws_port = gateway.address("http_server").port();
        let output = Peer::new("node")
            .current_dir(scripts())
            .env("NODE_PATH", peers_dir().join("node/node_modules"))
            .args(["mqttjs.js", &ws_port.to_string()])
            .timeout(Duration::from_secs(60))
            .run()?;
        success(&output).context("MQTT.js over WebSocket")?;
        ensure!(
            String::from_utf8_lossy(&output.stdout).contains("ok mqttjs"),
            "MQTT.js did not finish"
        );
        Ok(())
    })
}

/// mosquitto_sub through the gateway receives what mosquitto_pub publishes through it.
fn mosquitto_clients(port: u16, version: &str, qos: &str) -> Result<()> {
    let topic = format!("cli/{version}/{qos}");
    let payload = format!("hello {version} {qos}");
    let mut subscriber = Peer::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args(["-t", "cli/#", "-q", qos, "-C", "1", "-W", "20", "-v"])
        .spawn()?;
    // The subscriber has no ready signal: publish until it has received one message.
    let deadline = Instant::now() + Duration::from_secs(20);
    while subscriber.try_status()?.is_none() {
        if Instant::now() > deadline {
            bail!("mosquitto_sub received nothing: {}", subscriber.stderr());
        }
        let published = Peer::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
            .args(["-t", &topic, "-q", qos, "-m", &payload])
            .run()?;
        success(&published)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(subscriber.stdout(), format!("{topic} {payload}\n"));
    Ok(())
}

#[test]
fn mosquitto_clients_through_the_gateway() -> Result<()> {
    with_gateway(|gateway| {
        let port = gateway.address("tcp_server").port();
        for version in ["mqttv311", "mqttv5"] {
            for qos in ["0", "1", "2"] {
                mosquitto_clients(port, version, qos)?;
            }
        }
        Ok(())
    })
}

#[test]
fn the_mqtt_proxy_example_routes_only_its_topics() -> Result<()> {
    let broker = Mosquitto::start()?;
    let gateway = Gateway::from_file(workspace_dir().join("examples/mqtt.proxy/zilla.yaml"))
        .env("MQTT_PORT", "0")
        .env("MQTT_WS_PORT", "0")
        .env("BROKER_PORT", broker.port.to_string())
        .start()?;
    run_then_stop(gateway, |gateway| {
        let port = gateway.address("tcp_server").port();
        scenario("refused", port, 5).and_then(|()| scenario("refused", port, 311))
    })
}

/// MQTT owns its connection's idleness: a client whose keep-alive (6 s) is longer than the tcp
/// idle timeout (1.5 s here) stays connected through a quiet spell, while a connection that
/// never sends CONNECT is still closed.
#[test]
fn a_keep_alive_longer_than_the_tcp_idle_timeout_keeps_the_client_connected() -> Result<()> {
    let broker = Mosquitto::start()?;
    let mut gateway = proxy_with(&broker, "zilla.binding.tcp.idle.timeout.millis", "1500")?;
    let port = gateway.address("tcp_server").port();
    let silent = TcpStream::connect(gateway.address("tcp_server"))?;
    // Quiet for 5 s: longer than the tcp idle timeout, shorter than the keep-alive.
    scenario("quiet", port, 5)?;

    let mut silent = silent;
    silent.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut byte = [0; 1];
    let read = std::io::Read::read(&mut silent, &mut byte);
    assert!(
        matches!(read, Ok(0))
            || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a connection that never sent CONNECT is still open"
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// MQTT's keep-alive is a promise of the client's: a subscriber that receives a message every
/// 0.3 s and sends nothing is ended with DISCONNECT 0x8d at 1.5 times its 2 s keep-alive (by the
/// tcp connection's idle timer, counting only what the client sends); so is a silent client
/// over WebSocket (by the MQTT connection's own timer, the WebSocket holding the tcp
/// connection). The server's minimum keep-alive (10 s by default, which MQTT 5 lets it
/// impose) is lowered to 1 s.
#[test]
fn a_subscriber_that_only_receives_is_ended_at_its_keep_alive() -> Result<()> {
    let broker = Mosquitto::start()?;
    let gateway = proxy_with(&broker, "zilla.binding.mqtt.keep.alive.minimum", "1")?;
    run_then_stop(gateway, |gateway| {
        let port = gateway.address("tcp_server").port();
        let ws_port = gateway.address("http_server").port();
        scenario("silent_subscriber", port, 0)
            .and_then(|()| scenario("silent_over_websocket", ws_port, 0))
    })
}

/// Two mqtt servers, one taking only v5 and one only v3.1.1; the v5 one routes sessions by
/// client id: `north-*` to the north broker, `south-*` to the south broker, nothing else (a
/// session's will goes where its session goes; publishes route by topic, as in Zilla).
const BY_VERSION_AND_CLIENT_ID: &str = "name: test
bindings:
  v5_tcp:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: v5_mqtt
  v5_mqtt:
    type: mqtt
    kind: server
    options:
      versions:
        - v5
    routes:
      - when:
          - session:
              - client-id: north-*
        exit: north_mqtt
      - when:
          - session:
              - client-id: south-*
        exit: south_mqtt
  v311_tcp:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: v311_mqtt
  v311_mqtt:
    type: mqtt
    kind: server
    options:
      versions:
        - v3.1.1
    exit: north_mqtt
  north_mqtt:
    type: mqtt
    kind: client
    exit: north_tcp
  north_tcp:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.NORTH_PORT}}
  south_mqtt:
    type: mqtt
    kind: client
    exit: south_tcp
  south_tcp:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.SOUTH_PORT}}
";

/// The retained message of `topic` on a broker (or the next one published), read by
/// mosquitto_sub straight from it.
fn retained_on(broker: &Mosquitto, topic: &str) -> Result<String> {
    let output = Peer::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", topic, "-C", "1", "-W", "10"])
        .run()?;
    success(&output).with_context(|| format!("no retained message on port {}", broker.port))?;
    Ok(String::from_utf8(output.stdout)?.trim_end().to_owned())
}

#[test]
fn versions_refuse_other_protocol_levels_and_client_ids_choose_the_exit() -> Result<()> {
    let north = Mosquitto::start()?;
    let south = Mosquitto::start()?;
    let gateway = Gateway::builder(BY_VERSION_AND_CLIENT_ID)
        .env("NORTH_PORT", north.port.to_string())
        .env("SOUTH_PORT", south.port.to_string())
        .start()?;
    let v5 = gateway.address("v5_tcp").port();
    let v311 = gateway.address("v311_tcp").port();
    run_then_stop(gateway, |_gateway| {
        scenario("versions", v5, v311)?;
        // mosquitto's own client is told why, too.
        let refused = Peer::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &v5.to_string(), "-V", "mqttv311"])
            .args(["-i", "north-cli", "-t", "t", "-m", "m"])
            .run()?;
        let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
        ensure!(
            !refused.status.success() && said.contains("unacceptable protocol version"),
            "mosquitto_pub v3.1.1 against a v5-only server: {said}"
        );
        scenario("client_ids", v5, 0)?;
        let north_will = retained_on(&north, "routing/will")?;
        let south_will = retained_on(&south, "routing/will")?;
        ensure!(
            (north_will.as_str(), south_will.as_str()) == ("north will", "south will"),
            "wills: north broker {north_will:?}, south broker {south_will:?}"
        );
        Ok(())
    })
}

/// Two mqtt servers sharing the `memory0` store; `SECOND` is the second server's options and
/// `THIRD` an optional third listener in front of it.
fn shared_store_config(first: u16, second_options: &str, third: Option<u16>) -> String {
    let third = third
        .map(|port| {
            format!(
                "  tcp_third:\n    type: tcp\n    kind: server\n    options:\n      host: 127.0.0.1\n      port: {port}\n    exit: mqtt_second\n"
            )
        })
        .unwrap_or_default();
    format!(
        "name: test
stores:
  memory0:
    type: memory
bindings:
  tcp_first:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: {first}
    exit: mqtt_first
{third}  mqtt_first:
    type: mqtt
    kind: server
    options:
      store: memory0
    exit: mqtt_client
  mqtt_second:
    type: mqtt
    kind: server
    options:
      store: memory0
{second_options}    exit: mqtt_client
  mqtt_client:
    type: mqtt
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{{{env.BROKER_PORT}}}}
"
    )
}

/// A reload that rebuilds one of two mqtt servers sharing a store keeps the running store:
/// a client of the rebuilt server takes over a connection the kept server holds with the
/// same client id (0x8E), as before the reload. A new empty store would let both stay.
#[test]
fn a_reload_keeps_the_store_bindings_share() -> Result<()> {
    let broker = Mosquitto::start()?;
    let (first, third) = (free_port()?, free_port()?);
    let gateway = Gateway::builder(&shared_store_config(first, "", None))
        .env("BROKER_PORT", broker.port.to_string())
        .start()?;
    run_then_stop(gateway, |gateway| {
        let reloaded = tempfile::NamedTempFile::new()?;
        std::fs::write(
            reloaded.path(),
            shared_store_config(first, "      versions: [v5]\n", Some(third)),
        )?;
        let output = Peer::new(python())
            .current_dir(scripts())
            .args(["scenarios.py", "takeover_after_reload"])
            .arg(first.to_string())
            .arg("5")
            .arg(gateway.config_path())
            .arg(reloaded.path())
            .arg(third.to_string())
            .timeout(Duration::from_secs(60))
            .run()?;
        success(&output)?;
        let log = gateway.stderr();
        ensure!(log.contains("config reloaded"), "no reload: {log}");
        Ok(())
    })
}
