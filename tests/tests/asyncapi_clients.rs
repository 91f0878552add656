//! `asyncapi` servers exiting straight to `asyncapi` clients, in the shapes of Zilla's
//! `asyncapi.mqtt.proxy` and `asyncapi.sse.proxy` examples (our `examples/asyncapi.mqtt.proxy`
//! and `examples/asyncapi.sse.proxy`), run by the real gateway: mosquitto's clients through
//! the gateway to a real mosquitto broker, and `curl -N` through the gateway to an SSE origin.
//! Each runs as written (composites expanded at load) and as the config `zilla validate -v`
//! prints for it. Payloads that break the document's schema are refused the protocol's way:
//! MQTT DISCONNECT 0x99 (nothing reaches the broker), SSE events dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use zilla_tests::{Gateway, Peer, free_port, mosquitto, python, success, workspace_dir};

const LOOPBACK: (&str, &str) = ("zilla.binding.composite.listen.host", "127.0.0.1");

/// The example `name` copied into `dir`, its server listening on `port` instead of the
/// document's `document_port`; returns the config's path.
fn example(
    dir: &Path,
    name: &str,
    files: &[&str],
    document_port: &str,
    port: u16,
) -> Result<PathBuf> {
    let example = workspace_dir().join("examples").join(name);
    for file in files {
        let text = std::fs::read_to_string(example.join(file))
            .with_context(|| format!("{name}/{file}"))?
            .replace(document_port, &port.to_string());
        std::fs::write(dir.join(file), text)?;
    }
    Ok(dir.join("zilla.yaml"))
}

