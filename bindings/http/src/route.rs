//! Routing an exchange: `when.headers` patterns (pseudo-headers included), `guarded` roles
//! (which may name `${method}` and `${path}`), and the header overrides a route applies.

use std::collections::BTreeMap;

use http::header::{HOST, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use zilla_engine::binding::BuildError;
use zilla_engine::config::model::BindingConfig;
use zilla_engine::expr::{Expression, ExpressionContext, RouteScope};
use zilla_engine::guard::Authorization;
use zilla_engine::pattern::{Captures, Pattern};
use zilla_engine::route::{Route, Routes};

use crate::config::{HttpCondition, HttpWith};
use crate::kind::{pseudo_header, stream_info};

/// A compiled `when` entry: every header must match.
#[derive(Debug, Clone)]
pub struct Condition {
    headers: Vec<(String, Pattern)>,
}

impl Condition {
    /// Compiles a raw condition.
    pub fn compile(raw: HttpCondition) -> Result<Self, String> {
        let mut headers = Vec::new();
        for (name, pattern) in raw.headers.into_iter().flatten() {
            let name = name.to_ascii_lowercase();
            check_header_name(&name)?;
            let separator = (name == ":path").then_some('/');
            headers.push((name, Pattern::compile(&pattern, separator)?));
        }
        Ok(Self { headers })
    }

    /// The captures if every header of `request` matches.
    pub fn matches<B>(&self, request: &http::Request<B>) -> Option<Captures> {
        let mut captures = Captures::new();
        for (name, pattern) in &self.headers {
            if name == ":path" {
                // Match the path alone first, so `{id}` does not swallow the query string.
                let path = request.uri().path();
                let found = pattern.captures(path).or_else(|| {
                    let full = pseudo_header(request, ":path")?;
                    pattern.captures(&full)
                })?;
                captures.extend(found);
            } else {
                let value = pseudo_header(request, name)?;
                captures.extend(pattern.captures(&value)?);
            }
        }
        Some(captures)
    }
}

fn check_header_name(name: &str) -> Result<(), String> {
    if name.starts_with(':') {
        if [":method", ":scheme", ":authority", ":path"].contains(&name) {
            return Ok(());
        }
        return Err(format!(
            "unknown pseudo-header `{name}`; expected :method, :scheme, :authority or :path"
        ));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("`{name}` is not a header name"))
}

/// Where an override writes.
#[derive(Debug, Clone)]
enum Target {
    Method,
    Scheme,
    Authority,
    Path,
    Header(HeaderName),
}

/// Header overrides, in order; later ones win.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    entries: Vec<(Target, Expression, Option<Literal>)>,
}

/// A literal `:authority` or header override, parsed once at load: applying it then costs a
/// reference count, not a parse and copies per request. (A literal that does not parse is left
/// to fail per request, as any value does.)
#[derive(Debug, Clone)]
enum Literal {
    Authority(Authority, HeaderValue),
    Header(HeaderValue),
}

impl Literal {
    fn of(target: &Target, expression: &Expression) -> Option<Self> {
        let value = expression.as_literal()?;
        match target {
            Target::Authority => {
                let authority: Authority = value.parse().ok()?;
                let host = HeaderValue::from_str(authority.as_str()).ok()?;
                Some(Self::Authority(authority, host))
            }
            Target::Header(_) => HeaderValue::from_str(value).ok().map(Self::Header),
            _ => None,
        }
    }
}

