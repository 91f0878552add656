//! SASL authentication of a broker connection: PLAIN, SCRAM-SHA-256/512 (RFC 5802, 7677) and
//! OAUTHBEARER (RFC 7628) over SaslHandshake v1 and SaslAuthenticate.
//!
//! OAUTHBEARER sends one client message, `n,,\x01auth=Bearer <token>\x01\x01`. A broker that
//! refuses the token answers it, without an error code, with an error JSON
//! (`{"status":"invalid_token",...}`); the client then sends the single byte `\x01`, as RFC
//! 7628 section 3.2.3 and Kafka's own client do, and the broker ends the exchange with
//! SASL_AUTHENTICATION_FAILED. The connection fails with both the JSON and that error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::error::{ErrorCode, KafkaError};
use super::types::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

/// Where a SASL exchange runs: a broker connection that has negotiated versions. A trait, so
/// the exchange does not depend on the connection that drives it.
pub(crate) trait SaslChannel {
    /// Sends SaslHandshake.
    async fn handshake(
        &self,
        request: &SaslHandshakeRequest,
    ) -> Result<SaslHandshakeResponse, KafkaError>;
    /// Sends SaslAuthenticate.
    async fn authenticate(
        &self,
        request: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse, KafkaError>;
}

/// Kafka brokers refuse SCRAM credentials with more iterations than this; a server asking for
/// more is not a Kafka broker and would only burn CPU.
const MAX_ITERATIONS: u32 = 16_384;

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: the password in clear (use with TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` (RFC 7628): [`SaslConfig::password`] holds the bearer token.
    OauthBearer,
}

impl SaslMechanism {
    /// The mechanism name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OauthBearer => "OAUTHBEARER",
        }
    }

    /// Whether this is one of the SCRAM mechanisms.
    pub fn is_scram(self) -> bool {
        matches!(self, Self::ScramSha256 | Self::ScramSha512)
    }
}

/// Credentials for SASL.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslConfig {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// User name (empty for OAUTHBEARER).
    pub username: String,
    /// Password, or the bearer token for OAUTHBEARER.
    pub password: String,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Runs the SASL exchange on a connection that has negotiated versions. A refusal is logged
/// as a warning with the broker's reason, since the requests that waited on the connection
/// only see that it failed.
pub(crate) async fn authenticate(
    connection: &impl SaslChannel,
    config: &SaslConfig,
) -> Result<(), KafkaError> {
    let result = run_exchange(connection, config).await;
    if let Err(error @ KafkaError::Authentication(_)) = &result {
        tracing::warn!(mechanism = config.mechanism.name(), %error, "SASL authentication failed");
    }
    result
}

async fn run_exchange(
    connection: &impl SaslChannel,
    config: &SaslConfig,
) -> Result<(), KafkaError> {
    let mechanism = config.mechanism.name();
    let handshake = connection
        .handshake(&SaslHandshakeRequest {
            mechanism: mechanism.to_owned(),
        })
        .await?;
    if handshake.error == ErrorCode::UNSUPPORTED_SASL_MECHANISM {
        return Err(KafkaError::Authentication(format!(
            "the broker does not enable {mechanism} (it enables {})",
            handshake.mechanisms.join(", ")
        )));
    }
    handshake.error.check("SaslHandshake")?;

    match config.mechanism {
        SaslMechanism::Plain => {
            let token = format!("\0{}\0{}", config.username, config.password);
            exchange(connection, Bytes::from(token)).await?;
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let mut nonce = [0u8; 24];
            getrandom::fill(&mut nonce)
                .map_err(|e| KafkaError::Authentication(format!("no randomness for nonce: {e}")))?;
            let scram = Scram::new(
                config.mechanism,
                &config.username,
                &config.password,
                BASE64.encode(nonce),
            );
            let server_first = exchange(connection, Bytes::from(scram.client_first())).await?;
            let (client_final, verifier) = scram.client_final(&server_first)?;
            let server_final = exchange(connection, Bytes::from(client_final)).await?;
            verifier.verify(&server_final)?;
        }
        SaslMechanism::OauthBearer => {
            check_bearer_token(&config.password).map_err(KafkaError::Authentication)?;
            let response = connection
                .authenticate(&SaslAuthenticateRequest {
                    auth_bytes: oauth_bearer_client_first(&config.password),
                })
                .await?;
            if !response.error.is_ok() {
                return Err(refused(response));
            }
            if !response.auth_bytes.is_empty() {
                // The broker's error JSON: acknowledge it so the broker ends the exchange with
                // its error, and report both.
                let challenge = String::from_utf8_lossy(&response.auth_bytes).into_owned();
                let last = connection
                    .authenticate(&SaslAuthenticateRequest {
                        auth_bytes: Bytes::from_static(OAUTH_BEARER_ERROR_ACKNOWLEDGEMENT),
                    })
                    .await?;
                let detail = if last.error.is_ok() {
                    "the broker did not end the exchange".to_owned()
                } else {
                    last.message.unwrap_or_else(|| last.error.to_string())
                };
                return Err(KafkaError::Authentication(format!(
                    "the broker refused the OAUTHBEARER token: {challenge} ({detail})"
                )));
            }
        }
    }
    tracing::debug!(mechanism, user = %config.username, "authenticated");
    Ok(())
}

/// A connection no other request uses yet, driven one request at a time: how the kafka proxy
/// authenticates its own broker connections before it relays a client's requests on them.
pub(crate) struct StreamChannel<S> {
    stream: tokio::sync::Mutex<S>,
    correlation: std::sync::atomic::AtomicI32,
    max_frame: usize,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> StreamChannel<S> {
    /// Drives `stream`, refusing response frames over `max_frame` bytes.
    pub(crate) fn new(stream: S, max_frame: usize) -> Self {
        Self {
            stream: tokio::sync::Mutex::new(stream),
            correlation: std::sync::atomic::AtomicI32::new(1),
            max_frame,
        }
    }

    /// The stream back, once the exchange is over.
    pub(crate) fn into_inner(self) -> S {
        self.stream.into_inner()
    }

    async fn call<R: super::codec::Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let correlation = self
            .correlation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = super::codec::encode_request(request, version, correlation, "zilla")?;
        let mut stream = self.stream.lock().await;
        stream.write_all(&frame).await?;
        stream.flush().await?;
        let size = stream.read_i32().await?;
        let size = usize::try_from(size)
            .ok()
            .filter(|size| (4..=self.max_frame).contains(size))
            .ok_or_else(|| KafkaError::malformed(R::API.name(), "response size out of range"))?;
        // Grown as the bytes arrive: a size prefix alone does not reserve up to `max_frame`.
        let mut body = Vec::with_capacity(size.min(64 * 1024));
        (&mut *stream)
            .take(size as u64)
            .read_to_end(&mut body)
            .await?;
        if body.len() < size {
            return Err(KafkaError::malformed(
                R::API.name(),
                "connection closed inside a frame",
            ));
        }
        let mut body = Bytes::from(body);
        let answered = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if answered != correlation {
            return Err(KafkaError::malformed(
                R::API.name(),
                "answer to another request",
            ));
        }
        let _ = body.split_to(4);
        super::codec::decode_response::<R>(version, body)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> SaslChannel for StreamChannel<S> {
    async fn handshake(
        &self,
        request: &SaslHandshakeRequest,
    ) -> Result<SaslHandshakeResponse, KafkaError> {
        self.call(request, 1).await
    }

    async fn authenticate(
        &self,
        request: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse, KafkaError> {
        self.call(request, 1).await
    }
}

async fn exchange(connection: &impl SaslChannel, auth_bytes: Bytes) -> Result<Bytes, KafkaError> {
    let response = connection
        .authenticate(&SaslAuthenticateRequest { auth_bytes })
        .await?;
    if !response.error.is_ok() {
        return Err(refused(response));
    }
    Ok(response.auth_bytes)
}

/// The error of a SaslAuthenticate answer that carries one: the broker's message, or the
/// error code's name.
fn refused(response: SaslAuthenticateResponse) -> KafkaError {
    KafkaError::Authentication(
        response
            .message
            .unwrap_or_else(|| response.error.to_string()),
    )
}

/// What a client sends after a server's OAUTHBEARER error JSON (RFC 7628 section 3.2.3).
pub(crate) const OAUTH_BEARER_ERROR_ACKNOWLEDGEMENT: &[u8] = b"\x01";

/// Checks that `token` is an RFC 6750 `b64token` (`[A-Za-z0-9-._~+/]+=*`), as Kafka's client
/// requires: anything else could not be framed in an OAUTHBEARER message.
pub(crate) fn check_bearer_token(token: &str) -> Result<(), String> {
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
    {
        return Err("the OAUTHBEARER token is not a bearer token (RFC 6750 b64token: letters, digits, `-._~+/`, then `=` padding)".into());
    }
    Ok(())
}

/// The OAUTHBEARER client message (RFC 7628 section 3.1) for `token`, without an
/// authorization identity or extensions.
pub fn oauth_bearer_client_first(token: &str) -> Bytes {
    Bytes::from(format!("n,,\x01auth=Bearer {token}\x01\x01"))
}

/// Reads an OAUTHBEARER client message as a server: the bearer token of its `auth` key.
/// Extensions and `host`/`port` keys are allowed and not used; an authorization identity is
/// refused, as the identity comes from the token. Channel binding is refused (`p=`); `y` is
/// read as `n`.
pub fn oauth_bearer_token(message: &[u8]) -> Result<&str, String> {
    let message = std::str::from_utf8(message).map_err(|_| "not UTF-8".to_owned())?;
    let (gs2, rest) = message
        .split_once('\x01')
        .ok_or("no key-value pairs after the GS2 header")?;
    let mut gs2 = gs2.split(',');
    match (gs2.next(), gs2.next(), gs2.next(), gs2.next()) {
        (Some("n" | "y"), Some(""), Some(""), None) => {}
        (Some("n" | "y"), Some(authzid), Some(""), None) if authzid.starts_with("a=") => {
            return Err("an authorization identity is not supported".into());
        }
        (Some(flag), ..) if flag.starts_with("p=") => {
            return Err("channel binding is not supported".into());
        }
        _ => return Err("malformed GS2 header".into()),
    }
    let pairs = rest
        .strip_suffix("\x01\x01")
        .ok_or("the message does not end with two ^A")?;
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (key, value) = pair.split_once('=').ok_or("a key without a value")?;
        if key == "auth" {
            if token.is_some() {
                return Err("two auth keys".into());
            }
            let (scheme, credentials) = value.split_once(' ').ok_or("no auth scheme")?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(format!("auth scheme {scheme} is not Bearer"));
            }
            token = Some(credentials.trim_matches(' '));
        }
    }
    let token = token.ok_or("no auth key")?;
    check_bearer_token(token)?;
    Ok(token)
}

/// The client side of a SCRAM exchange.
pub(crate) struct Scram {
    mechanism: SaslMechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
}

/// Checks the server's final message against the signature expected from it.
pub(crate) struct ServerVerifier {
    expected: Vec<u8>,
}

impl Scram {
    pub(crate) fn new(
        mechanism: SaslMechanism,
        username: &str,
        password: &str,
        client_nonce: String,
    ) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            mechanism,
            password: password.to_owned(),
            client_first_bare: format!("n={name},r={client_nonce}"),
            client_nonce,
        }
    }

    pub(crate) fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    pub(crate) fn client_final(
        &self,
        server_first: &[u8],
    ) -> Result<(String, ServerVerifier), KafkaError> {
        let fail = |why: &str| KafkaError::Authentication(format!("SCRAM server-first: {why}"));
        let server_first = std::str::from_utf8(server_first).map_err(|_| fail("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_once('=') {
                Some(("r", value)) => nonce = Some(value),
                Some(("s", value)) => salt = Some(value),
                Some(("i", value)) => iterations = Some(value),
                Some(("e", value)) => return Err(fail(value)),
                Some(("m", _)) => return Err(fail("mandatory extension not supported")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| fail("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(fail("the nonce does not extend ours"));
        }
        let salt = BASE64
            .decode(salt.ok_or_else(|| fail("no salt"))?)
            .map_err(|_| fail("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or_else(|| fail("no iteration count"))?
            .parse()
            .map_err(|_| fail("bad iteration count"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(fail("iteration count out of range"));
        }

        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let (proof, server_signature) = match self.mechanism {
            SaslMechanism::ScramSha256 => {
                proofs::<Sha256>(self.password.as_bytes(), &salt, iterations, &auth_message)
            }
            SaslMechanism::ScramSha512 | SaslMechanism::Plain | SaslMechanism::OauthBearer => {
                proofs::<Sha512>(self.password.as_bytes(), &salt, iterations, &auth_message)
            }
        }?;
        Ok((
            format!("{without_proof},p={}", BASE64.encode(proof)),
            ServerVerifier {
                expected: server_signature,
            },
        ))
    }
}

impl ServerVerifier {
    pub(crate) fn verify(&self, server_final: &[u8]) -> Result<(), KafkaError> {
        let fail = |why: &str| KafkaError::Authentication(format!("SCRAM server-final: {why}"));
        let server_final = std::str::from_utf8(server_final).map_err(|_| fail("not UTF-8"))?;
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(fail(error));
        }
        let signature = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| fail("no verifier"))?;
        let signature = BASE64
            .decode(signature)
            .map_err(|_| fail("verifier is not base64"))?;
        if !same_bytes(&signature, &self.expected) {
            return Err(fail(
                "the server signature does not match: not the real server",
            ));
        }
        Ok(())
    }
}

fn hmac<D: EagerHash>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, KafkaError> {
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key)
        .map_err(|e| KafkaError::Authentication(e.to_string()))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The keys derived from a password (RFC 5802 section 3): the client key, its hash (the
/// stored key) and the server key.
struct DerivedKeys {
    client_key: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

fn derive_keys<D: EagerHash>(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<DerivedKeys, KafkaError> {
    let mut salted = vec![0u8; <D as Digest>::output_size()];
    pbkdf2::pbkdf2_hmac::<D>(password, salt, iterations, &mut salted);
    let client_key = hmac::<D>(&salted, b"Client Key")?;
    let stored_key = <D as Digest>::digest(&client_key).to_vec();
    let server_key = hmac::<D>(&salted, b"Server Key")?;
    Ok(DerivedKeys {
        client_key,
        stored_key,
        server_key,
    })
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// Compares without stopping at the first difference, so timing tells nothing of a secret.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client proof and the server signature the client expects (RFC 5802 section 3).
fn proofs<D: EagerHash>(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    auth_message: &str,
) -> Result<(Vec<u8>, Vec<u8>), KafkaError> {
    let keys = derive_keys::<D>(password, salt, iterations)?;
    let client_signature = hmac::<D>(&keys.stored_key, auth_message.as_bytes())?;
    let proof = xor(&keys.client_key, &client_signature);
    let server_signature = hmac::<D>(&keys.server_key, auth_message.as_bytes())?;
    Ok((proof, server_signature))
}

/// What the server side of SCRAM keeps of one user's password: salt, iteration count, stored
/// key and server key (RFC 5802 section 3), never the password itself.
#[derive(Clone)]
pub(crate) struct ScramCredential {
    mechanism: SaslMechanism,
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The iteration count of credentials the proxy derives (Kafka's minimum for SCRAM users).
pub(crate) const SERVER_ITERATIONS: u32 = 4096;

impl ScramCredential {
    /// The credential of `password` for a SCRAM `mechanism`, with a random salt.
    pub(crate) fn new(mechanism: SaslMechanism, password: &str) -> Result<Self, KafkaError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| KafkaError::Authentication(format!("no randomness for salt: {e}")))?;
        let keys = match mechanism {
            SaslMechanism::ScramSha256 => {
                derive_keys::<Sha256>(password.as_bytes(), &salt, SERVER_ITERATIONS)
            }
            SaslMechanism::ScramSha512 => {
                derive_keys::<Sha512>(password.as_bytes(), &salt, SERVER_ITERATIONS)
            }
            SaslMechanism::Plain | SaslMechanism::OauthBearer => {
                return Err(KafkaError::Authentication(format!(
                    "{} is not SCRAM",
                    mechanism.name()
                )));
            }
        }?;
        Ok(Self {
            mechanism,
            salt: salt.to_vec(),
            iterations: SERVER_ITERATIONS,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        })
    }
}

/// The client-first message of a SCRAM exchange, as a server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    /// The user name, unescaped.
    pub user: String,
    bare: String,
    nonce: String,
}

/// Reads a client-first message: `n,,n=<user>,r=<nonce>` (channel binding is refused, as
/// Kafka refuses it).
pub(crate) fn scram_client_first(message: &[u8]) -> Result<ClientFirst, String> {
    let message = std::str::from_utf8(message).map_err(|_| "not UTF-8".to_owned())?;
    let (gs2, bare) = if let Some(rest) = message.strip_prefix("n,") {
        ("n", rest)
    } else if let Some(rest) = message.strip_prefix("y,") {
        ("y", rest)
    } else {
        return Err("channel binding is not supported".into());
    };
    let _ = gs2;
    // An authorization identity, if any, comes before the second comma.
    let (authzid, bare) = bare.split_once(',').ok_or("no client-first-bare")?;
    let mut user = None;
    let mut nonce = None;
    for attribute in bare.split(',') {
        match attribute.split_once('=') {
            Some(("n", value)) => user = Some(value),
            Some(("r", value)) => nonce = Some(value),
            Some(("m", _)) => return Err("mandatory extension not supported".into()),
            _ => {}
        }
    }
    let user = user.ok_or("no user name")?;
    let user = user.replace("=2C", ",").replace("=3D", "=");
    if let Some(authzid) = authzid.strip_prefix("a=")
        && authzid.replace("=2C", ",").replace("=3D", "=") != user
    {
        return Err("an authorization identity other than the user is not supported".into());
    }
    let nonce = nonce.filter(|n| !n.is_empty()).ok_or("no nonce")?;
    Ok(ClientFirst {
        user,
        bare: bare.to_owned(),
        nonce: nonce.to_owned(),
    })
}

/// The server side of a SCRAM exchange after the client-first message.
pub(crate) struct ScramServer {
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Answers `client` with a server-first message for `credential`.
    pub(crate) fn start(client: &ClientFirst, credential: ScramCredential) -> Result<Self, String> {
        let mut random = [0u8; 18];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness for nonce: {e}"))?;
        let nonce = format!("{}{}", client.nonce, BASE64.encode(random));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        Ok(Self {
            credential,
            client_first_bare: client.bare.clone(),
            server_first,
            nonce,
        })
    }

    /// The server-first message.
    pub(crate) fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message's proof; the server-final message when it holds.
    pub(crate) fn finish(&self, client_final: &[u8]) -> Result<String, String> {
        let client_final = std::str::from_utf8(client_final).map_err(|_| "not UTF-8".to_owned())?;
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or("no proof in client-final")?;
        let mut channel = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            match attribute.split_once('=') {
                Some(("c", value)) => channel = Some(value),
                Some(("r", value)) => nonce = Some(value),
                _ => {}
            }
        }
        // "biws" is base64 of "n,,"; "eSws" of "y,,".
        if !matches!(channel, Some("biws" | "eSws")) {
            return Err("unexpected channel binding".into());
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err("the nonce does not match".into());
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| "proof is not base64".to_owned())?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let credential = &self.credential;
        let fail = |e: KafkaError| e.to_string();
        let (client_key_hash, server_signature) = match credential.mechanism {
            SaslMechanism::ScramSha256 => check_proof::<Sha256>(credential, &proof, &auth_message),
            _ => check_proof::<Sha512>(credential, &proof, &auth_message),
        }
        .map_err(fail)?;
        if !same_bytes(&client_key_hash, &credential.stored_key) {
            return Err("authentication failed: invalid credentials".into());
        }
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

/// The hash of the client key the proof carries, and the server signature.
fn check_proof<D: EagerHash>(
    credential: &ScramCredential,
    proof: &[u8],
    auth_message: &str,
) -> Result<(Vec<u8>, Vec<u8>), KafkaError> {
    let client_signature = hmac::<D>(&credential.stored_key, auth_message.as_bytes())?;
    if proof.len() != client_signature.len() {
        return Ok((Vec::new(), Vec::new()));
    }
    let client_key = xor(proof, &client_signature);
    let hash = <D as Digest>::digest(&client_key).to_vec();
    let server_signature = hmac::<D>(&credential.server_key, auth_message.as_bytes())?;
    Ok((hash, server_signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our client against our server, for both hashes; a wrong password fails the proof.
    #[test]
    fn scram_server_accepts_the_right_password_only() {
        for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
            let credential = ScramCredential::new(mechanism, "s3cret").unwrap();
            for (password, accepted) in [("s3cret", true), ("wrong", false)] {
                let client = Scram::new(mechanism, "al,ice", password, "nonce123".into());
                let first = scram_client_first(client.client_first().as_bytes()).unwrap();
                assert_eq!(first.user, "al,ice");
                let server = ScramServer::start(&first, credential.clone()).unwrap();
                let (client_final, verifier) = client
                    .client_final(server.server_first().as_bytes())
                    .unwrap();
                match server.finish(client_final.as_bytes()) {
                    Ok(server_final) => {
                        assert!(accepted, "{mechanism:?} accepted {password}");
                        verifier.verify(server_final.as_bytes()).unwrap();
                    }
                    Err(_) => assert!(!accepted, "{mechanism:?} refused {password}"),
                }
            }
        }
        assert!(scram_client_first(b"p=tls-unique,,n=a,r=b").is_err());
        assert!(scram_client_first(b"n,,n=a").is_err());
    }

    #[test]
    fn rfc7677_scram_sha256_exchange() {
        let scram = Scram::new(
            SaslMechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, verifier) = scram.client_final(server_first).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        verifier
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(
            verifier
                .verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(verifier.verify(b"e=invalid-proof").is_err());
    }

    #[test]
    fn server_nonce_must_extend_the_client_nonce() {
        let scram = Scram::new(SaslMechanism::ScramSha512, "u", "p", "abc".into());
        assert!(scram.client_final(b"r=xyz,s=AAAA,i=4096").is_err());
        assert!(scram.client_final(b"r=abc,s=AAAA,i=4096").is_err());
        assert!(scram.client_final(b"r=abcd,s=AAAA,i=999999999").is_err());
        assert!(scram.client_final(b"r=abcd,s=AAAA,i=4096").is_ok());
    }

    /// A broker scripted with its SaslAuthenticate answers, recording what it is sent.
    struct ScriptedBroker {
        answers: std::sync::Mutex<Vec<SaslAuthenticateResponse>>,
        sent: std::sync::Mutex<Vec<Bytes>>,
    }

    impl ScriptedBroker {
        fn new(answers: Vec<SaslAuthenticateResponse>) -> Self {
            Self {
                answers: std::sync::Mutex::new(answers),
                sent: std::sync::Mutex::new(Vec::new()),
            }
        }
    }

    impl SaslChannel for ScriptedBroker {
        async fn handshake(
            &self,
            request: &SaslHandshakeRequest,
        ) -> Result<SaslHandshakeResponse, KafkaError> {
            assert_eq!(request.mechanism, "OAUTHBEARER");
            Ok(SaslHandshakeResponse {
                error: ErrorCode::NONE,
                mechanisms: vec!["OAUTHBEARER".into()],
            })
        }

        async fn authenticate(
            &self,
            request: &SaslAuthenticateRequest,
        ) -> Result<SaslAuthenticateResponse, KafkaError> {
            self.sent.lock().unwrap().push(request.auth_bytes.clone());
            Ok(self.answers.lock().unwrap().remove(0))
        }
    }

    fn answer(
        error: ErrorCode,
        message: Option<&str>,
        bytes: &'static [u8],
    ) -> SaslAuthenticateResponse {
        SaslAuthenticateResponse {
            error,
            message: message.map(str::to_owned),
            auth_bytes: Bytes::from_static(bytes),
        }
    }

    fn bearer(token: &str) -> SaslConfig {
        SaslConfig {
            mechanism: SaslMechanism::OauthBearer,
            username: String::new(),
            password: token.into(),
        }
    }

    fn run<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn oauth_bearer_sends_the_rfc7628_message_once() {
        let broker = ScriptedBroker::new(vec![answer(ErrorCode::NONE, None, b"")]);
        run(authenticate(&broker, &bearer("eyJ.abc-_.x~+/=="))).unwrap();
        assert_eq!(
            broker.sent.lock().unwrap().as_slice(),
            [Bytes::from_static(
                b"n,,\x01auth=Bearer eyJ.abc-_.x~+/==\x01\x01"
            )]
        );
    }

    /// The broker's error JSON is acknowledged with `\x01` and the failure names both it and
    /// the broker's final error.
    #[test]
    fn an_oauth_bearer_error_challenge_is_acknowledged_then_fails() {
        let broker = ScriptedBroker::new(vec![
            answer(ErrorCode::NONE, None, br#"{"status":"invalid_token"}"#),
            answer(
                ErrorCode::SASL_AUTHENTICATION_FAILED,
                Some("Authentication failed: token expired"),
                b"",
            ),
        ]);
        let error = run(authenticate(&broker, &bearer("t0ken"))).unwrap_err();
        let KafkaError::Authentication(text) = &error else {
            panic!("{error}");
        };
        assert!(
            text.contains("invalid_token") && text.contains("token expired"),
            "{text}"
        );
        let sent = broker.sent.lock().unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].as_ref(), OAUTH_BEARER_ERROR_ACKNOWLEDGEMENT);

        let broker = ScriptedBroker::new(vec![answer(
            ErrorCode::SASL_AUTHENTICATION_FAILED,
            Some("no"),
            b"",
        )]);
        assert!(run(authenticate(&broker, &bearer("t0ken"))).is_err());
        // A token that cannot be framed is not sent at all.
        let broker = ScriptedBroker::new(Vec::new());
        assert!(run(authenticate(&broker, &bearer("a\x01b"))).is_err());
        assert!(broker.sent.lock().unwrap().is_empty());
    }

    #[test]
    fn oauth_bearer_server_reads_what_clients_send() {
        assert_eq!(
            oauth_bearer_token(&oauth_bearer_client_first("abc.def")),
            Ok("abc.def")
        );
        // librdkafka and the Java client may add extensions and host/port keys.
        assert_eq!(
            oauth_bearer_token(b"n,,\x01host=h\x01auth=bearer tok\x01ext=1\x01\x01"),
            Ok("tok")
        );
        for bad in [
            &b"n,,\x01auth=Bearer tok\x01"[..],
            b"n,a=bob,\x01auth=Bearer tok\x01\x01",
            b"p=tls-unique,,\x01auth=Bearer tok\x01\x01",
            b"n,,\x01auth=Basic dG9r\x01\x01",
            b"n,,\x01host=h\x01\x01",
            b"n,,\x01auth=Bearer a b\x01\x01",
            b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
            b"\xff",
        ] {
            assert!(oauth_bearer_token(bad).is_err(), "{bad:?}");
        }
    }

    /// A broker that announces a frame near the limit and closes after a few bytes gets a
    /// malformed-frame error; the frame's buffer grew only by what arrived.
    #[tokio::test]
    async fn a_frame_cut_short_is_malformed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let channel = StreamChannel::new(near, 64 << 20);
        let broker = tokio::spawn(async move {
            let mut size = [0u8; 4];
            far.read_exact(&mut size).await.unwrap();
            let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
            far.read_exact(&mut request).await.unwrap();
            let mut answer = (64i32 << 20).to_be_bytes().to_vec();
            answer.extend_from_slice(&request[4..8]);
            answer.extend_from_slice(&[0; 1000]);
            far.write_all(&answer).await.unwrap();
        });
        let request = SaslHandshakeRequest {
            mechanism: "PLAIN".into(),
        };
        let error = channel.handshake(&request).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("connection closed inside a frame"),
            "{error}"
        );
        broker.await.unwrap();
    }

    proptest::proptest! {
        /// Whatever a client sends, reading it ends in a token or an error, and every token
        /// read back frames again to the same message's token.
        #[test]
        fn oauth_bearer_reader_never_panics(message in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(token) = oauth_bearer_token(&message) {
                let framed = oauth_bearer_client_first(token);
                proptest::prop_assert_eq!(oauth_bearer_token(&framed), Ok(token));
            }
        }
    }

    #[test]
    fn user_names_are_escaped() {
        let scram = Scram::new(SaslMechanism::ScramSha256, "a=b,c", "p", "n".into());
        assert_eq!(scram.client_first(), "n,,n=a=3Db=2Cc,r=n");
    }
}