/// Waits until something listens on `port` of loopback.
fn wait_listening(what: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs `scenario` against the example config as written (the gateway started with `env`),
/// then against what `zilla validate -v` prints for it: both behave the same.
fn as_written_and_expanded(
    config: &Path,
    env: &[(&str, String)],
    scenario: impl Fn(&Gateway) -> Result<()>,
) -> Result<()> {
    let mut builder = Gateway::from_file(config).property(LOOPBACK.0, LOOPBACK.1);
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    run(&mut builder.start()?, &scenario).context("as written")?;

    let mut validate = zilla_tests::zilla(["validate", "-v", "-c"])?;
    validate
        .arg(config)
        .args(["-P", &format!("{}={}", LOOPBACK.0, LOOPBACK.1)]);
    for (name, value) in env {
        validate.env(name, value);
    }
    let validated = validate.output()?;
    success(&validated)?;
    let expanded = String::from_utf8(validated.stdout)?;
    ensure!(!expanded.contains("type: asyncapi"), "{expanded}");
    let expanded_path = config.with_file_name("expanded.yaml");
    std::fs::write(&expanded_path, &expanded)?;
    run(&mut Gateway::from_file(&expanded_path).start()?, &scenario).context("expanded")
}

fn run(gateway: &mut Gateway, scenario: &impl Fn(&Gateway) -> Result<()>) -> Result<()> {
    let result = scenario(gateway).with_context(|| {
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

/// What the parking document promises through the gateway: an occupancy report published
/// to the gateway reaches a subscriber of the gateway and the broker itself; one that breaks
/// the schema is refused with DISCONNECT 0x99 and reaches neither.
fn parking_behaves_as_documented(port: u16, broker: u16) -> Result<()> {
    let gateway_port = port.to_string();
    let broker_port = broker.to_string();
    let via_gateway = ["-h", "127.0.0.1", "-p", gateway_port.as_str(), "-V", "5"];
    let at_broker = ["-h", "127.0.0.1", "-p", broker_port.as_str(), "-V", "5"];
    let topic = "parking/p1/b7/occupancy";
    let filter = "parking/+/+/occupancy";
    let subscriber = Peer::new("mosquitto_sub")
        .args(via_gateway)
        .args(["-t", filter, "-v", "-W", "90"])
        .spawn()?;
    let at_broker_subscriber = Peer::new("mosquitto_sub")
        .args(at_broker)
        .args(["-t", filter, "-v", "-W", "90"])
        .spawn()?;
    // The subscribers print nothing once subscribed: publish until both saw the message.
    let valid = r#"{"bay":"b7","occupied":true}"#;
    let line = format!("{topic} {valid}");
    let mut seen = false;
    for _ in 0..100 {
        let published = Peer::new("mosquitto_pub")
            .args(via_gateway)
            .args(["-t", topic, "-q", "1", "-m", valid])
            .run()?;
        success(&published)?;
        if subscriber.stdout().contains(&line) && at_broker_subscriber.stdout().contains(&line) {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        seen,
        "not delivered: through the gateway {:?}, at the broker {:?}",
        subscriber.stdout(),
        at_broker_subscriber.stdout()
    );

    // `occupied` must be a boolean: refused with 0x99 before it reaches the broker.
    let invalid = r#"{"bay":"b7","occupied":"maybe"}"#;
    let refused = Peer::new("mosquitto_pub")
        .args(via_gateway)
        .args(["-t", topic, "-q", "1", "-d", "-m", invalid])
        .run()?;
    let said = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    ensure!(said.contains("DISCONNECT (153)"), "no 0x99 refusal: {said}");
    // A valid report after it arrives at the broker, the invalid one never.
    let after = r#"{"bay":"b8","occupied":false}"#;
    success(
        &Peer::new("mosquitto_pub")
            .args(via_gateway)
            .args(["-t", "parking/p1/b8/occupancy", "-q", "1", "-m", after])
            .run()?,
    )?;
    at_broker_subscriber.wait_for_stdout(after, Duration::from_secs(30))?;
    ensure!(
        !at_broker_subscriber.stdout().contains("maybe"),
        "the refused payload reached the broker"
    );
    Ok(())
}

#[test]
fn asyncapi_mqtt_proxy_reaches_mosquitto() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_broker, broker_port) = mosquitto(dir.path())?;
    let port = free_port()?;
    let config = example(
        dir.path(),
        "asyncapi.mqtt.proxy",
        &["zilla.yaml", "mqtt-asyncapi.yaml"],
        "7183",
        port,
    )?;
    let env = [
        ("MQTT_BROKER_HOST", "127.0.0.1".to_owned()),
        ("MQTT_BROKER_PORT", broker_port.to_string()),
    ];
    as_written_and_expanded(&config, &env, |gateway| {
        ensure!(gateway.address("parking:north_mqtt_server").port() == port);
        parking_behaves_as_documented(port, broker_port)
    })
}

/// What the tracking document promises through the gateway: `curl -N` follows a parcel and
/// gets the origin's scans in order, except the one that breaks the schema.
fn tracking_behaves_as_documented(port: u16) -> Result<()> {
    let url = format!("http://127.0.0.1:{port}/parcels/AB-12/tracking");
    let output = Peer::new("curl")
        .args(["-sS", "-N", "--max-time", "30", &url])
        .timeout(Duration::from_secs(40))
        .run()?;
    success(&output)?;
    let text = String::from_utf8(output.stdout)?;
    let events = zilla_tests::sse_events(&text);
    let expected = vec![
        (
            "1".to_owned(),
            r#"{"status": "accepted", "depot": "north"}"#.to_owned(),
        ),
        (
            "3".to_owned(),
            r#"{"status": "delivered", "depot": "AB-12"}"#.to_owned(),
        ),
    ];
    ensure!(events == expected, "events {events:?} in {text:?}");
    // A path the document does not name is not passed on.
    let missing = zilla_tests::curl(&[&format!("http://127.0.0.1:{port}/parcels")])?;
    ensure!(missing.status == 404, "{missing:?}");
    Ok(())
}

#[test]
fn asyncapi_sse_proxy_reaches_an_sse_origin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let origin_port = free_port()?;
    let origin = Peer::new(python())
        .current_dir(workspace_dir().join("tests/tests/asyncapi"))
        .args(["sse_origin.py", &origin_port.to_string()])
        .arg(format!("127.0.0.1:{origin_port}"))
        .spawn()?;
    origin.wait_for_stdout("listening", Duration::from_secs(30))?;
    wait_listening("the SSE origin", origin_port)?;
    let port = free_port()?;
    let config = example(
        dir.path(),
        "asyncapi.sse.proxy",
        &["zilla.yaml", "sse-asyncapi.yaml"],
        "7114",
        port,
    )?;
    let env = [
        ("SSE_ORIGIN_HOST", "127.0.0.1".to_owned()),
        ("SSE_ORIGIN_PORT", origin_port.to_string()),
    ];
    as_written_and_expanded(&config, &env, |gateway| {
        ensure!(gateway.address("parcels:north_sse_server").port() == port);
        tracking_behaves_as_documented(port)
    })
}
