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
    /// Whether this type uses the component-level `vault` key. A config giving `vault` to a type
    /// that does not is refused at load rather than ignored.
    fn uses_vault(&self) -> bool {
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
    /// The namespace's `telemetry.attributes`: the resource attributes exporters send with
    /// what they push (Zilla's `otlp` exporter does).
    pub telemetry_attributes: &'a [(String, String)],
    /// Where the component raises its events (named after it).
    pub events: crate::events::Events,
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

    /// Refuses a `store` on a component that takes none; `component` names it ("a jwt guard").
    pub fn refuse_store(&self, component: &str) -> Result<(), BuildError> {
        refuse("store", self.config.store.is_some(), component)
    }

    /// Refuses a `vault` on a component that takes none; `component` names it.
    pub fn refuse_vault(&self, component: &str) -> Result<(), BuildError> {
        refuse("vault", self.config.vault.is_some(), component)
    }

    /// A path from options, resolved against the config file's directory. The file is a
    /// dependency of the component: the engine rebuilds the component, and the bindings that
    /// use it, when the file's contents change, and the binary watches it.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let path = PathBuf::from(path);
        let path = if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        };
        files::record(&path);
        path
    }
}

/// The files components read while being built, with a digest of their contents taken before
/// the component reads them: a change made after that shows as a changed digest on the next
/// reload, never as stale contents under an unchanged digest.
pub(crate) mod files {
    use std::cell::RefCell;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};
    use std::path::{Path, PathBuf};

    thread_local! {
        // Building is synchronous, so the files one build reads are those recorded on its
        // thread between `recording` starting and ending. Keeping the log here, rather than in
        // `ComponentContext`, leaves that struct's shape unchanged for component crates.
        static READ: RefCell<Option<Vec<(PathBuf, u64)>>> = const { RefCell::new(None) };
    }

    /// Runs `build`, returning what it returned and the files it resolved with their digests.
    pub(crate) fn recording<T>(build: impl FnOnce() -> T) -> (T, Vec<(PathBuf, u64)>) {
        let outer = READ.with(|read| read.borrow_mut().replace(Vec::new()));
        let result = build();
        let files = READ
            .with(|read| std::mem::replace(&mut *read.borrow_mut(), outer))
            .unwrap_or_default();
        (result, files)
    }

    pub(super) fn record(path: &Path) {
        READ.with(|read| {
            if let Some(files) = read.borrow_mut().as_mut() {
                files.push((path.to_owned(), digest(path)));
            }
        });
    }

    /// A digest of a file's contents, or of a directory's file names and contents (one level,
    /// as PEM stores read them); a missing file digests to a fixed value.
    pub(crate) fn digest(path: &Path) -> u64 {
        let mut hasher = DefaultHasher::new();
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut names: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .collect();
                names.sort();
                for name in names {
                    name.hash(&mut hasher);
                    std::fs::read(&name).ok().hash(&mut hasher);
                }
            }
            Err(_) => std::fs::read(path).ok().hash(&mut hasher),
        }
        hasher.finish()
    }
}

/// A schema store (`catalogs:`).
///
/// Lookups may be answered from a cache filled from a remote registry; the error says why a
/// schema could not be found (unknown, or the registry unreachable, naming it).
pub trait Catalog: Send + Sync + 'static {
    /// The schema id for `subject` at `version` (`latest` allowed).
    fn resolve_subject(&self, subject: &str, version: &str) -> Result<u32, String>;
    /// The schema text for `id`.
    fn schema(&self, id: u32) -> Result<Arc<str>, String>;
    /// Starts fetching the schema with `id` unless [`schema`](Self::schema) would answer
    /// without waiting (it is held, or is known to be unavailable right now). The future
    /// completes once the fetch has landed or failed, or after a bounded wait; `schema` then
    /// answers at once. Async paths await it first, so a slow catalog holds up only the
    /// message that names a new id, never the thread it runs on.
    fn fetch(&self, _id: u32) -> Option<Fetching> {
        None
    }
    /// The bytes put before an encoded message to name its schema (a schema registry's
    /// magic byte and id); empty for catalogs whose messages carry no prefix.
    fn prefix(&self, _id: u32) -> Vec<u8> {
        Vec::new()
    }
    /// The schema id a message's prefix names, and the rest of the message; `Ok(None)` for
    /// catalogs whose messages carry no prefix.
    fn unprefix<'a>(&self, _data: &'a [u8]) -> Result<Option<(u32, &'a [u8])>, String> {
        Ok(None)
    }
}

/// A model: validates (and may convert) one message.
///
/// A model converts only where it has a `view` different from the stored form (`avro` with
/// `view: json`): `encode` turns a message a client wrote into the form it is stored in (a
/// Kafka record the gateway produces), `decode` turns a stored message into the view clients
/// read. `Ok(None)` means the message passes unchanged.
pub trait Validator: Send + Sync + 'static {
    /// `Ok` when `data` is valid; the error says why not.
    fn validate(&self, data: &[u8]) -> Result<(), String>;

    /// Validates a message on its way into storage and converts it to the stored form.
    fn encode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.validate(data).map(|()| None)
    }

    /// Validates a stored message and converts it to the view clients read.
    fn decode(&self, data: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.validate(data).map(|()| None)
    }

    /// What `data` needs fetched before `validate`, `encode` or `decode` can answer it
    /// without waiting (a schema its prefix names that is not cached yet), as
    /// [`Catalog::fetch`]; `None` when nothing is.
    fn fetch(&self, _data: &[u8]) -> Option<Fetching> {
        None
    }
}

