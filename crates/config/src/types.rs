//! What the config pipeline needs to know about the component types a distribution builds in:
//! their categories, the schemas they contribute, the stream kinds bindings accept and emit.
//! The engine's registry answers ([`Types`]); the pipeline knows no component itself.

use serde_json::{Value, json};

use super::error::ConfigError;
use super::model::{BindingKind, ComponentConfig, Config, Namespace};

/// The component categories, as named in `zilla.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// `bindings`.
    Binding,
    /// `vaults`.
    Vault,
    /// `guards`.
    Guard,
    /// `catalogs`.
    Catalog,
    /// `stores`.
    Store,
    /// `telemetry.exporters`.
    Exporter,
    /// models referenced from options.
    Model,
}

impl Category {
    /// The word used in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Category::Binding => "binding",
            Category::Vault => "vault",
            Category::Guard => "guard",
            Category::Catalog => "catalog",
            Category::Store => "store",
            Category::Exporter => "exporter",
            Category::Model => "model",
        }
    }

    /// The components of this category a namespace declares; none for bindings and models,
    /// which are not components declared by name.
    pub fn declared(self, namespace: &Namespace) -> &[(String, ComponentConfig)] {
        match self {
            Category::Vault => &namespace.vaults,
            Category::Guard => &namespace.guards,
            Category::Catalog => &namespace.catalogs,
            Category::Store => &namespace.stores,
            Category::Exporter => &namespace.telemetry.exporters,
            Category::Binding | Category::Model => &[],
        }
    }
}

/// The schemas a binding type contributes for one kind: its `options`, a route's `when` entry
/// and a route's `with`. `None` means the key is not allowed.
#[derive(Debug, Clone, Default)]
pub struct BindingSchema {
    /// Schema of `options`.
    pub options: Option<serde_json::Value>,
    /// Whether `options` must be present.
    pub options_required: bool,
    /// Schema of one entry of `routes[].when`.
    pub when: Option<serde_json::Value>,
    /// Schema of `routes[].with`.
    pub with: Option<serde_json::Value>,
}

impl BindingSchema {
    /// The JSON schema of a schemars type, for use in a [`BindingSchema`].
    pub fn of<T: schemars::JsonSchema>() -> serde_json::Value {
        serde_json::Value::from(schemars::schema_for!(T))
    }
}

/// One binding type, as the pipeline checks it.
pub trait BindingType {
    /// The kinds this type supports.
    fn kinds(&self) -> &'static [BindingKind];
    /// The stream kinds a binding of `kind` accepts when routed to.
    fn accepts(&self, kind: BindingKind) -> &'static [&'static str];
    /// The stream kind a binding of `kind` opens on its exits, `None` when it has no exit.
    fn emits(&self, kind: BindingKind) -> Option<&'static str>;
    /// The stream kind a binding of `kind` opens into its `entry` (remote kinds, e.g. a
    /// `kafka-grpc` `remote_server` reads `kafka` from its entry and calls `grpc` exits); by
    /// default the kind it opens on its exits.
    fn entry_emits(&self, kind: BindingKind) -> Option<&'static str> {
        self.emits(kind)
    }
    /// The option, `when` and `with` schemas for `kind`.
    fn schema(&self, kind: BindingKind) -> BindingSchema;
    /// The schema of the binding-level `catalog` of a binding of `kind`; `None` (the default)
    /// refuses the key.
    fn catalog_schema(&self, _kind: BindingKind) -> Option<Value> {
        None
    }
    /// Whether a binding of `kind` reads the binding-level `vault`; a config giving one to a
    /// binding that does not is refused at load rather than ignored.
    fn uses_vault(&self, _kind: BindingKind) -> bool {
        false
    }
}

