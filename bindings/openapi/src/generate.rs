//! The namespaces an openapi binding generates.
//!
//! `server` (entry `tcp_server`, which takes the composite's name):
//! - `tcp_server`: listens on the ports of the selected server URLs, on every interface as
//!   Zilla does (`0.0.0.0`; the `zilla.binding.composite.listen.host` property sets the
//!   host), exits to `http_server`;
//! - `http_server`: one route per operation (`:method` and the server's base path + the path
//!   template), each exiting where the composite's routes and `exit` send that operation and
//!   guarded by the guards bound to the operation's security schemes; `requests` checking
//!   each operation's path, query and header parameters (core models) and JSON request
//!   bodies (`json` model) against the document's schemas, answering `400` when they fail;
//! - `catalog` (inline): one subject per JSON request body schema, `<spec>.<operationId>`
//!   (`.<n>` after the first media type), with the document's `components.schemas`
//!   alongside so its `$ref`s resolve.
//!
//! `client` (entry `http_client`, which takes the composite's name): `http_client` exiting to
//! `tcp_client`, which connects to the host and port of the first selected server URL.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use zilla_composite::{CompositeContext, Generated};
use zilla_engine::BuildError;

use crate::config::{OpenapiCondition, OpenapiOptions, SpecConfig};
use crate::document::{Document, Operation};
use crate::params;

/// A spec: its name, config, where it was read from, and the document.
pub struct Spec {
    /// The key of `options.specs`.
    pub name: String,
    /// Its config.
    pub config: SpecConfig,
    /// The parsed document.
    pub document: Document,
}

/// A route of the composite (its binding-level `exit` last): conditions, guards, exit.
type CompositeRoute = (Vec<OpenapiCondition>, Vec<(String, Vec<String>)>, String);

/// One selected server URL.
struct Endpoint {
    host: String,
    port: u16,
    /// The base path without a trailing `/` (empty for none).
    base: String,
}

fn endpoints(spec: &Spec) -> Result<Vec<Endpoint>, BuildError> {
    let at = format!("options.specs.{}", spec.name);
    let selected = server_urls(&spec.config.servers, &spec.document.servers);
    if selected.is_empty() {
        return Err(BuildError::at(
            format!("{at}.servers"),
            format!(
                "selects none of the document's servers: {}",
                spec.document.servers.join(", ")
            ),
        ));
    }
    selected
        .iter()
        .map(|url| {
            let uri: http::Uri = url
                .parse()
                .map_err(|_| BuildError::at(&at, format!("server URL `{url}` is not a URL")))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(BuildError::at(
                        &at,
                        format!("server `{url}`: https servers are not supported yet"),
                    ));
                }
                _ => {
                    return Err(BuildError::at(
                        &at,
                        format!("server `{url}` has no http host to serve or call"),
                    ));
                }
            }
            Ok(Endpoint {
                host: uri.host().unwrap_or("0.0.0.0").to_owned(),
                port: uri.port_u16().unwrap_or(80),
                base: uri.path().trim_end_matches('/').to_owned(),
            })
        })
        .collect()
}

/// The base URLs a spec serves or calls. A configured URL with `*` selects the document's
/// servers it matches (older Zilla configs filter the document's servers this way); one
/// without is used as it is, whether or not the document lists it, as current Zilla does (a
/// client calling a mock at another address than the document's). Without `servers`, every
/// server of the document.
pub(crate) fn server_urls(configured: &Option<Vec<String>>, document: &[String]) -> Vec<String> {
    let Some(configured) = configured else {
        return document.to_vec();
    };
    let mut urls: Vec<String> = Vec::new();
    for entry in configured {
        let matched: Vec<&String> = if entry.contains('*') {
            document.iter().filter(|url| glob(entry, url)).collect()
        } else {
            vec![entry]
        };
        for url in matched {
            if !urls.contains(url) {
                urls.push(url.clone());
            }
        }
    }
    urls
}

/// Whether `text` matches the `*` pattern `pattern` whole.
fn glob(pattern: &str, text: &str) -> bool {
    let escaped: Vec<String> = pattern.split('*').map(regex::escape).collect();
    regex::Regex::new(&format!("^{}$", escaped.join(".*"))).is_ok_and(|regex| regex.is_match(text))
}

