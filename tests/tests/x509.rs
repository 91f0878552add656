//! The `x509` guard through the real binary: a tls server with `mutual: required` hands each
//! verified client certificate chain to the guard (`options.authorization`), and the http
//! server inward routes on the session's roles and writes its identity and attributes into
//! headers the origin sees; an mqtt server inward, with no guard of its own, authorizes
//! sessions on those roles in front of a mosquitto broker; with `mutual: requested`, the tls
//! server's own guarded route takes certificates holding the role and a later route everyone
//! else. Certificates are made with `openssl`, requests sent by `curl` and mosquitto's
//! clients with client certificates, and the origins are nginx answering with the headers it
//! received or saying which of them answered.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use zilla_tests::pki::{certificate, client_certificate};
use zilla_tests::{Gateway, Peer, mosquitto, nginx_with, success};

const CONFIG: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: keys
        type: pem
      trust:
        store: trust
        type: pem
guards:
  x509_0:
    type: x509
    options:
      identity: subject.cn
      attributes:
        organization: subject.o
        spiffe: san.uri
        dn: subject.dn
      roles:
        internal:
          - issuer.cn: internal ca
            subject.ou: Platform
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
    vault: server
    options:
      keys:
        - localhost
      trust:
        - ca
      mutual: required
      authorization:
        x509_0:
          credentials:
            certificates: pem
    exit: http_server
  http_server:
    type: http
    kind: server
    routes:
      - when:
          - headers:
              :path: /internal
        guarded:
          x509_0:
            - internal
        with:
          headers:
            overrides:
              x-identity: ${guarded['x509_0'].identity}
        exit: http_client
      - when:
          - headers:
              :path: /whoami
        with:
          headers:
            overrides:
              x-identity: ${guarded['x509_0'].identity}
              x-organization: ${guarded['x509_0'].attributes.organization}
              x-spiffe: ${guarded['x509_0'].attributes.spiffe}
              x-dn: ${guarded['x509_0'].attributes.dn}
        exit: http_client
  http_client:
    type: http
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.ORIGIN_PORT}}
";

/// Two CAs; the server key; `alice` (OU Platform) and `bob` (OU Sales) from the trusted CA;
/// `mallory` from the other one.
fn make_pki(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::create_dir_all(dir.join("trust"))?;
    certificate(dir, "ca", "/O=Example Inc/CN=Internal CA", None, &[])?;
    certificate(dir, "other", "/O=Other Inc/CN=Other CA", None, &[])?;
    certificate(
        dir,
        "server",
        "/CN=localhost",
        None,
        &["subjectAltName=DNS:localhost"],
    )?;
    client_certificate(
        dir,
        "alice",
        "ca",
        "/O=Example Inc/OU=Platform/CN=alice",
        "URI:spiffe://example.com/alice",
    )?;
    client_certificate(
        dir,
        "bob",
        "ca",
        "/O=Example Inc/OU=Sales/CN=bob",
        "DNS:bob.example.com",
    )?;
    client_certificate(
        dir,
        "mallory",
        "other",
        "/O=Example Inc/OU=Platform/CN=mallory",
        "DNS:mallory.example.com",
    )?;
    let mut pem = std::fs::read(dir.join("server.key"))?;
    pem.extend(std::fs::read(dir.join("server.pem"))?);
    std::fs::write(dir.join("keys/localhost.pem"), pem)?;
    std::fs::copy(dir.join("ca.pem"), dir.join("trust/ca.pem"))?;
    Ok(())
}

/// nginx answering every request with the headers the gateway set.
const ORIGIN: &str = "default_type text/plain;
        location / {
            return 200 \"identity=$http_x_identity\\norganization=$http_x_organization\\nspiffe=$http_x_spiffe\\ndn=$http_x_dn\\n\";
        }";

/// What curl got for `path`, presenting `client`'s certificate (or none): exit success, the
/// status line and body on stdout, and curl's complaint on stderr.
fn request(
    dir: &Path,
    port: u16,
    path: &str,
    client: Option<&str>,
) -> Result<(bool, String, String)> {
    request_with(dir, port, path, client, &[])
}

