//! The `jwt` guard: authorizes JSON Web Tokens (RFC 7519) signed with RSA, ECDSA or EdDSA keys,
//! as Zilla's `jwt` guard does.
//!
//! ```yaml
//! name: example
//! guards:
//!   jwt0:
//!     type: jwt
//!     options:
//!       issuer: https://auth.example.com
//!       audience: https://api.example.com
//!       roles: scope                  # the default
//!       identity: sub                 # the default
//!       attributes:
//!         tenant: org.tenant          # dotted claim paths
//!       challenge: 30                 # seconds before expiry to challenge SSE subscribers
//!       keys:
//!         - kty: RSA
//!           kid: example
//!           alg: RS256
//!           n: qqr...
//!           e: AQAB
//! bindings:
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       authorization:
//!         jwt0:
//!           credentials:
//!             headers:
//!               authorization: Bearer {credentials}
//!     routes:
//!       - guarded:
//!           jwt0: [read:items]
//!         exit: app
//! ```
//!
//! # Options
//!
//! | option | meaning |
//! |---|---|
//! | `issuer` | the exact `iss` every token must carry |
//! | `audience` | a value the token's `aud` (a string or an array) must hold |
//! | `roles` | the claim listing roles: a JSON array or a space-separated string; `scope` by default. Routes' `guarded` roles must all be in it; a token without it is admitted by no guarded route |
//! | `identity` | the claim naming the identity (`${guarded['jwt0'].identity}`); `sub` by default |
//! | `attributes` | `name: claim.path` pairs for `${guarded['jwt0'].attributes.name}` |
//! | `keys` | a list of JWKs (`kty` `RSA` / `EC` / `OKP`, `kid`, `alg`, `n` `e` / `crv` `x` `y`, `use`: only a `sig` key verifies signatures, and `key_ops`: when given it must list `verify`; an inline key that may not verify fails the start and one in a JWKS is skipped; other JWK members such as `x5c` are accepted and not used, as in Zilla), or a string: an `http://` or `https://` URL of a JWKS, or a JWKS file path relative to the config. Absent: `<issuer>/.well-known/jwks.json` |
//! | `challenge` | seconds before a session expires at which an SSE subscriber is sent a `challenge` event |
//!
//! # Verification
//!
//! The key is found by the token's `kid`; the token's `alg` must equal the key's `alg` (RS256/384/512,
//! PS256/384/512, ES256/384 and EdDSA are supported; every inline key must declare `alg`). The
//! signature is verified, then: `nbf` must have passed (up to
//! [`verify::NOT_BEFORE_LEEWAY`] early, for clock skew), `exp` must not have (no leeway: a session
//! accepted after its expiry would end at once), `iss` must equal `issuer` and `aud` must hold
//! `audience` when those options are set. `exp` and `nbf` are optional, as in Zilla: a token
//! without `exp` never expires.
//!
//! A JWKS location is read when the config loads (a fetch waits at most 10 s; an unreachable
//! origin leaves no keys until a later fetch succeeds) and again in the background whenever a
//! token names an unknown `kid`, at most once every [`keys::REFRESH_INTERVAL`]. A token is never
//! held waiting for a fetch: the one naming the new key is refused, and the next one after the
//! refresh lands is admitted. Cached keys keep working while the origin is unreachable.
//!
//! # Sessions
//!
//! Bindings share sessions per (connection, identity) through
//! [`zilla_engine::guard::ConnectionSessions`]: a newer token for the same identity on the same
//! connection, with roles including the session's roles, extends the session's expiry. That is
//! how an SSE stream is kept alive by a challenge response on the same HTTP/2 connection.
//!
//! # Events
//!
//! Every refused token raises `GUARD_JWT_AUTHORIZATION_FAILED` with the message
//! `AUTHORIZATION_FAILED <identity or -> <reason>`, the reason naming the failed check.

pub mod config;
pub mod keys;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zilla_engine::BuildError;
use zilla_engine::Registry;
use zilla_engine::components::{ComponentContext, ComponentFactory};
use zilla_engine::events::Events;
use zilla_engine::guard::{Guard, GuardSession};

use crate::config::{JwtOptions, KeysConfig};
use crate::keys::{KeyMap, KeySet, Location};
use crate::verify::{Claims, Rejection};

/// Raised for every refused token.
pub const AUTHORIZATION_FAILED: &str = "GUARD_JWT_AUTHORIZATION_FAILED";

