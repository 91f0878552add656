//! The `jwt` guard through the real binary: the `http.proxy.jwt` and `sse.proxy.jwt` examples,
//! with tokens minted by PyJWT, JWKS served by nginx, requests by curl, and continuous
//! authorization driven by an HTTP/2 SSE client (httpx).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use zilla_tests::{Gateway, Peer, nginx, workspace_dir};

fn example(name: &str) -> PathBuf {
    workspace_dir()
        .join("examples")
        .join(name)
        .join("zilla.yaml")
}

/// Generates keys in `dir`: `rsa1`, `rsa2` (RS256) and `ec1` (ES256) private keys as PEM, and
/// `jwks-initial.json` (rsa1, ec1) and `jwks-rotated.json` (rsa1, ec1, rsa2).
const KEYS: &str = r#"
import json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec
from jwt.algorithms import RSAAlgorithm, ECAlgorithm
d = sys.argv[1]
jwks = {}
for kid, alg, key, algorithm in [
    ("rsa1", "RS256", rsa.generate_private_key(65537, 2048), RSAAlgorithm),
    ("rsa2", "RS256", rsa.generate_private_key(65537, 2048), RSAAlgorithm),
    ("ec1", "ES256", ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
]:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    open(f"{d}/{kid}.pem", "wb").write(pem)
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, alg=alg, use="sig")
    jwks[kid] = jwk
json.dump({"keys": [jwks["rsa1"], jwks["ec1"]]}, open(f"{d}/jwks-initial.json", "w"))
json.dump({"keys": [jwks["rsa1"], jwks["ec1"], jwks["rsa2"]]}, open(f"{d}/jwks-rotated.json", "w"))
print(json.dumps(jwks["ec1"]))
"#;

/// Prints a JSON object of tokens, one per case, for issuer `argv[2]`.
const MINT: &str = r#"
import json, sys, time, jwt
d, issuer = sys.argv[1], sys.argv[2]
now = int(time.time())
key = lambda kid: open(f"{d}/{kid}.pem").read()
base = {"iss": issuer, "aud": "https://api.example.com", "sub": "alice",
        "scope": "read:items read:events", "exp": now + 300}
def token(kid="rsa1", alg="RS256", signer=None, **claims):
    body = {**base, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key(signer or kid), algorithm=alg, headers={"kid": kid})
valid = token()
header, payload, signature = valid.split(".")
forged = token(sub="mallory").split(".")[1]
print(json.dumps({
    "valid": valid,
    "valid_ec": token(kid="ec1", alg="ES256"),
    "expired": token(exp=now - 60),
    "not_yet_valid": token(nbf=now + 600),
    "wrong_issuer": token(iss="https://evil.example.com"),
    "wrong_audience": token(aud="https://other.example.com"),
    "wrong_alg": token(alg="RS384"),
    "unknown_kid": token(kid="nope", signer="rsa1"),
    "bad_signature": f"{header}.{forged}.{signature}",
    "other_key_signature": token(signer="rsa2"),
    "missing_scope": token(scope="write:items"),
    "rotated": token(kid="rsa2"),
}))
"#;

