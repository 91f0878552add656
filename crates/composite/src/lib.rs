//! Composite bindings: binding types (`openapi`, `asyncapi`, ...) that are not built
//! themselves but expand, when the config loads, into a namespace of ordinary bindings they
//! generate from their options and the documents (specs) they read from catalogs.
//!
//! # The contract for a composite type
//!
//! A crate implements [`Composite`] and calls [`register`]. Its binding type is then checked
//! like any other (`kinds`, options/`when`/`with` schemas, the stream kinds it accepts and
//! emits, so the pipeline check sees it), and after the config loaded, every binding of the
//! type is handed to [`Composite::generate`] with a [`CompositeContext`]: its qualified name,
//! its config (typed `options` on demand), the documents it names in catalogs
//! ([`CompositeContext::document`], through the catalogs of its namespace, any type), the
//! listen host, and the name of the namespace it must generate.
//!
//! `generate` returns [`Generated`]: the `zilla.yaml` text of **one namespace document** named
//! [`CompositeContext::namespace`], and the name of its **entry** binding in it. The expansion
//! then:
//!
//! 1. moves the entry binding into the composite's own namespace under the composite's name,
//!    so what exits to the composite (`exit: south_openapi_client`) enters the generated
//!    pipeline, and metrics and events of that first hop carry the composite's name. Bare
//!    `exit` and route exits of the entry are qualified into the generated namespace; every
//!    other name the entry uses (a vault, a guard) resolves in the composite's namespace.
//! 2. adds the rest of the generated namespace as a document of its own. A generated binding
//!    that reaches back into the composite's namespace (the composite's `exit`, a guard, a
//!    vault) writes the qualified name [`CompositeContext::qualify`] gives.
//! 3. writes the whole config as one `zilla.yaml` text ([`zilla_engine::config::Config`]'s
//!    `expanded`, what `zilla validate -v` prints) and loads that text again with every check
//!    of a written config: the expansion is exactly a config a user could have written, and
//!    the printed text loads and behaves the same. Errors in the user's part keep pointing at
//!    the file as written; errors in a generated namespace point at the composite binding.
//!
//! Generated namespaces are named `<namespace>.<composite binding>`; the names inside are
//! the composite type's to choose and document (they must not depend on anything but the
//! composite's config and documents, so an unchanged spec generates the same bindings).
//! Reload needs nothing more: the engine keeps every binding whose generated config did not
//! change, so a changed spec rebuilds only the bindings generated from it. Composites do not
//! nest: a generated namespace naming a composite type is an error.
//!
//! Servers a composite generates listen on the host set with the
//! `zilla.binding.composite.listen.host` property when there is one
//! (`-P zilla.binding.composite.listen.host=127.0.0.1` keeps a spec-driven gateway on
//! loopback), see [`CompositeContext::listen_host`].
//!
//! A composite type registers like any component:
//!
//! ```
//! use zilla_composite::{Composite, CompositeContext, Generated};
//! use zilla_engine::{BindingKind, BindingSchema, BuildError};
//!
//! /// `kind: server` with `options: {port}` generates a tcp server echoing what it reads.
//! struct EchoPort;
//!
//! impl Composite for EchoPort {
//!     fn type_name(&self) -> &'static str { "echo-port" }
//!     fn kinds(&self) -> &'static [BindingKind] { &[BindingKind::Server] }
//!     fn accepts(&self, _: BindingKind) -> &'static [&'static str] { &[] }
//!     fn emits(&self, _: BindingKind) -> Option<&'static str> { None }
//!     fn schema(&self, _: BindingKind) -> BindingSchema {
//!         BindingSchema { options: Some(serde_json::json!({"type": "object"})), ..Default::default() }
//!     }
//!     fn generate(&self, context: &CompositeContext<'_>) -> Result<Generated, BuildError> {
//!         let port = context.options::<serde_json::Value>()?["port"].as_u64().unwrap_or(0);
//!         Ok(Generated {
//!             namespace: format!(
//!                 "name: {}\nbindings:\n  tcp_server:\n    type: tcp\n    kind: server\n    \
//!                  options: {{host: {}, port: {port}}}\n    exit: echo_server\n  \
//!                  echo_server:\n    type: echo\n    kind: server\n",
//!                 context.namespace(), context.listen_host(None)),
//!             entry: "tcp_server".into(),
//!         })
//!     }
//! }
//!
//! let mut registry = zilla_engine::Registry::new();
//! zilla_composite::register(&mut registry, EchoPort);
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use zilla_engine::binding::{Binding, BindingFactory, BuildContext};
use zilla_engine::components::{Catalog, ComponentContext};
use zilla_engine::config::model::{BindingConfig, Config, Origin};
use zilla_engine::config::{ConfigError, ConfigErrors, Source};
use zilla_engine::properties::Properties;
use zilla_engine::registry::Expander;
use zilla_engine::{BindingKind, BindingSchema, BuildError, QualifiedName, Registry};