/// Registers the `jwt` guard type.
pub fn register(registry: &mut Registry) {
    registry.guard(JwtGuardFactory);
}

/// Builds `jwt` guards.
#[derive(Debug, Clone, Copy)]
pub struct JwtGuardFactory;

impl ComponentFactory<dyn Guard> for JwtGuardFactory {
    fn type_name(&self) -> &'static str {
        "jwt"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(JwtOptions)))
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
        context.refuse_store("a jwt guard")?;
        context.refuse_vault("a jwt guard")?;
        let options: JwtOptions = context.options()?;
        let keys = match &options.keys {
            Some(KeysConfig::Inline(list)) => {
                let mut keys = KeyMap::new();
                for (index, config) in list.iter().enumerate() {
                    let key = keys::key(config).map_err(|error| {
                        BuildError::at(format!("options.keys[{index}]"), error.to_string())
                    })?;
                    if keys.insert(config.kid.clone(), key).is_some() {
                        return Err(BuildError::at(
                            format!("options.keys[{index}].kid"),
                            format!("key id `{}` is listed twice", config.kid),
                        ));
                    }
                }
                KeySet::fixed(keys)
            }
            Some(KeysConfig::Location(location)) => {
                KeySet::load(location_of(location, context, "options.keys")?)
            }
            None => match &options.issuer {
                Some(issuer) => {
                    let url = if issuer.ends_with('/') {
                        format!("{issuer}.well-known/jwks.json")
                    } else {
                        format!("{issuer}/.well-known/jwks.json")
                    };
                    KeySet::load(location_of(&url, context, "options.issuer")?)
                }
                None => {
                    return Err(BuildError::at(
                        "options",
                        "a jwt guard needs `keys`, or an `issuer` to find its JWKS",
                    ));
                }
            },
        };
        let claims = Claims {
            issuer: options.issuer.clone(),
            audience: options.audience.clone(),
            roles: options.roles.clone().unwrap_or_else(|| "scope".into()),
            identity: options.identity.clone().unwrap_or_else(|| "sub".into()),
            attributes: options.attributes.clone().unwrap_or_default(),
            challenge: options.challenge.map(Duration::from_secs),
        };
        tracing::debug!(guard = %context.name, keys = keys.len(), "jwt guard built");
        Ok(Arc::new(JwtGuard {
            claims,
            keys,
            events: context.events.clone(),
        }))
    }
}

fn location_of(
    text: &str,
    context: &ComponentContext<'_>,
    path: &str,
) -> Result<Location, BuildError> {
    if text.starts_with("http://") || text.starts_with("https://") {
        let uri: http::Uri = text
            .parse()
            .map_err(|error| BuildError::at(path, format!("`{text}`: {error}")))?;
        Ok(Location::Url(uri))
    } else if let Some(rest) = text.strip_prefix("file://") {
        Ok(Location::File(context.resolve_path(rest)))
    } else if text.contains("://") {
        Err(BuildError::at(
            path,
            format!("`{text}`: only http, https and file locations are supported"),
        ))
    } else {
        Ok(Location::File(context.resolve_path(text)))
    }
}

/// A built `jwt` guard.
pub struct JwtGuard {
    claims: Claims,
    keys: Arc<KeySet>,
    events: Events,
}

impl JwtGuard {
    /// A guard over fixed keys (tests, embedding).
    pub fn new(claims: Claims, keys: KeyMap, events: Events) -> Self {
        Self {
            claims,
            keys: KeySet::fixed(keys),
            events,
        }
    }

    /// Verifies `token` at `now`.
    pub fn authorize(&self, token: &str, now: SystemTime) -> Result<verify::JwtSession, Rejection> {
        let header = verify::header(token)?;
        let kid = header.kid.as_deref().ok_or(Rejection::MissingKeyId)?;
        let Some(key) = self.keys.get(kid) else {
            self.keys.unknown_kid();
            return Err(Rejection::UnknownKey(kid.to_owned()));
        };
        self.claims.verify(token, &header, &key, now)
    }
}

impl Guard for JwtGuard {
    fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
        match self.authorize(credentials, SystemTime::now()) {
            Ok(session) => Some(verify::shared(session)),
            Err(rejection) => {
                self.events.emit_with(AUTHORIZATION_FAILED, 0, || {
                    format!("AUTHORIZATION_FAILED - {rejection}")
                });
                None
            }
        }
    }
}
