//! The ws binding end to end, built by the engine from a config: `tcp → http → ws server →
//! echo` (and a greeter binding defined here) driven by Python `websockets` clients and `curl`;
//! and the ws client, `... ws server → ws client → http exit → origin`, against a Python
//! `websockets` echo server. The http exit is a small hyper HTTP/1.1 client defined here that
//! hands over upgraded connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use zilla_binding_http::kind::{self, Http, HttpHandler, Request, Response};
use zilla_binding_ws::{Ws, WsClose, WsHandler, WsMessage, WsRequest, WsStream};
use zilla_engine::properties::Properties;
use zilla_engine::stream::StreamKind;
use zilla_engine::{
    Binding, BindingFactory, BindingKind, BindingSchema, BoxFuture, BuildContext, BuildError,
    Engine, Registry, StreamError,
};

const WAIT: Duration = Duration::from_secs(10);

/// What the greeter saw of a session: protocol, offered protocols, scheme, authority, path.
type Seen = (Option<String>, Vec<String>, String, String, String);

/// Answers every session with a greeting naming what it saw, then closes with 4002.
#[derive(Default)]
struct Greeter {
    seen: Mutex<Vec<Seen>>,
}

impl WsHandler for Greeter {
    fn handle(
        &self,
        request: WsRequest,
        _incoming: WsStream,
    ) -> BoxFuture<'_, Result<WsStream, StreamError>> {
        Box::pin(async move {
            let greeting = format!(
                "hello {} {}",
                request.protocol.clone().unwrap_or_default(),
                request.path
            );
            self.seen.lock().unwrap().push((
                request.protocol,
                request.protocols,
                request.scheme,
                request.authority,
                request.path,
            ));
            let messages: WsStream = Box::pin(futures_util::stream::iter([
                Ok(WsMessage::text(greeting)),
                Ok(WsMessage::Close(Some(WsClose {
                    code: 4002,
                    reason: "done".into(),
                }))),
            ]));
            Ok(messages)
        })
    }
}

/// Sends each exchange to the origin over a new HTTP/1.1 connection that can be upgraded.
struct Upgrader(Option<SocketAddr>);

impl HttpHandler for Upgrader {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        Box::pin(async move {
            let authority = request.uri().authority().unwrap().to_string();
            let socket = tokio::net::TcpStream::connect(self.0.unwrap()).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(socket))
                    .await
                    .map_err(|error| StreamError::Upstream(error.to_string()))?;
            tokio::spawn(connection.with_upgrades());
            let (mut parts, body) = request.into_parts();
            parts.uri = parts
                .uri
                .path_and_query()
                .unwrap()
                .as_str()
                .parse()
                .unwrap();
            parts
                .headers
                .insert(http::header::HOST, authority.parse().unwrap());
            let response = sender
                .send_request(http::Request::from_parts(parts, body))
                .await
                .map_err(|error| StreamError::Upstream(error.to_string()))?;
            Ok(response.map(kind::boxed))
        })
    }
}

/// Test binding types: `greeter` (accepts ws), `upgrader` (accepts http), `capture` (keeps the
/// http handler of its exit).
enum TestFactory {
    Greeter(Arc<Greeter>),
    Upgrader(Option<SocketAddr>),
    Capture(Arc<Mutex<Option<Arc<dyn HttpHandler>>>>),
}

impl BindingFactory for TestFactory {
    fn type_name(&self) -> &'static str {
        match self {
            TestFactory::Greeter(_) => "greeter",
            TestFactory::Upgrader(_) => "upgrader",
            TestFactory::Capture(_) => "capture",
        }
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        match self {
            TestFactory::Greeter(_) => &[Ws::NAME],
            TestFactory::Upgrader(_) => &[Http::NAME],
            TestFactory::Capture(_) => &[],
        }
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        match self {
            TestFactory::Capture(_) => Some(Http::NAME),
            _ => None,
        }
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        match self {
            TestFactory::Greeter(greeter) => context.publish::<Ws>(greeter.clone()),
            TestFactory::Upgrader(origin) => context.publish::<Http>(Arc::new(Upgrader(*origin))),
            TestFactory::Capture(captured) => {
                let exit = context.config().exit.clone().unwrap();
                *captured.lock().unwrap() = Some(context.exit::<Http>(&exit)?);
            }
        }
        Ok(Arc::new(Built))
    }
}

