//! The sse binding end to end, built by the engine from a config and driven by `curl`:
//! `tcp → http → sse server → source`, where the source is a binding defined here that answers
//! subscriptions with numbered events; and the sse client, `... sse server → sse client →
//! http client → tcp client`, against an event stream written by a Python `http.server`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use zilla_binding_sse::{Sse, SseChallenge, SseEvent, SseHandler, SseItem, SseRequest, SseStream};
use zilla_engine::properties::Properties;
use zilla_engine::stream::StreamKind;
use zilla_engine::{
    Binding, BindingFactory, BindingKind, BindingSchema, BoxFuture, BuildContext, BuildError,
    Engine, Registry, StreamError,
};

const WAIT: Duration = Duration::from_secs(10);

/// What the source saw and how many of its endless streams were dropped.
#[derive(Default)]
struct Source {
    seen: Mutex<Vec<(String, Option<String>)>>,
    dropped: Arc<AtomicUsize>,
}

/// Counts a dropped stream.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl SseHandler for Source {
    fn handle(&self, request: SseRequest) -> BoxFuture<'_, Result<SseStream, StreamError>> {
        Box::pin(async move {
            self.seen
                .lock()
                .unwrap()
                .push((request.path.clone(), request.last_event_id.clone()));
            let stream: SseStream = match request.path_without_query() {
                "/events/refused" => return Err(StreamError::Unauthorized),
                "/events/challenge" => Box::pin(futures_util::stream::iter([
                    Ok(SseItem::Challenge(SseChallenge::default())),
                    Ok(SseItem::Event(SseEvent::data("after").with_id("1"))),
                ])),
                "/events/lines" => Box::pin(futures_util::stream::iter([Ok(SseItem::Event(
                    SseEvent::data("a\r\nb\rc\n d"),
                ))])),
                "/events/timestamped" => {
                    let mut event = SseEvent::data("x");
                    event.timestamp =
                        Some(std::time::UNIX_EPOCH + Duration::from_millis(0x18f0000abcd));
                    Box::pin(futures_util::stream::iter([Ok(SseItem::Event(event))]))
                }
                "/forever" => {
                    let guard = DropCount(self.dropped.clone());
                    Box::pin(futures_util::stream::unfold(
                        (0u64, guard),
                        |(n, guard)| async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            let event = SseEvent::data(format!("tick {n}")).with_id(n.to_string());
                            Some((Ok(SseItem::Event(event)), (n + 1, guard)))
                        },
                    ))
                }
                _ => {
                    let after: u64 = request
                        .last_event_id
                        .as_deref()
                        .and_then(|id| id.parse().ok())
                        .unwrap_or(0);
                    Box::pin(futures_util::stream::iter((after + 1..=after + 3).map(
                        |n| {
                            let mut event =
                                SseEvent::data(format!("event {n}")).with_id(n.to_string());
                            if n % 2 == 0 {
                                event = event.with_event("even");
                            }
                            Ok(SseItem::Event(event))
                        },
                    )))
                }
            };
            Ok(stream)
        })
    }
}

/// Registers [`Source`] as binding type `events`.
struct SourceFactory(Arc<Source>);

impl BindingFactory for SourceFactory {
    fn type_name(&self) -> &'static str {
        "events"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }
    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Sse::NAME]
    }
    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        context.publish::<Sse>(self.0.clone());
        Ok(Arc::new(Built))
    }
}

struct Built;
impl Binding for Built {}

struct Gateway {
    engine: Engine,
    source: Arc<Source>,
}

impl Gateway {
    fn start(bindings: &str, properties: &[&str]) -> Self {
        let source = Arc::new(Source::default());
        let mut registry = Registry::new();
        zilla_binding_tcp::register(&mut registry);
        zilla_binding_http::register(&mut registry);
        zilla_binding_sse::register(&mut registry);
        registry.binding(SourceFactory(source.clone()));
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
        Self { engine, source }
    }

