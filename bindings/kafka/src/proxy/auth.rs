//! Client authentication at the gateway: the proxy answers a client's SaslHandshake (v1) and
//! SaslAuthenticate itself, checking the credentials against guards, and relays nothing else
//! before the client is authenticated (ApiVersions aside, which goes to the broker as always).
//!
//! - `plain`: a guard with credentials of its own (an `inline` guard's `identity` and
//!   `credentials`) accepts exactly that user and password; any other guard (`jwt`) is given
//!   the password as a token and its identity is the token's (the user name is not checked).
//! - `scram-sha-256`, `scram-sha-512`: the user must be the identity of a guard with
//!   credentials of its own; the proxy derives SCRAM keys from that secret when it starts
//!   (random salt, 4096 iterations) and never keeps the password in a session.
//! - `oauthbearer` (RFC 7628): the bearer token of the client's message is given to the guards
//!   that verify presented credentials (`jwt`: signature, `iss`, `aud`, `exp`, `nbf`; its
//!   roles claim, `scope` by default, gives the roles routes' `guarded` check). Guards holding
//!   a secret of their own (`inline`) never accept a token. A refused token is answered as a
//!   Kafka broker does: the error JSON `{"status":"invalid_token"}` first, then, once the
//!   client acknowledges it with `\x01`, SASL_AUTHENTICATION_FAILED with that JSON as its
//!   message.
//!
//! A failed authentication is answered with SASL_AUTHENTICATION_FAILED and the connection is
//! closed, as a broker does; so is a second SaslHandshake on one connection (ILLEGAL_SASL_STATE),
//! so that each connection gets one try. The session lasts as long as the guard's: the connection is
//! closed when it expires (the client is told a session lifetime of 0, so it does not try to
//! re-authenticate on the same connection).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::StrBytes;
use schemars::JsonSchema;
use serde::Deserialize;
use zilla_engine::BuildError;
use zilla_engine::binding::BuildContext;
use zilla_engine::guard::{Guard, GuardSession};

use super::frame::RequestHeader;
use super::message::{decode_request, response_frame};
use crate::wire::{self, SaslMechanism, ScramCredential, ScramServer};

/// Kafka's error codes of a SASL exchange.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// The error JSON a refused OAUTHBEARER token is answered with (RFC 7628 section 3.2.2).
const OAUTH_BEARER_INVALID_TOKEN: &[u8] = br#"{"status":"invalid_token"}"#;

const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;

/// `options.authentication` of a kafka `proxy`: how clients authenticate to the gateway.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationOptions {
    /// The SASL mechanisms clients may use.
    #[schemars(length(min = 1))]
    pub mechanisms: Vec<EdgeMechanism>,
    /// The guards credentials are checked against, in turn; the first that accepts them gives
    /// the client's session (what routes' `guarded` look at).
    #[schemars(length(min = 1))]
    pub guards: Vec<String>,
}

/// A SASL mechanism clients may authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum EdgeMechanism {
    /// PLAIN.
    #[serde(rename = "plain")]
    Plain,
    /// SCRAM-SHA-256.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// OAUTHBEARER: a bearer token checked by a guard that verifies tokens (`jwt`).
    #[serde(rename = "oauthbearer")]
    OauthBearer,
}

impl EdgeMechanism {
    fn wire(self) -> SaslMechanism {
        match self {
            Self::Plain => SaslMechanism::Plain,
            Self::ScramSha256 => SaslMechanism::ScramSha256,
            Self::ScramSha512 => SaslMechanism::ScramSha512,
            Self::OauthBearer => SaslMechanism::OauthBearer,
        }
    }
}

/// A user whose secret a guard holds.
struct StaticUser {
    identity: String,
    password: String,
    scram: Vec<ScramCredential>,
    session: Arc<dyn GuardSession>,
}