struct Built;
impl Binding for Built {}

struct Gateway {
    engine: Engine,
    greeter: Arc<Greeter>,
    captured: Arc<Mutex<Option<Arc<dyn HttpHandler>>>>,
}

impl Gateway {
    fn start(bindings: &str, properties: &[&str]) -> Self {
        Self::with_origin(bindings, properties, None)
    }

    fn with_origin(bindings: &str, properties: &[&str], origin: Option<SocketAddr>) -> Self {
        let greeter = Arc::new(Greeter::default());
        let captured = Arc::default();
        let mut registry = Registry::new();
        zilla_binding_tcp::register(&mut registry);
        zilla_binding_http::register(&mut registry);
        zilla_binding_echo::register(&mut registry);
        zilla_binding_ws::register(&mut registry);
        registry
            .binding(TestFactory::Greeter(greeter.clone()))
            .binding(TestFactory::Upgrader(origin))
            .binding(TestFactory::Capture(Arc::clone(&captured)));
        let engine = Engine::new(
            registry,
            Properties::from_assignments(properties.iter().copied()),
        );
        let text = format!("name: test\nbindings:\n{bindings}");
        let config = engine
            .load(Path::new("zilla.yaml"), &text)
            .unwrap_or_else(|errors| panic!("{errors}"));
        engine
            .apply(config)
            .unwrap_or_else(|errors| panic!("{errors}"));
        Self {
            engine,
            greeter,
            captured,
        }
    }

    fn address(&self) -> SocketAddr {
        self.engine
            .listening()
            .into_iter()
            .find(|(name, _)| name.ends_with("tcp_server"))
            .map(|(_, address)| address)
            .expect("tcp_server listens")
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.address())
    }
}

const FRONT: &str = r#"
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
      versions: [http/1.1]
    exit: ws_server
"#;

fn server_config() -> String {
    format!(
        r#"{FRONT}
  ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: echo
            path: /echo
        exit: echo_server
      - when:
          - path: /greet*
            scheme: http
        exit: greeter
  echo_server:
    type: echo
    kind: server
  greeter:
    type: greeter
    kind: server
"#
    )
}

fn python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.peers/venv/bin/python")
}

