//! The running gateway: builds a loaded config into bindings, swaps it in, reloads it, and
//! drains on shutdown.
//!
//! Reload keeps what did not change: a binding is reused (same instance, same listening
//! sockets, same connections) when its own config, its vault's and those of every binding it
//! reaches through exits are unchanged. Everything else is rebuilt; a rebuilt listener takes
//! over the socket of the one it replaces, so the port stays open. A new config that fails to
//! build leaves the running one untouched.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::binding::{Binding, BuildContext, Published, StartContext};
use crate::components::{ComponentContext, Exporter};
use crate::config::load::{build_order, exits_of};
use crate::config::model::{Config, QualifiedName};
use crate::config::{ConfigError, ConfigErrors, EnvResolver, Source};
use crate::events::Events;
use crate::listeners::ListenerPool;
use crate::metrics::{Direction, Metrics};
use crate::properties::Properties;
use crate::registry::Registry;
use crate::vault::Vault;

struct Built {
    signature: u64,
    _binding: Arc<dyn Binding>,
    published: Arc<Published>,
    retired: CancellationToken,
}

struct Generation {
    config: Config,
    bindings: HashMap<QualifiedName, Arc<Built>>,
    exporters_stopped: CancellationToken,
}

/// What a successful apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// Bindings built anew.
    pub built: usize,
    /// Bindings kept from the running config, connections and all.
    pub kept: usize,
    /// Bindings of the running config that were retired.
    pub retired: usize,
}

/// The gateway engine.
pub struct Engine {
    registry: Arc<Registry>,
    properties: Properties,
    listeners: ListenerPool,
    metrics: Metrics,
    events: Events,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    current: Mutex<Option<Generation>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with nothing running.
    pub fn new(registry: Registry, properties: Properties) -> Self {
        Self {
            registry: Arc::new(registry),
            properties,
            listeners: ListenerPool::default(),
            metrics: Metrics::default(),
            events: Events::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            current: Mutex::new(None),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metric registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Loads and checks `text` as the config file `path`, substituting `${{env.X}}`.
    pub fn load(&self, path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        load_config(&self.registry, path, text)
    }

    /// Builds `config` and swaps it in for the running one. On error nothing changes.
    pub fn apply(&self, config: Config) -> Result<ApplyReport, ConfigErrors> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| internal(&config, "engine state poisoned"))?;
        let previous_metrics = namespace_metrics(current.as_ref().map(|g| &g.config));
        self.metrics
            .set_namespace_metrics(namespace_metrics(Some(&config)));
        let result = self.build(&config, current.as_ref());
        let (bindings, exporters, report) = match result {
            Ok(built) => built,
            Err(errors) => {
                self.metrics.set_namespace_metrics(previous_metrics);
                return Err(errors);
            }
        };
        // Start what is new, then swap, then retire what was replaced.
        let exporters_stopped = CancellationToken::new();
        for exporter in &exporters {
            exporter.start(exporters_stopped.clone());
        }
        self.events.set_exporters(exporters);
        let mut report = report;
        let previous = current.take();
        for (name, built) in &bindings {
            let reused = previous
                .as_ref()
                .and_then(|g| g.bindings.get(name))
                .is_some_and(|old| Arc::ptr_eq(old, built));
            if !reused {
                built._binding.start(&StartContext {
                    retired: built.retired.clone(),
                    shutdown: self.shutdown.clone(),
                    tasks: self.tasks.clone(),
                    events: self.events.named(qname(name)),
                });
            }
        }
        if let Some(previous) = previous {
            for (name, old) in &previous.bindings {
                let kept = bindings.get(name).is_some_and(|new| Arc::ptr_eq(new, old));
                if !kept {
                    old.retired.cancel();
                    report.retired += 1;
                }
            }
            previous.exporters_stopped.cancel();
        }
        *current = Some(Generation {
            config,
            bindings,
            exporters_stopped,
        });
        Ok(report)
    }

