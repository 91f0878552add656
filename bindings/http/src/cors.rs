//! Cross-origin resource sharing, as Zilla's `access-control` option configures it.
//!
//! - `same-origin` (the default): a request whose `Origin` names another origin is refused
//!   with 403; responses get no CORS headers.
//! - `cross-origin`: requests from the allowed origins pass, and responses tell the browser
//!   so (`access-control-allow-origin`, `-allow-credentials`, `-expose-headers`, `vary`).
//!   Preflight requests (`OPTIONS` with `Origin` and `Access-Control-Request-*`) are answered
//!   by the gateway itself: 204 with what is allowed, or 403.
//!
//! Lists given under `allow` (or `credentials: true`, with which browsers refuse `*`) make
//! the answers name the origin, method and headers asked for; otherwise they answer `*`.

use std::collections::HashSet;

use http::header::{HeaderMap, HeaderName, HeaderValue, ORIGIN, VARY};
use http::{Method, StatusCode};

use crate::config::{AccessControlConfig, Policy};
use crate::kind::{Response, pseudo_header, status_response};

const ALLOW_ORIGIN: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ALLOW_METHODS: HeaderName = HeaderName::from_static("access-control-allow-methods");
const ALLOW_HEADERS: HeaderName = HeaderName::from_static("access-control-allow-headers");
const ALLOW_CREDENTIALS: HeaderName = HeaderName::from_static("access-control-allow-credentials");
const EXPOSE_HEADERS: HeaderName = HeaderName::from_static("access-control-expose-headers");
const MAX_AGE: HeaderName = HeaderName::from_static("access-control-max-age");
const REQUEST_METHOD: HeaderName = HeaderName::from_static("access-control-request-method");
const REQUEST_HEADERS: HeaderName = HeaderName::from_static("access-control-request-headers");

/// Response headers browsers always let scripts read (plus `server` and `date`, which are
/// never worth exposing), so they are not listed in `access-control-expose-headers`.
const SAFELISTED: &[&str] = &[
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
    "server",
    "date",
];

/// The compiled `access-control` option.
#[derive(Debug, Clone)]
pub struct AccessControl {
    policy: Policy,
    /// Canonical `scheme://host:port` forms; `None` allows any.
    origins: Option<HashSet<String>>,
    methods: Option<Vec<String>>,
    /// Lowercase; `None` allows any.
    headers: Option<HashSet<String>>,
    credentials: bool,
    /// Whether `allow` lists origins, methods, headers (or asks for credentials): answers
    /// then name what was asked for instead of `*`.
    explicit_origin: bool,
    explicit_methods: bool,
    explicit_headers: bool,
    max_age: Option<HeaderValue>,
    /// Lowercase; `None` exposes every non-safelisted header.
    expose: Option<HashSet<String>>,
}

/// What to do with a request before routing it.
#[derive(Debug)]
pub enum Verdict {
    /// Answer with this response now (a preflight answer or a refusal).
    Answer(Response),
    /// Route the request, then add these CORS headers to its response.
    Pass(Decoration),
}

/// The CORS headers a response gets.
#[derive(Debug, Default)]
pub struct Decoration {
    allow_origin: Option<HeaderValue>,
    credentials: bool,
    expose: Option<Expose>,
}

impl Decoration {
    /// Whether [`AccessControl::decorate`] leaves a response as it is, without reading it
    /// (no CORS policy applies).
    pub fn adds_nothing(&self) -> bool {
        self.allow_origin.is_none() && !self.credentials && self.expose.is_none()
    }
}

#[derive(Debug)]
enum Expose {
    /// One `access-control-expose-headers` per exposable response header.
    Explicit,
    /// `access-control-expose-headers: *` when any header is exposable.
    Wildcard,
}

impl Default for AccessControl {
    fn default() -> Self {
        Self::compile(&AccessControlConfig::default())
    }
}

