//! Typed options, route conditions and route parameters of the http binding, spelled as in
//! Zilla's `zilla.yaml`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of an http `server`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpServerOptions {
    /// The HTTP versions served (default both): `http/1.1` and `h2` (HTTP/2 by ALPN or with
    /// prior knowledge over cleartext).
    pub versions: Option<Vec<HttpVersion>>,
    /// Cross-origin resource sharing (CORS) policy; `same-origin` by default.
    #[serde(rename = "access-control")]
    pub access_control: Option<AccessControlConfig>,
    /// The guard that authorizes requests (at most one), and where requests carry the
    /// credentials it checks.
    #[schemars(extend("maxProperties" = 1))]
    pub authorization: Option<BTreeMap<String, AuthorizationConfig>>,
    /// Request headers set (or replaced) on every routed request, by name. Pseudo-headers
    /// `:method`, `:scheme`, `:authority` and `:path` are allowed.
    pub overrides: Option<BTreeMap<String, String>>,
    /// Request validation with models (accepted by the schema; not supported by this build).
    pub requests: Option<Vec<serde_json::Value>>,
}

/// `options` of an http `client`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpClientOptions {
    /// The HTTP versions the client may speak (default both). `h2` alone means HTTP/2 with
    /// prior knowledge over cleartext; with both, HTTP/2 is used when TLS negotiates it.
    pub versions: Option<Vec<HttpVersion>>,
    /// Credentials to inject from a guard (accepted by the schema; not supported by this
    /// build).
    #[schemars(extend("maxProperties" = 1))]
    pub authorization: Option<BTreeMap<String, AuthorizationConfig>>,
    /// Request headers set (or replaced) on every request sent, by name. Pseudo-headers
    /// `:method`, `:scheme`, `:authority` and `:path` are allowed.
    pub overrides: Option<BTreeMap<String, String>>,
    /// Response validation with models (accepted by the schema; not supported by this build).
    pub requests: Option<Vec<serde_json::Value>>,
}

/// An HTTP version, as named in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum HttpVersion {
    /// HTTP/1.1 (and HTTP/1.0 requests).
    #[serde(rename = "http/1.1")]
    Http11,
    /// HTTP/2.
    #[serde(rename = "h2")]
    H2,
}

/// `access-control`: the CORS policy.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessControlConfig {
    /// `same-origin` (the default) rejects requests whose `Origin` is another origin;
    /// `cross-origin` allows the origins, methods and headers under `allow`.
    pub policy: Option<Policy>,
    /// What cross-origin requests may use; everything when absent.
    pub allow: Option<AllowConfig>,
    /// How long, in seconds, browsers may cache a preflight answer.
    #[serde(rename = "max-age")]
    pub max_age: Option<u64>,
    /// Which response headers cross-origin scripts may read.
    pub expose: Option<ExposeConfig>,
}

/// A CORS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Policy {
    /// Only requests from the gateway's own origin (or with no `Origin`).
    #[serde(rename = "same-origin")]
    SameOrigin,
    /// Requests from the allowed origins too.
    #[serde(rename = "cross-origin")]
    CrossOrigin,
}

/// `access-control.allow`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// Allowed origins such as `https://example.com:9090`; any when absent.
    pub origins: Option<Vec<String>>,
    /// Allowed methods; any when absent.
    pub methods: Option<Vec<String>>,
    /// Allowed request headers (case-insensitive); any when absent.
    pub headers: Option<Vec<String>>,
    /// Whether requests may carry credentials (cookies, authorization).
    pub credentials: Option<bool>,
}

/// `access-control.expose`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposeConfig {
    /// The response headers to expose; all non-safelisted ones when absent.
    pub headers: Option<Vec<String>>,
}

/// One guard's entry under `authorization`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// Where requests carry credentials.
    pub credentials: CredentialsConfig,
}

/// `authorization.<guard>.credentials`: patterns with a `{credentials}` placeholder (or, for
/// a `Basic` header, `{username}` and `{password}`), by header, query parameter or cookie
/// name. The first one found is used: cookies, then headers, then query parameters.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// By header name, e.g. `authorization: Bearer {credentials}`.
    pub headers: Option<BTreeMap<String, String>>,
    /// By query parameter name, e.g. `access_token: "{credentials}"`.
    pub query: Option<BTreeMap<String, String>>,
    /// By cookie name, e.g. `access_token: "{credentials}"`.
    pub cookies: Option<BTreeMap<String, String>>,
}

/// A route condition of an http binding: every listed header must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCondition {
    /// Header patterns by name, including `:method`, `:scheme`, `:authority` and `:path`.
    /// `*` matches any text and `{name}` captures one or more characters (within one path
    /// segment for `:path`). A `:path` pattern also matches a request with a query string.
    pub headers: Option<BTreeMap<String, String>>,
}

/// `with` of an http route.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpWith {
    /// Headers to change on the routed request.
    pub headers: Option<HttpWithHeaders>,
}

/// `with.headers`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpWithHeaders {
    /// Headers set (or replaced) by name; values may use `${params.<name>}` captured by the
    /// route's `when` and `${guarded['<guard>'].identity}`.
    pub overrides: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zilla_option_spelling() {
        let options: HttpServerOptions = serde_json::from_value(serde_json::json!({
            "versions": ["http/1.1", "h2"],
            "access-control": {
                "policy": "cross-origin",
                "allow": {"origins": ["https://example.net:9090"], "credentials": true},
                "max-age": 10,
                "expose": {"headers": ["x-custom"]}
            },
            "authorization": {
                "jwt0": {"credentials": {"headers": {"authorization": "Bearer {credentials}"}}}
            },
            "overrides": {"x-a": "b"}
        }))
        .unwrap();
        assert_eq!(
            options.versions,
            Some(vec![HttpVersion::Http11, HttpVersion::H2])
        );
        let access = options.access_control.unwrap();
        assert_eq!(access.policy, Some(Policy::CrossOrigin));
        assert_eq!(access.max_age, Some(10));
        assert!(
            serde_json::from_value::<HttpServerOptions>(serde_json::json!({"version": []}))
                .is_err()
        );
    }

    #[test]
    fn schema_limits_authorization_to_one_guard() {
        let schema = serde_json::Value::from(schemars::schema_for!(HttpServerOptions));
        let text = schema.to_string();
        assert!(text.contains("\"maxProperties\":1"), "{text}");
        assert!(text.contains("access-control"));
    }
}
