//! The pipelines an `asyncapi` binding stands for, written out as a `zilla.yaml` namespace of
//! plain bindings: what Zilla builds inside its composite bindings, made visible.
//!
//! Each `asyncapi` binding becomes one namespace. The binding names inside are fixed, so the
//! namespace of one binding can exit to the namespace of the next (`<namespace>:<name>`):
//!
//! | kind | document protocol | bindings generated |
//! |---|---|---|
//! | `server` | `mqtt` | [`TCP_SERVER`] → [`MQTT_SERVER`] → `<exit>:`[`MQTT_KAFKA_PROXY`] |
//! | `server` | `http` | [`TCP_SERVER`] → [`HTTP_SERVER`] → `<exit>:`[`HTTP_KAFKA_PROXY`], and `GET` of `x-zilla-sse` operations → [`SSE_SERVER`] → `<exit>:`[`SSE_KAFKA_PROXY`] |
//! | `server` | `sse` | [`TCP_SERVER`] → [`HTTP_SERVER`] → [`SSE_SERVER`] → `<exit>:`[`SSE_KAFKA_PROXY`] |
//! | `proxy` | mqtt/http/sse → kafka | [`MQTT_KAFKA_PROXY`], [`HTTP_KAFKA_PROXY`], [`SSE_KAFKA_PROXY`] → `<route exit>:`[`KAFKA_CACHE_CLIENT`] |
//! | `client` | `kafka` | [`KAFKA_CACHE_CLIENT`] → [`KAFKA_CACHE_SERVER`] → [`KAFKA_CLIENT`] → [`TCP_CLIENT`] |
//! | `client` | `mqtt` | [`MQTT_CLIENT`] → [`TCP_CLIENT`] |
//! | `client` | `http`, `sse` | [`SSE_CLIENT`] (SSE operations) → [`HTTP_CLIENT`] → [`TCP_CLIENT`] |
//!
//! A server's exit may also be a client of its own document: its `mqtt_server0` then exits
//! to [`MQTT_CLIENT`], its `http_server0` to [`HTTP_CLIENT`] and its `sse_server0` to
//! [`SSE_CLIENT`]. Each protocol of a server exits only to a binding its exit generated
//! ([`ExitTarget`] lists them): an HTTP operation its proxy does not map is answered by the
//! http server (404), not sent to an http-kafka proxy that does not exist. A client connects
//! to a `servers` URL that is none of the document's as written.
//!
//! Message payload schemas of operations clients send (MQTT publish, HTTP request bodies) and
//! of SSE events become content models: each schema is a subject of the inline catalog
//! [`CATALOG`] of the server's namespace (subject: the operation id), checked by the `json`
//! model (or `avro` for Avro schemas), so the protocol binding rejects what breaks the schema
//! (MQTT reason 0x99, HTTP 400, SSE event dropped).

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde_json::{Map, Value, json};

mod client;

use crate::model::{Action, Message, Operation, SchemaFormat, Server, Spec};
use crate::options::{AsyncapiOptions, AsyncapiRoute};

/// The tcp server of a server namespace.
pub const TCP_SERVER: &str = "tcp_server0";
/// The http server of a server namespace.
pub const HTTP_SERVER: &str = "http_server0";
/// The sse server of a server namespace.
pub const SSE_SERVER: &str = "sse_server0";
/// The mqtt server of a server namespace.
pub const MQTT_SERVER: &str = "mqtt_server0";
/// The inline catalog of a server namespace, holding the payload schemas.
pub const CATALOG: &str = "catalog0";
/// The mqtt-kafka proxy of a proxy namespace: the entry of MQTT sessions.
pub const MQTT_KAFKA_PROXY: &str = "mqtt_kafka_proxy0";
/// The http-kafka proxy of a proxy namespace: the entry of HTTP exchanges.
pub const HTTP_KAFKA_PROXY: &str = "http_kafka_proxy0";
/// The sse-kafka proxy of a proxy namespace: the entry of SSE streams.
pub const SSE_KAFKA_PROXY: &str = "sse_kafka_proxy0";
/// The kafka cache client of a client namespace: the entry of Kafka streams.
pub const KAFKA_CACHE_CLIENT: &str = "kafka_cache_client0";
/// The kafka cache server of a client namespace.
pub const KAFKA_CACHE_SERVER: &str = "kafka_cache_server0";
/// The kafka client of a client namespace.
pub const KAFKA_CLIENT: &str = "kafka_client0";
/// The tcp client of a client namespace.
pub const TCP_CLIENT: &str = "tcp_client0";
/// The mqtt client of a client namespace for an MQTT broker: the entry of MQTT sessions.
pub const MQTT_CLIENT: &str = "mqtt_client0";
/// The sse client of a client namespace for an HTTP server: the entry of SSE streams.
pub const SSE_CLIENT: &str = "sse_client0";
/// The http client of a client namespace for an HTTP server: the entry of HTTP exchanges.
pub const HTTP_CLIENT: &str = "http_client0";

/// The kind of an `asyncapi` binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompositeKind {
    /// Listens as the document's servers.
    Server,
    /// Maps the operations of one document onto those of another.
    Proxy,
    /// Connects to the document's servers.
    Client,
}

/// One `asyncapi` binding, with its documents parsed, ready to generate.
#[derive(Debug, Clone)]
pub struct Composite<'a> {
    /// Its kind.
    pub kind: CompositeKind,
    /// Its `options`.
    pub options: &'a AsyncapiOptions,
    /// Its `routes` (proxy).
    pub routes: &'a [AsyncapiRoute],
    /// The document of every `options.specs` label.
    pub specs: &'a IndexMap<String, Spec>,
    /// The binding's `exit` (server), as written.
    pub exit: Option<&'a str>,
    /// How each binding its `exit` or route exits name is reached.
    pub exits: &'a BTreeMap<String, ExitTarget>,
    /// Deployment overrides of what the documents say.
    pub overrides: &'a Overrides,
}