/// Like [`request`], with more curl arguments.
fn request_with(
    dir: &Path,
    port: u16,
    path: &str,
    client: Option<&str>,
    extra: &[&str],
) -> Result<(bool, String, String)> {
    let url = format!("https://localhost:{port}{path}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let mut peer = Peer::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "10",
            "-w",
            "status=%{http_code}\n",
        ])
        .args(extra)
        .args(["--resolve", &resolve, &url])
        .current_dir(dir)
        .timeout(Duration::from_secs(20));
    if let Some(client) = client {
        peer = peer.args([
            "--cert",
            &format!("{client}.pem"),
            "--key",
            &format!("{client}.key"),
        ]);
    }
    let output = peer.run()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// What `openssl s_client` (presenting `client`'s certificate, or none) printed after sending
/// a request: the alert the server sent shows on stderr.
fn handshake(dir: &Path, port: u16, client: Option<&str>) -> Result<(String, String)> {
    let address = format!("127.0.0.1:{port}");
    let mut peer = Peer::new("openssl")
        .args(["s_client", "-quiet", "-no_ign_eof", "-connect", &address])
        .args(["-servername", "localhost"])
        .current_dir(dir)
        .stdin("GET /whoami HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .hold_stdin(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    if let Some(client) = client {
        peer = peer.args([
            "-cert",
            &format!("{client}.pem"),
            "-key",
            &format!("{client}.key"),
        ]);
    }
    let output = peer.run()?;
    Ok((
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn certificate_identity_roles_and_attributes_reach_the_http_routes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path();
    make_pki(pki)?;
    std::fs::create_dir_all(pki.join("www"))?;
    let (_origin, origin_port) = nginx_with(&pki.join("nginx"), &pki.join("www"), ORIGIN)?;
    let mut builder = Gateway::builder(CONFIG).env("ORIGIN_PORT", origin_port.to_string());
    for file in ["keys/localhost.pem", "trust/ca.pem"] {
        builder = builder.file(file, std::fs::read(pki.join(file))?);
    }
    let mut gateway = builder.start()?;
    let port = gateway.address("tcp_server").port();

    let (ok, stdout, stderr) = request(pki, port, "/whoami", Some("alice"))?;
    ensure!(ok, "alice: {stderr}");
    ensure!(stdout.contains("identity=alice\n"), "{stdout}");
    ensure!(stdout.contains("organization=Example Inc\n"), "{stdout}");
    ensure!(
        stdout.contains("spiffe=spiffe://example.com/alice\n"),
        "{stdout}"
    );
    // Java's canonical form of the subject: RFC 2253 order, lower case.
    ensure!(
        stdout.contains("dn=cn=alice,ou=platform,o=example inc\n"),
        "{stdout}"
    );
    ensure!(stdout.contains("status=200"), "{stdout}");

    // The role needs OU Platform: alice holds it, bob does not (his request matches no route).
    let (_, stdout, _) = request(pki, port, "/internal", Some("alice"))?;
    ensure!(
        stdout.contains("identity=alice\n") && stdout.contains("status=200"),
        "{stdout}"
    );
    let (_, stdout, _) = request(pki, port, "/internal", Some("bob"))?;
    ensure!(stdout.contains("status=404"), "bob was routed: {stdout}");
    let (_, stdout, _) = request(pki, port, "/whoami", Some("bob"))?;
    ensure!(
        stdout.contains("identity=bob\n") && stdout.contains("spiffe=\n"),
        "{stdout}"
    );

    // A certificate from another CA, even with the same subject, fails the handshake.
    let (ok, stdout, _) = request(pki, port, "/whoami", Some("mallory"))?;
    ensure!(
        !ok && !stdout.contains("identity="),
        "mallory was served: {stdout}"
    );
    let (stdout, stderr) = handshake(pki, port, Some("mallory"))?;
    ensure!(
        !stdout.contains("identity=") && stderr.contains("alert unknown ca"),
        "mallory: no unknown-CA alert: {stdout}\n{stderr}"
    );

    // No certificate at all, with `mutual: required`, fails the handshake too.
    let (ok, stdout, _) = request(pki, port, "/whoami", None)?;
    ensure!(
        !ok && !stdout.contains("identity="),
        "served without a certificate: {stdout}"
    );
    let (stdout, stderr) = handshake(pki, port, None)?;
    ensure!(
        !stdout.contains("identity=") && stderr.contains("alert certificate required"),
        "no certificate: no certificate-required alert: {stdout}\n{stderr}"
    );

    assert!(gateway.terminate()?.success());
    Ok(())
}

/// The mqtt server has no guard of its own: its route is `guarded` by the role the tls
/// server's `x509` guard gave the client certificate.
const MQTT: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: keys
        type: pem
      trust:
        store: trust
        type: pem
guards:
  x509_0:
    type: x509
    options:
      identity: subject.cn
      roles:
        internal:
          - issuer.cn: internal ca
            subject.ou: Platform
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
    vault: server
    options:
      keys:
        - localhost
      trust:
        - ca
      mutual: required
      authorization:
        x509_0:
          credentials:
            certificates: pem
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
        guarded:
          x509_0:
            - internal
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

/// A mosquitto client (`mosquitto_pub` or `mosquitto_sub`) to the gateway over TLS, trusting
/// the gateway's certificate and presenting `client`'s.
fn mosquitto_client(program: &str, dir: &Path, port: u16, client: &str, version: &str) -> Peer {
    Peer::new(program)
        .current_dir(dir)
        .args(["-h", "localhost", "-p", &port.to_string(), "-V", version])
        .args(["--cafile", "server.pem"])
        .args(["--cert", &format!("{client}.pem")])
        .args(["--key", &format!("{client}.key")])
        .timeout(Duration::from_secs(20))
}

#[test]
fn certificate_roles_authorize_mqtt_sessions_behind_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path();
    make_pki(pki)?;
    std::fs::create_dir_all(pki.join("broker"))?;
    let (_broker, broker_port) = mosquitto(&pki.join("broker"))?;
    let mut builder = Gateway::builder(MQTT).env("BROKER_PORT", broker_port.to_string());
    for file in ["keys/localhost.pem", "trust/ca.pem"] {
        builder = builder.file(file, std::fs::read(pki.join(file))?);
    }
    let mut gateway = builder.start()?;
    let port = gateway.address("tcp_server").port();
    let result = (|| -> Result<()> {
        // How mosquitto's clients name the CONNACK refusal: code 5 of 3.1.1, reason 0x87 of 5.
        for (version, not_authorized) in [
            ("mqttv311", "connection refused: not authorised"),
            ("mqttv5", "connection error: not authorized"),
        ] {
            // alice holds the role: what she publishes reaches her subscriber through the
            // broker.
            let topic = format!("x509/{version}");
            let payload = format!("hello {version}");
            let mut subscriber = mosquitto_client("mosquitto_sub", pki, port, "alice", version)
                .args(["-t", "x509/#", "-q", "1", "-C", "1", "-W", "20", "-v"])
                .spawn()?;
            // The subscriber has no ready signal: publish until it has received one message.
            let deadline = Instant::now() + Duration::from_secs(20);
            while subscriber.try_status()?.is_none() {
                ensure!(
                    Instant::now() < deadline,
                    "alice's subscriber received nothing: {}",
                    subscriber.stderr()
                );
                let published = mosquitto_client("mosquitto_pub", pki, port, "alice", version)
                    .args(["-t", &topic, "-q", "1", "-m", &payload])
                    .run()?;
                success(&published).context("alice publishes")?;
                std::thread::sleep(Duration::from_millis(200));
            }
            ensure!(
                subscriber.stdout() == format!("{topic} {payload}\n"),
                "alice's subscriber: {}",
                subscriber.stdout()
            );

            // bob's certificate is from the trusted CA but lacks the role: CONNACK refuses
            // him (5 in 3.1.1, 0x87 in MQTT 5), and neither his publication nor his
            // subscription goes through.
            let refused = mosquitto_client("mosquitto_pub", pki, port, "bob", version)
                .args(["-t", &topic, "-q", "1", "-m", "from bob"])
                .run()?;
            let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
            ensure!(
                !refused.status.success() && said.contains(not_authorized),
                "bob's publication ({version}): {said}"
            );
            let refused = mosquitto_client("mosquitto_sub", pki, port, "bob", version)
                .args(["-t", "x509/#", "-C", "1", "-W", "10"])
                .run()?;
            let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
            ensure!(
                !refused.status.success() && said.contains(not_authorized),
                "bob's subscription ({version}): {said}"
            );

            // mallory's certificate is from another CA: the handshake fails, so no CONNECT
            // is ever answered.
            let failed = mosquitto_client("mosquitto_pub", pki, port, "mallory", version)
                .args(["-t", &topic, "-q", "1", "-m", "from mallory"])
                .run()?;
            let said = String::from_utf8_lossy(&failed.stderr).to_lowercase();
            ensure!(
                !failed.status.success() && !said.contains("not authori"),
                "mallory ({version}): {said}"
            );
        }
        let (_, stderr) = handshake(pki, port, Some("mallory"))?;
        ensure!(
            stderr.contains("alert unknown ca"),
            "mallory: no unknown-CA alert: {stderr}"
        );
        Ok(())
    })();
    let result = result.with_context(|| format!("gateway log:\n{}", gateway.stderr()));
    assert!(gateway.terminate()?.success());
    result
}

/// With `mutual: requested`, a client may present no certificate: the guarded route takes
/// those whose certificate holds the role, and the later unguarded route everyone else.
const REQUESTED: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: keys
        type: pem
      trust:
        store: trust
        type: pem
guards:
  x509_0:
    type: x509
    options:
      identity: subject.cn
      roles:
        internal:
          - issuer.cn: internal ca
            subject.ou: Platform
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
    vault: server
    options:
      keys:
        - localhost
      trust:
        - ca
      mutual: requested
      authorization:
        x509_0:
          credentials:
            certificates: pem
    routes:
      - guarded:
          x509_0:
            - internal
        exit: internal_client
      - exit: public_client
  internal_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.INTERNAL_PORT}}
  public_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: ${{env.PUBLIC_PORT}}
