//! The fan binding end to end: built by the engine from a config, driven over loopback TCP and
//! in-memory pipes, with an exit defined here that echoes (and counts its streams).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use zilla_engine::stream::StreamKind;
use zilla_engine::{
    Binding, BindingFactory, BindingKind, BindingSchema, BoxFuture, BuildContext, BuildError,
    ByteStream, Bytes, BytesHandler, Engine, Registry, StreamError, StreamInfo,
};

const WAIT: Duration = Duration::from_secs(10);

/// How the test exit behaves on each stream it is asked for.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Echoes until the fan closes its side.
    Echo,
    /// Echoes the first chunk, then closes the stream.
    EchoOnceThenClose,
    /// Refuses to open.
    Refuse,
}

/// An exit that echoes and counts the streams it opened and the ones still open.
struct TestExit {
    behaviour: Behaviour,
    opened: AtomicUsize,
    open: Arc<AtomicUsize>,
}

impl TestExit {
    fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            opened: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl BytesHandler for TestExit {
    fn connect(&self, info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
        Box::pin(async move {
            if self.behaviour == Behaviour::Refuse {
                return Err(StreamError::Upstream("connection refused".into()));
            }
            self.opened.fetch_add(1, Ordering::SeqCst);
            self.open.fetch_add(1, Ordering::SeqCst);
            let (near, mut far) = tokio::io::duplex(64 * 1024);
            let open = self.open.clone();
            let behaviour = self.behaviour;
            tokio::spawn(async move {
                let mut buffer = vec![0; 64 * 1024];
                loop {
                    let read = match far.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => read,
                    };
                    if far.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                    if behaviour == Behaviour::EchoOnceThenClose {
                        break;
                    }
                }
                drop(far);
                open.fetch_sub(1, Ordering::SeqCst);
            });
            Ok(ByteStream::new(near, info))
        })
    }
}

/// Registers the test exit as the `echo` binding type.
struct TestExitFactory(Arc<TestExit>);

impl BindingFactory for TestExitFactory {
    fn type_name(&self) -> &'static str {
        "echo"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Bytes::NAME]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        context.publish::<Bytes>(self.0.clone());
        Ok(Arc::new(Built))
    }
}

struct Built;
impl Binding for Built {}

/// Captures the fan binding's handler as the entry of a binding that exits to it.
struct CaptureFactory(Arc<std::sync::Mutex<Option<Arc<dyn BytesHandler>>>>);

impl BindingFactory for CaptureFactory {
    fn type_name(&self) -> &'static str {
        "capture"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(Bytes::NAME)
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let exit = context.config().exit.clone().unwrap_or_default();
        *self.0.lock().unwrap() = Some(context.exit::<Bytes>(&exit)?);
        Ok(Arc::new(Built))
    }
}

const CONFIG: &str = "
name: test
bindings:
  entry0:
    type: capture
    kind: server
    exit: fan0
  fan0:
    type: fan
    kind: server
    exit: echo0
  echo0:
    type: echo
    kind: server
";

/// The fan binding's `bytes` handler, built and started by the engine from [`CONFIG`].
fn fan_with(exit: Arc<TestExit>) -> (Engine, Arc<dyn BytesHandler>) {
    let captured = Arc::new(std::sync::Mutex::new(None));
    let mut registry = Registry::new();
    zilla_binding_fan::register(&mut registry);
    registry.binding(TestExitFactory(exit));
    registry.binding(CaptureFactory(captured.clone()));
    let engine = Engine::new(registry, Default::default());
    let config = engine.load(Path::new("zilla.yaml"), CONFIG).unwrap();
    engine.apply(config).unwrap();
    let handler = captured.lock().unwrap().take().unwrap();
    (engine, handler)
}

/// A member over an in-memory pipe of `capacity` bytes; returns the client end and the
/// member's result.
fn pipe_member(
    fan: &Arc<dyn BytesHandler>,
    capacity: usize,
) -> (DuplexStream, JoinHandle<Result<(), StreamError>>) {
    let (client, server) = tokio::io::duplex(capacity);
    let fan = fan.clone();
    let task = tokio::spawn(async move {
        fan.accept(ByteStream::new(server, StreamInfo::default()))
            .await
    });
    (client, task)
}

