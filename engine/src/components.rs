//! The non-binding component kinds besides vaults and guards: catalogs, models (validators),
//! stores and exporters, and the factory every component type registers.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::model::{ComponentConfig, QualifiedName};
use crate::metrics::Metrics;
use crate::properties::Properties;

/// An error building a component or binding from a config that passed the schema.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// Config path below the binding where the problem is, e.g. `options.keys`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl BuildError {
    /// An error at `path` (relative to the binding).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Builds one component type (`vaults.x.type`, `telemetry.exporters.x.type`, ...).
pub trait ComponentFactory<T: ?Sized>: Send + Sync + 'static {
    /// The config `type`.
    fn type_name(&self) -> &'static str;
    /// The schema of `options`; `None` when the type takes none.
    fn options_schema(&self) -> Option<serde_json::Value>;
    /// Whether `options` must be present.
    fn options_required(&self) -> bool {
        false
    }
    /// Builds from config.
    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<T>, BuildError>;
}

/// What a component factory gets.
#[derive(Debug)]
pub struct ComponentContext<'a> {
    /// The component's qualified name.
    pub name: &'a QualifiedName,
    /// Its config.
    pub config: &'a ComponentConfig,
    /// The directory of the config file: relative paths in options resolve against it.
    pub base_dir: PathBuf,
    /// `-P` properties.
    pub properties: &'a Properties,
    /// The metric registry (exporters read it).
    pub metrics: &'a Metrics,
}

impl ComponentContext<'_> {
    /// The typed `options`; `T::default()` when absent.
    pub fn options<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, BuildError> {
        match &self.config.options {
            None => Ok(T::default()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|error| BuildError::at("options", error.to_string())),
        }
    }

    /// A path from options, resolved against the config file's directory.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A schema store (`catalogs:`).
pub trait Catalog: Send + Sync + 'static {
    /// The schema id for `subject` at `version` (`latest` allowed).
    fn resolve_subject(&self, subject: &str, version: &str) -> Option<u32>;
    /// The schema text for `id`.
    fn schema(&self, id: u32) -> Option<String>;
}

/// A model: validates (and may convert) one message.
pub trait Validator: Send + Sync + 'static {
    /// `Ok` when `data` is valid; the error says why not.
    fn validate(&self, data: &[u8]) -> Result<(), String>;
}

/// Builds one model type from its inline reference in binding options: a bare type name
/// (`json`) or an object (`{model: json, catalog: {...}, ...}`).
pub trait ModelFactory: Send + Sync + 'static {
    /// The model type, e.g. `json`.
    fn type_name(&self) -> &'static str;
    /// The schema of the model object (with `model` and its own keys).
    fn schema(&self) -> serde_json::Value;
    /// Builds from the reference (always an object here: a bare name arrives as
    /// `{"model": "<name>"}`); `catalogs` finds the catalogs it names.
    fn build(
        &self,
        reference: &serde_json::Value,
        catalogs: &dyn CatalogLookup,
    ) -> Result<Arc<dyn Validator>, BuildError>;
}

/// Finds model factories by type, for bindings that name models in their options.
pub trait ModelLookup {
    /// The factory of model type `type_name`; the error says why there is none.
    fn find_model(&self, type_name: &str) -> Result<&Arc<dyn ModelFactory>, String>;
}

/// Finds catalogs by the name a config uses (in the referring binding's namespace).
pub trait CatalogLookup {
    /// The catalog named `name`.
    fn catalog(&self, name: &str) -> Option<Arc<dyn Catalog>>;
}

/// A key/value store (`stores:`).
pub trait Store: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Sets `key`.
    fn put(&self, key: &str, value: Vec<u8>);
    /// Removes `key`.
    fn delete(&self, key: &str);
}

pub use crate::events::Exporter;
