//! gRPC end to end: the `grpc.echo` and `grpc.proxy` examples with Python grpcio clients and a
//! grpcio server, their stubs generated at test time by grpcio-tools from the examples' proto
//! (`tests/tests/grpc/*.py`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use zilla_tests::{Gateway, Peer, Process, free_port, pki, python, workspace_dir};

fn example(name: &str) -> PathBuf {
    workspace_dir()
        .join("examples")
        .join(name)
        .join("zilla.yaml")
}

fn proto_dir() -> PathBuf {
    workspace_dir().join("examples/grpc.echo/proto")
}

fn script(name: &str) -> PathBuf {
    workspace_dir().join("tests/tests/grpc").join(name)
}

/// Runs the grpcio client on `target` through `scenarios`, over TLS when `ca` is given.
fn client(target: &str, scenarios: &[&str], ca: Option<&Path>) -> Result<Value> {
    let mut peer = Peer::new(python())
        .arg(script("client.py"))
        .arg(proto_dir())
        .arg(target)
        .arg(scenarios.join(","))
        .timeout(Duration::from_secs(60));
    if let Some(ca) = ca {
        peer = peer.arg(ca);
    }
    let output = peer.run()?;
    ensure!(
        output.status.success(),
        "grpcio client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).context("client output is not JSON")
}

/// Starts the grpcio server; it records what it saw in `records`. Returns it and its port.
fn server(records: &Path) -> Result<(Process, u16)> {
    let process = Peer::new(python())
        .arg(script("server.py"))
        .arg(proto_dir())
        .arg(records)
        .spawn()?;
    process.wait_for_stdout("listening", Duration::from_secs(30))?;
    let port = process
        .stdout()
        .split_whitespace()
        .nth(1)
        .and_then(|port| port.parse().ok())
        .context("server port")?;
    Ok((process, port))
}

fn error_code(result: &Value) -> &str {
    result["error"]["code"].as_str().unwrap_or("none")
}

/// A file `records/name` written by the server, waited for.
fn record(records: &Path, name: &str) -> Result<String> {
    let path = records.join(name);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("the server recorded no `{name}`")
}

/// A self-signed `localhost` certificate (`localhost.pem`) in a PKCS#12 store, made by
/// openssl, in `dir`.
fn keystore(dir: &Path) -> Result<()> {
    pki::certificate(
        dir,
        "localhost",
        "/CN=localhost",
        None,
        &["subjectAltName=DNS:localhost"],
    )?;
    pki::pkcs12(dir, "localhost", "changeit", false).map(drop)
}

#[test]
fn grpc_echo_answers_unary_and_bidi_calls_and_checks_messages() -> Result<()> {
    let mut gateway = Gateway::from_file(example("grpc.echo"))
        .env("GRPC_ECHO_PORT", "0")
        .start()?;
    let target = gateway.address("tcp_server").to_string();
    let results = client(
        &target,
        &["unary", "bidi", "invalid", "valid_raw", "unknown"],
        None,
    )?;
    assert_eq!(results["unary"]["ok"]["message"], "hello", "{results}");
    // echo answers with the request metadata
    assert_eq!(
        results["unary"]["ok"]["initial"]["x-custom"], "v1",
        "{results}"
    );
    assert_eq!(
        results["unary"]["ok"]["initial"]["x-raw-bin"], "00ff",
        "{results}"
    );
    assert_eq!(results["bidi"]["ok"], json!(["one", "two", "three"]));
    assert_eq!(
        error_code(&results["invalid"]),
        "INVALID_ARGUMENT",
        "{results}"
    );
    assert_eq!(results["valid_raw"]["ok"], "0a026869", "{results}");
    assert_eq!(
        error_code(&results["unknown"]),
        "UNIMPLEMENTED",
        "{results}"
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn grpc_proxy_relays_every_call_shape_over_h2c_and_tls() -> Result<()> {
    let records = tempfile::tempdir()?;
    let (_server, port) = server(records.path())?;
    let keys = tempfile::tempdir()?;
    keystore(keys.path())?;
    let mut gateway = Gateway::from_file(example("grpc.proxy"))
        .env("GRPC_PROXY_PORT", "0")
        .env("GRPC_PROXY_TLS_PORT", "0")
        .env("ECHO_SERVER_HOST", "127.0.0.1")
        .env("ECHO_SERVER_PORT", port.to_string())
        .env("KEYSTORE_PATH", keys.path().join("localhost.p12"))
        .env("KEYSTORE_PASSWORD", "changeit")
        .start()?;
    let scenarios = [
        "unary",
        "server_stream",
        "client_stream",
        "bidi",
        "status",
        "invalid",
        "unknown",
    ];
    let h2c = gateway.address("tcp_server").to_string();
    let tls = format!("localhost:{}", gateway.address("tcp_tls_server").port());
    let ca = keys.path().join("localhost.pem");
    for (target, ca) in [(h2c.as_str(), None), (tls.as_str(), Some(ca.as_path()))] {
        let results = client(target, &scenarios, ca)?;
        let unary = &results["unary"]["ok"];
        assert_eq!(unary["message"], "hello", "{results}");
        assert_eq!(unary["initial"]["x-echo"], "v1", "{results}");
        assert_eq!(unary["trailing"]["x-trailer"], "done", "{results}");
        assert_eq!(unary["trailing"]["x-raw-bin"], "00ff", "{results}");
        let ticks: Vec<String> = (0..10).map(|index| format!("tick-{index}")).collect();
        assert_eq!(results["server_stream"]["ok"], json!(ticks), "{results}");
        assert_eq!(results["client_stream"]["ok"], "abc", "{results}");
        assert_eq!(results["bidi"]["ok"], json!(["one", "two", "three"]));
        let status = &results["status"]["error"];
        assert_eq!(status["code"], "NOT_FOUND", "{results}");
        assert_eq!(status["details"], "no such thing", "{results}");
        assert_eq!(status["trailing"]["x-reason"], "missing", "{results}");
        assert_eq!(
            error_code(&results["invalid"]),
            "INVALID_ARGUMENT",
            "{results}"
        );
        assert_eq!(
            error_code(&results["unknown"]),
            "UNIMPLEMENTED",
            "{results}"
        );
    }

    let results = client(&h2c, &["deadline", "cancel"], None)?;
    assert_eq!(
        error_code(&results["deadline"]),
        "DEADLINE_EXCEEDED",
        "{results}"
    );
    // The deadline reached the server as grpc-timeout: it had at most 0.5 s left.
    let remaining: f64 = record(records.path(), "remaining")?.trim().parse()?;
    assert!(remaining > 0.0 && remaining <= 0.5, "{remaining}");
    // A client without a deadline of its own (curl) gets DEADLINE_EXCEEDED from the gateway.
    let body = records.path().join("slow.bin");
    std::fs::write(&body, b"\x00\x00\x00\x00\x06\x0a\x04slow")?;
    let output = Peer::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-D",
            "-",
            "-o",
            "/dev/null",
        ])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", "grpc-timeout: 300m", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{h2c}/example.EchoService/EchoUnary"))
        .run()?;
    let head = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(head.contains("grpc-status: 4"), "{head}");
    assert_eq!(results["cancel"]["ok"], "wait", "{results}");
    // The client's cancel reset the call upstream.
    assert_eq!(record(records.path(), "cancelled")?, "yes");
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn grpc_proxy_answers_unavailable_when_the_server_is_down() -> Result<()> {
    let keys = tempfile::tempdir()?;
    keystore(keys.path())?;
    let mut gateway = Gateway::from_file(example("grpc.proxy"))
        .env("GRPC_PROXY_PORT", "0")
        .env("GRPC_PROXY_TLS_PORT", "0")
        .env("ECHO_SERVER_HOST", "127.0.0.1")
        .env("ECHO_SERVER_PORT", free_port()?.to_string())
        .env("KEYSTORE_PATH", keys.path().join("localhost.p12"))
        .env("KEYSTORE_PASSWORD", "changeit")
        .start()?;
    let results = client(&gateway.address("tcp_server").to_string(), &["unary"], None)?;
    assert_eq!(error_code(&results["unary"]), "UNAVAILABLE", "{results}");
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn grpc_routes_select_on_method_and_text_and_binary_metadata() -> Result<()> {
    let mut gateway = Gateway::start(
        r#"
name: test
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
    options:
      versions: [h2]
    exit: grpc_server
  grpc_server:
    type: grpc
    kind: server
    routes:
      - when:
          - method: example.EchoService/EchoUnary
            metadata:
              x-custom: v1
              x-raw-bin:
                base64: AP8=
        exit: echo_server
  echo_server:
    type: echo
    kind: server
"#,
    )?;
    let target = gateway.address("tcp_server").to_string();
    // unary sends both metadata; bidi sends none; valid_raw calls EchoUnary without them.
    let results = client(&target, &["unary", "bidi", "valid_raw"], None)?;
    assert_eq!(results["unary"]["ok"]["message"], "hello", "{results}");
    assert_eq!(error_code(&results["bidi"]), "UNIMPLEMENTED", "{results}");
    assert_eq!(
        error_code(&results["valid_raw"]),
        "UNIMPLEMENTED",
        "{results}"
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn a_proto_that_does_not_compile_fails_the_load_and_a_client_catalog_is_refused() -> Result<()> {
    let config = |kind: &str| {
        format!(
            r#"
name: test
catalogs:
  protos:
    type: filesystem
    options:
      subjects:
        broken:
          path: broken.proto
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
    exit: grpc_binding
  grpc_binding:
    type: grpc
    kind: {kind}
    catalog:
      protos:
        - subject: broken
    exit: echo_server
  echo_server:
    type: echo
    kind: server
"#
        )
    };
    let error = Gateway::builder(&config("server"))
        .file("broken.proto", "syntax = \"proto3\";\nmessage {\n")
        .start()
        .err()
        .context("a broken proto must fail the load")?;
    let text = format!("{error:#}");
    assert!(text.contains("broken.proto"), "{text}");
    assert!(text.contains("bindings.grpc_binding.catalog"), "{text}");
    let output = zilla_tests::validate(&config("client"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("bindings.grpc_binding.catalog: a binding-level `catalog` is not supported"),
        "{stderr}"
    );
    Ok(())
}

/// The grpc.echo example with its proto, the `grpc.*` metrics on `grpc_server` and a
/// Prometheus exporter on `metrics_port`.
fn echo_with_metrics(metrics_port: u16) -> Result<Gateway> {
    let text = std::fs::read_to_string(example("grpc.echo"))?;
    let exporter = format!(
        "name: grpc-echo\ntelemetry:\n  metrics:\n    - grpc.active.requests\n    - grpc.duration\n    - grpc.request.size\n    - grpc.response.size\n    - grpc.requests.per.rpc\n    - grpc.responses.per.rpc\n  exporters:\n    prometheus0:\n      type: prometheus\n      options:\n        endpoints:\n          - scheme: http\n            port: {metrics_port}\n            path: /metrics\n"
    );
    let server = "  grpc_server:\n    type: grpc\n    kind: server\n";
    ensure!(text.contains("name: grpc-echo\n") && text.contains(server));
    let yaml = text.replacen("name: grpc-echo\n", &exporter, 1).replacen(
        server,
        &format!("{server}    telemetry:\n      metrics:\n        - grpc.*\n"),
        1,
    );
    Gateway::builder(&yaml)
        .file(
            "proto/echo.proto",
            std::fs::read(proto_dir().join("echo.proto"))?,
        )
        .env("GRPC_ECHO_PORT", "0")
        .start()
}

#[test]
fn grpc_metrics_are_scraped_from_the_prometheus_exporter() -> Result<()> {
    let metrics_port = free_port()?;
    let gateway = echo_with_metrics(metrics_port)?;
    let target = gateway.address("tcp_server").to_string();
    let results = client(&target, &["unary", "bidi"], None)?;
    assert_eq!(results["unary"]["ok"]["message"], "hello", "{results}");
    let output = Peer::new("curl")
        .args(["-sS", "--fail", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .run()?;
    ensure!(output.status.success(), "curl failed");
    let text = String::from_utf8(output.stdout)?;
    let labels = "{namespace=\"grpc-echo\",binding=\"grpc_server\"}";
    // Two calls: unary ("hello", 7 bytes each way) and bidi ("one", "two", "three": 17
    // bytes each way, three messages each way), both over.
    for line in [
        format!("grpc_active_requests{labels} 0"),
        format!("grpc_requests_per_rpc_count{labels} 2"),
        format!("grpc_requests_per_rpc_sum{labels} 4"),
        format!("grpc_responses_per_rpc_sum{labels} 4"),
        format!("grpc_request_size_bytes_sum{labels} 24"),
        format!("grpc_response_size_bytes_sum{labels} 24"),
        format!("grpc_duration_milliseconds_count{labels} 2"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    Ok(())
}