/// How the binding an `exit` names is reached from a generated namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitTarget {
    /// An `asyncapi` binding whose generated bindings all stay in `namespace` ([`expand`]).
    Generated {
        /// The namespace generated for it.
        namespace: String,
        /// The names of the bindings generated for it: what it maps decides which streams
        /// of the exiting binding it takes (a proxy mapping only SSE operations takes no
        /// HTTP exchanges), see [`generated_bindings`].
        bindings: Vec<String>,
    },
    /// An `asyncapi` binding expanded as a composite binding: its entry binding takes its name
    /// and place, reached as `reference`; the rest of what it generated is in `namespace`. The
    /// entry of a client is the first of its [`KAFKA_CACHE_CLIENT`], [`MQTT_CLIENT`],
    /// [`SSE_CLIENT`] and [`HTTP_CLIENT`]; that of a proxy the first it generates of
    /// [`MQTT_KAFKA_PROXY`], [`HTTP_KAFKA_PROXY`] and [`SSE_KAFKA_PROXY`] ([`entry`]).
    Composite {
        /// The namespace generated for it.
        namespace: String,
        /// `<namespace>:<name>` of the binding itself.
        reference: String,
        /// The names of the bindings generated for it, as for [`ExitTarget::Generated`].
        bindings: Vec<String>,
    },
    /// A binding of another type, reached as `reference` whatever the stream kind.
    Plain {
        /// `<namespace>:<name>` of the binding.
        reference: String,
    },
}

/// The names of the bindings `namespace` holds, as [`ExitTarget`] wants them.
pub fn generated_bindings(namespace: &Namespace) -> Vec<String> {
    namespace.bindings.keys().cloned().collect()
}

/// The binding of a generated namespace that takes the place of the `asyncapi` binding it was
/// generated for, when expanded as a composite: a server's [`TCP_SERVER`], a client's first of
/// [`KAFKA_CACHE_CLIENT`], [`MQTT_CLIENT`], [`SSE_CLIENT`] and [`HTTP_CLIENT`], a proxy's
/// first of [`MQTT_KAFKA_PROXY`], [`HTTP_KAFKA_PROXY`] and [`SSE_KAFKA_PROXY`].
pub fn entry(kind: CompositeKind, namespace: &Namespace) -> Option<&'static str> {
    entry_of(kind, &generated_bindings(namespace))
}

fn entry_of(kind: CompositeKind, bindings: &[String]) -> Option<&'static str> {
    let candidates: &[&'static str] = match kind {
        CompositeKind::Server => &[TCP_SERVER],
        CompositeKind::Client => &[KAFKA_CACHE_CLIENT, MQTT_CLIENT, SSE_CLIENT, HTTP_CLIENT],
        CompositeKind::Proxy => &[MQTT_KAFKA_PROXY, HTTP_KAFKA_PROXY, SSE_KAFKA_PROXY],
    };
    candidates
        .iter()
        .copied()
        .find(|name| bindings.iter().any(|binding| binding == name))
}

/// What a deployment overrides of the documents' servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The address servers listen on instead of `0.0.0.0` (Zilla listens on every interface
    /// whatever host the document names); `127.0.0.1` keeps a gateway loopback-only.
    pub listen_host: Option<String>,
    /// Ports to listen on instead of the document's, by server URL (as [`Server::url`] gives
    /// it): for tests and port clashes. `0` picks a free port.
    pub listen_ports: BTreeMap<String, u16>,
    /// Kafka bootstrap servers instead of the document's (`host:port`).
    pub bootstrap: Option<Vec<String>>,
}

/// A generated namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its catalogs.
    pub catalogs: Map<String, Value>,
    /// Its bindings, in pipeline order.
    pub bindings: Map<String, Value>,
}

impl Namespace {
    /// The namespace as a `zilla.yaml` document value.
    pub fn to_value(&self) -> Value {
        let mut document = Map::new();
        document.insert("name".into(), Value::String(self.name.clone()));
        if !self.catalogs.is_empty() {
            document.insert("catalogs".into(), Value::Object(self.catalogs.clone()));
        }
        document.insert("bindings".into(), Value::Object(self.bindings.clone()));
        Value::Object(document)
    }

    /// The namespace as `zilla.yaml` text (one document, starting with `---`).
    pub fn to_yaml(&self) -> Result<String, GenerateError> {
        let text =
            serde_saphyr::to_string(&self.to_value()).map_err(|error| GenerateError::Config {
                path: String::new(),
                message: format!("cannot write YAML: {error}"),
            })?;
        Ok(format!("---\n{text}"))
    }
}

/// Why a pipeline cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The binding's own config: `path` is relative to the binding (`options.specs.a`).
    #[error("{path}: {message}")]
    Config {
        /// The config path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A document: `path` is the document path (`operations.a`).
    #[error("{file}: {path}: {message}")]
    Spec {
        /// The document's file.
        file: String,
        /// The document path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn config_error(path: impl Into<String>, message: impl Into<String>) -> GenerateError {
    GenerateError::Config {
        path: path.into(),
        message: message.into(),
    }
}

fn spec_error(spec: &Spec, path: impl Into<String>, message: impl Into<String>) -> GenerateError {
    GenerateError::Spec {
        file: spec.file.clone(),
        path: path.into(),
        message: message.into(),
    }
}

/// Generates the namespace `name` for `composite`.
pub fn generate(name: &str, composite: &Composite<'_>) -> Result<Namespace, GenerateError> {
    let mut namespace = Namespace {
        name: name.to_owned(),
        catalogs: Map::new(),
        bindings: Map::new(),
    };
    if composite.kind != CompositeKind::Proxy && composite.options.mqtt_kafka.is_some() {
        return Err(config_error(
            "options.mqtt-kafka",
            "only an asyncapi proxy maps MQTT onto Kafka",
        ));
    }
    if let Some(key) = composite.options.unsupported().into_iter().next() {
        return Err(config_error(key, "not supported by asyncapi bindings"));
    }
    for (index, route) in composite.routes.iter().enumerate() {
        if let Some(entry) = route.when.iter().position(|when| when.tag.is_some()) {
            return Err(config_error(
                format!("routes[{index}].when[{entry}].tag"),
                "routing by tag is not supported by asyncapi bindings",
            ));
        }
    }
    for label in composite.options.specs.keys() {
        if !composite.specs.contains_key(label) {
            return Err(config_error(
                format!("options.specs.{label}"),
                "the document of this spec was not given",
            ));
        }
    }
    match composite.kind {
        CompositeKind::Server => server(composite, &mut namespace)?,
        CompositeKind::Proxy => proxy(composite, &mut namespace)?,
        CompositeKind::Client => client(composite, &mut namespace)?,
    }
    Ok(namespace)
}

/// The one spec of a server or client binding, with its selected servers.
pub(crate) fn single_spec<'a>(
    composite: &Composite<'a>,
) -> Result<(&'a str, &'a Spec, Vec<Server>), GenerateError> {
    let specs = &composite.options.specs;
    if specs.len() != 1 {
        return Err(config_error(
            "options.specs",
            format!(
                "a server or client binding generates from exactly one spec, not {}",
                specs.len()
            ),
        ));
    }
    let Some((label, _)) = specs.iter().next() else {
        return Err(config_error("options.specs", "no spec"));
    };
    let Some(spec) = composite.specs.get(label) else {
        return Err(config_error(
            format!("options.specs.{label}"),
            "the document of this spec was not given",
        ));
    };
    let servers = selected_servers(composite, label, spec)?;
    Ok((label, spec, servers))
}

