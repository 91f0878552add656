//! The `otlp` exporter through the real binary: a receiver built on Python's `http.server`
//! decodes every push with the official OpenTelemetry protobuf messages
//! (`opentelemetry-proto`, parsed strictly by `google.protobuf.json_format`), and the test
//! checks metric names, units, attributes and values, the resource attributes (the
//! namespace's `telemetry.attributes`), and log records, after a known number of requests sent
//! by curl. The receiver is down at first and then answers 503 a few times: requests are
//! served meanwhile and no event is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use zilla_tests::{Broker, Gateway, Peer, free_port};

/// Accepts `POST /v1/metrics`, `/v1/logs` and `/v1/traces` (over TLS with the certificate and key files
/// `argv[4]` and `argv[5]` when given), answering 503 to the first `argv[3]` pushes;
/// appends each accepted push, decoded and re-encoded by `json_format`, as a JSON line to
/// `argv[2]`. A body the official messages do not parse is answered 400 and not kept.
const RECEIVER: &str = r#"
import base64, json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
port, out, failures = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
lock = threading.Lock()
state = {"failures": failures}
kinds = {"/v1/metrics": ExportMetricsServiceRequest, "/v1/logs": ExportLogsServiceRequest,
         "/v1/traces": ExportTraceServiceRequest}
IDS = ("traceId", "spanId", "parentSpanId")
def ids(value, convert):
    # OTLP/JSON writes trace and span ids in hex; protobuf's JSON mapping of bytes is base64.
    if isinstance(value, dict):
        return {key: convert(item) if key in IDS and isinstance(item, str) else ids(item, convert)
                for key, item in value.items()}
    if isinstance(value, list):
        return [ids(item, convert) for item in value]
    return value
to_base64 = lambda text: base64.b64encode(bytes.fromhex(text)).decode()
to_hex = lambda text: base64.b64decode(text).hex()
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, status):
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with lock:
            if state["failures"] > 0:
                state["failures"] -= 1
                return self.answer(503)
            try:
                if self.path == "/v1/traces":
                    body = json.dumps(ids(json.loads(body), to_base64))
                message = json_format.Parse(body, kinds[self.path]())
            except Exception as error:
                print(f"rejected {self.path}: {error}", file=sys.stderr, flush=True)
                return self.answer(400)
            with open(out, "a") as f:
                f.write(json.dumps({
                    "path": self.path,
                    "contentType": self.headers.get("content-type"),
                    "authorization": self.headers.get("authorization"),
                    "message": ids(json_format.MessageToDict(message), to_hex),
                }) + "\n")
        self.answer(200)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
if len(sys.argv) > 5:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

const CONFIG: &str = "name: test
telemetry:
  attributes:
    service.namespace: example
    deployment.environment: \"it's \\\"quoted\\\"\"
  metrics:
    - http.request.size
    - http.response.size
    - http.duration
    - http.active.requests
  exporters:
    otlp0:
      type: otlp
      options:
        interval: 1
        signals:
          - metrics
          - logs
        endpoint:
          protocol: http
          location: http://127.0.0.1:${{env.OTLP_PORT}}
          overrides:
            metrics: /v1/metrics
            logs: /v1/logs
        credentials:
          headers:
            authorization: Bearer otlp-token
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
    telemetry:
      metrics:
        - http.*
      attributes:
        method: ${http.request.method}
    routes:
      - when:
          - headers:
              :path: /echo
        exit: echo_server
  echo_server:
    type: echo
    kind: server
";

/// The pushes the receiver accepted so far, in order.
fn pushes(out: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).context("receiver line"))
        .collect()
}

