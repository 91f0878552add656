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
    /// Request validation: the first entry whose `path`, `method` and `content-type` match a
    /// request checks its headers, path and query parameters and body with models; a request
    /// they reject is answered `400` before it reaches the exit.
    pub requests: Option<Vec<HttpRequestConfig>>,
}

/// `options` of an http `client`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpClientOptions {
    /// The HTTP versions the client may speak (default both). `h2` alone means HTTP/2 with
    /// prior knowledge over cleartext; with both, HTTP/2 is used when TLS negotiates it.
    pub versions: Option<Vec<HttpVersion>>,
    /// Credentials to inject from a guard. Refused at load: not supported yet.
    #[schemars(extend("maxProperties" = 1))]
    #[schemars(extend("x-unsupported" = "injecting guard credentials into client requests is not supported yet"))]
    pub authorization: Option<BTreeMap<String, AuthorizationConfig>>,
    /// Request headers set (or replaced) on every request sent, by name. Pseudo-headers
    /// `:method`, `:scheme`, `:authority` and `:path` are allowed.
    pub overrides: Option<BTreeMap<String, String>>,
    /// Response validation with models: each entry's `responses` (see [`crate::requests`]).
    pub requests: Option<Vec<HttpRequestConfig>>,
}

/// One entry of `requests`: which requests it applies to, and the models that check them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["headers"]},
    {"required": ["params"]},
    {"required": ["content"]},
    {"required": ["responses"]},
]))]
pub struct HttpRequestConfig {
    /// The request path, with `{name}` standing for a path parameter (one or more characters).
    /// A trailing `/` and a query string are allowed after it.
    pub path: String,
    /// The method; any when absent.
    pub method: Option<HttpMethod>,
    /// The `content-type` values it applies to; any when absent. A request without
    /// `content-type` matches too.
    #[serde(rename = "content-type")]
    pub content_type: Option<Vec<String>>,
    /// Models for request header values, by header name.
    #[schemars(extend("propertyNames" = {"pattern": "^[a-zA-Z]+[a-zA-Z0-9\\._\\-]*$"}))]
    pub headers: Option<BTreeMap<String, ModelReference>>,
    /// Models for path and query parameters.
    pub params: Option<HttpParamsConfig>,
    /// The model for the request body.
    pub content: Option<ModelReference>,
    /// Responses, by status and content type: a client validates them; a server checks
    /// their models at load only, as Zilla's does.
    pub responses: Option<Vec<HttpResponseConfig>>,
}

/// `requests[].params`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpParamsConfig {
    /// Models for the `{name}` parameters of `path`, by name.
    #[schemars(extend("propertyNames" = {"pattern": "^[a-zA-Z]+[a-zA-Z0-9\\._\\-]*$"}))]
    pub path: Option<BTreeMap<String, ModelReference>>,
    /// Models for query parameter values, by name.
    #[schemars(extend("propertyNames" = {"pattern": "^[a-zA-Z]+[a-zA-Z0-9\\._\\-]*$"}))]
    pub query: Option<BTreeMap<String, ModelReference>>,
}

/// `requests[].responses[]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["content"]}, {"required": ["headers"]}]))]
pub struct HttpResponseConfig {
    /// The status or statuses it applies to.
    pub status: Option<HttpStatuses>,
    /// The `content-type` values it applies to.
    #[serde(rename = "content-type")]
    pub content_type: Option<Vec<String>>,
    /// Models for response header values, by header name.
    #[schemars(extend("propertyNames" = {"pattern": "^[a-zA-Z]+[a-zA-Z0-9\\._\\-]*$"}))]
    pub headers: Option<BTreeMap<String, ModelReference>>,
    /// The model for the response body.
    pub content: Option<ModelReference>,
}

/// One status or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a status code or a list of them")]
pub enum HttpStatuses {
    /// One status.
    One(u16),
    /// Several.
    Many(Vec<u16>),
}

