//! The explicit, static registry of component types. Each component crate exports
//! `register(&mut Registry)`; the `zilla` crate calls them in one feature-gated list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::binding::BindingFactory;
use crate::components::{Catalog, ComponentFactory, Exporter, ModelFactory, ModelLookup, Store};
use crate::config::ConfigError;
use crate::config::model::{BindingKind, Config};
use crate::config::types::{BindingSchema, BindingType, Types};
pub use crate::config::types::{Category, namespace_schema};
use crate::guard::Guard;
use crate::kinds::Kinds;
use crate::limits::MAXIMUM_CONNECTIONS_PROPERTY;
use crate::metrics::{MetricDescriptor, MetricGroup, STREAM_METRICS};
use crate::properties::Properties;
use crate::stream::StreamKind;
use crate::vault::Vault;

/// Every component type compiled into this distribution.
#[derive(Default)]
pub struct Registry {
    kinds: Kinds,
    /// Types the configs this distribution reads may name but that it does not build in.
    known: BTreeMap<Category, Vec<&'static str>>,
    bindings: BTreeMap<&'static str, Arc<dyn BindingFactory>>,
    vaults: BTreeMap<&'static str, Arc<dyn ComponentFactory<dyn Vault>>>,
    guards: BTreeMap<&'static str, Arc<dyn ComponentFactory<dyn Guard>>>,
    catalogs: BTreeMap<&'static str, Arc<dyn ComponentFactory<dyn Catalog>>>,
    stores: BTreeMap<&'static str, Arc<dyn ComponentFactory<dyn Store>>>,
    exporters: BTreeMap<&'static str, Arc<dyn ComponentFactory<dyn Exporter>>>,
    models: BTreeMap<&'static str, Arc<dyn ModelFactory>>,
    metric_groups: Vec<&'static MetricGroup>,
    /// Metric groups the configs this distribution reads may name (Zilla's).
    known_metric_groups: Vec<&'static str>,
    properties: BTreeSet<&'static str>,
    expanders: Vec<(std::any::TypeId, Arc<dyn Expander>)>,
}

/// Rewrites a config after it loaded and before it is built: how composite bindings become
/// the bindings they generate (`zilla-composite`). Errors point into the config as written.
pub trait Expander: Send + Sync + 'static {
    /// `config` with this expander's work done.
    fn expand(
        &self,
        registry: &Registry,
        properties: &Properties,
        config: Config,
    ) -> Result<Config, crate::config::ConfigErrors>;
}