/// The metrics of the latest accepted metrics push, by name.
fn latest_metrics(pushes: &[Value]) -> Vec<Value> {
    pushes
        .iter()
        .rev()
        .find(|push| push["path"] == "/v1/metrics")
        .and_then(|push| {
            push["message"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
                .as_array()
                .cloned()
        })
        .unwrap_or_default()
}

/// Every accepted log record.
fn log_records(pushes: &[Value]) -> Vec<Value> {
    pushes
        .iter()
        .filter(|push| push["path"] == "/v1/logs")
        .flat_map(|push| {
            push["message"]["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn metric<'a>(metrics: &'a [Value], name: &str) -> Option<&'a Value> {
    metrics.iter().find(|metric| metric["name"] == name)
}

fn attribute(point: &Value, key: &str) -> Option<String> {
    point["attributes"]
        .as_array()?
        .iter()
        .find(|attribute| attribute["key"] == key)
        .and_then(|attribute| attribute["value"]["stringValue"].as_str())
        .map(str::to_owned)
}

/// `MessageToDict` writes 64-bit integers as strings.
fn int(value: &Value) -> Option<u64> {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .or_else(|| value.as_u64())
}

const REQUESTS: usize = 5;
const BODY: &str = "0123456789";

#[test]
fn metrics_and_events_reach_a_collector_that_was_down_and_then_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("pushes.jsonl");
    let otlp_port = free_port()?;
    let mut gateway = Gateway::builder(CONFIG)
        .env("OTLP_PORT", otlp_port.to_string())
        .start()?;
    let url = format!("http://{}/echo", gateway.address("tcp_server"));

    // The receiver is not listening yet: requests are served all the same.
    for _ in 0..REQUESTS {
        let output = Peer::new("curl")
            .args(["-sS", "--max-time", "5", "-H", "content-type: text/plain"])
            .args(["--data-binary", BODY, &url])
            .run()?;
        ensure!(
            output.status.success() && output.stdout == BODY.as_bytes(),
            "request: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::thread::sleep(Duration::from_secs(2));

    // Then it answers 503 to its first three pushes, then accepts.
    let receiver = Peer::python(RECEIVER)
        .args([
            otlp_port.to_string(),
            out.display().to_string(),
            "3".to_owned(),
        ])
        .spawn()?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let (metrics, records) = loop {
        let pushes = pushes(&out)?;
        let metrics = latest_metrics(&pushes);
        let records = log_records(&pushes);
        let counted = metric(&metrics, "http.server.request.size")
            .and_then(|m| int(&m["histogram"]["dataPoints"][0]["count"]));
        if counted == Some(REQUESTS as u64) && records.len() >= REQUESTS {
            break (metrics, records);
        }
        if Instant::now() > deadline {
            bail!(
                "receiver saw {} metrics pushes and {} records; stderr:\n{}",
                pushes.iter().filter(|p| p["path"] == "/v1/metrics").count(),
                records.len(),
                receiver.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // Every pushed body parsed as the official messages, sent as JSON with the credentials,
    // its resource carrying the namespace's telemetry attributes in the order written.
    for push in pushes(&out)? {
        ensure!(push["contentType"] == "application/json", "{push}");
        ensure!(push["authorization"] == "Bearer otlp-token", "{push}");
        let message = &push["message"];
        let resource = match push["path"].as_str() {
            Some("/v1/metrics") => &message["resourceMetrics"][0]["resource"],
            _ => &message["resourceLogs"][0]["resource"],
        };
        ensure!(
            attribute(resource, "service.namespace").as_deref() == Some("example")
                && attribute(resource, "deployment.environment").as_deref()
                    == Some("it's \"quoted\"")
                && resource["attributes"].as_array().map(Vec::len) == Some(2),
            "{push}"
        );
    }

    let request = metric(&metrics, "http.server.request.size").context("request size")?;
    ensure!(request["unit"] == "bytes", "{request}");
    let histogram = &request["histogram"];
    ensure!(
        histogram["aggregationTemporality"] == "AGGREGATION_TEMPORALITY_CUMULATIVE",
        "{histogram}"
    );
    let point = &histogram["dataPoints"][0];
    ensure!(
        attribute(point, "namespace").as_deref() == Some("test"),
        "{point}"
    );
    ensure!(
        attribute(point, "binding").as_deref() == Some("http_server"),
        "{point}"
    );
    // The binding's telemetry attributes label the point.
    ensure!(
        attribute(point, "method").as_deref() == Some("POST"),
        "{point}"
    );
    let sum = point["sum"].as_f64().context("sum")?;
    ensure!(sum == (REQUESTS * BODY.len()) as f64, "sum {sum}");
    let buckets: Vec<u64> = point["bucketCounts"]
        .as_array()
        .context("buckets")?
        .iter()
        .filter_map(int)
        .collect();
    ensure!(buckets.len() == 63, "{} buckets", buckets.len());
    // 10 bytes lie in (8, 16]: the bucket whose upper bound is 16.
    ensure!(point["explicitBounds"][3] == 16.0, "{point}");
    ensure!(buckets[3] == REQUESTS as u64, "{buckets:?}");

    let response = metric(&metrics, "http.server.response.size").context("response size")?;
    ensure!(response["unit"] == "bytes", "{response}");
    let duration = metric(&metrics, "http.server.duration").context("duration")?;
    ensure!(duration["unit"] == "milliseconds", "{duration}");
    ensure!(
        int(&duration["histogram"]["dataPoints"][0]["count"]) == Some(REQUESTS as u64),
        "{duration}"
    );
    let active = metric(&metrics, "http.server.active_requests").context("active requests")?;
    // A count has an empty unit, which the decoded message leaves out.
    ensure!(active["unit"].as_str().unwrap_or("").is_empty(), "{active}");
    let value = &active["gauge"]["dataPoints"][0];
    ensure!(
        int(&value["asInt"]).unwrap_or(0) == 0,
        "no request is active: {value}"
    );

    // Each request raised one event; none was lost while the receiver was down or refused.
    let accepted: Vec<&Value> = records
        .iter()
        .filter(|record| {
            record["attributes"][0]["key"] == "event.name"
                && record["attributes"][0]["value"]["stringValue"]
                    == "BINDING_HTTP_REQUEST_ACCEPTED"
        })
        .collect();
    ensure!(accepted.len() == REQUESTS, "{records:#?}");
    for record in accepted {
        let body = record["body"]["stringValue"].as_str().unwrap_or_default();
        ensure!(
            body.starts_with("test:http_server http POST ") && body.ends_with(" /echo"),
            "{body}"
        );
        ensure!(int(&record["timeUnixNano"]).unwrap_or(0) > 0, "{record}");
    }

    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn options_it_cannot_honour_are_refused() -> Result<()> {
    let config = |options: &str| {
        format!(
            "name: test
telemetry:
  exporters:
    otlp0:
      type: otlp
      options:
{options}"
        )
    };
    let start = |yaml: String| match Gateway::start(&yaml) {
        Ok(_) => bail!("started:\n{yaml}"),
        Err(error) => Ok(format!("{error:#}")),
    };
    let error = start(config(
        "        endpoint:\n          location: http://127.0.0.1:4318\n        tls:\n          trust: [ca]\n",
    ))?;
    ensure!(
        error.contains("options.tls") && error.contains("not supported"),
        "{error}"
    );
    let error = start(config(
        "        endpoint:\n          location: http://127.0.0.1:4318\n        credentials:\n          headers:\n            authorization: \"bad\\nvalue\"\n",
    ))?;
    ensure!(
        error.contains("options.credentials.headers.authorization"),
        "{error}"
    );
    Ok(())
}

#[test]
fn an_https_collector_is_verified_against_the_trust_store_the_environment_names() -> Result<()> {
    let dir = tempfile::tempdir()?;
    zilla_tests::pki::certificate(dir.path(), "ca", "/CN=Test CA", None, &[])?;
    zilla_tests::pki::server_certificate(dir.path(), "collector", "ca", "127.0.0.1")?;
    let out = dir.path().join("pushes.jsonl");
    let otlp_port = free_port()?;
    let _receiver = Peer::python(RECEIVER)
        .args([
            otlp_port.to_string(),
            out.display().to_string(),
            "0".to_owned(),
            dir.path().join("collector.pem").display().to_string(),
            dir.path().join("collector.key").display().to_string(),
        ])
        .spawn()?;
    let yaml = CONFIG.replace(
        "location: http://127.0.0.1:${{env.OTLP_PORT}}",
        "location: https://127.0.0.1:${{env.OTLP_PORT}}",
    );
    ensure!(yaml != CONFIG, "the config changed");
    let mut gateway = Gateway::builder(&yaml)
        .env("OTLP_PORT", otlp_port.to_string())
        .env("SSL_CERT_FILE", dir.path().join("ca.pem"))
        .start()?;
    let url = format!("http://{}/echo", gateway.address("tcp_server"));
    let output = Peer::new("curl")
        .args(["-sS", "--max-time", "5", "--data-binary", BODY, &url])
        .run()?;
    ensure!(output.status.success(), "request failed");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pushes = pushes(&out)?;
        let counted = metric(&latest_metrics(&pushes), "http.server.request.size")
            .and_then(|m| int(&m["histogram"]["dataPoints"][0]["count"]));
        if counted == Some(1) {
            ensure!(
                pushes[0]["authorization"] == "Bearer otlp-token",
                "{pushes:?}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no push over TLS counted the request: {pushes:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gateway.terminate()?.success());
    Ok(())
}

const TRACED: &str = "name: test
telemetry:
  exporters:
    otlp0:
      type: otlp
      options:
        interval: 0.5
        signals: [traces]
        endpoint:
          location: http://127.0.0.1:${{env.OTLP_PORT}}/otlp/
          overrides:
            traces: /v1/traces
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
      versions: [http/1.1]
    exit: http_kafka
  http_kafka:
    type: http-kafka
    kind: proxy
    routes:
      - when:
          - method: POST
            path: /events
        exit: kafka_client
        with:
          capability: produce
          topic: events
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BROKER}}
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
";

/// Every accepted span (the receiver writes its ids back in hex).
fn spans(pushes: &[Value]) -> Vec<Value> {
    pushes
        .iter()
        .filter(|push| push["path"] == "/v1/traces")
        .flat_map(|push| {
            push["message"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// A trace started by curl's `traceparent` reaches both ends: the collector gets the http
/// server's span in that trace, a child of curl's span, and the record produced to Kafka
/// carries a `traceparent` in the same trace naming the server's span as its parent (read
/// back with confluent-kafka). A request without a `traceparent` gets a trace of its own.
#[test]
fn a_traceparent_reaches_the_exported_span_and_the_kafka_record() -> Result<()> {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let broker = Broker::start()?;
    broker.create_topic("events", 1, false)?;
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("pushes.jsonl");
    let otlp_port = free_port()?;
    let receiver = Peer::python(RECEIVER)
        .args([
            otlp_port.to_string(),
            out.display().to_string(),
            "0".to_owned(),
        ])
        .spawn()?;
    let mut gateway = Gateway::builder(TRACED)
        .env("OTLP_PORT", otlp_port.to_string())
        .env("KAFKA_BROKER", broker.address())
        .start()?;
    let url = format!("http://{}/events", gateway.address("tcp_server"));
    let traceparent = format!("traceparent: 00-{TRACE}-{CALLER}-01");
    for headers in [vec!["-H", traceparent.as_str()], vec![]] {
        let output = Peer::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-H", "content-type: application/json"])
            .args(headers)
            .args(["--data-binary", "{}", &url])
            .run()?;
        ensure!(
            output.stdout == b"204",
            "produce answered {}: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = spans(&pushes(&out)?);
        if spans.len() >= 2 {
            break spans;
        }
        if Instant::now() > deadline {
            bail!(
                "receiver has {} spans; stderr:\n{}\ngateway:\n{}",
                spans.len(),
                receiver.stderr(),
                gateway.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let traced = spans
        .iter()
        .find(|span| span["traceId"] == TRACE)
        .with_context(|| format!("no span in the caller's trace: {spans:?}"))?;
    assert_eq!(traced["parentSpanId"], CALLER, "{traced}");
    assert_eq!(traced["name"], "POST /events");
    assert_eq!(traced["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(traced, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(attribute(traced, "url.path").as_deref(), Some("/events"));
    assert_eq!(
        attribute(traced, "http.response.status_code").as_deref(),
        Some("204")
    );
    assert_eq!(
        attribute(traced, "zilla.binding").as_deref(),
        Some("test:http_server")
    );
    ensure!(
        int(&traced["endTimeUnixNano"]) >= int(&traced["startTimeUnixNano"]),
        "{traced}"
    );
    let span_id = traced["spanId"].as_str().context("span id")?.to_owned();
    let own = spans
        .iter()
        .find(|span| span["traceId"] != TRACE)
        .with_context(|| format!("no span for the untraced request: {spans:?}"))?;
    assert!(own.get("parentSpanId").is_none(), "{own}");

    let records = broker.consume("events", 2)?;
    let traceparents: Vec<String> = records
        .iter()
        .filter_map(|record| {
            record["h"]
                .as_array()?
                .iter()
                .find(|header| header[0] == "traceparent")
                .and_then(|header| header[1].as_str())
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(traceparents.len(), 2, "{records:?}");
    assert!(
        traceparents.contains(&format!("00-{TRACE}-{span_id}-01")),
        "{traceparents:?} lacks the server span {span_id}"
    );
    let own_id = own["spanId"].as_str().context("span id")?;
    let own_trace = own["traceId"].as_str().context("trace id")?;
    assert!(
        traceparents.contains(&format!("00-{own_trace}-{own_id}-01")),
        "{traceparents:?}"
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}