fn text(namespace: &Value) -> Result<String, BuildError> {
    serde_saphyr::to_string(namespace).map_err(|error| {
        BuildError::at("", format!("cannot write the generated namespace: {error}"))
    })
}

/// The `client` namespace.
pub fn client(context: &CompositeContext<'_>, specs: &[Spec]) -> Result<Generated, BuildError> {
    let Some(spec) = specs.first() else {
        return Err(BuildError::at("options.specs", "name a spec"));
    };
    if specs.len() > 1 {
        return Err(BuildError::at(
            "options.specs",
            "a client calls the servers of one spec; name one",
        ));
    }
    let endpoint = endpoints(spec)?.remove(0);
    let namespace = json!({
        "name": context.namespace(),
        "bindings": {
            "http_client": {
                "type": "http",
                "kind": "client",
                "options": {"versions": ["http/1.1"]},
                "exit": "tcp_client",
            },
            "tcp_client": {
                "type": "tcp",
                "kind": "client",
                "options": {"host": endpoint.host, "port": endpoint.port},
            },
        },
    });
    Ok(Generated {
        namespace: text(&namespace)?,
        entry: "http_client".into(),
    })
}

/// The `server` namespace.
pub fn server(
    context: &CompositeContext<'_>,
    options: &OpenapiOptions,
    specs: &[Spec],
) -> Result<Generated, BuildError> {
    let config = context.config();
    let mut ports = BTreeSet::new();
    let mut requests = Vec::new();
    let mut routes = Vec::new();
    let mut subjects = Map::new();
    let authorization = options
        .http
        .as_ref()
        .and_then(|http| http.authorization.clone());
    let composite_routes: Vec<CompositeRoute> = config
        .routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let when = route
                .when
                .iter()
                .map(|when| serde_json::from_value(when.clone()))
                .collect::<Result<Vec<OpenapiCondition>, _>>()
                .map_err(|error| {
                    BuildError::at(format!("routes[{index}].when"), error.to_string())
                })?;
            Ok((when, route.guarded.clone(), route.exit.clone()))
        })
        .chain(
            config
                .exit
                .iter()
                .map(|exit| Ok((Vec::new(), Vec::new(), exit.clone()))),
        )
        .collect::<Result<_, BuildError>>()?;
    for spec in specs {
        let endpoints = endpoints(spec)?;
        for endpoint in &endpoints {
            ports.insert(endpoint.port);
        }
        let bases: BTreeSet<&str> = endpoints.iter().map(|e| e.base.as_str()).collect();
        // Literal paths before templated ones, as OpenAPI matches them.
        let mut operations: Vec<&Operation> = spec.document.operations.iter().collect();
        operations.sort_by_key(|operation| operation.path.contains('{'));
        for operation in operations {
            twice_templated(spec, operation)?;
            let guards = security_guards(spec, operation, authorization.as_ref())?;
            let request = request_checks(spec, operation, &mut subjects)?;
            for base in &bases {
                let path = format!("{base}{}", operation.path);
                for check in &request {
                    let mut check = check.clone();
                    check["path"] = Value::String(path.clone());
                    requests.push(check);
                }
                for (when, guarded, exit) in &composite_routes {
                    if !when.is_empty() && !when.iter().any(|w| matches(w, &spec.name, operation)) {
                        continue;
                    }
                    for required in &guards {
                        // The guards live in the composite's namespace, not the generated one.
                        let mut all: BTreeMap<String, Vec<String>> = required
                            .iter()
                            .map(|(guard, roles)| (context.qualify(guard), roles.clone()))
                            .collect();
                        for (guard, roles) in guarded {
                            all.entry(context.qualify(guard))
                                .or_default()
                                .extend(roles.iter().cloned());
                        }
                        let mut route = json!({
                            "when": [{"headers": {":method": operation.method, ":path": path}}],
                            "exit": context.qualify(exit),
                        });
                        if !all.is_empty() {
                            route["guarded"] = json!(all);
                        }
                        routes.push(route);
                    }
                }
            }
        }
    }
    // An http server refuses to have no route, with a message about its own config the
    // composite's author did not write: say why none was generated instead.
    if routes.is_empty() {
        if let Some(spec) = specs
            .iter()
            .find(|spec| spec.document.operations.is_empty())
        {
            return Err(BuildError::at(
                format!("options.specs.{}", spec.name),
                spec.document.at(
                    &["paths".to_owned()],
                    "the document describes no operations for a server to serve (`webhooks` \
                     are not served)",
                ),
            ));
        }
        return Err(BuildError::at(
            "routes",
            "the routes select none of the documents' operations",
        ));
    }
    let mut http_options = Map::new();
    if let Some(authorization) = authorization {
        let qualified: Map<String, Value> = authorization
            .into_iter()
            .map(|(guard, credentials)| (context.qualify(&guard), credentials))
            .collect();
        http_options.insert("authorization".into(), Value::Object(qualified));
    }
    if !requests.is_empty() {
        http_options.insert("requests".into(), Value::Array(requests));
    }
    let ports: Vec<u16> = ports.into_iter().collect();
    let mut namespace = json!({
        "name": context.namespace(),
        "bindings": {
            "tcp_server": {
                "type": "tcp",
                "kind": "server",
                "options": {
                    "host": context.listen_host(None),
                    "port": if ports.len() == 1 { json!(ports[0]) } else { json!(ports) },
                },
                "exit": "http_server",
            },
            "http_server": {
                "type": "http",
                "kind": "server",
                "options": http_options,
                "routes": routes,
            },
        },
    });
    if !subjects.is_empty() {
        namespace["catalogs"] = json!({
            "catalog": {"type": "inline", "options": {"subjects": subjects}},
        });
    }
    Ok(Generated {
        namespace: text(&namespace)?,
        entry: "tcp_server".into(),
    })
}