impl Overrides {
    /// Compiles `overrides` (values may use `${params.x}` and `${guarded['g'].identity}`).
    pub fn compile(overrides: Option<&BTreeMap<String, String>>) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (name, value) in overrides.into_iter().flatten() {
            let lower = name.to_ascii_lowercase();
            check_header_name(&lower)?;
            let target = match lower.as_str() {
                ":method" => Target::Method,
                ":scheme" => Target::Scheme,
                ":authority" => Target::Authority,
                ":path" => Target::Path,
                _ => Target::Header(
                    HeaderName::from_bytes(lower.as_bytes()).map_err(|e| e.to_string())?,
                ),
            };
            let expression = Expression::compile(value, &[])?;
            let literal = Literal::of(&target, &expression);
            entries.push((target, expression, literal));
        }
        Ok(Self { entries })
    }

    /// These overrides followed by `later`'s.
    pub fn then(&self, later: &Overrides) -> Overrides {
        let mut entries = self.entries.clone();
        entries.extend(later.entries.iter().cloned());
        Overrides { entries }
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether every value is a literal, parsed at load: none reads the request's context
    /// (captures, `${guarded[...]}`).
    fn all_literal(&self) -> bool {
        self.entries.iter().all(|(_, _, literal)| literal.is_some())
    }

    /// Applies the overrides to `request`. A value whose expression has no value in
    /// `context` (a parameter the route did not capture) leaves that header alone.
    pub fn apply<B>(
        &self,
        request: &mut http::Request<B>,
        context: &dyn ExpressionContext,
    ) -> Result<(), String> {
        self.apply_with(request, context, HostField::Written)
    }

    /// [`apply`](Self::apply) for a request about to leave for its origin, whose leg takes
    /// the authority from the URI and drops the `host` field: an `:authority` override
    /// changes only the URI, sparing a `host` value written only to be removed.
    pub fn apply_to_origin<B>(
        &self,
        request: &mut http::Request<B>,
        context: &dyn ExpressionContext,
    ) -> Result<(), String> {
        self.apply_with(request, context, HostField::Dropped)
    }

    fn apply_with<B>(
        &self,
        request: &mut http::Request<B>,
        context: &dyn ExpressionContext,
        host_field: HostField,
    ) -> Result<(), String> {
        for (target, expression, literal) in &self.entries {
            match (target, literal) {
                (Target::Authority, Some(Literal::Authority(authority, host))) => {
                    set_authority(request, authority.clone(), host_field, || Ok(host.clone()))?;
                    continue;
                }
                (Target::Header(name), Some(Literal::Header(value))) => {
                    request.headers_mut().insert(name.clone(), value.clone());
                    continue;
                }
                _ => {}
            }
            let Some(value) = expression.evaluate(context) else {
                continue;
            };
            match target {
                Target::Method => {
                    *request.method_mut() = value
                        .parse()
                        .map_err(|_| format!("`{value}` is not a method"))?;
                }
                Target::Scheme => {
                    let scheme: Scheme = value
                        .parse()
                        .map_err(|_| format!("`{value}` is not a scheme"))?;
                    let authority = match request.uri().authority() {
                        Some(authority) => Some(authority.clone()),
                        None => pseudo_header(request, ":authority")
                            .and_then(|authority| authority.parse::<Authority>().ok()),
                    };
                    set_uri(request, Some(scheme), authority, None)?;
                }
                Target::Authority => {
                    let authority: Authority = value
                        .parse()
                        .map_err(|_| format!("`{value}` is not an authority"))?;
                    let host = authority.clone();
                    set_authority(request, authority, host_field, || {
                        HeaderValue::from_str(host.as_str()).map_err(|e| e.to_string())
                    })?;
                }
                Target::Path => {
                    let path: PathAndQuery = value
                        .parse()
                        .map_err(|_| format!("`{value}` is not a path"))?;
                    set_uri(request, None, None, Some(path))?;
                }
                Target::Header(name) => {
                    let value = HeaderValue::from_str(&value)
                        .map_err(|_| format!("`{value}` is not a header value"))?;
                    request.headers_mut().insert(name.clone(), value);
                }
            }
        }
        Ok(())
    }
}

/// Whether an `:authority` override writes the `host` field as well as the URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostField {
    /// For the next binding, which may read `host`.
    Written,
    /// For the origin leg, which writes `host` from the URI and drops the field.
    Dropped,
}

