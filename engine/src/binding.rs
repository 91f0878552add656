//! Bindings: the factory a component crate registers, and what it gets while building.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use crate::components::BuildError;
pub use crate::config::types::BindingSchema;
pub use crate::kinds::Published;

use crate::components::ModelLookup;
use crate::config::model::{BindingConfig, BindingKind, QualifiedName};
use crate::events::Events;
use crate::kinds::Kinds;
use crate::listeners::ListenerPool;
use crate::metrics::{BindingMetrics, Metrics};
use crate::properties::Properties;
use crate::route::{RouteConfig, Routes};
use crate::stream::StreamKind;
use crate::vault::Vault;

/// Registered once per binding `type`; builds bindings from config.
pub trait BindingFactory: Send + Sync + 'static {
    /// The config `type`, e.g. `tcp`.
    fn type_name(&self) -> &'static str;
    /// The kinds this type supports.
    fn kinds(&self) -> &'static [BindingKind];
    /// The stream kinds a binding of `kind` accepts when routed to.
    fn accepts(&self, kind: BindingKind) -> &'static [&'static str];
    /// The stream kind a binding of `kind` opens on its exits, `None` when it has no exit.
    fn emits(&self, kind: BindingKind) -> Option<&'static str>;
    /// The stream kind a binding of `kind` opens into its `entry` (remote kinds); by default
    /// the kind it opens on its exits.
    fn entry_emits(&self, kind: BindingKind) -> Option<&'static str> {
        self.emits(kind)
    }
    /// The option, `when` and `with` schemas for `kind`.
    fn schema(&self, kind: BindingKind) -> BindingSchema;
    /// The schema of the binding-level `catalog` of a binding of `kind`; `None` (the default)
    /// refuses the key. A type that takes one reads it with
    /// `zilla_cataloged::binding_catalog_schemas`.
    fn catalog_schema(&self, _kind: BindingKind) -> Option<serde_json::Value> {
        None
    }
    /// Whether a binding of `kind` reads the binding-level `vault` (through
    /// [`BuildContext::vault`]); a config giving one to a binding that does not is refused at
    /// load.
    fn uses_vault(&self, _kind: BindingKind) -> bool {
        false
    }
    /// What an [`crate::registry::Expander`] recognises a composite binding type by (its own
    /// factory type, to downcast); `None` (the default) for every other type.
    fn composite(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// Builds one binding. Must not start serving: that happens in [`Binding::start`], once the
    /// whole config has been built.
    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError>;
}

/// A built binding.
pub trait Binding: Send + Sync + 'static {
    /// Starts the binding's own activity (accept loops, timers). Called once, after the whole
    /// config was built and before it replaces the previous one.
    fn start(&self, _context: &StartContext) {}
}

/// What a binding gets when it starts.
#[derive(Debug, Clone)]
pub struct StartContext {
    /// Cancelled when what is left of a retired binding's connections must end: the drain
    /// timeout after a reload replaced it passed (or its connections all ended), or shutdown
    /// drained. Cut whatever is still open.
    pub retired: CancellationToken,
    /// Cancelled when the binding stops taking new work: the gateway shuts down, or a reload
    /// replaced the binding. Stop accepting, let open connections and exchanges finish (end
    /// idle keep-alive connections and long-lived streams at a clean point).
    pub shutdown: CancellationToken,
    /// Tracks this binding's connection tasks: a reload waits for those of a replaced binding
    /// (up to the drain timeout) before cancelling `retired`, and shutdown waits for all.
    pub tasks: tokio_util::task::TaskTracker,
    /// Where the binding's events go.
    pub events: Events,
}

impl StartContext {
    /// Cancels `stopping` with [`Self::shutdown`] and then `retired` with [`Self::retired`]:
    /// for a binding whose work watches tokens of its own, made when it was built.
    pub fn forward_to(&self, stopping: CancellationToken, retired: CancellationToken) {
        let (shutdown, cut) = (self.shutdown.clone(), self.retired.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stopping.cancel();
            cut.cancelled().await;
            retired.cancel();
        });
    }
}

/// A vault, guard, catalog or store: its category's noun (`vault`, ...) and qualified name.
pub(crate) type ComponentName = (&'static str, QualifiedName);

/// Catalogs as one binding's config names them.
struct NamespaceCatalogs<'a> {
    name: &'a QualifiedName,
    catalogs: &'a HashMap<QualifiedName, Arc<dyn crate::components::Catalog>>,
    used: &'a RefCell<BTreeSet<ComponentName>>,
}