async fn read_exactly(stream: &mut (impl AsyncReadExt + Unpin), len: usize) -> Vec<u8> {
    let mut buffer = vec![0; len];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buffer))
        .await
        .expect("timed out reading")
        .expect("read failed");
    buffer
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_tcp_clients_see_each_others_data() {
    let exit = TestExit::new(Behaviour::Echo);
    let (_engine, fan) = fan_with(exit.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, peer) = listener.accept().await.unwrap();
            let fan = fan.clone();
            tokio::spawn(async move {
                let info = StreamInfo {
                    source: Some(peer),
                    destination: Some(address),
                    ..StreamInfo::default()
                };
                let _ = fan.accept(ByteStream::new(socket, info)).await;
            });
        }
    });

    // Each client's own first message, echoed back to it, shows it has joined.
    let mut alice = TcpStream::connect(address).await.unwrap();
    alice.write_all(b"alice").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 5).await, b"alice");
    let mut bob = TcpStream::connect(address).await.unwrap();
    bob.write_all(b"bob").await.unwrap();
    assert_eq!(read_exactly(&mut bob, 3).await, b"bob");
    assert_eq!(read_exactly(&mut alice, 3).await, b"bob");

    alice.write_all(b"hello from alice").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 16).await, b"hello from alice");
    assert_eq!(read_exactly(&mut bob, 16).await, b"hello from alice");

    bob.write_all(b"hi from bob").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 11).await, b"hi from bob");
    assert_eq!(read_exactly(&mut bob, 11).await, b"hi from bob");

    assert_eq!(exit.opened(), 1, "members share one exit stream");
}

#[tokio::test]
async fn members_over_pipes_share_one_exit_stream() {
    let exit = TestExit::new(Behaviour::Echo);
    let (_engine, fan) = fan_with(exit.clone());
    let (mut alice, _alice_task) = pipe_member(&fan, 4096);
    let (mut bob, _bob_task) = pipe_member(&fan, 4096);
    let (mut carol, _carol_task) = pipe_member(&fan, 4096);
    eventually("exit opened", || exit.opened() == 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    carol.write_all(b"carol").await.unwrap();
    for member in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(read_exactly(member, 5).await, b"carol");
    }
    assert_eq!(exit.opened(), 1);
}

#[tokio::test]
async fn a_member_leaving_does_not_disturb_the_others() {
    let exit = TestExit::new(Behaviour::Echo);
    let (_engine, fan) = fan_with(exit.clone());
    let (mut alice, alice_task) = pipe_member(&fan, 4096);
    let (mut bob, _bob_task) = pipe_member(&fan, 4096);
    tokio::time::sleep(Duration::from_millis(20)).await;

    alice.write_all(b"one").await.unwrap();
    assert_eq!(read_exactly(&mut bob, 3).await, b"one");
    assert_eq!(read_exactly(&mut alice, 3).await, b"one");

    // Alice closes her sending side: she leaves cleanly and her stream is closed.
    alice.shutdown().await.unwrap();
    let left = tokio::time::timeout(WAIT, alice_task)
        .await
        .unwrap()
        .unwrap();
    assert!(left.is_ok(), "{left:?}");
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, alice.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());

    bob.write_all(b"two").await.unwrap();
    assert_eq!(read_exactly(&mut bob, 3).await, b"two");

    // A member that just disappears does not disturb the others either.
    let (carol, _carol_task) = pipe_member(&fan, 4096);
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(carol);
    bob.write_all(b"three").await.unwrap();
    assert_eq!(read_exactly(&mut bob, 5).await, b"three");

    assert_eq!(exit.opened(), 1, "the exit stream stayed open throughout");
    assert_eq!(exit.open(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_dropped_without_stalling_the_others() {
    let exit = TestExit::new(Behaviour::Echo);
    let (_engine, fan) = fan_with(exit.clone());
    let (mut alice, alice_task) = pipe_member(&fan, 64 * 1024);
    alice.write_all(b"a").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 1).await, b"a");
    // Bob's pipe holds 1 KiB, and he never reads. Alice hearing him shows he has joined.
    let (mut bob, bob_task) = pipe_member(&fan, 1024);
    bob.write_all(b"b").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 1).await, b"b");

    const TOTAL: usize = 8 * 1024 * 1024;
    let (mut alice_reader, mut alice_writer) = tokio::io::split(&mut alice);
    let send = async {
        let chunk = vec![7u8; 32 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            if alice_writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    let receive = async {
        let mut received = 0;
        let mut buffer = vec![0u8; 64 * 1024];
        while received < TOTAL {
            let read = alice_reader.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            assert!(buffer[..read].iter().all(|byte| *byte == 7));
            received += read;
        }
        received
    };
    let (_, received) = tokio::time::timeout(WAIT, async { tokio::join!(send, receive) })
        .await
        .expect("alice was stalled");
    if received < TOTAL {
        let result = alice_task.await;
        panic!("alice's stream ended after {received} bytes: {result:?}");
    }

    // Bob was dropped with an error; what reached his pipe before that is bounded by it.
    let bob_result = tokio::time::timeout(WAIT, bob_task).await.unwrap().unwrap();
    assert!(
        matches!(bob_result, Err(StreamError::Io(_))),
        "{bob_result:?}"
    );
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, bob.read_to_end(&mut seen))
        .await
        .unwrap()
        .unwrap();
    assert!(seen.len() <= 1024, "bob saw {} bytes", seen.len());
    assert_eq!(exit.opened(), 1);
}