/// The property naming the host generated servers listen on instead of their spec's.
pub const LISTEN_HOST_PROPERTY: &str = "zilla.binding.composite.listen.host";

/// A composite binding type. See the crate docs for the contract.
pub trait Composite: Send + Sync + 'static {
    /// The config `type`, e.g. `openapi`.
    fn type_name(&self) -> &'static str;
    /// The kinds this type supports.
    fn kinds(&self) -> &'static [BindingKind];
    /// The stream kinds a binding of `kind` accepts when routed to: what its entry accepts.
    fn accepts(&self, kind: BindingKind) -> &'static [&'static str];
    /// The stream kind a binding of `kind` opens on its exits, `None` when it has no exit.
    fn emits(&self, kind: BindingKind) -> Option<&'static str>;
    /// The option, `when` and `with` schemas for `kind`.
    fn schema(&self, kind: BindingKind) -> BindingSchema;
    /// The namespace this binding expands into. Errors name a path relative to the binding
    /// (`options.specs.petstore`) and what is wrong, with the document's own location where
    /// the problem is in a spec.
    fn generate(&self, context: &CompositeContext<'_>) -> Result<Generated, BuildError>;
}

/// What a composite generates for one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// `zilla.yaml` text of one namespace document named [`CompositeContext::namespace`].
    pub namespace: String,
    /// The binding of that namespace that takes the composite's name and place.
    pub entry: String,
}

/// Registers a composite type: its binding type for the config checks, and the expansion
/// (once, whatever the number of composite types).
pub fn register(registry: &mut Registry, composite: impl Composite) {
    registry
        .binding(CompositeFactory(Arc::new(composite)))
        .expander(CompositeExpander)
        .properties(&[LISTEN_HOST_PROPERTY]);
}

/// What [`Composite::generate`] gets.
pub struct CompositeContext<'a> {
    name: &'a QualifiedName,
    config: &'a BindingConfig,
    namespace: String,
    properties: &'a Properties,
    catalogs: &'a Catalogs<'a>,
}

impl std::fmt::Debug for CompositeContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeContext")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl CompositeContext<'_> {
    /// The composite binding's qualified name.
    pub fn name(&self) -> &QualifiedName {
        self.name
    }

    /// The composite binding's config as written (`options`, `exit`, `routes`, `vault`, ...).
    pub fn config(&self) -> &BindingConfig {
        self.config
    }

    /// The typed `options` (already schema-checked); `T::default()` when absent.
    pub fn options<T: DeserializeOwned + Default>(&self) -> Result<T, BuildError> {
        match &self.config.options {
            None => Ok(T::default()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|error| BuildError::at("options", error.to_string())),
        }
    }

    /// The name the generated namespace must have: `<namespace>.<binding>`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A name written in the composite's namespace (its `exit`, a guard, a vault), as the
    /// generated namespace must write it: `namespace:name` (already qualified names stay).
    pub fn qualify(&self, reference: &str) -> String {
        self.name.resolve(reference).to_string()
    }

    /// The config of the binding `reference` names (resolved in the composite's namespace),
    /// if the config has one: a composite whose exits are composites of its own type reaches
    /// what they generate.
    pub fn binding(&self, reference: &str) -> Option<(QualifiedName, &BindingConfig)> {
        let name = self.name.resolve(reference);
        self.catalogs
            .config
            .bindings()
            .find(|(found, _)| *found == name)
            .map(|(_, binding)| (name, binding))
    }

    /// The text of the document `subject` (at `version`, `latest` allowed) in the catalog
    /// named `catalog` in the composite's namespace.
    pub fn document(
        &self,
        catalog: &str,
        subject: &str,
        version: &str,
    ) -> Result<Arc<str>, String> {
        let catalog_name = self.name.resolve(catalog);
        let found = self.catalogs.get(&catalog_name)?;
        let id = found
            .resolve_subject(subject, version)
            .map_err(|message| format!("catalog `{catalog}`: {message}"))?;
        found
            .schema(id)
            .map_err(|message| format!("catalog `{catalog}`: {message}"))
    }

    /// The host generated servers listen on: the `zilla.binding.composite.listen.host`
    /// property when set, else `spec_host` (the host of the spec's server URL), else
    /// `0.0.0.0`.
    pub fn listen_host(&self, spec_host: Option<&str>) -> String {
        self.properties
            .get(LISTEN_HOST_PROPERTY)
            .or(spec_host)
            .unwrap_or("0.0.0.0")
            .to_owned()
    }

    /// The `-P` properties.
    pub fn properties(&self) -> &Properties {
        self.properties
    }
}