impl crate::components::CatalogLookup for NamespaceCatalogs<'_> {
    fn catalog(&self, name: &str) -> Option<Arc<dyn crate::components::Catalog>> {
        let name = self.name.resolve(name);
        let found = self.catalogs.get(&name).cloned();
        self.used.borrow_mut().insert(("catalog", name));
        found
    }
}

/// Everything a factory needs to build one binding.
pub struct BuildContext<'a> {
    pub(crate) name: &'a QualifiedName,
    pub(crate) config: &'a BindingConfig,
    pub(crate) exits: &'a HashMap<QualifiedName, Arc<Published>>,
    pub(crate) vaults: &'a HashMap<QualifiedName, Arc<dyn Vault>>,
    pub(crate) guards: &'a HashMap<QualifiedName, Arc<dyn crate::guard::Guard>>,
    pub(crate) catalogs: &'a HashMap<QualifiedName, Arc<dyn crate::components::Catalog>>,
    pub(crate) stores: &'a HashMap<QualifiedName, Arc<dyn crate::components::Store>>,
    pub(crate) models: &'a dyn ModelLookup,
    pub(crate) kinds: &'a Kinds,
    pub(crate) published: Published,
    pub(crate) listeners: &'a ListenerPool,
    pub(crate) connections: &'a Arc<crate::limits::ConnectionGate>,
    pub(crate) metrics: &'a Metrics,
    pub(crate) properties: &'a Properties,
    pub(crate) events: Events,
    /// The vaults, guards, catalogs and stores the factory looked up: the binding's signature covers
    /// exactly these, so a reload that changes another component keeps the binding.
    pub(crate) used: RefCell<BTreeSet<ComponentName>>,
}

impl fmt::Debug for BuildContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<'a> BuildContext<'a> {
    /// The binding's qualified name.
    pub fn name(&self) -> &QualifiedName {
        self.name
    }

    /// The binding's config.
    pub fn config(&self) -> &BindingConfig {
        self.config
    }

    /// The binding's kind.
    pub fn kind(&self) -> BindingKind {
        self.config.kind
    }

    /// The typed `options` (already schema-checked); `T::default()` when absent.
    pub fn options<T: DeserializeOwned + Default>(&self) -> Result<T, BuildError> {
        match &self.config.options {
            None => Ok(T::default()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|error| BuildError::at("options", error.to_string())),
        }
    }

    /// The handler for stream kind `K` of the binding named `exit` (relative to this binding's
    /// namespace). Kinds were checked at load, so a failure here is a bug in a factory.
    pub fn exit<K: StreamKind>(&self, exit: &str) -> Result<Arc<K::Handler>, BuildError> {
        let name = self.name.resolve(exit);
        let published = self.exits.get(&name);
        published
            .and_then(|published| {
                let sent = self.metrics().streams(crate::metrics::Direction::Sent);
                self.kinds.handler::<K>(published, sent)
            })
            .ok_or_else(|| {
                BuildError::at(
                    "exit",
                    format!("`{name}` does not accept {} streams", K::NAME),
                )
            })
    }

    /// The routes with typed conditions and `with`, each exit resolved to a handler of kind `K`.
    /// `compile` turns a raw `when` entry into the binding's matcher. The binding-level `exit`
    /// becomes the last, unconditional route.
    pub fn routes<K, Raw, C, W>(
        &self,
        compile: impl Fn(Raw) -> Result<C, String>,
    ) -> Result<Routes<C, W, Arc<K::Handler>>, BuildError>
    where
        K: StreamKind,
        Raw: DeserializeOwned,
        W: DeserializeOwned,
    {
        Routes::build(self.config, |exit| self.exit::<K>(exit), compile)
    }

    /// The raw routes, for bindings that interpret them themselves.
    pub fn route_configs(&self) -> &[RouteConfig] {
        &self.config.routes
    }