/// The servers `options.specs.<label>.servers` (or `server`) selects; all when neither. A
/// client also connects to a URL without `*` that names no server of the document, as it is
/// written (the document says where the API runs in general, the deployment where it runs
/// here), as the openapi client does.
fn selected_servers(
    composite: &Composite<'_>,
    label: &str,
    spec: &Spec,
) -> Result<Vec<Server>, GenerateError> {
    let path = format!("options.specs.{label}");
    let Some(options) = composite.options.specs.get(label) else {
        return Err(config_error(path, "no such spec"));
    };
    let selectors: Vec<&String> = options
        .servers
        .iter()
        .flatten()
        .chain(options.server.iter())
        .collect();
    let mut servers: Vec<Server> = if selectors.is_empty() {
        spec.servers.values().cloned().collect()
    } else {
        spec.servers
            .iter()
            .filter(|(name, server)| {
                selectors
                    .iter()
                    .any(|selector| *selector == *name || glob(selector, &server.url()))
            })
            .map(|(_, server)| server.clone())
            .collect()
    };
    if composite.kind == CompositeKind::Client {
        for selector in &selectors {
            let known = spec
                .servers
                .iter()
                .any(|(name, server)| *selector == name || glob(selector, &server.url()));
            if !known && !selector.contains('*') {
                let server = client::server_of_url(selector).ok_or_else(|| {
                    config_error(
                        &path,
                        format!(
                            "no server of the document is selected by `{selector}` (it has: {}), and it is not a `protocol://host:port` URL to connect to",
                            server_urls(spec)
                        ),
                    )
                })?;
                servers.push(server);
            }
        }
    }
    if servers.is_empty() {
        return Err(config_error(
            path,
            format!(
                "no server of the document is selected (it has: {})",
                server_urls(spec)
            ),
        ));
    }
    Ok(servers)
}

/// The URLs of the document's servers, for messages.
fn server_urls(spec: &Spec) -> String {
    spec.servers
        .values()
        .map(Server::url)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(index) => rest = &rest[index + part.len()..],
            None => return false,
        }
    }
    true
}

/// The reference to the first of `candidates` that the binding named `exit` generated, or
/// to that binding itself when it is of another type; `None` when it generated none of them
/// (it maps none of the operations those bindings would carry).
fn exit_to(
    composite: &Composite<'_>,
    path: &str,
    exit: &str,
    candidates: &[&str],
) -> Result<Option<String>, GenerateError> {
    let found = |bindings: &[String]| {
        candidates
            .iter()
            .copied()
            .find(|candidate| bindings.iter().any(|binding| binding == candidate))
    };
    match composite.exits.get(exit) {
        Some(ExitTarget::Generated {
            namespace,
            bindings,
        }) => Ok(found(bindings).map(|binding| format!("{namespace}:{binding}"))),
        Some(ExitTarget::Composite {
            namespace,
            reference,
            bindings,
        }) => {
            let Some(binding) = found(bindings) else {
                return Ok(None);
            };
            // The entry left the namespace and took the composite's name.
            let is_entry = [CompositeKind::Client, CompositeKind::Proxy]
                .into_iter()
                .any(|kind| entry_of(kind, bindings) == Some(binding));
            Ok(Some(if is_entry {
                reference.clone()
            } else {
                format!("{namespace}:{binding}")
            }))
        }
        Some(ExitTarget::Plain { reference }) => Ok(Some(reference.clone())),
        None => Err(config_error(path, format!("unknown exit `{exit}`"))),
    }
}

/// The name of the namespace generated for the `asyncapi` binding `binding` of `namespace`.
pub fn namespace_name(namespace: &str, binding: &str) -> String {
    format!("{namespace}.{binding}")
}

/// Generates every `asyncapi` binding among `bindings` (a namespace's `bindings`, as JSON)
/// into its own namespace, named by [`namespace_name`], each exiting to the namespaces of the
/// `asyncapi` bindings it names. `specs` holds the parsed document of every `options.specs`
/// label the bindings use. Bindings of other types are left alone.
pub fn expand(
    namespace: &str,
    bindings: &Map<String, Value>,
    specs: &IndexMap<String, Spec>,
    overrides: &Overrides,
) -> Result<Vec<Namespace>, GenerateError> {
    let composites: Vec<(&String, &Map<String, Value>)> = bindings
        .iter()
        .filter_map(|(name, binding)| binding.as_object().map(|binding| (name, binding)))
        .filter(|(_, binding)| binding.get("type").and_then(Value::as_str) == Some("asyncapi"))
        .collect();
    let namespaces: BTreeMap<String, String> = composites
        .iter()
        .map(|(name, _)| ((*name).clone(), namespace_name(namespace, name)))
        .collect();
    // What each binding generates decides which streams reach it, so every binding is
    // generated once with its own exits unresolved (failing there if it cannot be generated
    // at all), then again wired to the others.
    let mut placeholders = BTreeMap::new();
    for (_, binding) in &composites {
        let routes = binding.get("routes").and_then(Value::as_array);
        let names = binding
            .get("exit")
            .into_iter()
            .chain(
                routes
                    .into_iter()
                    .flatten()
                    .filter_map(|route| route.get("exit")),
            )
            .filter_map(Value::as_str);
        for exit in names {
            let reference = format!("{namespace}:{exit}");
            placeholders.insert(exit.to_owned(), ExitTarget::Plain { reference });
        }
    }
    let mut exits = BTreeMap::new();
    for (name, namespace) in &namespaces {
        let bindings = match composites.iter().find(|(own, _)| *own == name) {
            Some((_, binding)) => generated_bindings(&generate_one(
                name,
                binding,
                namespace,
                specs,
                &placeholders,
                overrides,
            )?),
            None => Vec::new(),
        };
        let target = ExitTarget::Generated {
            namespace: namespace.clone(),
            bindings,
        };
        exits.insert(name.clone(), target);
    }
    let mut generated = Vec::new();
    for (name, binding) in composites {
        let Some(own) = namespaces.get(name) else {
            return Err(config_error(
                format!("bindings.{name}"),
                "no namespace name",
            ));
        };
        generated.push(generate_one(name, binding, own, specs, &exits, overrides)?);
    }
    Ok(generated)
}