";

#[test]
fn requested_certificates_choose_between_a_guarded_route_and_its_fallback() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = dir.path();
    make_pki(pki)?;
    let mut origins = Vec::new();
    for name in ["internal", "public"] {
        let root = pki.join(format!("{name}-www"));
        std::fs::create_dir_all(&root)?;
        let answer = format!(
            "default_type text/plain;\n        location / {{ return 200 \"exit={name}\\n\"; }}"
        );
        origins.push(nginx_with(
            &pki.join(format!("{name}-nginx")),
            &root,
            &answer,
        )?);
    }
    let mut builder = Gateway::builder(REQUESTED)
        .env("INTERNAL_PORT", origins[0].1.to_string())
        .env("PUBLIC_PORT", origins[1].1.to_string());
    for file in ["keys/localhost.pem", "trust/ca.pem"] {
        builder = builder.file(file, std::fs::read(pki.join(file))?);
    }
    let mut gateway = builder.start()?;
    let port = gateway.address("tcp_server").port();
    let result = (|| -> Result<()> {
        // alice's certificate holds the role; bob's is trusted but lacks it; the last client
        // presents none. The exits are plain nginx over HTTP/1.1.
        for (client, exit) in [
            (Some("alice"), "internal"),
            (Some("bob"), "public"),
            (None, "public"),
        ] {
            let (ok, stdout, stderr) = request_http1(pki, port, client)?;
            ensure!(
                ok && stdout.contains(&format!("exit={exit}\n")) && stdout.contains("status=200"),
                "{client:?} should reach {exit}: {stdout}{stderr}"
            );
        }
        // A certificate from another CA is refused even though one is only requested.
        let (ok, stdout, _) = request_http1(pki, port, Some("mallory"))?;
        ensure!(
            !ok && !stdout.contains("exit="),
            "mallory was served: {stdout}"
        );
        let (stdout, stderr) = handshake(pki, port, Some("mallory"))?;
        ensure!(
            !stdout.contains("exit=") && stderr.contains("alert unknown ca"),
            "mallory: no unknown-CA alert: {stdout}\n{stderr}"
        );
        Ok(())
    })();
    let result = result.with_context(|| format!("gateway log:\n{}", gateway.stderr()));
    assert!(gateway.terminate()?.success());
    result
}