fn python(script: &str, args: &[&str]) -> Result<String> {
    let output = Peer::python(script).args(args).run()?;
    ensure!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn tokens(dir: &Path, issuer: &str) -> Result<BTreeMap<String, String>> {
    let text = python(MINT, &[&dir.display().to_string(), issuer])?;
    Ok(serde_json::from_str(&text)?)
}

/// curl's status for `url` with `token` as a bearer token (or none).
fn status(url: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut peer = Peer::new("curl").args(["-s", "-w", "\n%{http_code}", url]);
    if let Some(token) = token {
        peer = peer.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = peer.run()?;
    let text = String::from_utf8(output.stdout)?;
    let (body, code) = text.rsplit_once('\n').context("no status")?;
    Ok((code.trim().parse()?, body.to_owned()))
}

#[test]
fn http_proxy_jwt_answers_each_refusal_as_zilla_and_follows_key_rotation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    let jwks_root = dir.path().join("jwks");
    let www = dir.path().join("www");
    for path in [&keys, &jwks_root.join(".well-known"), &www] {
        std::fs::create_dir_all(path)?;
    }
    python(KEYS, &[&keys.display().to_string()])?;
    let jwks_file = jwks_root.join(".well-known/jwks.json");
    std::fs::copy(keys.join("jwks-initial.json"), &jwks_file)?;
    std::fs::write(www.join("index.html"), "hello from the origin\n")?;
    let (mut jwks_origin, jwks_port) = nginx(&dir.path().join("nginx-jwks"), &jwks_root)?;
    let (_origin, origin_port) = nginx(&dir.path().join("nginx-www"), &www)?;
    let issuer = format!("http://127.0.0.1:{jwks_port}");
    let mut gateway = Gateway::from_file(example("http.proxy.jwt"))
        .env("JWT_ISSUER", &issuer)
        .env("PROXY_PORT", "0")
        .env("ORIGIN_PORT", origin_port.to_string())
        .start()?;
    let url = format!("http://{}/index.html", gateway.address("tcp_server"));
    let tokens = tokens(&keys, &issuer)?;

    assert_eq!(status(&url, None)?.0, 401, "no token");
    for case in [
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "wrong_alg",
        "unknown_kid",
        "bad_signature",
        "other_key_signature",
    ] {
        assert_eq!(status(&url, Some(&tokens[case]))?.0, 403, "{case}");
    }
    assert_eq!(status(&url, Some("not.a.token"))?.0, 403, "garbage");
    assert_eq!(status(&url, Some(&tokens["missing_scope"]))?.0, 404);
    for case in ["valid", "valid_ec"] {
        assert_eq!(
            status(&url, Some(&tokens[case]))?,
            (200, "hello from the origin\n".to_owned()),
            "{case}"
        );
    }
    // The query parameter works as the header does.
    let (code, _) = status(&format!("{url}?access_token={}", tokens["valid"]), None)?;
    assert_eq!(code, 200);

    // Rotation: a key added at the origin is picked up on the next unknown kid.
    assert_eq!(status(&url, Some(&tokens["rotated"]))?.0, 403);
    std::fs::copy(keys.join("jwks-rotated.json"), &jwks_file)?;
    let mut admitted = false;
    for _ in 0..40 {
        if status(&url, Some(&tokens["rotated"]))?.0 == 200 {
            admitted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(admitted, "the rotated key was never fetched");

    // The JWKS origin gone: cached keys keep working, unknown ones stay refused.
    jwks_origin.terminate()?;
    assert_eq!(status(&url, Some(&tokens["valid"]))?.0, 200);
    assert_eq!(status(&url, Some(&tokens["rotated"]))?.0, 200);
    assert_eq!(status(&url, Some(&tokens["unknown_kid"]))?.0, 403);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status(&url, Some(&tokens["valid_ec"]))?.0, 200);
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// An SSE origin: `id: n` / `data: event n` every 100 ms, from `Last-Event-ID` + 1.
const SSE_ORIGIN: &str = r#"
import http.server, socketserver, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        start = int(self.headers.get("last-event-id") or 0) + 1
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        try:
            n = start
            while True:
                self.wfile.write(f"id:{n}\ndata:event {n}\n\n".encode())
                self.wfile.flush()
                n += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
    def log_message(self, *args):
        pass
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// Subscribes over HTTP/2 with a token living `argv[3]` seconds, answers the first challenge
/// with a fresh token on the same connection, lets the stream end at expiry, then resumes
/// with `Last-Event-ID`. Prints what happened as JSON.
const SSE_CLIENT: &str = r#"
import asyncio, json, sys, time, httpx, jwt
url, keyfile, lifetime = sys.argv[1], sys.argv[2], int(sys.argv[3])
key = open(keyfile).read()
def mint(seconds):
    exp = int(time.time()) + seconds
    claims = {"iss": "https://auth.example.com", "aud": "https://api.example.com",
              "sub": "alice", "scope": "read:events", "exp": exp}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "ec1"}), exp

async def read_events(response, on_challenge):
    ids, event, challenges = [], {}, []
    async for line in response.aiter_lines():
        if line == "":
            if event.get("event") == "challenge":
                challenges.append({"at": time.time(), "data": event.get("data")})
                await on_challenge(len(challenges))
            elif "id" in event:
                ids.append([int(event["id"]), time.time()])
            event = {}
        elif ":" in line:
            name, value = line.split(":", 1)
            event[name] = value.lstrip(" ")
    return ids, challenges

async def main():
    report = {}
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as client:
        token, exp1 = mint(lifetime)
        report["exp1"] = exp1
        async def answer(n):
            if n == 1:
                fresh, exp2 = mint(lifetime)
                report["exp2"] = exp2
                reply = await client.post(url, content=b"", headers={
                    "authorization": f"Bearer {fresh}",
                    "content-type": "application/x-challenge-response"})
                report["answer_status"] = reply.status_code
                report["answer_version"] = reply.http_version
        async with client.stream("GET", url, headers={"authorization": f"Bearer {token}"}) as r:
            report["status"] = r.status_code
            report["version"] = r.http_version
            ids, challenges = await read_events(r, answer)
        report["ended"] = time.time()
        report["ids"] = ids
        report["challenges"] = challenges
        last = ids[-1][0]
        token, _ = mint(lifetime)
        resumed = []
        async with client.stream("GET", url, headers={
                "authorization": f"Bearer {token}", "last-event-id": str(last)}) as r:
            async for line in r.aiter_lines():
                if line.startswith("id:"):
                    resumed.append(int(line[3:]))
                    if len(resumed) == 3:
                        break
        report["resumed"] = resumed
    print(json.dumps(report))

asyncio.run(main())
"#;

#[test]
fn sse_proxy_jwt_challenges_extends_on_a_fresh_token_and_ends_at_expiry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    python(KEYS, &[&dir.path().display().to_string()])?;
    let mut origin = Peer::python(SSE_ORIGIN).spawn()?;
    origin.wait_for_stdout("\n", Duration::from_secs(10))?;
    let origin_port: u16 = origin.stdout().trim().parse()?;
    let mut gateway = Gateway::from_file(example("sse.proxy.jwt"))
        .env("JWT_CHALLENGE", "2")
        .env(
            "JWKS_LOCATION",
            dir.path().join("jwks-initial.json").display().to_string(),
        )
        .env("PROXY_PORT", "0")
        .env("ORIGIN_PORT", origin_port.to_string())
        .start()?;
    let url = format!("http://{}/events", gateway.address("tcp_server"));
    let lifetime = 4;
    let output = Peer::python(SSE_CLIENT)
        .args([
            &url,
            &dir.path().join("ec1.pem").display().to_string(),
            &lifetime.to_string(),
        ])
        .timeout(Duration::from_secs(60))
        .run()?;
    ensure!(
        output.status.success(),
        "client: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["status"], 200);
    assert_eq!(report["version"], "HTTP/2");
    assert_eq!(report["answer_status"], 204);
    assert_eq!(report["answer_version"], "HTTP/2");
    let challenges = report["challenges"].as_array().context("challenges")?;
    assert_eq!(
        challenges[0]["data"],
        r#"{"method":"POST","headers":{"content-type":"application/x-challenge-response"}}"#
    );
    let exp1 = report["exp1"].as_f64().context("exp1")?;
    let exp2 = report["exp2"].as_f64().context("exp2")?;
    let ended = report["ended"].as_f64().context("ended")?;
    // The first challenge came before the first token expired; the second (unanswered) one
    // before the second expired.
    assert!(challenges[0]["at"].as_f64().unwrap() < exp1 + 1.0);
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    // The answered challenge kept the stream past the first expiry, the unanswered one ended
    // it at the second (exp is whole seconds: allow a second for rounding).
    let ids = report["ids"].as_array().context("ids")?;
    let after_exp1 = ids
        .iter()
        .filter(|id| id[1].as_f64().unwrap() > exp1 + 0.5)
        .count();
    assert!(after_exp1 > 0, "no event after the first token expired");
    assert!(
        ended >= exp2 - 1.0 && ended < exp2 + 3.0,
        "ended {ended}, exp2 {exp2}"
    );
    // No event lost or repeated, and the resumed stream carries on after the last one seen.
    let numbers: Vec<i64> = ids.iter().map(|id| id[0].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
    assert_eq!(numbers, expected);
    let last = *numbers.last().unwrap();
    let resumed: Vec<i64> = report["resumed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .collect();
    assert_eq!(resumed, vec![last + 1, last + 2, last + 3]);
    assert!(gateway.terminate()?.success());
    origin.terminate()?;
    Ok(())
}

/// A token for `argv[2]` with scopes `argv[3]`, signed with `ec1` in `argv[1]`.
const MINT_USER: &str = r#"
import sys, time, jwt
d, sub, scope = sys.argv[1], sys.argv[2], sys.argv[3]
claims = {"iss": "https://auth.example.com", "aud": "https://api.example.com",
          "sub": sub, "scope": scope, "exp": int(time.time()) + 300}
print(jwt.encode(claims, open(f"{d}/ec1.pem").read(), algorithm="ES256", headers={"kid": "ec1"}))
"#;

/// curl's status for a text `body` POSTed to `url` with `token` as a bearer token.
fn post_text(url: &str, token: &str, body: &str) -> Result<u16> {
    let output = Peer::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-H", "content-type: text/plain", "-d", body, url])
        .run()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

#[test]
fn sse_kafka_fanout_jwt_streams_each_user_their_own_records() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().display().to_string();
    python(KEYS, &[&keys])?;
    let token = |sub: &str, scope: &str| -> Result<String> {
        Ok(python(MINT_USER, &[&keys, sub, scope])?.trim().to_owned())
    };
    let alice = token("alice", "read:events write:events")?;
    let bob = token("bob", "read:events write:events")?;
    let reader = token("carol", "read:events")?;
    let broker = zilla_tests::Broker::start()?;
    broker.create_topic("events", 1, false)?;
    let mut gateway = Gateway::from_file(example("sse.kafka.fanout.jwt"))
        .env("HTTP_PORT", "0")
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .env(
            "JWKS_LOCATION",
            dir.path().join("jwks-initial.json").display().to_string(),
        )
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .start()?;
    let url = format!("http://{}/events", gateway.address("tcp_server"));
    let post = |token: &str, body: &str| post_text(&url, token, body);
    for (token, body) in [
        (&alice, "for alice 1"),
        (&bob, "for bob"),
        (&alice, "for alice 2"),
    ] {
        let status = post(token, body)?;
        ensure!(status / 100 == 2, "produce answered {status}");
    }
    // Without `write:events` the produce route does not take the request: 404, as Zilla.
    assert_eq!(post(&reader, "from carol")?, 404);
    let stream = |token: &str| -> Result<String> {
        let output = Peer::new("curl")
            .args([
                "-sN",
                "--max-time",
                "3",
                "-H",
                &format!("authorization: Bearer {token}"),
                &url,
            ])
            .timeout(Duration::from_secs(10))
            .run()?;
        Ok(String::from_utf8(output.stdout)?)
    };
    let seen = stream(&alice)?;
    assert!(seen.contains("data:for alice 1\n"), "{seen}");
    assert!(seen.contains("data:for alice 2\n"), "{seen}");
    assert!(!seen.contains("for bob"), "{seen}");
    let seen = stream(&bob)?;
    assert!(
        seen.contains("data:for bob\n") && !seen.contains("alice"),
        "{seen}"
    );
    let seen = stream(&reader)?;
    assert!(!seen.contains("data:"), "{seen}");
    assert_eq!(status(&url, None)?.0, 401);
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// Writes `dir/sig.pem` and `dir/enc.pem` (ES256 keys) and `dir/jwks.json` holding both public
/// keys, `sig` marked `use: sig` and `enc` marked `use: enc`; prints the `enc` JWK.
const SIG_AND_ENC_KEYS: &str = r#"
import json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
d = sys.argv[1]
keys = []
for kid in ["sig", "enc"]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    open(f"{d}/{kid}.pem", "wb").write(pem)
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, alg="ES256", use=kid)
    keys.append(jwk)
json.dump({"keys": keys}, open(f"{d}/jwks.json", "w"))
print(json.dumps(keys[1]))
"#;

/// A token for `sub` with the nested claim `org.tenant`, signed by key `argv[2]`.
const MINT_TENANT: &str = r#"
import sys, time, jwt
d, kid, sub, tenant = sys.argv[1:5]
claims = {"iss": "https://auth.example.com", "aud": "https://api.example.com", "sub": sub,
          "scope": "write:orders", "org": {"tenant": tenant}, "exp": int(time.time()) + 300}
print(jwt.encode(claims, open(f"{d}/{kid}.pem").read(), algorithm="ES256", headers={"kid": kid}))
"#;

/// POST /orders produces to `orders`, keyed by the token's `org.tenant` claim through the
/// guard's `attributes`, with the identity as a header.
const TENANT_KEYED: &str = "name: test
guards:
  jwt0:
    type: jwt
    options:
      issuer: https://auth.example.com
      audience: https://api.example.com
      keys: jwks.json
      attributes:
        tenant: org.tenant
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
      authorization:
        jwt0:
          credentials:
            headers:
              authorization: Bearer {credentials}
    routes:
      - guarded:
          jwt0:
            - write:orders
        exit: http_kafka
  http_kafka:
    type: http-kafka
    kind: proxy
    routes:
      - when:
          - method: POST
            path: /orders
        exit: kafka_client
        with:
          capability: produce
          topic: orders
          key: ${guarded['jwt0'].attributes.tenant}
          overrides:
            user: ${guarded['jwt0'].identity}
  kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BOOTSTRAP_SERVER}}
    exit: kafka_tcp
  kafka_tcp:
    type: tcp
    kind: client
";

#[test]
fn claims_become_session_attributes_and_encryption_keys_verify_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().display().to_string();
    let enc_jwk: Value = serde_json::from_str(&python(SIG_AND_ENC_KEYS, &[&keys])?)?;
    let token = |kid: &str, sub: &str, tenant: &str| -> Result<String> {
        Ok(python(MINT_TENANT, &[&keys, kid, sub, tenant])?
            .trim()
            .to_owned())
    };
    let broker = zilla_tests::Broker::start()?;
    broker.create_topic("orders", 1, false)?;
    let mut gateway = Gateway::builder(TENANT_KEYED)
        .file("jwks.json", std::fs::read(dir.path().join("jwks.json"))?)
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .start()?;
    let url = format!("http://{}/orders", gateway.address("tcp_server"));
    let post = |token: &str, body: &str| post_text(&url, token, body);
    for (sub, tenant, body) in [("alice", "acme", "one"), ("bob", "globex", "two")] {
        let status = post(&token("sig", sub, tenant)?, body)?;
        ensure!(
            status / 100 == 2,
            "produce for {sub} answered {status}: {}",
            gateway.stderr()
        );
    }
    // A key published for encryption verifies no signature: the token is refused as one
    // signed by an unknown key is (403, as Zilla), and nothing is produced.
    assert_eq!(post(&token("enc", "mallory", "acme")?, "three")?, 403);

    let consumed = zilla_tests::kcat(
        &[
            "-b",
            &broker.address(),
            "-t",
            "orders",
            "-C",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k|%h|%s\n",
        ],
        "",
    )?;
    let records: Vec<Vec<&str>> = consumed
        .lines()
        .map(|line| line.split('|').collect())
        .collect();
    ensure!(records.len() == 2, "{consumed}");
    for (record, (tenant, user, body)) in records
        .iter()
        .zip([("acme", "user=alice", "one"), ("globex", "user=bob", "two")])
    {
        ensure!(
            record.len() == 3
                && record[0] == tenant
                && record[1].split(',').any(|header| header == user)
                && record[2] == body,
            "{consumed}"
        );
    }
    assert!(gateway.terminate()?.success());

    // Given inline, such a key fails the start.
    let inline = TENANT_KEYED.replace("keys: jwks.json", &format!("keys:\n        - {enc_jwk}"));
    let refused = Gateway::builder(&inline)
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .start()
        .err()
        .map(|error| format!("{error:#}"))
        .unwrap_or_default();
    ensure!(
        refused.contains("guards.jwt0.options.keys[0]: key `enc`: `use` must be `sig`"),
        "an inline encryption key was not refused: {refused}"
    );
    Ok(())
}