/// The properties the engine itself reads.
const ENGINE_PROPERTIES: &[&str] = &[
    "zilla.engine.drain.timeout.millis",
    MAXIMUM_CONNECTIONS_PROPERTY,
];

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("bindings", &self.bindings.keys().collect::<Vec<_>>())
            .field("vaults", &self.vaults.keys().collect::<Vec<_>>())
            .field("exporters", &self.exporters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry with no component type, and the engine's own adapters between the `bytes`
    /// and `messages` stream kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets a binding that publishes stream kind `From` be the exit of a caller of kind `To`:
    /// `adapt` wraps the published handler. A protocol crate registers how its kind is carried
    /// as [`crate::messages::Messages`], so the generic bindings (`echo`, `fan`) serve it
    /// without knowing it.
    pub fn adapter<From: StreamKind, To: StreamKind>(
        &mut self,
        adapt: fn(Arc<From::Handler>) -> Arc<To::Handler>,
    ) -> &mut Self {
        self.kinds.adapter::<From, To>(adapt);
        self
    }

    /// Whether a caller emitting stream kind `emitted` can use an exit that accepts `accepted`.
    pub fn carries(&self, emitted: &str, accepted: &str) -> bool {
        self.kinds.carries(emitted, accepted)
    }

    /// The adapters between stream kinds.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// Declares types of `category` that configs may name (Zilla's types, say) whether or not
    /// they are built in, so that a missing one is reported as not built into this
    /// distribution rather than as a typo. The engine holds no such list itself.
    pub fn known_types(&mut self, category: Category, types: &[&'static str]) -> &mut Self {
        self.known.entry(category).or_default().extend(types);
        self
    }

    /// Adds a binding type.
    pub fn binding(&mut self, factory: impl BindingFactory) -> &mut Self {
        self.bindings.insert(factory.type_name(), Arc::new(factory));
        self
    }

    /// Adds an expander, once per type however often it is added.
    pub fn expander<E: Expander>(&mut self, expander: E) -> &mut Self {
        let id = std::any::TypeId::of::<E>();
        if !self.expanders.iter().any(|(known, _)| *known == id) {
            self.expanders.push((id, Arc::new(expander)));
        }
        self
    }

    /// The expanders, in the order added.
    pub fn expanders(&self) -> impl Iterator<Item = &Arc<dyn Expander>> {
        self.expanders.iter().map(|(_, expander)| expander)
    }

    /// Adds a vault type.
    pub fn vault(&mut self, factory: impl ComponentFactory<dyn Vault>) -> &mut Self {
        self.vaults.insert(factory.type_name(), Arc::new(factory));
        self
    }

    /// Adds a guard type.
    pub fn guard(&mut self, factory: impl ComponentFactory<dyn Guard>) -> &mut Self {
        self.guards.insert(factory.type_name(), Arc::new(factory));
        self
    }

    /// Adds a catalog type.
    pub fn catalog(&mut self, factory: impl ComponentFactory<dyn Catalog>) -> &mut Self {
        self.catalogs.insert(factory.type_name(), Arc::new(factory));
        self
    }

    /// Adds a store type.
    pub fn store(&mut self, factory: impl ComponentFactory<dyn Store>) -> &mut Self {
        self.stores.insert(factory.type_name(), Arc::new(factory));
        self
    }

    /// Adds an exporter type.
    pub fn exporter(&mut self, factory: impl ComponentFactory<dyn Exporter>) -> &mut Self {
        self.exporters
            .insert(factory.type_name(), Arc::new(factory));
        self
    }

    /// Adds a model type.
    pub fn model(&mut self, factory: impl ModelFactory) -> &mut Self {
        self.models.insert(factory.type_name(), Arc::new(factory));
        self
    }

    /// Adds the metrics a component records.
    pub fn metric_group(&mut self, group: &'static MetricGroup) -> &mut Self {
        if !self
            .metric_groups
            .iter()
            .any(|known| known.name == group.name)
        {
            self.metric_groups.push(group);
        }
        self
    }

    /// Every metric group: the engine's `stream.*` first, then those components registered.
    pub fn metric_groups(&self) -> impl Iterator<Item = &'static MetricGroup> + '_ {
        std::iter::once(&STREAM_METRICS).chain(self.metric_groups.iter().copied())
    }

    /// The descriptor of a metric some registered component records.
    pub fn metric(&self, name: &str) -> Option<&'static MetricDescriptor> {
        self.metric_groups()
            .flat_map(|group| group.metrics.iter())
            .find(|metric| metric.name == name)
    }

    /// The model factory for `type_name`.
    pub fn model_factory(&self, type_name: &str) -> Option<&Arc<dyn ModelFactory>> {
        self.models.get(type_name)
    }

    /// The catalog factory for `type_name`.
    pub fn catalog_factory(
        &self,
        type_name: &str,
    ) -> Option<&Arc<dyn ComponentFactory<dyn Catalog>>> {
        self.catalogs.get(type_name)
    }

    /// The binding factory for `type_name`.
    pub fn binding_factory(&self, type_name: &str) -> Option<&Arc<dyn BindingFactory>> {
        self.bindings.get(type_name)
    }

    /// The vault factory for `type_name`.
    pub fn vault_factory(&self, type_name: &str) -> Option<&Arc<dyn ComponentFactory<dyn Vault>>> {
        self.vaults.get(type_name)
    }

    /// The guard factory for `type_name`.
    pub fn guard_factory(&self, type_name: &str) -> Option<&Arc<dyn ComponentFactory<dyn Guard>>> {
        self.guards.get(type_name)
    }

    /// The store factory for `type_name`.
    pub fn store_factory(&self, type_name: &str) -> Option<&Arc<dyn ComponentFactory<dyn Store>>> {
        self.stores.get(type_name)
    }

    /// The exporter factory for `type_name`.
    pub fn exporter_factory(
        &self,
        type_name: &str,
    ) -> Option<&Arc<dyn ComponentFactory<dyn Exporter>>> {
        self.exporters.get(type_name)
    }

    /// The registered types of a category.
    pub fn types(&self, category: Category) -> Vec<&'static str> {
        match category {
            Category::Binding => self.bindings.keys().copied().collect(),
            Category::Vault => self.vaults.keys().copied().collect(),
            Category::Guard => self.guards.keys().copied().collect(),
            Category::Catalog => self.catalogs.keys().copied().collect(),
            Category::Store => self.stores.keys().copied().collect(),
            Category::Exporter => self.exporters.keys().copied().collect(),
            Category::Model => self.models.keys().copied().collect(),
        }
    }

    /// The options schema of a non-binding component type, `(schema, required)`.
    pub fn component_schema(
        &self,
        category: Category,
        type_name: &str,
    ) -> Option<(Option<Value>, bool)> {
        if category == Category::Model {
            let factory = self.models.get(type_name)?;
            return Some((Some(factory.schema()), false));
        }
        self.component_facts(category, type_name)
            .map(|(schema, required, _)| (schema, required))
    }

    /// Whether a non-binding component type uses its component-level `vault` key.
    pub fn component_uses_vault(&self, category: Category, type_name: &str) -> bool {
        self.component_facts(category, type_name)
            .is_some_and(|(_, _, uses_vault)| uses_vault)
    }

    /// What the config pipeline asks of a vault, guard, catalog, store or exporter type:
    /// its options schema, whether options are required, whether it uses `vault`.
    fn component_facts(
        &self,
        category: Category,
        type_name: &str,
    ) -> Option<(Option<Value>, bool, bool)> {
        fn of<T: ?Sized + 'static>(
            map: &BTreeMap<&'static str, Arc<dyn ComponentFactory<T>>>,
            type_name: &str,
        ) -> Option<(Option<Value>, bool, bool)> {
            let factory = map.get(type_name)?;
            Some((
                factory.options_schema(),
                factory.options_required(),
                factory.uses_vault(),
            ))
        }
        match category {
            Category::Binding | Category::Model => None,
            Category::Vault => of(&self.vaults, type_name),
            Category::Guard => of(&self.guards, type_name),
            Category::Catalog => of(&self.catalogs, type_name),
            Category::Store => of(&self.stores, type_name),
            Category::Exporter => of(&self.exporters, type_name),
        }
    }

    /// Declares the metric groups configs may name although no component built in records
    /// them, so that such a metric is reported as missing from the distribution, not as a typo.
    pub fn known_metric_groups(&mut self, groups: &[&'static str]) -> &mut Self {
        self.known_metric_groups.extend(groups);
        self
    }

    /// Declares properties a component (or the program running the engine) reads.
    pub fn properties(&mut self, names: &[&'static str]) -> &mut Self {
        self.properties.extend(names);
        self
    }

    /// One message per property in `properties` that neither the engine nor a registered
    /// component declares.
    pub fn unknown_properties(&self, properties: &Properties) -> Vec<String> {
        let declared: BTreeSet<&str> = ENGINE_PROPERTIES
            .iter()
            .chain(&self.properties)
            .copied()
            .collect();
        properties.undeclared(&declared)
    }

    /// The message for a `type` this registry lacks.
    pub fn unknown_type(&self, category: Category, type_name: &str) -> String {
        let noun = category.noun();
        let mut known = self.known.get(&category).into_iter().flatten();
        if known.any(|known| *known == type_name) {
            format!("{noun} type `{type_name}` is not built into this distribution")
        } else {
            format!(
                "unknown {noun} type `{type_name}`; expected one of: {}",
                self.types(category).join(", ")
            )
        }
    }

    /// The JSON Schema of a whole `zilla.yaml` document with every registered type, as
    /// `zilla schema` prints it.
    pub fn schema(&self) -> Value {
        let mut defs = serde_json::Map::new();
        let mut binding_cases = Vec::new();
        for (type_name, factory) in &self.bindings {
            let kinds: Vec<&str> = factory.kinds().iter().map(|k| k.as_str()).collect();
            let mut kind_cases = Vec::new();
            for kind in factory.kinds() {
                let schema = factory.schema(*kind);
                let prefix = format!("{type_name}.{kind}");
                let mut properties = serde_json::Map::new();
                let mut route_properties = serde_json::Map::new();
                if let Some(options) = schema.options {
                    properties.insert(
                        "options".into(),
                        hoist(options, &format!("{prefix}.options"), &mut defs),
                    );
                }
                if let Some(when) = schema.when {
                    route_properties.insert(
                        "when".into(),
                        json!({"type": "array", "items": hoist(when, &format!("{prefix}.when"), &mut defs)}),
                    );
                }
                if let Some(with) = schema.with {
                    route_properties.insert(
                        "with".into(),
                        hoist(with, &format!("{prefix}.with"), &mut defs),
                    );
                }
                if let Some(catalog) = factory.catalog_schema(*kind) {
                    properties.insert(
                        "catalog".into(),
                        hoist(catalog, &format!("{prefix}.catalog"), &mut defs),
                    );
                }
                if !route_properties.is_empty() {
                    properties.insert(
                        "routes".into(),
                        json!({"type": "array", "items": {"properties": route_properties}}),
                    );
                }
                let required: Vec<&str> = if schema.options_required {
                    vec!["options"]
                } else {
                    vec![]
                };
                kind_cases.push(json!({
                    "if": {"properties": {"kind": {"const": kind.as_str()}}},
                    "then": {"properties": properties, "required": required},
                }));
            }
            binding_cases.push(json!({
                "if": {"properties": {"type": {"const": type_name}}},
                "then": {"properties": {"kind": {"enum": kinds}}, "allOf": kind_cases},
            }));
        }
        let component = |category: Category, defs: &mut serde_json::Map<String, Value>| {
            let types = self.types(category);
            let cases: Vec<Value> = types
                .iter()
                .filter_map(|type_name| {
                    let (options, required) = self.component_schema(category, type_name)?;
                    let options = options.map(|options| {
                        hoist(
                            options,
                            &format!("{}.{type_name}.options", category.noun()),
                            defs,
                        )
                    });
                    Some(json!({
                        "if": {"properties": {"type": {"const": type_name}}},
                        "then": {
                            "properties": {"options": options.unwrap_or(json!(false))},
                            "required": if required { vec!["options"] } else { vec![] },
                        },
                    }))
                })
                .collect();
            let mut schema = json!({
                "type": "object",
                "properties": {
                    "type": {"enum": types},
                    "options": {},
                    "vault": {"$ref": "#/$defs/reference"},
                    "store": {"$ref": "#/$defs/reference"},
                },
                "required": ["type"],
                "additionalProperties": false,
            });
            // An empty `allOf` is not a valid schema.
            if !cases.is_empty() {
                schema["allOf"] = Value::Array(cases);
            }
            schema
        };
        let vault = component(Category::Vault, &mut defs);
        let guard = component(Category::Guard, &mut defs);
        let catalog = component(Category::Catalog, &mut defs);
        let store = component(Category::Store, &mut defs);
        let exporter = component(Category::Exporter, &mut defs);
        let mut document = namespace_schema();
        let binding_types = self.types(Category::Binding);
        if let Some(object) = document.as_object_mut() {
            let defs_entry = object
                .entry("$defs")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(all_defs) = defs_entry {
                all_defs.extend(defs);
                all_defs.insert("vault".into(), vault);
                all_defs.insert("guard".into(), guard);
                all_defs.insert("catalog".into(), catalog);
                all_defs.insert("store".into(), store);
                all_defs.insert("exporter".into(), exporter);
                if let Some(binding) = all_defs.get_mut("binding").and_then(Value::as_object_mut) {
                    binding.insert("allOf".into(), Value::Array(binding_cases));
                    binding["properties"]["type"] = json!({"enum": binding_types});
                }
            }
        }
        document
    }
}

/// A binding factory as the config pipeline sees it.
struct FactoryType<'a>(&'a dyn BindingFactory);

