//! The `filesystem` catalog: one schema per subject, read from a file. The files are
//! watched: a changed file is read again and its subject answers with the new schema from
//! then on, without a restart (models built at load keep the schema they resolved, except
//! those that ask the catalog per message, such as `avro` encoding for a subject). Earlier
//! schemas stay known by id, so messages written with them still decode.
//!
//! Each schema's id is the CRC-32C of its text, as for the `inline` catalog (and Zilla).
//! A file missing or unreadable at load fails the load; one that disappears later leaves
//! its last schema in service.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   schemas:
//!     type: filesystem
//!     options:
//!       subjects:
//!         items:
//!           path: schemas/items.json
//! bindings:
//!   http_server:
//!     type: http
//!     kind: server
//!     options:
//!       requests:
//!         - path: /items
//!           content:
//!             model: json
//!             catalog:
//!               schemas:
//!                 - subject: items
//!     exit: echo_server
//!   echo_server:
//!     type: echo
//!     kind: server
//! ```
//!
//! Options:
//! - `subjects`: by subject name, `{path}`: the schema file, relative to the config file's
//!   directory. Each subject has one version: ask for `latest`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use notify::{RecursiveMode, Watcher};
use schemars::JsonSchema;
use serde::Deserialize;
use zilla_engine::components::{Catalog, ComponentContext, ComponentFactory};
use zilla_engine::{BuildError, Registry};

/// The most schemas (current and earlier) a catalog keeps.
pub const MAX_SCHEMAS: usize = 4096;
/// The largest schema file read, in bytes.
pub const MAX_SCHEMA_BYTES: u64 = 16 * 1024 * 1024;

/// `options` of a `filesystem` catalog.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesystemOptions {
    /// The schema files, by subject.
    #[schemars(extend("propertyNames" = {"pattern": "^[a-zA-Z]+[a-zA-Z0-9\\._\\-]*$"}))]
    pub subjects: BTreeMap<String, FilesystemSubject>,
}

/// One subject of a filesystem catalog.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSubject {
    /// The schema file.
    pub path: String,
}

/// Registers the `filesystem` catalog type.
pub fn register(registry: &mut Registry) {
    registry.catalog(FilesystemCatalogFactory);
}

/// Builds filesystem catalogs.
#[derive(Debug)]
pub struct FilesystemCatalogFactory;

impl ComponentFactory<dyn Catalog> for FilesystemCatalogFactory {
    fn type_name(&self) -> &'static str {
        "filesystem"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(
            FilesystemOptions
        )))
    }

    fn options_required(&self) -> bool {
        true
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
        context.refuse_vault("a filesystem catalog")?;
        let options: FilesystemOptions = context.options()?;
        let files = options
            .subjects
            .iter()
            .map(|(subject, entry)| (subject.clone(), context.resolve_path(&entry.path)))
            .collect();
        Ok(Arc::new(FilesystemCatalog::new(files)?))
    }
}

#[derive(Debug, Default)]
struct Known {
    current: HashMap<String, u32>,
    schemas: HashMap<u32, Arc<str>>,
}

impl Known {
    fn learn(&mut self, subject: &str, text: String) {
        let id = crc32c::crc32c(text.as_bytes());
        if !self.schemas.contains_key(&id) {
            if self.schemas.len() >= MAX_SCHEMAS {
                // Forget earlier schemas no subject answers with now.
                let current: Vec<u32> = self.current.values().copied().collect();
                self.schemas.retain(|id, _| current.contains(id));
            }
            self.schemas.insert(id, Arc::from(text));
        }
        self.current.insert(subject.to_owned(), id);
    }
}