/// Like [`request`] for `/`, over HTTP/1.1 (the exits are nginx without TLS, so the
/// protocol the tls server negotiates must be one nginx speaks in plaintext).
fn request_http1(dir: &Path, port: u16, client: Option<&str>) -> Result<(bool, String, String)> {
    request_with(dir, port, "/", client, &["--http1.1"])
}

/// What a failed start said; `key` is the vault's `keys/localhost.pem`.
fn start_error(yaml: &str, key: &[u8]) -> Result<String> {
    match Gateway::builder(yaml)
        .file("keys/localhost.pem", key.to_vec())
        .start()
    {
        Ok(_) => anyhow::bail!("started:\n{yaml}"),
        Err(error) => Ok(format!("{error:#}")),
    }
}

const BAD_BASE: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: keys
        type: pem
guards:
  x509_0:
    type: x509
bindings:
  tls:
    type: tls
    kind: KIND
    vault: server
    options:
      keys: [localhost]
OPTIONS
    exit: echo_server
  echo_server:
    type: echo
    kind: server
";

#[test]
fn authorization_and_guard_options_that_cannot_work_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    certificate(dir.path(), "server", "/CN=localhost", None, &[])?;
    let mut key = std::fs::read(dir.path().join("server.key"))?;
    key.extend(std::fs::read(dir.path().join("server.pem"))?);
    let case =
        |kind: &str, options: &str| BAD_BASE.replace("KIND", kind).replace("OPTIONS\n", options);
    // A client has no client certificates to hand a guard.
    let error = start_error(
        &case(
            "client",
            "      authorization:\n        x509_0:\n          credentials:\n            certificates: pem\n",
        ),
        &key,
    )?;
    ensure!(
        error.contains("options.authorization") && error.contains("tls client"),
        "{error}"
    );
    // A server that asks for no client certificate has nothing to give the guard.
    let error = start_error(
        &case(
            "server",
            "      mutual: none\n      authorization:\n        x509_0:\n          credentials:\n            certificates: pem\n",
        ),
        &key,
    )?;
    ensure!(error.contains("options.mutual"), "{error}");
    // The guard must be told it gets the chain as PEM.
    let error = start_error(
        &case(
            "server",
            "      mutual: requested\n      authorization:\n        x509_0: {}\n",
        ),
        &key,
    )?;
    ensure!(
        error.contains("options.authorization.x509_0.credentials"),
        "{error}"
    );
    // The certificate format is an enumeration.
    let error = start_error(
        &case(
            "server",
            "      mutual: requested\n      authorization:\n        x509_0:\n          credentials:\n            certificates: der\n",
        ),
        &key,
    )?;
    ensure!(error.contains("certificates"), "{error}");
    // A guard field no certificate carries is a typo, refused where it is written.
    let error = start_error(
        "name: test
guards:
  x509_0:
    type: x509
    options:
      identity: subject.common_name
      attributes:
        org: subject.o
      roles:
        admin:
          - subject.ou: Platform
",
        &key,
    )?;
    ensure!(
        error.contains("options.identity") && error.contains("subject.common_name"),
        "{error}"
    );
    Ok(())
}