impl AccessControl {
    /// Compiles the option.
    pub fn compile(config: &AccessControlConfig) -> Self {
        let policy = config.policy.unwrap_or(Policy::SameOrigin);
        let allow = config.allow.as_ref();
        let credentials = allow.and_then(|a| a.credentials).unwrap_or(false);
        let origins = allow.and_then(|a| a.origins.as_ref()).map(|origins| {
            origins
                .iter()
                .map(|origin| canonical_origin(origin).unwrap_or_else(|| origin.clone()))
                .collect()
        });
        let methods = allow.and_then(|a| a.methods.clone());
        let headers = allow.and_then(|a| a.headers.as_ref()).map(|headers| {
            headers
                .iter()
                .map(|header| header.to_ascii_lowercase())
                .collect()
        });
        let cross = policy == Policy::CrossOrigin;
        Self {
            policy,
            explicit_origin: cross && (credentials || allow.is_some_and(|a| a.origins.is_some())),
            explicit_methods: cross && (credentials || allow.is_some_and(|a| a.methods.is_some())),
            explicit_headers: cross && (credentials || allow.is_some_and(|a| a.headers.is_some())),
            origins,
            methods,
            headers,
            credentials: cross && credentials,
            max_age: config.max_age.map(HeaderValue::from),
            expose: config
                .expose
                .as_ref()
                .and_then(|expose| expose.headers.as_ref())
                .map(|headers| headers.iter().map(|h| h.to_ascii_lowercase()).collect()),
        }
    }

    fn cross(&self) -> bool {
        self.policy == Policy::CrossOrigin
    }