/// `key DIR`: writes an RS256 private key to `DIR/k1.pem` and prints its JWK. `tokens DIR
/// SECONDS`: prints two tokens signed with it, `short` expiring SECONDS from now, and `long`.
const MINT_INLINE: &str = r#"
import json, sys, time, jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
mode, d = sys.argv[1], sys.argv[2]
if mode == "key":
    key = rsa.generate_private_key(65537, 2048)
    open(f"{d}/k1.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    print(json.dumps(jwk))
else:
    key = open(f"{d}/k1.pem").read()
    now = int(time.time())
    claims = {"iss": "https://auth.example.com", "aud": "https://api.example.com",
              "sub": "alice", "scope": "read:items"}
    token = lambda exp: jwt.encode({**claims, "exp": exp}, key, algorithm="RS256",
                                   headers={"kid": "k1"})
    print(json.dumps({"short": token(now + int(sys.argv[3])), "long": token(now + 300)}))
"#;

/// Sends `GET /index.html` with each of `argv[2..]` as a bearer token (`-`: none) over one
/// keep-alive connection to port `argv[1]`, sleeping where an argument is `sleep:<seconds>`;
/// prints the statuses.
const ONE_CONNECTION: &str = r#"
import http.client, sys, time
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
statuses = []
for token in sys.argv[2:]:
    if token.startswith("sleep:"):
        time.sleep(float(token[6:]))
        continue
    headers = {} if token == "-" else {"authorization": f"Bearer {token}"}
    connection.request("GET", "/index.html", headers=headers)
    response = connection.getresponse()
    response.read()
    statuses.append(str(response.status))
    if response.getheader("connection", "").lower() == "close":
        raise SystemExit("the gateway closed the connection")
print(" ".join(statuses))
"#;

/// A guard whose credentials come from one header only: a token resent on a connection is
/// found among the ones it verified by its bytes; it is still refused once expired, and
/// other tokens on the same connection are verified as usual.
#[test]
fn a_token_resent_on_one_connection_is_admitted_until_it_expires() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello from the origin\n")?;
    let (_origin, origin_port) = nginx(&dir.path().join("nginx-www"), &www)?;
    let keys = dir.path().display().to_string();
    let jwk = python(MINT_INLINE, &["key", &keys])?;
    let yaml = format!(
        r#"
name: jwt-one-header
guards:
  jwt0:
    type: jwt
    options:
      issuer: https://auth.example.com
      audience: https://api.example.com
      roles: scope
      keys:
        - {jwk}
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
      authorization:
        jwt0:
          credentials:
            headers:
              authorization: Bearer {{credentials}}
    routes:
      - guarded:
          jwt0: [read:items]
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
      port: {origin_port}
"#,
        jwk = jwk.trim(),
    );
    let mut gateway = Gateway::builder(&yaml).start()?;
    let port = gateway.address("tcp_server").port().to_string();
    // Minted once the gateway listens, so the short token's 5 s cover the first requests.
    let minted: Value = serde_json::from_str(&python(MINT_INLINE, &["tokens", &keys, "5"])?)?;
    let token = |name: &str| {
        minted[name]
            .as_str()
            .map(str::to_owned)
            .context(name.to_owned())
    };
    let (short, long) = (token("short")?, token("long")?);
    let statuses = python(
        ONE_CONNECTION,
        &[
            &port,
            &short,
            &short,
            "-",
            &short,
            // Past the short token's expiry (whole seconds: 4 to 5 s after minting).
            "sleep:5.5",
            &short,
            &long,
            &long,
            &short,
        ],
    )?;
    assert_eq!(statuses.trim(), "200 200 401 200 403 200 200 403");
    assert!(gateway.terminate()?.success());
    Ok(())
}
