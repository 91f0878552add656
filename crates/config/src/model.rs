//! The typed shape common to every `zilla.yaml`: namespaces, bindings, routes, components and
//! telemetry. Type-specific parts (`options`, `when`, `with`) stay JSON here and are typed by
//! the factory that owns them.

use std::fmt;

use serde::Deserialize;

use super::error::ConfigError;
use super::node::Node;
use super::source::Source;

/// A name qualified by its namespace: `ns:name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    /// The namespace (`name` of the YAML document).
    pub namespace: String,
    /// The name inside the namespace.
    pub name: String,
}

impl QualifiedName {
    /// `namespace:name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Resolves a reference written in this name's namespace: `other:x` or bare `x`.
    pub fn resolve(&self, reference: &str) -> QualifiedName {
        match reference.split_once(':') {
            Some((namespace, name)) => QualifiedName::new(namespace, name),
            None => QualifiedName::new(self.namespace.clone(), reference),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.name)
    }
}

/// A binding's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// Accepts streams from the network side.
    Server,
    /// Opens streams toward the network side.
    Client,
    /// Maps one protocol's streams onto another's.
    Proxy,
    /// Kafka cache reader.
    CacheClient,
    /// Kafka cache writer.
    CacheServer,
    /// Originates streams into its `entry`.
    RemoteServer,
    /// Originates streams into its `entry`.
    RemoteClient,
}

impl BindingKind {
    /// Every kind, as named in config.
    pub const ALL: [BindingKind; 7] = [
        BindingKind::Server,
        BindingKind::Client,
        BindingKind::Proxy,
        BindingKind::CacheClient,
        BindingKind::CacheServer,
        BindingKind::RemoteServer,
        BindingKind::RemoteClient,
    ];

    /// The config name, e.g. `cache_client`.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingKind::Server => "server",
            BindingKind::Client => "client",
            BindingKind::Proxy => "proxy",
            BindingKind::CacheClient => "cache_client",
            BindingKind::CacheServer => "cache_server",
            BindingKind::RemoteServer => "remote_server",
            BindingKind::RemoteClient => "remote_client",
        }
    }
}

impl fmt::Display for BindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a piece of config was written: the document and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// Index of the YAML document (namespace).
    pub document: usize,
    /// Path segments from the document root.
    pub path: Vec<String>,
}

impl Origin {
    /// The origin of a child key or index.
    pub fn child(&self, segment: impl Into<String>) -> Origin {
        let mut path = self.path.clone();
        path.push(segment.into());
        Origin {
            document: self.document,
            path,
        }
    }

    /// The origin of a relative dotted path such as `options.keys` or `routes[0].exit`.
    pub fn relative(&self, dotted: &str) -> Origin {
        let mut origin = self.clone();
        for part in dotted.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(index) = rest.find('[') {
                origin.path.push(rest[..index].to_owned());
                rest = &rest[index..];
                while let Some(end) = rest.find(']') {
                    origin.path.push(rest[1..end].to_owned());
                    rest = &rest[end + 1..];
                }
            } else {
                origin.path.push(rest.to_owned());
            }
        }
        origin
    }
}

/// Formats path segments for messages: `bindings.tcp0.routes[0].exit`.
pub fn display_path(segments: &[String]) -> String {
    let mut out = String::new();
    for segment in segments {
        if segment.parse::<usize>().is_ok() && !out.is_empty() {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// A whole loaded config: every namespace, plus what is needed to point at its text.
#[derive(Debug, Clone)]
pub struct Config {
    /// The text it came from.
    pub source: Source,
    /// The parsed documents, for positions.
    pub documents: Vec<Node>,
    /// One per YAML document.
    pub namespaces: Vec<Namespace>,
    /// The directory of the config file: relative paths in options resolve against it.
    pub base_dir: std::path::PathBuf,
    /// The whole config as a `zilla.yaml` text once composite bindings were expanded into the
    /// namespaces they generate (`None` when there was nothing to expand). Errors still point
    /// at `source`, the file as written.
    pub expanded: Option<String>,
}

impl Config {
    /// An error at `origin` (or as near as the document allows).
    pub fn error(&self, origin: &Origin, message: impl Into<String>) -> ConfigError {
        let position = self
            .documents
            .get(origin.document)
            .map(|document| document.locate(&origin.path).position(&self.source))
            .unwrap_or_default();
        ConfigError::new(
            &self.source.file,
            position,
            display_path(&origin.path),
            message,
        )
    }

    /// Every binding with its qualified name.
    pub fn bindings(&self) -> impl Iterator<Item = (QualifiedName, &BindingConfig)> {
        self.namespaces.iter().flat_map(|namespace| {
            namespace
                .bindings
                .iter()
                .map(|(name, binding)| (QualifiedName::new(&namespace.name, name), binding))
        })
    }
}

/// One YAML document.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// `name`.
    pub name: String,
    /// `bindings`, in file order.
    pub bindings: Vec<(String, BindingConfig)>,
    /// `vaults`.
    pub vaults: Vec<(String, ComponentConfig)>,
    /// `guards`.
    pub guards: Vec<(String, ComponentConfig)>,
    /// `catalogs`.
    pub catalogs: Vec<(String, ComponentConfig)>,
    /// `stores`.
    pub stores: Vec<(String, ComponentConfig)>,
    /// `telemetry`.
    pub telemetry: Telemetry,
}

/// A vault, guard, catalog, store or exporter: `{type, options, vault?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentConfig {
    /// `type`.
    pub type_name: String,
    /// `options`, as JSON.
    pub options: Option<serde_json::Value>,
    /// `vault` (catalogs, exporters).
    pub vault: Option<String>,
    /// `store` (guards).
    pub store: Option<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// The namespace `telemetry` section.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// `attributes`.
    pub attributes: Vec<(String, String)>,
    /// `metrics`: the metric names recorded in this namespace.
    pub metrics: Vec<String>,
    /// `exporters`.
    pub exporters: Vec<(String, ComponentConfig)>,
}

/// One binding.
#[derive(Debug, Clone)]
pub struct BindingConfig {
    /// `type`.
    pub type_name: String,
    /// `kind`.
    pub kind: BindingKind,
    /// `entry` (remote kinds).
    pub entry: Option<String>,
    /// `vault`.
    pub vault: Option<String>,
    /// `catalog`.
    pub catalog: Option<serde_json::Value>,
    /// `options`.
    pub options: Option<serde_json::Value>,
    /// `exit`.
    pub exit: Option<String>,
    /// `routes`.
    pub routes: Vec<RouteConfig>,
    /// `telemetry.metrics`: regexes over the namespace's metric names.
    pub telemetry_metrics: Vec<String>,
    /// `telemetry.attributes`.
    pub telemetry_attributes: Vec<(String, String)>,
    /// The whole binding as written (after substitution), to tell whether a reload changed it.
    pub json: serde_json::Value,
    /// Where it was written.
    pub origin: Origin,
    /// The namespace it belongs to.
    pub namespace: String,
}

/// One entry of `routes`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `when`: conditions, ORed.
    pub when: Vec<serde_json::Value>,
    /// `guarded`: guard name → roles that must all be held.
    pub guarded: Vec<(String, Vec<String>)>,
    /// `exit`; empty for bindings that end a pipeline (their routes only filter).
    pub exit: String,
    /// `with`.
    pub with: Option<serde_json::Value>,
    /// Where it was written.
    pub origin: Origin,
}
