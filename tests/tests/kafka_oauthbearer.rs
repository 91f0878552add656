//! SASL OAUTHBEARER (RFC 7628) on both sides of the gateway, with tokens signed by pyjwt.
//!
//! No broker available here implements OAUTHBEARER (tansu offers PLAIN and SCRAM), so:
//! - the kafka `proxy` kind's OAUTHBEARER edge, verifying tokens with a `jwt` guard, is checked
//!   with librdkafka (confluent-kafka's `oauth_cb`) as the client, tansu behind the proxy;
//! - the kafka `client`'s OAUTHBEARER (a gateway in the shape of Zilla's
//!   `http.kafka.oneway.oauthbearer`, its token from an `inline` guard) is checked against
//!   that verified edge, and what it produced is read back from tansu with confluent-kafka.

use anyhow::{Context, Result, ensure};
use zilla_tests::{Broker, Gateway, Peer, kcat, python_json};

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "https://kafka.example.com";

/// Writes RSA keys `signer.pem` and `other.pem` to `argv[1]` and prints `signer`'s public JWK
/// (kid `kafka`, RS256).
const KEYS: &str = r#"
import json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
d = sys.argv[1]
for name in ("signer", "other"):
    key = rsa.generate_private_key(65537, 2048)
    open(f"{d}/{name}.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    if name == "signer":
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.pop("key_ops", None)
        jwk.update(kid="kafka", alg="RS256", use="sig")
        print(json.dumps(jwk))
"#;

/// Prints one token per case, signed with the keys in `argv[1]`.
const MINT: &str = r#"
import json, sys, time, jwt
d, issuer, audience = sys.argv[1:4]
now = int(time.time())
def token(signer="signer", **claims):
    body = {"iss": issuer, "aud": audience, "sub": "orders-service", "scope": "kafka",
            "exp": now + 600, **claims}
    return jwt.encode(body, open(f"{d}/{signer}.pem").read(), algorithm="RS256",
                      headers={"kid": "kafka"})
print(json.dumps({
    "valid": token(),
    "unscoped": token(scope="metrics"),
    "expired": token(exp=now - 60),
    "other_key": token(signer="other"),
    "wrong_audience": token(aud="https://elsewhere.example.com"),
}))
"#;

/// A librdkafka producer and consumer group authenticating with OAUTHBEARER, the token handed
/// over by `oauth_cb` (with a lifetime of its own, so librdkafka itself sends an expired JWT).
const CLIENT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer
bootstrap, token, topic = sys.argv[1:4]
errors = []
auth = {'bootstrap.servers': bootstrap, 'security.protocol': 'SASL_PLAINTEXT',
    'sasl.mechanism': 'OAUTHBEARER', 'oauth_cb': lambda _: (token, time.time() + 300),
    'error_cb': lambda e: errors.append(e.name() + ': ' + e.str()), 'log_level': 0}
producer = Producer(dict(auth, **{'message.timeout.ms': 8000}))
reports = []
for i in range(3):
    producer.produce(topic, value=b'record-%d' % i,
        on_delivery=lambda e, m: reports.append(e.name() if e else None))
producer.flush(20)
result = {'reports': reports}
if reports and all(r is None for r in reports):
    consumer = Consumer(dict(auth, **{'group.id': 'oauth-check', 'auto.offset.reset': 'earliest'}))
    consumer.subscribe([topic])
    seen, deadline = [], time.time() + 30
    while len(seen) < 3 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    consumer.close()
    result['consumed'] = sorted(seen)
result['errors'] = sorted(set(errors))
print(json.dumps(result))
"#;

/// Everything in `topic`, read straight from tansu by confluent-kafka.
const READ_BACK: &str = r#"
import json, sys, confluent_kafka
consumer = confluent_kafka.Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'read-back',
    'auto.offset.reset': 'earliest'})
consumer.assign([confluent_kafka.TopicPartition(sys.argv[2], 0, confluent_kafka.OFFSET_BEGINNING)])
seen = []
for _ in range(20):
    m = consumer.poll(0.5)
    if m is not None and m.error() is None:
        seen.append(m.value().decode())
    elif seen:
        break
consumer.close()
print(json.dumps(seen))
"#;

/// Keys in a fresh directory and the tokens minted with them.
struct Tokens {
    _dir: tempfile::TempDir,
    jwk: String,
    minted: serde_json::Value,
}

impl Tokens {
    fn mint() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().display().to_string();
        let output = Peer::python(KEYS).args([&path]).run()?;
        ensure!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let jwk = String::from_utf8(output.stdout)?.trim().to_owned();
        let minted = python_json(MINT, &[&path, ISSUER, AUDIENCE], "")?;
        Ok(Self {
            _dir: dir,
            jwk,
            minted,
        })
    }

    fn get(&self, case: &str) -> Result<&str> {
        self.minted[case].as_str().context("no such token")
    }
}