    #[allow(clippy::type_complexity)]
    fn build(
        &self,
        config: &Config,
        previous: Option<&Generation>,
    ) -> Result<
        (
            HashMap<QualifiedName, Arc<Built>>,
            Vec<Arc<dyn Exporter>>,
            ApplyReport,
        ),
        ConfigErrors,
    > {
        let mut errors = Vec::new();
        let mut vaults: HashMap<QualifiedName, Arc<dyn Vault>> = HashMap::new();
        let mut vault_signatures: HashMap<QualifiedName, u64> = HashMap::new();
        let mut exporters: Vec<Arc<dyn Exporter>> = Vec::new();
        let mut guards: HashMap<QualifiedName, Arc<dyn crate::guard::Guard>> = HashMap::new();
        let mut catalogs: HashMap<QualifiedName, Arc<dyn crate::components::Catalog>> =
            HashMap::new();
        for namespace in &config.namespaces {
            for (name, catalog) in &namespace.catalogs {
                let qualified = QualifiedName::new(&namespace.name, name);
                let Some(factory) = self.registry.catalog_factory(&catalog.type_name) else {
                    continue;
                };
                let context = self.component_context(config, &qualified, catalog);
                match factory.build(&context) {
                    Ok(built) => {
                        vault_signatures.insert(
                            qualified.clone(),
                            hash(&(catalog.type_name.as_str(), json_text(&catalog.options))),
                        );
                        catalogs.insert(qualified, built);
                    }
                    Err(error) => errors
                        .push(config.error(&catalog.origin.relative(&error.path), error.message)),
                }
            }
            for (name, guard) in &namespace.guards {
                let qualified = QualifiedName::new(&namespace.name, name);
                let Some(factory) = self.registry.guard_factory(&guard.type_name) else {
                    continue;
                };
                let context = self.component_context(config, &qualified, guard);
                match factory.build(&context) {
                    Ok(built) => {
                        vault_signatures.insert(
                            qualified.clone(),
                            hash(&(guard.type_name.as_str(), json_text(&guard.options))),
                        );
                        guards.insert(qualified, built);
                    }
                    Err(error) => errors
                        .push(config.error(&guard.origin.relative(&error.path), error.message)),
                }
            }
            for (name, vault) in &namespace.vaults {
                let qualified = QualifiedName::new(&namespace.name, name);
                let Some(factory) = self.registry.vault_factory(&vault.type_name) else {
                    continue;
                };
                let context = self.component_context(config, &qualified, vault);
                match factory.build(&context) {
                    Ok(built) => {
                        vault_signatures.insert(
                            qualified.clone(),
                            hash(&(vault.type_name.as_str(), json_text(&vault.options))),
                        );
                        vaults.insert(qualified, built);
                    }
                    Err(error) => errors
                        .push(config.error(&vault.origin.relative(&error.path), error.message)),
                }
            }
            for (name, exporter) in &namespace.telemetry.exporters {
                let qualified = QualifiedName::new(&namespace.name, name);
                let Some(factory) = self.registry.exporter_factory(&exporter.type_name) else {
                    continue;
                };
                let context = self.component_context(config, &qualified, exporter);
                match factory.build(&context) {
                    Ok(built) => exporters.push(built),
                    Err(error) => errors
                        .push(config.error(&exporter.origin.relative(&error.path), error.message)),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        let order = build_order(config).map_err(|cycle| {
            internal(config, &format!("exits form a cycle through {}", cycle[0]))
        })?;
        let by_name: HashMap<QualifiedName, _> = config.bindings().collect();
        let mut signatures: HashMap<QualifiedName, u64> = HashMap::new();
        let mut built: HashMap<QualifiedName, Arc<Built>> = HashMap::new();
        let mut published: HashMap<QualifiedName, Arc<Published>> = HashMap::new();
        let mut report = ApplyReport::default();
        for name in order {
            let Some(binding) = by_name.get(&name) else {
                continue;
            };
            let mut hasher = DefaultHasher::new();
            json_text(&Some(binding.json.clone())).hash(&mut hasher);
            binding
                .telemetry_metrics
                .iter()
                .for_each(|m| m.hash(&mut hasher));
            namespace_metrics(Some(config))
                .get(&name.namespace)
                .hash(&mut hasher);
            if let Some(vault) = &binding.vault {
                vault_signatures.get(&name.resolve(vault)).hash(&mut hasher);
            }
            for (exit, _) in exits_of(binding) {
                signatures.get(&name.resolve(&exit)).hash(&mut hasher);
            }
            // Guards and catalogs a binding uses change its behaviour: their config is part of
            // its signature.
            for namespace in &config.namespaces {
                for (component, _) in namespace.guards.iter().chain(&namespace.catalogs) {
                    vault_signatures
                        .get(&QualifiedName::new(&namespace.name, component))
                        .hash(&mut hasher);
                }
            }
            let signature = hasher.finish();
            signatures.insert(name.clone(), signature);
            let reusable = previous
                .and_then(|g| g.bindings.get(&name))
                .filter(|old| old.signature == signature);
            if let Some(old) = reusable {
                published.insert(name.clone(), old.published.clone());
                built.insert(name.clone(), old.clone());
                report.kept += 1;
                continue;
            }
            let Some(factory) = self.registry.binding_factory(&binding.type_name) else {
                continue;
            };
            let binding_metrics = self.metrics.binding(&name, &binding.telemetry_metrics);
            let mut context = BuildContext {
                name: &name,
                config: binding,
                exits: &published,
                vaults: &vaults,
                guards: &guards,
                catalogs: &catalogs,
                models: self.registry.as_ref(),
                kinds: self.registry.kinds(),
                published: Published {
                    received: binding_metrics.streams(Direction::Received),
                    ..Published::default()
                },
                listeners: &self.listeners,
                metrics: &self.metrics,
                properties: &self.properties,
                events: self.events.named(qname(&name)),
            };
            match factory.build(&mut context) {
                Ok(instance) => {
                    let entry = Arc::new(Built {
                        signature,
                        _binding: instance,
                        published: Arc::new(std::mem::take(&mut context.published)),
                        retired: CancellationToken::new(),
                    });
                    published.insert(name.clone(), entry.published.clone());
                    built.insert(name.clone(), entry);
                    report.built += 1;
                }
                Err(error) => {
                    errors.push(config.error(&binding.origin.relative(&error.path), error.message))
                }
            }
        }
        if errors.is_empty() {
            Ok((built, exporters, report))
        } else {
            Err(errors.into())
        }
    }

    fn component_context<'a>(
        &'a self,
        config: &Config,
        name: &'a QualifiedName,
        component: &'a crate::config::model::ComponentConfig,
    ) -> ComponentContext<'a> {
        ComponentContext {
            name,
            config: component,
            base_dir: config.base_dir.clone(),
            properties: &self.properties,
            metrics: &self.metrics,
        }
    }

    /// Every listening socket, by binding.
    pub fn listening(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.bound()
    }

    /// Stops accepting everywhere and waits up to `drain` for open streams to finish; returns
    /// whether they all did.
    pub async fn shutdown(&self, drain: Duration) -> bool {
        self.shutdown.cancel();
        self.tasks.close();
        let drained = tokio::time::timeout(drain, self.tasks.wait()).await.is_ok();
        if let Ok(mut current) = self.current.lock()
            && let Some(generation) = current.take()
        {
            for built in generation.bindings.values() {
                built.retired.cancel();
            }
            generation.exporters_stopped.cancel();
        }
        drained
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// Loads and checks `text` as the config file at `path` against `registry`.
pub fn load_config(registry: &Registry, path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let source = Source::new(file, text, &EnvResolver).map_err(ConfigErrors::from)?;
    let mut config = crate::config::load(source, registry)?;
    config.base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    Ok(config)
}

fn namespace_metrics(config: Option<&Config>) -> BTreeMap<String, Vec<String>> {
    config
        .map(|config| {
            config
                .namespaces
                .iter()
                .map(|ns| (ns.name.clone(), ns.telemetry.metrics.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The name events carry, `namespace:name` as Zilla writes it.
fn qname(name: &QualifiedName) -> String {
    name.to_string()
}

fn json_text(value: &Option<serde_json::Value>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn internal(config: &Config, message: &str) -> ConfigErrors {
    ConfigErrors::one(ConfigError::new(
        &config.source.file,
        Default::default(),
        "",
        message,
    ))
}
