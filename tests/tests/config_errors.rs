//! Bad configs fail `zilla validate` and `zilla start` with a non-zero exit code and messages
//! naming line:column and the config path. The messages are pinned as snapshots.

use std::process::Output;

use anyhow::Result;
use zilla_tests::{Peer, validate_with_env, zilla_binary};

/// One bad config: a name, the YAML, and the environment it runs in.
struct Case {
    name: &'static str,
    yaml: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "unknown_key",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
      colour: blue
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        name: "wrong_type",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
      nodelay: sometimes
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        name: "unknown_exit",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    routes:
      - when:
          - port: 0
        exit: echo_sever
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        name: "exit_of_wrong_stream_kind",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: other_server
  other_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        name: "unset_env_var",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: ${{env.ZILLA_TEST_UNSET_PORT}}
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        name: "malformed_yaml",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options: {host: 127.0.0.1, port: [0
    exit: echo_server
",
        env: &[],
    },
    Case {
        name: "port_out_of_range",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: ${{env.ZILLA_TEST_PORT}}
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[("ZILLA_TEST_PORT", "70000")],
    },
    Case {
        name: "type_not_built_in",
        yaml: "name: test
bindings:
  pgsql_server:
    type: pgsql
    kind: server
  spec_server:
    type: mcp-openapi
    kind: proxy
",
        env: &[],
    },
    Case {
        name: "telemetry_refused",
        yaml: "name: test
telemetry:
  attributes:
    service: gateway
  metrics:
    - http.request.size
    - mcp.initialize.duration
    - stream.bogus
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: http_server
    telemetry:
      metrics:
        - http.*
      attributes:
        method: ${http.request.method}
  http_server:
    type: http
    kind: server
    exit: echo_server
    telemetry:
      metrics:
        - http.(request
        - stream.opens.received
        - http.*
      attributes:
        tenant: acme
        le: ${http.request.path}
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        // Each kafka kind refuses the options another kind reads: the brokers and SASL
        // credentials are the client's, `bootstrap` the cache_server's.
        name: "kafka_options_of_another_kind",
        yaml: "name: test
bindings:
  kafka_cache_client:
    type: kafka
    kind: cache_client
    options:
      bootstrap:
        - items
      sasl:
        mechanism: plain
        username: user
        password: secret
    exit: kafka_cache_server
  kafka_cache_server:
    type: kafka
    kind: cache_server
    options:
      servers:
        - localhost:9092
    exit: kafka_client
  kafka_client:
    type: kafka
    kind: client
    options:
      bootstrap:
        - items
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
",
        env: &[],
    },
    Case {
        // Routes no binding of these kinds follows: a kafka client's and cache_server's, an
        // mqtt client's (each has its one `exit`), and a guard on a kafka cache_client's,
        // whose requests carry no credentials.
        name: "routes_a_kind_does_not_follow",
        yaml: "name: test
guards:
  inline0:
    type: inline
    options:
      identity: reader
bindings:
  kafka_cache_client:
    type: kafka
    kind: cache_client
    routes:
      - when:
          - topic: items
        exit: kafka_cache_server0
        guarded:
          inline0: []
  kafka_cache_server0:
    type: kafka
    kind: cache_server
    exit: kafka_client0
  kafka_cache_server:
    type: kafka
    kind: cache_server
    routes:
      - exit: kafka_client0
  kafka_client0:
    type: kafka
    kind: client
    exit: tcp_client
  kafka_client:
    type: kafka
    kind: client
    routes:
      - exit: tcp_client
  mqtt_client:
    type: mqtt
    kind: client
    routes:
      - exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
",
        env: &[],
    },
    Case {
        // Metrics of a binding type that a kind of it never records: a grpc client's, a kafka
        // client's, a cache_server's other than the cache's; and attributes where no enabled
        // metric takes them.
        name: "metrics_a_kind_does_not_record",
        yaml: "name: test
telemetry:
  metrics:
    - grpc.duration
    - kafka.requests
    - kafka.cache.size
bindings:
  grpc_client:
    type: grpc
    kind: client
    exit: http_client
    telemetry:
      metrics:
        - grpc.*
  http_client:
    type: http
    kind: client
    exit: tcp_client
  kafka_cache_server:
    type: kafka
    kind: cache_server
    exit: kafka_client
    telemetry:
      metrics:
        - kafka.requests
        - kafka.cache.size
      attributes:
        topic: ${kafka.topic}
  kafka_client:
    type: kafka
    kind: client
    exit: tcp_client
    telemetry:
      metrics:
        - kafka.*
  tcp_client:
    type: tcp
    kind: client
",
        env: &[],
    },
    Case {
        // An inline guard `format` naming a placeholder twice matches nothing it could split.
        name: "inline_format_refused_when_building",
        yaml: "name: test
guards:
  inline0:
    type: inline
    options:
      format: \"{identity}:{identity}\"
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        // CORS `allow` without the cross-origin policy it applies to, and a second server name
        // for a tls client, which a ClientHello cannot carry.
        name: "options_refused_when_building",
        yaml: "name: test
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
      access-control:
        allow:
          origins:
            - https://example.net
    exit: echo_server
  tls_client:
    type: tls
    kind: client
    options:
      sni:
        - one.example.com
        - two.example.com
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        // Found only when the guard is built: `validate` builds every component, as `start`.
        name: "error_found_when_building",
        yaml: "name: test
guards:
  authn:
    type: jwt
    options:
      keys:
        - kty: EC
          kid: encryption
          alg: ES256
          use: enc
          crv: P-256
          x: f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU
          y: x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
    Case {
        // Only the tls server's own error: the tcp server in front of it is not built, rather
        // than reported for exiting to a binding that accepts no streams.
        name: "exit_that_failed_to_build",
        yaml: "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: tls_server
  tls_server:
    type: tls
    kind: server
    options:
      keys:
        - localhost
    exit: echo_server
  echo_server:
    type: echo
    kind: server
",
        env: &[],
    },
];

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `zilla start` on the case's config; it must fail before listening.
fn start(case: &Case) -> Result<Output> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("zilla.yaml"), case.yaml)?;
    let engine = dir.path().join("engine");
    let mut peer = Peer::new(zilla_binary()?)
        .args(["start", "-c", "zilla.yaml", "-P"])
        .arg(format!("zilla.engine.directory={}", engine.display()))
        .current_dir(dir.path());
    for (name, value) in case.env {
        peer = peer.env(name, value);
    }
    peer.run()
}

#[test]
fn bad_configs_fail_validate_and_start_with_positions() -> Result<()> {
    for case in CASES {
        let validated = validate_with_env(case.yaml, case.env)?;
        assert!(
            !validated.status.success(),
            "{}: validate accepted a bad config",
            case.name
        );
        let message = stderr(&validated);
        for line in message.lines() {
            // Every line is `zilla.yaml:<line>:<column>: <path>: <message>`.
            let mut parts = line.splitn(4, ':');
            assert_eq!(parts.next(), Some("zilla.yaml"), "{}: {line}", case.name);
            let line_number: usize = parts.next().unwrap_or("").parse()?;
            let column: usize = parts.next().unwrap_or("").trim().parse()?;
            assert!(line_number > 0 && column > 0, "{}: {line}", case.name);
        }
        insta::assert_snapshot!(case.name, message);

        let started = start(case)?;
        assert!(
            !started.status.success(),
            "{}: start accepted a bad config",
            case.name
        );
        let start_message = stderr(&started);
        assert!(
            start_message.contains(message.lines().next().unwrap_or("")),
            "{}: start said:\n{start_message}\nvalidate said:\n{message}",
            case.name
        );
    }
    Ok(())
}

const ECHO: &str = "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: echo_server
  echo_server:
    type: echo
    kind: server
";

/// `zilla <command> -c zilla.yaml` on the echo config with `-P` assignments.
fn with_properties(command: &str, assignments: &[&str]) -> Result<Output> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("zilla.yaml"), ECHO)?;
    let mut peer = Peer::new(zilla_binary()?)
        .args([command, "-c", "zilla.yaml"])
        .current_dir(dir.path());
    let engine = format!(
        "zilla.engine.directory={}",
        dir.path().join("engine").display()
    );
    for assignment in assignments.iter().copied().chain([engine.as_str()]) {
        peer = peer.args(["-P", assignment]);
    }
    peer.run()
}