#[tokio::test]
async fn exit_stream_closes_with_the_last_member_and_reopens_for_the_next() {
    let exit = TestExit::new(Behaviour::Echo);
    let (_engine, fan) = fan_with(exit.clone());
    assert_eq!(exit.opened(), 0, "opened lazily");

    let (mut alice, _alice_task) = pipe_member(&fan, 4096);
    let (bob, _bob_task) = pipe_member(&fan, 4096);
    alice.write_all(b"ping").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 4).await, b"ping");
    assert_eq!(exit.open(), 1);

    drop(alice);
    drop(bob);
    eventually("exit stream closed", || exit.open() == 0).await;

    let (mut carol, _carol_task) = pipe_member(&fan, 4096);
    carol.write_all(b"pong").await.unwrap();
    assert_eq!(read_exactly(&mut carol, 4).await, b"pong");
    assert_eq!(exit.opened(), 2);
    assert_eq!(exit.open(), 1);
}

#[tokio::test]
async fn exit_stream_that_ends_is_reopened_while_members_remain() {
    let exit = TestExit::new(Behaviour::EchoOnceThenClose);
    let (_engine, fan) = fan_with(exit.clone());
    let (mut alice, alice_task) = pipe_member(&fan, 4096);
    let (mut bob, _bob_task) = pipe_member(&fan, 4096);
    tokio::time::sleep(Duration::from_millis(20)).await;

    alice.write_all(b"first").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 5).await, b"first");
    assert_eq!(read_exactly(&mut bob, 5).await, b"first");

    eventually("exit stream reopened", || exit.opened() == 2).await;
    bob.write_all(b"second").await.unwrap();
    assert_eq!(read_exactly(&mut alice, 6).await, b"second");
    assert_eq!(read_exactly(&mut bob, 6).await, b"second");
    assert!(!alice_task.is_finished());
}

#[tokio::test]
async fn members_are_closed_with_an_upstream_error_when_the_exit_refuses() {
    let exit = TestExit::new(Behaviour::Refuse);
    let (_engine, fan) = fan_with(exit.clone());
    let (mut alice, alice_task) = pipe_member(&fan, 4096);
    let result = tokio::time::timeout(WAIT, alice_task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&result, Err(StreamError::Upstream(message)) if message.contains("refused")),
        "{result:?}"
    );
    let mut rest = Vec::new();
    let _ = alice.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
}

#[tokio::test]
async fn connect_makes_a_member_too() {
    let exit = TestExit::new(Behaviour::Echo);
    let (_engine, fan) = fan_with(exit.clone());
    let mut alice = fan.connect(StreamInfo::default()).await.unwrap();
    let (mut bob, _bob_task) = pipe_member(&fan, 4096);
    tokio::time::sleep(Duration::from_millis(20)).await;
    bob.write_all(b"via connect").await.unwrap();
    assert_eq!(read_exactly(&mut alice.io, 11).await, b"via connect");
}

#[tokio::test]
async fn config_rejects_what_fan_does_not_take() {
    let mut registry = Registry::new();
    zilla_binding_fan::register(&mut registry);
    registry.binding(TestExitFactory(TestExit::new(Behaviour::Echo)));
    let engine = Engine::new(registry, Default::default());
    let path = Path::new("zilla.yaml");

    let with_options = "
name: test
bindings:
  fan0:
    type: fan
    kind: server
    options: {}
    exit: echo0
  echo0:
    type: echo
    kind: server
";
    let errors = engine.load(path, with_options).unwrap_err().to_string();
    assert!(errors.contains("options"), "{errors}");

    let client_kind = with_options.replace("    options: {}\n", "").replace(
        "fan0:\n    type: fan\n    kind: server",
        "fan0:\n    type: fan\n    kind: client",
    );
    let errors = engine.load(path, &client_kind).unwrap_err().to_string();
    assert!(errors.contains("has no kind `client`"), "{errors}");

    let with_routes = "
name: test
bindings:
  fan0:
    type: fan
    kind: server
    routes:
      - exit: echo0
  echo0:
    type: echo
    kind: server
";
    let config = engine.load(path, with_routes).unwrap();
    let errors = engine.apply(config).unwrap_err().to_string();
    assert!(errors.contains("takes no `routes`"), "{errors}");
}

#[test]
fn registers_the_fan_type() {
    let mut registry = Registry::new();
    zilla_binding_fan::register(&mut registry);
    let factory = registry.binding_factory("fan").unwrap();
    assert_eq!(factory.kinds(), &[BindingKind::Server]);
    assert_eq!(factory.accepts(BindingKind::Server), &["bytes", "messages"]);
    assert_eq!(factory.emits(BindingKind::Server), Some("messages"));
    // Byte streams reach it through the engine's adapter, both ways.
    assert!(registry.carries("bytes", "messages"));
    assert!(registry.carries("messages", "bytes"));
}