impl BindingType for FactoryType<'_> {
    fn kinds(&self) -> &'static [BindingKind] {
        self.0.kinds()
    }
    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        self.0.accepts(kind)
    }
    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        self.0.emits(kind)
    }
    fn entry_emits(&self, kind: BindingKind) -> Option<&'static str> {
        self.0.entry_emits(kind)
    }
    fn schema(&self, kind: BindingKind) -> BindingSchema {
        self.0.schema(kind)
    }
    fn catalog_schema(&self, kind: BindingKind) -> Option<serde_json::Value> {
        self.0.catalog_schema(kind)
    }
    fn uses_vault(&self, kind: BindingKind) -> bool {
        self.0.uses_vault(kind)
    }
}

impl Types for Registry {
    fn binding(&self, type_name: &str) -> Option<Box<dyn BindingType + '_>> {
        self.bindings
            .get(type_name)
            .map(|factory| Box::new(FactoryType(factory.as_ref())) as Box<dyn BindingType + '_>)
    }
    fn component_schema(
        &self,
        category: Category,
        type_name: &str,
    ) -> Option<(Option<Value>, bool)> {
        Registry::component_schema(self, category, type_name)
    }
    fn unknown_type(&self, category: Category, type_name: &str) -> String {
        Registry::unknown_type(self, category, type_name)
    }
    fn carries(&self, emitted: &str, accepted: &str) -> bool {
        Registry::carries(self, emitted, accepted)
    }
    fn component_uses_vault(&self, category: Category, type_name: &str) -> bool {
        Registry::component_uses_vault(self, category, type_name)
    }
    fn check_telemetry(&self, config: &Config) -> Vec<ConfigError> {
        let groups: Vec<&'static MetricGroup> = self.metric_groups().collect();
        crate::telemetry::check_telemetry(config, &groups, &self.known_metric_groups)
    }
}

impl ModelLookup for Registry {
    fn find_model(&self, type_name: &str) -> Result<&Arc<dyn ModelFactory>, String> {
        self.models
            .get(type_name)
            .ok_or_else(|| self.unknown_type(Category::Model, type_name))
    }
}

/// Moves a standalone schema's `$defs` into `defs` under `prefix` and rewrites its refs, so it
/// can be embedded in the composed document.
fn hoist(mut schema: Value, prefix: &str, defs: &mut serde_json::Map<String, Value>) -> Value {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        object.remove("title");
        if let Some(Value::Object(own)) = object.remove("$defs") {
            for (name, mut def) in own {
                rewrite_refs(&mut def, prefix);
                defs.insert(format!("{prefix}.{name}"), def);
            }
        }
    }
    rewrite_refs(&mut schema, prefix);
    schema
}

fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "$ref" {
                    if let Value::String(reference) = child
                        && let Some(name) = reference.strip_prefix("#/$defs/")
                    {
                        *reference = format!("#/$defs/{prefix}.{name}");
                    }
                } else {
                    rewrite_refs(child, prefix);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_refs(item, prefix)),
        _ => {}
    }
}