/// Refuses a path template naming a parameter twice (`/a/{id}/b/{id}`): one parameter cannot
/// check two segments, and the http server would refuse the generated path, located in
/// config the composite's author did not write.
fn twice_templated(spec: &Spec, operation: &Operation) -> Result<(), BuildError> {
    let mut seen = BTreeSet::new();
    for segment in operation.path.split('{').skip(1) {
        let Some((name, _)) = segment.split_once('}') else {
            continue;
        };
        if !seen.insert(name) {
            return Err(BuildError::at(
                format!("options.specs.{}", spec.name),
                spec.document.at(
                    &["paths".to_owned(), operation.path.clone()],
                    &format!("parameter `{name}` appears twice in the path; not supported"),
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a composite route condition takes `operation` of spec `spec`.
fn matches(when: &OpenapiCondition, spec: &str, operation: &Operation) -> bool {
    when.spec.as_deref().is_none_or(|s| s == spec)
        && when
            .operation
            .as_deref()
            .is_none_or(|pattern| operation.id.as_deref().is_some_and(|id| glob(pattern, id)))
        && when
            .tag
            .as_deref()
            .is_none_or(|tag| operation.tags.iter().any(|t| t == tag))
}

/// The guard sets any of which lets a request through (one empty set when the operation is
/// open), from the operation's security requirements.
fn security_guards(
    spec: &Spec,
    operation: &Operation,
    authorization: Option<&BTreeMap<String, Value>>,
) -> Result<Vec<BTreeMap<String, Vec<String>>>, BuildError> {
    if operation.security.is_empty() {
        return Ok(vec![BTreeMap::new()]);
    }
    let at = format!("options.specs.{}", spec.name);
    let single_guard = authorization
        .filter(|guards| guards.len() == 1)
        .and_then(|guards| guards.keys().next());
    let mut alternatives = Vec::new();
    for requirement in &operation.security {
        let mut guards = BTreeMap::new();
        for (scheme, scopes) in requirement {
            let Some(kind) = spec.document.security_schemes.get(scheme) else {
                return Err(BuildError::at(
                    &at,
                    spec.document.at(
                        &security_pointer(operation),
                        &format!("security scheme `{scheme}` is not in components.securitySchemes"),
                    ),
                ));
            };
            let bound = spec
                .config
                .security
                .as_ref()
                .and_then(|security| security.get(scheme))
                .or(single_guard.filter(|_| {
                    kind.kind == "oauth2"
                        || kind.kind == "openIdConnect"
                        || (kind.kind == "http" && kind.scheme.as_deref() == Some("bearer"))
                }));
            let Some(guard) = bound else {
                return Err(BuildError::at(
                    &at,
                    spec.document.at(
                        &security_pointer(operation),
                        &format!(
                            "security scheme `{scheme}` is checked by no guard; name one in \
                             options.specs.{}.security and options.http.authorization",
                            spec.name
                        ),
                    ),
                ));
            };
            if authorization.is_none_or(|guards| !guards.contains_key(guard)) {
                return Err(BuildError::at(
                    &at,
                    format!(
                        "guard `{guard}` checks security scheme `{scheme}`, but \
                         options.http.authorization does not say where requests carry its \
                         credentials"
                    ),
                ));
            }
            guards.insert(guard.clone(), scopes.clone());
        }
        alternatives.push(guards);
    }
    Ok(alternatives)
}

/// Where an operation's security requirements are written (the document's, when the
/// operation has none, is reported at the operation).
fn security_pointer(operation: &Operation) -> Vec<String> {
    let mut pointer = operation.pointer.clone();
    pointer.push("security".into());
    pointer
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence.ends_with("+json")
}

/// The http server `requests` entries (without `path`) that check an operation.
fn request_checks(
    spec: &Spec,
    operation: &Operation,
    subjects: &mut Map<String, Value>,
) -> Result<Vec<Value>, BuildError> {
    let at = format!("options.specs.{}", spec.name);
    let mut path_params = Map::new();
    let mut query_params = Map::new();
    let mut headers = Map::new();
    for parameter in &operation.parameters {
        let Some(schema) = &parameter.schema else {
            continue;
        };
        let model = params::model(schema).map_err(|message| {
            BuildError::at(&at, spec.document.at(&parameter.pointer, &message))
        })?;
        if let Some(model) = model {
            let into = match parameter.location.as_str() {
                "path" => &mut path_params,
                "query" => &mut query_params,
                _ => &mut headers,
            };
            into.insert(
                parameter
                    .name
                    .to_lowercase_if(parameter.location == "header"),
                model,
            );
        }
    }
    let mut base = json!({"method": operation.method});
    if !headers.is_empty() {
        base["headers"] = Value::Object(headers);
    }
    let mut params_config = Map::new();
    if !path_params.is_empty() {
        params_config.insert("path".into(), Value::Object(path_params));
    }
    if !query_params.is_empty() {
        params_config.insert("query".into(), Value::Object(query_params));
    }
    if !params_config.is_empty() {
        base["params"] = Value::Object(params_config);
    }
    let name = sanitize(&format!(
        "{}.{}",
        spec.name,
        operation.id.clone().unwrap_or_else(|| format!(
            "{}{}",
            operation.method.to_lowercase(),
            operation.path
        ))
    ));
    let mut checks = Vec::new();
    let mut first_json = None;
    let mut all_json = true;
    for (index, (content_type, schema)) in operation.body.iter().enumerate() {
        let Some(schema) = schema else {
            all_json &= is_json(content_type);
            continue;
        };
        if !is_json(content_type) {
            let mut pointer = operation.pointer.clone();
            pointer.extend(["requestBody".into(), "content".into(), content_type.clone()]);
            return Err(BuildError::at(
                &at,
                spec.document.at(
                    &pointer,
                    &format!(
                        "only JSON request bodies are validated; a `{content_type}` body with \
                         a schema is not supported yet"
                    ),
                ),
            ));
        }
        let subject = if index == 0 {
            name.clone()
        } else {
            format!("{name}.{index}")
        };
        let schema_text = serde_json::to_string(&spec.document.json_schema(schema))
            .map_err(|error| BuildError::at(&at, error.to_string()))?;
        subjects.insert(subject.clone(), json!({"schema": schema_text}));
        let content = json!({"model": "json", "catalog": {"catalog": [{"subject": subject}]}});
        let mut check = base.clone();
        check["content-type"] = json!([content_type]);
        check["content"] = content.clone();
        checks.push(check);
        first_json.get_or_insert(content);
    }
    // A body sent with another content type is still checked against the operation's
    // schema when all it accepts is JSON, so what breaks the schema never passes.
    match (first_json, all_json) {
        (Some(content), true) => {
            let mut check = base;
            check["content"] = content;
            checks.push(check);
        }
        _ if base.as_object().is_some_and(|b| b.len() > 1) => checks.push(base),
        _ => {}
    }
    Ok(checks)
}

trait LowercaseIf {
    fn to_lowercase_if(&self, condition: bool) -> String;
}

impl LowercaseIf for String {
    fn to_lowercase_if(&self, condition: bool) -> String {
        if condition {
            self.to_lowercase()
        } else {
            self.clone()
        }
    }
}