#[test]
fn properties_no_component_reads_fail_validate_and_start_naming_them() -> Result<()> {
    let misspelt = [
        "zilla.binding.tcp.idle.timout.millis=1000",
        "zilla.engine.drain.timeout=5",
        "zilla.binding.nope.size=1",
    ];
    for command in ["validate", "start"] {
        let output = with_properties(command, &misspelt)?;
        assert!(
            !output.status.success(),
            "{command} accepted unknown properties"
        );
        let message = stderr(&output);
        assert!(
            message.contains(
                "unknown property `zilla.binding.tcp.idle.timout.millis`; the `zilla.binding.tcp.*` properties are: zilla.binding.tcp.client.connect.timeout.millis, zilla.binding.tcp.idle.timeout.millis, zilla.binding.tcp.maximum.connections"
            ),
            "{command}: {message}"
        );
        assert!(
            message.contains("unknown property `zilla.engine.drain.timeout`; the `zilla.engine.*` properties are: zilla.engine.cache.directory, zilla.engine.config.poll.interval.seconds, zilla.engine.config.url, zilla.engine.config.watch, zilla.engine.directory, zilla.engine.drain.timeout.millis, zilla.engine.maximum.connections, zilla.engine.workers"),
            "{command}: {message}"
        );
        assert!(
            message.contains("unknown property `zilla.binding.nope.size`: no component of this distribution reads it"),
            "{command}: {message}"
        );
    }
    // Zilla's names that this distribution reads are accepted.
    let known = [
        "zilla.binding.tcp.idle.timeout.millis=1000",
        "zilla.binding.http.server.header=zilla",
        "zilla.binding.kafka.client.meta.max.age.ms=1000",
        "zilla.binding.mqtt.keep.alive.maximum=60",
        "zilla.binding.sse.maximum.idle.time=1000",
        "zilla.engine.workers=1",
        "zilla.engine.drain.timeout.millis=100",
    ];
    let output = with_properties("validate", &known)?;
    assert!(output.status.success(), "{}", stderr(&output));
    Ok(())
}

#[test]
fn validate_binds_no_configured_port() -> Result<()> {
    // A running gateway holds its ports; checking its config must neither need them nor take them.
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = held.local_addr()?.port();
    let yaml = ECHO.replace("port: 0", &format!("port: {port}"));
    let validated = validate_with_env(&yaml, &[])?;
    assert!(validated.status.success(), "{}", stderr(&validated));
    assert_eq!(held.local_addr()?.port(), port);
    Ok(())
}