/// A built filesystem catalog.
pub struct FilesystemCatalog {
    known: Arc<RwLock<Known>>,
    // Dropping it stops watching.
    _watcher: std::sync::Mutex<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for FilesystemCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesystemCatalog").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, String> {
    let metadata =
        std::fs::metadata(path).map_err(|error| format!("`{}`: {error}", path.display()))?;
    if metadata.len() > MAX_SCHEMA_BYTES {
        return Err(format!(
            "`{}` is larger than {MAX_SCHEMA_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|error| format!("`{}`: {error}", path.display()))
}

impl FilesystemCatalog {
    /// Reads every `(subject, file)` and watches the files.
    pub fn new(files: Vec<(String, PathBuf)>) -> Result<Self, BuildError> {
        let mut known = Known::default();
        for (subject, path) in &files {
            let text = read(path).map_err(|message| {
                BuildError::at(format!("options.subjects.{subject}"), message)
            })?;
            known.learn(subject, text);
        }
        let known = Arc::new(RwLock::new(known));
        let watched = known.clone();
        let subjects = files.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            if event.kind.is_access() {
                return;
            }
            for (subject, path) in &subjects {
                // Editors often write a new file and rename it over the old one: match by
                // name within the watched directory.
                if !event.paths.iter().any(|changed| changed.file_name() == path.file_name()) {
                    continue;
                }
                match read(path) {
                    Ok(text) => {
                        if let Ok(mut known) = watched.write() {
                            known.learn(subject, text);
                        }
                        tracing::info!(subject, path = %path.display(), "schema reloaded");
                    }
                    Err(error) => {
                        tracing::warn!(subject, %error, "schema file unreadable; the last schema stays in use");
                    }
                }
            }
        })
        .map_err(|error| BuildError::at("options", format!("cannot watch the schema files: {error}")))?;
        let mut directories: Vec<PathBuf> = files
            .iter()
            .filter_map(|(_, path)| path.parent().map(Path::to_path_buf))
            .collect();
        directories.sort();
        directories.dedup();
        for directory in directories {
            watcher
                .watch(&directory, RecursiveMode::NonRecursive)
                .map_err(|error| {
                    BuildError::at(
                        "options",
                        format!("cannot watch `{}`: {error}", directory.display()),
                    )
                })?;
        }
        Ok(Self {
            known,
            _watcher: std::sync::Mutex::new(watcher),
        })
    }
}

impl Catalog for FilesystemCatalog {
    fn resolve_subject(&self, subject: &str, version: &str) -> Result<u32, String> {
        if version != "latest" {
            return Err(format!(
                "subject `{subject}` has one version, `latest`; `{version}` was asked"
            ));
        }
        self.known
            .read()
            .ok()
            .and_then(|known| known.current.get(subject).copied())
            .ok_or_else(|| format!("no schema for subject `{subject}`"))
    }

    fn schema(&self, id: u32) -> Result<Arc<str>, String> {
        self.known
            .read()
            .ok()
            .and_then(|known| known.schemas.get(&id).cloned())
            .ok_or_else(|| format!("no schema with id {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn subjects_read_from_files_and_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("items.json");
        std::fs::write(&path, r#"{"type": "string"}"#).unwrap();
        let catalog = FilesystemCatalog::new(vec![("items".to_owned(), path.clone())]).unwrap();
        let first = catalog.resolve_subject("items", "latest").unwrap();
        assert_eq!(first, crc32c::crc32c(br#"{"type": "string"}"#));
        assert_eq!(
            catalog.schema(first).unwrap().as_ref(),
            r#"{"type": "string"}"#
        );
        assert!(catalog.resolve_subject("items", "1").is_err());
        assert!(catalog.resolve_subject("other", "latest").is_err());

        // Replaced the way editors do: a new file renamed over the old one.
        let staged = dir.path().join(".items.json.tmp");
        std::fs::write(&staged, r#"{"type": "long"}"#).unwrap();
        std::fs::rename(&staged, &path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let second = loop {
            let id = catalog.resolve_subject("items", "latest").unwrap();
            if id != first {
                break id;
            }
            assert!(Instant::now() < deadline, "the change was not picked up");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            catalog.schema(second).unwrap().as_ref(),
            r#"{"type": "long"}"#
        );
        // The earlier schema stays known by id.
        assert!(catalog.schema(first).is_ok());

        // Removed: the last schema stays in service.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(catalog.resolve_subject("items", "latest").unwrap(), second);
    }

    #[test]
    fn a_missing_file_fails_the_load_at_its_subject() {
        let dir = tempfile::tempdir().unwrap();
        let error =
            FilesystemCatalog::new(vec![("items".to_owned(), dir.path().join("nope.json"))])
                .unwrap_err();
        assert_eq!(error.path, "options.subjects.items");
        assert!(error.message.contains("nope.json"), "{error}");
    }
}