/// An `x509` guard proves nothing itself (it trusts the chain a tls server verified), so a
/// binding whose credentials a client merely presents must not hand them to it: anyone could
/// present a public certificate. `zilla validate` refuses each such binding where it names
/// the guard.
#[test]
fn bindings_taking_presented_credentials_refuse_an_x509_guard() -> Result<()> {
    let guards = "guards:\n  x509_0:\n    type: x509\n";
    let cases = [
        (
            "http",
            "  http_server:
    type: http
    kind: server
    options:
      authorization:
        x509_0:
          credentials:
            headers:
              authorization: Bearer {credentials}
    exit: http_client
  http_client:
    type: http
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options: { host: 127.0.0.1, port: 8080 }
",
            "options.authorization.x509_0",
        ),
        (
            "mqtt",
            "  mqtt_server:
    type: mqtt
    kind: server
    options:
      authorization:
        x509_0:
          credentials:
            connect:
              password: '{credentials}'
    exit: mqtt_client
  mqtt_client:
    type: mqtt
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options: { host: 127.0.0.1, port: 1883 }
",
            "options.authorization",
        ),
        (
            "kafka proxy",
            "  kafka_proxy:
    type: kafka
    kind: proxy
    options:
      servers: [127.0.0.1:9092]
      external:
        host: 127.0.0.1
        port: 19092
        ports: 19093-19095
      authentication:
        mechanisms: [plain]
        guards: [x509_0]
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options: { host: 127.0.0.1, port: 9092 }
",
            "options.authentication.guards[0]",
        ),
    ];
    for (binding, bindings, path) in cases {
        let yaml = format!("name: test\n{guards}bindings:\n{bindings}");
        let output = zilla_tests::validate(&yaml)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "{binding}: validated\n{yaml}");
        ensure!(
            stderr.contains(path)
                && stderr.contains("cannot authorize credentials a client presents"),
            "{binding}: {stderr}"
        );
    }
    Ok(())
}