/// Sets the request's authority in its URI and, with [`HostField::Written`], as `host` when
/// the request has one or no authority in its URI.
fn set_authority<B>(
    request: &mut http::Request<B>,
    authority: Authority,
    host_field: HostField,
    host: impl FnOnce() -> Result<HeaderValue, String>,
) -> Result<(), String> {
    if host_field == HostField::Written
        && (request.headers().contains_key(HOST) || request.uri().authority().is_none())
    {
        request.headers_mut().insert(HOST, host()?);
    }
    // The URI carries the authority too, already parsed, so what reads it next (the http
    // client) need not parse the `host` field again; a URI in origin form gets the scheme
    // the request came with, the one `:scheme` reads.
    let scheme = request.uri().scheme().is_none().then(|| {
        if stream_info(request).is_some_and(|info| info.secure) {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    });
    set_uri(request, scheme, Some(authority), None)
}

fn set_uri<B>(
    request: &mut http::Request<B>,
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    path: Option<PathAndQuery>,
) -> Result<(), String> {
    // Taken, not cloned: the URI is rebuilt from its parts either way.
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    if let Some(scheme) = scheme {
        parts.scheme = Some(scheme);
    }
    if let Some(authority) = authority {
        parts.authority = Some(authority);
    }
    if let Some(path) = path {
        parts.path_and_query = Some(path);
    } else if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = Uri::from_parts(parts).map_err(|error| error.to_string())?;
    Ok(())
}

/// Why no route took an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No route's conditions match: 404.
    NoRoute,
    /// A route's conditions match but its guards refuse: 401 without credentials, else 403.
    Guarded,
}

/// A route that took an exchange.
#[derive(Debug)]
pub struct Routed<'a, E> {
    /// The exit.
    pub exit: &'a E,
    /// The overrides to apply (binding and route).
    pub overrides: &'a Overrides,
    /// What the matching condition captured.
    pub captures: Captures,
}

/// The routes of one http binding, with the overrides each applies.
#[derive(Debug)]
pub struct Router<E> {
    routes: Routes<Condition, HttpWith, E>,
    /// Binding overrides followed by each route's, by route position.
    overrides: Vec<Overrides>,
    /// Whether a route's `guarded` roles hold an expression (`${method}`, `${path}`), by route
    /// position: found once here rather than on every guarded request.
    templated_roles: Vec<bool>,
    /// Whether a route is `guarded` or an override's value is an expression, found once here.
    reads_authorization: bool,
    namespace: String,
}

impl<E> Router<E> {
    /// Compiles the routes of `config`, `binding` being the binding-level overrides.
    pub fn build(
        config: &BindingConfig,
        exit: impl Fn(&str) -> Result<E, BuildError>,
        binding: &Overrides,
    ) -> Result<Self, BuildError> {
        let routes: Routes<Condition, HttpWith, E> =
            Routes::build(config, exit, Condition::compile)?;
        let mut overrides = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let own = route
                .with
                .as_ref()
                .and_then(|with| with.headers.as_ref())
                .and_then(|headers| headers.overrides.as_ref());
            let own = Overrides::compile(own).map_err(|message| {
                BuildError::at(format!("routes[{index}].with.headers.overrides"), message)
            })?;
            overrides.push(binding.then(&own));
        }
        let templated_roles = routes
            .iter()
            .map(|route| {
                route
                    .guarded
                    .iter()
                    .any(|(_, roles)| roles.iter().any(|role| role.contains("${")))
            })
            .collect();
        let reads_authorization = routes.iter().any(|route| !route.guarded.is_empty())
            || overrides.iter().any(|overrides| !overrides.all_literal());
        Ok(Self {
            routes,
            overrides,
            templated_roles,
            reads_authorization,
            namespace: config.namespace.clone(),
        })
    }

    /// Whether there is no route at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether resolving a request or applying its overrides may read its authorization: a
    /// route is `guarded`, or an override's value is an expression.
    pub fn reads_authorization(&self) -> bool {
        self.reads_authorization
    }

    /// The first route whose conditions match `request` and whose guards authorize it.
    pub fn resolve<B>(
        &self,
        request: &http::Request<B>,
        authorization: Option<&Authorization>,
    ) -> Result<Routed<'_, E>, Miss> {
        let mut miss = Miss::NoRoute;
        for (index, route) in self.routes.iter().enumerate() {
            let captures = if route.when.is_empty() {
                Some(Captures::new())
            } else {
                route.when.iter().find_map(|when| when.matches(request))
            };
            let Some(captures) = captures else {
                continue;
            };
            if !authorized(route, self.templated_roles[index], request, authorization) {
                miss = Miss::Guarded;
                continue;
            }
            let overrides = &self.overrides[index];
            return Ok(Routed {
                exit: &route.exit,
                overrides,
                captures,
            });
        }
        Err(miss)
    }

    /// What override expressions are evaluated against.
    pub fn context<'a>(
        &'a self,
        captures: &'a Captures,
        authorization: Option<&'a Authorization>,
    ) -> RouteScope<'a> {
        RouteScope {
            captures,
            authorization,
            namespace: &self.namespace,
        }
    }
}