/// Generates the `asyncapi` binding `name` of a namespace's `bindings` into `own`.
fn generate_one(
    name: &str,
    binding: &Map<String, Value>,
    own: &str,
    specs: &IndexMap<String, Spec>,
    exits: &BTreeMap<String, ExitTarget>,
    overrides: &Overrides,
) -> Result<Namespace, GenerateError> {
    let at = |path: &str| format!("bindings.{name}.{path}");
    let located = |error: GenerateError| match error {
        GenerateError::Config { path, message } => config_error(at(&path), message),
        other => other,
    };
    for key in binding.keys() {
        if !matches!(
            key.as_str(),
            "type" | "kind" | "options" | "routes" | "exit"
        ) {
            return Err(config_error(
                at(key),
                "not supported on an asyncapi binding",
            ));
        }
    }
    let kind = match binding.get("kind").and_then(Value::as_str) {
        Some("server") => CompositeKind::Server,
        Some("proxy") => CompositeKind::Proxy,
        Some("client") => CompositeKind::Client,
        _ => return Err(config_error(at("kind"), "`server`, `proxy` or `client`")),
    };
    let options: AsyncapiOptions =
        serde_json::from_value(binding.get("options").cloned().unwrap_or(Value::Null))
            .map_err(|error| config_error(at("options"), error.to_string()))?;
    let routes: Vec<AsyncapiRoute> =
        serde_json::from_value(binding.get("routes").cloned().unwrap_or(json!([])))
            .map_err(|error| config_error(at("routes"), error.to_string()))?;
    let mut used = IndexMap::new();
    for label in options.specs.keys() {
        let Some(spec) = specs.get(label) else {
            return Err(config_error(
                at(&format!("options.specs.{label}")),
                "the document of this spec was not given",
            ));
        };
        used.insert(label.clone(), spec.clone());
    }
    let composite = Composite {
        kind,
        options: &options,
        routes: &routes,
        specs: &used,
        exit: binding.get("exit").and_then(Value::as_str),
        exits,
        overrides,
    };
    generate(own, &composite).map_err(located)
}

// ---- server ----

fn server(composite: &Composite<'_>, namespace: &mut Namespace) -> Result<(), GenerateError> {
    let (label, spec, servers) = single_spec(composite)?;
    let Some(exit) = composite.exit else {
        return Err(config_error("exit", "an asyncapi server needs an `exit`"));
    };
    let protocols = ["mqtt", "http", "sse"];
    let mut protocol = None;
    let mut ports = Vec::new();
    for server in &servers {
        if server.secure() {
            return Err(config_error(
                format!("options.specs.{label}"),
                format!(
                    "server `{}`: TLS servers (`{}`) are not supported",
                    server.url(),
                    server.protocol
                ),
            ));
        }
        let Some(found) = protocols.iter().find(|p| server.speaks(p)) else {
            return Err(config_error(
                format!("options.specs.{label}"),
                format!(
                    "server `{}`: protocol `{}` not supported (mqtt, http and sse are)",
                    server.url(),
                    server.protocol
                ),
            ));
        };
        match protocol {
            None => protocol = Some(*found),
            Some(previous) if previous == *found => {}
            Some(previous) => {
                return Err(config_error(
                    format!("options.specs.{label}"),
                    format!(
                        "the selected servers speak both `{previous}` and `{found}`: select servers of one protocol"
                    ),
                ));
            }
        }
        let port = match composite.overrides.listen_ports.get(&server.url()) {
            Some(port) => *port,
            None => server
                .port
                .unwrap_or(if *found == "mqtt" { 1883 } else { 80 }),
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let Some(protocol) = protocol else {
        return Err(config_error(format!("options.specs.{label}"), "no server"));
    };
    let first = if protocol == "mqtt" {
        MQTT_SERVER
    } else {
        HTTP_SERVER
    };
    let port = if ports.len() == 1 {
        json!(ports[0])
    } else {
        json!(ports)
    };
    namespace.bindings.insert(
        TCP_SERVER.into(),
        json!({
            "type": "tcp",
            "kind": "server",
            "options": {
                "host": composite.overrides.listen_host.as_deref().unwrap_or("0.0.0.0"),
                "port": port,
            },
            "exit": first,
        }),
    );
    let mut subjects = Map::new();
    match protocol {
        "mqtt" => mqtt_server(composite, spec, exit, namespace, &mut subjects)?,
        _ => http_server(
            composite,
            spec,
            protocol == "sse",
            exit,
            namespace,
            &mut subjects,
        )?,
    }
    if !subjects.is_empty() {
        namespace.catalogs.insert(
            CATALOG.into(),
            json!({"type": "inline", "options": {"subjects": subjects}}),
        );
    }
    Ok(())
}

fn mqtt_server(
    composite: &Composite<'_>,
    spec: &Spec,
    exit: &str,
    namespace: &mut Namespace,
    subjects: &mut Map<String, Value>,
) -> Result<(), GenerateError> {
    let mut topics = Vec::new();
    for (id, operation) in &spec.operations {
        if operation.action != Action::Send {
            continue;
        }
        let address = channel_address(spec, id, operation)?;
        if let Some(content) = content_model(spec, id, operation, subjects)? {
            topics.push(json!({"name": mqtt_topic(address), "content": content}));
        }
    }
    let Some(target) = exit_to(composite, "exit", exit, &[MQTT_KAFKA_PROXY, MQTT_CLIENT])? else {
        return Err(config_error(
            "exit",
            format!("`{exit}` takes no MQTT sessions: it maps no operation of an mqtt server"),
        ));
    };
    let mut server = json!({"type": "mqtt", "kind": "server", "exit": target});
    if !topics.is_empty() {
        server["options"] = json!({"topics": topics});
    }
    namespace.bindings.insert(MQTT_SERVER.into(), server);
    Ok(())
}

fn http_server(
    composite: &Composite<'_>,
    spec: &Spec,
    sse_only: bool,
    exit: &str,
    namespace: &mut Namespace,
    subjects: &mut Map<String, Value>,
) -> Result<(), GenerateError> {
    let mut requests = Vec::new();
    let mut sse_routes = Vec::new();
    let mut sse_requests = Vec::new();
    let mut http_operations = false;
    for (id, operation) in &spec.operations {
        let address = channel_address(spec, id, operation)?;
        if sse_only || operation.sse.is_some() {
            if operation.action != Action::Receive {
                return Err(spec_error(
                    spec,
                    format!("operations.{id}"),
                    "an SSE operation is one clients receive (`action: receive`)",
                ));
            }
            sse_routes.push(json!({"headers": {":method": "GET", ":path": path_pattern(address)}}));
            if let Some(content) = content_model(spec, id, operation, subjects)? {
                sse_requests.push(json!({"path": address, "content": content}));
            }
            continue;
        }
        let Some(method) = http_method(operation) else {
            continue;
        };
        http_operations = true;
        if operation.action == Action::Send
            && let Some(content) = content_model(spec, id, operation, subjects)?
        {
            requests.push(json!({"path": address, "method": method, "content": content}));
        }
    }
    // Only the streams the exit takes get an exit: a proxy mapping only the SSE operations
    // takes no HTTP exchanges, which the http server then answers 404 as unrouted.
    let http_exit = if http_operations {
        exit_to(composite, "exit", exit, &[HTTP_KAFKA_PROXY, HTTP_CLIENT])?
    } else {
        None
    };
    let sse_exit = if sse_routes.is_empty() {
        None
    } else {
        exit_to(composite, "exit", exit, &[SSE_KAFKA_PROXY, SSE_CLIENT])?
    };
    if http_exit.is_none() && sse_exit.is_none() {
        return Err(if http_operations || !sse_routes.is_empty() {
            config_error(
                "exit",
                format!("`{exit}` maps none of the HTTP or SSE operations of this server"),
            )
        } else {
            spec_error(
                spec,
                "operations",
                "no operation has `bindings.http` or `bindings.x-zilla-sse`: nothing to serve",
            )
        });
    }
    let mut http = json!({"type": "http", "kind": "server"});
    if !requests.is_empty() && http_exit.is_some() {
        http["options"] = json!({"requests": requests});
    }
    if let Some(sse_exit) = sse_exit {
        http["routes"] = json!([{"when": sse_routes, "exit": SSE_SERVER}]);
        let mut sse = json!({"type": "sse", "kind": "server", "exit": sse_exit});
        if !sse_requests.is_empty() {
            sse["options"] = json!({"requests": sse_requests});
        }
        if let Some(http_exit) = http_exit {
            http["exit"] = json!(http_exit);
        }
        namespace.bindings.insert(HTTP_SERVER.into(), http);
        namespace.bindings.insert(SSE_SERVER.into(), sse);
    } else {
        http["exit"] = json!(http_exit);
        namespace.bindings.insert(HTTP_SERVER.into(), http);
    }
    Ok(())
}

/// The HTTP method of an operation (`bindings.http.method`, else `x-zilla-http-kafka.method`).
fn http_method(operation: &Operation) -> Option<String> {
    operation
        .http
        .as_ref()
        .and_then(|http| http.method.clone())
        .or_else(|| operation.http_kafka.as_ref().and_then(|z| z.method.clone()))
        .map(|method| method.to_ascii_uppercase())
}

/// The address of an operation's channel.
fn channel_address<'s>(
    spec: &'s Spec,
    id: &str,
    operation: &Operation,
) -> Result<&'s str, GenerateError> {
    spec.channels
        .get(&operation.channel)
        .and_then(|channel| channel.address.as_deref())
        .ok_or_else(|| {
            spec_error(
                spec,
                format!("operations.{id}.channel"),
                "the channel has no address to serve",
            )
        })
}

