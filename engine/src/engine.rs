//! The running gateway: builds a loaded config into bindings, swaps it in, reloads it, and
//! drains on shutdown.
//!
//! Reload keeps what did not change: a binding is reused (same instance, same listening
//! sockets, same connections) when its own config, the vaults, guards, catalogs and stores it uses
//! (their config and the files they read) and the bindings it exits to are unchanged.
//! Everything else is rebuilt; a rebuilt listener takes over the socket of the one it
//! replaces, so the port stays open. A replaced binding stops accepting, and the connections it
//! accepted finish on it, up to the drain timeout (`zilla.engine.drain.timeout.millis`), as
//! they would at shutdown: a reload cuts no connection that ends within that time. A new
//! config that fails to build leaves the running one untouched.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::binding::{Binding, BuildContext, ComponentName, Published, StartContext};
use crate::components::{ComponentContext, ComponentFactory, Exporter, Store, files};
use crate::config::load::{build_order, exits_of};
use crate::config::model::{ComponentConfig, Config, QualifiedName};
use crate::config::types::Category;
use crate::config::{ConfigError, ConfigErrors, EnvResolver, Source};
use crate::events::Events;
use crate::listeners::ListenerPool;
use crate::metrics::{Direction, Metrics};
use crate::properties::Properties;
use crate::registry::Registry;

struct Built {
    /// `own` with the signatures of the components in `uses`.
    signature: u64,
    /// The binding's own config, telemetry settings and the signatures of its exits.
    own: u64,
    /// The vaults, guards, catalogs and stores the binding looked up while building.
    uses: Vec<ComponentName>,
    binding: Arc<dyn Binding>,
    published: Arc<Published>,
    lifecycle: Lifecycle,
}

/// The tokens and tasks of one built binding.
#[derive(Clone)]
struct Lifecycle {
    /// Stop accepting: a child of the engine's shutdown token, also cancelled on retirement.
    shutdown: CancellationToken,
    /// Cut what is still open.
    retired: CancellationToken,
    tasks: TaskTracker,
}

struct Generation {
    config: Config,
    bindings: HashMap<QualifiedName, Arc<Built>>,
    exporters_stopped: CancellationToken,
    /// Files the components read, with their digests when read.
    files: Vec<(PathBuf, u64)>,
    /// The stores, with their signatures (see [`Engine::build`]).
    stores: HashMap<QualifiedName, (u64, Arc<dyn Store>)>,
}

/// How the registry looks up the factory of one category's types.
type FactoryOf<T> = for<'r> fn(&'r Registry, &str) -> Option<&'r Arc<dyn ComponentFactory<T>>>;

/// What building a config's components gathers besides the components themselves.
struct Components<'a> {
    config: &'a Config,
    /// Each built component's config and the contents of the files it read.
    signatures: HashMap<ComponentName, u64>,
    /// Every file a component read, with its digest.
    files: Vec<(PathBuf, u64)>,
    errors: Vec<ConfigError>,
}

/// What `build` produced.
struct Build {
    bindings: HashMap<QualifiedName, Arc<Built>>,
    exporters: Vec<Arc<dyn Exporter>>,
    files: Vec<(PathBuf, u64)>,
    stores: HashMap<QualifiedName, (u64, Arc<dyn Store>)>,
    report: ApplyReport,
}