/// A fetch in progress (a catalog's schema), awaited before the synchronous call that needs
/// it.
pub type Fetching = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a model factory gets besides the reference itself.
pub struct ModelContext<'a> {
    /// Finds the catalogs the reference names.
    pub catalogs: &'a dyn CatalogLookup,
    /// Where the model raises its `MODEL_<TYPE>_VALIDATION_FAILED` events: the events of the
    /// binding that uses it.
    pub events: &'a crate::events::Events,
    /// The subject a `{strategy: topic}` schema reference resolves to (`<topic>-value` or
    /// `<topic>-key` for a Kafka topic's models); `None` where messages have no topic.
    pub topic_subject: Option<&'a str>,
}

impl std::fmt::Debug for ModelContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelContext")
            .field("topic_subject", &self.topic_subject)
            .finish_non_exhaustive()
    }
}

/// Builds one model type from its inline reference in binding options: a bare type name
/// (`json`) or an object (`{model: json, catalog: {...}, ...}`).
pub trait ModelFactory: Send + Sync + 'static {
    /// The model type, e.g. `json`.
    fn type_name(&self) -> &'static str;
    /// The schema of the model object (with `model` and its own keys).
    fn schema(&self) -> serde_json::Value;
    /// Builds from the reference (always an object here: a bare name arrives as
    /// `{"model": "<name>"}`).
    fn build(
        &self,
        reference: &serde_json::Value,
        context: &ModelContext<'_>,
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

/// A key/value store (`stores:`), shared by the bindings that name it (`BuildContext::store`):
/// state a binding keeps about its clients, such as which connection owns an MQTT client
/// identifier. Keys are text, values opaque bytes. A store holds a bounded number of bytes and
/// refuses a write that would take it past its bound.
pub trait Store: Send + Sync + 'static {
    /// The value under `key`.
    fn get(&self, key: &str) -> StoreValue;
    /// Sets `key`, returning the value it replaced.
    fn put(&self, key: &str, value: &[u8]) -> Result<StoreValue, StoreFull>;
    /// Sets `key` only where it is absent: `None` when set, else the value it holds.
    fn put_if_absent(&self, key: &str, value: &[u8]) -> Result<StoreValue, StoreFull>;
    /// Removes `key` if it holds `expected` (whatever it holds when `None`); whether it did.
    fn delete(&self, key: &str, expected: Option<&[u8]>) -> bool;
    /// Follows `key`: the watcher sees its value now and is told of every change.
    fn watch(&self, key: &str) -> Result<StoreWatch, StoreFull>;
}

/// A store refused a write: holding it would take the store past its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("store full: {held} of {maximum} bytes held, {needed} more needed")]
pub struct StoreFull {
    /// Bytes held now.
    pub held: usize,
    /// The bound.
    pub maximum: usize,
    /// What the refused write needed.
    pub needed: usize,
}

pub use crate::events::Exporter;
pub use crate::store_watch::{StoreValue, StoreWatch, StoreWatchers, WatchClosed};

/// A model reference's `validate`: one mode for both directions, or one per direction
/// (`{decode, encode}`), strict unless said otherwise. `decode` applies to messages arriving
/// at the gateway and to stored messages read back (`Validator::validate`,
/// `Validator::decode`); `encode` to messages the gateway stores (`Validator::encode`).
#[derive(Debug, Clone, Copy, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged, expecting = "`strict`, `lenient` or `{decode, encode}`")]
pub enum ValidateConfig {
    /// Both directions.
    Mode(ValidateMode),
    /// Per direction.
    Directions(ValidateDirections),
}

impl ValidateConfig {
    /// The mode for messages arriving at the gateway or read from storage.
    pub fn decode(self) -> ValidateMode {
        match self {
            ValidateConfig::Mode(mode) => mode,
            ValidateConfig::Directions(directions) => {
                directions.decode.unwrap_or(ValidateMode::Strict)
            }
        }
    }

    /// The mode for messages the gateway stores.
    pub fn encode(self) -> ValidateMode {
        match self {
            ValidateConfig::Mode(mode) => mode,
            ValidateConfig::Directions(directions) => {
                directions.encode.unwrap_or(ValidateMode::Strict)
            }
        }
    }
}

/// `validate: {decode, encode}`.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateDirections {
    /// For messages arriving at the gateway and stored messages read back.
    pub decode: Option<ValidateMode>,
    /// For messages the gateway stores.
    pub encode: Option<ValidateMode>,
}

/// Whether a message that breaks its model's constraints is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidateMode {
    /// Reject it.
    #[default]
    Strict,
    /// Let it through, raising the validation failed event. Malformed messages (which
    /// cannot be read as the model's type at all) are still rejected.
    Lenient,
}

/// `key`, when `given`, refused at its place: `component` takes none.
fn refuse(key: &str, given: bool, component: &str) -> Result<(), BuildError> {
    if given {
        return Err(BuildError::at(key, format!("{component} takes no `{key}`")));
    }
    Ok(())
}
