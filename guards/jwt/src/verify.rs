//! Token verification: the key by `kid`, `alg` equal to the key's, the signature, then the
//! claims as Zilla checks them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use zilla_engine::guard::GuardSession;

/// How far `nbf` may be in the future: the issuer's clock may run a little ahead of ours. `exp`
/// gets no leeway, since a session accepted after its expiry would end at once.
pub const NOT_BEFORE_LEEWAY: Duration = Duration::from_secs(5);

/// A verification key: the algorithm it is for and the key itself.
#[derive(Clone)]
pub struct VerificationKey {
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("no key `{0}`")]
    UnknownKey(String),
    #[error("token has no `kid`")]
    MissingKeyId,
    #[error("alg {token} does not match the key's {key}")]
    AlgorithmMismatch { token: String, key: String },
    #[error("bad signature")]
    BadSignature,
    #[error("token is expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("invalid issuer")]
    Issuer,
    #[error("invalid audience")]
    Audience,
    #[error("identity claim `{0}` is not a string")]
    Identity(String),
}

/// The claim checks of one guard.
#[derive(Debug, Clone)]
pub struct Claims {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub roles: String,
    pub identity: String,
    pub attributes: BTreeMap<String, String>,
    pub challenge: Option<Duration>,
}

/// The header fields keys are chosen by.
pub struct TokenHeader {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
}

/// The token's header, or why it cannot be read.
pub fn header(token: &str) -> Result<TokenHeader, Rejection> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| Rejection::Malformed(e.to_string()))?;
    Ok(TokenHeader {
        kid: header.kid,
        algorithm: header.alg,
    })
}

impl Claims {
    /// Verifies `token`, signed with `key`, against these checks at `now`.
    pub fn verify(
        &self,
        token: &str,
        header: &TokenHeader,
        key: &VerificationKey,
        now: SystemTime,
    ) -> Result<JwtSession, Rejection> {
        if header.algorithm != key.algorithm {
            return Err(Rejection::AlgorithmMismatch {
                token: format!("{:?}", header.algorithm),
                key: format!("{:?}", key.algorithm),
            });
        }
        let mut validation = Validation::new(key.algorithm);
        // Claims are checked below, as Zilla checks them (no claim is required).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => Rejection::BadSignature,
                    _ => Rejection::Malformed(e.to_string()),
                }
            })?;
        self.check(&data.claims, now)
    }

    /// The claim checks alone (the signature is verified).
    pub fn check(&self, claims: &Value, now: SystemTime) -> Result<JwtSession, Rejection> {
        let Value::Object(object) = claims else {
            return Err(Rejection::Malformed("claims are not an object".into()));
        };
        let identity = match object.get(&self.identity) {
            None | Some(Value::Null) => None,
            Some(Value::String(identity)) => Some(identity.clone()),
            Some(_) => return Err(Rejection::Identity(self.identity.clone())),
        };
        let not_before = numeric_date(object.get("nbf"))?;
        let expires_at = numeric_date(object.get("exp"))?;
        if not_before.is_some_and(|nbf| now + NOT_BEFORE_LEEWAY < nbf) {
            return Err(Rejection::NotYetValid);
        }
        if expires_at.is_some_and(|exp| now > exp) {
            return Err(Rejection::Expired);
        }
        if let Some(issuer) = &self.issuer
            && object.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(Rejection::Issuer);
        }
        if let Some(audience) = &self.audience {
            let holds = match object.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
                _ => false,
            };
            if !holds {
                return Err(Rejection::Audience);
            }
        }
        let roles = match claim(claims, &self.roles) {
            None | Some(Value::Null) => None,
            Some(Value::Array(roles)) => Some(roles.iter().map(text).collect()),
            Some(value) => Some(text(value).split_whitespace().map(str::to_owned).collect()),
        };
        let attributes = self
            .attributes
            .iter()
            .filter_map(|(name, path)| match claim(claims, path) {
                None | Some(Value::Null) => None,
                Some(value) => Some((name.clone(), text(value))),
            })
            .collect();
        let expiring_at = expires_at.map(|exp| match self.challenge {
            Some(challenge) => exp.checked_sub(challenge).unwrap_or(UNIX_EPOCH),
            None => exp,
        });
        Ok(JwtSession {
            identity,
            roles,
            attributes,
            expires_at,
            expiring_at,
        })
    }
}

/// A NumericDate claim (seconds since the epoch, possibly fractional).
fn numeric_date(value: Option<&Value>) -> Result<Option<SystemTime>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => {
            let seconds = number
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
                .ok_or_else(|| Rejection::Malformed(format!("bad date {number}")))?;
            Ok(Some(UNIX_EPOCH + Duration::from_secs_f64(seconds)))
        }
        Some(other) => Err(Rejection::Malformed(format!("bad date {other}"))),
    }
}

/// The value at a dotted claim path.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(claims, |value, part| value.as_object()?.get(part))
}

/// A claim value as text: strings as they are, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// An authorized token.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSession {
    pub identity: Option<String>,
    /// `None` when the token has no roles claim: then no `guarded` route admits it.
    pub roles: Option<Vec<String>>,
    pub attributes: BTreeMap<String, String>,
    pub expires_at: Option<SystemTime>,
    pub expiring_at: Option<SystemTime>,
}

impl GuardSession for JwtSession {
    fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    fn verify(&self, roles: &[String]) -> bool {
        self.roles
            .as_ref()
            .is_some_and(|held| roles.iter().all(|role| held.contains(role)))
    }

    fn attribute(&self, name: &str) -> Option<String> {
        self.attributes.get(name).cloned()
    }

    fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    fn roles(&self) -> Vec<String> {
        self.roles.clone().unwrap_or_default()
    }

    fn expiring_at(&self) -> Option<SystemTime> {
        self.expiring_at
    }
}

/// Shares a session with the engine.
pub fn shared(session: JwtSession) -> Arc<dyn GuardSession> {
    Arc::new(session)
}
