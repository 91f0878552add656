//! `options` of a `jwt` guard, as Zilla's schema shapes them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of a `jwt` guard.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtOptions {
    /// The `iss` every token must carry.
    pub issuer: Option<String>,
    /// A value the token's `aud` must hold.
    pub audience: Option<String>,
    /// The claim listing the roles (a JSON array or a space-separated string); `scope` by default.
    pub roles: Option<String>,
    /// The claim naming the identity; `sub` by default.
    pub identity: Option<String>,
    /// Session attributes by name, each from the claim at a dotted path.
    pub attributes: Option<BTreeMap<String, String>>,
    /// The verification keys: an inline JWK list, or where a JWKS is (an `http(s)` URL or a
    /// file path relative to the config). Absent: `<issuer>/.well-known/jwks.json`.
    pub keys: Option<KeysConfig>,
    /// Seconds before expiry at which a subscriber is challenged for fresh credentials.
    #[schemars(range(min = 0))]
    pub challenge: Option<u64>,
}

/// `keys`: inline keys or a JWKS location.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum KeysConfig {
    /// Inline keys.
    Inline(Vec<KeyConfig>),
    /// A JWKS location.
    Location(String),
}

/// One JSON Web Key (RFC 7517) with the members Zilla reads. Other members (`x5c`, `x5t`,
/// `ext`, ...) are accepted and carry no meaning here, as in Zilla, whose schema allows them.
#[derive(Debug, Clone, Deserialize, JsonSchema, serde::Serialize)]
pub struct KeyConfig {
    /// `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// The key id tokens name in their `kid` header.
    pub kid: String,
    /// The algorithm tokens signed with this key must declare.
    pub alg: Option<String>,
    /// RSA modulus (base64url).
    pub n: Option<String>,
    /// RSA exponent (base64url).
    pub e: Option<String>,
    /// Curve: `P-256`, `P-384`, `Ed25519`.
    pub crv: Option<String>,
    /// EC / OKP x coordinate (base64url).
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    pub y: Option<String>,
    /// `sig` when given.
    #[serde(rename = "use")]
    pub usage: Option<String>,
    /// The operations the key is for: when given, it must allow `verify`.
    #[serde(default, skip_serializing)]
    pub key_ops: Option<Vec<String>>,
}