/// A kafka proxy in front of `broker` whose clients authenticate with OAUTHBEARER, checked by
/// a `jwt` guard; topics `orders` and `events` need the `kafka` role (the token's `scope`).
/// Returns the bootstrap address.
fn edge(broker: &Broker, tokens: &Tokens) -> Result<(Gateway, String)> {
    let base = zilla_tests::free_port_block(5)?;
    let yaml = format!(
        r#"
name: edge
guards:
  authn_jwt:
    type: jwt
    options:
      issuer: {ISSUER}
      audience: {AUDIENCE}
      keys:
        - {jwk}
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port:
        - {base}
        - "{low}-{high}"
    exit: kafka_proxy
  kafka_proxy:
    type: kafka
    kind: proxy
    options:
      servers:
        - 127.0.0.1:{broker}
      external:
        host: 127.0.0.1
        port: {base}
        ports: "{low}-{high}"
      authentication:
        mechanisms: [oauthbearer]
        guards: [authn_jwt]
    routes:
      - when:
          - topic: orders
          - topic: events
        guarded:
          authn_jwt: [kafka]
        exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
"#,
        jwk = tokens.jwk,
        low = base + 1,
        high = base + 4,
        broker = broker.port(),
    );
    let gateway = Gateway::start(&yaml)?;
    Ok((gateway, format!("127.0.0.1:{base}")))
}

