//! A small Apicurio Registry for end-to-end tests.
//!
//! No Apicurio server ships as a package we can run here, so tests that need one run this one
//! (Python's `http.server`). It implements the documented REST subset the gateway uses, under
//! both `/apis/registry/v2` and `/apis/registry/v3`:
//! `GET /ids/globalIds/{id}` and `GET /ids/contentIds/{id}` (the artifact's content as
//! registered), v2's `GET /groups/{group}/artifacts/{artifact}/meta` and
//! `.../versions/{version}/meta`, and v3's `GET .../versions/{version}` (`branch=latest` for
//! the latest), each answering the version's metadata (`globalId`, `contentId`, `version`).
//! Artifacts are registered with v2's `POST /groups/{group}/artifacts`
//! (`X-Registry-ArtifactId`) and `POST /groups/{group}/artifacts/{artifact}/versions`. Every
//! version gets the next global id; versions with the same content share a content id. It only
//! stores and hands out schemas: the bytes the gateway writes are checked by the tests against
//! Apicurio's documented framing with a third-party Avro library.

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::{Peer, Process, free_port};

const REGISTRY: &str = r#"
import json, re, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit
contents, versions, artifacts = [], [], {}

def register(group, artifact, content):
    if content not in contents:
        contents.append(content)
    meta = {"groupId": group, "id": artifact, "artifactId": artifact,
            "version": str(len(artifacts.get((group, artifact), [])) + 1),
            "globalId": len(versions) + 1, "contentId": contents.index(content) + 1,
            "type": "AVRO", "artifactType": "AVRO"}
    versions.append(meta)
    artifacts.setdefault((group, artifact), []).append(meta)
    return meta

class Registry(BaseHTTPRequestHandler):
    def reply(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def missing(self):
        self.reply(404, {"error_code": 404, "message": "not found"})
    def do_GET(self):
        path = urlsplit(self.path).path
        found = re.fullmatch(r"/apis/registry/v[23]/ids/(globalIds|contentIds)/(\d+)", path)
        if found:
            index = int(found[2])
            if found[1] == "globalIds" and 0 < index <= len(versions):
                return self.reply(200, contents[versions[index - 1]["contentId"] - 1])
            if found[1] == "contentIds" and 0 < index <= len(contents):
                return self.reply(200, contents[index - 1])
            return self.missing()
        found = (re.fullmatch(r"/apis/registry/v2/groups/([^/]+)/artifacts/([^/]+)/meta()", path)
                 or re.fullmatch(r"/apis/registry/v2/groups/([^/]+)/artifacts/([^/]+)/versions/([^/]+)/meta", path)
                 or re.fullmatch(r"/apis/registry/v3/groups/([^/]+)/artifacts/([^/]+)/versions/([^/]+)", path))
        if found:
            listed = artifacts.get((unquote(found[1]), unquote(found[2])))
            version = unquote(found[3])
            if not listed:
                return self.missing()
            if version in ("", "branch=latest"):
                return self.reply(200, listed[-1])
            if version.isdigit() and 0 < int(version) <= len(listed):
                return self.reply(200, listed[int(version) - 1])
            return self.missing()
        self.missing()
    def do_POST(self):
        path = urlsplit(self.path).path
        content = self.rfile.read(int(self.headers["content-length"])).decode()
        found = re.fullmatch(r"/apis/registry/v2/groups/([^/]+)/artifacts", path)
        if found:
            artifact = self.headers["X-Registry-ArtifactId"]
            if (unquote(found[1]), artifact) in artifacts:
                return self.reply(409, {"error_code": 409, "message": "artifact exists"})
            return self.reply(200, register(unquote(found[1]), artifact, content))
        found = re.fullmatch(r"/apis/registry/v2/groups/([^/]+)/artifacts/([^/]+)/versions", path)
        if found and (unquote(found[1]), unquote(found[2])) in artifacts:
            return self.reply(200, register(unquote(found[1]), unquote(found[2]), content))
        self.missing()
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Registry)
print("listening", flush=True)
server.serve_forever()
"#;

/// A registered artifact version's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactIds {
    /// The version's global id.
    pub global_id: u64,
    /// Its content's id.
    pub content_id: u64,
}

/// A running test Apicurio registry; stopped when dropped.
#[derive(Debug)]
pub struct ApicurioRegistry {
    process: Process,
    url: String,
}

impl ApicurioRegistry {
    /// Starts a registry on a free loopback port.
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let process = Peer::python(REGISTRY).arg(port.to_string()).spawn()?;
        process.wait_for_stdout("listening", Duration::from_secs(20))?;
        Ok(Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Stops the registry: its port refuses connections.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// The registry's base URL (no API path).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Registers `content` as a new version of `artifact` in `group` with `curl` (creating the
    /// artifact when it does not exist), as an operator would; returns its ids.
    pub fn register(&self, group: &str, artifact: &str, content: &str) -> Result<ArtifactIds> {
        let base = format!("{}/apis/registry/v2/groups/{group}/artifacts", self.url);
        let post = |url: &str, header: Option<String>| -> Result<serde_json::Value> {
            let mut curl = Peer::new("curl").args([
                "-sS",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                content,
            ]);
            if let Some(header) = header {
                curl = curl.args(["-H", &header]);
            }
            let output = curl.arg(url).run()?;
            Ok(serde_json::from_slice(&output.stdout)?)
        };
        let mut answer = post(&base, Some(format!("X-Registry-ArtifactId: {artifact}")))?;
        if answer["error_code"] == 409 {
            answer = post(&format!("{base}/{artifact}/versions"), None)?;
        }
        match (answer["globalId"].as_u64(), answer["contentId"].as_u64()) {
            (Some(global_id), Some(content_id)) => Ok(ArtifactIds {
                global_id,
                content_id,
            }),
            _ => Err(anyhow!("artifact not registered: {answer}")),
        }
    }
}
