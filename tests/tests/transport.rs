//! tcp, tls, echo and fan through the real binary, driven by `nc` and `openssl s_client`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use zilla_tests::{Gateway, Peer, pki};

const ECHO: &str = "name: test
telemetry:
  exporters:
    stdout_exporter:
      type: stdout
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

#[test]
fn tcp_echo_through_nc() -> Result<()> {
    let mut gateway = Gateway::start(ECHO)?;
    let address = gateway.address("tcp_server");
    let output = Peer::new("nc")
        .args([
            "-q1",
            &address.ip().to_string(),
            &address.port().to_string(),
        ])
        .stdin("hello, zilla\n")
        .timeout(Duration::from_secs(10))
        .run()?;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello, zilla\n");
    assert!(gateway.terminate()?.success());
    Ok(())
}

const TLS: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: localhost.p12
        type: pkcs12
        password: ${{env.KEYSTORE_PASSWORD}}
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
      sni:
        - localhost
      alpn:
        - echo
    routes:
      - when:
          - alpn: echo
        exit: echo_server
  echo_server:
    type: echo
    kind: server
";

/// A self-signed `localhost` key and certificate (`localhost.pem`) in a PKCS#12 store, made
/// by openssl.
fn keystore(dir: &Path, password: &str, legacy: bool) -> Result<Vec<u8>> {
    pki::openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "localhost.key",
            "-out",
            "localhost.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
    )?;
    pki::pkcs12(dir, "localhost", password, legacy)
}

/// Runs `openssl s_client` against `address` with `input`; returns what it printed.
fn s_client(address: SocketAddr, sni: &str, alpn: &str, input: &str, ca: &Path) -> Result<String> {
    let connect = address.to_string();
    let output = Peer::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            sni,
            "-alpn",
            alpn,
            "-quiet",
            "-no_ign_eof",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(input.to_owned())
        .hold_stdin(Duration::from_millis(1500))
        .timeout(Duration::from_secs(10))
        .run()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn tls_echo_with_pkcs12_keys_and_alpn_routing() -> Result<()> {
    for legacy in [false, true] {
        let certs = tempfile::tempdir()?;
        let store = keystore(certs.path(), "generated-secret", legacy)?;
        let mut gateway = Gateway::builder(TLS)
            .file("localhost.p12", store)
            .env("KEYSTORE_PASSWORD", "generated-secret")
            .start()?;
        let address = gateway.address("tcp_server");
        let ca = certs.path().join("localhost.pem");

        let echoed = s_client(address, "localhost", "echo", "over tls\n", &ca)?;
        assert_eq!(echoed, "over tls\n", "legacy store: {legacy}");

        // An ALPN no route takes: the handshake may complete, but no data comes back.
        let refused = s_client(address, "localhost", "h2", "ignored\n", &ca)?;
        assert!(!refused.contains("ignored"), "{refused}");
        // An SNI outside `sni`: likewise nothing.
        let refused = s_client(address, "other.example", "echo", "ignored\n", &ca)?;
        assert!(!refused.contains("ignored"), "{refused}");

        assert!(gateway.terminate()?.success());
    }
    Ok(())
}

const FAN: &str = "name: test
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: fan_server
  fan_server:
    type: fan
    kind: server
    exit: echo_server
  echo_server:
    type: echo
    kind: server
";

fn read_exactly(stream: &mut TcpStream, length: usize) -> Result<Vec<u8>> {
    let mut buffer = vec![0u8; length];
    stream.read_exact(&mut buffer)?;
    Ok(buffer)
}

#[test]
fn fan_members_see_each_others_data() -> Result<()> {
    let mut gateway = Gateway::start(FAN)?;
    let address = gateway.address("tcp_server");
    let mut alice = TcpStream::connect(address)?;
    alice.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Alice's round trip proves she joined; Bob joins after it, so he never sees "a1".
    alice.write_all(b"a1")?;
    assert_eq!(read_exactly(&mut alice, 2)?, b"a1");
    let mut bob = TcpStream::connect(address)?;
    bob.set_read_timeout(Some(Duration::from_secs(5)))?;
    bob.write_all(b"b1")?;
    assert_eq!(read_exactly(&mut bob, 2)?, b"b1");
    assert_eq!(read_exactly(&mut alice, 2)?, b"b1");
    alice.write_all(b"a2")?;
    assert_eq!(read_exactly(&mut bob, 2)?, b"a2");
    assert_eq!(read_exactly(&mut alice, 2)?, b"a2");
    drop((alice, bob));
    assert!(gateway.terminate()?.success());
    Ok(())
}