#[test]
fn librdkafka_authenticates_at_the_proxy_with_a_jwt_bearer_token() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("orders", 1, false)?;
    let tokens = Tokens::mint()?;
    let (mut gateway, bootstrap) = edge(&broker, &tokens)?;

    let valid = python_json(CLIENT, &[&bootstrap, tokens.get("valid")?, "orders"], "")?;
    assert_eq!(
        valid["reports"],
        serde_json::json!([null, null, null]),
        "{valid}"
    );
    assert_eq!(
        valid["consumed"],
        serde_json::json!(["record-0", "record-1", "record-2"]),
        "{valid}"
    );

    // Authenticated, but the token's scope does not hold the role the topic needs.
    let unscoped = python_json(CLIENT, &[&bootstrap, tokens.get("unscoped")?, "orders"], "")?;
    assert_eq!(
        unscoped["reports"],
        serde_json::json!([
            "TOPIC_AUTHORIZATION_FAILED",
            "TOPIC_AUTHORIZATION_FAILED",
            "TOPIC_AUTHORIZATION_FAILED"
        ]),
        "{unscoped}"
    );

    // Refused tokens: librdkafka reports an authentication failure and delivers nothing.
    for case in ["expired", "other_key", "wrong_audience"] {
        let refused = python_json(CLIENT, &[&bootstrap, tokens.get(case)?, "orders"], "")?;
        let reports = refused["reports"].as_array().context("reports")?;
        assert!(
            reports.len() == 3 && reports.iter().all(|r| !r.is_null()),
            "{case}: {refused}"
        );
        let errors = refused["errors"].to_string();
        assert!(
            errors.contains("_AUTHENTICATION") && errors.contains("invalid_token"),
            "{case}: {refused}"
        );
    }

    // Only the valid token's records reached the broker.
    let stored = python_json(READ_BACK, &[&broker.address(), "orders"], "")?;
    assert_eq!(
        stored,
        serde_json::json!(["record-0", "record-1", "record-2"])
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// A gateway in the shape of Zilla's `http.kafka.oneway.oauthbearer`: HTTP POSTs to `/events`
/// produced by a kafka client authenticating with OAUTHBEARER, its token the `credentials`
/// of an `inline` guard.
const ONEWAY: &str = r#"
name: oneway
guards:
  authn_kafka:
    type: inline
    options:
      credentials: ${{env.KAFKA_SASL_TOKEN}}
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    routes:
      - exit: north_http_server
  north_http_server:
    type: http
    kind: server
    routes:
      - when:
          - headers:
              :method: POST
              :path: /events
        exit: north_http_kafka_mapping
  north_http_kafka_mapping:
    type: http-kafka
    kind: proxy
    routes:
      - when:
          - path: /events
        exit: north_kafka_cache_client
        with:
          capability: produce
          topic: events
  north_kafka_cache_client:
    type: kafka
    kind: cache_client
    exit: south_kafka_cache_server
  south_kafka_cache_server:
    type: kafka
    kind: cache_server
    exit: south_kafka_client
  south_kafka_client:
    type: kafka
    kind: client
    options:
      servers:
        - ${{env.KAFKA_BOOTSTRAP_SERVER}}
      authorization:
        authn_kafka:
          credentials:
            mechanism: oauthbearer
            token: "{credentials}"
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
"#;

fn post(url: &str, body: &str) -> Result<u16> {
    let output = Peer::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: text/plain", "-d", body, url])
        .run()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

#[test]
fn kafka_client_produces_with_an_oauthbearer_token_through_a_verifying_proxy() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("events", 1, false)?;
    let tokens = Tokens::mint()?;
    let (mut edge, bootstrap) = edge(&broker, &tokens)?;

    let mut oneway = Gateway::builder(ONEWAY)
        .env("KAFKA_BOOTSTRAP_SERVER", &bootstrap)
        .env("KAFKA_SASL_TOKEN", tokens.get("valid")?)
        .start()?;
    let url = format!("http://{}/events", oneway.address("north_tcp_server"));
    let status = post(&url, "hello bearer")?;
    ensure!(status / 100 == 2, "produce answered {status}");
    let stored = python_json(READ_BACK, &[&broker.address(), "events"], "")?;
    assert_eq!(stored, serde_json::json!(["hello bearer"]));
    assert!(oneway.terminate()?.success());

    // An expired token: the proxy refuses it, so the POST fails and nothing is produced; the
    // gateway says why.
    let mut refused = Gateway::builder(ONEWAY)
        .env("KAFKA_BOOTSTRAP_SERVER", &bootstrap)
        .env("KAFKA_SASL_TOKEN", tokens.get("expired")?)
        .start()?;
    let url = format!("http://{}/events", refused.address("north_tcp_server"));
    let status = post(&url, "never stored")?;
    assert!(
        status >= 500,
        "produce with an expired token answered {status}"
    );
    let output = format!("{}{}", refused.stdout(), refused.stderr());
    assert!(
        output.contains("refused the OAUTHBEARER token") && output.contains("invalid_token"),
        "{output}"
    );
    assert!(refused.terminate()?.success());
    let stored = python_json(READ_BACK, &[&broker.address(), "events"], "")?;
    assert_eq!(stored, serde_json::json!(["hello bearer"]));
    assert!(edge.terminate()?.success());
    Ok(())
}

/// Credentials whose keys do not fit their mechanism, or a token that is not a bearer token,
/// fail the start with the position and path of the offending key.
#[test]
fn oauthbearer_credentials_with_the_wrong_keys_are_refused() -> Result<()> {
    for (credentials, expected) in [
        (
            "mechanism: oauthbearer\n            username: u\n            password: p",
            "credentials.username: mechanism oauthbearer takes a `token`",
        ),
        (
            "mechanism: plain\n            token: abc",
            "credentials.token: a `token` is for mechanism oauthbearer only",
        ),
        (
            "mechanism: oauthbearer",
            "credentials.token: mechanism oauthbearer needs a `token`",
        ),
        (
            "mechanism: oauthbearer\n            token: \"not a token\"",
            "credentials.token: the OAUTHBEARER token is not a bearer token",
        ),
    ] {
        let yaml = ONEWAY.replace(
            "mechanism: oauthbearer\n            token: \"{credentials}\"",
            credentials,
        );
        ensure!(yaml != ONEWAY, "the credentials were not replaced");
        let started = Gateway::builder(&yaml)
            .env("KAFKA_BOOTSTRAP_SERVER", "127.0.0.1:9")
            .env("KAFKA_SASL_TOKEN", "abc")
            .start();
        let Err(error) = started else {
            anyhow::bail!("{credentials}: started");
        };
        let message = format!("{error:#}");
        assert!(
            message.contains(expected) && message.contains("options.authorization.authn_kafka"),
            "{credentials}: {message}"
        );
    }
    Ok(())
}

/// A kafka proxy whose own credentials toward the brokers are an OAUTHBEARER token: kcat,
/// unauthenticated, produces through it to the verifying proxy and on to tansu.
#[test]
fn a_proxy_authenticates_to_a_verifying_proxy_with_a_token() -> Result<()> {
    let broker = Broker::start()?;
    broker.create_topic("orders", 1, false)?;
    let tokens = Tokens::mint()?;
    let (mut edge, edge_bootstrap) = edge(&broker, &tokens)?;
    let base = zilla_tests::free_port_block(5)?;
    let yaml = format!(
        r#"
name: front
guards:
  token:
    type: inline
    options:
      credentials: ${{{{env.KAFKA_SASL_TOKEN}}}}
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port:
        - {base}
        - "{low}-{high}"
    exit: kafka_proxy
  kafka_proxy:
    type: kafka
    kind: proxy
    options:
      servers:
        - {edge_bootstrap}
      external:
        host: 127.0.0.1
        port: {base}
        ports: "{low}-{high}"
      authorization:
        token:
          credentials:
            mechanism: oauthbearer
            token: "{{credentials}}"
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
"#,
        low = base + 1,
        high = base + 4,
    );
    let mut front = Gateway::builder(&yaml)
        .env("KAFKA_SASL_TOKEN", tokens.get("valid")?)
        .start()?;
    kcat(
        &["-b", &format!("127.0.0.1:{base}"), "-t", "orders", "-P"],
        "through-0\nthrough-1\n",
    )?;
    let stored = python_json(READ_BACK, &[&broker.address(), "orders"], "")?;
    assert_eq!(stored, serde_json::json!(["through-0", "through-1"]));
    assert!(front.terminate()?.success());
    assert!(edge.terminate()?.success());
    Ok(())
}