/// How long retired bindings' connections may take to finish, unless set.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

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
    connections: Arc<crate::limits::ConnectionGate>,
    metrics: Metrics,
    events: Events,
    shutdown: CancellationToken,
    /// Every binding not yet cut: those running and those draining after a reload.
    lifecycles: Mutex<Vec<Lifecycle>>,
    drain: Duration,
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
        let drain = properties.millis("zilla.engine.drain.timeout.millis", DEFAULT_DRAIN);
        let metrics = Metrics::new(registry.metric_groups());
        Self {
            connections: crate::limits::ConnectionGate::from_properties(&properties),
            registry: Arc::new(registry),
            properties,
            listeners: ListenerPool::default(),
            metrics,
            events: Events::default(),
            shutdown: CancellationToken::new(),
            lifecycles: Mutex::new(Vec::new()),
            drain,
            current: Mutex::new(None),
        }
    }

    /// An engine that checks configs and never serves them: [`Self::check`] builds every
    /// component, so what only a build finds (a key that does not parse, a file that cannot be
    /// read) fails the check as it would fail a start, and no configured port is bound.
    pub fn checking(registry: Registry, properties: Properties) -> Self {
        Self {
            listeners: ListenerPool::dry_run(),
            ..Self::new(registry, properties)
        }
    }

    /// Builds `config` without starting or swapping in anything.
    pub fn check(&self, config: &Config) -> Result<(), ConfigErrors> {
        self.build(config, None).map(drop)
    }

    /// The files the running config's components read (key stores, ...): a change to one
    /// calls for a reload even when the config text is unchanged.
    pub fn dependencies(&self) -> Vec<PathBuf> {
        self.current
            .lock()
            .map(|current| {
                current
                    .iter()
                    .flat_map(|generation| generation.files.iter().map(|(path, _)| path.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a file the running config's components read has changed since.
    pub fn dependencies_changed(&self) -> bool {
        self.current
            .lock()
            .map(|current| {
                current.iter().any(|generation| {
                    generation
                        .files
                        .iter()
                        .any(|(path, digest)| files::digest(path) != *digest)
                })
            })
            .unwrap_or(false)
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The metric registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Loads and checks `text` as the config file `path`, substituting `${{env.X}}`, then
    /// runs the registry's expanders (composite bindings).
    pub fn load(&self, path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut config = load_config(&self.registry, path, text)?;
        for expander in self.registry.expanders() {
            config = expander.expand(&self.registry, &self.properties, config)?;
        }
        Ok(config)
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
        let Build {
            bindings,
            exporters,
            files,
            stores,
            report,
        } = match result {
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
                built.binding.start(&StartContext {
                    retired: built.lifecycle.retired.clone(),
                    shutdown: built.lifecycle.shutdown.clone(),
                    tasks: built.lifecycle.tasks.clone(),
                    events: self.events.named(qname(name)),
                });
                if let Ok(mut lifecycles) = self.lifecycles.lock() {
                    lifecycles.retain(|lifecycle| !lifecycle.retired.is_cancelled());
                    lifecycles.push(built.lifecycle.clone());
                }
            }
        }
        if let Some(previous) = previous {
            let mut retiring = Vec::new();
            for (name, old) in &previous.bindings {
                let kept = bindings.get(name).is_some_and(|new| Arc::ptr_eq(new, old));
                if !kept {
                    retiring.push(old.lifecycle.clone());
                    report.retired += 1;
                }
            }
            self.retire(retiring);
            previous.exporters_stopped.cancel();
        }
        *current = Some(Generation {
            config,
            bindings,
            exporters_stopped,
            files,
            stores,
        });
        Ok(report)
    }

    /// Stops the replaced bindings accepting, lets the connections they accepted finish (up to
    /// the drain timeout), then cuts what remains. The replaced bindings form a closed group: a
    /// binding is replaced whenever one of its exits is, so no kept or new binding reaches them
    /// and their connections all run in the group's own tasks.
    fn retire(&self, retiring: Vec<Lifecycle>) {
        for lifecycle in &retiring {
            lifecycle.shutdown.cancel();
            lifecycle.tasks.close();
        }
        let cut = move |retiring: &[Lifecycle]| {
            for lifecycle in retiring {
                lifecycle.retired.cancel();
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let drain = self.drain;
                runtime.spawn(async move {
                    let finished = async {
                        for lifecycle in &retiring {
                            lifecycle.tasks.wait().await;
                        }
                    };
                    if tokio::time::timeout(drain, finished).await.is_err() {
                        tracing::info!(
                            "connections of replaced bindings still open after {drain:?}: closing them"
                        );
                    }
                    cut(&retiring);
                });
            }
            Err(_) => cut(&retiring),
        }
    }

    fn build(&self, config: &Config, previous: Option<&Generation>) -> Result<Build, ConfigErrors> {
        let mut b = Components {
            config,
            signatures: HashMap::new(),
            files: Vec::new(),
            errors: Vec::new(),
        };
        let catalogs = self.components(&mut b, Category::Catalog, Registry::catalog_factory);
        let guards = self.components(&mut b, Category::Guard, Registry::guard_factory);
        let vaults = self.components(&mut b, Category::Vault, Registry::vault_factory);
        // A store holds state the bindings naming it share: while its config is unchanged the
        // running one is kept, so a binding this reload rebuilds shares it with those kept.
        let stores: HashMap<QualifiedName, (u64, Arc<dyn Store>)> = self
            .components(&mut b, Category::Store, Registry::store_factory)
            .into_iter()
            .map(|(name, store)| {
                let key = (Category::Store.noun(), name.clone());
                let signature = b.signatures.get(&key).copied().unwrap_or_default();
                let running = previous.and_then(|g| g.stores.get(&name));
                let store = match running {
                    Some((old, running)) if *old == signature => running.clone(),
                    _ => store,
                };
                (name, (signature, store))
            })
            .collect();
        let store_of: HashMap<QualifiedName, Arc<dyn Store>> = stores
            .iter()
            .map(|(name, (_, store))| (name.clone(), store.clone()))
            .collect();
        let exporters = self.components(&mut b, Category::Exporter, Registry::exporter_factory);
        let exporters: Vec<Arc<dyn Exporter>> = exporters.into_values().collect();
        let Components {
            signatures: component_signatures,
            files: all_files,
            mut errors,
            ..
        } = b;
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
        // A binding whose exit failed to build is not built: its own error would only repeat
        // that its exit accepts no streams.
        let mut failed: HashSet<QualifiedName> = HashSet::new();
        for name in order {
            let Some(binding) = by_name.get(&name) else {
                continue;
            };
            if exits_of(binding)
                .iter()
                .any(|(exit, _)| failed.contains(&name.resolve(exit)))
            {
                failed.insert(name);
                continue;
            }
            let mut hasher = DefaultHasher::new();
            json_text(&Some(binding.json.clone())).hash(&mut hasher);
            binding
                .telemetry_metrics
                .iter()
                .for_each(|m| m.hash(&mut hasher));
            namespace_metrics(Some(config))
                .get(&name.namespace)
                .hash(&mut hasher);
            for (exit, _) in exits_of(binding) {
                signatures.get(&name.resolve(&exit)).hash(&mut hasher);
            }
            let own = hasher.finish();
            // The same config builds the same way, so the components the running binding
            // looked up are the ones this config would: compare their signatures now.
            let reusable = previous.and_then(|g| g.bindings.get(&name)).filter(|old| {
                old.own == own && signature(own, &old.uses, &component_signatures) == old.signature
            });
            if let Some(old) = reusable {
                signatures.insert(name.clone(), old.signature);
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
                stores: &store_of,
                models: self.registry.as_ref(),
                kinds: self.registry.kinds(),
                published: Published {
                    received: binding_metrics.streams(Direction::Received),
                    ..Published::default()
                },
                listeners: &self.listeners,
                connections: &self.connections,
                metrics: &self.metrics,
                properties: &self.properties,
                events: self.events.named(qname(&name)),
                used: Default::default(),
            };
            match factory.build(&mut context) {
                Ok(instance) => {
                    let uses: Vec<ComponentName> = context.used.take().into_iter().collect();
                    let signature = signature(own, &uses, &component_signatures);
                    signatures.insert(name.clone(), signature);
                    let entry = Arc::new(Built {
                        signature,
                        own,
                        uses,
                        binding: instance,
                        published: Arc::new(std::mem::take(&mut context.published)),
                        lifecycle: Lifecycle {
                            shutdown: self.shutdown.child_token(),
                            retired: CancellationToken::new(),
                            tasks: TaskTracker::new(),
                        },
                    });
                    published.insert(name.clone(), entry.published.clone());
                    built.insert(name.clone(), entry);
                    report.built += 1;
                }
                Err(error) => {
                    errors.push(config.error(&binding.origin.relative(&error.path), error.message));
                    failed.insert(name);
                }
            }
        }
        if errors.is_empty() {
            Ok(Build {
                bindings: built,
                exporters,
                files: all_files,
                stores,
                report,
            })
        } else {
            Err(errors.into())
        }
    }

    /// Builds the components of `category` in every namespace, signing each with its config
    /// and the files it read. A type that is not registered was refused at load.
    fn components<T: ?Sized + 'static>(
        &self,
        b: &mut Components<'_>,
        category: Category,
        factory: FactoryOf<T>,
    ) -> HashMap<QualifiedName, Arc<T>> {
        let mut built = HashMap::new();
        for namespace in &b.config.namespaces {
            for (name, component) in category.declared(namespace) {
                let qualified = QualifiedName::new(&namespace.name, name);
                let Some(factory) = factory(&self.registry, &component.type_name) else {
                    continue;
                };
                let context = self.component_context(b.config, &qualified, component);
                match files::recording(|| factory.build(&context)) {
                    (Ok(instance), files) => {
                        let options = json_text(&component.options);
                        let signature = hash(&(component.type_name.as_str(), options, &files));
                        b.files.extend(files);
                        b.signatures
                            .insert((category.noun(), qualified.clone()), signature);
                        built.insert(qualified, instance);
                    }
                    (Err(error), _) => b.errors.push(
                        b.config
                            .error(&component.origin.relative(&error.path), error.message),
                    ),
                }
            }
        }
        built
    }

    fn component_context<'a>(
        &'a self,
        config: &'a Config,
        name: &'a QualifiedName,
        component: &'a ComponentConfig,
    ) -> ComponentContext<'a> {
        ComponentContext {
            name,
            config: component,
            base_dir: config.base_dir.clone(),
            properties: &self.properties,
            metrics: &self.metrics,
            telemetry_attributes: config
                .namespaces
                .iter()
                .find(|namespace| namespace.name == name.namespace)
                .map_or(&[], |namespace| namespace.telemetry.attributes.as_slice()),
            events: self.events.named(qname(name)),
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
        let lifecycles = self
            .lifecycles
            .lock()
            .map(|mut lifecycles| std::mem::take(&mut *lifecycles))
            .unwrap_or_default();
        for lifecycle in &lifecycles {
            lifecycle.tasks.close();
        }
        let finished = async {
            for lifecycle in &lifecycles {
                lifecycle.tasks.wait().await;
            }
        };
        let drained = tokio::time::timeout(drain, finished).await.is_ok();
        for lifecycle in &lifecycles {
            lifecycle.retired.cancel();
        }
        if let Ok(mut current) = self.current.lock()
            && let Some(generation) = current.take()
        {
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

/// A binding's signature: its own part and the signatures of the components it uses.
fn signature(own: u64, uses: &[ComponentName], components: &HashMap<ComponentName, u64>) -> u64 {
    let mut hasher = DefaultHasher::new();
    own.hash(&mut hasher);
    for component in uses {
        component.hash(&mut hasher);
        components.get(component).hash(&mut hasher);
    }
    hasher.finish()
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