/// Runs a Python script with `args`; returns its stdout, failing the test on a non-zero exit.
async fn run_python(script: &str, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        WAIT,
        Command::new(python())
            .arg("-c")
            .arg(script)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python finished")
    .expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A session that exercises what an echo must reflect; prints what came back as JSON.
const ECHO_CLIENT: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main(url):
    seen = {}
    async with connect(url, subprotocols=["other", "echo"], proxy=None) as ws:
        seen["subprotocol"] = ws.subprotocol
        await ws.send("hello")
        seen["text"] = await ws.recv()
        await ws.send(b"\x00\x01\xff")
        seen["binary"] = list(await ws.recv())
        await ws.send(["frag", "men", "ted"])
        seen["fragmented"] = await ws.recv()
        await ws.send([b"\x01", b"\x02", b"\x03"])
        seen["fragmented_binary"] = list(await ws.recv())
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        seen["pong"] = True
        await ws.send("x" * 200000)
        seen["large"] = len(await ws.recv())
        await ws.close(code=4001, reason="bye")
        seen["close"] = [ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason]
    print(json.dumps(seen))
asyncio.run(main(sys.argv[1]))
"#;

const ECHOED: &str = r#"{"subprotocol": "echo", "text": "hello", "binary": [0, 1, 255], "fragmented": "fragmented", "fragmented_binary": [1, 2, 3], "pong": true, "large": 200000, "close": [4001, "bye"]}"#;

#[tokio::test]
async fn echo_reflects_text_binary_fragments_and_close_with_pings_answered() {
    let gateway = Gateway::start(&server_config(), &[]);
    let seen = run_python(ECHO_CLIENT, &[&gateway.url("ws", "/echo")]).await;
    assert_eq!(seen, ECHOED);
}

/// Opens a session offering `argv[2]` (comma-separated) and prints the status of a refused
/// handshake, or the subprotocol, every message until the close, and the close code.
const PROBE_CLIENT: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, ConnectionClosed
async def main(url, offered):
    protocols = [p for p in offered.split(",") if p]
    try:
        async with connect(url, subprotocols=protocols or None, proxy=None, max_size=None) as ws:
            out = {"subprotocol": ws.subprotocol, "messages": []}
            try:
                if len(sys.argv) > 3:
                    await ws.send(sys.argv[3])
                    out["messages"].append(await ws.recv())
                    await ws.close()
                else:
                    while True:
                        out["messages"].append(await ws.recv())
            except ConnectionClosed:
                pass
            out["close"] = [ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason] if ws.protocol.close_rcvd else None
            print(json.dumps(out))
    except InvalidStatus as error:
        print(json.dumps({"status": error.response.status_code}))
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[tokio::test]
async fn routes_choose_the_subprotocol_and_the_exit_closes_with_its_code() {
    let gateway = Gateway::start(&server_config(), &[]);
    let address = gateway.address().to_string();
    let seen = run_python(
        PROBE_CLIENT,
        &[&gateway.url("ws", "/greet?x=1"), "chat,superchat"],
    )
    .await;
    assert_eq!(
        seen,
        r#"{"subprotocol": "chat", "messages": ["hello chat /greet?x=1"], "close": [4002, "done"]}"#
    );
    let seen = run_python(PROBE_CLIENT, &[&gateway.url("ws", "/greeting"), ""]).await;
    assert_eq!(
        seen,
        r#"{"subprotocol": null, "messages": ["hello  /greeting"], "close": [4002, "done"]}"#
    );
    assert_eq!(
        gateway.greeter.seen.lock().unwrap().clone(),
        vec![
            (
                Some("chat".to_owned()),
                vec!["chat".to_owned(), "superchat".to_owned()],
                "http".to_owned(),
                address.clone(),
                "/greet?x=1".to_owned()
            ),
            (
                None,
                vec![],
                "http".to_owned(),
                address,
                "/greeting".to_owned()
            ),
        ]
    );
    // /echo only with the echo subprotocol; nothing else is routed.
    let seen = run_python(PROBE_CLIENT, &[&gateway.url("ws", "/echo"), "chat"]).await;
    assert_eq!(seen, r#"{"status": 404}"#);
    let seen = run_python(PROBE_CLIENT, &[&gateway.url("ws", "/other"), ""]).await;
    assert_eq!(seen, r#"{"status": 404}"#);
}

#[tokio::test]
async fn messages_over_the_bound_close_with_1009() {
    let gateway = Gateway::start(
        &server_config(),
        &["zilla.binding.ws.maximum.message.size=1024"],
    );
    let small = "s".repeat(1000);
    let seen = run_python(PROBE_CLIENT, &[&gateway.url("ws", "/echo"), "echo", &small]).await;
    assert_eq!(
        seen,
        format!(r#"{{"subprotocol": "echo", "messages": ["{small}"], "close": [1000, ""]}}"#)
    );
    let big = "b".repeat(2000);
    let seen = run_python(PROBE_CLIENT, &[&gateway.url("ws", "/echo"), "echo", &big]).await;
    assert_eq!(
        seen,
        r#"{"subprotocol": "echo", "messages": [], "close": [1009, ""]}"#
    );
}

/// Runs curl with `args`; returns stdout.
async fn curl(args: &[&str]) -> String {
    let output = tokio::time::timeout(WAIT, Command::new("curl").args(args).output())
        .await
        .expect("curl finished")
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn bad_handshakes_get_400() {
    let gateway = Gateway::start(&server_config(), &[]);
    let status = |path: &'static str, headers: &'static [&'static str]| {
        let url = gateway.url("http", path);
        async move {
            let mut args = vec!["-s", "-i", "--max-time", "5"];
            for header in headers {
                args.push("-H");
                args.push(header);
            }
            args.push(&url);
            curl(&args).await
        }
    };
    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let good: &[&str] = &[
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: echo",
        KEY,
    ];
    // The greeter closes the session at once, so curl sees the connection end.
    let response = status("/greet", good).await.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 101"), "{response}");
    assert!(
        response.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{response}"
    );
    assert!(
        response.contains("sec-websocket-protocol: echo\r\n"),
        "{response}"
    );
    for bad in [
        &[] as &[&str],
        &[
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 8",
            "Sec-WebSocket-Protocol: echo",
            KEY,
        ],
        &[
            "Connection: keep-alive",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: echo",
            KEY,
        ],
        &[
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: echo",
            "Sec-WebSocket-Key: short",
        ],
    ] {
        let response = status("/echo", bad).await.to_ascii_lowercase();
        assert!(response.starts_with("http/1.1 400"), "{bad:?}: {response}");
        assert!(
            response.contains("sec-websocket-version: 13\r\n"),
            "{response}"
        );
    }
}

/// A websocket origin: echoes every message, with the `echo` subprotocol.
const ORIGIN: &str = r#"
import asyncio
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass
async def main():
    async with serve(echo, "127.0.0.1", 0, subprotocols=["echo"]) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

async fn origin() -> (Child, u16) {
    let mut child = Command::new(python())
        .args(["-c", ORIGIN])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("origin started")
        .unwrap();
    (child, line.trim().parse().unwrap())
}

#[tokio::test]
async fn client_relays_a_session_to_a_websocket_origin() {
    let (_origin, port) = origin().await;
    let gateway = Gateway::with_origin(
        &format!(
            r#"{FRONT}
  ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: echo
        exit: ws_client
  ws_client:
    type: ws
    kind: client
    options:
      defaults:
        protocol: chat
        path: /unused
    routes:
      - when:
          - protocol: echo
            path: /echo
        exit: upgrader
  upgrader:
    type: upgrader
    kind: server
"#
        ),
        &[],
        Some(SocketAddr::from(([127, 0, 0, 1], port))),
    );
    let seen = run_python(ECHO_CLIENT, &[&gateway.url("ws", "/echo")]).await;
    assert_eq!(seen, ECHOED);
    // Offered nothing the server routes: refused before any upgrade.
    let seen = run_python(PROBE_CLIENT, &[&gateway.url("ws", "/echo"), "chat"]).await;
    assert_eq!(seen, r#"{"status": 404}"#);
}

#[tokio::test]
async fn extended_connect_over_http2() {
    let gateway = Gateway::start(
        r#"
  entry:
    type: capture
    kind: server
    exit: ws_server
  ws_server:
    type: ws
    kind: server
    routes:
      - when:
          - protocol: echo
        exit: echo_server
  echo_server:
    type: echo
    kind: server
"#,
        &[],
    );
    let handler = gateway.captured.lock().unwrap().clone().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let response = match handler.handle(request.map(kind::boxed)).await {
                        Ok(response) => response,
                        Err(error) => kind::status_response(kind::status_of(&error)),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .enable_connect_protocol()
            .serve_connection(TokioIo::new(socket), service)
            .await
            .unwrap();
    });
    let socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket))
            .await
            .unwrap();
    tokio::spawn(connection);
    // The server's settings (which enable extended CONNECT) arrive after the handshake.
    let mut response = None;
    for _ in 0..50 {
        sender.ready().await.unwrap();
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("http://{address}/chat"))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "echo")
            .body(kind::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        match sender.send_request(request).await {
            Ok(answer) => {
                response = Some(answer);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let response = response.expect("extended CONNECT accepted");
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.headers()["sec-websocket-protocol"], "echo");
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    ws.send(Message::binary(vec![7u8; 70000])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![7u8; 70000])
    );
}