/// The catalogs of the config, built the first time a composite asks for one.
struct Catalogs<'a> {
    registry: &'a Registry,
    config: &'a Config,
    properties: &'a Properties,
    built: RefCell<HashMap<QualifiedName, Arc<dyn Catalog>>>,
}

impl Catalogs<'_> {
    fn get(&self, name: &QualifiedName) -> Result<Arc<dyn Catalog>, String> {
        if let Some(found) = self.built.borrow().get(name) {
            return Ok(found.clone());
        }
        let component = self
            .config
            .namespaces
            .iter()
            .filter(|namespace| namespace.name == name.namespace)
            .flat_map(|namespace| namespace.catalogs.iter())
            .find(|(catalog, _)| *catalog == name.name)
            .map(|(_, component)| component)
            .ok_or_else(|| format!("unknown catalog `{name}`; expected the name of a catalog"))?;
        let factory = self
            .registry
            .catalog_factory(&component.type_name)
            .ok_or_else(|| format!("catalog `{name}` is of a type not built in"))?;
        let metrics = zilla_engine::metrics::Metrics::default();
        let context = ComponentContext {
            name,
            config: component,
            base_dir: self.config.base_dir.clone(),
            properties: self.properties,
            metrics: &metrics,
            telemetry_attributes: &[],
            events: Default::default(),
        };
        let built = factory
            .build(&context)
            .map_err(|error| format!("catalog `{name}`: {error}"))?;
        self.built.borrow_mut().insert(name.clone(), built.clone());
        Ok(built)
    }
}

/// The binding type of a composite, for the config checks. Never built: the expansion
/// replaces every binding of the type before the engine builds anything.
struct CompositeFactory(Arc<dyn Composite>);

impl BindingFactory for CompositeFactory {
    fn type_name(&self) -> &'static str {
        self.0.type_name()
    }
    fn kinds(&self) -> &'static [BindingKind] {
        self.0.kinds()
    }
    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        self.0.accepts(kind)
    }
    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        self.0.emits(kind)
    }
    fn schema(&self, kind: BindingKind) -> BindingSchema {
        self.0.schema(kind)
    }
    fn composite(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn build(&self, _context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        Err(BuildError::at(
            "type",
            format!(
                "{} is a composite binding type: it is expanded when the config loads, \
                 through the engine's load",
                self.0.type_name()
            ),
        ))
    }
}

/// Expands every composite binding of a config.
struct CompositeExpander;

impl Expander for CompositeExpander {
    fn expand(
        &self,
        registry: &Registry,
        properties: &Properties,
        config: Config,
    ) -> Result<Config, ConfigErrors> {
        expand(registry, properties, config)
    }
}

/// The composite of binding type `type_name`, if it is one.
fn composite_of<'r>(registry: &'r Registry, type_name: &str) -> Option<&'r Arc<dyn Composite>> {
    registry
        .binding_factory(type_name)?
        .composite()?
        .downcast_ref::<CompositeFactory>()
        .map(|factory| &factory.0)
}

/// One composite's expansion: where it was written and what it generated, parsed.
struct Expansion {
    document: usize,
    origin: Origin,
    name: String,
    entry: Value,
    namespace: Value,
}