/// An MQTT topic filter for a channel address: `{parameter}` levels become `+`.
fn mqtt_topic(address: &str) -> String {
    address
        .split('/')
        .map(|level| {
            if level.starts_with('{') && level.ends_with('}') {
                "+"
            } else {
                level
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// An HTTP `:path` pattern for a channel address: `{parameter}`s become `*`.
fn path_pattern(address: &str) -> String {
    let mut pattern = String::new();
    let mut rest = address;
    while let Some(start) = rest.find('{') {
        pattern.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                pattern.push('*');
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    pattern.push_str(rest);
    pattern
}

/// The content model of an operation's messages, its schema added to `subjects`.
fn content_model(
    spec: &Spec,
    id: &str,
    operation: &Operation,
    subjects: &mut Map<String, Value>,
) -> Result<Option<Value>, GenerateError> {
    let payloads: Vec<(&Message, &crate::model::Payload)> = operation
        .messages
        .iter()
        .filter_map(|message| message.payload.as_ref().map(|payload| (message, payload)))
        .collect();
    if payloads.is_empty() {
        return Ok(None);
    }
    let path = format!("operations.{id}.messages");
    let format = &payloads[0].1.format;
    if payloads
        .iter()
        .any(|(_, payload)| &payload.format != format)
    {
        return Err(spec_error(
            spec,
            path,
            "messages of one operation mix schema formats",
        ));
    }
    let (model, schema) = match format {
        SchemaFormat::Json => ("json", json_schema_of(&payloads)),
        SchemaFormat::Avro if payloads.len() == 1 => ("avro", payloads[0].1.schema.clone()),
        SchemaFormat::Avro => {
            return Err(spec_error(
                spec,
                path,
                "several Avro messages on one operation are not supported",
            ));
        }
        SchemaFormat::Other(other) => {
            return Err(spec_error(
                spec,
                path,
                format!("schemaFormat `{other}` not supported (JSON Schema and Avro are)"),
            ));
        }
    };
    let subject = subject_name(id);
    let text = serde_json::to_string(&schema)
        .map_err(|error| spec_error(spec, &path, format!("cannot write the schema: {error}")))?;
    subjects.insert(subject.clone(), json!({"schema": text}));
    Ok(Some(json!({
        "model": model,
        "catalog": {CATALOG: [{"subject": subject, "version": "latest"}]},
    })))
}

/// One JSON Schema for the payloads: the schema itself, or `anyOf` them with their `$defs`
/// merged (keys are document paths, so equal keys hold equal schemas).
fn json_schema_of(payloads: &[(&Message, &crate::model::Payload)]) -> Value {
    if let [(_, payload)] = payloads {
        return payload.schema.clone();
    }
    let mut defs = Map::new();
    let mut alternatives = Vec::new();
    for (_, payload) in payloads {
        let mut schema = payload.schema.clone();
        if let Some(Value::Object(own)) = schema.as_object_mut().and_then(|s| s.remove("$defs")) {
            defs.extend(own);
        }
        alternatives.push(schema);
    }
    let mut schema = json!({"anyOf": alternatives});
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

/// A catalog subject name for an operation id (a letter, then letters, digits, `.`, `_`, `-`).
fn subject_name(id: &str) -> String {
    let mut name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert(0, 's');
    }
    name
}

// ---- proxy ----

/// An operation of the entry-side document a route takes, with the Kafka operation it maps to.
struct Mapping<'a> {
    when_id: &'a str,
    when: &'a Operation,
    when_spec: &'a Spec,
    kafka_spec: &'a Spec,
    kafka_id: String,
    kafka: &'a Operation,
    exit: String,
}

fn proxy(composite: &Composite<'_>, namespace: &mut Namespace) -> Result<(), GenerateError> {
    if composite.routes.is_empty() {
        return Err(config_error("routes", "an asyncapi proxy needs `routes`"));
    }
    // The operations are mapped whatever server carries them; a selection must still name
    // servers the document has.
    for (label, spec) in composite.specs {
        selected_servers(composite, label, spec)?;
    }
    let mut mappings = Vec::new();
    // An operation an earlier route maps is not mapped again: the first route that takes an
    // operation wins, as routes do everywhere else (a route naming one operation before a
    // route for the rest of the spec).
    let mut mapped: std::collections::BTreeSet<(String, String)> = Default::default();
    for (index, route) in composite.routes.iter().enumerate() {
        let path = format!("routes[{index}]");
        let exit_path = format!("{path}.exit");
        let Some(exit) = exit_to(composite, &exit_path, &route.exit, &[KAFKA_CACHE_CLIENT])? else {
            return Err(config_error(
                exit_path,
                format!(
                    "`{}` is not an asyncapi client of a Kafka document",
                    route.exit
                ),
            ));
        };
        let Some(kafka_spec) = composite.specs.get(&route.with.spec) else {
            return Err(config_error(
                format!("{path}.with.spec"),
                format!("no spec `{}` in `options.specs`", route.with.spec),
            ));
        };
        if !kafka_spec.has_protocol("kafka") {
            return Err(config_error(
                format!("{path}.with.spec"),
                format!("spec `{}` has no kafka server", route.with.spec),
            ));
        }
        if route.when.is_empty() {
            return Err(config_error(format!("{path}.when"), "a route needs `when`"));
        }
        for (index_when, condition) in route.when.iter().enumerate() {
            let when_path = format!("{path}.when[{index_when}]");
            let Some(when_spec) = composite.specs.get(&condition.spec) else {
                return Err(config_error(
                    format!("{when_path}.spec"),
                    format!("no spec `{}` in `options.specs`", condition.spec),
                ));
            };
            let mut matched = false;
            for (when_id, when) in &when_spec.operations {
                if !condition
                    .operation
                    .as_deref()
                    .is_none_or(|pattern| glob(pattern, when_id))
                {
                    continue;
                }
                matched = true;
                let key = (condition.spec.clone(), when_id.clone());
                if mapped.contains(&key) {
                    continue;
                }
                let kafka_id = route
                    .with
                    .operation
                    .clone()
                    .unwrap_or_else(|| when_id.clone());
                let Some(kafka) = kafka_spec.operations.get(&kafka_id) else {
                    // Without `with.operation` each operation maps to the Kafka operation of
                    // the same name; one that has none is not mapped, as in Zilla (a route
                    // for "the rest of the spec" after routes naming operations).
                    if route.with.operation.is_none() {
                        continue;
                    }
                    return Err(config_error(
                        format!("{path}.with.operation"),
                        format!("spec `{}` has no operation `{kafka_id}`", route.with.spec),
                    ));
                };
                mapped.insert(key);
                mappings.push(Mapping {
                    when_id,
                    when,
                    when_spec,
                    kafka_spec,
                    kafka_id,
                    kafka,
                    exit: exit.clone(),
                });
            }
            if !matched {
                return Err(config_error(
                    format!("{when_path}.operation"),
                    format!(
                        "spec `{}` has no operation matching `{}`",
                        condition.spec,
                        condition.operation.as_deref().unwrap_or("*")
                    ),
                ));
            }
        }
    }
    let mut mqtt_routes = Vec::new();
    let mut http_routes = Vec::new();
    let mut sse_routes = Vec::new();
    let mut first_exit: BTreeMap<&str, String> = BTreeMap::new();
    for mapping in &mappings {
        let topic = kafka_topic(mapping)?;
        let address = channel_address(mapping.when_spec, mapping.when_id, mapping.when)?;
        if mapping.when_spec.has_protocol("mqtt") {
            let condition = match mapping.when.action {
                Action::Send => json!({"publish": [{"topic": mqtt_topic(address)}]}),
                Action::Receive => json!({"subscribe": [{"topic": mqtt_topic(address)}]}),
            };
            mqtt_routes.push(
                json!({"when": [condition], "exit": mapping.exit, "with": {"messages": topic}}),
            );
            first_exit
                .entry("mqtt")
                .or_insert_with(|| mapping.exit.clone());
        } else if mapping.when.sse.is_some() || mapping.when_spec.has_protocol("sse") {
            sse_routes.push(sse_kafka_route(mapping, address, topic)?);
            first_exit
                .entry("sse")
                .or_insert_with(|| mapping.exit.clone());
        } else if http_method(mapping.when).is_some() {
            http_routes.push(http_kafka_route(mapping, address, topic)?);
            first_exit
                .entry("http")
                .or_insert_with(|| mapping.exit.clone());
        } else {
            return Err(spec_error(
                mapping.when_spec,
                format!("operations.{}", mapping.when_id),
                "neither an mqtt server nor `bindings.http` or `bindings.x-zilla-sse`: no protocol to map onto Kafka",
            ));
        }
    }
    if let Some(exit) = first_exit.get("mqtt") {
        let kafka_spec = mappings
            .iter()
            .find(|mapping| mapping.when_spec.has_protocol("mqtt"))
            .map(|mapping| mapping.kafka_spec);
        let topics = match kafka_spec {
            Some(kafka_spec) => mqtt_kafka_topics(composite, kafka_spec)?,
            None => return Err(config_error("routes", "no mqtt route")),
        };
        namespace.bindings.insert(
            MQTT_KAFKA_PROXY.into(),
            json!({
                "type": "mqtt-kafka",
                "kind": "proxy",
                "options": {"topics": topics},
                "routes": mqtt_routes,
                "exit": exit,
            }),
        );
    }
    if composite.options.mqtt_kafka.is_some() && !first_exit.contains_key("mqtt") {
        return Err(config_error(
            "options.mqtt-kafka",
            "no route maps an MQTT operation: the channels would not be used",
        ));
    }
    if first_exit.contains_key("http") {
        namespace.bindings.insert(
            HTTP_KAFKA_PROXY.into(),
            json!({"type": "http-kafka", "kind": "proxy", "routes": http_routes}),
        );
    }
    if first_exit.contains_key("sse") {
        namespace.bindings.insert(
            SSE_KAFKA_PROXY.into(),
            json!({"type": "sse-kafka", "kind": "proxy", "routes": sse_routes}),
        );
    }
    Ok(())
}

/// The Kafka topic of a mapping's Kafka operation.
fn kafka_topic<'a>(mapping: &Mapping<'a>) -> Result<&'a str, GenerateError> {
    mapping
        .kafka_spec
        .channels
        .get(&mapping.kafka.channel)
        .and_then(|channel| channel.topic())
        .ok_or_else(|| {
            spec_error(
                mapping.kafka_spec,
                format!("operations.{}.channel", mapping.kafka_id),
                "the channel names no topic",
            )
        })
}

/// `topics` of the mqtt-kafka proxy: from `options.mqtt-kafka.channels`, else from the Kafka
/// document's `x-zilla-mqtt-kafka` roles.
fn mqtt_kafka_topics(composite: &Composite<'_>, kafka: &Spec) -> Result<Value, GenerateError> {
    use crate::model::MqttKafkaRole;
    let topic_of = |path: &str, channel: &str| -> Result<String, GenerateError> {
        kafka
            .channels
            .get(channel)
            .and_then(|channel| channel.topic())
            .map(str::to_owned)
            .ok_or_else(|| {
                config_error(
                    path,
                    format!("the Kafka document has no channel `{channel}` with an address"),
                )
            })
    };
    if let Some(options) = &composite.options.mqtt_kafka {
        let channels = &options.channels;
        return Ok(json!({
            "sessions": topic_of("options.mqtt-kafka.channels.sessions", &channels.sessions)?,
            "messages": topic_of("options.mqtt-kafka.channels.messages", &channels.messages)?,
            "retained": topic_of("options.mqtt-kafka.channels.retained", &channels.retained)?,
        }));
    }
    let role = |role: MqttKafkaRole, name: &str| -> Result<String, GenerateError> {
        kafka
            .channels
            .values()
            .find(|channel| channel.mqtt_kafka.is_some_and(|ext| ext.role == role))
            .and_then(|channel| channel.topic())
            .map(str::to_owned)
            .ok_or_else(|| {
                spec_error(
                    kafka,
                    "channels",
                    format!(
                        "no channel has `x-zilla-mqtt-kafka: {{role: {name}}}`, and `options.mqtt-kafka.channels` does not name one"
                    ),
                )
            })
    };
    Ok(json!({
        "sessions": role(MqttKafkaRole::Sessions, "sessions")?,
        "messages": role(MqttKafkaRole::Messages, "messages")?,
        "retained": role(MqttKafkaRole::Retained, "retained")?,
    }))
}

/// `${params.x}` for each `{x}` of a channel address or path format, `${correlationId}` for
/// `{correlationId}`: the address as a Zilla expression.
pub fn with_params(address: &str) -> String {
    let mut out = String::new();
    let mut rest = address;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                let name = &rest[start + 1..start + end];
                if name == "correlationId" {
                    out.push_str("${correlationId}");
                } else {
                    out.push_str(&format!("${{params.{name}}}"));
                }
                rest = &rest[start + end + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// The names of the `{parameters}` of an address or path template, in order, except
/// `correlationId`.
pub fn parameters(address: &str) -> Vec<&str> {
    address
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
        .filter(|name| *name != "correlationId")
        .collect()
}

/// Filters of an `x-zilla-*` extension as `with.filters`; `{identity}` needs a guard, which
/// generated pipelines do not have yet, so it is refused.
fn filters(
    spec: &Spec,
    id: &str,
    filters: &[crate::model::ZillaKafkaFilter],
) -> Result<Value, GenerateError> {
    let mut out = Vec::new();
    for filter in filters {
        let mut entry = Map::new();
        let values = filter
            .key
            .iter()
            .chain(filter.headers.iter().flat_map(|headers| headers.values()));
        for value in values {
            if value.contains("{identity}") {
                return Err(spec_error(
                    spec,
                    format!("operations.{id}.bindings"),
                    "`{identity}` filters need a guard: security is not supported yet",
                ));
            }
        }
        if let Some(key) = &filter.key {
            entry.insert("key".into(), json!(with_params(key)));
        }
        if let Some(headers) = &filter.headers {
            let headers: Map<String, Value> = headers
                .iter()
                .map(|(name, value)| (name.clone(), json!(with_params(value))))
                .collect();
            entry.insert("headers".into(), Value::Object(headers));
        }
        out.push(Value::Object(entry));
    }
    Ok(Value::Array(out))
}

fn http_kafka_route(
    mapping: &Mapping<'_>,
    address: &str,
    topic: &str,
) -> Result<Value, GenerateError> {
    let Some(method) = http_method(mapping.when) else {
        return Err(spec_error(
            mapping.when_spec,
            format!("operations.{}.bindings.http", mapping.when_id),
            "no HTTP method",
        ));
    };
    let params = parameters(address);
    let mut when = vec![json!({"method": method, "path": address})];
    let with = match mapping.kafka.action {
        Action::Send => {
            let key = match params.first() {
                Some(name) => format!("${{params.{name}}}"),
                None => "${idempotencyKey}".to_owned(),
            };
            let mut with = json!({"capability": "produce", "topic": topic, "key": key});
            if let Some(overrides) = mapping
                .when
                .http_kafka
                .as_ref()
                .and_then(|z| z.overrides.as_ref())
            {
                if overrides.values().any(|value| value.contains("{identity}")) {
                    return Err(spec_error(
                        mapping.when_spec,
                        format!(
                            "operations.{}.bindings.x-zilla-http-kafka.overrides",
                            mapping.when_id
                        ),
                        "`{identity}` needs a guard: security is not supported yet",
                    ));
                }
                with["overrides"] = json!(overrides);
            }
            if let Some(reply) = mapping
                .kafka
                .reply
                .as_ref()
                .and_then(|reply| reply.channel.as_ref())
            {
                let reply_topic = mapping
                    .kafka_spec
                    .channels
                    .get(reply)
                    .and_then(|channel| channel.topic())
                    .ok_or_else(|| {
                        spec_error(
                            mapping.kafka_spec,
                            format!("operations.{}.reply", mapping.kafka_id),
                            "the reply channel names no topic",
                        )
                    })?;
                with["reply-to"] = json!(reply_topic);
                // The HTTP document's operation on a `{correlationId}` address is where the
                // client comes back for the answer (`prefer: respond-async`).
                let correlated = mapping
                    .when_spec
                    .operations
                    .iter()
                    .find_map(|(id, operation)| {
                        let address = channel_address(mapping.when_spec, id, operation).ok()?;
                        let method = http_method(operation)?;
                        address
                            .contains("{correlationId}")
                            .then_some((method, address))
                    });
                if let Some((method, correlated)) = correlated {
                    when.push(json!({"method": method, "path": correlated}));
                    with["async"] = json!({"location": with_params(correlated)});
                }
            }
            with
        }
        Action::Receive => {
            let mut with = json!({"capability": "fetch", "topic": topic});
            let extension = mapping
                .when
                .http_kafka
                .as_ref()
                .and_then(|z| z.filters.as_deref());
            if let Some(list) = extension {
                with["filters"] = filters(mapping.when_spec, mapping.when_id, list)?;
            } else if let Some(name) = params.first() {
                with["filters"] = json!([{"key": format!("${{params.{name}}}")}]);
            } else {
                with["merge"] = json!({"content-type": "application/json"});
            }
            with
        }
    };
    Ok(json!({"when": when, "exit": mapping.exit, "with": with}))
}

fn sse_kafka_route(
    mapping: &Mapping<'_>,
    address: &str,
    topic: &str,
) -> Result<Value, GenerateError> {
    if mapping.kafka.action != Action::Receive {
        return Err(spec_error(
            mapping.kafka_spec,
            format!("operations.{}", mapping.kafka_id),
            "an SSE operation maps onto a Kafka operation that receives",
        ));
    }
    let mut with = json!({"topic": topic});
    if let Some(list) = mapping
        .when
        .sse_kafka
        .as_ref()
        .and_then(|z| z.filters.as_deref())
    {
        with["filters"] = filters(mapping.when_spec, mapping.when_id, list)?;
    }
    Ok(json!({"when": [{"path": address}], "exit": mapping.exit, "with": with}))
}

// ---- client ----

fn client(composite: &Composite<'_>, namespace: &mut Namespace) -> Result<(), GenerateError> {
    let (label, spec, servers) = single_spec(composite)?;
    match client::protocol(label, &servers)? {
        client::ClientProtocol::Kafka => kafka_client(composite, spec, &servers, namespace),
        client::ClientProtocol::Mqtt => {
            client::mqtt_client(&servers, namespace);
            Ok(())
        }
        client::ClientProtocol::Http => {
            client::http_client(spec, &servers, namespace);
            Ok(())
        }
    }
}

/// Zilla's Kafka client chain to the document's Kafka servers.
fn kafka_client(
    composite: &Composite<'_>,
    spec: &Spec,
    servers: &[Server],
    namespace: &mut Namespace,
) -> Result<(), GenerateError> {
    let mut bootstrap_servers: Vec<String> = servers
        .iter()
        .map(|server| format!("{}:{}", server.host, server.port.unwrap_or(9092)))
        .collect();
    if let Some(bootstrap) = &composite.overrides.bootstrap {
        bootstrap_servers = bootstrap.clone();
    }
    // Topics clients read are fetched from the start of the gateway's life, so the first
    // subscriber is served from the cache; the MQTT broker's messages and retained topics too.
    let mut bootstrap = Vec::new();
    for operation in spec.operations.values() {
        if operation.action == Action::Receive
            && let Some(topic) = spec
                .channels
                .get(&operation.channel)
                .and_then(|c| c.topic())
        {
            push_unique(&mut bootstrap, topic);
        }
    }
    for channel in spec.channels.values() {
        if let (Some(extension), Some(topic)) = (channel.mqtt_kafka, channel.topic())
            && extension.role != crate::model::MqttKafkaRole::Sessions
        {
            push_unique(&mut bootstrap, topic);
        }
    }
    namespace.bindings.insert(
        KAFKA_CACHE_CLIENT.into(),
        json!({"type": "kafka", "kind": "cache_client", "exit": KAFKA_CACHE_SERVER}),
    );
    let mut cache_server = json!({"type": "kafka", "kind": "cache_server", "exit": KAFKA_CLIENT});
    if !bootstrap.is_empty() {
        cache_server["options"] = json!({"bootstrap": bootstrap});
    }
    namespace
        .bindings
        .insert(KAFKA_CACHE_SERVER.into(), cache_server);
    namespace.bindings.insert(
        KAFKA_CLIENT.into(),
        json!({
            "type": "kafka",
            "kind": "client",
            "options": {"servers": bootstrap_servers},
            "exit": TCP_CLIENT,
        }),
    );
    namespace
        .bindings
        .insert(TCP_CLIENT.into(), json!({"type": "tcp", "kind": "client"}));
    Ok(())
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|existing| existing == item) {
        list.push(item.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match() {
        assert!(glob("*", "anything"));
        assert!(glob("send*", "sendLight"));
        assert!(glob("mqtt://*:7183", "mqtt://localhost:7183"));
        assert!(!glob("mqtt://*:7183", "mqtt://localhost:1883"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "ac"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
    }

    #[test]
    fn addresses_become_patterns() {
        assert_eq!(mqtt_topic("lights/{id}/measured"), "lights/+/measured");
        assert_eq!(path_pattern("/pets/{id}"), "/pets/*");
        assert_eq!(
            with_params("/items/{id};cid={correlationId}"),
            "/items/${params.id};cid=${correlationId}"
        );
        assert_eq!(parameters("/a/{x}/{y};cid={correlationId}"), vec!["x", "y"]);
        assert_eq!(subject_name("send light/1"), "send-light-1");
        assert_eq!(subject_name("1st"), "s1st");
    }
}