/// The component types a config is checked against.
pub trait Types {
    /// The binding type `type_name`, when built in.
    fn binding(&self, type_name: &str) -> Option<Box<dyn BindingType + '_>>;
    /// The options schema of a non-binding component type, `(schema, required)`, when built in.
    fn component_schema(
        &self,
        category: Category,
        type_name: &str,
    ) -> Option<(Option<Value>, bool)>;
    /// The message for a `type` that is not built in.
    fn unknown_type(&self, category: Category, type_name: &str) -> String;
    /// Whether a caller emitting stream kind `emitted` can use an exit that accepts `accepted`.
    fn carries(&self, emitted: &str, accepted: &str) -> bool;
    /// Whether a non-binding component type uses its component-level `vault` key.
    fn component_uses_vault(&self, _category: Category, _type_name: &str) -> bool {
        false
    }
    /// Checks the `telemetry` sections against the metrics the registered components declare.
    fn check_telemetry(&self, _config: &Config) -> Vec<ConfigError> {
        Vec::new()
    }
}

/// The schema of one namespace document, with `type`-specific parts left open: type-specific
/// parts are validated separately against their own schemas, which gives precise messages.
pub fn namespace_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "zilla.yaml namespace",
        "type": "object",
        "properties": {
            "name": {"$ref": "#/$defs/name"},
            "vaults": {"type": "object", "propertyNames": {"$ref": "#/$defs/name"}, "additionalProperties": {"$ref": "#/$defs/vault"}},
            "guards": {"type": "object", "propertyNames": {"$ref": "#/$defs/name"}, "additionalProperties": {"$ref": "#/$defs/guard"}},
            "catalogs": {"type": "object", "propertyNames": {"$ref": "#/$defs/name"}, "additionalProperties": {"$ref": "#/$defs/catalog"}},
            "stores": {"type": "object", "propertyNames": {"$ref": "#/$defs/name"}, "additionalProperties": {"$ref": "#/$defs/store"}},
            "telemetry": {
                "type": "object",
                "properties": {
                    "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
                    "metrics": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+(\\.[a-z]+)+$"}},
                    "exporters": {"type": "object", "propertyNames": {"$ref": "#/$defs/name"}, "additionalProperties": {"$ref": "#/$defs/exporter"}},
                },
                "additionalProperties": false,
            },
            "bindings": {"type": "object", "propertyNames": {"$ref": "#/$defs/name"}, "additionalProperties": {"$ref": "#/$defs/binding"}},
        },
        "required": ["name"],
        "additionalProperties": false,
        "$defs": {
            "name": {"type": "string", "pattern": "^[a-zA-Z]+[a-zA-Z0-9\\._\\-]*$", "description": "a name: a letter, then letters, digits, `.`, `_` or `-`"},
            "reference": {"type": "string", "pattern": "^([a-zA-Z]+[a-zA-Z0-9\\._\\-]*:)?[a-zA-Z]+[a-zA-Z0-9\\._\\-]*$", "description": "a name, optionally qualified as `namespace:name`"},
            "component": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "options": {},
                    "vault": {"$ref": "#/$defs/reference"},
                    "store": {"$ref": "#/$defs/reference"},
                },
                "required": ["type"],
                "additionalProperties": false,
            },
            "vault": {"$ref": "#/$defs/component"},
            "guard": {"$ref": "#/$defs/component"},
            "catalog": {"$ref": "#/$defs/component"},
            "store": {"$ref": "#/$defs/component"},
            "exporter": {"$ref": "#/$defs/component"},
            "binding": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "kind": {"enum": BindingKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()},
                    "entry": {"$ref": "#/$defs/reference"},
                    "vault": {"$ref": "#/$defs/reference"},
                    "catalog": {"type": "object"},
                    "options": {},
                    "exit": {"$ref": "#/$defs/reference"},
                    "routes": {"type": "array", "items": {"$ref": "#/$defs/route"}},
                    "telemetry": {
                        "type": "object",
                        "properties": {
                            "metrics": {"type": "array", "items": {"type": "string"}},
                            "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                        "additionalProperties": false,
                    },
                },
                "required": ["type", "kind"],
                "additionalProperties": false,
            },
            "route": {
                "type": "object",
                "properties": {
                    "when": {"type": "array"},
                    "guarded": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                    "exit": {"$ref": "#/$defs/reference"},
                    "with": {},
                },
                "additionalProperties": false,
            },
        },
    })
}