    fn address(&self) -> SocketAddr {
        self.engine
            .listening()
            .into_iter()
            .find(|(name, _)| name.ends_with("tcp_server"))
            .map(|(_, address)| address)
            .expect("tcp_server listens")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address())
    }

    fn seen(&self) -> Vec<(String, Option<String>)> {
        self.source.seen.lock().unwrap().clone()
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
    exit: sse_server
"#;

fn server_config(options: &str) -> String {
    format!(
        r#"{FRONT}
  sse_server:
    type: sse
    kind: server
{options}
    routes:
      - when:
          - path: /events/{{id}}
          - path: /forever
        exit: source
  source:
    type: events
    kind: server
"#
    )
}

/// Runs curl with `args`; returns (exit code, stdout).
async fn curl(args: &[&str]) -> (i32, String) {
    let output = tokio::time::timeout(WAIT, Command::new("curl").args(args).output())
        .await
        .expect("curl finished")
        .expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn events_in_order_with_ids_and_headers() {
    let gateway = Gateway::start(&server_config("    options:\n      retry: 3000"), &[]);
    let (code, out) = curl(&["-sN", "-i", &gateway.url("/events/1")]).await;
    assert_eq!(code, 0, "{out}");
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert_eq!(
        body,
        "retry:3000\n\nid:1\ndata:event 1\n\nid:2\nevent:even\ndata:event 2\n\nid:3\ndata:event 3\n\n"
    );
    assert_eq!(gateway.seen(), vec![("/events/1".to_owned(), None)]);
}

#[tokio::test]
async fn reconnect_with_last_event_id_header_or_query() {
    let gateway = Gateway::start(&server_config(""), &[]);
    let (_, body) = curl(&["-sN", "-H", "Last-Event-ID: 5", &gateway.url("/events/1")]).await;
    assert_eq!(
        body,
        "retry:2000\n\nid:6\nevent:even\ndata:event 6\n\nid:7\ndata:event 7\n\nid:8\nevent:even\ndata:event 8\n\n"
    );
    let (_, body) = curl(&["-sN", &gateway.url("/events/1?lastEventId=1%30")]).await;
    assert!(body.starts_with("retry:2000\n\nid:11\n"), "{body}");
    // The header wins over the query parameter.
    let (_, body) = curl(&[
        "-sN",
        "-H",
        "Last-Event-ID: 2",
        &gateway.url("/events/1?lastEventId=7"),
    ])
    .await;
    assert!(body.starts_with("retry:2000\n\nid:3\n"), "{body}");
    assert_eq!(
        gateway.seen(),
        vec![
            ("/events/1".to_owned(), Some("5".to_owned())),
            (
                "/events/1?lastEventId=1%30".to_owned(),
                Some("10".to_owned())
            ),
            ("/events/1?lastEventId=7".to_owned(), Some("2".to_owned())),
        ]
    );
}

#[tokio::test]
async fn statuses_for_unrouted_wrong_method_refused_and_long_ids() {
    let gateway = Gateway::start(&server_config(""), &[]);
    let status = |args: Vec<String>| async move {
        let mut all = vec![
            "-s".to_owned(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        all.extend(args);
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        curl(&args).await.1
    };
    assert_eq!(status(vec![gateway.url("/other")]).await, "404");
    assert_eq!(
        status(vec!["-X".into(), "POST".into(), gateway.url("/events/1")]).await,
        "405"
    );
    assert_eq!(status(vec![gateway.url("/events/refused")]).await, "403");
    let long = format!("Last-Event-ID: {}", "x".repeat(255));
    assert_eq!(
        status(vec!["-H".into(), long, gateway.url("/events/1")]).await,
        "400"
    );
}

#[tokio::test]
async fn challenge_multiline_data_and_timestamps() {
    let gateway = Gateway::start(&server_config(""), &[]);
    let (_, body) = curl(&["-sN", &gateway.url("/events/challenge")]).await;
    assert_eq!(
        body,
        "retry:2000\n\nevent:challenge\ndata:{\"method\":\"POST\",\"headers\":{\"content-type\":\"application/x-challenge-response\"}}\n\nid:1\ndata:after\n\n"
    );
    let (_, body) = curl(&["-sN", &gateway.url("/events/lines")]).await;
    assert_eq!(body, "retry:2000\n\ndata:a\ndata:b\ndata:c\ndata:  d\n\n");
    let (_, out) = curl(&[
        "-sN",
        "-i",
        "-H",
        "accept: text/event-stream;ext=timestamp",
        &gateway.url("/events/timestamped"),
    ])
    .await;
    let out = out.to_ascii_lowercase();
    assert!(
        out.contains("content-type: text/event-stream;ext=timestamp\r\n"),
        "{out}"
    );
    assert!(
        out.ends_with("\r\n\r\nretry:2000\n\ntimestamp:0x18f0000abcd\ndata:x\n\n"),
        "{out}"
    );
}

#[tokio::test]
async fn initial_comment_and_idle_comments_by_property() {
    let gateway = Gateway::start(
        &server_config(""),
        &[
            "zilla.binding.sse.initial.comment.enabled=true",
            "zilla.binding.sse.maximum.idle.time=5",
        ],
    );
    let (_, body) = curl(&["-sN", &gateway.url("/events/1")]).await;
    assert!(body.starts_with("retry:2000\n\n:\n\nid:1\n"), "{body}");
    // Events every 20 ms with an idle bound of 5 ms: comments come between them.
    let (_, body) = curl(&["-sN", "--max-time", "0.5", &gateway.url("/forever")]).await;
    assert!(body.contains("\n\n:\n\nid:"), "{body}");
}

#[tokio::test]
async fn a_gone_subscriber_drops_the_source_stream() {
    let gateway = Gateway::start(&server_config(""), &[]);
    let (code, body) = curl(&["-sN", "--max-time", "0.5", &gateway.url("/forever")]).await;
    assert_eq!(code, 28, "curl stops on its timeout");
    assert!(
        body.contains("id:0\ndata:tick 0\n\nid:1\ndata:tick 1\n\n"),
        "{body}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while gateway.source.dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An event stream origin: a Python `http.server` that answers every GET with a BOM, a
/// comment, CRLF line ends, and the request's `last-event-id` echoed in the first event.
const ORIGIN: &str = r#"
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        last = self.headers.get("last-event-id", "none")
        accept = self.headers.get("accept", "")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        body = ("\ufeff: hello\r\n\r\nretry: 1500\r\nid: 1\r\nevent: greeting\r\n"
                "data: last=" + last + " path=" + self.path + " accept=" + accept + "\r\n"
                "data: second line\r\n\r\nid: 2\r\ndata:two\r\n\r\ndata: unfinished\r\n")
        self.wfile.write(body.encode("utf-8"))
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

fn python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.peers/venv/bin/python")
}

/// Starts the origin; returns it and its port.
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
async fn client_subscribes_to_an_origin_and_relays_its_events() {
    let (_origin, port) = origin().await;
    let gateway = Gateway::start(
        &format!(
            r#"{FRONT}
  sse_server:
    type: sse
    kind: server
    exit: sse_client
  sse_client:
    type: sse
    kind: client
    routes:
      - when:
          - path: /feed/*
        exit: http_client
  http_client:
    type: http
    kind: client
    options:
      versions: [http/1.1]
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: {port}
"#
        ),
        &[],
    );
    let (code, body) = curl(&["-sN", "-H", "Last-Event-ID: 5", &gateway.url("/feed/a?x=1")]).await;
    assert_eq!(code, 0);
    assert_eq!(
        body,
        "retry:2000\n\nid:1\nevent:greeting\ndata:last=5 path=/feed/a?x=1 accept=text/event-stream\ndata:second line\n\nid:2\ndata:two\n\n"
    );
    // The client's routes take only /feed/*.
    let (_, status) = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &gateway.url("/other"),
    ])
    .await;
    assert_eq!(status, "404");
}

#[tokio::test]
async fn client_handler_decodes_the_origin_stream() {
    let (_origin, port) = origin().await;
    let captured: Arc<Mutex<Option<Arc<dyn SseHandler>>>> = Arc::default();
    let mut registry = Registry::new();
    zilla_binding_tcp::register(&mut registry);
    zilla_binding_http::register(&mut registry);
    zilla_binding_sse::register(&mut registry);
    registry.binding(CaptureFactory(captured.clone()));
    let engine = Engine::new(registry, Properties::default());
    let text = format!(
        r#"name: test
bindings:
  entry:
    type: capture
    kind: server
    exit: sse_client
  sse_client:
    type: sse
    kind: client
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
      port: {port}
"#
    );
    let config = engine.load(Path::new("zilla.yaml"), &text).unwrap();
    engine.apply(config).unwrap();
    let client = captured.lock().unwrap().clone().unwrap();
    let stream = client
        .handle(SseRequest {
            scheme: "http".into(),
            authority: format!("127.0.0.1:{port}"),
            path: "/x".into(),
            last_event_id: None,
            extensions: http::Extensions::new(),
        })
        .await
        .unwrap();
    let items: Vec<SseItem> = stream.map(Result::unwrap).collect().await;
    assert_eq!(
        items,
        vec![
            SseItem::Event(
                SseEvent::data(Bytes::from(
                    "last=none path=/x accept=text/event-stream\nsecond line"
                ))
                .with_id("1")
                .with_event("greeting")
            ),
            SseItem::Event(SseEvent::data("two").with_id("2")),
        ]
    );
}

/// Captures the `sse` handler of the binding it exits to.
struct CaptureFactory(Arc<Mutex<Option<Arc<dyn SseHandler>>>>);

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
        Some(Sse::NAME)
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema::default()
    }
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let exit = context.config().exit.clone().unwrap();
        *self.0.lock().unwrap() = Some(context.exit::<Sse>(&exit)?);
        Ok(Arc::new(Built))
    }
}

#[test]
fn a_client_refuses_requests_models() {
    // Models check the events a server sends; on a client they would check nothing.
    let mut registry = Registry::new();
    zilla_binding_tcp::register(&mut registry);
    zilla_binding_http::register(&mut registry);
    zilla_binding_sse::register(&mut registry);
    let engine = Engine::new(registry, Properties::default());
    let text = r#"name: test
bindings:
  sse_client:
    type: sse
    kind: client
    options:
      requests:
        - path: /events
          content: string
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
      port: 9
"#;
    let errors = engine
        .load(Path::new("zilla.yaml"), text)
        .and_then(|config| engine.apply(config).map(|_| ()))
        .expect_err("a client with requests models")
        .to_string();
    assert!(
        errors.contains("sse_client.options.requests[0]") && errors.contains("a client has none"),
        "{errors}"
    );
}
