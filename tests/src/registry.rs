//! A small schema registry for end-to-end tests.
//!
//! No Confluent, Karapace or Apicurio server ships as a package we can run here, so tests that
//! need a registry run this one (Python's `http.server`). It implements the documented REST
//! subset the gateway and confluent-kafka's serializers use:
//! `POST /subjects/{subject}/versions` (register), `GET /subjects/{subject}/versions/{version}`
//! and `GET /schemas/ids/{id}`, with `schemaType` (`AVRO` when absent, or `PROTOBUF`) and,
//! for Protobuf, `?format=serialized`: the schema as a base64 `FileDescriptorProto`, which is
//! how confluent-kafka's Protobuf serializers ask for it. The registry compiles `.proto` text
//! for that with `grpc_tools`' `protoc`, as Confluent's registry compiles it with its own
//! parser. It only stores and hands out schemas; the bytes the gateway writes and reads are
//! checked by confluent-kafka's own serializers, which are the real third-party peer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::json;

use crate::{Peer, Process, free_port};

/// The registry: schemas by id (from 1) and, per subject, the ids of its versions.
const REGISTRY: &str = r#"
import base64, importlib.resources, json, os, re, sys, tempfile
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit
schemas, subjects = [], {}

def serialized(text):
    # The .proto text as a base64 FileDescriptorProto, compiled by protoc.
    from grpc_tools import protoc
    from google.protobuf import descriptor_pb2
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "schema.proto"), "w") as source:
            source.write(text)
        out = os.path.join(folder, "schema.pb")
        if protoc.main(["protoc", "-I", folder, "-I", include,
                        "--descriptor_set_out=" + out, "schema.proto"]) != 0:
            return None
        with open(out, "rb") as compiled:
            files = descriptor_pb2.FileDescriptorSet.FromString(compiled.read())
    return base64.b64encode(files.file[0].SerializeToString()).decode()

class Registry(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/vnd.schemaregistry.v1+json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def missing(self, what):
        self.reply(404, {"error_code": 40401, "message": what + " not found"})
    def schema(self, index, query, body):
        entry = schemas[index - 1]
        text = entry["schema"]
        if query.get("format") == ["serialized"] and entry["serialized"]:
            text = entry["serialized"]
        body["schema"] = text
        if entry["schemaType"] != "AVRO":
            body["schemaType"] = entry["schemaType"]
        return body
    def do_GET(self):
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        found = re.fullmatch(r"/schemas/ids/(\d+)", path)
        if found:
            index = int(found[1])
            if 0 < index <= len(schemas):
                return self.reply(200, self.schema(index, query, {}))
            return self.missing("Schema")
        found = re.fullmatch(r"/subjects/([^/]+)/versions/([^/]+)", path)
        if found:
            subject, version = unquote(found[1]), unquote(found[2])
            versions = subjects.get(subject)
            if not versions:
                return self.missing("Subject")
            number = len(versions) if version == "latest" else int(version)
            if not 0 < number <= len(versions):
                return self.missing("Version")
            schema_id = versions[number - 1]
            return self.reply(200, self.schema(schema_id, query,
                {"subject": subject, "version": number, "id": schema_id}))
        self.missing("Path")
    def do_POST(self):
        path = urlsplit(self.path).path
        found = re.fullmatch(r"/subjects/([^/]+)/versions", path)
        if not found:
            return self.missing("Path")
        subject = unquote(found[1])
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        kind = body.get("schemaType", "AVRO")
        known = [index for index, entry in enumerate(schemas)
                 if (entry["schema"], entry["schemaType"]) == (body["schema"], kind)]
        if known:
            schema_id = known[0] + 1
        else:
            compiled = serialized(body["schema"]) if kind == "PROTOBUF" else None
            if kind == "PROTOBUF" and compiled is None:
                return self.reply(422, {"error_code": 42201, "message": "Invalid schema"})
            schemas.append({"schema": body["schema"], "schemaType": kind, "serialized": compiled})
            schema_id = len(schemas)
        versions = subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        self.reply(200, {"id": schema_id})
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Registry)
if len(sys.argv) > 3:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
"#;

/// A running test schema registry; stopped when dropped.
#[derive(Debug)]
pub struct SchemaRegistry {
    process: Process,
    url: String,
    /// The CA that issued an https registry's certificate, for `curl`.
    ca: Option<PathBuf>,
}

impl SchemaRegistry {
    /// Starts a registry on a free loopback port.
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let process = Peer::python(REGISTRY).arg(port.to_string()).spawn()?;
        process.wait_for_stdout("listening", Duration::from_secs(20))?;
        Ok(Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            ca: None,
        })
    }

    /// Starts a registry serving https on a free loopback port with `certificate` and `key`
    /// (PEM files; the certificate names `127.0.0.1`), issued by the CA in `ca`.
    pub fn start_tls(certificate: &Path, key: &Path, ca: &Path) -> Result<Self> {
        let port = free_port()?;
        let process = Peer::python(REGISTRY)
            .arg(port.to_string())
            .arg(certificate)
            .arg(key)
            .spawn()?;
        process.wait_for_stdout("listening", Duration::from_secs(20))?;
        Ok(Self {
            process,
            url: format!("https://127.0.0.1:{port}"),
            ca: Some(ca.to_owned()),
        })
    }

    /// Stops the registry, as a registry that goes down would: its port refuses connections.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Stops answering, as a registry that hangs would (`SIGSTOP`): its port still accepts
    /// connections, but no request gets an answer until [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.process.signal("STOP")
    }

    /// Answers again after [`pause`](Self::pause).
    pub fn resume(&self) -> Result<()> {
        self.process.signal("CONT")
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Registers `schema` of `schema_type` (`AVRO`, `PROTOBUF`) under `subject` with `curl`,
    /// as an operator would; returns the schema id.
    pub fn register(&self, subject: &str, schema_type: &str, schema: &str) -> Result<u64> {
        let mut curl = Peer::new("curl");
        if let Some(ca) = &self.ca {
            curl = curl.arg("--cacert").arg(ca);
        }
        let registered = curl
            .args([
                "-sS",
                "-X",
                "POST",
                "-H",
                "content-type: application/vnd.schemaregistry.v1+json",
                "-d",
                &json!({ "schema": schema, "schemaType": schema_type }).to_string(),
                &format!("{}/subjects/{subject}/versions", self.url),
            ])
            .run()?;
        let answer: serde_json::Value = serde_json::from_slice(&registered.stdout)?;
        answer["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("schema not registered: {answer}"))
    }
}