    /// Decides on `request` before it is routed.
    pub fn check<B>(&self, request: &http::Request<B>) -> Verdict {
        let headers = request.headers();
        let origin = headers.get(ORIGIN);
        let Some(origin) = origin else {
            return Verdict::Pass(self.decoration(None, false));
        };
        let same_origin = is_same_origin(request, origin);
        if request.method() == Method::OPTIONS
            && (headers.contains_key(REQUEST_METHOD) || headers.contains_key(REQUEST_HEADERS))
        {
            return Verdict::Answer(self.preflight(headers, origin, same_origin));
        }
        let allowed = same_origin || (self.cross() && self.allows_origin(origin));
        if !allowed {
            return Verdict::Answer(status_response(StatusCode::FORBIDDEN));
        }
        Verdict::Pass(self.decoration(Some(origin), same_origin))
    }

    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            None => true,
            Some(origins) => origin
                .to_str()
                .ok()
                .and_then(canonical_origin)
                .is_some_and(|origin| origins.contains(&origin)),
        }
    }

    fn allows_method(&self, method: &HeaderValue) -> bool {
        match &self.methods {
            None => true,
            Some(methods) => method
                .to_str()
                .is_ok_and(|method| methods.iter().any(|m| m == method.trim())),
        }
    }

    fn allows_headers(&self, requested: &HeaderValue) -> bool {
        match &self.headers {
            None => true,
            Some(allowed) => requested.to_str().is_ok_and(|requested| {
                requested
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .all(|name| allowed.contains(&name.to_ascii_lowercase()))
            }),
        }
    }

    fn preflight(&self, headers: &HeaderMap, origin: &HeaderValue, same_origin: bool) -> Response {
        let method = headers.get(REQUEST_METHOD);
        let requested = headers.get(REQUEST_HEADERS);
        let allowed = if self.cross() {
            self.allows_origin(origin)
                && method.is_none_or(|m| self.allows_method(m))
                && requested.is_none_or(|h| self.allows_headers(h))
        } else {
            same_origin
        };
        if !allowed {
            return status_response(StatusCode::FORBIDDEN);
        }
        let mut response = status_response(StatusCode::NO_CONTENT);
        let out = response.headers_mut();
        if self.explicit_origin {
            out.insert(ALLOW_ORIGIN, origin.clone());
        } else {
            out.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        if let Some(method) = method {
            let value = if self.explicit_methods {
                method.clone()
            } else {
                HeaderValue::from_static("*")
            };
            out.insert(ALLOW_METHODS, value);
        }
        if let Some(requested) = requested {
            let value = if self.explicit_headers {
                requested.clone()
            } else {
                HeaderValue::from_static("*")
            };
            out.insert(ALLOW_HEADERS, value);
        }
        if self.credentials {
            out.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(max_age) = &self.max_age {
            out.insert(MAX_AGE, max_age.clone());
        }
        if self.explicit_origin {
            out.append(VARY, HeaderValue::from_static("Origin"));
        }
        response
    }

    fn decoration(&self, origin: Option<&HeaderValue>, same_origin: bool) -> Decoration {
        if !self.cross() {
            return Decoration::default();
        }
        let allow_origin = if same_origin {
            None
        } else {
            match origin {
                Some(origin) if self.explicit_origin => Some(origin.clone()),
                _ => Some(HeaderValue::from_static("*")),
            }
        };
        let explicit_expose = self.credentials || self.expose.is_some();
        Decoration {
            allow_origin,
            credentials: self.credentials,
            expose: Some(if explicit_expose {
                Expose::Explicit
            } else {
                Expose::Wildcard
            }),
        }
    }

    fn exposes(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        !SAFELISTED.contains(&name)
            && !name.starts_with("access-control-")
            && self
                .expose
                .as_ref()
                .is_none_or(|expose| expose.contains(name))
    }

    /// Adds the CORS headers of `decoration` to `headers` (a response's), unless the
    /// response already carries its own `access-control-allow-origin`.
    pub fn decorate(&self, decoration: &Decoration, headers: &mut HeaderMap) {
        // A decoration that adds nothing (no CORS policy applies) needs no lookup.
        if decoration.adds_nothing() || headers.contains_key(ALLOW_ORIGIN) {
            return;
        }
        match decoration.expose {
            Some(Expose::Explicit) => {
                let exposed: Vec<HeaderName> = headers
                    .keys()
                    .filter(|name| self.exposes(name))
                    .cloned()
                    .collect();
                for name in exposed {
                    if let Ok(value) = HeaderValue::from_str(name.as_str()) {
                        headers.append(EXPOSE_HEADERS, value);
                    }
                }
            }
            Some(Expose::Wildcard) if headers.keys().any(|name| self.exposes(name)) => {
                headers.insert(EXPOSE_HEADERS, HeaderValue::from_static("*"));
            }
            _ => {}
        }
        if let Some(origin) = &decoration.allow_origin {
            headers.insert(ALLOW_ORIGIN, origin.clone());
            if origin != "*" {
                headers.append(VARY, HeaderValue::from_static("Origin"));
            }
        }
        if decoration.credentials {
            headers.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
}

/// `scheme://host:port` with the default port made explicit and the host lowercased, or
/// `None` when `origin` is not an http(s) origin.
fn canonical_origin(origin: &str) -> Option<String> {
    let (scheme, authority) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = split_authority(authority, default_port)?;
    Some(format!("{scheme}://{host}:{port}"))
}

/// Host (lowercase) and port of `authority`, `default_port` when it has none.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        Some(index) if !authority[index..].contains(']') => {
            let port = authority[index + 1..].parse().ok()?;
            (&authority[..index], port)
        }
        _ => (authority, default_port),
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Whether `origin` is the origin the request was sent to (its `:scheme` and `:authority`).
fn is_same_origin<B>(request: &http::Request<B>, origin: &HeaderValue) -> bool {
    let Some(origin) = origin.to_str().ok().and_then(canonical_origin) else {
        return false;
    };
    let scheme = pseudo_header(request, ":scheme");
    let authority = pseudo_header(request, ":authority");
    match (scheme, authority) {
        (Some(scheme), Some(authority)) => {
            canonical_origin(&format!("{scheme}://{authority}")).is_some_and(|own| own == origin)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AllowConfig, ExposeConfig};

    fn request(method: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "example.com:9090");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn cross(allow: Option<AllowConfig>, expose: Option<Vec<&str>>) -> AccessControl {
        AccessControl::compile(&AccessControlConfig {
            policy: Some(Policy::CrossOrigin),
            allow,
            max_age: Some(10),
            expose: expose.map(|headers| ExposeConfig {
                headers: Some(headers.into_iter().map(str::to_owned).collect()),
            }),
        })
    }

    fn answer(verdict: Verdict) -> Response {
        match verdict {
            Verdict::Answer(response) => response,
            Verdict::Pass(_) => panic!("expected an answer"),
        }
    }

    fn decorated(access: &AccessControl, verdict: Verdict, response: &[(&str, &str)]) -> HeaderMap {
        let Verdict::Pass(decoration) = verdict else {
            panic!("expected the request to pass")
        };
        let mut headers = HeaderMap::new();
        for (name, value) in response {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        access.decorate(&decoration, &mut headers);
        headers
    }

    #[test]
    fn same_origin_refuses_other_origins_and_adds_nothing() {
        let access = AccessControl::default();
        let foreign = request("GET", &[("origin", "https://example.net:9090")]);
        assert_eq!(answer(access.check(&foreign)).status(), 403);
        let own = request("POST", &[("origin", "http://example.com:9090")]);
        assert!(decorated(&access, access.check(&own), &[]).is_empty());
        let none = request("GET", &[]);
        assert!(decorated(&access, access.check(&none), &[("x-a", "1")]).len() == 1);
        // A default port written or not is the same origin.
        let mut implicit = request("GET", &[("origin", "http://example.com")]);
        implicit
            .headers_mut()
            .insert("host", HeaderValue::from_static("example.com:80"));
        assert!(matches!(access.check(&implicit), Verdict::Pass(_)));
        let preflight = request(
            "OPTIONS",
            &[
                ("origin", "https://example.net"),
                ("access-control-request-method", "GET"),
            ],
        );
        assert_eq!(answer(access.check(&preflight)).status(), 403);
    }

    #[test]
    fn cross_origin_wildcards_without_lists() {
        let access = cross(None, None);
        let preflight = request(
            "OPTIONS",
            &[
                ("origin", "https://example.net:9090"),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", "x-api-key"),
            ],
        );
        let response = answer(access.check(&preflight));
        assert_eq!(response.status(), 204);
        let headers = response.headers();
        assert_eq!(headers[ALLOW_ORIGIN], "*");
        assert_eq!(headers[ALLOW_METHODS], "*");
        assert_eq!(headers[ALLOW_HEADERS], "*");
        assert_eq!(headers[MAX_AGE], "10");
        assert!(!headers.contains_key(ALLOW_CREDENTIALS));
        let get = request("GET", &[("origin", "https://example.net:9090")]);
        let headers = decorated(
            &access,
            access.check(&get),
            &[("content-type", "text/plain"), ("x-custom", "v")],
        );
        assert_eq!(headers[ALLOW_ORIGIN], "*");
        assert_eq!(headers[EXPOSE_HEADERS], "*");
        assert!(!headers.contains_key(VARY));
        let plain = decorated(&access, access.check(&get), &[("content-type", "a")]);
        assert!(!plain.contains_key(EXPOSE_HEADERS));
    }

    #[test]
    fn cross_origin_lists_name_what_was_asked() {
        let access = cross(
            Some(AllowConfig {
                origins: Some(vec![
                    "https://example.net:9090".into(),
                    "http://a.test".into(),
                ]),
                methods: Some(vec!["GET".into(), "DELETE".into()]),
                headers: Some(vec!["X-Api-Key".into()]),
                credentials: Some(true),
            }),
            Some(vec!["x-custom"]),
        );
        let preflight = request(
            "OPTIONS",
            &[
                ("origin", "https://example.net:9090"),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", "x-api-key"),
            ],
        );
        let response = answer(access.check(&preflight));
        assert_eq!(response.status(), 204);
        let headers = response.headers();
        assert_eq!(headers[ALLOW_ORIGIN], "https://example.net:9090");
        assert_eq!(headers[ALLOW_METHODS], "DELETE");
        assert_eq!(headers[ALLOW_HEADERS], "x-api-key");
        assert_eq!(headers[ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[VARY], "Origin");
        for (name, value) in [
            ("origin", "https://example.org"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-api-key, x-other"),
        ] {
            let mut refused = preflight.clone();
            refused.headers_mut().insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
            assert_eq!(answer(access.check(&refused)).status(), 403, "{name}");
        }
        // The default port may be left out on either side.
        let implicit = request("GET", &[("origin", "http://a.test:80")]);
        let headers = decorated(
            &access,
            access.check(&implicit),
            &[("x-custom", "1"), ("x-hidden", "2"), ("content-type", "t")],
        );
        assert_eq!(headers[ALLOW_ORIGIN], "http://a.test:80");
        assert_eq!(headers[ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[VARY], "Origin");
        let exposed: Vec<_> = headers.get_all(EXPOSE_HEADERS).iter().collect();
        assert_eq!(exposed, vec!["x-custom"]);
        let foreign = request("GET", &[("origin", "https://example.org")]);
        assert_eq!(answer(access.check(&foreign)).status(), 403);
    }

    #[test]
    fn a_response_with_its_own_cors_headers_is_left_alone() {
        let access = cross(None, None);
        let get = request("GET", &[("origin", "https://example.net")]);
        let headers = decorated(
            &access,
            access.check(&get),
            &[("access-control-allow-origin", "https://x")],
        );
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[ALLOW_ORIGIN], "https://x");
    }

    #[test]
    fn origins_are_canonical() {
        assert_eq!(
            canonical_origin("HTTPS://Example.COM").as_deref(),
            Some("https://example.com:443")
        );
        assert_eq!(
            canonical_origin("http://[::1]:8080").as_deref(),
            Some("http://[::1]:8080")
        );
        assert_eq!(
            canonical_origin("http://[::1]").as_deref(),
            Some("http://[::1]:80")
        );
        assert_eq!(canonical_origin("null"), None);
        assert_eq!(canonical_origin("ftp://x"), None);
        assert_eq!(canonical_origin("http://x/y"), None);
    }
}