/// A request method, as `requests[].method` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `PUT`.
    Put,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// `HEAD`.
    Head,
    /// `PATCH`.
    Patch,
    /// `TRACE`.
    Trace,
}

impl HttpMethod {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Put => "PUT",
            HttpMethod::Post => "POST",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Head => "HEAD",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Trace => "TRACE",
        }
    }
}

/// A model reference: a model type name such as `json`, or an object
/// `{model: json, catalog: {...}, ...}` whose other keys depend on the model.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct ModelReference(pub serde_json::Value);

impl JsonSchema for ModelReference {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ModelReference".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A model: a type name such as `json`, or `{model: json, catalog: {...}}`.",
            "oneOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {"model": {"type": "string"}},
                    "required": ["model"],
                },
            ],
        })
    }
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

impl AccessControlConfig {
    /// The first key that only a `cross-origin` policy reads, when the policy is
    /// `same-origin` (as Zilla's schema, which allows them only with `cross-origin`).
    pub fn cross_origin_key_without_the_policy(&self) -> Option<&'static str> {
        if self.policy == Some(Policy::CrossOrigin) {
            return None;
        }
        [
            ("allow", self.allow.is_some()),
            ("max-age", self.max_age.is_some()),
            ("expose", self.expose.is_some()),
        ]
        .into_iter()
        .find_map(|(key, given)| given.then_some(key))
    }
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
    fn requests_in_zilla_spelling() {
        let options: HttpServerOptions = serde_json::from_value(serde_json::json!({
            "requests": [{
                "path": "/items/{id}",
                "method": "POST",
                "content-type": ["application/json"],
                "headers": {"x-count": "int32"},
                "params": {"path": {"id": "string"}, "query": {"limit": {"model": "int32"}}},
                "content": {"model": "json", "catalog": {"catalog0": [{"subject": "items"}]}},
                "responses": [
                    {"status": 200, "content-type": ["application/json"], "content": "json"},
                    {"status": [400, 404], "headers": {"x-reason": "string"}}
                ]
            }]
        }))
        .unwrap();
        let request = &options.requests.unwrap()[0];
        assert_eq!(request.method, Some(HttpMethod::Post));
        assert_eq!(
            request.content_type.as_deref(),
            Some(&["application/json".to_owned()][..])
        );
        assert_eq!(request.content.as_ref().unwrap().0["model"], "json");
        let responses = request.responses.as_ref().unwrap();
        assert!(matches!(responses[1].status, Some(HttpStatuses::Many(ref s)) if s == &[400, 404]));

        let schema = serde_json::Value::from(schemars::schema_for!(HttpServerOptions));
        let validator = jsonschema::validator_for(&schema).unwrap();
        let valid = |requests: serde_json::Value| {
            validator.is_valid(&serde_json::json!({"requests": requests}))
        };
        assert!(valid(
            serde_json::json!([{"path": "/a", "content": "json"}])
        ));
        assert!(valid(
            serde_json::json!([{"path": "/a", "content": {"model": "json"}}])
        ));
        assert!(
            !valid(serde_json::json!([{"path": "/a", "method": "POST"}])),
            "nothing to check"
        );
        assert!(!valid(serde_json::json!([{"content": "json"}])), "no path");
        assert!(!valid(
            serde_json::json!([{"path": "/a", "method": "FETCH", "content": "json"}])
        ));
        assert!(!valid(
            serde_json::json!([{"path": "/a", "content": {"catalog": {}}}])
        ));
        assert!(!valid(
            serde_json::json!([{"path": "/a", "content": "json", "body": "json"}])
        ));
        assert!(!valid(
            serde_json::json!([{"path": "/a", "responses": [{"status": 200}]}])
        ));
    }

    #[test]
    fn schema_limits_authorization_to_one_guard() {
        let schema = serde_json::Value::from(schemars::schema_for!(HttpServerOptions));
        let text = schema.to_string();
        assert!(text.contains("\"maxProperties\":1"), "{text}");
        assert!(text.contains("access-control"));
    }
}