struct EdgeGuard {
    /// The qualified name sessions are kept under.
    name: String,
    guard: Arc<dyn Guard>,
    /// The user of a guard holding a secret of its own (`inline`); `None` for a guard that
    /// verifies presented tokens (`jwt`).
    user: Option<StaticUser>,
}

/// The edge authentication of one proxy binding.
pub(crate) struct EdgeAuth {
    mechanisms: Vec<SaslMechanism>,
    guards: Vec<EdgeGuard>,
}

impl std::fmt::Debug for EdgeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeAuth")
            .field("mechanisms", &self.mechanisms)
            .field(
                "guards",
                &self.guards.iter().map(|g| &g.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A client that authenticated: the guard that accepted it and its session.
pub(crate) struct Authenticated {
    pub guard: String,
    pub session: Arc<dyn GuardSession>,
}

impl EdgeAuth {
    /// Resolves the guards of `options` and derives the SCRAM keys of their users.
    pub(crate) fn build(
        context: &BuildContext<'_>,
        options: &AuthenticationOptions,
    ) -> Result<Self, BuildError> {
        let mut mechanisms: Vec<SaslMechanism> = Vec::new();
        for mechanism in &options.mechanisms {
            if !mechanisms.contains(&mechanism.wire()) {
                mechanisms.push(mechanism.wire());
            }
        }
        let scram: Vec<SaslMechanism> = mechanisms
            .iter()
            .copied()
            .filter(|m| m.is_scram())
            .collect();
        let mut guards = Vec::new();
        for (index, name) in options.guards.iter().enumerate() {
            let path = format!("options.authentication.guards[{index}]");
            let (qualified, guard) = context.presented_guard(name).map_err(|mut error| {
                error.path = path.clone();
                error
            })?;
            let user = match guard.configured() {
                Some(session) => match (session.identity(), session.credentials()) {
                    (Some(identity), Some(password)) => {
                        let mut credentials = Vec::new();
                        for mechanism in &scram {
                            credentials.push(
                                ScramCredential::new(*mechanism, &password)
                                    .map_err(|error| BuildError::at(&path, error.to_string()))?,
                            );
                        }
                        Some(StaticUser {
                            identity: identity.to_owned(),
                            password,
                            scram: credentials,
                            session,
                        })
                    }
                    // Such a guard accepts whatever is presented to it: it cannot
                    // authenticate anyone.
                    _ => {
                        return Err(BuildError::at(
                            path,
                            format!(
                                "guard `{name}` holds a secret without an identity (or an identity without a secret): give it both, or use a guard that verifies tokens (`jwt`)"
                            ),
                        ));
                    }
                },
                None => None,
            };
            guards.push(EdgeGuard {
                name: qualified,
                guard,
                user,
            });
        }
        if !scram.is_empty() && guards.iter().all(|guard| guard.user.is_none()) {
            return Err(BuildError::at(
                "options.authentication.mechanisms",
                "SCRAM needs a guard holding a user's secret (an `inline` guard with `identity` and `credentials`)",
            ));
        }
        if mechanisms.contains(&SaslMechanism::OauthBearer)
            && guards.iter().all(|guard| guard.user.is_some())
        {
            return Err(BuildError::at(
                "options.authentication.mechanisms",
                "oauthbearer needs a guard that verifies tokens (a `jwt` guard)",
            ));
        }
        Ok(Self { mechanisms, guards })
    }

    fn names(&self) -> Vec<StrBytes> {
        self.mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect()
    }

    /// Checks a PLAIN token: `authzid NUL user NUL password`.
    fn plain(&self, token: &[u8]) -> Option<Authenticated> {
        let mut parts = token.split(|byte| *byte == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !authzid.is_empty() && authzid != user {
            return None;
        }
        let user = std::str::from_utf8(user).ok()?;
        let password = std::str::from_utf8(password).ok()?;
        self.guards.iter().find_map(|guard| match &guard.user {
            Some(known) => (wire::same_bytes(known.identity.as_bytes(), user.as_bytes())
                && wire::same_bytes(known.password.as_bytes(), password.as_bytes()))
            .then(|| Authenticated {
                guard: guard.name.clone(),
                session: known.session.clone(),
            }),
            None => Self::token_session(guard, password),
        })
    }

    /// The session of a guard that verifies tokens (`jwt`) for `token`, if it accepts it and
    /// the session has not expired.
    fn token_session(guard: &EdgeGuard, token: &str) -> Option<Authenticated> {
        guard
            .guard
            .reauthorize(token)
            .filter(|session| {
                session
                    .expires_at()
                    .is_none_or(|expiry| expiry > SystemTime::now())
            })
            .map(|session| Authenticated {
                guard: guard.name.clone(),
                session,
            })
    }

    /// Checks an OAUTHBEARER client message's token with the guards that verify tokens.
    fn bearer(&self, message: &[u8]) -> Result<Authenticated, String> {
        let token = wire::oauth_bearer_token(message)?;
        self.guards
            .iter()
            .filter(|guard| guard.user.is_none())
            .find_map(|guard| Self::token_session(guard, token))
            .ok_or_else(|| "OAUTHBEARER token refused".to_owned())
    }

    /// The SCRAM credential of `user` for `mechanism`, with the guard that holds it.
    fn scram(
        &self,
        mechanism: SaslMechanism,
        user: &str,
    ) -> Option<(ScramCredential, Authenticated)> {
        let slot = self
            .mechanisms
            .iter()
            .filter(|m| m.is_scram())
            .position(|m| *m == mechanism)?;
        self.guards
            .iter()
            .find_map(|guard| {
                let known = guard.user.as_ref()?;
                (known.identity == user).then(|| {
                    (
                        known.scram.get(slot).cloned(),
                        Authenticated {
                            guard: guard.name.clone(),
                            session: known.session.clone(),
                        },
                    )
                })
            })
            .and_then(|(credential, who)| Some((credential?, who)))
    }
}

/// What answering one request of the exchange led to.
pub(crate) enum Step {
    /// Send this answer and go on with the exchange.
    Continue(Bytes),
    /// Send this answer: the client is authenticated.
    Done(Bytes, Authenticated),
    /// Send this answer, then close: authentication failed for this reason.
    Fail(Bytes, String),
}

/// The SASL exchange of one client connection.
pub(crate) struct Exchange<'a> {
    auth: &'a EdgeAuth,
    mechanism: Option<SaslMechanism>,
    scram: Option<(ScramServer, Authenticated)>,
    /// Why an OAUTHBEARER token was refused, once its error JSON is sent: the client's
    /// acknowledgement is answered with SASL_AUTHENTICATION_FAILED.
    refused_bearer: Option<String>,
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(auth: &'a EdgeAuth) -> Self {
        Self {
            auth,
            mechanism: None,
            scram: None,
            refused_bearer: None,
        }
    }

    /// Whether `api_key` is part of the exchange (the other requests wait for its end).
    pub(crate) fn handles(api_key: i16) -> bool {
        matches!(api_key, SASL_HANDSHAKE | SASL_AUTHENTICATE)
    }

    /// Answers one SaslHandshake or SaslAuthenticate request; an error closes the connection
    /// without an answer.
    pub(crate) fn answer(&mut self, header: RequestHeader, frame: &Bytes) -> Result<Step, String> {
        let version = header.api_version;
        let correlation = header.correlation_id;
        match header.api_key {
            SASL_HANDSHAKE => {
                if version < 1 {
                    return Err("SaslHandshake v0 (unframed SASL) is not supported".into());
                }
                let (_, request): (_, kp::SaslHandshakeRequest) =
                    decode_request(SASL_HANDSHAKE, version, frame)?;
                if self.mechanism.is_some() {
                    // One exchange per connection, as a broker allows: starting over would
                    // give a client unlimited guesses on one connection.
                    let mut response = kp::SaslHandshakeResponse::default();
                    response.mechanisms = self.auth.names();
                    response.error_code = ILLEGAL_SASL_STATE;
                    return Ok(Step::Fail(
                        response_frame(SASL_HANDSHAKE, version, correlation, &response)?,
                        "a second SaslHandshake on one connection".into(),
                    ));
                }
                let chosen = self
                    .auth
                    .mechanisms
                    .iter()
                    .copied()
                    .find(|m| m.name() == request.mechanism.as_str());
                let mut response = kp::SaslHandshakeResponse::default();
                response.mechanisms = self.auth.names();
                response.error_code = if chosen.is_some() {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                self.mechanism = chosen;
                let frame = response_frame(SASL_HANDSHAKE, version, correlation, &response)?;
                Ok(match chosen {
                    Some(_) => Step::Continue(frame),
                    None => Step::Fail(
                        frame,
                        format!("mechanism {} is not enabled", request.mechanism.as_str()),
                    ),
                })
            }
            SASL_AUTHENTICATE => {
                let (_, request): (_, kp::SaslAuthenticateRequest) =
                    decode_request(SASL_AUTHENTICATE, version, frame)?;
                let reply = |error: i16, message: Option<&str>, bytes: Bytes| {
                    let mut response = kp::SaslAuthenticateResponse::default();
                    response.error_code = error;
                    response.error_message = message.map(|m| StrBytes::from_string(m.to_owned()));
                    response.auth_bytes = bytes;
                    response.session_lifetime_ms = 0;
                    response_frame(SASL_AUTHENTICATE, version, correlation, &response)
                };
                let failed = |reason: String| -> Result<Step, String> {
                    Ok(Step::Fail(
                        reply(
                            SASL_AUTHENTICATION_FAILED,
                            Some("Authentication failed: invalid credentials"),
                            Bytes::new(),
                        )?,
                        reason,
                    ))
                };
                let Some(mechanism) = self.mechanism else {
                    return Ok(Step::Fail(
                        reply(
                            ILLEGAL_SASL_STATE,
                            Some("SaslHandshake first"),
                            Bytes::new(),
                        )?,
                        "SaslAuthenticate before SaslHandshake".into(),
                    ));
                };
                match mechanism {
                    SaslMechanism::OauthBearer => match self.refused_bearer.take() {
                        // The client's acknowledgement of the error JSON (or anything else
                        // sent after it) ends the exchange; the error message is the JSON
                        // again, as a Kafka broker's.
                        Some(reason) => Ok(Step::Fail(
                            reply(
                                SASL_AUTHENTICATION_FAILED,
                                std::str::from_utf8(OAUTH_BEARER_INVALID_TOKEN).ok(),
                                Bytes::new(),
                            )?,
                            reason,
                        )),
                        None => match self.auth.bearer(&request.auth_bytes) {
                            Ok(who) => Ok(Step::Done(reply(0, None, Bytes::new())?, who)),
                            Err(reason) => {
                                self.refused_bearer = Some(reason);
                                Ok(Step::Continue(reply(
                                    0,
                                    None,
                                    Bytes::from_static(OAUTH_BEARER_INVALID_TOKEN),
                                )?))
                            }
                        },
                    },
                    SaslMechanism::Plain => match self.auth.plain(&request.auth_bytes) {
                        Some(who) => Ok(Step::Done(reply(0, None, Bytes::new())?, who)),
                        None => failed("PLAIN credentials refused".into()),
                    },
                    SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                        match self.scram.take() {
                            None => {
                                let first = match wire::scram_client_first(&request.auth_bytes) {
                                    Ok(first) => first,
                                    Err(reason) => return failed(reason),
                                };
                                let Some((credential, who)) =
                                    self.auth.scram(mechanism, &first.user)
                                else {
                                    return failed(format!("no SCRAM user {}", first.user));
                                };
                                let server = ScramServer::start(&first, credential)?;
                                let frame =
                                    reply(0, None, Bytes::from(server.server_first().to_owned()))?;
                                self.scram = Some((server, who));
                                Ok(Step::Continue(frame))
                            }
                            Some((server, who)) => match server.finish(&request.auth_bytes) {
                                Ok(server_final) => {
                                    Ok(Step::Done(reply(0, None, Bytes::from(server_final))?, who))
                                }
                                Err(reason) => failed(reason),
                            },
                        }
                    }
                }
            }
            other => Err(format!(
                "API key {other} sent before the client authenticated"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    /// A user with a secret of its own, as an `inline` guard holds one.
    struct User(&'static str, &'static str);

    impl GuardSession for User {
        fn identity(&self) -> Option<&str> {
            Some(self.0)
        }
        fn verify(&self, roles: &[String]) -> bool {
            roles.is_empty()
        }
        fn attribute(&self, _name: &str) -> Option<String> {
            None
        }
        fn expires_at(&self) -> Option<SystemTime> {
            None
        }
        fn credentials(&self) -> Option<String> {
            Some(self.1.to_owned())
        }
    }

    struct Holder(Arc<User>);

    impl Guard for Holder {
        fn reauthorize(&self, _credentials: &str) -> Option<Arc<dyn GuardSession>> {
            None
        }
        fn configured(&self) -> Option<Arc<dyn GuardSession>> {
            Some(self.0.clone())
        }
    }

    fn edge(mechanisms: &[SaslMechanism]) -> EdgeAuth {
        let user = Arc::new(User("alice", "s3cret"));
        let scram = mechanisms
            .iter()
            .filter(|m| m.is_scram())
            .map(|m| ScramCredential::new(*m, "s3cret").unwrap())
            .collect();
        EdgeAuth {
            mechanisms: mechanisms.to_vec(),
            guards: vec![EdgeGuard {
                name: "test:alice".into(),
                guard: Arc::new(Holder(user.clone())),
                user: Some(StaticUser {
                    identity: "alice".into(),
                    password: "s3cret".into(),
                    scram,
                    session: user,
                }),
            }],
        }
    }

    fn request<M: Encodable>(api_key: i16, version: i16, message: &M) -> (RequestHeader, Bytes) {
        let frame = super::super::message::request_frame(api_key, version, message);
        let header = super::super::frame::request_header(&frame).unwrap();
        (header, frame)
    }

    fn handshake(exchange: &mut Exchange<'_>, mechanism: &'static str) -> Step {
        let mut message = kp::SaslHandshakeRequest::default();
        message.mechanism = StrBytes::from_static_str(mechanism);
        let (header, frame) = request(SASL_HANDSHAKE, 1, &message);
        exchange.answer(header, &frame).unwrap()
    }

    fn authenticate(exchange: &mut Exchange<'_>, version: i16, bytes: &[u8]) -> Step {
        let mut message = kp::SaslAuthenticateRequest::default();
        message.auth_bytes = Bytes::copy_from_slice(bytes);
        let (header, frame) = request(SASL_AUTHENTICATE, version, &message);
        exchange.answer(header, &frame).unwrap()
    }

    /// The body of an answer frame, decoded.
    fn decoded(frame: &Bytes, version: i16) -> kp::SaslAuthenticateResponse {
        use kafka_protocol::protocol::Decodable;
        let offset = if version >= 2 { 9 } else { 8 };
        kp::SaslAuthenticateResponse::decode(&mut frame.slice(offset..), version).unwrap()
    }

    #[test]
    fn plain_accepts_the_guards_user_only() {
        let auth = edge(&[SaslMechanism::Plain]);
        let mut exchange = Exchange::new(&auth);
        assert!(matches!(
            handshake(&mut exchange, "PLAIN"),
            Step::Continue(_)
        ));
        match authenticate(&mut exchange, 1, b"\0alice\0s3cret") {
            Step::Done(_, who) => assert_eq!(who.guard, "test:alice"),
            _ => panic!("refused the right password"),
        }
        let mut exchange = Exchange::new(&auth);
        handshake(&mut exchange, "PLAIN");
        let Step::Fail(reply, _) = authenticate(&mut exchange, 1, b"\0alice\0wrong") else {
            panic!("accepted a wrong password");
        };
        assert_eq!(decoded(&reply, 1).error_code, SASL_AUTHENTICATION_FAILED);
        let mut exchange = Exchange::new(&auth);
        assert!(matches!(
            handshake(&mut exchange, "SCRAM-SHA-512"),
            Step::Fail(..)
        ));
    }

    /// A guard that checks tokens (as `jwt` does): `good` is valid, anything else is not.
    struct Tokens(Arc<User>);

    impl Guard for Tokens {
        fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
            (credentials == "good").then(|| self.0.clone() as Arc<dyn GuardSession>)
        }
    }

    #[test]
    fn plain_hands_the_password_to_a_token_guard() {
        let auth = EdgeAuth {
            mechanisms: vec![SaslMechanism::Plain],
            guards: vec![EdgeGuard {
                name: "test:tokens".into(),
                guard: Arc::new(Tokens(Arc::new(User("carol", "")))),
                user: None,
            }],
        };
        let mut exchange = Exchange::new(&auth);
        handshake(&mut exchange, "PLAIN");
        match authenticate(&mut exchange, 1, b"\0anyone\0good") {
            Step::Done(_, who) => {
                assert_eq!(who.guard, "test:tokens");
                assert_eq!(who.session.identity(), Some("carol"));
            }
            _ => panic!("refused a valid token"),
        }
        let mut exchange = Exchange::new(&auth);
        handshake(&mut exchange, "PLAIN");
        assert!(matches!(
            authenticate(&mut exchange, 1, b"\0anyone\0bad"),
            Step::Fail(..)
        ));
        // No guard holds a secret to derive SCRAM keys from.
        assert!(auth.scram(SaslMechanism::ScramSha256, "carol").is_none());
    }

    /// A valid token is accepted in one round; a refused one gets the error JSON, and the
    /// client's `\x01` acknowledgement gets SASL_AUTHENTICATION_FAILED.
    #[test]
    fn oauth_bearer_checks_the_token_with_a_token_guard_only() {
        let user = Arc::new(User("alice", "good"));
        let auth = EdgeAuth {
            mechanisms: vec![SaslMechanism::OauthBearer],
            guards: vec![
                // Holds `good` as its own secret: must not accept it as a token.
                EdgeGuard {
                    name: "test:alice".into(),
                    guard: Arc::new(Holder(user.clone())),
                    user: Some(StaticUser {
                        identity: "alice".into(),
                        password: "good".into(),
                        scram: Vec::new(),
                        session: user,
                    }),
                },
                EdgeGuard {
                    name: "test:tokens".into(),
                    guard: Arc::new(Tokens(Arc::new(User("carol", "")))),
                    user: None,
                },
            ],
        };
        let mut exchange = Exchange::new(&auth);
        assert!(matches!(
            handshake(&mut exchange, "OAUTHBEARER"),
            Step::Continue(_)
        ));
        match authenticate(&mut exchange, 1, &wire::oauth_bearer_client_first("good")) {
            Step::Done(reply, who) => {
                assert_eq!(who.guard, "test:tokens");
                assert_eq!(who.session.identity(), Some("carol"));
                assert_eq!(decoded(&reply, 1).error_code, 0);
            }
            _ => panic!("refused a valid token"),
        }

        for version in [1, 2] {
            let mut exchange = Exchange::new(&auth);
            handshake(&mut exchange, "OAUTHBEARER");
            let Step::Continue(challenge) = authenticate(
                &mut exchange,
                version,
                &wire::oauth_bearer_client_first("bad"),
            ) else {
                panic!("no error JSON");
            };
            let challenge = decoded(&challenge, version);
            assert_eq!(challenge.error_code, 0);
            assert_eq!(
                challenge.auth_bytes.as_ref(),
                br#"{"status":"invalid_token"}"#
            );
            let Step::Fail(last, _) = authenticate(
                &mut exchange,
                version,
                wire::OAUTH_BEARER_ERROR_ACKNOWLEDGEMENT,
            ) else {
                panic!("the acknowledgement did not end the exchange");
            };
            let last = decoded(&last, version);
            assert_eq!(last.error_code, SASL_AUTHENTICATION_FAILED);
            assert_eq!(
                last.error_message.as_deref(),
                Some(r#"{"status":"invalid_token"}"#)
            );
        }

        // A message that is not OAUTHBEARER's is refused the same way.
        let mut exchange = Exchange::new(&auth);
        handshake(&mut exchange, "OAUTHBEARER");
        assert!(matches!(
            authenticate(&mut exchange, 1, b"\0alice\0good"),
            Step::Continue(_)
        ));
        assert!(matches!(
            authenticate(&mut exchange, 1, b"\x01"),
            Step::Fail(..)
        ));
    }

    #[test]
    fn scram_runs_both_rounds_and_checks_the_proof() {
        for (mechanism, name) in [
            (SaslMechanism::ScramSha256, "SCRAM-SHA-256"),
            (SaslMechanism::ScramSha512, "SCRAM-SHA-512"),
        ] {
            let auth = edge(&[SaslMechanism::Plain, mechanism]);
            for (password, accepted) in [("s3cret", true), ("wrong", false)] {
                let mut exchange = Exchange::new(&auth);
                handshake(&mut exchange, name);
                let client = wire::Scram::new(mechanism, "alice", password, "abc123".into());
                let Step::Continue(first) =
                    authenticate(&mut exchange, 2, client.client_first().as_bytes())
                else {
                    panic!("no server-first");
                };
                let server_first = decoded(&first, 2).auth_bytes;
                let (client_final, verifier) = client.client_final(&server_first).unwrap();
                match authenticate(&mut exchange, 2, client_final.as_bytes()) {
                    Step::Done(last, _) => {
                        assert!(accepted, "{name} accepted {password}");
                        verifier.verify(&decoded(&last, 2).auth_bytes).unwrap();
                    }
                    Step::Fail(..) => assert!(!accepted, "{name} refused {password}"),
                    Step::Continue(_) => panic!("a third round"),
                }
            }
        }
    }

    #[test]
    fn requests_out_of_turn_are_refused() {
        let auth = edge(&[SaslMechanism::Plain]);
        let mut exchange = Exchange::new(&auth);
        assert!(matches!(
            authenticate(&mut exchange, 1, b"\0alice\0s3cret"),
            Step::Fail(..)
        ));
        let (header, frame) = request(SASL_HANDSHAKE, 0, &kp::SaslHandshakeRequest::default());
        assert!(
            exchange.answer(header, &frame).is_err(),
            "v0 is unframed SASL"
        );
        let (header, frame) = request(3, 4, &kp::MetadataRequest::default());
        assert!(exchange.answer(header, &frame).is_err());
    }

    #[test]
    fn a_second_handshake_ends_the_connection() {
        let auth = edge(&[SaslMechanism::Plain, SaslMechanism::ScramSha256]);
        let mut exchange = Exchange::new(&auth);
        assert!(matches!(
            handshake(&mut exchange, "SCRAM-SHA-256"),
            Step::Continue(_)
        ));
        // Starting over would be another guess on the same connection.
        let Step::Fail(answer, _) = handshake(&mut exchange, "PLAIN") else {
            panic!("a second exchange was started");
        };
        use kafka_protocol::protocol::Decodable;
        let response = kp::SaslHandshakeResponse::decode(&mut answer.slice(8..), 1).unwrap();
        assert_eq!(response.error_code, ILLEGAL_SASL_STATE);
    }
}
