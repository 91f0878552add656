//! Reload semantics, in process: unchanged bindings keep their connections, a broken config
//! keeps the running one, and a changed binding's connections finish on it, cut only when the
//! drain timeout passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zilla::engine::Engine;
use zilla::engine::properties::Properties;

fn config(first_port: u16, second_port: u16, second_host: &str) -> String {
    format!(
        "name: test
bindings:
  first:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: {first_port}
    exit: echo_first
  echo_first:
    type: echo
    kind: server
  second:
    type: tcp
    kind: server
    options:
      host: {second_host}
      port: {second_port}
    exit: echo_second
  echo_second:
    type: echo
    kind: server
"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap()
}

async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> Vec<u8> {
    stream.write_all(text).await.unwrap();
    let mut buffer = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buffer))
        .await
        .expect("echo timed out")
        .unwrap();
    buffer
}

#[tokio::test]
async fn unchanged_bindings_keep_connections_and_broken_configs_keep_the_old_one() {
    let (first, second, third) = (free_port(), free_port(), free_port());
    let engine = Engine::new(
        zilla::registry(),
        Properties::from_assignments(["zilla.engine.drain.timeout.millis=1500"]),
    );
    let path = Path::new("zilla.yaml");
    let initial = engine
        .load(path, &config(first, second, "127.0.0.1"))
        .unwrap();
    engine.apply(initial).unwrap();

    let mut kept = TcpStream::connect(("127.0.0.1", first)).await.unwrap();
    let mut draining = TcpStream::connect(("127.0.0.1", second)).await.unwrap();
    assert_eq!(round_trip(&mut kept, b"one").await, b"one");
    assert_eq!(round_trip(&mut draining, b"one").await, b"one");

    // Move the second server to another port: only it is rebuilt.
    let changed = engine
        .load(path, &config(first, third, "127.0.0.1"))
        .unwrap();
    let report = engine.apply(changed).unwrap();
    assert_eq!(report.kept, 3, "{report:?}");
    assert_eq!(report.built, 1, "{report:?}");
    assert_eq!(report.retired, 1, "{report:?}");
    assert_eq!(round_trip(&mut kept, b"two").await, b"two");
    // The replaced server no longer listens, but the connection it accepted carries on...
    assert!(TcpStream::connect(("127.0.0.1", second)).await.is_err());
    assert_eq!(round_trip(&mut draining, b"two").await, b"two");
    let mut moved = TcpStream::connect(("127.0.0.1", third)).await.unwrap();
    assert_eq!(round_trip(&mut moved, b"new").await, b"new");
    // ...until the drain timeout, when what is still open is cut.
    let mut buffer = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), draining.read(&mut buffer))
        .await
        .expect("a connection of a replaced binding outlived the drain timeout");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "retired connection still open: {read:?}"
    );

    // A config that cannot be built (the host does not resolve) leaves everything running.
    let broken = engine
        .load(path, &config(first, third, "host.invalid"))
        .unwrap();
    assert!(engine.apply(broken).is_err());
    assert_eq!(round_trip(&mut kept, b"three").await, b"three");
    assert_eq!(round_trip(&mut moved, b"still").await, b"still");

    // With every client gone, shutdown drains at once and nothing listens any more.
    drop((kept, moved));
    assert!(engine.shutdown(Duration::from_secs(5)).await);
    assert!(TcpStream::connect(("127.0.0.1", first)).await.is_err());
}