fn expand(
    registry: &Registry,
    properties: &Properties,
    config: Config,
) -> Result<Config, ConfigErrors> {
    let composites: Vec<(QualifiedName, &BindingConfig, &Arc<dyn Composite>)> = config
        .bindings()
        .filter_map(|(name, binding)| {
            composite_of(registry, &binding.type_name).map(|c| (name, binding, c))
        })
        .collect();
    if composites.is_empty() {
        return Ok(config);
    }
    let catalogs = Catalogs {
        registry,
        config: &config,
        properties,
        built: RefCell::default(),
    };
    let mut errors = Vec::new();
    let mut expansions = Vec::new();
    for (name, binding, composite) in &composites {
        // Nothing generated would carry these: refuse rather than drop them.
        let unsupported = ["telemetry", "vault", "catalog"]
            .into_iter()
            .filter(|key| binding.json.get(*key).is_some());
        for key in unsupported {
            errors.push(config.error(
                &binding.origin.child(key),
                format!(
                    "`{key}` is not supported yet on composite bindings ({})",
                    binding.type_name
                ),
            ));
        }
        let context = CompositeContext {
            name,
            config: binding,
            namespace: format!("{}.{}", name.namespace, name.name),
            properties,
            catalogs: &catalogs,
        };
        let generated = match composite.generate(&context) {
            Ok(generated) => generated,
            Err(error) => {
                errors.push(config.error(&binding.origin.relative(&error.path), error.message));
                continue;
            }
        };
        match parse(&context, &generated, registry) {
            Ok((entry, namespace)) => expansions.push(Expansion {
                document: binding.origin.document,
                origin: binding.origin.clone(),
                name: name.name.clone(),
                entry,
                namespace,
            }),
            Err(message) => errors.push(config.error(&binding.origin, message)),
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let mut documents: Vec<Value> = config.documents.iter().map(|d| d.to_json()).collect();
    let user_documents = documents.len();
    let mut generated_at = Vec::new();
    for expansion in expansions {
        if let Some(Value::Object(bindings)) = documents
            .get_mut(expansion.document)
            .and_then(|document| document.get_mut("bindings"))
        {
            bindings.insert(expansion.name, expansion.entry);
        }
        documents.push(expansion.namespace);
        generated_at.push(expansion.origin);
    }
    let text = serde_saphyr::to_string_multiple(&documents).map_err(|error| {
        ConfigErrors::one(ConfigError::new(
            &config.source.file,
            Default::default(),
            "",
            format!("cannot write the expanded config: {error}"),
        ))
    })?;
    let file = format!(
        "{} (expanded; print it with `zilla validate -v`)",
        config.source.file
    );
    let mut expanded = zilla_engine::config::load(Source::plain(file, text.clone()), registry)?;
    // Point errors found later (while building) at the file as written: the user's documents
    // keep their paths, and a generated namespace points at the composite that generated it.
    let mut positions = config.documents.clone();
    for origin in &generated_at {
        let composite = config
            .documents
            .get(origin.document)
            .map(|document| document.locate(&origin.path).clone());
        positions.extend(composite);
    }
    if positions.len() == user_documents + generated_at.len() {
        expanded.documents = positions;
        expanded.source = config.source.clone();
    }
    expanded.base_dir = config.base_dir.clone();
    expanded.expanded = Some(text);
    Ok(expanded)
}

/// The generated entry binding (its exits qualified into the generated namespace) and the
/// generated namespace without it, checked for what the expansion relies on.
fn parse(
    context: &CompositeContext<'_>,
    generated: &Generated,
    registry: &Registry,
) -> Result<(Value, Value), String> {
    let bug = |what: String| format!("{} generated an unusable namespace: {what}", context.name);
    let mut namespace: Value = serde_saphyr::from_str(&generated.namespace)
        .map_err(|error| bug(format!("malformed YAML: {error}")))?;
    if namespace.get("name").and_then(Value::as_str) != Some(context.namespace()) {
        return Err(bug(format!("it is not named `{}`", context.namespace())));
    }
    let Some(Value::Object(bindings)) = namespace.get_mut("bindings") else {
        return Err(bug("it has no bindings".to_owned()));
    };
    for (name, binding) in bindings.iter() {
        let type_name = binding.get("type").and_then(Value::as_str).unwrap_or("");
        if composite_of(registry, type_name).is_some() {
            return Err(format!(
                "binding `{name}` generated by {} is of composite type `{type_name}`: \
                 composites do not nest",
                context.name
            ));
        }
    }
    let mut entry = bindings
        .shift_remove(&generated.entry)
        .ok_or_else(|| bug(format!("it has no entry binding `{}`", generated.entry)))?;
    let qualify = |exit: &mut Value| {
        if let Value::String(reference) = exit
            && !reference.contains(':')
        {
            *reference = format!("{}:{reference}", context.namespace());
        }
    };
    if let Some(exit) = entry.get_mut("exit") {
        qualify(exit);
    }
    if let Some(Value::Array(routes)) = entry.get_mut("routes") {
        for route in routes {
            if let Some(exit) = route.get_mut("exit") {
                qualify(exit);
            }
        }
    }
    Ok((entry, namespace))
}

#[cfg(test)]
mod tests;