    /// The vault named by the binding's `vault` key.
    pub fn vault(&self) -> Result<Option<Arc<dyn Vault>>, BuildError> {
        match &self.config.vault {
            None => Ok(None),
            Some(vault) => {
                let name = self.name.resolve(vault);
                self.used.borrow_mut().insert(("vault", name.clone()));
                self.vaults
                    .get(&name)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| BuildError::at("vault", format!("unknown vault `{name}`")))
            }
        }
    }

    /// The guard named `guard` (relative to this binding's namespace), with its qualified name
    /// as routes' `guarded` and [`crate::guard::Authorization`] key it.
    pub fn guard(&self, guard: &str) -> Result<(String, Arc<dyn crate::guard::Guard>), BuildError> {
        let name = self.name.resolve(guard);
        self.used.borrow_mut().insert(("guard", name.clone()));
        self.guards
            .get(&name)
            .cloned()
            .map(|found| (name.to_string(), found))
            .ok_or_else(|| BuildError::at("", format!("unknown guard `{name}`")))
    }

    /// The guard named `guard`, for credentials a client presents (a header, an MQTT password,
    /// a SASL exchange): a guard that trusts what it is handed
    /// ([`crate::guard::Guard::trusts_credentials`]) is refused, since anyone could present a
    /// public certificate.
    pub fn presented_guard(
        &self,
        guard: &str,
    ) -> Result<(String, Arc<dyn crate::guard::Guard>), BuildError> {
        let (name, found) = self.guard(guard)?;
        if found.trusts_credentials() {
            return Err(BuildError::at(
                "",
                format!(
                    "guard `{name}` trusts the certificate chain a `tls` server verified and proves nothing itself: it cannot authorize credentials a client presents"
                ),
            ));
        }
        Ok((name, found))
    }

    /// The store named `store` (relative to this binding's namespace), shared with every
    /// binding that names it.
    pub fn store(&self, store: &str) -> Result<Arc<dyn crate::components::Store>, BuildError> {
        let name = self.name.resolve(store);
        self.used.borrow_mut().insert(("store", name.clone()));
        let found = self.stores.get(&name).cloned();
        found.ok_or_else(|| BuildError::at("", format!("unknown store `{name}`")))
    }

    /// A validator for a model reference in this binding's options (`json`, or
    /// `{model: json, catalog: {...}}`); `path` is where it was written, for errors.
    pub fn model(
        &self,
        reference: &serde_json::Value,
        path: &str,
    ) -> Result<Arc<dyn crate::components::Validator>, BuildError> {
        self.model_with_subject(reference, path, None)
    }

    /// A validator for a model reference whose messages belong to a Kafka topic:
    /// `topic_subject` (`<topic>-value` or `<topic>-key`) is what `{strategy: topic}`
    /// resolves to.
    pub fn model_with_subject(
        &self,
        reference: &serde_json::Value,
        path: &str,
        topic_subject: Option<&str>,
    ) -> Result<Arc<dyn crate::components::Validator>, BuildError> {
        let reference = match reference {
            serde_json::Value::String(name) => serde_json::json!({ "model": name }),
            other => other.clone(),
        };
        let type_name = reference
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let factory = self
            .models
            .find_model(&type_name)
            .map_err(|message| BuildError::at(path, message))?;
        let lookup = NamespaceCatalogs {
            name: self.name,
            catalogs: self.catalogs,
            used: &self.used,
        };
        let context = crate::components::ModelContext {
            catalogs: &lookup,
            events: &self.events,
            topic_subject,
        };
        factory.build(&reference, &context).map_err(|mut error| {
            error.path = if error.path.is_empty() {
                path.to_owned()
            } else {
                format!("{path}.{}", error.path)
            };
            error
        })
    }

    /// Runs `resolve` with this binding's catalogs and events, as a model would see them: how
    /// a component resolves schema references of its own (the binding-level `catalog`, read
    /// with `zilla_cataloged::binding_catalog_schemas`).
    pub fn with_model_context<R>(
        &self,
        resolve: impl FnOnce(&crate::components::ModelContext<'_>) -> R,
    ) -> R {
        let lookup = NamespaceCatalogs {
            name: self.name,
            catalogs: self.catalogs,
            used: &self.used,
        };
        resolve(&crate::components::ModelContext {
            catalogs: &lookup,
            events: &self.events,
            topic_subject: None,
        })
    }

    /// Offers `handler` for stream kind `K` to bindings that exit here.
    pub fn publish<K: StreamKind>(&mut self, handler: Arc<K::Handler>) {
        self.published.publish::<K>(handler);
    }

    /// Listening sockets, kept across reloads.
    pub fn listeners(&self) -> &ListenerPool {
        self.listeners
    }

    /// The process-wide connection cap (`zilla.engine.maximum.connections`), shared across
    /// reloads: every listener takes a permit from it for each connection it accepts.
    pub fn process_connections(&self) -> Arc<crate::limits::ConnectionGate> {
        self.connections.clone()
    }

    /// This binding's metrics (only those the config enables record anything).
    pub fn metrics(&self) -> BindingMetrics {
        self.metrics
            .set_binding_kind(self.name, &self.kind().to_string());
        self.metrics
            .binding(self.name, &self.config.telemetry_metrics)
    }

    /// Engine and binding properties given with `-P`.
    pub fn properties(&self) -> &Properties {
        self.properties
    }

    /// Where this binding's events go.
    pub fn events(&self) -> &Events {
        &self.events
    }
}