/// Whether `authorization` holds the route's roles; `${method}` and `${path}` in a role
/// stand for the request's (`templated`: some role of the route names one).
fn authorized<C, W, E, B>(
    route: &Route<C, W, E>,
    templated: bool,
    request: &http::Request<B>,
    authorization: Option<&Authorization>,
) -> bool {
    if route.guarded.is_empty() {
        return true;
    }
    route.guarded.iter().all(|(guard, roles)| {
        let Some(session) = authorization.and_then(|a| a.session(guard)) else {
            return false;
        };
        if templated && roles.iter().any(|role| role.contains("${")) {
            let method = request.method().as_str();
            let path = request.uri().path();
            let roles: Vec<String> = roles
                .iter()
                .map(|role| role.replace("${method}", method).replace("${path}", path))
                .collect();
            session.verify(&roles)
        } else {
            session.verify(roles)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::SystemTime;
    use zilla_engine::config::model::{BindingKind, Origin, RouteConfig};
    use zilla_engine::guard::GuardSession;

    fn condition(headers: &[(&str, &str)]) -> Condition {
        Condition::compile(HttpCondition {
            headers: Some(
                headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        })
        .unwrap()
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn headers_and_pseudo_headers_match() {
        let when = condition(&[(":path", "/items/{id}"), (":method", "GET"), ("X-Foo", "*")]);
        let get = request("GET", "/items/42", &[("x-foo", "anything")]);
        assert_eq!(
            when.matches(&get),
            Some(vec![("id".to_owned(), "42".to_owned())])
        );
        let with_query = request("GET", "/items/42?a=1&b=/x", &[("x-foo", "")]);
        assert_eq!(
            when.matches(&with_query),
            Some(vec![("id".to_owned(), "42".to_owned())])
        );
        assert!(
            when.matches(&request("POST", "/items/42", &[("x-foo", "a")]))
                .is_none()
        );
        assert!(when.matches(&request("GET", "/items/42", &[])).is_none());
        assert!(
            when.matches(&request("GET", "/items/4/2", &[("x-foo", "a")]))
                .is_none()
        );
        assert!(
            when.matches(&request("GET", "/items/", &[("x-foo", "a")]))
                .is_none()
        );
        let authority = condition(&[(":authority", "*.example.com:*"), (":scheme", "http")]);
        assert!(
            authority
                .matches(&request("GET", "/", &[("host", "api.example.com:8080")]))
                .is_some()
        );
        assert!(
            authority
                .matches(&request("GET", "https://api.example.com:8080/", &[]))
                .is_none()
        );
        let query = condition(&[(":path", "/search?q=*")]);
        assert!(
            query
                .matches(&request("GET", "/search?q=rust", &[]))
                .is_some()
        );
        assert!(query.matches(&request("GET", "/search", &[])).is_none());
    }

    #[test]
    fn bad_conditions_are_load_errors() {
        for (name, pattern) in [(":status", "200"), ("bad name", "x"), (":path", "/{id")] {
            let raw = HttpCondition {
                headers: Some(BTreeMap::from([(name.to_owned(), pattern.to_owned())])),
            };
            assert!(Condition::compile(raw).is_err(), "{name}");
        }
    }

    #[derive(Debug)]
    struct Roles(Vec<String>);

    impl GuardSession for Roles {
        fn identity(&self) -> Option<&str> {
            Some("alice")
        }
        fn verify(&self, roles: &[String]) -> bool {
            roles.iter().all(|role| self.0.contains(role))
        }
        fn attribute(&self, _name: &str) -> Option<String> {
            None
        }
        fn expires_at(&self) -> Option<SystemTime> {
            None
        }
    }

    /// `when`, `guarded`, `with` and `exit` of one route.
    type RouteSpec<'a> = (
        serde_json::Value,
        Vec<(&'a str, Vec<&'a str>)>,
        Option<serde_json::Value>,
        &'a str,
    );

    fn binding(routes: Vec<RouteSpec<'_>>) -> BindingConfig {
        BindingConfig {
            type_name: "http".into(),
            kind: BindingKind::Server,
            entry: None,
            vault: None,
            catalog: None,
            options: None,
            exit: None,
            routes: routes
                .into_iter()
                .map(|(when, guarded, with, exit)| RouteConfig {
                    when: vec![when],
                    guarded: guarded
                        .into_iter()
                        .map(|(g, roles)| {
                            (g.to_owned(), roles.into_iter().map(str::to_owned).collect())
                        })
                        .collect(),
                    exit: exit.into(),
                    with,
                    origin: Origin::default(),
                })
                .collect(),
            telemetry_metrics: Vec::new(),
            telemetry_attributes: Vec::new(),
            json: serde_json::json!({}),
            origin: Origin::default(),
            namespace: "ns".into(),
        }
    }

    #[test]
    fn only_guarded_routes_and_expression_overrides_read_the_authorization() {
        let literal = Overrides::compile(Some(&BTreeMap::from([
            (":authority".into(), "example.com:8080".into()),
            ("x-from".into(), "gateway".into()),
        ])))
        .unwrap();
        let reads = |guarded: Vec<(&str, Vec<&str>)>, with: Option<serde_json::Value>| {
            let config = binding(vec![(
                serde_json::json!({"headers": {":path": "/*"}}),
                guarded,
                with,
                "exit",
            )]);
            let router: Router<String> =
                Router::build(&config, |exit| Ok(exit.to_owned()), &literal).unwrap();
            router.reads_authorization()
        };
        assert!(!reads(vec![], None), "literal overrides only");
        assert!(reads(vec![("jwt0", vec!["read"])], None), "a guarded route");
        let identity = serde_json::json!({"headers": {"overrides": {
            "x-user": "${guarded['jwt0'].identity}"
        }}});
        assert!(reads(vec![], Some(identity)), "an expression override");
    }

    #[test]
    fn guarded_routes_tell_guarded_misses_apart() {
        let config = binding(vec![
            (
                serde_json::json!({"headers": {":path": "/admin/*"}}),
                vec![("jwt0", vec!["admin:${method}"])],
                None,
                "admin",
            ),
            (
                serde_json::json!({"headers": {":path": "/items/{id}"}}),
                vec![],
                Some(serde_json::json!({"headers": {"overrides": {
                    "x-item": "${params.id}",
                    "x-user": "${guarded['jwt0'].identity}",
                    ":path": "/v2/items/${params.id}"
                }}})),
                "items",
            ),
        ]);
        let binding_overrides =
            Overrides::compile(Some(&BTreeMap::from([("x-from".into(), "gateway".into())])))
                .unwrap();
        let router: Router<String> =
            Router::build(&config, |exit| Ok(exit.to_owned()), &binding_overrides).unwrap();
        let admin = request("DELETE", "/admin/x", &[]);
        assert_eq!(router.resolve(&admin, None).unwrap_err(), Miss::Guarded);
        let mut authorization = Authorization::default();
        authorization.insert("ns:jwt0", Arc::new(Roles(vec!["admin:GET".into()])));
        assert_eq!(
            router.resolve(&admin, Some(&authorization)).unwrap_err(),
            Miss::Guarded
        );
        let admin_get = request("GET", "/admin/x", &[]);
        assert_eq!(
            router
                .resolve(&admin_get, Some(&authorization))
                .unwrap()
                .exit,
            "admin"
        );
        assert_eq!(
            router
                .resolve(&request("GET", "/other", &[]), None)
                .unwrap_err(),
            Miss::NoRoute
        );

        let mut items = request("GET", "/items/7?q=1", &[("x-from", "client")]);
        let routed = router.resolve(&items, Some(&authorization)).unwrap();
        assert_eq!(routed.exit, "items");
        let overrides = routed.overrides.clone();
        let captures = routed.captures;
        let context = router.context(&captures, Some(&authorization));
        overrides.apply(&mut items, &context).unwrap();
        assert_eq!(items.headers()["x-item"], "7");
        assert_eq!(items.headers()["x-user"], "alice");
        assert_eq!(items.headers()["x-from"], "gateway");
        assert_eq!(items.uri().path(), "/v2/items/7");
    }

    /// Overrides of literal values, and a scope with nothing captured and no authorization.
    fn literal_overrides(entries: &[(&str, &str)]) -> (Overrides, RouteScope<'static>) {
        static NOTHING_CAPTURED: Captures = Vec::new();
        let entries = entries
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let overrides = Overrides::compile(Some(&entries)).unwrap();
        let scope = RouteScope {
            captures: &NOTHING_CAPTURED,
            authorization: None,
            namespace: "ns",
        };
        (overrides, scope)
    }

    #[test]
    fn pseudo_header_overrides_rewrite_the_target() {
        let (overrides, context) = literal_overrides(&[
            (":authority", "origin.test:8080"),
            (":method", "POST"),
            (":scheme", "https"),
        ]);
        let mut h1 = request("GET", "/a?b", &[("host", "gateway:80")]);
        overrides.apply(&mut h1, &context).unwrap();
        assert_eq!(h1.method(), "POST");
        assert_eq!(h1.headers()[HOST], "origin.test:8080");
        assert_eq!(pseudo_header(&h1, ":scheme").as_deref(), Some("https"));
        assert_eq!(
            pseudo_header(&h1, ":authority").as_deref(),
            Some("origin.test:8080")
        );
        assert_eq!(pseudo_header(&h1, ":path").as_deref(), Some("/a?b"));
        let mut h2 = request("GET", "http://gateway/a", &[]);
        overrides.apply(&mut h2, &context).unwrap();
        assert_eq!(h2.uri().to_string(), "https://origin.test:8080/a");
    }

    #[test]
    fn an_authority_override_for_the_origin_changes_the_uri_only() {
        let (overrides, context) = literal_overrides(&[(":authority", "origin.test:8080")]);
        let mut request = request("GET", "/a?b", &[("host", "gateway:80")]);
        overrides.apply_to_origin(&mut request, &context).unwrap();
        assert_eq!(request.uri().to_string(), "http://origin.test:8080/a?b");
        // The origin leg writes `host` from the URI; the field is left for it to drop.
        assert_eq!(request.headers()[HOST], "gateway:80");
        assert_eq!(
            pseudo_header(&request, ":authority").as_deref(),
            Some("origin.test:8080")
        );
    }
}
